"""``siprec-src demo``: record a synthetic call end to end on loopback, over TLS + SRTP, and check it.

What runs, all in this process and on 127.0.0.1 only:

1. a throwaway PKI (``siprec_src.pki``): a CA and a certificate for 127.0.0.1;
2. the reference SRS (``siprec_src.srs``) listening for SIP over TLS, writing to ``OUT/recordings``;
3. the SRC engine (``siprec_src.recording.Engine``, media in a worker process), trusting that CA;
4. a two-party call (Alice calls Bob) whose legs carry different tones (``siprec_src.synthetic``:
   440 Hz on the inbound leg, Alice's voice; 1250 Hz on the outbound leg, Bob's), sent as RTP to the
   call's tap ports as a PBX would, recorded with ``both_tracks`` over SIPS and SRTP (SDES,
   AES_CM_128_HMAC_SHA1_80) for a few seconds, then stopped (BYE).

It prints the SIP flow the SRS logged, a table per stream (whose voice the metadata says it is,
packets sent by the SRC vs received and lost at the SRS, the tone found in the WAV), the output
files, and writes ``OUT/demo.png`` (waveform and spectrogram of each recorded track).

Exit status 0 only when every stream landed in the right file: the dominant frequency of each
WAV is its leg's tone, the metadata names the right party as the sender, and the SRS lost less
than 1 % of what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siprec_src.errors import SiprecError
from siprec_src.media.engine import MediaConfig
from siprec_src.media.spec import Leg
from siprec_src.recording.call import Party, Track
from siprec_src.recording.connector import connector_for
from siprec_src.recording.engine import Engine, EngineConfig, Recording
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.sip.message import Request, Response
from siprec_src.sip.target import Destination
from siprec_src.srs.plot import PlotUnavailableError, dominant_frequency, plot_tracks
from siprec_src.srs.server import SessionRecord, SrsServer
from siprec_src.synthetic import TONES, SyntheticLeg, play

HOST = "127.0.0.1"
CALLER = Party("sip:alice@example.com", "Alice")
CALLEE = Party("sip:bob@example.net", "Bob")
SENDER_OF = {Leg.INBOUND: CALLER, Leg.OUTBOUND: CALLEE}  # RFC 7865 participantstreamassoc
FREQUENCY_TOLERANCE = 0.03  # relative; the FFT bin of a 4 s track is 0.25 Hz wide
MAX_LOSS = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", metavar="DIR", help="where files go (demo-output)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of audio (default 4)")
    parser.add_argument(
        "--plain", action="store_true", help="SIP over UDP and plain RTP instead of TLS + SRTP"
    )


@dataclass
class StreamCheck:
    label: str
    leg: Leg
    voice_of: str  # who the SRS's metadata says is speaking on this stream
    expected_voice: str
    srtp_suite: str | None
    sent: int
    received: int
    lost: int
    jitter_ms: float
    wav: Path
    seconds: float
    frequency: float

    @property
    def expected_frequency(self) -> float:
        return TONES[self.leg]

    @property
    def problems(self) -> list[str]:
        found = []
        if abs(self.frequency - self.expected_frequency) > FREQUENCY_TOLERANCE * self.expected_frequency:
            found.append(
                f"stream {self.label}: the WAV's tone is {self.frequency:.0f} Hz, "
                f"the {self.leg.value} leg sent {self.expected_frequency:.0f} Hz"
            )
        if self.voice_of != self.expected_voice:
            found.append(f"stream {self.label}: metadata says {self.voice_of}, it is {self.expected_voice}")
        if self.sent == 0 or self.lost > MAX_LOSS * self.sent or self.received < (1 - MAX_LOSS) * self.sent:
            found.append(
                f"stream {self.label}: {self.sent} packets sent, {self.received} received, {self.lost} lost"
            )
        return found


@dataclass
class DemoResult:
    secure: bool
    srs_uri: str
    flow: list[tuple[str, str]] = field(default_factory=list)
    streams: list[StreamCheck] = field(default_factory=list)
    session_json: Path | None = None
    png: Path | None = None
    problems: list[str] = field(default_factory=list)


async def run_demo(out: Path, *, duration: float = 4.0, secure: bool = True) -> DemoResult:
    from siprec_src.pki import make_pki  # noqa: PLC0415 (cryptography: the `demo` extra)

    out.mkdir(parents=True, exist_ok=True)
    recordings = out / "recordings"
    if secure:
        (out / "pki").mkdir(exist_ok=True)
        pki = make_pki(out / "pki", "demo")
        srs_tls: TlsConfig | None = TlsConfig(certfile=pki.server_cert, keyfile=pki.server_key)
        src_tls: TlsConfig | None = TlsConfig(cafile=pki.ca)
        listen = [ListenSpec("tls", HOST, 0)]
    else:
        srs_tls = src_tls = None
        listen = [ListenSpec("udp", HOST, 0)]
    flow: list[tuple[str, str]] = []
    loop = asyncio.get_running_loop()
    began = loop.time()

    def trace(direction: str, message: Request | Response, peer: Destination) -> None:
        # The SRS's view of the wire: what it received from the SRC ("in") and answered ("out").
        arrow = "SRC -> SRS" if direction == "in" else "SRS -> SRC"
        flow.append((f"{loop.time() - began:6.3f}s {arrow}", _summary(message)))

    async with SrsServer(listen, recordings, tls=srs_tls, media_host=HOST, on_sip_trace=trace) as srs:
        srs_uri = srs.uri("tls" if secure else "udp")
        result = DemoResult(secure=secure, srs_uri=srs_uri)
        config = EngineConfig(
            sip_listen=(ListenSpec("udp", HOST, 0), ListenSpec("tcp", HOST, 0)),
            tls=src_tls,
            media=MediaConfig(workers=1),
            media_host=HOST,
            from_uri="sip:siprec-src@127.0.0.1",
        )
        async with Engine(config) as engine:
            connector = connector_for("demo", [srs_uri], secure=secure, attempt_timeout=5.0)
            call = await engine.open_call(caller=CALLER, callee=CALLEE)
            recording = await call.record(connector=connector, track=Track.BOTH, name="demo")
            await recording.wait_started(timeout=10)
            await _play_call(call.taps, duration)
            await asyncio.sleep(0.1)  # the last packets cross the worker before the BYE
            sent = await engine.fork_stats(recording)
            await recording.stop("demo finished")
            await call.close()
        record = await srs.next_ended(timeout=10)
    result.session_json = record.json_path
    result.flow = flow
    result.streams = _checks(recording, record, {label: s.packets_sent for label, s in sent.items()})
    for check in result.streams:
        result.problems += check.problems
    if len(result.streams) != 2:
        result.problems.append(f"the SRS recorded {len(result.streams)} streams, not 2")
    try:
        result.png = plot_tracks(
            [
                (
                    f"stream {c.label}: {c.voice_of} ({c.leg.value} leg, {c.expected_frequency:.0f} Hz sent)",
                    c.wav,
                )
                for c in result.streams
            ],
            out / "demo.png",
            title="siprec-src demo: what the reference SRS recorded",
        )
    except PlotUnavailableError as exc:
        result.problems.append(str(exc))
    return result


async def _play_call(taps: dict[Leg, tuple[str, int]], duration: float) -> None:
    """The PBX's part: a copy of each leg's RTP to the call's tap ports, paced in real time."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    sender.setblocking(False)

    def send(leg: Leg, packet: bytes) -> None:
        with contextlib.suppress(BlockingIOError):
            sender.sendto(packet, taps[leg])

    try:
        await play([SyntheticLeg(Leg.INBOUND), SyntheticLeg(Leg.OUTBOUND)], send, duration)
    finally:
        sender.close()


