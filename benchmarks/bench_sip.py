"""SIP signalling benchmark: codec speed on a realistic SIPREC INVITE, and loopback transaction rates.

Run ``python -m benchmarks.bench_sip [--quick] [--out DIR]`` from the checkout. It prints a table and writes
``sip-<YYYYMMDD-HHMMSS>-<host>.json`` to ``DIR`` (default ``benchmarks/results``).

What is measured:

- the codec, with ``time.perf_counter_ns`` over N iterations, repeated 5 times, median taken:
  parse and serialize of a SIPREC INVITE (RFC 7866 §9.1: multipart/mixed with an SRTP SDP offer
  and RFC 7865 metadata) and of its 200 OK, a parse+serialize round trip, and
  ``decode_multipart`` of the INVITE body;
- transactions on loopback: two ``UserAgent``s in this process on 127.0.0.1; OPTIONS answered
  by the UAS core with a window of K requests in flight, and full INVITE/200/ACK/BYE/200
  dialogs with the SIPREC body, over UDP and TCP. CPU time is ``time.process_time`` of the
  whole process, so it is the UAC and the UAS together.

Absolute numbers only: nothing here passes or fails. TCP connection setup happens before the
clock starts (one warm-up request), so the figures are for a warm connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import RESULTS_DIR, Figure, ParamValue, format_table, machine, write_report
from siprec_src import __version__
from siprec_src.signaling.transport import ListenSpec
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import Headers, NameAddress
from siprec_src.sip.message import Request, Response, parse_message, response_to
from siprec_src.sip.multipart import BodyPart, decode_multipart, encode_multipart
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri, parse_uri
from siprec_src.sip.useragent import RequestReceived, UaConfig, UaEvent, UserAgentCore


@dataclass(frozen=True, slots=True)
class Counts:
    """How much work each benchmark does; ``QUICK`` finishes in about 5 s, ``FULL`` under 60 s."""

    codec_iterations: int
    repeats: int
    options: int
    options_window: int
    dialogs: int
    dialogs_window: int


QUICK = Counts(
    codec_iterations=500, repeats=5, options=500, options_window=50, dialogs=200, dialogs_window=20
)
FULL = Counts(
    codec_iterations=2000, repeats=5, options=5000, options_window=50, dialogs=2000, dialogs_window=20
)

# --- the SIPREC messages ----------------------------------------------------------------------

# RFC 7866 §8.1.1: one m-line per recorded stream, sendonly from the SRC, each with a label the
# metadata's <stream> points at. SDES keys (RFC 4568) for both common suites.
SDP_OFFER = (
    "v=0\r\n"
    "o=SRC 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    "s=SIPREC\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/SAVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:49171\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32\r\n"
    "a=sendonly\r\n"
    "a=label:1\r\n"
    "m=audio 49172 RTP/SAVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:49173\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^20|1:32\r\n"
    "a=sendonly\r\n"
    "a=label:2\r\n"
).encode("ascii")

SDP_ANSWER = (
    "v=0\r\n"
    "o=SRS 1827364510 1827364510 IN IP4 192.0.2.20\r\n"
    "s=SIPREC\r\n"
    "c=IN IP4 192.0.2.20\r\n"
    "t=0 0\r\n"
    "m=audio 30000 RTP/SAVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:30001\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n"
    "a=recvonly\r\n"
    "a=label:1\r\n"
    "m=audio 30002 RTP/SAVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:30003\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KHgpJnFjQVxdOzVhM2FWdTZVaTcqbTBMX3hGfFhW|2^20|1:32\r\n"
    "a=recvonly\r\n"
    "a=label:2\r\n"
).encode("ascii")

# RFC 7865 §6 metadata for a two-party call: Alice sends stream label 1 and receives label 2.
# Written by hand until the metadata module exists.
METADATA = """\
<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <group group_id="7+OTCyoxTmqmqyA/1weDAg==">
    <associate-time>2024-05-14T09:12:07Z</associate-time>
  </group>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
    <group-ref>7+OTCyoxTmqmqyA/1weDAg==</group-ref>
    <start-time>2024-05-14T09:12:07Z</start-time>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:alice@atlanta.example.com">
      <name xml:lang="en">Alice</name>
    </nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:bob@biloxi.example.com">
      <name xml:lang="en">Bob</name>
    </nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>1</label>
  </stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <label>2</label>
  </stream>
  <sessionrecordingassoc session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2024-05-14T09:12:07Z</associate-time>
  </sessionrecordingassoc>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2024-05-14T09:12:07Z</associate-time>
  </participantsessionassoc>
  <participantsessionassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2024-05-14T09:12:07Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send>
    <recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send>
    <recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
