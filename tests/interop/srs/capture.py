"""Capture a test's SIP traffic on loopback with dumpcap, read it back with tshark.

    async with Capture(tmp_path, ports=[srs.port]) as capture:
        ...  # the test's traffic
    for invite in capture.invites():
        assert not siprec_problems(invite), siprec_problems(invite)

``Capture`` runs ``dumpcap -i lo`` with a BPF filter on the given ports, returns from
``start()`` only once dumpcap says it is capturing and has written the pcapng header, and on
``stop()`` sends a marker datagram, waits until dumpcap has written it (so no packet of the
test is lost in dumpcap's buffers), then ends it with SIGTERM (SIGKILL after a grace period).
Everything is bounded in time.

When the ports are not known in advance (a test whose peers bind random ports), ``all_ports=True``
captures every UDP and TCP packet on the interface instead; ``max_kilobytes`` then bounds the
file (dumpcap stops writing at that size, and ``complete`` tells whether the capture reached
the end of the test). The marker of ``stop()`` goes to a UDP port the capture reserves itself,
and ``ports`` (which may then be empty, and may be set once the test has learnt its peers'
ports) only name where tshark must force SIP decoding.

``sip_messages()`` asks tshark for every frame it decodes as SIP on those ports (``-d
udp.port==N,sip -d tcp.port==N,sip``, so non-5060 ports are decoded too) and takes each SIP
message's exact bytes from the frame (``udp.payload``, ``tcp.payload`` or, for a message
split over TCP segments, ``tcp.reassembled.data``); one TCP segment carrying several messages
is split by Content-Length. The SIPREC checks below then parse those bytes with the standard
library only (``email`` for multipart/mixed, ``xml.etree`` for the metadata), independently of
the SIP code under test:

- ``siprec_problems(message)``: the rs-metadata part is well-formed XML, and every
  ``<stream><label>`` of the metadata is an ``a=label`` of the SDP part and vice versa;
- ``sdp_labels``, ``metadata_labels``, ``body_parts``: the pieces, for finer assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType

from tests.interop.srs.harness import SipText

METADATA_TYPE = "application/rs-metadata+xml"
# The payload of the datagram that tells when dumpcap has written everything (see stop()).
_MARKER = b"siprec-src capture sync "
SDP_TYPE = "application/sdp"


class CaptureError(RuntimeError):
    """dumpcap or tshark failed; the message carries what they printed."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make test` installs tshark (scripts/install-peers.sh)"
    return path


@dataclass(frozen=True)
class CapturedSip(SipText):
    """One SIP message as it crossed the wire."""

    frame: int
    transport: str  # "udp" or "tcp"
    source: str  # "host:port"
    destination: str
    raw: bytes

    @property
    def head(self) -> str:
        return self.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").replace("\r", "")

    @property
    def body(self) -> bytes:
        parts = self.raw.split(b"\r\n\r\n", 1)
        return parts[1] if len(parts) == 2 else b""

    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")