def _summary(message: Request | Response) -> str:
    """One line per SIP message: what a SIPREC reader looks for in it."""
    if isinstance(message, Request):
        line = f"{message.method} {message.uri}"
    else:
        line = f"{message.status} {message.reason} ({message.cseq.method})"
    details = []
    if "siprec" in message.header_tokens("Require"):
        details.append("Require: siprec")
    content_type = (message.content_type or "").split(";")[0]
    if content_type:
        details.append(content_type)
    expires = message.headers.get("Session-Expires")
    if expires:
        details.append(f"Session-Expires: {expires}")
    return line + (f"  [{', '.join(details)}]" if details else "")


def _checks(recording: Recording, record: SessionRecord, sent: dict[str, int]) -> list[StreamCheck]:
    document: dict[str, Any] = json.loads(record.json_path.read_text())
    legs = {label: leg for label, leg, _ in recording.streams}
    checks = []
    for stream in document["streams"]:
        label = stream["label"]
        leg = legs.get(label)
        if leg is None:
            continue
        stats = stream.get("stats") or {}
        wav = record.wav_path(label)
        samples, rate = _read_wav(wav)
        voices = stream.get("voice_of") or []
        checks.append(
            StreamCheck(
                label=label,
                leg=leg,
                voice_of=", ".join(v.get("name") or v.get("aor") or "?" for v in voices) or "nobody",
                expected_voice=SENDER_OF[leg].name or SENDER_OF[leg].aor,
                srtp_suite=stream.get("srtp_suite"),
                sent=sent.get(label, 0),
                received=int(stats.get("packets", 0)),
                lost=int(stats.get("lost", 0)),
                jitter_ms=float(stats.get("jitter_ms", 0.0)),
                wav=wav,
                seconds=len(samples) / rate if rate else 0.0,
                frequency=dominant_frequency(samples, rate) if len(samples) else 0.0,
            )
        )
    return checks


