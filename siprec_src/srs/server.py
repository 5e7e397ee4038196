"""``SrsServer``: the reference SRS on real sockets, and the ``siprec-src srs`` command.

The asyncio adapter around ``SrsCore`` (STYLE.md #2): a ``UserAgent`` carries SIP over
UDP/TCP/TLS, every core event goes to the session logic, and its actions are carried out here:
bind a ``StreamSink`` per answered m-line (its WAV file in the session's folder), configure,
pause or close it, write ``session.json`` (``output.py``) when a session starts, changes and
ends. One ``loop.call_at`` timer serves the session timers. No SIPREC rule lives here: they are
in ``session.py``, tested on a virtual clock.

    server = SrsServer([ListenSpec("udp", "127.0.0.1", 5080)], Path("recordings"))
    await server.start()
    record = await server.next_ended(timeout=30)   # a SessionRecord: files, stats, end reason
    await server.close()                           # BYE to every live session, files finished
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from siprec_src.errors import ConfigError, SiprecError
from siprec_src.signaling.timer import CoreTimer
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.message import Request, Response
from siprec_src.sip.syntax import SipParseError
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import RequestFailed, ResponseReceived, UaEvent, UserAgentCore
from siprec_src.srs.jitter import StreamStats
from siprec_src.srs.media import StreamSink
from siprec_src.srs.output import SESSION_FILE, session_document, stream_file_name, write_session_file
from siprec_src.srs.session import (
    DEFAULT_GUARD,
    MIN_SESSION_EXPIRES,
    CloseStream,
    ConfigureStream,
    OpenStreams,
    SessionEnded,
    SessionStarted,
    SessionUpdated,
    SrsCore,
    SrsSession,
    srs_ua_config,
)

__all__ = ["SessionRecord", "SrsServer", "add_srs_arguments", "parse_listen", "srs_main"]

log = logging.getLogger(__name__)

_BYE_WAIT = 2.0  # how long close() waits for the answers to its BYEs


@dataclass
class SessionRecord:
    """One recording session as the server keeps it: the session state, its folder and its sinks."""

    session: SrsSession
    directory: Path
    sinks: dict[str, StreamSink] = field(default_factory=dict)
    final_stats: dict[str, StreamStats] = field(default_factory=dict)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def live(self) -> bool:
        return self.session.live

    @property
    def json_path(self) -> Path:
        return self.directory / SESSION_FILE

    def wav_path(self, label: str) -> Path:
        return self.directory / stream_file_name(label)

    def stats(self) -> dict[str, StreamStats]:
        """Per label: the final statistics of closed streams, the running ones of open streams."""
        running = {label: sink.stats() for label, sink in self.sinks.items()}
        return {**running, **self.final_stats}


class SrsServer:
    """The reference SRS: answers SIPREC sessions and records each stream to a WAV file."""

    def __init__(
        self,
        listen: Sequence[ListenSpec],
        out_dir: Path,
        *,
        tls: TlsConfig | None = None,
        media_host: str = "127.0.0.1",
        min_session_expires: int = MIN_SESSION_EXPIRES,
        session_timeout_guard: float = DEFAULT_GUARD,
        user_agent: str = "siprec-src srs",
        on_session_start: Callable[[SessionRecord], None] | None = None,
        on_session_end: Callable[[SessionRecord], None] | None = None,
        on_sip_trace: Callable[[str, Request | Response, Destination], None] | None = None,
    ) -> None:
        if not listen:
            raise ConfigError("the SRS needs at least one listen address", key="listen")
        self._listen = tuple(listen)
        self.out_dir = Path(out_dir)
        self.media_host = media_host
        self._tls = tls
        self._min_se = min_session_expires
        self._guard = session_timeout_guard
        self._user_agent = user_agent
        self.on_session_start = on_session_start
        self.on_session_end = on_session_end
        self._on_sip_trace = on_sip_trace  # ("in" | "out", message, peer) of every SIP message
        self._records: dict[str, SessionRecord] = {}
        self._ended: asyncio.Queue[SessionRecord] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._byes: set[int] = set()  # at close(): our BYEs still waiting for their answer
        self._timer = CoreTimer(self._on_timer)
        self._ua: UserAgent | None = None
        self._srs: SrsCore | None = None
        self._closing = False
        # Session times are event-loop times; this anchors them to the wall clock for the files.
        self._epoch = 0.0

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._epoch = time.time() - loop.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        core = UserAgentCore(srs_ua_config(self._user_agent))
        self._srs = SrsCore(
            core,
            media_host=self.media_host,
            min_session_expires=self._min_se,
            session_timeout_guard=self._guard,
            new_session_id=self._new_session_id,
        )
        self._ua = UserAgent(core, tls=self._tls, on_event=self._on_ua_event, on_trace=self._on_sip_trace)
        try:
            await self._ua.start(self._listen)
        except BaseException:
            await self._ua.close()
            raise

    async def close(self) -> None:
        """BYE every live session (503 to those still being set up), finish every file, stop."""
        if self._ua is None or self._srs is None or self._closing:
            return
        self._closing = True
        live = [record for record in self._records.values() if record.live]
        self._srs.stop_all(self._ua.now(), "the SRS is shutting down")
        self._byes = {r.session.bye_request for r in live if r.session.bye_request is not None}
        self._after()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_BYE_WAIT):
                while self._byes:
                    await asyncio.sleep(0.02)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._timer.cancel()
        await self._ua.close()

    async def __aenter__(self) -> SrsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what users of the server read -------------------------------------------------------------

    @property
    def addresses(self) -> tuple[Destination, ...]:
        """Every bound SIP address (the real port when 0 was asked for)."""
        return self._ua.transport.addresses if self._ua is not None else ()

    def uri(self, transport: str = "udp", user: str = "srs") -> str:
        """A SIP URI an SRC can record to, for one of the listening transports."""
        assert self._ua is not None, "start() the server first"
        host, port = self._ua.transport.local_address(transport)
        shown = f"[{host}]" if ":" in host else host
        if transport == "tls":
            return f"sips:{user}@{shown}:{port}"
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user}@{shown}:{port}{suffix}"

    @property
    def sessions(self) -> tuple[SessionRecord, ...]:
        """Every session answered so far, live and ended, in order of arrival."""
        return tuple(self._records.values())

    async def next_ended(self, timeout: float | None = None) -> SessionRecord:
        """The next session whose files are complete (sinks closed, final session.json written)."""
        async with asyncio.timeout(timeout):
            return await self._ended.get()

    def wall(self, at: float) -> datetime:
        """An event-loop time as a UTC datetime."""
        return datetime.fromtimestamp(self._epoch + at, UTC)

    # --- the loop around the session logic -----------------------------------------------------------

    def _new_session_id(self) -> str:
        return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"

    def _on_ua_event(self, event: UaEvent) -> None:
        assert self._ua is not None and self._srs is not None
        if isinstance(event, RequestFailed) or (
            isinstance(event, ResponseReceived) and event.response.status >= 200
        ):
            self._byes.discard(event.request_id)
        self._srs.handle_ua_event(event, self._ua.now())
        self._after()

    def _after(self) -> None:
        """Carry out the session logic's actions, send what the SIP core queued, re-arm the timer."""
        assert self._ua is not None and self._srs is not None
        while (action := self._srs.next_action()) is not None:
            try:
                self._do(action)
            except (SiprecError, OSError):
                log.exception("SRS action %r failed", action)
        self._ua.pump()
        self._arm_timer()

    def _do(self, action: object) -> None:
        if isinstance(action, OpenStreams):
            self._spawn(self._open(action))
        elif isinstance(action, ConfigureStream):
            record = self._records.get(action.session_id)
            sink = record.sinks.get(action.label) if record else None
            if sink is not None:
                sink.configure(dict(action.payload_types), action.srtp)
                if action.paused:
                    sink.pause()
                else:
                    sink.resume()
        elif isinstance(action, CloseStream):
            record = self._records.get(action.session_id)
            if record is not None and action.label in record.sinks:
                self._spawn(self._close_sink(record, action.label))
        elif isinstance(action, SessionStarted):
            record = self._records[action.session_id]
            self._write(record)
            if self.on_session_start is not None:
                try:
                    self.on_session_start(record)
                except Exception:
                    log.exception("on_session_start failed for %s", record.session_id)
        elif isinstance(action, SessionUpdated):
            self._write(self._records[action.session_id])
        elif isinstance(action, SessionEnded):
            record = self._records.get(action.session_id)
            if record is not None:
                self._spawn(self._finish(record, started=action.started))

    def _record_for(self, session_id: str) -> SessionRecord:
        assert self._srs is not None
        record = self._records.get(session_id)
        if record is None:
            record = SessionRecord(self._srs.sessions[session_id], self.out_dir / session_id)
            self._records[session_id] = record
        return record

    async def _open(self, action: OpenStreams) -> None:
        assert self._srs is not None and self._ua is not None
        record = self._record_for(action.session_id)
        opened: dict[str, StreamSink] = {}
        try:
            record.directory.mkdir(parents=True, exist_ok=True)
            for label in action.labels:
                opened[label] = await StreamSink.open(
                    self.media_host, label=label, out_path=record.wav_path(label)
                )
        except (SiprecError, OSError) as exc:
            await self._discard(record, opened)
            self._srs.streams_unavailable(action.session_id, str(exc), self._ua.now())
            self._after()
            return
        if not record.live:
            # Cancelled, ended or shut down while the sockets were being bound: nothing to record.
            await self._discard(record, opened)
            return
        record.sinks.update(opened)
        ports = {label: sink.port for label, sink in opened.items()}
        self._srs.streams_opened(action.session_id, ports, self._ua.now())
        self._after()

    async def _discard(self, record: SessionRecord, sinks: dict[str, StreamSink]) -> None:
        """Close sinks whose streams were never answered and remove their (empty) files."""
        for label, sink in sinks.items():
            await sink.close()
            record.wav_path(label).unlink(missing_ok=True)
        if not record.session.started:
            with contextlib.suppress(OSError):
                record.directory.rmdir()

    async def _close_sink(self, record: SessionRecord, label: str) -> None:
        sink = record.sinks.pop(label, None)
        if sink is not None:
            record.final_stats[label] = await sink.close()
            self._write(record)

    async def _finish(self, record: SessionRecord, *, started: bool) -> None:
        if record.finished.is_set():
            return
        sinks = dict(record.sinks)
        record.sinks.clear()
        if not started:
            # Never answered: nothing was recorded, leave no folder behind.
            await self._discard(record, sinks)
            self._records.pop(record.session_id, None)
            record.finished.set()
            return
        finals = await asyncio.gather(*(sink.close() for sink in sinks.values()))
        record.final_stats.update(zip(sinks, finals, strict=True))
        self._write(record)
        record.finished.set()
        self._ended.put_nowait(record)
        if self.on_session_end is not None:
            try:
                self.on_session_end(record)
            except Exception:
                log.exception("on_session_end failed for %s", record.session_id)

    def _write(self, record: SessionRecord) -> None:
        try:
            write_session_file(record.directory, session_document(record.session, record.stats(), self.wall))
        except OSError:
            log.exception("cannot write %s", record.json_path)

    def _spawn(self, coroutine: object) -> None:
        assert asyncio.iscoroutine(coroutine)
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SRS task failed", exc_info=task.exception())

    def _arm_timer(self) -> None:
        assert self._srs is not None
        self._timer.arm(self._srs.get_timer())

    def _on_timer(self) -> None:
        assert self._srs is not None and self._ua is not None
        self._srs.handle_timer(self._ua.now())
        self._after()


