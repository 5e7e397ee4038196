"""Run SIPp as the SRS of a test: one scenario, a free loopback port, a bounded lifetime.

    async with SippSrs("srs_accept", tmp_path, transport="tcp") as srs:
        ...  # send a SIPREC INVITE to srs.uri
    assert srs.result.ok, srs.result.summary()

``SippSrs`` starts SIPp on ``127.0.0.1`` (``-bind_local``) with ``-m 1`` (one call, then SIPp
exits), its own free media and control ports (so tests never collide on SIPp's defaults 6000
and 8888), ``-trace_msg`` and ``-trace_err`` written to the work directory, and waits until
the SIP port is bound (asked of the kernel with ``ss``; a bind probe would race SIPp for the
port). Leaving the block waits, at most until ``time_limit`` seconds after the start, for SIPp to
finish on its own; past that SIPp is killed and the result says ``timed_out``. An exception in
the block kills SIPp at once. Nothing here can hang a test.

SIPp exit statuses (sipp.cpp): 0 every call succeeded, 1 at least one call failed (a
``check_it`` regex that did not match, an unexpected message, a timeout), 97 stopped by an
internal command, 99 no call processed, 255 fatal error (scenario or command line), 254
could not bind its socket.

TLS: a SIPp built with OpenSSL (its version string contains ``TLS``) runs the scenario with
``-t l1 -tls_cert CERT -tls_key KEY`` itself; ``-tls_ca CA`` makes it demand and verify a
client certificate. Debian's ``sip-tester`` 3.6.1 is built without OpenSSL (``-t l1`` fails
with "To use a TLS transport you must compile SIPp with OpenSSL"), so then SIPp runs the
scenario over TCP behind ``TlsFront``: a TLS server on the advertised port with the same
certificate (and the same client-certificate rule when a CA is given) that relays each
connection to SIPp's TCP port. The SRC still does a real TLS handshake, verifies the SRS
certificate against the test CA, and every SIP message of the dialog (the SRS's own BYE
included) crosses that TLS connection. ``SippSrs.tls_mode`` says which of the two ran.

Every scenario takes two keywords the harness always passes, so the SRS advertises the
address the SRC must use even behind the TLS front: ``-key srs_contact URI`` (its Contact)
and ``-key srs_via "SIP/2.0/PROTO HOST:PORT"`` (the Via of requests it sends).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

from benchmarks.loadgen.runner import proc_net_rows

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

Transport = Literal["udp", "tcp", "tls"]
_SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1", "tls": "l1"}

# SIPp exit statuses (see the module docstring).
EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALL = 99
EXIT_FATAL = 255
EXIT_BIND_FAILED = 254

# Digest credentials the srs_auth scenario accepts (written into its <verifyauth>).
AUTH_REALM = "siprec-srs.test"
AUTH_USER = "siprec-src"
AUTH_PASSWORD = "interop-secret"

# Lines of SIPp's -trace_msg log: a rule, then "UDP message received [N] bytes :" or
# "TCP message sent (N bytes):", a blank line and the message.
_RULE = re.compile(r"^-{20,} .*$", re.MULTILINE)
_HEADING = re.compile(r"^(\w+) message (received|sent)\b[^\n]*\n\n?", re.IGNORECASE)


class SippError(RuntimeError):
    """SIPp could not be started or did not come up (the message says what it printed)."""


def sipp_binary() -> str:
    """Path of ``sipp``; an AssertionError (not a skip) when missing: the tests prove nothing then."""
    path = shutil.which("sipp")
    assert path, "sipp is not installed: `make test` installs sip-tester (scripts/install-peers.sh)"
    return path


@functools.cache
def sipp_version() -> str:
    """The version line SIPp prints, e.g. ``SIPp v3.6.1-SCTP-PCAP-RTPSTREAM``."""
    completed = subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False)
    for line in (completed.stdout + completed.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip()
    return ""


def sipp_has_tls() -> bool:
    """Whether this SIPp was built with OpenSSL (it then names TLS in its version string)."""
    return re.search(r"\bTLS\b", sipp_version()) is not None


def scenario_path(name: str | Path) -> Path:
    """A scenario by file name (``srs_accept`` or ``srs_accept.xml``) or by path."""
    path = Path(name)
    if path.suffix != ".xml":
        path = path.with_suffix(".xml")
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / path.name
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {name!r} (looked in {SCENARIOS})")
    return path


# Ports handed out by this process lately: the kernel may offer a just-released port again, and
# nothing holds a port between its choice and SIPp's bind (an SRS's SIP port must not be
# another SRS's media port, nor its own control port).
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=512)


def free_port(transport: str = "udp", host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice) for ``transport`` on ``host``.

    Never one this process handed out lately, so ports chosen for one test do not collide.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    for _ in range(100):
        with socket.socket(family, kind) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port
    raise SippError(f"no fresh {transport} port on {host}")


def free_media_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """An even UDP port P with P..P+7 free: SIPp binds P and P+2, answers use P, P+2, P+4, P+6."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1]) & ~1
        span = range(base, base + 8)
        if base + 7 > 65535 or any(port in _HANDED_OUT for port in span):
            continue
        sockets: list[socket.socket] = []
        try:
            for port in span:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        _HANDED_OUT.extend(span)
        return base
    raise SippError(f"no free run of 8 UDP ports on {host} after {attempts} attempts")


