"""Playback into a call: what a bidirectional stream service sends, played as paced RTP.

A bidirectional WebSocket service (Twilio ``<Connect><Stream>``, Plivo ``bidirectional=true``)
answers with audio to play to the caller. It is injected into the call's *outbound* direction
(what the platform sends toward the far end) by the application that owns the call, because we
only receive copies of the legs. ``open_call(playback=...)`` says where it goes:

- an ``(ip, port)`` address: RTP over UDP, from a socket bound on the call's media host (the
  sidecar: the PBX mixes or relays it, like Asterisk ExternalMedia or an rtpengine play-media
  leg);
- a callable ``on_playback(packet: bytes)``: the embedding softswitch gets each RTP packet
  in-process and sends it where it wants.

``Playout`` turns audio of any length and rate (8/16 kHz int16, as the wire decoders give it)
into 20 ms frames in the call's G.711 codec at 8 kHz, and sends one RTP packet per frame on
absolute 20 ms deadlines from one task. Its RTP stream has its own random SSRC, sequence and
timestamp (RFC 3550 §5.1); a talkspurt after an idle period starts with the marker bit and a
timestamp advanced by the idle time (RFC 3551 §4.1), so a receiver's jitter buffer re-syncs.

Marks (Twilio ``mark``, Plivo ``checkpoint``) queue behind the audio sent before them and are
reported through ``on_mark`` when they reach the head of the queue: one frame time after the
last frame before them was sent, i.e. when that audio has been played out. ``on_drained`` says
the queue ran empty after playing audio (Plivo's ``Played``). ``clear()`` drops what is queued
and returns the marks that were pending, for the caller to answer as its protocol says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Callable

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import FRAME_MS, AudioFormat, Encoding, Framer, Resampler
from siprec_src.media.g711 import Samples
from siprec_src.media.spec import Address
from siprec_src.sdp.siprec import CodecSpec

log = logging.getLogger(__name__)

PlaybackDestination = Address | Callable[[bytes], None]
SendPacket = Callable[[bytes], None]

RATE = 8000  # G.711 (ITU-T G.711 §1); the call's codec clock
SAMPLES_PER_FRAME = RATE * FRAME_MS // 1000
FRAME_SECONDS = FRAME_MS / 1000
# A pacer this late (the loop was blocked) stops catching up and restarts its clock: a burst
# of frames would only overflow the receiver's jitter buffer.
MAX_LATENESS = 0.2
_RTP_HEADER = struct.Struct("!BBHII")
_CODECS = {"PCMU": Encoding.PCMU, "PCMA": Encoding.PCMA}


def g711_format(codec: CodecSpec) -> AudioFormat:
    """The sample format of a call's codec, if WebSocket streams can carry it (G.711 at 8 kHz)."""
    encoding = _CODECS.get(codec.encoding.upper())
    if encoding is None or codec.clock_rate != RATE:
        raise LocalProtocolError(
            f"WebSocket streams need a G.711 call (PCMU or PCMA at 8000 Hz), not "
            f"{codec.encoding}/{codec.clock_rate}",
            field="codec",
            code="unsupported_codec",
        )
    return AudioFormat(encoding, RATE)


class UdpPlayback:
    """Sends playback RTP to an address from a non-blocking UDP socket of its own."""

    def __init__(self, destination: Address, bind_host: str) -> None:
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        self.destination = destination
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._socket.setblocking(False)
            self._socket.bind((_source_host(destination[0], bind_host, family), 0))
        except OSError:
            self._socket.close()
            raise

    @property
    def local(self) -> Address:
        """Where the playback RTP comes from (for a PBX that filters by source)."""
        host, port = self._socket.getsockname()[:2]
        return host, port

    def __call__(self, packet: bytes) -> None:
        self._socket.sendto(packet, self.destination)

    def close(self) -> None:
        self._socket.close()


def _source_host(destination: str, bind_host: str, family: socket.AddressFamily) -> str:
    """The call's media host, unless it cannot reach the destination (another address family,
    or loopback toward another host): then any address, and the kernel picks by route."""
    anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"
    try:
        source = ipaddress.ip_address(bind_host)
        target = ipaddress.ip_address(destination)
    except ValueError:
        return anywhere
    if source.version != target.version or (source.is_loopback and not target.is_loopback):
        return anywhere
    return bind_host