def _read_wav(path: Path) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
    if not path.exists():
        return np.zeros(0, dtype=np.int16), 8000
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def format_result(result: DemoResult) -> str:
    mode = "SIP over TLS, SRTP (SDES)" if result.secure else "SIP over UDP, plain RTP"
    lines = [f"siprec-src demo: a two-party call recorded with both_tracks to {result.srs_uri} ({mode})", ""]
    lines.append("SIP flow (as the SRS saw it on the wire):")
    lines += [f"  {when}  {what}" for when, what in result.flow] or ["  (nothing)"]
    lines.append("")
    header = (
        "stream",
        "leg",
        "voice of",
        "SRTP",
        "sent",
        "received",
        "lost",
        "jitter",
        "tone",
        "sent tone",
        "ok",
    )
    rows = [
        (
            c.label,
            c.leg.value,
            c.voice_of,
            c.srtp_suite or "-",
            str(c.sent),
            str(c.received),
            str(c.lost),
            f"{c.jitter_ms:.2f} ms",
            f"{c.frequency:.0f} Hz",
            f"{c.expected_frequency:.0f} Hz",
            "yes" if not c.problems else "NO",
        )
        for c in result.streams
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("")
    lines.append("files:")
    for c in result.streams:
        lines.append(f"  {c.wav}  ({c.seconds:.2f} s, {c.voice_of})")
    if result.session_json is not None:
        lines.append(f"  {result.session_json}  (metadata, SIP, per-stream statistics)")
    if result.png is not None:
        lines.append(f"  {result.png}  (waveform and spectrogram of each track)")
    lines.append("")
    if result.problems:
        lines += ["FAILED:", *(f"  {p}" for p in result.problems)]
    else:
        lines.append("OK: each leg's tone is in its own file, under the right party's name.")
    return "\n".join(lines)


def main(args: argparse.Namespace | None = None) -> int:
    if args is None:
        parser = argparse.ArgumentParser(prog="siprec-src demo")
        add_arguments(parser)
        args = parser.parse_args([])
    try:
        result = asyncio.run(run_demo(Path(args.out), duration=args.duration, secure=not args.plain))
    except ImportError as exc:
        print(
            f"siprec-src demo: {exc} (install the demo extra: pip install 'siprec_src[demo]')",
            file=sys.stderr,
        )
        return 1
    except (SiprecError, OSError, TimeoutError) as exc:
        print(f"siprec-src demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0 if not result.problems else 1
