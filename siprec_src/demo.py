"""``siprec-src demo``: what the product can already do, end to end on loopback.

Today (foundation stage) that is the SIPREC signaling: a recording session is set up with a
SIPREC INVITE (``Require: siprec``, Contact ``+sip.src``, multipart/mixed body with an SDP of
one ``a=sendonly`` m-line per forked leg and RFC 7865 metadata), refreshed with a re-INVITE,
and torn down with BYE, over UDP and over TCP, against a small in-process SRS that checks
what an SRS checks. The media fork and the reference SRS with recordings on disk come with
the media engine and reference-SRS issues; this command grows with them.

Exit status 0 only when every step got the answer it should.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from siprec_src.metadata import for_call, read_metadata, to_xml
from siprec_src.signaling.transport import ListenSpec
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, MultipartError, decode_multipart, encode_multipart
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import (
    AckReceived,
    DialogTerminated,
    RequestReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)


def offer_sdp(host: str, ports: tuple[int, int]) -> bytes:
    """One sendonly m-line per forked leg, labelled so the metadata can say whose voice it is."""
    lines = [
        "v=0",
        f"o=siprec-src 1 1 IN IP4 {host}",
        "s=siprec-src demo",
        f"c=IN IP4 {host}",
        "t=0 0",
    ]
    for label, port in enumerate(ports, start=1):
        lines += [
            f"m=audio {port} RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=ptime:20",
            "a=sendonly",
            f"a=label:{label}",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


def demo_metadata(call_id: str) -> bytes:
    """RFC 7865 metadata for the demo call: two participants, one labelled stream each."""
    metadata = for_call(
        call_id,
        [("sip:alice@example.com", "Alice O'Brien & Sons"), ("sip:bob@example.net", "Bob <support>")],
        [("1", 0, [1]), ("2", 1, [0])],
        datetime.now(UTC),
        os.urandom,
    )
    return to_xml(metadata)


@dataclass
class DemoSrs:
    """The checks an SRS makes on a SIPREC INVITE (RFC 7866 §6), answered in-process."""

    ua: UserAgent | None = None
    acks: int = 0
    ended: int = 0
    refusals: list[str] = field(default_factory=list)

    def __call__(self, event: UaEvent) -> None:
        if isinstance(event, AckReceived):
            self.acks += 1
        elif isinstance(event, DialogTerminated):
            self.ended += 1
        elif isinstance(event, RequestReceived) and event.request.method == "INVITE":
            self._on_invite(event)

    def _on_invite(self, event: RequestReceived) -> None:
        assert self.ua is not None
        request = event.request
        problem = self._check(request)
        if problem is not None:
            self.refusals.append(problem)
            self.ua.respond(event.server_id, 488, headers=[("Warning", f'399 siprec-demo-srs "{problem}"')])
            return
        answer = request_sdp(request).replace(b"a=sendonly", b"a=recvonly")
        self.ua.respond(event.server_id, 200, body=answer, content_type="application/sdp")

    @staticmethod
    def _check(request: Request) -> str | None:
        if "siprec" not in request.header_tokens("Require") and request.to.tag is None:
            return "no Require: siprec"
        if not any(contact.param("+sip.src") is not None for contact in request.contacts):
            return "Contact lacks +sip.src"
        try:
            parts = decode_multipart(request.content_type or "", request.body)
        except MultipartError as exc:
            return f"body: {exc.reason}"
        kinds = {part.media_type for part in parts}
        if not {"application/sdp", "application/rs-metadata+xml"} <= kinds:
            return f"body parts {sorted(kinds)} lack SDP or rs-metadata"
        for part in parts:
            if part.media_type == "application/rs-metadata+xml":
                if part.header("Content-Disposition") != "recording-session":
                    return "metadata part without Content-Disposition: recording-session"
                read_metadata(part.body)  # well formed and RFC 7865, or the INVITE is refused
        return None


def request_sdp(request: Request) -> bytes:
    for part in decode_multipart(request.content_type or "", request.body):
        if part.media_type == "application/sdp":
            return part.body
    return b""


@dataclass
class Step:
    transport: str
    what: str
    answer: str
    ok: bool


async def run_demo(out: list[str]) -> bool:
    trace: list[tuple[float, str, str, str]] = []
    start = time.monotonic()

    def tracer(name: str) -> Callable[[str, Request | Response, Destination], None]:
        def on_trace(direction: str, message: Request | Response, peer: Destination) -> None:
            line = (
                f"{message.method} {message.uri}"
                if isinstance(message, Request)
                else f"{message.status} {message.reason}"
            )
            if direction == "out":
                trace.append((time.monotonic() - start, name, str(peer.transport).upper(), line))

        return on_trace

    srs = DemoSrs()
    src_ua = UserAgent(UserAgentCore(UaConfig(user_agent="siprec-src demo")), on_trace=tracer("SRC -> SRS"))
    srs_ua = UserAgent(
        UserAgentCore(UaConfig(user_agent="siprec-src demo SRS", supported=("timer", "siprec"))),
        on_event=srs,
        on_trace=tracer("SRS -> SRC"),
    )
    srs.ua = srs_ua
    listens = [ListenSpec("udp", "127.0.0.1", 0), ListenSpec("tcp", "127.0.0.1", 0)]
    steps: list[Step] = []
    try:
        await src_ua.start(listens)
        await srs_ua.start(listens)
        for transport in ("udp", "tcp"):
            host, port = srs_ua.transport.local_address(transport)
            params: tuple[tuple[str, str | None], ...] = (("transport", "tcp"),) if transport == "tcp" else ()
            uri = SipUri("sip", host, "srs", None, port, params)
            steps += await record_once(src_ua, uri, transport)
        await asyncio.sleep(0.05)  # let the last ACK/BYE answers land in the trace
    finally:
        await src_ua.close()
        await srs_ua.close()

    out.append("SIP flow (loopback):")
    for at, who, transport, line in trace:
        out.append(f"  {at * 1000:8.1f} ms  {who:<11} {transport:<4} {line}")
    out.append("")
    out.append(f"  {'transport':<9} {'step':<34} {'answer':<28} ok")
    for step in steps:
        out.append(f"  {step.transport:<9} {step.what:<34} {step.answer:<28} {'yes' if step.ok else 'NO'}")
    ok = all(step.ok for step in steps) and srs.acks >= 4 and not srs.refusals
    out.append("")
    out.append(f"SRS saw {srs.acks} ACKs, {srs.ended} sessions ended, {len(srs.refusals)} refusals")
    out.append("demo " + ("passed" if ok else "FAILED"))
    return ok


async def record_once(ua: UserAgent, uri: SipUri, transport: str) -> list[Step]:
    steps: list[Step] = []
    host, _ = ua.transport.local_address(transport)
    destination = await ua.destination_for(uri)

    options = ua.core.create_request(
        "OPTIONS",
        uri,
        NameAddress(SipUri("sip", "src.example.com", "src")),
        NameAddress(uri),
        transport=transport,
    )
    outcome = await ua.request(options, destination, timeout=5)
    steps.append(_step(transport, "OPTIONS ping", outcome, 200))

    call_id = ua.core.new_call_id()
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", offer_sdp(host, (40000, 40002))),
            BodyPart(
                "application/rs-metadata+xml",
                demo_metadata(call_id),
                (("Content-Disposition", "recording-session"),),
            ),
        ]
    )
    invite = ua.core.create_request(
        "INVITE",
        uri,
        NameAddress(SipUri("sip", "src.example.com", "siprec-src"), "siprec-src"),
        NameAddress(uri),
        transport=transport,
        call_id=call_id,
        body=body,
        content_type=content_type,
        contact=ua.core.local_contact(transport).with_param("+sip.src"),
    )
    invite.headers.add("Require", "siprec")
    invite.headers.add("Accept", "application/sdp, application/rs-metadata, application/rs-metadata-request")
    invite_id = ua.send(invite, destination)
    outcome = await ua.wait(invite_id, timeout=5)
    steps.append(_step(transport, "SIPREC INVITE (2 streams)", outcome, 200))
    dialog_id = ua.core.dialog_of(invite_id)
    if dialog_id is None:
        return steps

    refresh = ua.send_in_dialog(dialog_id, "INVITE", body=body, content_type=content_type)
    steps.append(_step(transport, "re-INVITE (session refresh)", await ua.wait(refresh, timeout=5), 200))
    bye = ua.bye(dialog_id)
    steps.append(_step(transport, "BYE", await ua.wait(bye, timeout=5), 200))
    return steps


def _step(transport: str, what: str, outcome: object, expected: int) -> Step:
    if isinstance(outcome, Response):
        return Step(transport, what, f"{outcome.status} {outcome.reason}", outcome.status == expected)
    return Step(transport, what, str(getattr(outcome, "reason", outcome)), False)


def main() -> int:
    out: list[str] = []
    ok = asyncio.run(run_demo(out))
    print("\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