class Playout:
    """Paced RTP of the audio a stream service asks to play (see the module doc)."""

    def __init__(
        self,
        codec: CodecSpec,
        send: SendPacket,
        *,
        on_mark: Callable[[str], None],
        on_drained: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.format = g711_format(codec)
        self.payload_type = codec.payload_type
        self._send = send
        self._on_mark = on_mark
        self._on_drained = on_drained
        rng = rng or random.SystemRandom()
        self.ssrc = rng.getrandbits(32)
        self._sequence = rng.getrandbits(16)
        self._timestamp = rng.getrandbits(32)
        self._items: deque[Samples | str] = deque()  # 20 ms frames and mark names, in order
        self._framer = Framer(RATE)
        self._resamplers: dict[int, Resampler] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_sent: float | None = None  # loop time of the last packet
        self._closed = False
        self.frames_sent = 0
        self.frames_cleared = 0
        self.send_errors = 0

    @property
    def queued_frames(self) -> int:
        return sum(1 for item in self._items if not isinstance(item, str))

    def play(self, samples: Samples, sample_rate: int) -> None:
        """Queue audio (int16 at 8 or 16 kHz) behind what is already queued."""
        if self._closed or not len(samples):
            return
        resampler = self._resamplers.get(sample_rate)
        if resampler is None:
            resampler = self._resamplers[sample_rate] = Resampler(sample_rate, RATE)
        self._items.extend(self._framer.push(resampler.process(samples)))
        self._wake()

    def mark(self, name: str) -> None:
        """Report ``name`` once everything queued before it has been played."""
        if self._closed:
            return
        self._flush_partial()
        self._items.append(name)
        self._wake()

    def clear(self) -> list[str]:
        """Drop the queued audio at once; returns the marks that were waiting, in order."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        marks = [item for item in self._items if isinstance(item, str)]
        self.frames_cleared += len(self._items) - len(marks) + (1 if self._framer.pending else 0)
        self._items.clear()
        self._framer = Framer(RATE)
        self._resamplers.clear()
        return marks

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._items.clear()

    def _flush_partial(self) -> None:
        # The audio before a mark must be played in full: pad its last partial frame.
        frame = self._framer.flush()
        if frame is not None:
            self._items.append(frame)

    def _wake(self) -> None:
        if self._task is None and self._items:
            self._task = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        items = self._items
        start = loop.time()
        if self._last_sent is not None:
            # A new talkspurt: the timestamp moves on by the idle time (RFC 3551 §4.1).
            idle = round((start - self._last_sent) * RATE) - SAMPLES_PER_FRAME
            self._timestamp = (self._timestamp + max(0, idle)) & 0xFFFFFFFF
        marker = True
        played = False
        deadline = start
        while True:
            while items and isinstance(head := items[0], str):
                items.popleft()
                self._report(self._on_mark, head)
            if not items:
                if not self._framer.pending:
                    break
                self._flush_partial()
                continue
            frame = items.popleft()
            assert not isinstance(frame, str)
            self._send_frame(frame, marker)
            marker = False
            played = True
            deadline += FRAME_SECONDS
            delay = deadline - loop.time()
            if delay < -MAX_LATENESS:
                deadline = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))
        self._task = None
        if played:
            self._report(self._on_drained)

    def _send_frame(self, frame: Samples, marker: bool) -> None:
        header = _RTP_HEADER.pack(
            0x80, (0x80 if marker else 0) | self.payload_type, self._sequence, self._timestamp, self.ssrc
        )
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + SAMPLES_PER_FRAME) & 0xFFFFFFFF
        self._last_sent = asyncio.get_running_loop().time()
        try:
            self._send(header + self.format.encode(frame))
        except OSError as exc:
            # ENOBUFS, or ICMP port unreachable from the previous packet: count, keep pacing.
            self.send_errors += 1
            if self.send_errors == 1:
                log.warning("playback RTP send failed: %s", exc)
            return
        except Exception:
            self.send_errors += 1
            log.exception("playback callback failed")
            return
        self.frames_sent += 1

    @staticmethod
    def _report(callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("playback report failed")
