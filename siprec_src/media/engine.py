"""MediaEngine: the asyncio facade of the data plane, in the control process.

The recording layer drives every leg and fork through this class, and cannot tell where they
run (DESIGN.md "Processes and the packet path"):

- ``workers = 0``: every call runs in this process. The same
  :class:`~siprec_src.media.worker.MediaHost` a worker runs is driven by the asyncio loop
  (``loop.add_reader`` on its non-blocking sockets, one ``call_later`` re-armed for its timers,
  the aioquic adapter pattern of STYLE.md #2).
- ``workers = N``: N ``python -m siprec_src.media.worker`` processes, each owning a disjoint
  slice of the port range, commanded over a Unix socketpair (protocol in ``worker.py``).

Placement: every leg and fork of a call lives in one process, chosen at the call's first
``open_leg`` or ``reserve_fork_port``:

=============================================  ===========================================
first request of the call                      the call runs
=============================================  ===========================================
``open_leg(tap=False)`` (a feed-only leg)      in this process (``feed()`` needs no IPC)
anything, with ``workers = 0``                 in this process
``open_leg(tap=True)`` / ``reserve_fork_port``  on the worker carrying the fewest calls
=============================================  ===========================================

A later request that the placement cannot serve (a feed-only leg on a call that runs in a worker,
a tap leg on an in-process call while workers exist) is a LocalProtocolError. A call is
forgotten when its last leg is closed and its last fork stopped.

When a worker dies (its socketpair reaches EOF), every call and fork it carried is reported in
one :class:`~siprec_src.media.events.WorkerDied` event; commands for those calls raise
:class:`WorkerLostError`; the other workers keep serving.

Events go to ``on_event`` when it is set, otherwise into the queue read by :meth:`next_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from siprec_src.errors import ConfigError, LocalProtocolError, SiprecError
from siprec_src.media.events import ForkStats, LegStats, MediaEvent, WorkerDied
from siprec_src.media.ports import PortAllocator, check_port_range, split_port_range
from siprec_src.media.spec import Address, ForkSpec, Leg, LegSpec
from siprec_src.media.worker import FrameDecoder, MediaHost, Readable, encode_frame

log = logging.getLogger(__name__)

LOCAL = -1  # placement of a call that runs in this process
WORKER_START_TIMEOUT = 10.0
# What "python -m siprec_src.media.worker" runs, without runpy importing the module twice (the
# package imports it on the way, and -m would then run a second copy as __main__).
WORKER_ENTRY = "import sys; from siprec_src.media.worker import main; sys.exit(main())"
WORKER_STOP_TIMEOUT = 5.0
MAX_RESTART_DELAY = 60.0
STABLE_WORKER_SECONDS = 60.0  # a replacement that lived this long resets the restart delay
ASYNCIO_DRAIN = 64  # datagrams per readiness callback on the asyncio loop


class WorkerLostError(LocalProtocolError):
    """The media worker that carried this call died; the call's legs and forks are gone."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="media_unavailable")


@dataclass(frozen=True, slots=True)
class MediaConfig:
    workers: int = 0  # 0 = pipelines run in the control process (embedding, small loads)
    port_min: int = 20000  # tap and egress ports, even RTP / odd RTCP; split disjointly between workers
    port_max: int = 29999
    stream_timeout: float = 30.0  # LegIdle after this long without RTP
    # Seconds before a dead worker is replaced (doubled, up to MAX_RESTART_DELAY, while
    # replacements keep dying within STABLE_WORKER_SECONDS); 0 = never replace.
    worker_restart: float = 1.0

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 (in-process) or more, not {self.workers}", key="workers")
        check_port_range(self.port_min, self.port_max)
        if self.stream_timeout <= 0:
            raise ConfigError(
                f"stream_timeout must be a positive number of seconds, not {self.stream_timeout}",
                key="stream_timeout",
            )
        if not 0 <= self.worker_restart <= MAX_RESTART_DELAY:
            raise ConfigError(
                f"worker_restart must be 0 (never replace a dead worker) to {MAX_RESTART_DELAY:g} "
                f"seconds, not {self.worker_restart}",
                key="worker_restart",
            )


