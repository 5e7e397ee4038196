"""``Engine``: the embedding API, and the asyncio driver of recording sessions.

    async with Engine(EngineConfig(connectors={"main": connector})) as engine:
        call = await engine.open_call(caller=Party("sip:alice@example.com", "Alice"),
                                      callee=Party("sip:bob@example.net"))
        call.taps[Leg.INBOUND]                 # where the PBX sends a copy of the inbound leg
        recording = await call.record(connector="main", track=Track.BOTH)
        await recording.wait_started()
        ...
        await call.close()                     # BYE to every SRS, legs closed

The driver is deliberately thin (STYLE.md #2): SIP rules live in ``RecordingSession`` and the
UA core, packet rules in the media engine. Here we only resolve SRS addresses, reserve
media ports, run media commands in order, and re-arm one timer for all sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ssl import SSLContext

from siprec_src.errors import LocalProtocolError, SiprecError
from siprec_src.media.engine import MediaConfig, MediaEngine
from siprec_src.media.events import ForkSendFailed, ForkStats, MediaEvent, WorkerDied
from siprec_src.media.spec import Address, Leg, LegSpec, SrtpKeys
from siprec_src.media.srtp import generate_key_params
from siprec_src.metadata.model import RecordingMetadata, for_call
from siprec_src.recording.call import MAX_STREAMS_PER_CALL, Party, Track, check_name, stream_roles
from siprec_src.recording.connector import Connector, Edge, SrsTarget, connector_for, parse_srs
from siprec_src.recording.events import (
    AttemptFailed,
    RecordingEvent,
    RecordingFailed,
    RecordingStarted,
    RecordingStopped,
    SessionLost,
    SessionRecovered,
    StreamEvent,
)
from siprec_src.recording.health import SrsHealth
from siprec_src.recording.playback import PlaybackDestination
from siprec_src.recording.router import SessionRouter
from siprec_src.recording.session import (
    Action,
    AttemptResources,
    PrepareAttempt,
    RecordingSession,
    StartForks,
    State,
    StopForks,
    StreamPlan,
    UpdateForks,
)
from siprec_src.recording.stream import DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUEUE_FRAMES, Stream
from siprec_src.sdp.siprec import PCMU, CodecSpec
from siprec_src.signaling.timer import CoreTimer
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import RequestFailed, UaConfig, UaEvent, UserAgentCore
from siprec_src.streams.options import StreamOptions, TwilioStreamOptions

log = logging.getLogger(__name__)


class RecordingError(SiprecError):
    """A recording failed to start or ended in failure; ``status`` is the deciding SIP status."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class EngineConfig:
    sip_listen: tuple[ListenSpec, ...] = (
        ListenSpec("udp", "127.0.0.1", 0),
        ListenSpec("tcp", "127.0.0.1", 0),
    )
    tls: TlsConfig | None = None
    media: MediaConfig = field(default_factory=MediaConfig)
    media_host: str = "127.0.0.1"  # media bind address when the SRS URI names no edge
    media_advertised: str | None = None  # what SDP says when NAT sits in between
    edges: Mapping[str, Edge] = field(default_factory=dict)
    connectors: Mapping[str, Connector] = field(default_factory=dict)
    user_agent: str = "siprec-src"
    from_uri: str = "sip:siprec-src@localhost"