</recording>
""".replace("\n", "\r\n").encode("utf-8")

BOUNDARY = "siprec-boundary-5f1c9e7a"


def siprec_body() -> tuple[str, bytes]:
    """The RFC 7866 §9.1 offer body: (Content-Type value, multipart/mixed bytes)."""
    return encode_multipart(
        [
            BodyPart("application/sdp", SDP_OFFER),
            BodyPart(
                "application/rs-metadata+xml", METADATA, (("Content-Disposition", "recording-session"),)
            ),
        ],
        boundary=BOUNDARY,
    )


def siprec_invite() -> Request:
    """A SIPREC INVITE as an SRC sends it: RFC 7866 §6.1.1 Require siprec, Contact with +sip.src."""
    content_type, body = siprec_body()
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK7c1d3b9e0a5f42e6a1b0c2d3;rport"),
            ("Max-Forwards", "70"),
            ("From", '"Recording Client" <sip:src@src.example.com>;tag=6b8f1e2d4c3a5978'),
            ("To", "<sip:srs@srs.example.com>"),
            ("Call-ID", "2f9d81c4a7b35e60d1c8f4a2b9e07c13@192.0.2.10"),
            ("CSeq", "101 INVITE"),
            ("Contact", "<sip:siprec-src@192.0.2.10:5060>;+sip.src"),
            ("Require", "siprec"),
            ("Supported", "timer"),
            ("Session-Expires", "1800;refresher=uac"),
            ("Min-SE", "90"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
            ("Accept", "application/sdp, application/rs-metadata+xml"),
            ("User-Agent", f"siprec_src/{__version__}"),
            ("Content-Type", content_type),
        ]
    )
    uri = parse_uri("sip:srs@srs.example.com")
    return Request("INVITE", uri, headers, body)


def siprec_ok(invite: Request) -> Response:
    """The SRS's 200 OK: an SDP answer receiving both streams, session timer confirmed (RFC 4028 §9)."""
    response = response_to(
        invite, 200, to_tag="93c1f0e8a2b4d675", body=SDP_ANSWER, content_type="application/sdp"
    )
    for name, value in (
        ("Contact", "<sip:srs@192.0.2.20:5060>"),
        ("Require", "timer"),
        ("Session-Expires", "1800;refresher=uac"),
        ("Supported", "timer, siprec"),
        ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
        ("Server", "example-srs/2.1"),
    ):
        response.headers.add(name, value)
    return response


# --- codec micro-benchmarks ---------------------------------------------------------------------


