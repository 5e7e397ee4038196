"""One recorded stream of the reference SRS: RTP in on a UDP port pair, a mono WAV file out.

A :class:`StreamSink` is one answered ``m=audio`` line of a recording session. It binds an even
RTP port and the RTCP port above it (RFC 3550 §11), unprotects SRTP/SRTCP when the answer
carried keys (RFC 3711 with SDES, RFC 4568), orders packets with a :class:`JitterBuffer`,
decodes G.711 with the numpy tables of :mod:`siprec_src.media.g711` and appends 16-bit 8 kHz
mono samples to a WAV file as they are released, so a recording in progress is already a
valid file (the stdlib ``wave`` writer patches the header at each write).

What each packet becomes:

===========================================  ===================================================
the datagram                                 what happens
===========================================  ===================================================
not RTP version 2, or shorter than 12 bytes  ``malformed``, dropped
SRTP that does not authenticate / replayed   ``srtp_failures``, dropped, never written
RTP that does not parse (padding, CSRCs...)  ``malformed``, dropped
RTCP (on the RTCP port, or RFC 5761 mux)     ``rtcp_packets``; SRs counted in ``sender_reports``
                                             and the last one kept; bad ones ``rtcp_malformed``
received while paused                        ``paused_packets``, not written
PCMU / PCMA                                  decoded and written at its place on the timeline
other negotiated audio codec (G722, ...)     ``undecodable``; its slot is written as silence
telephone-event (RFC 4733)                   ``telephone_events``; ordered, not written
comfort noise (CN)                           ordered, not written (silence in its place)
empty payload (RFC 6263 keepalive)           ordered, not written
payload type not negotiated                  ``unknown_payload``; ordered, not written
===========================================  ===================================================

G.722 is not decoded: its packets keep the timeline but are recorded as silence.

Timeline: the WAV starts with the first audio frame released (the statistics'
``first_arrival`` is when the first packet came, in the event loop's clock); from there on,
positions come from the jitter buffer (RTP timestamps, or arrival time across a source
change), holes are filled with silence and overlaps trimmed, so the file's length is the
stream's real length.

Pause (a re-INVITE with ``a=inactive``, RFC 7866 §8.1): the held packets are written, then
packets are unprotected (to keep SRTP's rollover and replay state) and counted in
``paused_packets``, but not recorded. On resume the timeline follows the RTP timestamps again:
a sender whose timestamps kept running through the pause (RFC 3550 §5.1) gets the paused time as
silence, so the session's tracks stay aligned; one whose timestamps stopped gets none.

Packets are accepted from any source address: this is a reference server for tests and demos;
SRTP is what keeps strangers out of a recording.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import wave
from collections.abc import Callable, Mapping
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Final, cast

import numpy as np

from siprec_src.errors import LocalProtocolError
from siprec_src.media.g711 import Samples, alaw_decode, ulaw_decode
from siprec_src.media.ports import udp_socket
from siprec_src.media.rtp import RTP_VERSION, RtpError, RtpPacket, SenderReport, is_rtcp, parse_rtcp
from siprec_src.media.spec import SrtpKeys
from siprec_src.media.srtp import SrtpError, SrtpReceiver
from siprec_src.srs.jitter import Frame, Gap, JitterBuffer, Playout, StreamStats

log = logging.getLogger(__name__)

WAV_RATE: Final = 8000  # G.711's sampling rate; RTP timestamp units equal WAV samples
BIND_ATTEMPTS: Final = 64
_SILENCE_CHUNK: Final = WAV_RATE  # silence is written a second at a time
_CLOSE_TIMEOUT: Final = 1.0


class _Payload(Enum):
    """What a negotiated payload type carries, as far as the recording is concerned."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    EVENT = "telephone-event"
    COMFORT_NOISE = "CN"
    UNDECODABLE = "undecodable"


_BY_ENCODING: Final = {
    "PCMU": _Payload.PCMU,
    "PCMA": _Payload.PCMA,
    "TELEPHONE-EVENT": _Payload.EVENT,
    "CN": _Payload.COMFORT_NOISE,
}
_AUDIO: Final = frozenset({_Payload.PCMU, _Payload.PCMA, _Payload.UNDECODABLE})


