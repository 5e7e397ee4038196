"""WebSocket audio streams: a call's legs forked to a WebSocket service, beside SIPREC.

``Call.stream(options)`` starts one; ``options`` is a Twilio-shaped or Plivo-shaped request
(``streams/options.py``) and picks the wire format (``streams/twilio_wire.py``,
``streams/plivo_wire.py``). A stream counts in the call's budget of four forked streams like a
SIPREC recording (two for both tracks), and its name shares the call's namespace with theirs.

**Getting the audio.** A call's legs are received where the media engine placed them, often a
worker process, while a stream lives here, in the control process's asyncio loop. So a stream
reuses the fork machinery instead of adding a second packet path: for each wanted leg it asks
the media engine for an ordinary rewrite fork (no SRTP, its own SSRC, only the call's codec in
the payload map, so telephone-event and comfort noise stay out) toward a loopback UDP socket
that the stream owns (an asyncio datagram endpoint on 127.0.0.1). The worker's hot path is
unchanged, ``feed()`` (``tap=False``) calls go through the same pipelines, and a stream's SSRC
tells which leg a packet belongs to. The fork's RTCP comes to the same socket and is ignored;
its report interval is set long because nobody reads it.

**From RTP to messages** (``LegAudio``, per leg): G.711 payload → int16 (the call's codec)
→ 16 kHz if the format wants it (the measured half-band ``Resampler``) → exact 20 ms frames
(``Framer``) → one ``media`` message each. Timing comes from RTP timestamps, not arrival: a
leg's first packet anchors its timeline at its arrival time since the stream started, and every
later frame is placed by its RTP timestamp, so silence suppression and holds show as gaps in
``timestamp`` and lost packets are never invented. A gap ends the current frame early (padded
with silence) and starts a new run of frames at the packet's time; a packet older than what was
already sent (reordered, duplicated) is dropped and counted as late. The fork pipeline already
keeps the timestamps continuous across source changes (``media/pipeline.py``).

**Sending** (``SendQueue``): the datagram callback never awaits. Messages go into one FIFO per
stream, read by a sender task that writes to the WebSocket. Media frames in the queue are
bounded (``queue_frames``, 5 s of one track by default): when it is full the *oldest* frame is
dropped and counted (a transcriber wants the present, not a backlog) and ``StreamFramesDropped``
is reported at most once a second. Control messages (start, mark echoes, stop) are never
dropped. A stalled service only ever stalls its own sender: the call's SIPREC recordings and
other streams do not notice. Between the queue and the service sit asyncio's write buffer (up to
its high-water mark, 64 KB, plus what aiohttp writes between two checks) and the kernel's send
buffer, which is fixed at ``SEND_BUFFER`` so that autotuning cannot hide megabytes of backlog
there; drops start once those are full.

**Ending.** ``stop()``, the end of the call, or Plivo's ``streamTimeout`` end a stream on
purpose: the forks stop first (no more audio), then the closing messages (Twilio ``stop``) are
flushed for up to ``CLOSE_TIMEOUT`` and the WebSocket is closed with 1000; the outcome is
``StreamStopped(reason)``. A failed connection, a closed or broken one, a malformed message
from the service (closed with 1007, as Twilio does with its "invalid message" error), or the
loss of the media worker end the stream with ``StreamDropped(error)``; nothing else of the
call is touched. A stream whose peer stopped reading is aborted (TCP reset) rather than left
holding its buffers.

**Bidirectional** (Twilio ``<Connect><Stream>``, Plivo ``bidirectional=true``; inbound track
only, one per call, and the call needs a ``playback`` destination): the service's audio is
decoded by the wire module, converted to the call's codec at 8 kHz and played as paced RTP
(``recording/playback.py``). Marks (Twilio) and checkpoints (Plivo) are answered once the audio
before them has been played; ``clear``/``clearAudio`` drop the queued audio (Twilio echoes the
marks still pending, Plivo answers ``clearedAudio``).

State of a stream (``status``), after h11's tables::

    status        input                                        next
    ------------  -------------------------------------------  ------------
    starting      WebSocket open, start sent, forks running    in-progress
    starting      connect failed / timed out, forks refused    failed (StreamDropped)
    starting      stop()                                       stopped (StreamStopped)
    in-progress   stop(), call ended, streamTimeout            stopped (StreamStopped)
    in-progress   connection closed or broken, malformed       failed (StreamDropped)
                  message, media worker lost

The status changes only once the stream's resources are released (forks stopped, sockets
closed), so a stream counts against the call's budget until its forks are really gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from ssl import SSLContext
from typing import Protocol

import aiohttp

from siprec_src.errors import LocalProtocolError, SiprecError
from siprec_src.media.audio import FRAME_MS, PCMU_8K, AudioFormat, Framer, Resampler
from siprec_src.media.engine import MediaEngine
from siprec_src.media.g711 import Samples
from siprec_src.media.rtp import RtpError, RtpPacket, is_rtcp, ts_delta
from siprec_src.media.spec import Address, ForkSpec, Leg
from siprec_src.recording.events import (
    StreamDropped,
    StreamEvent,
    StreamFramesDropped,
    StreamPlayed,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.playback import PlaybackDestination, Playout, UdpPlayback, g711_format
from siprec_src.sdp.siprec import CodecSpec
from siprec_src.streams import MalformedMessageError, plivo_wire, twilio_wire
from siprec_src.streams.options import PlivoStreamOptions, StreamOptions, TwilioStreamOptions

log = logging.getLogger(__name__)

DEFAULT_QUEUE_FRAMES = 250  # 5 s of one track in 20 ms frames
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds for TCP, TLS and the WebSocket handshake together
CLOSE_TIMEOUT = 2.0  # seconds to flush the closing messages and to close the WebSocket
MAX_SERVER_MESSAGE = 4 * 1024 * 1024  # a playAudio WAV of ~2 min at 16 kHz
DROP_REPORT_INTERVAL = 1.0  # seconds between StreamFramesDropped reports
FORK_RTCP_INTERVAL = 3600.0  # the fork's RTCP comes to us and is ignored: keep it rare
RECEIVE_BUFFER = 1 << 20  # bytes asked for the fork socket (the kernel caps it at rmem_max)
# The WebSocket's kernel send buffer, fixed (Linux doubles it; autotuning grows it to MBs on
# loopback, i.e. minutes of audio queued where nothing can drop it). 64 KB carries the
# fastest stream (16 kHz L16, both tracks, ~100 KB/s) over a 600 ms round trip.
SEND_BUFFER = 64 * 1024
USER_AGENT = "siprec-src"
COULD_NOT_CONNECT = "Could not establish connection with the remote service"  # Plivo's words
DISCONNECTED = "Connection disconnected with the remote service"
MALFORMED = "Malformed message from the remote service"


class StreamError(SiprecError):
    """A stream could not start (``wait_started``): the message is the ``StreamDropped`` error."""


class StreamStatus(StrEnum):
    STARTING = "starting"
    IN_PROGRESS = "in-progress"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (StreamStatus.STOPPED, StreamStatus.FAILED)


@dataclass(frozen=True, slots=True)
class StreamStats:
    packets_received: int = 0  # RTP packets that reached the stream from its forks
    packets_late: int = 0  # older than audio already framed (reordered, duplicated): dropped
    frames: int = 0  # 20 ms media frames made
    frames_sent: int = 0  # media messages written to the WebSocket
    frames_dropped: int = 0  # media frames dropped because the send queue was full
    queued: int = 0  # media frames not written yet: in the queue, or being written
    messages_sent: int = 0  # every message written, media or not
    bytes_sent: int = 0  # UTF-8 bytes of the messages written
    frames_played: int = 0  # bidirectional: 20 ms RTP packets sent to the call's playback
    reconnects: int = 0  # streams do not reconnect: a drop ends them (StreamDropped)


# --- the send queue -------------------------------------------------------------------------------


class SendQueue:
    """FIFO of text messages with a bound on media frames: when full, the oldest frame goes.

    Control messages are never dropped and do not count against the bound; their order with
    the frames around them is kept.
    """

    def __init__(self, max_frames: int) -> None:
        if max_frames < 1:
            raise LocalProtocolError(
                f"queue_frames must be at least 1, not {max_frames}", field="queue_frames"
            )
        self.max_frames = max_frames
        self.frames = 0  # media frames queued now
        self.dropped = 0
        self._items: deque[tuple[bool, str]] = deque()  # (is media, text)

    def __len__(self) -> int:
        return len(self._items)

    def put_media(self, text: str) -> bool:
        """Queue a frame; False when an older frame had to be dropped to make room."""
        room = self.frames < self.max_frames
        if not room:
            self._drop_oldest_frame()
        self._items.append((True, text))
        self.frames += 1
        return room

    def put_control(self, text: str) -> None:
        self._items.append((False, text))

    def pop(self) -> tuple[bool, str] | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if item[0]:
            self.frames -= 1
        return item

    def _drop_oldest_frame(self) -> None:
        items = self._items
        if items[0][0]:
            del items[0]
        else:  # a control message at the head (rare): the first frame after it
            index = next(i for i, (media, _) in enumerate(items) if media)
            del items[index]
        self.frames -= 1
        self.dropped += 1


# --- one leg's audio, from RTP to timed frames ------------------------------------------------


class LegAudio:
    """One leg's RTP payloads → 20 ms frames at the stream's rate, each with its time in ms.

    ``push(timestamp, payload, arrival_ms)`` returns the frames completed by one packet as
    ``(samples, ms)``; ``ms`` is the frame's time since the stream started (see the module doc).
    """

    def __init__(self, leg: Leg, codec: AudioFormat, rate: int) -> None:
        self.leg = leg
        self.codec = codec
        self.rate = rate
        self.clock = codec.sample_rate
        self.late = 0
        self._origin_ms: int | None = None  # arrival of the first packet, since the stream start
        self._expected = 0  # the RTP timestamp that continues the audio framed so far
        self._elapsed = 0  # ticks from the first packet to _expected (unwrapped)
        self._start_segment(0)

    def _start_segment(self, elapsed: int) -> None:
        self._segment = elapsed  # ticks from the first packet to this run's first sample
        self._frames = 0  # frames made in this run
        self._resampler = Resampler(self.clock, self.rate)
        self._framer = Framer(self.rate)

    def push(self, timestamp: int, payload: bytes, arrival_ms: int) -> list[tuple[Samples, int]]:
        samples = self.codec.decode(payload)
        out: list[tuple[Samples, int]] = []
        if self._origin_ms is None:
            self._origin_ms = max(0, arrival_ms)
        else:
            step = ts_delta(timestamp, self._expected)
            if step < 0:
                self.late += 1
                return out
            if step > 0:  # a gap: end this run (its partial frame padded), start another
                tail = self._framer.flush()
                if tail is not None:
                    out.append((tail, self._frame_ms()))
                    self._frames += 1
                self._elapsed += step
                self._start_segment(self._elapsed)
        self._expected = (timestamp + len(samples)) & 0xFFFFFFFF
        self._elapsed += len(samples)
        for frame in self._framer.push(self._resampler.process(samples)):
            out.append((frame, self._frame_ms()))
            self._frames += 1
        return out

    def _frame_ms(self) -> int:
        assert self._origin_ms is not None
        return self._origin_ms + self._segment * 1000 // self.clock + self._frames * FRAME_MS


# --- the two wire formats behind one face ------------------------------------------------------


class _Wire(Protocol):
    audio_format: AudioFormat

    def opening(self) -> list[str]: ...

    def media(self, leg: Leg, frame: Samples, timestamp_ms: int) -> str: ...

    def closing(self) -> list[str]: ...

    def handle(self, text: str, playout: Playout) -> list[str]:
        """Apply a bidirectional service's message to the playout; the replies to send now."""
        ...

    def played(self, name: str) -> str: ...