class _ControlChannel(asyncio.Protocol):
    """The control process's end of a worker's socketpair (the framing of ``worker.py``).

    Frames in are decoded as they arrive and handed to ``on_message``, with no task or stream
    reader in between (two ``readexactly`` awaits and a task step per reply cost ~20 % of a
    command's round trip in this process). Frames out are written at once: gathering them for a
    turn of the loop costs every lone command one more turn, and the commands of a session are
    issued one after the other.
    """

    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[str], None]) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except Exception as exc:  # a corrupt stream: the worker cannot be trusted any more
            self._lose(f"control socket closed ({type(exc).__name__})")
            return
        for message in messages:
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"control socket closed ({type(exc).__name__ if exc else 'EOF'})")

    def send(self, frame: bytes) -> None:
        if self._lost or self._transport is None:
            # Not reached through MediaEngine (a lost channel marks its worker dead at once);
            # loud rather than a request that would wait forever.
            raise ConnectionError("the media worker's control socket is closed")
        self._transport.write(frame)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _lose(self, reason: str) -> None:
        if self._lost:
            return
        self._lost = True
        if self._transport is not None:
            self._transport.close()
        self._on_lost(reason)


@dataclass(slots=True)
class _Worker:
    index: int
    ports: tuple[int, int]
    process: asyncio.subprocess.Process | None = None
    channel: _ControlChannel | None = None
    ready: asyncio.Future[Any] | None = None  # the worker's "ready" message
    task: asyncio.Task[None] | None = None  # _worker_lost, once the channel closed
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    alive: bool = False
    death: str = ""
    started_at: float = 0.0  # monotonic, when it said ready
    restart_delay: float = 0.0  # the wait before the next replacement (0: the configured one)


