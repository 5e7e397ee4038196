"""An impaired link between two network namespaces, made and removed by the test that uses it.

``LossyLink`` creates two namespaces, ``left`` (where the SRC runs) and ``right`` (the SRS),
each with one point-to-point interface, and carries every IP packet between them through a
*userspace netem*: a thread of this process that reads each packet from one side, drops it,
delays it or sends it early the way ``tc qdisc ... netem`` would, and writes it to the other
side. Processes run inside a namespace with ``ip netns exec`` (:meth:`LossyLink.command`).

Why not ``tc netem`` on a veth pair: the kernel we must run on may be built without
``sch_netem`` (``CONFIG_NET_SCH_NETEM`` is not set on the machine these tests were written on,
and it has no modules to load), and ``tc`` of Debian 12 (iproute2 6.1) cannot seed netem's
random numbers. The relay needs only ``CONFIG_TUN``, its random numbers come from a seed, and
it counts what it did to each flow, so a test can hold the SRS's statistics against the truth
rather than against a band. :meth:`Impairment.netem` prints the equivalent ``tc`` arguments for
a machine that has netem.

Each side's interface is a TUN device (layer 3, no ARP, no offloads: every packet the relay
reads is a complete IP datagram or fragment). The relay opens both devices itself: a helper
thread enters each namespace with ``setns(2)`` just long enough to create the device, so
nothing outside the two namespaces is touched, and closing the device's file removes it.

Namespace names are ``lossy<pid>-<n>-l`` / ``-r``, unique per process and link; :meth:`close`
(always called: ``with`` or a fixture finalizer) stops the relay and deletes both, and a new
link first deletes the leftovers of processes that no longer exist (a run killed with -9).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import heapq
import itertools
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

NETNS_DIR: Final = Path("/run/netns")
PREFIX: Final = "lossy"
LEFT_IP: Final = "10.250.0.2"  # the client side (SRC)
RIGHT_IP: Final = "10.250.0.1"  # the server side (SRS)
PREFIX_LEN: Final = 24
DEVICE: Final = "lossy0"
SIP_PORT: Final = 5080  # where the SRS listens (UDP and TCP)

UP: Final = "up"  # left -> right (SRC to SRS)
DOWN: Final = "down"  # right -> left

_TUNSETIFF: Final = 0x400454CA
_IFF_TUN: Final = 0x0001
_IFF_NO_PI: Final = 0x1000
_CLONE_NEWNET: Final = 0x40000000
_MAX_PACKET: Final = 65535
_SIP_START: Final = re.compile(
    rb"^(?:SIP/2\.0 \d{3} [^\r\n]*|[A-Z]+ (?:sips?|tel):[^\r\n]* SIP/2\.0)\r\n", re.ASCII
)
_CSEQ: Final = re.compile(rb"\r\n(?:CSeq|cseq|CSEQ)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.ASCII)
FlowKey = tuple[str, str, int, str, int]  # protocol, source, source port, destination, port
_DatagramKey = tuple[int, str, str, int]  # protocol, source, destination, IP id (fragments)
_NO_IPV6: Final = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
_sequence = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Impairment:
    """What the link does to each packet in one direction, with netem's meaning of each field.

    ``loss``: probability a packet is dropped. ``delay`` ± ``jitter`` (uniform), in seconds:
    how long a packet stays in the link; packets leave in the order of their due time, so a
    jitter larger than the packet spacing reorders them (netem's tfifo does the same).
    ``reorder``: probability a packet skips the delay and leaves at once (netem ``reorder``),
    with netem's correlation: each draw is ``(1 - c) * U + c * previous``. ``sip_only``:
    impair only SIP signaling (packets to or from ``sip_port``, over UDP or TCP) and pass the
    rest untouched. ``drop_first``: SIP message kinds (``INVITE``, ``200/INVITE``, ``ACK``,
    ``BYE``, ``200/BYE``) whose first transmission the link always drops, whatever the draws
    say, so a test knows the retransmission timers (RFC 3261 Timers A, G, E) had to work.
    """

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_correlation: float = 0.0
    sip_only: bool = False
    sip_port: int = SIP_PORT
    drop_first: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "reorder_correlation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"Impairment.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.delay < 0 or not 0 <= self.jitter <= self.delay:
            raise ValueError(f"need 0 <= jitter <= delay, got delay {self.delay}, jitter {self.jitter}")

    def netem(self) -> str:
        """The same impairment as ``tc qdisc add dev DEV root netem ...`` arguments."""
        parts = ["netem"]
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        if self.delay:
            parts.append(f"delay {self.delay * 1000:g}ms")
            if self.jitter:
                parts.append(f"{self.jitter * 1000:g}ms distribution uniform")
        if self.reorder:
            parts.append(f"reorder {self.reorder * 100:g}%")
            if self.reorder_correlation:
                parts.append(f"{self.reorder_correlation * 100:g}%")
        text = " ".join(parts)
        if self.sip_only:
            text += f" (SIP port {self.sip_port} only)"
        if self.drop_first:
            text += f", first {', '.join(self.drop_first)} dropped"
        return text


@dataclass(slots=True)
class FlowStats:
    """One flow (protocol, source, destination) as the relay saw it, in packets.

    ``reordered``: delivered after a packet of the same flow that entered the link later.
    IP fragments count one each and belong to the flow of their datagram.
    """

    sent: int = 0
    dropped: int = 0
    delivered: int = 0
    reordered: int = 0
    _newest_delivered: float = -1.0


@dataclass(slots=True)
class SipPacket:
    """A packet whose payload starts a SIP message: one transmission of it on the link.

    ``sent_at`` is when it entered the link (left its host), ``delivered_at`` when it reached
    the other host (for a fragmented UDP datagram: when its last fragment did), None when the
    link dropped it (or any fragment of it). Times are ``time.monotonic()``.
    """

    direction: str
    transport: str
    start_line: str
    kind: str  # INVITE, ACK, 200/INVITE ...
    cseq_method: str
    sent_at: float
    delivered_at: float | None

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        return None if self.is_request else int(self.start_line.split()[1])


class _Correlated:
    """netem's correlated uniform random numbers (``get_crandom`` in sch_netem.c)."""

    def __init__(self, rng: random.Random, correlation: float) -> None:
        self._rng = rng
        self._rho = correlation
        self._last = rng.random()

    def __call__(self) -> float:
        value = self._rng.random()
        if self._rho:
            value = (1.0 - self._rho) * value + self._rho * self._last
            self._last = value
        return value


class _Draws:
    """The random numbers of one class of packets: a loss, a jitter and a reorder draw each."""

    def __init__(self, seed: str, reorder_correlation: float) -> None:
        rng = random.Random(seed)
        self.loss = rng.random
        self.jitter = rng.uniform
        self.reorder = _Correlated(rng, reorder_correlation)


class _Direction:
    """One direction of the link: its impairment, random numbers and the device it writes to.

    Every class of packets draws from its own generator, seeded from the link's seed, the
    direction and the class, so what happens to, say, the second BYE does not depend on how many
    RTP packets went before it. A class is a SIP message kind (its method, or status and CSeq
    method: ``INVITE``, ``200/INVITE``), the continuation fragments of such a message, or a flow
    (numbered in order of appearance).
    """

    def __init__(self, name: str, impairment: Impairment, seed: int, out_fd: int) -> None:
        self.name = name
        self.impairment = impairment
        self.out_fd = out_fd
        self._seed = seed
        self._draws: dict[str, _Draws] = {}
        self._flow_numbers: dict[FlowKey, int] = {}
        self.first_seen: set[str] = set()  # SIP kinds already transmitted once

    def draws(self, packet_class: str) -> _Draws:
        draws = self._draws.get(packet_class)
        if draws is None:
            draws = _Draws(f"{self._seed}/{self.name}/{packet_class}", self.impairment.reorder_correlation)
            self._draws[packet_class] = draws
        return draws

    def flow_class(self, key: FlowKey) -> str:
        if key[0] not in ("udp", "tcp"):
            return key[0]  # ICMP errors come and go with timing: they must not renumber the flows
        number = self._flow_numbers.setdefault(key, len(self._flow_numbers))
        return f"flow{number}"


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces of links whose process is gone; returns their names."""
    removed = []
    pattern = re.compile(rf"^{PREFIX}(\d+)-\d+-[lr]$")
    names = sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []
    for name in names:
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _run(["ip", "netns", "delete", name], check=False)
            removed.append(name)
    return removed


def _open_tun_in(namespace: str, name: str) -> int:
    """Create TUN device ``name`` inside ``namespace``; returns its (non-blocking) file descriptor.

    ``setns(2)`` changes the namespace of the calling thread only, so a throwaway thread does
    it: the rest of the process never leaves its own namespace.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict[str, int | BaseException] = {}

    def work() -> None:
        try:
            ns_fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(ns_fd, _CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({namespace}): {os.strerror(code)}")
            finally:
                os.close(ns_fd)
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
            except BaseException:
                os.close(fd)
                raise
            outcome["fd"] = fd
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"tun-{namespace}")
    thread.start()
    thread.join()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    fd = outcome["fd"]
    assert isinstance(fd, int)
    return fd


@dataclass(slots=True)
class _Packet:
    key: FlowKey  # protocol, source, source port, destination, port
    datagram: _DatagramKey | None  # (protocol, source, destination, IP id) if fragmented
    payload: bytes | None  # the transport payload, first fragment only
    more_fragments: bool


def _parse(packet: bytes, fragments: dict[_DatagramKey, FlowKey]) -> _Packet:
    """Flow key (and SIP-relevant payload) of one IPv4 packet; anything else is its own flow."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        name = "ipv6" if packet and packet[0] >> 4 == 6 else "other"
        return _Packet((name, "", 0, "", 0), None, None, False)
    header = (packet[0] & 0x0F) * 4
    ident, flags_offset, protocol = struct.unpack_from("!HHxB", packet, 4)
    source = socket.inet_ntoa(packet[12:16])
    destination = socket.inet_ntoa(packet[16:20])
    offset = flags_offset & 0x1FFF
    more = bool(flags_offset & 0x2000)
    datagram = (protocol, source, destination, ident) if (offset or more) else None
    name = {6: "tcp", 17: "udp", 1: "icmp"}.get(protocol, str(protocol))
    if offset:
        key = fragments.get(datagram) if datagram else None
        return _Packet(key or (name, source, 0, destination, 0), datagram, None, more)
    sport = dport = 0
    payload = None
    if protocol in (6, 17) and len(packet) >= header + 4:
        sport, dport = struct.unpack_from("!HH", packet, header)
        if protocol == 17:
            payload = packet[header + 8 :]
        elif len(packet) >= header + 13:
            payload = packet[header + (packet[header + 12] >> 4) * 4 :]
    key = (name, source, sport, destination, dport)
    if datagram is not None:
        fragments[datagram] = key
    return _Packet(key, datagram, payload, more)


class LossyLink:
    """Two network namespaces joined through an impairing relay; see the module docstring.

    ``up`` impairs what the left side sends (SRC to SRS), ``down`` what the right side sends
    (default: the same as ``up``). ``seed`` fixes every random choice of the relay.
    """

    def __init__(self, up: Impairment, down: Impairment | None = None, *, seed: int = 1) -> None:
        tag = f"{PREFIX}{os.getpid()}-{next(_sequence)}"
        self.left = f"{tag}-l"
        self.right = f"{tag}-r"
        self.left_ip = LEFT_IP
        self.right_ip = RIGHT_IP
        self.up = up
        self.down = down if down is not None else up
        self.seed = seed
        self.flows: dict[str, dict[FlowKey, FlowStats]] = {UP: {}, DOWN: {}}
        self.sip: list[SipPacket] = []
        self.write_errors = 0  # packets the relay could not write to the other side
        self.error: BaseException | None = None  # what stopped the relay thread, if anything
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._created: list[str] = []
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._fragments: dict[_DatagramKey, FlowKey] = {}
        self._sip_fragments: dict[_DatagramKey, SipPacket] = {}

    # --- lifecycle ----------------------------------------------------------------------------------

    def open(self) -> LossyLink:
        """Create the namespaces and devices and start the relay; on failure, undo all of it."""
        try:
            remove_stale_namespaces()
            for namespace in (self.left, self.right):
                _run(["ip", "netns", "add", namespace])
                self._created.append(namespace)
                _run(["ip", "-n", namespace, "link", "set", "lo", "up"])
                # IPv4 only: no router solicitations or MLD reports crossing the link at random times.
                _run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", *_NO_IPV6])
            left_fd = _open_tun_in(self.left, DEVICE)
            self._fds.append(left_fd)
            right_fd = _open_tun_in(self.right, DEVICE)
            self._fds.append(right_fd)
            for namespace, address in ((self.left, self.left_ip), (self.right, self.right_ip)):
                _run(["ip", "-n", namespace, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", DEVICE])
                _run(["ip", "-n", namespace, "link", "set", DEVICE, "up"])
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            directions = {
                left_fd: _Direction(UP, self.up, self.seed, right_fd),
                right_fd: _Direction(DOWN, self.down, self.seed, left_fd),
            }
            self._thread = threading.Thread(target=self._relay, args=(directions,), name="lossy-link")
            self._thread.daemon = True
            self._thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the relay, remove the devices and delete the namespaces (idempotent)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=10)
            self._thread = None
        for fd in (*self._fds, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
        self._wake_r = self._wake_w = -1
        while self._created:
            _run(["ip", "netns", "delete", self._created.pop()], check=False)

    def __enter__(self) -> LossyLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        return any((NETNS_DIR / name).exists() for name in (self.left, self.right))

    def command(self, namespace: str, *argv: str) -> list[str]:
        """``argv`` run inside ``namespace`` (``self.left`` or ``self.right``)."""
        return ["ip", "netns", "exec", namespace, *argv]

    # --- what the relay saw -----------------------------------------------------------------------------

    def flow_stats(self, direction: str, match: Callable[[FlowKey], bool]) -> FlowStats:
        """The sum over the flows of ``direction`` whose key ``match`` accepts."""
        total = FlowStats()
        with self._lock:
            for key, stats in self.flows[direction].items():
                if match(key):
                    total.sent += stats.sent
                    total.dropped += stats.dropped
                    total.delivered += stats.delivered
                    total.reordered += stats.reordered
        return total

    def udp_flow(self, direction: str, destination_port: int) -> FlowStats:
        return self.flow_stats(direction, lambda key: key[0] == "udp" and key[4] == destination_port)

    def sip_packets(self) -> list[SipPacket]:
        with self._lock:
            return list(self.sip)

    def setup_time(self) -> float | None:
        """From the first INVITE sent to the first 2xx for it delivered to the SRC, in seconds."""
        packets = self.sip_packets()
        invite = next((p for p in packets if p.direction == UP and p.start_line.startswith("INVITE ")), None)
        answered = [
            p.delivered_at
            for p in packets
            if p.direction == DOWN
            and p.cseq_method == "INVITE"
            and (p.status or 0) // 100 == 2
            and p.delivered_at is not None
        ]
        if invite is None or not answered:
            return None
        return min(answered) - invite.sent_at

    # --- the relay thread -----------------------------------------------------------------------------

    def _relay(self, directions: dict[int, _Direction]) -> None:
        poller = select.poll()
        for fd in (*directions, self._wake_r):
            poller.register(fd, select.POLLIN)
        queue: list[tuple[float, int, int, bytes]] = []
        order = itertools.count()
        try:
            while True:
                now = time.monotonic()
                while queue and queue[0][0] <= now:
                    _, _, out_fd, packet = heapq.heappop(queue)
                    try:
                        os.write(out_fd, packet)
                    except OSError:
                        self.write_errors += 1
                timeout = None if not queue else max(0, int((queue[0][0] - now) * 1000) + 1)
                for fd, _ in poller.poll(timeout):
                    if fd == self._wake_r:
                        return
                    direction = directions[fd]
                    while True:
                        try:
                            packet = os.read(fd, _MAX_PACKET)
                        except BlockingIOError:
                            break
                        due = self._admit(direction, packet, time.monotonic())
                        if due is not None:
                            heapq.heappush(queue, (due, next(order), direction.out_fd, packet))
        except BaseException as exc:  # kept for the tests to report: never lost in a thread
            self.error = exc

    def _admit(self, direction: _Direction, packet: bytes, now: float) -> float | None:
        """Account for one packet; its due time, or None when the link drops it."""
        parsed = _parse(packet, self._fragments)
        sip = _sip_start(parsed.payload)
        impairment = direction.impairment
        with self._lock:
            carrier = self._sip_fragments.get(parsed.datagram) if parsed.datagram and sip is None else None
            if sip is not None:
                packet_class = f"sip/{sip[1]}"
            elif carrier is not None:
                packet_class = f"sip/{carrier.kind}/fragment"
            else:
                packet_class = direction.flow_class(parsed.key)
            impaired = not impairment.sip_only or (
                parsed.key[0] in ("udp", "tcp") and impairment.sip_port in (parsed.key[2], parsed.key[4])
            )
            due: float | None = now
            if impaired:
                draws = direction.draws(packet_class)
                # Always three draws in this order, so one seed gives one sequence of decisions.
                lost = draws.loss() < impairment.loss
                jitter = draws.jitter(-impairment.jitter, impairment.jitter)
                early = draws.reorder() < impairment.reorder
                due = None if lost else now + (0.0 if early else impairment.delay + jitter)
            if sip is not None and sip[1] not in direction.first_seen:
                direction.first_seen.add(sip[1])
                if sip[1] in impairment.drop_first:
                    due = None
            stats = self.flows[direction.name].setdefault(parsed.key, FlowStats())
            stats.sent += 1
            if due is None:
                stats.dropped += 1
            else:
                stats.delivered += 1
                if due < stats._newest_delivered:  # a packet that entered earlier leaves later
                    stats.reordered += 1
                stats._newest_delivered = max(stats._newest_delivered, due)
            if sip is not None:
                entry = SipPacket(direction.name, parsed.key[0], sip[0], sip[1], sip[2], now, due)
                self.sip.append(entry)
                if parsed.datagram is not None and parsed.more_fragments:
                    self._sip_fragments[parsed.datagram] = entry
            elif carrier is not None:
                # A datagram arrives only whole: when its last fragment does, if none was dropped.
                if due is None or carrier.delivered_at is None:
                    carrier.delivered_at = None
                else:
                    carrier.delivered_at = max(carrier.delivered_at, due)
                if not parsed.more_fragments:
                    del self._sip_fragments[parsed.datagram]  # type: ignore[arg-type]
        return due


def _sip_start(payload: bytes | None) -> tuple[str, str, str] | None:
    """(start line, kind, CSeq method) when ``payload`` begins a SIP message, else None.

    The kind is the method of a request, ``STATUS/METHOD`` of a response (``200/INVITE``).
    """
    if not payload:
        return None
    match = _SIP_START.match(payload)
    if match is None:
        return None
    line = match.group(0).decode("ascii", "replace").strip()
    cseq = _CSEQ.search(payload)
    method = cseq.group(1).decode("ascii").upper() if cseq else ""
    kind = f"{line.split()[1]}/{method}" if line.startswith("SIP/2.0 ") else line.split()[0]
    return line, kind, method


# --- a recording across the link: the reference SRS on the right, `siprec-src record` on the left ----


@dataclass
class RecordingRun:
    """What one ``siprec-src record`` run against ``siprec-src srs`` across a link left behind.

    ``src_status`` is None when the SRC had to be killed at its deadline. ``session`` is the
    SRS's ``session.json`` (None when the SRS wrote no session), ``srs_ended_in`` how long after
    the SRC exited the SRS printed that the session ended (None: it did not, before shutdown).
    """

    src_status: int | None
    src_summary: dict[str, Any] | None
    src_stdout: str
    src_stderr: str
    src_elapsed: float
    srs_status: int | None
    srs_stdout: str
    srs_stderr: str
    srs_ended_in: float | None
    session: dict[str, Any] | None
    session_dir: Path | None
    setup_time: float | None = None
    sip: list[SipPacket] = field(default_factory=list)

    def stream(self, label: str) -> dict[str, Any]:
        assert self.session is not None, "the SRS wrote no session"
        return next(s for s in self.session["streams"] if s["label"] == label)

    def sent(self, label: str) -> int:
        assert self.src_summary is not None, "the SRC printed no summary"
        return int(next(s for s in self.src_summary["streams"] if s["label"] == label)["packets_sent"])

    def remote_port(self, label: str) -> int:
        assert self.src_summary is not None, "the SRC printed no summary"
        remote = next(s for s in self.src_summary["streams"] if s["label"] == label)["remote"]
        return int(str(remote).rsplit(":", 1)[1])


async def _read_lines(stream: asyncio.StreamReader, into: list[str], seen: dict[str, asyncio.Event]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace")
        into.append(text)
        for needle, event in seen.items():
            if needle in text:
                event.set()


async def _stop(process: asyncio.subprocess.Process, grace: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status (None if it was killed)."""
    if process.returncode is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            return await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return None


async def record_across(
    link: LossyLink,
    out_dir: Path,
    *,
    transport: str = "udp",
    duration: float = 4.0,
    src_deadline: float = 60.0,
    srs_end_wait: float = 5.0,
    extra_args: Sequence[str] = (),
) -> RecordingRun:
    """Run the SRS in ``link.right`` and record a synthetic call to it from ``link.left``.

    The SRS listens on UDP and TCP at ``link.right_ip:5080``; the SRC records to
    ``sip:srs@IP:5080;transport=TRANSPORT`` for ``duration`` seconds without session timer
    (``--session-timeout 0``). The SRC is killed if it runs past ``src_deadline``; after it
    exits, the SRS gets ``srs_end_wait`` seconds to end the session, then SIGTERM. Every
    process started here is stopped before this returns, whatever happens.
    """
    python = sys.executable
    srs_lines: list[str] = []
    listening, ended = asyncio.Event(), asyncio.Event()
    out_dir.mkdir(parents=True, exist_ok=True)
    srs = await asyncio.create_subprocess_exec(
        *link.command(
            link.right,
            python,
            "-m",
            "siprec_src",
            "srs",
            "--listen",
            f"sip:{link.right_ip}:{SIP_PORT}",
            "--out",
            str(out_dir),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    src: asyncio.subprocess.Process | None = None
    assert srs.stdout is not None and srs.stderr is not None
    watch = {"listening": listening, "ended": ended}
    reader = asyncio.ensure_future(_read_lines(srs.stdout, srs_lines, watch))
    srs_errors = asyncio.ensure_future(srs.stderr.read())
    try:
        async with asyncio.timeout(30):
            await listening.wait()
        started = time.monotonic()
        src = await asyncio.create_subprocess_exec(
            *link.command(
                link.left,
                python,
                "-m",
                "siprec_src",
                "record",
                "--srs",
                f"sip:srs@{link.right_ip}:{SIP_PORT};transport={transport}",
                "--duration",
                f"{duration:g}",
                "--session-timeout",
                "0",
                "--json",
                *extra_args,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        src_status: int | None
        try:
            async with asyncio.timeout(src_deadline):
                out, err = await src.communicate()
            src_status = src.returncode
        except TimeoutError:
            src.kill()
            out, err = await src.communicate()
            src_status = None
        src_exited = time.monotonic()
        src_elapsed = src_exited - started
        srs_ended_in = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(srs_end_wait):
                await ended.wait()
            srs_ended_in = max(0.0, time.monotonic() - src_exited)
        srs_status = await _stop(srs, grace=15)
        await reader
        srs_stderr = (await srs_errors).decode(errors="replace")
    finally:
        for process in (src, srs):
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        reader.cancel()
        srs_errors.cancel()
    stdout = out.decode(errors="replace")
    summary = None
    with contextlib.suppress(ValueError):
        summary = json.loads(stdout) if stdout.strip() else None
    sessions = sorted(p for p in out_dir.iterdir() if (p / "session.json").is_file())
    session_dir = sessions[-1] if sessions else None
    session = json.loads((session_dir / "session.json").read_text()) if session_dir else None
    return RecordingRun(
        src_status=src_status,
        src_summary=summary,
        src_stdout=stdout,
        src_stderr=err.decode(errors="replace"),
        src_elapsed=src_elapsed,
        srs_status=srs_status,
        srs_stdout="".join(srs_lines),
        srs_stderr=srs_stderr,
        srs_ended_in=srs_ended_in,
        session=session,
        session_dir=session_dir,
        setup_time=link.setup_time(),
        sip=link.sip_packets(),
    )


# --- measuring by hand: python -m tests.robustness.netns --seeds 1-10 ----------------------------------


def _seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


async def _sweep(args: argparse.Namespace) -> None:
    impairment = Impairment(
        loss=args.loss,
        delay=args.delay,
        jitter=args.jitter,
        reorder=args.reorder,
        reorder_correlation=args.reorder_correlation,
        sip_only=args.sip_only,
    )
    print(f"impairment: {impairment.netem()}; {args.transport} signaling; {args.duration:g} s of audio")
    print(
        "seed  exit  setup_s  INVITEs  200s  end            stream  sent  link_lost  srs_rx  lost  late  "
        "reordered  jitter_ms"
    )
    with tempfile.TemporaryDirectory(prefix="lossy-") as tmp:
        for seed in _seeds(args.seeds):
            with LossyLink(impairment, seed=seed) as link:
                run = await record_across(
                    link, Path(tmp) / str(seed), transport=args.transport, duration=args.duration
                )
            setup = "-" if run.setup_time is None else f"{run.setup_time:.3f}"
            invites = sum(1 for p in run.sip if p.direction == UP and p.kind == "INVITE")
            oks = sum(1 for p in run.sip if p.direction == DOWN and p.kind == "200/INVITE")
            end = run.session.get("end_reason") if run.session else "-"
            head = f"{seed:<4}  {run.src_status!s:<4}  {setup:<7}  {invites:<7}  {oks:<4}  {end!s:<13}"
            forked = bool(run.src_summary) and all(
                s.get("remote") for s in (run.src_summary or {}).get("streams", [])
            )
            if run.session and run.src_summary and not forked:
                # The SRS has a session the SRC never forked to: the SRC gave up on the INVITE
                # (attempt timeout) and a late 200 got the ACK and BYE of RFC 3261 §15.
                print(f"{head}  (SRC gave up, SRS session ended: {run.src_stderr.strip()[-160:]})")
                continue
            for label in ("1", "2") if run.session and run.src_summary else ():
                stats = run.stream(label)["stats"]
                flow = link.udp_flow(UP, run.remote_port(label))
                print(
                    f"{head}  {label:<6}  {run.sent(label):<4}  {flow.dropped:<9}  {stats['packets']:<6}  "
                    f"{stats['lost']:<4}  {stats['late']:<4}  {stats['reordered']:<9}  "
                    f"{stats['jitter_ms']:.1f}"
                )
                head = " " * len(head)
            if not (run.session and run.src_summary):
                print(f"{head}  (no session: {run.src_stderr.strip()[-200:]})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.robustness.netns",
        description="Record synthetic calls across an impaired link, one per seed, and print the figures.",
    )
    parser.add_argument("--seeds", default="1-5", help="a seed or a range FIRST-LAST (default 1-5)")
    parser.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--delay", type=float, default=0.200)
    parser.add_argument("--jitter", type=float, default=0.050)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--reorder-correlation", type=float, default=0.0)
    parser.add_argument("--sip-only", action="store_true", help="impair SIP only, pass RTP untouched")
    asyncio.run(_sweep(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