class _TwilioWire:
    def __init__(self, encoder: twilio_wire.TwilioStreamEncoder) -> None:
        self.encoder = encoder
        self.audio_format = PCMU_8K

    def opening(self) -> list[str]:
        return [self.encoder.connected(), self.encoder.start()]

    def media(self, leg: Leg, frame: Samples, timestamp_ms: int) -> str:
        return self.encoder.media(leg, frame, timestamp_ms=timestamp_ms)

    def closing(self) -> list[str]:
        return [self.encoder.stop()]

    def handle(self, text: str, playout: Playout) -> list[str]:
        message = twilio_wire.decode_server_message(text, stream_sid=self.encoder.stream_sid)
        if isinstance(message, twilio_wire.MediaReceived):
            playout.play(message.samples, 8000)
        elif isinstance(message, twilio_wire.MarkReceived):
            playout.mark(message.name)
        else:
            # Twilio: a clear empties the buffer and sends back every mark still pending.
            return [self.encoder.mark(name) for name in playout.clear()]
        return []

    def played(self, name: str) -> str:
        return self.encoder.mark(name)


class _PlivoWire:
    def __init__(self, encoder: plivo_wire.PlivoStreamEncoder) -> None:
        self.encoder = encoder
        self.audio_format = encoder.audio_format

    def opening(self) -> list[str]:
        return [self.encoder.start()]

    def media(self, leg: Leg, frame: Samples, timestamp_ms: int) -> str:
        return self.encoder.media(leg, frame, timestamp_ms=timestamp_ms)

    def closing(self) -> list[str]:
        return []  # Plivo has no stop message: closing the WebSocket says it

    def handle(self, text: str, playout: Playout) -> list[str]:
        message = plivo_wire.decode_server_message(
            text, stream_id=self.encoder.stream_id, stream_format=self.audio_format
        )
        if isinstance(message, plivo_wire.PlayAudioReceived):
            playout.play(message.samples, message.sample_rate)
        elif isinstance(message, plivo_wire.CheckpointReceived):
            playout.mark(message.name)
        else:
            # The checkpoints behind the cleared audio were not reached: no playedStream.
            playout.clear()
            return [self.encoder.cleared_audio()]
        return []

    def played(self, name: str) -> str:
        return self.encoder.played_stream(name)