class Recording:
    """One SIPREC recording of a call (the seeds' "Siprec resource"): ``sid`` = ``SR`` + 32 hex."""

    def __init__(
        self, engine: Engine, call: Call, session: RecordingSession, *, name: str | None, track: Track
    ):
        self.sid = session.recording_id
        self.name = name
        self.call = call
        self.track = track
        self.session = session
        self.connector = session.connector
        self.events: list[RecordingEvent] = []
        self.fork_stats: dict[str, ForkStats] = {}
        self.remotes: dict[str, Address] = {}  # label -> where its RTP goes
        self.media_problems: deque[str] = deque(maxlen=32)  # the latest ForkSendFailed reasons
        self._engine = engine
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()

    @property
    def status(self) -> str:
        """Twilio's words: in-progress, paused, stopped, failed (and starting before the 2xx)."""
        state = self.session.state
        if self.session.recovering:
            # The SRS was lost and a new session is being set up: the recording goes on.
            return "in-progress"
        return {
            State.NEW: "starting",
            State.STARTING: "starting",
            State.ACTIVE: "in-progress",
            State.PAUSED: "paused",
            State.STOPPED: "stopped",
            State.FAILED: "failed",
        }[state]

    @property
    def srs(self) -> str | None:
        return None if self.session.srs is None else str(self.session.srs)

    @property
    def streams(self) -> list[tuple[str, Leg, int]]:
        """(label, leg, SSRC) of each stream."""
        return [(s.label, s.leg, s.ssrc) for s in self.session.plans]

    async def wait_started(self, timeout: float | None = None) -> None:
        """Return once the SRS accepted and the forks run; ``RecordingError`` if it failed first.

        The 2xx is not enough: its forks start in the media worker just after, and a packet
        that arrives in between is not forked. Callers wait here before they send media.
        """
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._started)
            await self._engine._media_idle(self)

    async def wait_ended(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ended)

    async def pause(self) -> None:
        self._engine._command(self.session, self.session.pause)

    async def resume(self) -> None:
        self._engine._command(self.session, self.session.resume)

    async def stop(self, reason: str = "stopped") -> None:
        """BYE (or CANCEL) to the SRS and stop the forks; returns when the media is stopped."""
        self._engine._command(self.session, lambda now: self.session.stop(now, reason))
        await self.wait_ended()
        await self._engine._media_idle(self)

    def _on_event(self, event: RecordingEvent) -> None:
        self.events.append(event)
        if isinstance(event, RecordingStarted) and not self._started.done():
            self._started.set_result(None)
        elif isinstance(event, RecordingFailed | RecordingStopped):
            if not self._started.done():
                status = event.status if isinstance(event, RecordingFailed) else 487
                self._started.set_exception(RecordingError(event.reason, status))
                self._started.exception()  # retrieved: nobody has to wait_started()
            if not self._ended.done():
                self._ended.set_result(None)