# --- the command line -----------------------------------------------------------------------------


def parse_listen(text: str) -> list[ListenSpec]:
    """``sip:HOST[:PORT][;transport=udp|tcp]`` or ``sips:HOST[:PORT]`` as listen addresses.

    A ``sip:`` URI without ``transport`` listens on UDP and TCP (RFC 3261 §18: a UAS that takes
    UDP takes TCP as well), 5060 by default; ``sips:`` (or ``transport=tls``) on TLS, 5061.
    """
    try:
        uri = SipUri.parse(text if ":" in text.split("@", maxsplit=1)[0] else f"sip:{text}")
    except SipParseError as exc:
        raise ConfigError(f"--listen {text!r}: {exc.reason}", key="listen") from exc
    transport = uri.transport
    if uri.secure or transport == "tls":
        transports = ["tls"]
    elif transport in ("udp", "tcp"):
        transports = [transport]
    elif transport is None:
        transports = ["udp", "tcp"]
    else:
        raise ConfigError(f"--listen {text!r}: transport must be udp, tcp or tls", key="listen")
    host = uri.host.strip("[]")
    port = uri.port if uri.port is not None else (5061 if transports == ["tls"] else 5060)
    return [ListenSpec(t, host, port) for t in transports]


def add_srs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="URI",
        help="sip:HOST:PORT (UDP+TCP), sip:HOST:PORT;transport=udp|tcp, sips:HOST:PORT (TLS); repeatable",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the recordings")
    parser.add_argument(
        "--media-host", default=None, metavar="IP", help="address for RTP (default: the first --listen host)"
    )
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="certificate for sips: listeners")
    parser.add_argument("--tls-key", default=None, metavar="FILE")
    parser.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="CA to verify client certificates (optional)"
    )
    parser.add_argument(
        "--min-se",
        type=int,
        default=MIN_SESSION_EXPIRES,
        metavar="S",
        help=f"smallest Session-Expires accepted (RFC 4028 Min-SE, default {MIN_SESSION_EXPIRES})",
    )