class _ForkReceiver(asyncio.DatagramProtocol):
    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._stream._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        pass  # nothing is sent from this socket; the forks report their own send errors


EmitStreamEvent = Callable[["Stream", StreamEvent], None]


class Stream:
    """One WebSocket audio stream of a call; made by ``Call.stream`` (see the module doc)."""

    def __init__(
        self,
        options: StreamOptions,
        *,
        call_id: str,
        codec: CodecSpec,
        media: MediaEngine,
        emit: EmitStreamEvent,
        ssl: SSLContext | None = None,
        account_sid: str = "",
        call_sid: str | None = None,
        playback: PlaybackDestination | None = None,
        playback_host: str = "127.0.0.1",
        queue_frames: int = DEFAULT_QUEUE_FRAMES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.codec_format = g711_format(codec)
        if connect_timeout <= 0:
            raise LocalProtocolError(
                f"connect_timeout must be positive, not {connect_timeout}", field="connect_timeout"
            )
        if options.bidirectional and playback is None:
            raise LocalProtocolError(
                "a bidirectional stream plays audio into the call: open the call with playback= "
                "(an address to send RTP to, or a callable taking each RTP packet)",
                field="bidirectional",
                code="no_playback",
            )
        self._queue = SendQueue(queue_frames)
        if isinstance(options, TwilioStreamOptions):
            self.sid = "MZ" + secrets.token_hex(16)
            self.name: str | None = options.name
            self.timeout: float | None = None
        else:
            self.sid = str(uuid.uuid4())
            self.name = None
            self.timeout = float(options.stream_timeout)
        self.url = options.url
        self.legs: tuple[Leg, ...] = options.legs
        self.bidirectional = options.bidirectional
        self.call_id = call_id
        self.account_sid = account_sid
        self.call_sid = call_sid if call_sid is not None else call_id
        self.codec = codec
        self.status = StreamStatus.STARTING
        self.events: list[StreamEvent] = []
        self.error: str | None = None  # the StreamDropped error, once dropped
        self.started_at: float | None = None  # Unix time of the start message
        self._media = media
        self._emit = emit
        self._ssl = ssl
        self._playback = playback
        self._playback_host = playback_host
        self._connect_timeout = connect_timeout
        self._rng = rng or random.SystemRandom()
        self._outcome: tuple[StreamStatus, str] | None = None
        self._wake = asyncio.Event()  # the outcome is decided: shut down
        self._idle = asyncio.Event()  # the sender has nothing queued and nothing in flight
        self._ready = asyncio.Event()  # something was queued
        self._wire: _Wire | None = None
        self._legs: dict[int, LegAudio] = {}  # fork SSRC -> its leg's audio
        self._forks: list[str] = []  # fork ids reserved with the media engine
        self._transport: asyncio.DatagramTransport | None = None
        self._session: aiohttp.ClientSession | None = None
        self._playout: Playout | None = None
        self._udp_playback: UdpPlayback | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0  # loop time of the start message
        self._last_drop_report = -1e9
        self._run_task: asyncio.Task[None] | None = None
        self._packets = 0
        self._frames = 0
        self._frames_sent = 0
        self._writing_frame = 0  # 1 while the sender is writing a media frame
        self._messages_sent = 0
        self._bytes_sent = 0
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()

    # --- the public face --------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "twilio" if isinstance(self.options, TwilioStreamOptions) else "plivo"

    @property
    def fork_ids(self) -> tuple[str, ...]:
        return tuple(f"{self.sid}/{leg.value}" for leg in self.legs)

    @property
    def stats(self) -> StreamStats:
        return StreamStats(
            packets_received=self._packets,
            packets_late=sum(leg.late for leg in self._legs.values()),
            frames=self._frames,
            frames_sent=self._frames_sent,
            frames_dropped=self._queue.dropped,
            queued=self._queue.frames + self._writing_frame,
            messages_sent=self._messages_sent,
            bytes_sent=self._bytes_sent,
            frames_played=self._playout.frames_sent if self._playout is not None else 0,
        )

    async def wait_started(self, timeout: float | None = None) -> None:
        """Return once the stream is in progress; ``StreamError`` if it ended before that."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._started)

    async def wait_ended(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ended)

    async def stop(self, reason: str = "stopped") -> None:
        """Stop streaming (Twilio ``stop`` message, WebSocket closed); returns once it ended."""
        self._finish(StreamStatus.STOPPED, reason)
        await self.wait_ended()

    def start(self) -> None:
        """Connect and stream, in a task of its own (``Call.stream`` calls this)."""
        if self._run_task is None:
            self._run_task = asyncio.get_running_loop().create_task(self._run())

    def media_lost(self, reason: str) -> None:
        """The media worker carrying the call's forks died."""
        self._finish(StreamStatus.FAILED, f"media: {reason}")

    # --- the life of a stream -----------------------------------------------------------------

    def _finish(self, status: StreamStatus, text: str) -> None:
        """Decide the outcome (the first one wins) and wake the run task to shut down."""
        if self._outcome is None:
            self._outcome = (status, text)
        self._wake.set()

    async def _run(self) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            ws = await self._connect()
            if ws is not None:
                await self._stream(ws)
        except Exception as exc:  # a bug must still end the stream and release its forks
            log.exception("stream %s failed", self.sid)
            self._finish(StreamStatus.FAILED, f"internal error: {exc!r}")
        finally:
            await self._shutdown(ws)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse | None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        )
        connecting = asyncio.get_running_loop().create_task(self._open(self._session))
        woken = asyncio.get_running_loop().create_task(self._wake.wait())
        done, _ = await asyncio.wait({connecting, woken}, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if connecting not in done:  # stop() while connecting
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                late = await connecting
                await late.close()
            return None
        try:
            return connecting.result()
        except TimeoutError:
            error = f"no WebSocket handshake within {self._connect_timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = str(exc) or type(exc).__name__
        self._finish(StreamStatus.FAILED, f"{COULD_NOT_CONNECT}: {error}")
        return None

    async def _open(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        async with asyncio.timeout(self._connect_timeout):
            return await session.ws_connect(
                self.url,
                # TLS is verified (aiohttp's default context) unless a context says otherwise.
                ssl=self._ssl if self._ssl is not None else True,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
                max_msg_size=MAX_SERVER_MESSAGE,
            )

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        sock = ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self.started_at = time.time()
        wire = self._wire = self._make_wire(round(self.started_at * 1000))
        for text in wire.opening():
            self._queue.put_control(text)
        if self.bidirectional:
            self._playout = self._make_playout()
        self._sender = self._spawn(self._send_loop(ws))
        self._spawn(self._read_loop(ws))
        try:
            await self._open_forks(wire)
        except (SiprecError, OSError) as exc:
            self._finish(StreamStatus.FAILED, f"media: {exc}")
            return
        if self._outcome is not None:
            return
        self.status = StreamStatus.IN_PROGRESS
        self._started.set_result(None)
        self._report(StreamStarted(self.sid))
        if self.timeout is not None:
            # Plivo streamTimeout: counted from the start of streaming.
            self._timer = loop.call_later(self.timeout, self._finish, StreamStatus.STOPPED, "stream timeout")
        await self._wake.wait()

    def _make_wire(self, epoch_ms: int) -> _Wire:
        options = self.options
        if isinstance(options, TwilioStreamOptions):
            return _TwilioWire(
                twilio_wire.TwilioStreamEncoder(
                    stream_sid=self.sid,
                    account_sid=self.account_sid,
                    call_sid=self.call_sid,
                    tracks=self.legs,
                    custom_parameters=options.custom_parameters,
                )
            )
        assert isinstance(options, PlivoStreamOptions)
        return _PlivoWire(
            plivo_wire.PlivoStreamEncoder(
                stream_id=self.sid,
                call_id=self.call_sid,
                account_id=self.account_sid,
                tracks=self.legs,
                audio_format=options.audio_format,
                epoch_ms=epoch_ms,
                extra_headers=options.extra_headers_text,
            )
        )

    def _make_playout(self) -> Playout:
        destination = self._playback
        assert destination is not None
        if callable(destination):
            send = destination
        else:
            self._udp_playback = UdpPlayback(destination, self._playback_host)
            send = self._udp_playback
        return Playout(
            self.codec,
            send,
            on_mark=self._on_mark_played,
            on_drained=lambda: self._report(StreamPlayed(self.sid, None)),
            rng=self._rng,
        )

    async def _open_forks(self, wire: _Wire) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _ForkReceiver(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        here: Address = transport.get_extra_info("sockname")[:2]
        rate = wire.audio_format.sample_rate
        pt = self.codec.payload_type
        for leg, fork_id in zip(self.legs, self.fork_ids, strict=True):
            ssrc = self._rng.getrandbits(32)
            while ssrc in self._legs:
                ssrc = self._rng.getrandbits(32)
            self._legs[ssrc] = LegAudio(leg, self.codec_format, rate)
            local = await self._media.reserve_fork_port(self.call_id, fork_id, "127.0.0.1")
            self._forks.append(fork_id)
            await self._media.start_fork(
                ForkSpec(
                    fork_id=fork_id,
                    call_id=self.call_id,
                    leg=leg,
                    local=local,
                    remote_rtp=here,
                    remote_rtcp=here,
                    ssrc=ssrc,
                    payload_map=((pt, pt),),
                    clock_rate=self.codec.clock_rate,
                    cname=f"siprec-src-{self.sid[:10]}",
                    rtcp_interval=FORK_RTCP_INTERVAL,
                )
            )

    async def _shutdown(self, ws: aiohttp.ClientWebSocketResponse | None) -> None:
        if self._outcome is None:  # cancelled from outside (the loop is going away)
            self._finish(StreamStatus.FAILED, "stream task cancelled")
        assert self._outcome is not None
        status, text = self._outcome
        try:
            await self._release(ws, status, text)
        except Exception:  # still end the stream: nobody may wait for it forever
            log.exception("stream %s: releasing its resources failed", self.sid)
        self.status = status
        if status is StreamStatus.STOPPED:
            event: StreamEvent = StreamStopped(self.sid, text, self._queue.dropped)
        else:
            self.error = text
            event = StreamDropped(self.sid, text, self._queue.dropped)
        if not self._started.done():
            self._started.set_exception(StreamError(text))
            self._started.exception()  # retrieved: nobody has to wait_started()
        self._report(event)
        self._ended.set_result(None)

    async def _release(
        self, ws: aiohttp.ClientWebSocketResponse | None, status: StreamStatus, text: str
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for fork_id in self._forks:  # first: no more audio comes in
            with contextlib.suppress(SiprecError):
                await self._media.stop_fork(fork_id)
        self._forks.clear()
        if self._transport is not None:
            self._transport.close()
        if self._playout is not None:
            await self._playout.close()
        if self._udp_playback is not None:
            self._udp_playback.close()
        stalled = False
        sender = self._sender
        if (
            ws is not None
            and status is StreamStatus.STOPPED
            and self._wire is not None
            and sender is not None
            and not sender.done()
        ):
            # The frames still queued, then the closing messages, if the service reads them.
            self._idle.clear()
            for message in self._wire.closing():
                self._queue.put_control(message)
            self._ready.set()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._idle.wait()
            except TimeoutError:
                stalled = True
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        if ws is not None:
            # Close while the read loop still waits in receive(): aiohttp then completes the
            # close handshake through it (RFC 6455 §7.1.2). Cancelling the reader first would
            # mark the socket abnormally closed and the service would see 1006, not 1000.
            malformed = text.startswith(MALFORMED)
            code = MalformedMessageError.close_code if malformed else aiohttp.WSCloseCode.OK
            await _close_websocket(ws, code=code, stalled=stalled)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        return task

    # --- sending ---------------------------------------------------------------------------

    def _enqueue_media(self, text: str) -> None:
        if not self._queue.put_media(text):
            now = asyncio.get_running_loop().time()
            if now - self._last_drop_report >= DROP_REPORT_INTERVAL:
                self._last_drop_report = now
                self._report(StreamFramesDropped(self.sid, self._queue.dropped))
        self._ready.set()

    def _enqueue_control(self, text: str) -> None:
        self._queue.put_control(text)
        self._ready.set()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        queue = self._queue
        while True:
            item = queue.pop()
            if item is None:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            self._idle.clear()
            media, text = item
            self._writing_frame = int(media)
            try:
                await ws.send_str(text)
            except (aiohttp.ClientError, ConnectionError, OSError, RuntimeError) as exc:
                self._finish(StreamStatus.FAILED, f"{DISCONNECTED}: {exc or type(exc).__name__}")
                return
            finally:
                self._writing_frame = 0
            self._messages_sent += 1
            self._bytes_sent += len(text.encode("utf-8"))
            if media:
                self._frames_sent += 1

    # --- receiving -------------------------------------------------------------------------

    def _on_datagram(self, data: bytes) -> None:
        """A packet from one of our forks: never awaits, never raises."""
        wire = self._wire
        if wire is None or self._outcome is not None or is_rtcp(data):
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        leg = self._legs.get(packet.ssrc)
        if leg is None:
            return
        self._packets += 1
        arrival_ms = round((asyncio.get_running_loop().time() - self._t0) * 1000)
        try:
            frames = leg.push(packet.timestamp, packet.payload, arrival_ms)
            for frame, ms in frames:
                self._enqueue_media(wire.media(leg.leg, frame, ms))
                self._frames += 1
        except SiprecError:
            log.exception("stream %s: frame of the %s leg not sent", self.sid, leg.leg)

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        wire = self._wire
        assert wire is not None
        async for message in ws:
            if self._outcome is not None:
                return  # shutting down: the playout is closed, the stop message may be queued
            if message.type is aiohttp.WSMsgType.TEXT:
                if self._playout is None:
                    continue  # a one-way stream: what the service says is not for us
                try:
                    replies = wire.handle(message.data, self._playout)
                except MalformedMessageError as exc:
                    self._finish(StreamStatus.FAILED, f"{MALFORMED}: {exc}")
                    return
                for reply in replies:
                    self._enqueue_control(reply)
            elif message.type is aiohttp.WSMsgType.BINARY and self._playout is not None:
                self._finish(StreamStatus.FAILED, f"{MALFORMED}: a binary message")
                return
            elif message.type is aiohttp.WSMsgType.ERROR:
                break
        error = ws.exception()
        if error is not None:
            detail = str(error) or type(error).__name__
        else:
            detail = f"the service closed the WebSocket (code {ws.close_code})"
        self._finish(StreamStatus.FAILED, f"{DISCONNECTED}: {detail}")

    def _on_mark_played(self, name: str) -> None:
        if self._wire is None or self._outcome is not None:
            return
        self._enqueue_control(self._wire.played(name))
        self._report(StreamPlayed(self.sid, name))

    def _report(self, event: StreamEvent) -> None:
        self.events.append(event)
        try:
            self._emit(self, event)
        except Exception:
            log.exception("stream event handler failed on %r", event)


async def _close_websocket(ws: aiohttp.ClientWebSocketResponse, *, code: int, stalled: bool) -> None:
    """Close handshake (RFC 6455 §7.1.2), bounded by ``CLOSE_TIMEOUT`` (aiohttp's ws_close);
    a peer that stopped reading, or never answers the close, gets a TCP reset instead."""
    sock = ws.get_extra_info("socket")  # before closing: aiohttp lets go of it then
    if stalled:
        _reset(sock)
    with contextlib.suppress(Exception):
        await ws.close(code=code)
    if ws.close_code in (None, aiohttp.WSCloseCode.ABNORMAL_CLOSURE):
        _reset(sock)


def _reset(sock: socket.socket | None) -> None:
    """aiohttp has no abort for a client WebSocket, and a transport closed while it still holds
    data for a peer that does not read waits for that peer forever. Linger 0 turns the close
    into a TCP reset, and shutting the socket down makes the pending write fail, so asyncio
    closes it now. A socket already closed raises EBADF here, which is fine."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)


__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_QUEUE_FRAMES",
    "LegAudio",
    "SendQueue",
    "Stream",
    "StreamError",
    "StreamStats",
    "StreamStatus",
]