def split_sip_stream(data: bytes) -> list[bytes]:
    """Split bytes carrying one or more SIP messages, framed by Content-Length (RFC 3261 §18.3)."""
    messages: list[bytes] = []
    rest = data
    while rest.strip(b"\r\n"):
        rest = rest.lstrip(b"\r\n")  # keep-alive CRLFs between messages
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            messages.append(rest)
            break
        length = 0
        for line in rest[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                with contextlib.suppress(ValueError):
                    length = int(value.strip())
        stop = end + 4 + length
        messages.append(rest[:stop])
        rest = rest[stop:]
    return messages


class Capture:
    """dumpcap on a loopback interface for ``ports`` (UDP and TCP), as an async context manager."""

    def __init__(
        self,
        workdir: Path,
        ports: Sequence[int],
        *,
        interface: str = "lo",
        name: str = "capture",
        marker_host: str = "127.0.0.1",
        all_ports: bool = False,
        max_kilobytes: int | None = None,
    ) -> None:
        if not ports and not all_ports:
            raise ValueError("a capture needs at least one port (or all_ports=True)")
        if max_kilobytes is not None and max_kilobytes <= 0:
            raise ValueError(f"max_kilobytes must be positive, not {max_kilobytes}")
        self.workdir = workdir.resolve()
        self.ports = tuple(ports)
        self.interface = interface
        self.marker_host = marker_host
        self.all_ports = all_ports
        self.max_kilobytes = max_kilobytes
        self.path = workdir / f"{name}.pcapng"
        # True once stop() found its marker in the file: every packet sent before it is there.
        self.complete = False
        self._process: asyncio.subprocess.Process | None = None
        self._stderr = ""
        self._drain: asyncio.Task[None] | None = None
        self._marker_socket: socket.socket | None = None

    @property
    def bpf_filter(self) -> str:
        if self.all_ports:
            return "udp or tcp"
        ports = " or ".join(str(port) for port in self.ports)
        return f"(udp or tcp) and port ({ports})"

    @property
    def marker_port(self) -> int:
        """Where stop() sends its marker: the reserved port with ``all_ports``, else the first port."""
        if self._marker_socket is not None:
            return int(self._marker_socket.getsockname()[1])
        if not self.ports:
            raise CaptureError("an all-ports capture reserves its marker port in start()")
        return self.ports[0]

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Start dumpcap; return once it is capturing (raise ``CaptureError`` otherwise)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.complete = False
        if self.all_ports and self._marker_socket is None:
            # Bound for the capture's life, so no peer of the test can be given this port.
            self._marker_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._marker_socket.bind((self.marker_host, 0))
        limit = [] if self.max_kilobytes is None else ["-a", f"filesize:{self.max_kilobytes}"]
        self._process = await asyncio.create_subprocess_exec(
            _tool("dumpcap"),
            "-i",
            self.interface,
            "-f",
            self.bpf_filter,
            *limit,
            "-w",
            str(self.path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stderr is not None
        said: list[str] = []
        try:
            async with asyncio.timeout(ready_timeout):
                while True:
                    line = await self._process.stderr.readline()
                    if not line:
                        break  # dumpcap exited
                    said.append(line.decode(errors="replace"))
                    if "Capturing on" in said[-1]:
                        break
                # The pcapng section header is written once the capture is live.
                while self._process.returncode is None and not (
                    self.path.exists() and self.path.stat().st_size > 0
                ):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        if self._process.returncode is not None or not any("Capturing on" in line for line in said):
            await self._terminate()
            if self._marker_socket is not None:
                self._marker_socket.close()
                self._marker_socket = None
            raise CaptureError(f"dumpcap did not start capturing on {self.interface}: {''.join(said)}")
        # Drain what dumpcap still prints so it can never block on a full pipe.
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        data = await self._process.stderr.read()
        self._stderr = data.decode(errors="replace")

    async def stop(self, sync_timeout: float = 5.0) -> Path:
        """Stop dumpcap once it has written everything sent so far; return the pcapng path.

        dumpcap reads the kernel's buffer and flushes its file in batches, so a SIGTERM right
        after the test's last packet can lose it. A marker datagram is sent to the first port
        and dumpcap is stopped only once the marker is in the file (or ``sync_timeout`` passed):
        every packet before the marker is then in the file too.
        """
        if self._process is None:
            raise CaptureError("the capture was never started")
        if self._process.returncode is None and sync_timeout > 0:
            self.complete = await self._sync(sync_timeout)
        await self._terminate()
        if self._marker_socket is not None:
            self._marker_socket.close()
            self._marker_socket = None
        if self._drain is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._drain
        return self.path

    async def _sync(self, timeout: float) -> bool:
        marker = _MARKER + os.urandom(8).hex().encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(marker, (self.marker_host, self.marker_port))
        assert self._process is not None
        try:
            async with asyncio.timeout(timeout):
                while marker not in self.path.read_bytes():
                    if self._process.returncode is not None:
                        return False  # dumpcap stopped early (max_kilobytes): the marker never comes
                    await asyncio.sleep(0.05)
        except TimeoutError:
            return False
        return True

    async def _terminate(self) -> None:
        process = self._process
        assert process is not None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                async with asyncio.timeout(5):
                    await process.wait()

    async def __aenter__(self) -> Capture:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(sync_timeout=5.0 if exc_type is None else 0.0)

    # --- reading the capture back ------------------------------------------------------------

    def tshark(self, *args: str, timeout: float = 20.0) -> str:
        """Run tshark on the capture with SIP decoding forced on its ports; return its stdout."""
        decode: list[str] = []
        for port in self.ports:
            decode += ["-d", f"udp.port=={port},sip", "-d", f"tcp.port=={port},sip"]
        command = [_tool("tshark"), "-r", str(self.path), "-o", "tcp.desegment_tcp_streams:TRUE"]
        try:
            completed = subprocess.run(
                [*command, *decode, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CaptureError(f"tshark took more than {timeout} s on {self.path}") from exc
        if completed.returncode != 0:
            raise CaptureError(f"tshark failed ({completed.returncode}): {completed.stderr[-1000:]}")
        return completed.stdout

    def sip_messages(self) -> list[CapturedSip]:
        """Every SIP message tshark finds on the capture's ports, in capture order."""
        fields = [
            "frame.number",
            "ip.src",
            "ip.dst",
            "udp.srcport",
            "udp.dstport",
            "tcp.srcport",
            "tcp.dstport",
            "udp.payload",
            "tcp.payload",
            "tcp.reassembled.data",
        ]
        out = self.tshark("-Y", "sip", "-T", "fields", "-E", "separator=|", *(f"-e{f}" for f in fields))
        messages: list[CapturedSip] = []
        for line in out.splitlines():
            cols = line.split("|")
            if len(cols) != len(fields):
                continue
            frame, src, dst, usport, udport, tsport, tdport, upayload, tpayload, reassembled = cols
            if upayload:
                transport, data = "udp", upayload
                sport, dport = usport, udport
            else:
                transport, data = "tcp", reassembled or tpayload
                sport, dport = tsport, tdport
            if not data:
                continue
            raw = bytes.fromhex(data.split(",")[0].replace(":", ""))
            if raw.startswith(_MARKER):
                continue
            for message in split_sip_stream(raw):
                messages.append(
                    CapturedSip(int(frame), transport, f"{src}:{sport}", f"{dst}:{dport}", message)
                )
        return messages

    def invites(self) -> list[CapturedSip]:
        """The INVITEs (initial and re-INVITEs, retransmissions included) in the capture."""
        return [m for m in self.sip_messages() if m.method == "INVITE"]

    def payload_bytes(self, port: int) -> bytes:
        """All TCP/UDP payload bytes to or from ``port``, concatenated (to check what TLS hides)."""
        out = self.tshark(
            "-Y",
            f"tcp.port=={port} or udp.port=={port}",
            "-T",
            "fields",
            "-e",
            "tcp.payload",
            "-e",
            "udp.payload",
        )
        chunks = [
            bytes.fromhex(col.replace(":", ""))
            for line in out.splitlines()
            for col in line.split("\t")
            if col
        ]
        return b"".join(chunk for chunk in chunks if not chunk.startswith(_MARKER))


# --- SIPREC body checks (standard library only) ----------------------------------------------


def body_parts(content_type: str, body: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """The parts of a multipart/mixed body: (media type, part headers, part body).

    A body that is not multipart comes back as one part of its own type.
    """
    message: Message = BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        return [(message.get_content_type(), {}, body)]
    parts: list[tuple[str, dict[str, str], bytes]] = []
    payload = message.get_payload()
    assert isinstance(payload, list)
    for part in payload:
        assert isinstance(part, Message)
        data = part.get_payload(decode=True)
        parts.append((part.get_content_type(), {k.lower(): v for k, v in part.items()}, bytes(data or b"")))
    return parts


def sdp_labels(sdp: bytes) -> list[str]:
    """The ``a=label`` values of an SDP body, in m-line order."""
    return [
        line[len("a=label:") :].strip()
        for line in sdp.decode("utf-8", "replace").splitlines()
        if line.startswith("a=label:")
    ]


def metadata_labels(xml: bytes) -> list[str]:
    """The ``<stream><label>`` values of RFC 7865 metadata (any namespace prefix); raises on bad XML."""
    root = ET.fromstring(xml)
    labels: list[str] = []
    for element in root.iter():
        if _local(element.tag) != "stream":
            continue
        for child in element:
            if _local(child.tag) == "label":
                labels.append((child.text or "").strip())
    return labels


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def siprec_problems(message: CapturedSip) -> list[str]:
    """What is wrong with a SIPREC INVITE's body (empty when nothing is).

    Checks the two things SIPp's regexes cannot: the rs-metadata part parses as XML, and the
    labels of the metadata streams and of the SDP m-lines are the same set, each label once.
    """
    content_type = message.header("Content-Type") or ""
    parts = body_parts(content_type, message.body)
    sdp = [body for kind, _, body in parts if kind == SDP_TYPE]
    metadata = [(headers, body) for kind, headers, body in parts if kind == METADATA_TYPE]
    problems: list[str] = []
    if len(sdp) != 1:
        problems.append(f"{len(sdp)} application/sdp parts (want 1)")
    if len(metadata) != 1:
        problems.append(f"{len(metadata)} {METADATA_TYPE} parts (want 1)")
    if problems:
        return problems
    headers, xml = metadata[0]
    disposition = headers.get("content-disposition", "")
    if disposition.split(";")[0].strip().lower() != "recording-session":
        problems.append(f"metadata Content-Disposition is {disposition!r}, not recording-session")
    try:
        in_metadata = metadata_labels(xml)
    except ET.ParseError as exc:
        return [*problems, f"metadata is not well-formed XML: {exc}"]
    in_sdp = sdp_labels(sdp[0])
    for where, labels in (("SDP", in_sdp), ("metadata", in_metadata)):
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            problems.append(f"labels repeated in the {where}: {duplicates}")
    if set(in_sdp) != set(in_metadata):
        problems.append(f"labels differ: SDP {in_sdp}, metadata {in_metadata}")
    if not in_sdp:
        problems.append("no a=label in the SDP")
    return problems