class MediaEngine:
    """Open legs, fork them toward SRSs, and hear what happens to them (see the module doc)."""

    def __init__(self, config: MediaConfig = MediaConfig()) -> None:
        self.config = config
        self.on_event: Callable[[MediaEvent], None] | None = None
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._workers: list[_Worker] = []
        self._host: MediaHost | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._placement: dict[str, int] = {}  # call id -> LOCAL or worker index
        self._calls_on: Counter[int] = Counter()  # LOCAL or worker index -> calls placed there
        # Calls whose worker died, until their last leg and fork are released: (worker, reason).
        # Their commands raise WorkerLostError; they never reach the worker that replaced it.
        self._lost_calls: dict[str, tuple[int, str]] = {}
        self._refs: dict[str, int] = {}  # call id -> open legs + reserved forks
        self._fork_call: dict[str, str] = {}  # fork id -> call id
        self._request_ids = 0
        self._started = False
        self._closing = False

    async def __aenter__(self) -> MediaEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise LocalProtocolError("the media engine is already started")
        self._loop = asyncio.get_running_loop()
        config = self.config
        # The in-process host always exists (feed-only calls); with workers it takes ports
        # anywhere in the range and skips those the workers hold (ports.py).
        self._host = MediaHost(
            self, self._deliver, PortAllocator(config.port_min, config.port_max), config.stream_timeout
        )
        self._started = True
        if config.workers:
            slices = split_port_range(config.port_min, config.port_max, config.workers)
            self._workers = [_Worker(index, ports) for index, ports in enumerate(slices)]
            try:
                await asyncio.gather(*(self._spawn(worker) for worker in self._workers))
            except BaseException:
                await self.close()
                raise

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER_ENTRY,
                "--control-fd",
                str(child.fileno()),
                "--index",
                str(worker.index),
                "--port-min",
                str(worker.ports[0]),
                "--port-max",
                str(worker.ports[1]),
                "--stream-timeout",
                repr(self.config.stream_timeout),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()  # the worker holds its end: EOF on ours means it is gone
        loop = asyncio.get_running_loop()
        worker.ready = loop.create_future()
        on_message = functools.partial(self._on_worker_message, worker)
        worker.channel = _ControlChannel(on_message, functools.partial(self._on_channel_lost, worker))
        await loop.create_unix_connection(lambda: cast(_ControlChannel, worker.channel), sock=parent)
        try:
            async with asyncio.timeout(WORKER_START_TIMEOUT):
                message = await worker.ready
        except (TimeoutError, ConnectionError) as exc:
            raise LocalProtocolError(f"media worker {worker.index} did not start: {exc!r}") from exc
        if message[0] != "ready":
            raise LocalProtocolError(f"media worker {worker.index} said {message!r} instead of ready")
        worker.alive = True
        worker.started_at = time.monotonic()

    async def close(self) -> None:
        """RTCP BYE on every fork, stop the workers, close every socket. Idempotent."""
        if not self._started or self._closing:
            return
        self._closing = True
        if self._host is not None:
            self._host.close(time.monotonic(), time.time())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.gather(*(self._stop_worker(worker) for worker in self._workers))

    async def _stop_worker(self, worker: _Worker) -> None:
        if worker.alive:
            with contextlib.suppress(SiprecError, TimeoutError, ConnectionError):
                async with asyncio.timeout(WORKER_STOP_TIMEOUT):
                    await self._request(worker, "close", ())
        process = worker.process
        if process is not None and process.returncode is None:
            try:
                async with asyncio.timeout(WORKER_STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        worker.alive = False
        if worker.channel is not None:
            worker.channel.close()
        if worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task

    # --- the public API -----------------------------------------------------------------------

    async def open_leg(self, spec: LegSpec, *, tap: bool = True) -> Address | None:
        """Open a leg. ``tap=True``: bind an even/odd port pair on ``spec.bind_host`` and return
        the RTP address the PBX should send copies to. ``tap=False``: feed-only (``feed()``)."""
        location = self._place(spec.call_id, tap=tap, for_leg=True)
        result = await self._command_at(location, spec.call_id, "open_leg", (spec, tap))
        self._refs[spec.call_id] = self._refs.get(spec.call_id, 0) + 1
        return cast(Address | None, result)

    def feed(self, call_id: str, leg: Leg, packet: bytes) -> None:
        """Push one RTP packet of an in-process call: the embedding path, no IPC, no copy kept."""
        location = self._placement.get(call_id)
        if location is None:
            raise LocalProtocolError(f"feed: no call {call_id} is open")
        if location != LOCAL:
            raise LocalProtocolError(
                f"feed: call {call_id} runs in media worker {location}; feed() serves only calls "
                "whose legs were opened with tap=False (or any call when workers=0)"
            )
        self._local_host().feed(call_id, leg, packet, time.monotonic())

    async def close_leg(self, call_id: str, leg: Leg) -> LegStats:
        try:
            stats = await self._command(call_id, "close_leg", (call_id, leg))
        except WorkerLostError:
            # Released even though the worker cannot answer (it died), as stop_fork does: the
            # placement would otherwise outlive the call, and a later call given the same id
            # would be sent to the dead worker (WorkerLostError) forever.
            self._release(call_id)
            raise
        self._release(call_id)
        return cast(LegStats, stats)

    async def reserve_fork_port(self, call_id: str, fork_id: str, bind_host: str) -> Address:
        """Bind the fork's egress RTP/RTCP pair now (the SDP offer needs it before the answer)."""
        if fork_id in self._fork_call:
            raise LocalProtocolError(f"fork {fork_id} already exists (call {self._fork_call[fork_id]})")
        location = self._place(call_id, tap=True, for_leg=False)
        address = await self._command_at(
            location, call_id, "reserve_fork_port", (call_id, fork_id, bind_host)
        )
        self._fork_call[fork_id] = call_id
        self._refs[call_id] = self._refs.get(call_id, 0) + 1
        return cast(Address, address)

    async def start_fork(self, spec: ForkSpec) -> None:
        """Start forking; ``spec.local`` is the address reserve_fork_port returned."""
        call_id = self._call_of(spec.fork_id)
        if call_id != spec.call_id:
            raise LocalProtocolError(
                f"fork {spec.fork_id} was reserved for call {call_id}, not {spec.call_id}"
            )
        await self._command(call_id, "start_fork", (spec,))

    async def update_fork(self, spec: ForkSpec) -> None:
        """After a re-INVITE: new remote, payload map, keys or paused; SSRC, sequence and
        timestamp stay continuous."""
        await self._command(self._call_of(spec.fork_id), "update_fork", (spec,))

    async def pause_fork(self, fork_id: str) -> None:
        await self._command(self._call_of(fork_id), "pause_fork", (fork_id,))

    async def resume_fork(self, fork_id: str) -> None:
        await self._command(self._call_of(fork_id), "resume_fork", (fork_id,))

    async def stop_fork(self, fork_id: str) -> ForkStats:
        """RTCP BYE and release the ports; also for a reserved fork that never started."""
        call_id = self._call_of(fork_id)
        try:
            stats = await self._command(call_id, "stop_fork", (fork_id,))
        finally:
            # Forgotten even when the worker cannot answer (it died): its sockets died with it,
            # and keeping the entry would hold the call's placement forever.
            del self._fork_call[fork_id]
            self._release(call_id)
        return cast(ForkStats, stats)

    async def fork_stats(self, fork_id: str) -> ForkStats:
        return cast(ForkStats, await self._command(self._call_of(fork_id), "fork_stats", (fork_id,)))

    async def leg_stats(self, call_id: str, leg: Leg) -> LegStats:
        return cast(LegStats, await self._command(call_id, "leg_stats", (call_id, leg)))

    async def next_event(self) -> MediaEvent:
        """The next event (when no ``on_event`` callback is set)."""
        return await self._events.get()

    @property
    def workers(self) -> tuple[int, int]:
        """(configured, alive) media worker processes; (0, 0) when pipelines run in-process."""
        return len(self._workers), sum(1 for w in self._workers if w.alive)

    @property
    def worker_pids(self) -> tuple[int | None, ...]:
        """Process ids of the workers (None for one that never started); for tests and ops."""
        return tuple(w.process.pid if w.process is not None else None for w in self._workers)

    def placement(self, call_id: str) -> int | None:
        """Where a call runs: -1 in this process, a worker index, None if unknown."""
        return self._placement.get(call_id)

    # --- placement ------------------------------------------------------------------------------

    def _place(self, call_id: str, *, tap: bool, for_leg: bool) -> int:
        if not self._started or self._closing:
            raise LocalProtocolError("the media engine is not running (use start() or async with)")
        self._check_not_lost(call_id)
        wants_worker = tap and bool(self._workers)
        location = self._placement.get(call_id)
        if location is None:
            location = self._least_loaded() if wants_worker else LOCAL
            self._set_placement(call_id, location)
            return location
        if for_leg and location == LOCAL and wants_worker:
            raise LocalProtocolError(
                f"call {call_id} runs in this process (its first leg was feed-only), so it cannot "
                "have a tap leg; open its tap legs before any feed-only leg, or use feed() for all"
            )
        if for_leg and location != LOCAL and not tap:
            raise LocalProtocolError(
                f"call {call_id} runs in media worker {location} (its first leg was a tap), so it "
                "cannot have a feed-only leg: feed() serves only in-process calls"
            )
        return location

    def _least_loaded(self) -> int:
        # A count per worker, not a scan of every placed call: opening the n-th call must not
        # cost O(n) (a sidecar opening thousands of calls would pay O(n²)).
        alive = [w.index for w in self._workers if w.alive]
        if not alive:
            raise WorkerLostError("no media worker is alive")
        calls_on = self._calls_on
        return min(alive, key=lambda index: (calls_on[index], index))

    def _set_placement(self, call_id: str, location: int) -> None:
        self._placement[call_id] = location
        self._calls_on[location] += 1

    def _drop_placement(self, call_id: str) -> None:
        location = self._placement.pop(call_id, None)
        if location is not None:
            self._calls_on[location] -= 1
        self._lost_calls.pop(call_id, None)

    def _check_not_lost(self, call_id: str) -> None:
        lost = self._lost_calls.get(call_id)
        if lost is not None:
            index, reason = lost
            raise WorkerLostError(f"call {call_id} was on media worker {index}, which died: {reason}")

    def _release(self, call_id: str) -> None:
        refs = self._refs.get(call_id, 0) - 1
        if refs > 0:
            self._refs[call_id] = refs
        else:
            self._refs.pop(call_id, None)
            self._drop_placement(call_id)

    def _call_of(self, fork_id: str) -> str:
        call_id = self._fork_call.get(fork_id)
        if call_id is None:
            raise LocalProtocolError(f"no fork {fork_id} (reserve_fork_port first)")
        return call_id

    # --- commands -----------------------------------------------------------------------------

    async def _command(self, call_id: str, command: str, args: tuple[Any, ...]) -> object:
        location = self._placement.get(call_id)
        if location is None:
            self._check_not_lost(call_id)
            raise LocalProtocolError(f"no call {call_id} is open")
        return await self._command_at(location, call_id, command, args)

    async def _command_at(self, location: int, call_id: str, command: str, args: tuple[Any, ...]) -> object:
        fresh = call_id not in self._refs  # placed by this very request
        try:
            if location == LOCAL:
                host = self._local_host()
                result = host.execute(command, args, time.monotonic(), time.time())
                self._rearm()
                return result
            worker = self._workers[location]
            if not worker.alive:
                raise WorkerLostError(
                    f"call {call_id} was on media worker {location}, which died: {worker.death}"
                )
            return await self._request(worker, command, args)
        except BaseException:
            if fresh and self._placement.get(call_id) == location:
                self._drop_placement(call_id)
            raise

    async def _request(self, worker: _Worker, command: str, args: tuple[Any, ...]) -> object:
        assert worker.channel is not None and self._loop is not None
        self._request_ids += 1
        request_id = self._request_ids
        future: asyncio.Future[Any] = self._loop.create_future()
        worker.pending[request_id] = future
        try:
            worker.channel.send(encode_frame(("call", request_id, command, args)))
            return await future
        finally:
            worker.pending.pop(request_id, None)

    def _on_worker_message(self, worker: _Worker, message: Any) -> None:
        kind = message[0]
        if kind == "event":
            self._deliver(message[1])
        elif kind in ("ok", "error"):
            future = worker.pending.get(message[1])
            if future is not None and not future.done():
                if kind == "ok":
                    future.set_result(message[2])
                else:
                    future.set_exception(message[2])
        elif worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(message)

    def _on_channel_lost(self, worker: _Worker, reason: str) -> None:
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(ConnectionError(reason))
        if worker.alive and self._loop is not None:
            worker.alive = False  # at once: no command may be sent to it from now on
            worker.task = self._loop.create_task(self._worker_lost(worker, reason))

    async def _worker_lost(self, worker: _Worker, reason: str) -> None:
        worker.alive = False
        process = worker.process
        if process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WORKER_STOP_TIMEOUT):
                    await process.wait()
            reason = _exit_reason(process.pid, process.returncode, reason)
        worker.death = reason
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerLostError(f"media worker {worker.index} died: {reason}"))
        if self._closing:
            return
        if process is not None and process.returncode is None:
            # Alive but unreachable (a corrupt control stream): it still holds the slice's ports.
            process.kill()
            await process.wait()
        calls = tuple(sorted(c for c, location in self._placement.items() if location == worker.index))
        forks = tuple(sorted(f for f, c in self._fork_call.items() if c in calls))
        for call_id in calls:
            # Set aside: the replacement worker must never get commands for calls it never had.
            self._drop_placement(call_id)
            self._lost_calls[call_id] = (worker.index, reason)
        log.error("media worker %d died (%s), losing calls %s", worker.index, reason, calls)
        self._deliver(WorkerDied(worker.index, reason, calls, forks))
        if self.config.worker_restart > 0:
            await self._replace(worker)

    async def _replace(self, worker: _Worker) -> None:
        """Start a new process for a dead worker's port slice, after a delay that doubles while
        replacements keep dying young (a worker that crashes at start must not spin a core)."""
        lived = time.monotonic() - worker.started_at
        base = self.config.worker_restart
        delay = (
            base
            if lived >= STABLE_WORKER_SECONDS
            else min(max(worker.restart_delay * 2, base), MAX_RESTART_DELAY)
        )
        while not self._closing:
            worker.restart_delay = delay
            await asyncio.sleep(delay)
            if self._closing:
                return
            worker.process = worker.channel = worker.ready = None
            worker.pending = {}
            try:
                await self._spawn(worker)
            except (LocalProtocolError, OSError) as exc:
                await self._discard(worker)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                log.error(
                    "media worker %d could not be replaced (%s); next try in %g s", worker.index, exc, delay
                )
                continue
            pid = worker.process.pid if worker.process is not None else None
            log.warning("media worker %d replaced by pid %s", worker.index, pid)
            return

    @staticmethod
    async def _discard(worker: _Worker) -> None:
        """What a failed start left: the process (it holds the slice's ports) and the channel."""
        if worker.channel is not None:
            worker.channel.close()
        process = worker.process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    # --- events and the in-process host's loop ------------------------------------------------

    def _deliver(self, event: MediaEvent) -> None:
        callback = self.on_event
        if callback is None:
            self._events.put_nowait(event)
            return
        try:
            callback(event)
        except Exception:
            log.exception("on_event callback failed on %r", event)

    def _local_host(self) -> MediaHost:
        if self._host is None:
            raise LocalProtocolError("the media engine is not started")
        return self._host

    # Reactor for the in-process MediaHost.
    def add_reader(self, fd: int, callback: Readable) -> None:
        assert self._loop is not None
        self._loop.add_reader(fd, self._readable, callback)

    def remove_reader(self, fd: int) -> None:
        assert self._loop is not None
        self._loop.remove_reader(fd)

    @staticmethod
    def _readable(callback: Readable) -> None:
        # asyncio's select-and-dispatch round costs far more than a failed recv, so drain here
        # (bounded, so one busy socket cannot hold the loop).
        now = time.monotonic()
        for _ in range(ASYNCIO_DRAIN):
            if not callback(now):
                return

    def _rearm(self) -> None:
        """Keep one loop timer at the host's earliest deadline (re-armed only when it moved)."""
        host = self._host
        if host is None or self._loop is None:
            return
        deadline = host.timers.earliest()
        if deadline == self._armed_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = deadline
        if deadline is not None and not self._closing:
            self._timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = None
        if self._host is not None:
            self._host.timers.run(time.monotonic(), time.time())
        self._rearm()


def _exit_reason(pid: int, returncode: int | None, fallback: str) -> str:
    if returncode is None:
        return f"pid {pid}: {fallback}, process still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"pid {pid} killed by {name}"
    return f"pid {pid} exited with status {returncode}"