class Call:
    """A call whose legs can be recorded; made by ``Engine.open_call``."""

    def __init__(
        self,
        engine: Engine,
        call_id: str,
        caller: Party,
        callee: Party,
        codec: CodecSpec,
        taps: dict[Leg, Address],
        sip_session_id: str | None,
        *,
        playback: PlaybackDestination | None = None,
        media_host: str = "127.0.0.1",
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.codec = codec
        self.taps = taps
        self.sip_session_id = sip_session_id
        self.playback = playback  # where bidirectional streams' audio goes (recording/playback.py)
        self.media_host = media_host
        self.recordings: dict[str, Recording] = {}
        self.streams: dict[str, Stream] = {}  # WebSocket streams by sid
        self.closed = False
        self._engine = engine

    @property
    def active_streams(self) -> int:
        """Forked streams in use: SIPREC streams of live recordings and legs of live WebSocket
        streams (a stream counts until its forks are released)."""
        recorded = sum(len(r.track.legs) for r in self.recordings.values() if not r.session.state.terminal)
        return recorded + sum(len(s.legs) for s in self.streams.values() if not s.status.terminal)

    def name_holder(self, name: str) -> str | None:
        """Which kind of live thing of this call holds ``name`` ("recording", "stream"), if any.

        Names are unique per call across SIPREC recordings and WebSocket streams, so that stop
        by name is never ambiguous.
        """
        if any(r.name == name and not r.session.state.terminal for r in self.recordings.values()):
            return "recording"
        if any(s.name == name and not s.status.terminal for s in self.streams.values()):
            return "stream"
        return None

    def recording(self, sid_or_name: str) -> Recording:
        found = self.recordings.get(sid_or_name)
        if found is None:
            found = next((r for r in self.recordings.values() if r.name == sid_or_name), None)
        if found is None:
            raise LocalProtocolError(
                f"call {self.call_id} has no recording {sid_or_name!r}", field="sid", code="no_such_recording"
            )
        return found

    def get_stream(self, sid_or_name: str) -> Stream:
        """A WebSocket stream of this call by sid, or by name (the live one first)."""
        found = self.streams.get(sid_or_name)
        if found is None:
            named = [s for s in self.streams.values() if s.name is not None and s.name == sid_or_name]
            named.sort(key=lambda s: s.status.terminal)
            found = named[0] if named else None
        if found is None:
            raise LocalProtocolError(
                f"call {self.call_id} has no stream {sid_or_name!r}", field="sid", code="no_such_stream"
            )
        return found

    async def stream(
        self,
        options: StreamOptions,
        *,
        ssl: SSLContext | None = None,
        account_sid: str = "",
        call_sid: str | None = None,
        queue_frames: int = DEFAULT_QUEUE_FRAMES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> Stream:
        """Start a WebSocket stream of this call (Twilio or Plivo shape, ``recording/stream.py``).

        Returns at once; ``wait_started()`` waits for the connection. ``ssl`` verifies a
        ``wss://`` server (default: the system's trust store); ``account_sid``/``call_sid`` go
        into the start message (``call_sid`` defaults to the call id).
        """
        return self._engine._stream(
            self,
            options,
            ssl=ssl,
            account_sid=account_sid,
            call_sid=call_sid,
            queue_frames=queue_frames,
            connect_timeout=connect_timeout,
        )

    def feed(self, leg: Leg, packet: bytes) -> None:
        """Push one RTP packet of ``leg`` (embedding softswitches that hold the packets already)."""
        self._engine.media.feed(self.call_id, leg, packet)

    async def record(
        self,
        *,
        connector: str | Connector | None = None,
        srs: Sequence[str] = (),
        track: Track | str = Track.BOTH,
        name: str | None = None,
        params: Mapping[str, str] | None = None,
        params_in_metadata: bool = False,
        session_timeout: int | None = None,
        secure: bool | None = None,
    ) -> Recording:
        """Start a SIPREC recording of this call toward a configured connector or SRS URIs."""
        return await self._engine._record(
            self,
            connector=connector,
            srs=srs,
            track=Track.parse(track) if isinstance(track, str) else track,
            name=name,
            params=dict(params or {}),
            params_in_metadata=params_in_metadata,
            session_timeout=session_timeout,
            secure=secure,
        )

    async def update_participants(self, caller: Party, callee: Party) -> None:
        """New parties (transfer, answer by another agent): every live recording re-INVITEs its SRS."""
        self.caller, self.callee = caller, callee
        for recording in self.recordings.values():
            if recording.session.state in (State.STARTING, State.ACTIVE, State.PAUSED):
                previous = recording.session.metadata
                custom = previous.extensions[0].elements if previous.extensions else ()
                metadata = _with_ids_of(previous, self._engine._metadata(self, recording.track, custom))
                session = recording.session
                self._engine._command(session, functools.partial(_update_at, session, metadata))

    async def close(self) -> None:
        """Stop every recording (BYE) and WebSocket stream, then close the legs."""
        if self.closed:
            return
        self.closed = True
        live = [r for r in self.recordings.values() if not r.session.state.terminal]
        streams = [s for s in self.streams.values() if not s.status.terminal]
        await asyncio.gather(
            *(r.stop("call ended") for r in live),
            *(s.stop("call ended") for s in streams),
            return_exceptions=True,
        )
        await self._engine._close_call(self)


class Engine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        on_event: Callable[[Recording, RecordingEvent], None] | None = None,
        on_stream_event: Callable[[Stream, StreamEvent], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.on_event = on_event
        # WebSocket stream events: a callback of their own, so on_event's signature stays.
        self.on_stream_event = on_stream_event
        self.calls: dict[str, Call] = {}
        self.recordings: dict[str, Recording] = {}
        self.streams: dict[str, Stream] = {}
        self._rng = rng or random.SystemRandom()
        self.media = MediaEngine(self.config.media)
        core = UserAgentCore(
            UaConfig(
                user_agent=self.config.user_agent,
                accept=("application/sdp", "application/rs-metadata", "application/rs-metadata-request"),
            )
        )
        self.router = SessionRouter(core)
        self.ua: UserAgent | None = None
        self._tls = self.config.tls
        self._timer = CoreTimer(self._fire)
        self._flush_scheduled = False
        self._media_queue: asyncio.Queue[tuple[Recording, Action]] = asyncio.Queue()
        self._media_pending: dict[str, int] = {}
        self._media_drained: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ports: dict[str, tuple[str, dict[str, int]]] = {}  # sid -> (bind host, label -> port)
        self.health = SrsHealth()  # which SRSs answered lately: new recordings try those first
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.media.start()
        self.ua = UserAgent(self.router.core, tls=self._tls, on_event=self._on_ua_event)
        try:
            await self.ua.start(self.config.sip_listen)
        except BaseException:
            await self.media.close()
            raise
        core = self.router.core
        if "tls" not in core.local_addresses and "tcp" in core.local_addresses:
            # TLS toward SRSs without a TLS listener of ours (no certificate): Via and Contact
            # name the TCP listener, and the SRS's requests come back over the connection we
            # opened, which the transport keeps open (RFC 5923-style reuse).
            core.local_addresses["tls"] = core.local_addresses["tcp"]
        self._spawn(self._run_media_commands())
        self._spawn(self._watch_media())
        for connector in self.config.connectors.values():
            if connector.options_interval > 0:
                self._spawn(self._ping_loop(connector))

    async def close(self, *, bye_timeout: float = 4.0) -> None:
        """End every call (BYE to every SRS), then stop SIP and media.

        Waits up to ``bye_timeout`` for the BYEs' answers: a BYE lost on the wire is resent
        only while the transport lives (RFC 3261 Timer E: after 0.5, 1 and 2 s), and an SRS
        that never gets it keeps the session open until its own session timer, or forever.
        """
        if not self._started:
            return
        for call in list(self.calls.values()):
            await call.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bye_timeout
        await asyncio.sleep(0.01)  # let the last BYEs reach the wire
        while self.router.core.awaiting_answer("BYE") and loop.time() < deadline:
            await asyncio.sleep(0.02)
        self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ua is not None:
            await self.ua.close()
        await self.media.close()
        self._started = False

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # --- calls ------------------------------------------------------------------------------

    async def open_call(
        self,
        *,
        caller: Party,
        callee: Party,
        call_id: str | None = None,
        codec: CodecSpec = PCMU,
        tap: bool = True,
        bind_host: str | None = None,
        sources: Mapping[Leg, Address] | None = None,
        srtp: Mapping[Leg, SrtpKeys] | None = None,
        sip_session_id: str | None = None,
        playback: PlaybackDestination | None = None,
    ) -> Call:
        """Open a call's two legs: tap ports the PBX sends copies to, or ``feed()`` when ``tap=False``.

        ``playback`` is where bidirectional WebSocket streams play audio into the call: an
        ``(ip, port)`` to send RTP to, or a callable given each RTP packet.
        """
        if not self._started:
            raise LocalProtocolError("the engine is not started (use `async with Engine(...)`)")
        call_id = call_id or secrets.token_hex(16)
        if call_id in self.calls:
            raise LocalProtocolError(
                f"call {call_id!r} is already open", field="call_id", code="duplicate_call"
            )
        taps: dict[Leg, Address] = {}
        host = bind_host or self.config.media_host
        opened: list[Leg] = []
        try:
            for leg in (Leg.INBOUND, Leg.OUTBOUND):
                spec = LegSpec(call_id, leg, host, (sources or {}).get(leg), (srtp or {}).get(leg))
                address = await self.media.open_leg(spec, tap=tap)
                opened.append(leg)
                if address is not None:
                    taps[leg] = address
        except BaseException:
            for leg in opened:
                await self.media.close_leg(call_id, leg)
            raise
        call = Call(
            self, call_id, caller, callee, codec, taps, sip_session_id, playback=playback, media_host=host
        )
        self.calls[call_id] = call
        return call

    async def _close_call(self, call: Call) -> None:
        for leg in (Leg.INBOUND, Leg.OUTBOUND):
            with contextlib.suppress(LocalProtocolError):
                await self.media.close_leg(call.call_id, leg)
        self.calls.pop(call.call_id, None)
        # A long-running sidecar opens millions of calls: forget what ended with this one
        # (the Call object keeps its own recordings and streams for whoever still holds it).
        for sid, recording in call.recordings.items():
            if recording.session.state.terminal:
                self.recordings.pop(sid, None)
        for sid, stream in call.streams.items():
            if stream.status.terminal:
                self.streams.pop(sid, None)

    def call(self, call_id: str) -> Call:
        found = self.calls.get(call_id)
        if found is None:
            raise LocalProtocolError(f"no call {call_id!r}", field="call_id", code="no_such_call")
        return found

    # --- recordings ----------------------------------------------------------------------------

    def _connector(
        self, connector: str | Connector | None, srs: Sequence[str], secure: bool | None
    ) -> Connector:
        if isinstance(connector, Connector):
            chosen = connector
        elif connector is not None:
            found = self.config.connectors.get(connector)
            if found is None:
                known = ", ".join(sorted(self.config.connectors)) or "none configured"
                raise LocalProtocolError(
                    f"unknown connector {connector!r} (known: {known})",
                    field="connector",
                    code="unknown_connector",
                )
            chosen = found
        elif srs:
            chosen = connector_for(
                "adhoc",
                list(srs),
                secure=bool(secure),
                edges=self.config.edges,
                from_uri=self.config.from_uri,
            )
        else:
            raise LocalProtocolError(
                "a recording needs a connector or at least one SRS URI",
                field="connector",
                code="missing_connector",
            )
        if secure is not None and secure != chosen.secure:
            targets = tuple(
                parse_srs(
                    str(t.uri) + (f";edge={t.edge}" if t.edge else ""), secure=secure, edges=self.config.edges
                )
                for t in chosen.srs
            )
            chosen = replace(chosen, srs=targets, secure=secure)
        return chosen

    def _metadata(self, call: Call, track: Track, custom: Sequence[tuple[str, str]]) -> RecordingMetadata:
        """A complete snapshot for a recording of ``call`` (RFC 7865): its parties and its streams."""
        return for_call(
            call.call_id,
            [(call.caller.aor, call.caller.name), (call.callee.aor, call.callee.name)],
            [(label, sender, receivers) for label, _, sender, receivers in stream_roles(track)],
            datetime.now(UTC),
            secrets.token_bytes,
            sip_session_id=call.sip_session_id,
            custom_parameters=custom,
        )

    async def _record(
        self,
        call: Call,
        *,
        connector: str | Connector | None,
        srs: Sequence[str],
        track: Track,
        name: str | None,
        params: dict[str, str],
        params_in_metadata: bool,
        session_timeout: int | None,
        secure: bool | None,
    ) -> Recording:
        if call.closed:
            raise LocalProtocolError(f"call {call.call_id} is closed", field="call_id", code="call_closed")
        if name is not None:
            check_name(name)
            holder = call.name_holder(name)
            if holder is not None:
                raise LocalProtocolError(
                    f"call {call.call_id} already has a {holder} named {name!r}",
                    field="name",
                    code="duplicate_name",
                )
        wanted = len(track.legs)
        if call.active_streams + wanted > MAX_STREAMS_PER_CALL:
            raise LocalProtocolError(
                f"call {call.call_id} has {call.active_streams} forked streams; {track} needs {wanted} "
                f"more and the limit is {MAX_STREAMS_PER_CALL} per call",
                field="track",
                code="stream_limit",
            )
        chosen = self._connector(connector, srs, secure)
        headers: list[tuple[str, str]] = []
        custom: list[tuple[str, str]] = []
        for key, value in params.items():
            if (
                not key
                or any(c in key + value for c in "\r\n\x00")
                or not key.replace("-", "").replace("_", "").isalnum()
            ):
                raise LocalProtocolError(
                    f"parameter {key!r} must be a token without line breaks",
                    field="params",
                    code="invalid_param",
                )
            if params_in_metadata:
                custom.append((key, value))
            else:
                headers.append((key if key.lower().startswith("x-") else f"X-{key}", value))
        sid = "SR" + secrets.token_hex(16)
        plans = tuple(
            StreamPlan(label, leg, self._rng.getrandbits(32)) for label, leg, _, _ in stream_roles(track)
        )
        metadata = self._metadata(call, track, custom)
        session = RecordingSession(
            sid,
            self.router.core,
            chosen,
            call_id=call.call_id,
            streams=plans,
            codec=call.codec,
            metadata=metadata,
            headers=tuple(headers),
            session_expires=session_timeout,
            generate_key=generate_key_params,
            rng=self._rng,
            cname=f"siprec-src-{sid[2:10]}",
            health=self.health,
        )
        recording = Recording(self, call, session, name=name, track=track)
        call.recordings[sid] = recording
        self.recordings[sid] = recording
        self.router.add(session)
        self._command(session, session.start)
        return recording

    # --- WebSocket streams --------------------------------------------------------------------

    def _stream(
        self,
        call: Call,
        options: StreamOptions,
        *,
        ssl: SSLContext | None,
        account_sid: str,
        call_sid: str | None,
        queue_frames: int,
        connect_timeout: float,
    ) -> Stream:
        if call.closed:
            raise LocalProtocolError(f"call {call.call_id} is closed", field="call_id", code="call_closed")
        name = options.name if isinstance(options, TwilioStreamOptions) else None
        holder = None if name is None else call.name_holder(name)
        if holder is not None:
            raise LocalProtocolError(
                f"call {call.call_id} already has a {holder} named {name!r}",
                field="name",
                code="duplicate_name",
            )
        wanted = len(options.legs)
        if call.active_streams + wanted > MAX_STREAMS_PER_CALL:
            raise LocalProtocolError(
                f"call {call.call_id} has {call.active_streams} forked streams; this stream needs "
                f"{wanted} more and the limit is {MAX_STREAMS_PER_CALL} per call",
                field="track",
                code="stream_limit",
            )
        if options.bidirectional and any(
            s.bidirectional and not s.status.terminal for s in call.streams.values()
        ):
            # One audio source plays into the call's outbound direction at a time.
            raise LocalProtocolError(
                f"call {call.call_id} already has a bidirectional stream",
                field="bidirectional",
                code="bidirectional_in_use",
            )
        stream = Stream(
            options,
            call_id=call.call_id,
            codec=call.codec,
            media=self.media,
            emit=self._on_stream_event,
            ssl=ssl,
            account_sid=account_sid,
            call_sid=call_sid,
            playback=call.playback,
            playback_host=call.media_host,
            queue_frames=queue_frames,
            connect_timeout=connect_timeout,
            rng=self._rng,
        )
        call.streams[stream.sid] = stream
        self.streams[stream.sid] = stream
        stream.start()
        return stream

    def _on_stream_event(self, stream: Stream, event: StreamEvent) -> None:
        if self.on_stream_event is not None:
            try:
                self.on_stream_event(stream, event)
            except Exception:
                log.exception("stream event handler failed on %r", event)

    # --- driving sessions ------------------------------------------------------------------------

    def _command(self, session: RecordingSession, method: Callable[[float], None]) -> None:
        method(self.now())
        self.router.sync(session)
        self._flush()

    def _on_ua_event(self, event: UaEvent) -> None:
        self.router.handle_ua_event(event, self.now())
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        for session, actions, events in self.router.drain():
            recording = self.recordings.get(session.recording_id)
            if recording is None:
                continue
            for action in actions:
                if isinstance(action, PrepareAttempt):
                    self._spawn(self._prepare(recording, action))
                else:
                    self._media_pending[recording.sid] = self._media_pending.get(recording.sid, 0) + 1
                    self._media_queue.put_nowait((recording, action))
            for event in events:
                self._note_health(event)
                recording._on_event(event)
                if self.on_event is not None:
                    try:
                        self.on_event(recording, event)
                    except Exception:
                        log.exception("recording event handler failed on %r", event)
        if self.ua is not None:
            self.ua.pump()
        self._arm()

    def _arm(self) -> None:
        self._timer.arm(self.router.get_timer())

    def _note_health(self, event: RecordingEvent) -> None:
        if isinstance(event, AttemptFailed):
            self.health.failed(event.srs, event.status, self.now(), event.retry_after)
        elif isinstance(event, SessionLost):
            self.health.failed(event.srs, event.status, self.now())
        elif isinstance(event, RecordingStarted | SessionRecovered):
            self.health.answered(event.srs)

    # --- OPTIONS pings (connector.options_interval) -------------------------------------------

    async def _ping_loop(self, connector: Connector) -> None:
        """OPTIONS to every SRS of ``connector`` each ``options_interval`` (RFC 3261 §11).

        A silent SRS is marked down (new recordings try it last) and its running sessions are
        probed at once: over UDP a dead host sends no ICMP, and this finds it within
        ``options_interval + attempt_timeout`` rather than at the next session refresh.
        """
        while True:
            await asyncio.sleep(connector.options_interval)
            await asyncio.gather(*(self._ping(connector, target) for target in connector.srs))

    async def _ping(self, connector: Connector, target: SrsTarget) -> None:
        assert self.ua is not None
        srs = str(target)
        try:
            destination, contact = await self._route(target)
            core = self.router.core
            request = core.create_request(
                "OPTIONS",
                target.uri,
                NameAddress(SipUri.parse(connector.from_uri)),
                NameAddress(replace(target.uri, params=(), headers=())),
                transport=destination.transport,
            )
            request_id = self.ua.send(
                request, destination, via_address=contact, credentials=connector.credentials
            )
            outcome = await self.ua.wait(request_id, timeout=connector.attempt_timeout)
        except TimeoutError:
            status, reason = 408, f"no answer to OPTIONS within {connector.attempt_timeout:g} s"
        except (SiprecError, OSError) as exc:
            status, reason = 503, str(exc)
        else:
            if not isinstance(outcome, RequestFailed):
                # Any answer, even 403 or 405, says the SRS is there (RFC 3261 §11.2).
                self.health.answered(srs)
                return
            status, reason = outcome.status, outcome.reason
        self.health.failed(srs, status, self.now())
        log.warning("SRS %s did not answer OPTIONS: %s %s", srs, status, reason)
        for session in list(self.router.sessions.values()):
            if session.srs is not None and str(session.srs) == srs and not session.state.terminal:
                self._command(session, session.probe)

    def _fire(self) -> None:
        self.router.handle_timer(self.now())
        self._flush()

    async def _prepare(self, recording: Recording, action: PrepareAttempt) -> None:
        session = recording.session
        # After a lost session, its forks stop (and their ports go) before new ones are reserved.
        await self._media_idle(recording)
        try:
            resources = await self._resources(recording, action)
        except (SiprecError, OSError) as exc:
            reason = str(exc)
            self._command(session, lambda now: session.attempt_unavailable(action.attempt, reason, now))
            return
        self._command(session, lambda now: session.attempt_ready(action.attempt, resources, now))

    def _edge(self, target: SrsTarget) -> Edge | None:
        edge = self.config.edges.get(target.edge) if target.edge else None
        if target.edge and edge is None:
            raise LocalProtocolError(f"unknown edge {target.edge!r}")
        return edge

    async def _route(self, target: SrsTarget) -> tuple[Destination, Address]:
        """Where requests to ``target`` go (its edge's outbound proxy, or the URI resolved) and
        the address Via and Contact name (the edge's advertised one, or our listener's)."""
        assert self.ua is not None
        edge = self._edge(target)
        hop = edge.outbound_proxy if edge is not None and edge.outbound_proxy is not None else target.uri
        # SIPREC INVITEs often exceed 1300 bytes; we keep the transport the URI implies rather
        # than switch to TCP (RFC 3261 §18.1.1), because most SRSs listen on UDP only.
        destination = await self.ua.destination_for(hop)
        transport = destination.transport
        local = self.router.core.local_addresses.get(transport)
        if local is None:
            raise LocalProtocolError(f"no {transport} listener to reach {target}")
        contact_host, contact_port = local
        if edge is not None and edge.advertised_host:
            contact_host = edge.advertised_host
        return Destination(transport, destination.host, destination.port), (contact_host, contact_port)

    async def _resources(self, recording: Recording, action: PrepareAttempt) -> AttemptResources:
        target = action.target
        edge = self._edge(target)
        destination, contact = await self._route(target)
        bind = edge.bind_host if edge is not None else self.config.media_host
        advertised = edge.media_host if edge is not None else (self.config.media_advertised or bind)
        ports = await self._reserve(recording, bind)
        return AttemptResources(
            destination=destination,
            contact=contact,
            media_host=advertised,
            ports=ports,
            media_bind=bind,
            outbound_proxy=edge.outbound_proxy if edge is not None else None,
        )

    async def _reserve(self, recording: Recording, bind: str) -> dict[str, int]:
        session = recording.session
        held = self._ports.get(recording.sid)
        if held is not None and held[0] == bind:
            return held[1]
        if held is not None:
            for label in held[1]:
                await self._stop_fork(session.fork_id(label))
        ports: dict[str, int] = {}
        for label in session.labels:
            _, port = await self.media.reserve_fork_port(recording.call.call_id, session.fork_id(label), bind)
            ports[label] = port
        self._ports[recording.sid] = (bind, ports)
        return ports

    # --- media commands, in order --------------------------------------------------------------

    async def _run_media_commands(self) -> None:
        while True:
            recording, action = await self._media_queue.get()
            try:
                await self._media_action(recording, action)
            except Exception as exc:  # the media side must never take the control loop down
                # The command's name only: its fork specs carry SRTP keys.
                log.exception("media command %s of recording %s failed", type(action).__name__, recording.sid)
                if not recording.session.state.terminal:
                    self._fail(recording.session, 500, f"media: {exc}")
            finally:
                self._media_pending[recording.sid] -= 1
                if self._media_pending[recording.sid] == 0:
                    del self._media_pending[recording.sid]
                    event = self._media_drained.pop(recording.sid, None)
                    if event is not None:
                        event.set()

    async def _media_action(self, recording: Recording, action: Action) -> None:
        if isinstance(action, StartForks):
            for spec in action.forks:
                await self.media.start_fork(spec)
                recording.remotes[spec.fork_id.rsplit("/", 1)[1]] = spec.remote_rtp
        elif isinstance(action, UpdateForks):
            for spec in action.forks:
                await self.media.update_fork(spec)
                recording.remotes[spec.fork_id.rsplit("/", 1)[1]] = spec.remote_rtp
        elif isinstance(action, StopForks):
            for fork_id in action.fork_ids:
                stats = await self._stop_fork(fork_id)
                if stats is not None:
                    recording.fork_stats[fork_id.rsplit("/", 1)[1]] = stats
            if recording.session.state.terminal or set(action.fork_ids) >= set(recording.session.fork_ids):
                self._ports.pop(recording.sid, None)  # released with the forks

    async def _stop_fork(self, fork_id: str) -> ForkStats | None:
        try:
            stats: ForkStats = await self.media.stop_fork(fork_id)
        except LocalProtocolError:
            return None  # never reserved, or already stopped
        return stats

    def _fail(self, session: RecordingSession, status: int, reason: str) -> None:
        self._command(session, functools.partial(_fail_at, session, status, reason))

    async def _media_idle(self, recording: Recording) -> None:
        if self._media_pending.get(recording.sid):
            event = self._media_drained.setdefault(recording.sid, asyncio.Event())
            await event.wait()

    async def _watch_media(self) -> None:
        while True:
            event = await self.media.next_event()
            self._on_media_event(event)

    def _on_media_event(self, event: MediaEvent) -> None:
        if isinstance(event, WorkerDied):
            for fork_id in event.fork_ids:
                stream = self.streams.get(fork_id.rsplit("/", 1)[0])
                if stream is not None:
                    stream.media_lost(f"media worker {event.worker} died: {event.reason}")
                recording = self.recordings.get(fork_id.rsplit("/", 1)[0])
                if recording is not None and not recording.session.state.terminal:
                    self._fail(recording.session, 500, f"media worker {event.worker} died: {event.reason}")
        elif isinstance(event, ForkSendFailed):
            recording = self.recordings.get(event.fork_id.rsplit("/", 1)[0])
            if recording is not None:
                recording.media_problems.append(event.reason)
                if not recording.session.state.terminal:
                    # ICMP port unreachable from the SRS's media address: is its SIP side alive?
                    self._command(recording.session, recording.session.probe)

    async def fork_stats(self, recording: Recording) -> dict[str, ForkStats]:
        """Live counters per stream label (final ones once the recording ended)."""
        stats = dict(recording.fork_stats)
        if not recording.session.state.terminal:
            for label in recording.session.labels:
                with contextlib.suppress(LocalProtocolError):
                    stats[label] = await self.media.fork_stats(recording.session.fork_id(label))
        return stats


def _with_ids_of(previous: RecordingMetadata, fresh: RecordingMetadata) -> RecordingMetadata:
    """``fresh`` parties under ``previous``'s group, session and stream ids.

    RFC 7865 §6: those ids are stable for the recording's life; only the parties change.
    """
    session_id = previous.sessions[0].session_id
    pairs = zip(fresh.participant_stream_assocs, previous.participant_stream_assocs, strict=True)
    return replace(
        fresh,
        groups=previous.groups,
        sessions=previous.sessions,
        streams=previous.streams,
        participants=tuple(replace(p, session_id=session_id) for p in fresh.participants),
        participant_stream_assocs=tuple(replace(assoc, send=old.send, recv=old.recv) for assoc, old in pairs),
        session_recording_assocs=previous.session_recording_assocs,
        extensions=previous.extensions,
    )


def _fail_at(session: RecordingSession, status: int, reason: str, now: float) -> None:
    session.fail(now, status, reason)


def _update_at(session: RecordingSession, metadata: RecordingMetadata, now: float) -> None:
    session.update_metadata(metadata, now)


__all__ = [
    "Call",
    "Engine",
    "EngineConfig",
    "Party",
    "Recording",
    "RecordingError",
    "Track",
]