def _payload_kind(encoding: str) -> _Payload:
    """Classify an rtpmap encoding name (``PCMU``, ``pcma/8000``, ``telephone-event/8000``...)."""
    name = encoding.split("/", 1)[0].strip().upper()
    return _BY_ENCODING.get(name, _Payload.UNDECODABLE)


class _Endpoint(asyncio.DatagramProtocol):
    """One of the sink's two UDP sockets: hands each datagram over with its arrival time."""

    def __init__(self) -> None:
        self.on_datagram: Callable[[bytes, float], None] | None = None
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The loop's datagram transports do not all subclass DatagramTransport (3.11 selector).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, self._loop.time())

    def error_received(self, exc: Exception) -> None:
        # We never send, so an ICMP error here is about someone else's traffic: noise.
        log.debug("stream socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def bind_rtp_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """Bind a free even RTP port and the odd RTCP port above it on ``host`` (RFC 3550 §11).

    The OS picks an ephemeral port; an odd one is used as the RTCP port of the even one below,
    an even one gets its neighbour above, and a pair that is half taken is released and tried
    again, up to :data:`BIND_ATTEMPTS` times.
    """
    host = host.strip("[]")
    for _ in range(BIND_ATTEMPTS):
        first = _bind(host, 0)
        port = first.getsockname()[1]
        if port % 2 == 0:
            second = _bind_if_free(host, port + 1)
            if second is not None:
                return first, second
        else:
            second = _bind_if_free(host, port - 1)
            if second is not None:
                return second, first
        first.close()
    raise LocalProtocolError(f"no free even/odd UDP port pair on {host} after {BIND_ATTEMPTS} attempts")


def _bind(host: str, port: int) -> socket.socket:
    try:
        return udp_socket(host, port)
    except OSError as exc:
        raise LocalProtocolError(f"cannot bind UDP {host}:{port}: {exc.strerror or exc}") from exc


def _bind_if_free(host: str, port: int) -> socket.socket | None:
    """The socket, or None if the port is taken (or reserved: EACCES below 1024)."""
    try:
        return udp_socket(host, port)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise LocalProtocolError(f"cannot bind UDP {host}:{port}: {exc.strerror or exc}") from exc


class StreamSink:
    """One recorded stream: an RTP/RTCP port pair, a jitter buffer and a WAV file (module doc).

    Make one with :meth:`open`; :meth:`configure` it from the negotiated SDP before the 200 OK
    (and again on every re-INVITE); :meth:`close` it at BYE. Not thread-safe: it lives on the
    event loop that opened it.
    """

    def __init__(
        self,
        *,
        label: str,
        host: str,
        rtp: _Endpoint,
        rtcp: _Endpoint,
        port: int,
        out_path: Path | None,
        wav: wave.Wave_write | None,
        buffer: JitterBuffer,
    ) -> None:
        self.label = label
        self.host = host
        self.port = port
        self.rtcp_port = port + 1
        self.out_path = out_path
        self.last_sender_report: SenderReport | None = None
        self._loop = asyncio.get_running_loop()
        self._rtp = rtp
        self._rtcp = rtcp
        self._buffer = buffer
        self._kinds: dict[int, _Payload] = {}
        self._srtp_keys: SrtpKeys | None = None
        self._srtcp_keys: SrtpKeys | None = None
        self._srtp: SrtpReceiver | None = None
        self._srtcp: SrtpReceiver | None = None
        self._paused = False
        self._closed = False
        self._final: StreamStats | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wav = wav
        self._written = 0  # samples on the timeline so far (written to the WAV if there is one)
        self._started = False
        self._srtp_failures = 0
        self._rtcp_packets = 0
        self._malformed = 0
        self._rtcp_malformed = 0
        self._sender_reports = 0
        self._unknown_payload = 0
        self._undecodable = 0
        self._telephone_events = 0
        self._paused_packets = 0

    @classmethod
    async def open(
        cls,
        host: str,
        *,
        label: str,
        out_path: Path | None,
        depth: float = 0.060,
        max_packets: int = 3,
    ) -> StreamSink:
        """Bind a port pair on ``host`` (IPv4 or IPv6) and start receiving.

        ``out_path``: the WAV file, created now and valid from the first frame written (a
        stream that never sent audio leaves an empty WAV at close); None records nothing but
        still counts. ``depth``/``max_packets``: how long a hole in the
        sequence is waited for (see :class:`JitterBuffer`).
        """
        loop = asyncio.get_running_loop()
        buffer = JitterBuffer(clock_rate=WAV_RATE, depth=depth, max_packets=max_packets)
        rtp_sock, rtcp_sock = bind_rtp_pair(host)
        port = rtp_sock.getsockname()[1]
        rtp = rtcp = None
        wav = None
        try:
            _, rtp = await loop.create_datagram_endpoint(_Endpoint, sock=rtp_sock)
            _, rtcp = await loop.create_datagram_endpoint(_Endpoint, sock=rtcp_sock)
            wav = None if out_path is None else _open_wav(out_path)
        except BaseException:
            for endpoint in (rtp, rtcp):
                if endpoint is not None and endpoint.transport is not None:
                    endpoint.transport.close()
            rtp_sock.close()
            rtcp_sock.close()
            raise
        sink = cls(
            label=label,
            host=host.strip("[]"),
            rtp=rtp,
            rtcp=rtcp,
            port=port,
            out_path=out_path,
            wav=wav,
            buffer=buffer,
        )
        rtp.on_datagram = sink._on_rtp_port
        rtcp.on_datagram = sink._on_rtcp_port
        return sink

    # --- control ------------------------------------------------------------------------------

    def configure(
        self,
        payload_types: Mapping[int, str],
        srtp: SrtpKeys | None,
        srtcp: SrtpKeys | None = None,
    ) -> None:
        """Set what the stream carries, from the negotiated SDP; again at each re-INVITE.

        ``payload_types``: payload type -> encoding name of the answer's rtpmap (``PCMU``,
        ``PCMA/8000``, ``telephone-event``...). ``srtp``: the SRC's SDES key for this stream
        (None: plain RTP). ``srtcp``: the key for its RTCP when it differs; by default the same
        key unprotects SRTCP (RFC 4568 §6.1: one a=crypto line keys both). Keys equal to the
        current ones keep the current libsrtp session (its rollover counter and replay window);
        what is already recorded and held is kept either way.
        """
        if self._closed:
            raise LocalProtocolError(f"stream {self.label}: configure() after close()")
        kinds: dict[int, _Payload] = {}
        for payload_type, encoding in payload_types.items():
            if not 0 <= payload_type <= 127:
                raise LocalProtocolError(
                    f"stream {self.label}: payload type {payload_type} is outside 0-127",
                    field="payload_types",
                )
            kinds[payload_type] = _payload_kind(encoding)
        # Build both receivers before changing anything, so bad keys leave the sink as it was.
        receiver = self._srtp if srtp == self._srtp_keys else _receiver(srtp)
        if srtcp is None or srtcp == srtp:
            rtcp_receiver = receiver
        elif srtcp == self._srtcp_keys:
            rtcp_receiver = self._srtcp
        else:
            rtcp_receiver = _receiver(srtcp)
        self._kinds = kinds
        self._srtp_keys, self._srtp = srtp, receiver
        self._srtcp_keys, self._srtcp = (srtp if srtcp is None else srtcp), rtcp_receiver

    def pause(self) -> None:
        """Stop recording (``a=inactive``): write what is held, then only count (module doc)."""
        if self._paused or self._closed:
            return
        self._play(self._buffer.flush())
        self._cancel_timer()
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def stats(self) -> StreamStats:
        """The statistics so far (after :meth:`close`, the final ones)."""
        if self._final is not None:
            return self._final
        return replace(
            self._buffer.stats(),
            srtp_failures=self._srtp_failures,
            rtcp_packets=self._rtcp_packets,
            malformed=self._malformed,
            rtcp_malformed=self._rtcp_malformed,
            sender_reports=self._sender_reports,
            unknown_payload=self._unknown_payload,
            undecodable=self._undecodable,
            telephone_events=self._telephone_events,
            paused_packets=self._paused_packets,
            samples_written=self._written,
        )

    async def close(self) -> StreamStats:
        """Write what is held, finish the WAV file, close the sockets; the final statistics."""
        if self._final is not None:
            return self._final
        self._closed = True
        self._cancel_timer()
        self._play(self._buffer.flush())
        for endpoint in (self._rtp, self._rtcp):
            if endpoint.transport is not None:
                endpoint.transport.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.gather(self._rtp.closed, self._rtcp.closed)
        except TimeoutError:
            log.warning("stream %s: sockets did not report closed in %.1f s", self.label, _CLOSE_TIMEOUT)
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        self._final = self.stats()
        return self._final

    # --- packets ------------------------------------------------------------------------------

    def _on_rtp_port(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        if is_rtcp(data):  # RFC 5761 §4: RTCP multiplexed on the RTP port
            self._on_rtcp_port(data, now)
            return
        if len(data) < 12 or data[0] >> 6 != RTP_VERSION:
            self._malformed += 1
            return
        if self._srtp is not None:
            try:
                data = self._srtp.unprotect(data)
            except SrtpError as exc:
                self._srtp_failures += 1
                log.debug("stream %s: SRTP packet dropped: %s", self.label, exc.reason)
                return
        try:
            packet = RtpPacket.parse(data)
        except RtpError as exc:
            self._malformed += 1
            log.debug("stream %s: RTP packet dropped: %s", self.label, exc.reason)
            return
        if self._paused:
            self._paused_packets += 1
            return
        kind = self._kinds.get(packet.payload_type)
        if kind is None:
            self._unknown_payload += 1
        elif kind is _Payload.EVENT:
            self._telephone_events += 1
        audio = kind in _AUDIO and bool(packet.payload)
        self._play(self._buffer.push(packet, now, audio=audio))
        self._arm_timer()

    def _on_rtcp_port(self, data: bytes, now: float) -> None:
        if self._closed:
            return
        if self._srtcp is not None:
            try:
                data = self._srtcp.unprotect_rtcp(data)
            except SrtpError as exc:
                self._srtp_failures += 1
                log.debug("stream %s: SRTCP packet dropped: %s", self.label, exc.reason)
                return
        try:
            compound = parse_rtcp(data)
        except RtpError as exc:
            self._rtcp_malformed += 1
            log.debug("stream %s: RTCP packet dropped: %s", self.label, exc.reason)
            return
        self._rtcp_packets += 1
        for report in compound.packets:
            if isinstance(report, SenderReport):
                self._sender_reports += 1
                self.last_sender_report = report

    def _on_timer(self) -> None:
        # The loop may run a timer up to its clock resolution early: poll at the deadline itself.
        assert self._timer_at is not None
        now = max(self._loop.time(), self._timer_at)
        self._timer = self._timer_at = None
        if not self._closed and not self._paused:
            self._play(self._buffer.poll(now))
            self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self._buffer.deadline()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    # --- recording ----------------------------------------------------------------------------

    def _play(self, items: list[Playout]) -> None:
        for item in items:
            if isinstance(item, Gap):
                self._write_at(item.position + item.duration, None)
            elif item.audio:
                self._write_frame(item)

    def _write_frame(self, frame: Frame) -> None:
        kind = self._kinds.get(frame.payload_type)
        if kind is _Payload.PCMU:
            samples = ulaw_decode(frame.payload)
        elif kind is _Payload.PCMA:
            samples = alaw_decode(frame.payload)
        else:
            # A negotiated codec we cannot decode (or one a re-INVITE just removed): keep its slot.
            self._undecodable += 1
            samples = np.zeros(frame.duration, dtype=np.int16)
        self._started = True
        self._write_at(frame.position, samples)

    def _write_at(self, position: int, samples: Samples | None) -> None:
        """Put ``samples`` at ``position``: silence fills a hole before it, an overlap is cut."""
        if not self._started:
            return  # the recording starts with the first audio frame, not with a gap
        if position > self._written:
            self._write_silence(position - self._written)
        if samples is None:
            return
        if position < self._written:
            samples = samples[self._written - position :]
        if samples.size:
            self._append(samples)

    def _write_silence(self, count: int) -> None:
        while count > 0:
            chunk = min(count, _SILENCE_CHUNK)
            self._append(np.zeros(chunk, dtype=np.int16))
            count -= chunk

    def _append(self, samples: Samples) -> None:
        if self._wav is not None:
            self._wav.writeframes(samples.astype("<i2", copy=False).tobytes())
        self._written += int(samples.size)


def _receiver(keys: SrtpKeys | None) -> SrtpReceiver | None:
    return None if keys is None else SrtpReceiver(keys)


def _open_wav(path: Path) -> wave.Wave_write:
    writer = wave.open(str(path), "wb")  # noqa: SIM115 - closed by StreamSink.close()
    writer.setnchannels(1)
    writer.setsampwidth(2)
    writer.setframerate(WAV_RATE)
    return writer