async def run_srs(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    """Run until ``stop`` is set (SIGINT/SIGTERM from ``srs_main``), then shut down gracefully."""
    listens = [spec for text in args.listen for spec in parse_listen(text)]
    tls = None
    if args.tls_cert or args.tls_key or args.tls_ca:
        tls = TlsConfig(certfile=args.tls_cert, keyfile=args.tls_key, cafile=args.tls_ca)
    if any(spec.transport == "tls" for spec in listens) and (tls is None or tls.certfile is None):
        raise ConfigError("a sips: listener needs --tls-cert and --tls-key", key="tls-cert")
    media_host = args.media_host or listens[0].host
    if media_host in ("0.0.0.0", "::"):
        raise ConfigError("--media-host must be an address the SRC can send to, not a wildcard")
    stop = stop or asyncio.Event()

    def started(record: SessionRecord) -> None:
        session = record.session
        labels = ", ".join(session.streams)
        print(
            f"session {record.session_id} started: Call-ID {session.call_id} from {session.from_.uri} "
            f"streams [{labels}] -> {record.directory}",
            flush=True,
        )

    def ended(record: SessionRecord) -> None:
        session = record.session
        stats = record.stats()
        packets = sum(s.packets for s in stats.values())
        duration = (session.ended_at or 0.0) - (session.started_at or 0.0)
        print(
            f"session {record.session_id} ended: {session.end_reason} after {duration:.1f} s, "
            f"{packets} RTP packets -> {record.json_path}",
            flush=True,
        )

    server = SrsServer(
        listens,
        Path(args.out),
        tls=tls,
        media_host=media_host,
        min_session_expires=args.min_se,
        on_session_start=started,
        on_session_end=ended,
    )
    await server.start()
    try:
        shown = ", ".join(f"{a.transport}:{a.host}:{a.port}" for a in server.addresses)
        print(f"siprec-src srs listening on {shown}, recording to {server.out_dir}", flush=True)
        await stop.wait()
    finally:
        await server.close()
    return 0


def srs_main(args: argparse.Namespace) -> int:
    """``siprec-src srs``: run the reference SRS until SIGINT or SIGTERM."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_srs(args, stop)

    try:
        return asyncio.run(main())
    except (SiprecError, OSError) as exc:
        print(f"siprec-src srs: {exc}", file=sys.stderr)
        return 1