def _time_per_call(operation: Callable[[], object], iterations: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the nanoseconds one call of ``operation`` takes."""
    for _ in range(min(iterations, 50)):
        operation()  # warm-up: first-call caches, branch predictors
    samples: list[float] = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(iterations):
            operation()
        samples.append((time.perf_counter_ns() - start) / iterations)
    return statistics.median(samples)


def bench_codec(iterations: int, repeats: int = 5) -> list[Figure]:
    """Parse/serialize speed of the SIPREC INVITE and its 200 OK, and multipart decoding."""
    invite = siprec_invite()
    invite_bytes = bytes(invite)
    ok = siprec_ok(invite)
    ok_bytes = bytes(ok)
    content_type = invite.content_type or ""
    operations: list[tuple[str, Callable[[], object], int]] = [
        ("invite.parse", lambda: parse_message(invite_bytes), len(invite_bytes)),
        ("invite.serialize", lambda: bytes(invite), len(invite_bytes)),
        ("ok.parse", lambda: parse_message(ok_bytes), len(ok_bytes)),
        ("ok.serialize", lambda: bytes(ok), len(ok_bytes)),
        ("invite.roundtrip", lambda: bytes(parse_message(invite_bytes)), len(invite_bytes)),
        ("invite.decode_multipart", lambda: decode_multipart(content_type, invite.body), len(invite.body)),
    ]
    figures: list[Figure] = []
    for name, operation, size in operations:
        ns = _time_per_call(operation, iterations, repeats)
        params: dict[str, ParamValue] = {"iterations": iterations, "repeats": repeats, "bytes": size}
        figures.append(Figure(f"{name}.time", ns / 1000, "µs/msg", params))
        figures.append(Figure(f"{name}.rate", 1e9 / ns, "msg/s", params))
    return figures


# --- loopback transactions ----------------------------------------------------------------------


class AnsweringSrs:
    """The UAS's transaction user: answers every INVITE with 200 and the SDP answer.

    OPTIONS and BYE need nothing from it: the core answers those itself.
    """

    def __init__(self) -> None:
        self.ua: UserAgent | None = None

    def __call__(self, event: UaEvent) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            assert self.ua is not None
            self.ua.respond(event.server_id, 200, body=SDP_ANSWER, content_type="application/sdp")


def _ignore(event: UaEvent) -> None:
    """The UAC waits on request ids; its events would only pile up in a queue."""


async def _loopback_pair(transport: str) -> tuple[UserAgent, UserAgent, Destination]:
    srs = AnsweringSrs()
    uac = UserAgent(UserAgentCore(), on_event=_ignore)
    uas = UserAgent(UserAgentCore(UaConfig(supported=("timer", "siprec"))), on_event=srs)
    srs.ua = uas
    await uac.start([ListenSpec(transport, "127.0.0.1", 0)])
    await uas.start([ListenSpec(transport, "127.0.0.1", 0)])
    host, port = uas.transport.local_address(transport)
    return uac, uas, Destination(transport, host, port)


def _srs_uri(destination: Destination) -> SipUri:
    params: tuple[tuple[str, str | None], ...] = (
        (("transport", "tcp"),) if destination.transport == "tcp" else ()
    )
    return SipUri("sip", destination.host, "srs", None, destination.port, params)


async def _run_window(work: Callable[[], Any], count: int, window: int) -> tuple[int, int, float, float]:
    """Run ``count`` calls of the coroutine function ``work`` with ``window`` of them in flight.

    Returns (succeeded, failed, wall seconds, CPU seconds).
    """
    remaining = count
    succeeded = 0

    async def worker() -> None:
        nonlocal remaining, succeeded
        while remaining > 0:
            remaining -= 1
            if await work():
                succeeded += 1

    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, count)):
            group.create_task(worker())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return succeeded, count - succeeded, wall, cpu


def _rate_figures(
    name: str, unit: str, transport: str, count: int, window: int, result: tuple[int, int, float, float]
) -> list[Figure]:
    succeeded, failed, wall, cpu = result
    params: dict[str, ParamValue] = {
        "transport": transport,
        "count": count,
        "window": window,
        "succeeded": succeeded,
        "failed": failed,
        "wall_s": round(wall, 4),
    }
    return [
        Figure(f"{name}.rate", succeeded / wall if wall > 0 else 0.0, f"{unit}/s", params),
        Figure(f"{name}.cpu", cpu / max(succeeded, 1) * 1000, f"CPU s/1000 {unit}", params),
    ]


async def bench_options(transport: str, count: int, window: int) -> list[Figure]:
    """Completed OPTIONS transactions per second, ``window`` in flight, answered by the UAS core."""
    uac, uas, destination = await _loopback_pair(transport)
    uri = _srs_uri(destination)
    from_ = NameAddress(SipUri("sip", "src.example.com", "src"))

    async def one_options() -> bool:
        options = uac.core.create_request("OPTIONS", uri, from_, NameAddress(uri), transport=transport)
        try:
            outcome = await uac.request(options, destination, timeout=10)
        except TimeoutError:
            return False
        return isinstance(outcome, Response) and outcome.status == 200

    try:
        await one_options()  # warm-up; for TCP this opens the connection
        result = await _run_window(one_options, count, window)
    finally:
        await uac.close()
        await uas.close()
    return _rate_figures(f"options_{transport}", "tx", transport, count, window, result)


async def bench_dialogs(transport: str, count: int, window: int) -> list[Figure]:
    """Full SIPREC dialogs per second: INVITE (multipart body) / 200 / ACK, then BYE / 200."""
    uac, uas, destination = await _loopback_pair(transport)
    uri = _srs_uri(destination)
    from_ = NameAddress(SipUri("sip", "src.example.com", "src"), "Recording Client")
    content_type, body = siprec_body()

    async def one_dialog() -> bool:
        invite = uac.core.create_request(
            "INVITE",
            uri,
            from_,
            NameAddress(uri),
            transport=transport,
            body=body,
            content_type=content_type,
            contact=uac.core.local_contact(transport).with_param("+sip.src"),
        )
        invite.headers.add("Require", "siprec")  # RFC 7866 §6.1.1
        try:
            invite_id = uac.send(invite, destination)
            outcome = await uac.wait(invite_id, timeout=10)
            dialog_id = uac.core.dialog_of(invite_id)
            if not isinstance(outcome, Response) or outcome.status != 200 or dialog_id is None:
                return False
            bye_outcome = await uac.wait(uac.bye(dialog_id), timeout=10)
        except TimeoutError:
            return False
        return isinstance(bye_outcome, Response) and bye_outcome.status == 200

    try:
        await one_dialog()
        result = await _run_window(one_dialog, count, window)
    finally:
        await uac.close()
        await uas.close()
    return _rate_figures(f"dialogs_{transport}", "dialog", transport, count, window, result)


async def bench_loopback(counts: Counts) -> list[Figure]:
    figures: list[Figure] = []
    for transport in ("udp", "tcp"):
        figures += await bench_options(transport, counts.options, counts.options_window)
    for transport in ("udp", "tcp"):
        figures += await bench_dialogs(transport, counts.dialogs, counts.dialogs_window)
    return figures


# --- running and reporting ----------------------------------------------------------------------


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """uvloop when it is installed (the ``uvloop`` extra), else the default asyncio loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop, "asyncio"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"


def run(counts: Counts) -> tuple[list[Figure], str]:
    """Every benchmark; returns the figures and the name of the event loop used."""
    figures = bench_codec(counts.codec_iterations, counts.repeats)
    factory, loop_name = event_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        figures += runner.run(bench_loopback(counts))
    return figures, loop_name


def build_report(figures: Sequence[Figure], counts: Counts, loop_name: str, *, quick: bool) -> dict[str, Any]:
    invite = siprec_invite()
    return {
        **machine("sip"),
        "loop": loop_name,
        "quick": quick,
        "counts": asdict(counts),
        "messages": {
            "invite_bytes": len(bytes(invite)),
            "invite_body_bytes": len(invite.body),
            "ok_bytes": len(bytes(siprec_ok(invite))),
        },
        "figures": [asdict(figure) for figure in figures],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts, about 5 s")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON report")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    figures, loop_name = run(counts)
    report = build_report(figures, counts, loop_name, quick=args.quick)
    print(
        f"{report['host']}  Python {report['python']}  loop {loop_name}  {report['cpu_count']} CPUs  "
        f"INVITE {report['messages']['invite_bytes']} bytes"
    )
    print(format_table(figures))
    print(f"wrote {write_report(report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