def is_listening(transport: str, host: str, port: int) -> bool:
    """Whether a socket is bound to ``port`` (UDP) or listening on it (TCP) on ``host``.

    Asks the kernel through ``ss`` (netlink, filtered in the kernel), which touches no socket,
    so it cannot steal the port from the process being waited for. Not /proc/net/udp: on a
    busy machine that file is megabytes long, read in pages, and entries go missing from it
    while other sockets come and go.
    """
    ss = shutil.which("ss")
    if ss is None:
        return _listed_in_proc(transport, host, port)
    proto = "-u" if transport == "udp" else "-t"
    try:
        completed = subprocess.run(
            [ss, "-H", "-n", "-l", proto, f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    for line in completed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            local_host = fields[3].rpartition(":")[0].strip("[]")
            if local_host in (host, "0.0.0.0", "*", "::"):
                return True
    return False


def _listed_in_proc(transport: str, host: str, port: int) -> bool:
    """``is_listening`` without ``ss``: scan /proc/net (may miss entries on a busy machine)."""
    proto = "udp" if transport == "udp" else "tcp"
    wanted_state = "07" if proto == "udp" else "0A"  # TCP_CLOSE (a bound UDP socket), TCP_LISTEN
    wildcard = {"00000000", "00000000000000000000000000000000"}
    loopback = {"127.0.0.1": "0100007F", "::1": "00000000000000000000000001000000"}.get(host)
    for fields in proc_net_rows(proto):
        if len(fields) < 4 or fields[3] != wanted_state:
            continue
        address, _, port_hex = fields[1].rpartition(":")
        if int(port_hex, 16) == port and (address in wildcard or address == loopback):
            return True
    return False


def sockets_of(pid: int) -> list[str]:
    """The UDP/TCP sockets a process holds, as ``proto port state`` (for error messages)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found: list[str] = []
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    port = int(fields[1].rpartition(":")[2], 16)
                    found.append(f"{proto} {port} state {fields[3]}")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """The SRS side of TLS: its certificate and key, and a CA to demand client certificates with."""

    certfile: str
    keyfile: str
    cafile: str | None = None


class SipText:
    """Start line and header lookup on a SIP message's text.

    The tests' own plain reading, deliberately not the product's parser: what SIPp and tshark
    saw is checked without trusting the code under test. ``head`` is the start line and
    header fields, LF line ends.
    """

    @property
    def head(self) -> str:
        raise NotImplementedError

    @property
    def start_line(self) -> str:
        return self.head.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    @property
    def status(self) -> int | None:
        """The response status, or None for a request."""
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if parts[0].startswith("SIP/") and len(parts) > 1 else None

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive; folded lines joined; no compact forms)."""
        unfolded = self.head.replace("\n ", " ").replace("\n\t", " ")
        for line in unfolded.split("\n")[1:]:
            field_name, sep, value = line.partition(":")
            if sep and field_name.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass(frozen=True)
class SipMessage(SipText):
    """One message in SIPp's trace, as SIPp saw it."""

    direction: Literal["received", "sent"]
    transport: str
    text: str

    @property
    def head(self) -> str:
        return self.text.replace("\r", "").split("\n\n", 1)[0]


def parse_message_log(text: str) -> list[SipMessage]:
    """The messages of a SIPp ``-trace_msg`` log, in order."""
    messages: list[SipMessage] = []
    for chunk in _RULE.split(text):
        chunk = chunk.lstrip("\n")
        heading = _HEADING.match(chunk)
        if heading is None:
            continue
        body = chunk[heading.end() :].rstrip("\n")
        direction: Literal["received", "sent"] = (
            "received" if heading.group(2).lower() == "received" else "sent"
        )
        messages.append(SipMessage(direction, heading.group(1).upper(), body))
    return messages


@dataclass(frozen=True)
class SippResult:
    """How a SIPp run ended, and what it saw."""

    scenario: str
    command: tuple[str, ...]
    returncode: int | None  # None only if SIPp could not be reaped at all
    timed_out: bool  # killed by the harness at its time limit (or stopped on request)
    messages: str  # the -trace_msg log
    errors: str  # the -trace_err log
    stderr: str
    screen: str  # the final statistics screen (-trace_screen)

    @property
    def ok(self) -> bool:
        """SIPp exited 0 by itself: every call went exactly as the scenario says."""
        return self.returncode == EXIT_OK and not self.timed_out

    @property
    def trace(self) -> list[SipMessage]:
        return parse_message_log(self.messages)

    def received(self, method: str | None = None) -> list[SipMessage]:
        """Messages SIPp received (only requests of ``method`` when given)."""
        return [m for m in self.trace if m.direction == "received" and (method is None or m.method == method)]

    def sent(self, status: int | None = None) -> list[SipMessage]:
        """Messages SIPp sent (only responses with ``status`` when given)."""
        return [m for m in self.trace if m.direction == "sent" and (status is None or m.status == status)]

    def summary(self) -> str:
        """Exit status, SIPp's complaints and the flow it saw: an assertion message."""
        state = "killed at the time limit" if self.timed_out else f"exit status {self.returncode}"
        flow = ", ".join(
            f"{'<-' if m.direction == 'received' else '->'} {m.method or m.status}" for m in self.trace
        )
        parts = [f"SIPp {self.scenario}: {state}", f"flow: {flow or '(no message)'}"]
        if self.errors.strip():
            parts.append("error log:\n" + _tail(self.errors, 3000))
        if self.stderr.strip():
            parts.append("stderr:\n" + _tail(self.stderr, 1500))
        return "\n".join(parts)


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


class TlsFront:
    """A TLS server that relays each connection, byte for byte, to a plain TCP port.

    Used when SIPp has no TLS of its own. With ``tls.cafile`` it requires a client certificate
    signed by that CA, as SIPp's ``-tls_ca`` does. ``handshakes`` counts the TLS connections
    that completed; ``client_subjects`` records the subject of each client certificate.
    """

    def __init__(self, tls: TlsFiles, host: str, port: int, backend_port: int) -> None:
        self.tls = tls
        self.host = host
        self.port = port
        self.backend_port = backend_port
        self.handshakes = 0
        self.client_subjects: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls.certfile, self.tls.keyfile)
        if self.tls.cafile is not None:
            context.load_verify_locations(self.tls.cafile)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, ssl=self._context())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        peer_cert = writer.get_extra_info("peercert")
        if peer_cert:
            subject = ", ".join("=".join(pair) for rdn in peer_cert.get("subject", ()) for pair in rdn)
            self.client_subjects.append(subject)
        self._writers.add(writer)
        try:
            backend_reader, backend_writer = await asyncio.open_connection(self.host, self.backend_port)
        except OSError:
            writer.close()
            return
        self._writers.add(backend_writer)
        for source, sink in ((reader, backend_writer), (backend_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()


class SippSrs:
    """SIPp running one SRS scenario; an async context manager (see the module docstring).

    ``keys`` become ``-key NAME VALUE`` pairs; ``calls`` is ``-m``; ``time_limit`` bounds the
    whole run from ``start()``; ``extra_args`` go last on SIPp's command line.
    """

    def __init__(
        self,
        scenario: str | Path,
        workdir: Path,
        *,
        transport: str = "udp",
        host: str = "127.0.0.1",
        port: int | None = None,
        media_port: int | None = None,
        tls: TlsFiles | None = None,
        keys: Mapping[str, str] | None = None,
        calls: int = 1,
        time_limit: float = 9.0,
        auto_answer: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        if transport not in _SIPP_TRANSPORT:
            raise ValueError(f"transport must be udp, tcp or tls, not {transport!r}")
        if transport == "tls" and tls is None:
            raise ValueError("a TLS SRS needs TlsFiles (certificate and key)")
        self.scenario = scenario_path(scenario)
        self.workdir = workdir.resolve()  # SIPp runs in it: its file options must be absolute
        self.transport = cast(Transport, transport)
        self.host = host
        self.port = port if port is not None else free_port(transport, host)
        self.media_port = media_port if media_port is not None else free_media_port(host)
        self.tls = tls
        self.keys = dict(keys or {})
        self.calls = calls
        self.time_limit = time_limit
        self.auto_answer = auto_answer
        self.extra_args = tuple(extra_args)
        # Where SIPp itself listens: the advertised port, or a backend port behind TlsFront.
        self.tls_mode: Literal["sipp", "front"] | None = None
        if transport == "tls":
            self.tls_mode = "sipp" if sipp_has_tls() else "front"
        self.sipp_port = free_port("tcp", host) if self.tls_mode == "front" else self.port
        self.control_port = free_port("udp", host)
        self.front: TlsFront | None = None
        self.result: SippResult | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._deadline = 0.0
        self._stem = f"{self.scenario.stem}-{self.transport}-{self.port}"

    # --- addresses the SRC uses --------------------------------------------------------------

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        """The SRS URI for the SRC: ``sip:srs@HOST:PORT;transport=udp|tcp|tls``.

        The transport is always named: a SIPREC INVITE is larger than 1300 bytes, so without
        ``transport=udp`` RFC 3261 §18.1.1 sends it over TCP, where a UDP SIPp does not listen.
        """
        return f"sip:srs@{self.hostport};transport={self.transport}"

    @property
    def contact(self) -> str:
        """The Contact the scenario advertises (``-key srs_contact``)."""
        return self.uri

    @property
    def via(self) -> str:
        """The sent-by of requests SIPp sends (``-key srs_via``)."""
        return f"SIP/2.0/{self.transport.upper()} {self.hostport}"

    # --- files -------------------------------------------------------------------------------

    @property
    def message_log(self) -> Path:
        return self.workdir / f"{self._stem}-messages.log"

    @property
    def error_log(self) -> Path:
        return self.workdir / f"{self._stem}-errors.log"

    @property
    def screen_log(self) -> Path:
        return self.workdir / f"{self._stem}-screen.log"

    @property
    def stderr_log(self) -> Path:
        return self.workdir / f"{self._stem}-stderr.log"

    def command(self) -> list[str]:
        """SIPp's command line (also handy to run a scenario by hand)."""
        sipp_transport = "tcp" if self.tls_mode == "front" else self.transport
        args = [
            sipp_binary(),
            "-sf",
            str(self.scenario),
            "-i",
            self.host,
            "-p",
            str(self.sipp_port),
            "-bind_local",
            "-t",
            _SIPP_TRANSPORT[sipp_transport],
            "-mp",
            str(self.media_port),
            "-cp",
            str(self.control_port),
            "-m",
            str(self.calls),
            "-nostdin",
            # SIPp's own global timeout is a second line of defence; the harness kills it anyway.
            "-timeout",
            f"{max(1, int(self.time_limit) + 2)}s",
            "-trace_msg",
            "-message_file",
            str(self.message_log),
            "-trace_err",
            "-error_file",
            str(self.error_log),
            "-trace_screen",
            "-screen_file",
            str(self.screen_log),
            "-key",
            "srs_contact",
            self.contact,
            "-key",
            "srs_via",
            self.via,
        ]
        if self.auto_answer:
            args.append("-aa")  # 200 to in-dialog OPTIONS/INFO/UPDATE/NOTIFY outside the scenario
        if self.tls_mode == "sipp":
            assert self.tls is not None
            args += ["-tls_cert", self.tls.certfile, "-tls_key", self.tls.keyfile]
            if self.tls.cafile is not None:
                args += ["-tls_ca", self.tls.cafile]
        for name, value in self.keys.items():
            args += ["-key", name, value]
        args += self.extra_args
        return args

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, ready_timeout: float = 8.0) -> None:
        """Start SIPp (and the TLS front) and return once SIPp's SIP port is open."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._deadline = time.monotonic() + self.time_limit
        # stderr goes to a file: a pipe nobody reads until the end could fill up and block SIPp.
        with self.stderr_log.open("wb") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(),
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: a kill reaches nothing else
            )
        sipp_transport = "tcp" if self.tls_mode == "front" else self.transport
        try:
            async with asyncio.timeout(ready_timeout):
                while not is_listening(sipp_transport, self.host, self.sipp_port):
                    if self._process.returncode is not None:
                        break
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        if self._process.returncode is not None or not is_listening(
            sipp_transport, self.host, self.sipp_port
        ):
            alive = self._process.returncode is None
            held = ", ".join(sockets_of(self._process.pid)) if alive else ""
            result = await self._collect(kill=True)
            state = (
                f"still running after {ready_timeout} s, holding [{held}]"
                if alive
                else f"exited {result.returncode}"
            )
            raise SippError(
                f"SIPp did not come up on {self.host}:{self.sipp_port}/{sipp_transport} ({state}; "
                f"media {self.media_port}, control {self.control_port})\n{result.summary()}"
            )
        if self.tls_mode == "front":
            assert self.tls is not None
            self.front = TlsFront(self.tls, self.host, self.port, self.sipp_port)
            await self.front.start()

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end by itself, at most ``timeout`` s and never past the time limit.

        SIPp still running then is killed (``timed_out``). The result is also kept in ``result``.
        """
        if self.result is not None:
            return self.result
        remaining = max(0.0, self._deadline - time.monotonic())
        if timeout is not None:
            remaining = min(remaining, timeout)
        process = self._process
        assert process is not None, "start() first"
        try:
            async with asyncio.timeout(remaining):
                await process.wait()
        except TimeoutError:
            return await self._collect(kill=True)
        return await self._collect(kill=False)

    async def stop(self) -> SippResult:
        """Kill SIPp now (if still running) and return what it did until then."""
        if self.result is not None:
            return self.result
        return await self._collect(kill=True)

    async def _collect(self, *, kill: bool) -> SippResult:
        process = self._process
        assert process is not None
        killed = False
        if kill and process.returncode is None:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(1.0):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        try:
            async with asyncio.timeout(3.0):
                await process.wait()
        except TimeoutError:
            pass
        if self.front is not None:
            await self.front.close()
        self.result = SippResult(
            scenario=self.scenario.name,
            command=tuple(self.command()),
            returncode=process.returncode,
            timed_out=killed,
            messages=_read(self.message_log),
            errors=_read(self.error_log),
            stderr=_read(self.stderr_log),
            screen=_read(self.screen_log),
        )
        return self.result

    async def __aenter__(self) -> SippSrs:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.wait()
        else:
            await self.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
