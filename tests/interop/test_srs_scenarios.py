"""Interop: SIPp plays the SIPREC SRS (scenarios in tests/interop/srs/scenarios), on loopback.

Each test runs one scenario with ``SippSrs`` and asserts SIPp's exit status (0: everything the
scenario checks held). The SRC side is, for now, a stand-in: our ``UserAgent`` sending SIPREC
INVITEs built with the functions of ``siprec_src.demo`` (multipart/mixed SDP + rs-metadata,
``Require: siprec``, Contact ``+sip.src``); failover and the 422 retry are done by the test
itself, digest auth by the core. These tests prove the scenarios right; the recording-session
tests switch the SRC to ``RecordingSession`` / ``siprec-src record`` against the same scenarios.

A scenario that cannot fail proves nothing: ``test_accept_refuses_invite_lacking`` sends INVITEs
that each lack one thing srs_accept checks (SIPp answers 488 naming it and exits 1),
``test_every_scenario_refuses_a_non_siprec_invite`` does the same for every scenario, and the
422 and auth scenarios are shown to refuse a too-short retry and wrong credentials.
``test_capture_*`` reads the traffic back with tshark for what SIPp cannot check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siprec_src.metadata import for_call, to_xml
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.auth import Credentials
from siprec_src.sip.dialog import DialogId
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Request, Response
from siprec_src.sip.multipart import BodyPart, encode_multipart
from siprec_src.sip.target import Destination
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import DialogTerminated, RequestFailed, UaConfig, UaEvent, UserAgentCore
from tests.interop.srs.capture import Capture, CapturedSip, metadata_labels, sdp_labels, siprec_problems
from tests.interop.srs.harness import (
    AUTH_PASSWORD,
    AUTH_USER,
    EXIT_CALL_FAILED,
    SippError,
    SippResult,
    SippSrs,
    TlsFiles,
)
from tests.pki import make_pki

pytestmark = pytest.mark.interop

RTP_PORTS = (40000, 40002)


# --- the stand-in SRC ---------------------------------------------------------------------------


def offer_sdp(host: str, ports: tuple[int, int]) -> bytes:
    """One sendonly m-line per forked leg, labelled so the metadata can say whose voice it is."""
    lines = ["v=0", f"o=siprec-src 1 1 IN IP4 {host}", "s=siprec-src test", f"c=IN IP4 {host}", "t=0 0"]
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
    """RFC 7865 metadata for a two-party call, names that need XML escaping included."""
    metadata = for_call(
        call_id,
        [("sip:alice@example.com", "Alice O'Brien & Sons"), ("sip:bob@example.net", "Bob <support>")],
        [("1", 0, [1]), ("2", 1, [0])],
        datetime.now(UTC),
        os.urandom,
    )
    return to_xml(metadata)


@dataclass(frozen=True)
class Offer:
    """What the stand-in SRC's INVITE carries; each flag off removes one SIPREC essential."""

    tracks: int = 2
    session_expires: int | None = 1800
    refresher: str = "uac"
    min_se: int | None = None
    require_siprec: bool = True
    src_feature_tag: bool = True
    metadata: bool = True
    disposition: bool = True
    direction: str = "sendonly"
    sdp_labels: bool = True
    xml_labels: bool = True
    srtp: bool = False  # RTP/SAVP with an SDES a=crypto line per m-line, as --secure offers


SDES_KEY = "inline:WVNfX19zZWNyZXRfX19rZXlfX19zYWx0X19fX19fX18"


def offer_body(host: str, call_id: str, offer: Offer) -> tuple[str, bytes]:
    """(Content-Type, body) of a SIPREC INVITE, built with the demo's SDP and metadata."""
    sdp = offer_sdp(host, RTP_PORTS)
    if offer.tracks == 1:
        second = sdp.index(b"m=audio", sdp.index(b"m=audio") + 1)
        sdp = sdp[:second]
        metadata = to_xml(
            for_call(
                call_id,
                [("sip:alice@example.com", "Alice"), ("sip:bob@example.net", "Bob")],
                [("1", 0, [1])],
                datetime.now(UTC),
                os.urandom,
            )
        )
    else:
        metadata = demo_metadata(call_id)
    if offer.srtp:
        crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {SDES_KEY}\r\na=sendonly".encode()
        sdp = sdp.replace(b"RTP/AVP 0 101", b"RTP/SAVP 0 101").replace(b"a=sendonly", crypto)
    sdp = sdp.replace(b"a=sendonly", f"a={offer.direction}".encode())
    if not offer.sdp_labels:
        sdp = b"".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(b"a=label:"))
    if not offer.xml_labels:
        metadata = metadata.replace(b"<label>", b"<!-- ").replace(b"</label>", b" -->")
    if not offer.metadata:
        return "application/sdp", sdp
    headers = (("Content-Disposition", "recording-session"),) if offer.disposition else ()
    return encode_multipart(
        [BodyPart("application/sdp", sdp), BodyPart("application/rs-metadata+xml", metadata, headers)]
    )


class StandInSrc:
    """Our UserAgent sending SIPREC INVITEs the way ``siprec-src demo`` builds them."""

    def __init__(
        self, transport: str, *, tls: TlsConfig | None = None, credentials: tuple[Credentials, ...] = ()
    ) -> None:
        self.transport = transport
        self.events: list[UaEvent] = []
        self.changed = asyncio.Event()
        core = UserAgentCore(UaConfig(user_agent="siprec-src interop", credentials=credentials))
        self.ua = UserAgent(core, tls=tls, on_event=self.on_event)

    def on_event(self, event: UaEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def invite(
        self,
        uri: SipUri,
        offer: Offer = Offer(),
        *,
        call_id: str | None = None,
        cseq: int = 1,
        from_: NameAddress | None = None,
    ) -> Request:
        host, _ = self.ua.transport.local_address(self.transport)
        call_id = call_id or self.ua.core.new_call_id()
        content_type, body = offer_body(host, call_id, offer)
        contact = self.ua.core.local_contact(self.transport)
        request = self.ua.core.create_request(
            "INVITE",
            uri,
            from_ or NameAddress(SipUri("sip", "src.example.com", "siprec-src"), "siprec-src"),
            NameAddress(uri),
            transport=self.transport,
            call_id=call_id,
            cseq=cseq,
            body=body,
            content_type=content_type,
            contact=contact.with_param("+sip.src") if offer.src_feature_tag else contact,
        )
        if offer.require_siprec:
            request.headers.add("Require", "siprec")
        request.headers.add(
            "Accept", "application/sdp, application/rs-metadata, application/rs-metadata-request"
        )
        if offer.session_expires is not None:
            request.headers.add("Session-Expires", f"{offer.session_expires};refresher={offer.refresher}")
        if offer.min_se is not None:
            request.headers.add("Min-SE", str(offer.min_se))
        return request

    async def destination(self, srs: SippSrs) -> Destination:
        return await self.ua.destination_for(SipUri.parse(srs.uri))

    async def send(self, request: Request, destination: Destination, timeout: float = 5) -> Response:
        outcome = await self.ua.wait(self.ua.send(request, destination), timeout=timeout)
        assert isinstance(outcome, Response), f"no answer to {request.method}: {outcome}"
        return outcome

    async def record(
        self, srs: SippSrs, offer: Offer = Offer(), *, reinvites: int = 0, bye: bool = True
    ) -> tuple[Response, DialogId]:
        """INVITE -> 200 (+ACK by the core), ``reinvites`` re-INVITEs, then BYE unless told not to."""
        request = self.invite(SipUri.parse(srs.uri), offer)
        request_id = self.ua.send(request, await self.destination(srs))
        answer = await self.ua.wait(request_id, timeout=5)
        assert isinstance(answer, Response) and answer.status == 200, f"INVITE: {answer}"
        dialog_id = self.ua.core.dialog_of(request_id)
        assert dialog_id is not None
        for number in range(reinvites):
            # Alternate a metadata update (multipart, as the first INVITE) and a pause (inactive).
            paused = replace(offer, direction="inactive") if number % 2 else offer
            host, _ = self.ua.transport.local_address(self.transport)
            content_type, body = offer_body(host, request.call_id, paused)
            refresh = request.headers.get_all("Session-Expires")  # RFC 4028 §7.4: refreshes carry it
            outcome = await self.ua.wait(
                self.ua.send_in_dialog(
                    dialog_id,
                    "INVITE",
                    body=body,
                    content_type=content_type,
                    headers=[("Session-Expires", value) for value in refresh],
                ),
                timeout=5,
            )
            assert isinstance(outcome, Response) and outcome.status == 200, f"re-INVITE {number}: {outcome}"
            assert ("a=inactive" if number % 2 else "a=recvonly") in outcome.body.decode()
        if bye:
            outcome = await self.ua.wait(self.ua.bye(dialog_id), timeout=5)
            assert isinstance(outcome, Response) and outcome.status == 200, f"BYE: {outcome}"
        return answer, dialog_id

    async def wait_for(self, predicate: Callable[[UaEvent], bool], timeout: float) -> UaEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def stand_in_src(
    transport: str = "udp", *, tls: TlsConfig | None = None, credentials: tuple[Credentials, ...] = ()
) -> AsyncIterator[StandInSrc]:
    src = StandInSrc(transport, tls=tls, credentials=credentials)
    await src.ua.start([ListenSpec(transport, "127.0.0.1", 0)])
    try:
        yield src
    finally:
        await src.ua.close()


def m_lines(answer: Response) -> list[str]:
    return [line for line in answer.body.decode().splitlines() if line.startswith("m=")]


def assert_ok(result: SippResult | None) -> None:
    assert result is not None
    assert result.ok, result.summary()


def assert_refused(result: SippResult | None) -> None:
    """SIPp counted the call as failed on a regex check (exit 1) and answered nothing with 200."""
    assert result is not None
    assert result.returncode == EXIT_CALL_FAILED and not result.timed_out, result.summary()
    assert "Failed regexp match" in result.errors, result.summary()
    assert not result.sent(200), "a refused INVITE must not be answered 200"


# --- srs_accept ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("tracks", [2, 1])
async def test_accept(transport: str, tracks: int, tmp_path: Path) -> None:
    async with stand_in_src(transport) as src, SippSrs("srs_accept", tmp_path, transport=transport) as srs:
        answer, _ = await src.record(srs, Offer(tracks=tracks), reinvites=2)
        assert len(m_lines(answer)) == tracks, answer.body.decode()
        assert answer.body.decode().count("a=recvonly") == tracks
        assert answer.headers.get("Session-Expires") == "1800;refresher=uac"
        assert "timer" in answer.header_tokens("Require")
    assert_ok(srs.result)
    assert srs.result is not None
    assert len(srs.result.received("INVITE")) == 3  # the INVITE and two re-INVITEs
    assert len(srs.result.received("ACK")) == 3


@pytest.mark.parametrize(
    ("offer", "session_expires", "require_timer"),
    [
        (Offer(session_expires=None), None, False),
        (Offer(session_expires=1800), "1800;refresher=uac", True),
        (Offer(session_expires=90, refresher="uas"), "90;refresher=uas", False),
    ],
    ids=["no-timer", "uac-refreshes", "uas-refreshes"],
)
async def test_accept_echoes_session_timer(
    offer: Offer, session_expires: str | None, require_timer: bool, tmp_path: Path
) -> None:
    async with stand_in_src() as src, SippSrs("srs_accept", tmp_path) as srs:
        answer, _ = await src.record(srs, offer, reinvites=1)
        assert answer.headers.get("Session-Expires") == session_expires
        assert ("timer" in answer.header_tokens("Require")) is require_timer
    assert_ok(srs.result)


async def test_accept_answers_srtp_offer_with_crypto(tmp_path: Path) -> None:
    # An RTP/SAVP offer (what --secure sends) gets RTP/SAVP m-lines, each with an a=crypto answer.
    async with stand_in_src() as src, SippSrs("srs_accept", tmp_path) as srs:
        answer, _ = await src.record(srs, Offer(srtp=True))
        assert [line.split(" ", 2)[2] for line in m_lines(answer)] == ["RTP/SAVP 0"] * 2
        assert answer.body.decode().count("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") == 2
    assert_ok(srs.result)


REFUSALS = {
    "no Require: siprec": (Offer(require_siprec=False), "no Require: siprec"),
    "no +sip.src": (Offer(src_feature_tag=False), "Contact lacks +sip.src"),
    "plain SDP body": (Offer(metadata=False), "body is not multipart/mixed"),
    "no Content-Disposition": (Offer(disposition=False), "no Content-Disposition: recording-session"),
    "sendrecv": (Offer(direction="sendrecv"), "no a=sendonly in the SDP"),
    "no a=label": (Offer(sdp_labels=False), "no a=label in the SDP"),
    "no <label>": (Offer(xml_labels=False), "no label element in the rs-metadata"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_accept_refuses_invite_lacking(case: str, tmp_path: Path) -> None:
    offer, reason = REFUSALS[case]
    async with stand_in_src() as src, SippSrs("srs_accept", tmp_path, time_limit=5) as srs:
        answer = await src.send(src.invite(SipUri.parse(srs.uri), offer), await src.destination(srs))
        assert answer.status == 488, answer
        assert reason in (answer.headers.get("Warning") or ""), answer.headers.get("Warning")
    assert_refused(srs.result)


@pytest.mark.parametrize(
    "scenario", ["srs_accept", "srs_422", "srs_silent", "srs_bye", "srs_503", "srs_auth"]
)
async def test_every_scenario_refuses_a_non_siprec_invite(scenario: str, tmp_path: Path) -> None:
    # Without Require: siprec every SRS scenario counts the call as failed: SIPp exits 1.
    quick = ("-set", "silence_ms", "300") if scenario == "srs_silent" else ()
    async with stand_in_src() as src, SippSrs(scenario, tmp_path, time_limit=5, extra_args=quick) as srs:
        request_id = src.ua.send(
            src.invite(SipUri.parse(srs.uri), Offer(require_siprec=False)), await src.destination(srs)
        )
        result = await srs.wait()
        src.ua.forget(request_id)
    assert result.returncode == EXIT_CALL_FAILED and not result.timed_out, result.summary()
    assert "Failed regexp match" in result.errors, result.summary()


# --- srs_422 ---------------------------------------------------------------------------------------


async def _invite_422_then_retry(src: StandInSrc, srs: SippSrs, retry: Offer) -> tuple[Response, int]:
    uri = SipUri.parse(srs.uri)
    destination = await src.destination(srs)
    first = src.invite(uri, Offer(session_expires=90, min_se=90))
    too_small = await src.send(first, destination)
    assert too_small.status == 422 and too_small.headers.get("Min-SE") == "1800"
    # RFC 4028 §7.4: same Call-ID and From tag, a higher CSeq, Session-Expires >= Min-SE.
    from_ = NameAddress.parse(first.headers.get("From") or "")
    again = src.invite(uri, retry, call_id=first.call_id, cseq=2, from_=from_)
    request_id = src.ua.send(again, destination)
    outcome = await src.ua.wait(request_id, timeout=5)
    assert isinstance(outcome, Response), outcome
    return outcome, request_id


async def test_422_then_retry_with_min_se(tmp_path: Path) -> None:
    async with stand_in_src("tcp") as src, SippSrs("srs_422", tmp_path, transport="tcp") as srs:
        answer, request_id = await _invite_422_then_retry(src, srs, Offer(session_expires=1800, min_se=1800))
        assert answer.status == 200
        assert answer.headers.get("Session-Expires") == "1800;refresher=uac"
        dialog_id = src.ua.core.dialog_of(request_id)
        assert dialog_id is not None
        await src.ua.wait(src.ua.bye(dialog_id), timeout=5)
    assert_ok(srs.result)
    assert srs.result is not None and [m.status for m in srs.result.sent()] == [422, 100, 200, 200]


async def test_422_refuses_retry_below_min_se(tmp_path: Path) -> None:
    async with stand_in_src() as src, SippSrs("srs_422", tmp_path, time_limit=5) as srs:
        answer, _ = await _invite_422_then_retry(src, srs, Offer(session_expires=900, min_se=1800))
        assert answer.status == 488
        assert "Session-Expires below Min-SE 1800" in (answer.headers.get("Warning") or "")
    assert_refused(srs.result)


# --- srs_silent: failover to the next SRS ------------------------------------------------------------


async def test_silent_srs_then_failover_to_next(tmp_path: Path) -> None:
    per_attempt = 1.0
    silent = SippSrs("srs_silent", tmp_path / "silent", extra_args=("-set", "silence_ms", "2000"))
    second = SippSrs("srs_accept", tmp_path / "second")
    async with stand_in_src() as src, silent, second:
        answer: Response | None = None
        used: list[str] = []
        for srs in (silent, second):  # what the connector's ordered SRS list does
            used.append(srs.uri)
            request_id = src.ua.send(src.invite(SipUri.parse(srs.uri)), await src.destination(srs))
            try:
                outcome = await src.ua.wait(request_id, timeout=per_attempt)
            except TimeoutError:
                continue  # per-attempt timeout: next SRS
            if isinstance(outcome, Response) and outcome.status == 200:
                answer = outcome
                dialog_id = src.ua.core.dialog_of(request_id)
                assert dialog_id is not None
                await src.ua.wait(src.ua.bye(dialog_id), timeout=5)
                break
        assert answer is not None and used == [silent.uri, second.uri]
    assert_ok(silent.result)
    assert_ok(second.result)
    assert silent.result is not None and not silent.result.sent(), "the silent SRS must never answer"
    assert len(silent.result.received("INVITE")) >= 1


# --- srs_bye: the SRS ends the session ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_srs_sends_bye(transport: str, tmp_path: Path) -> None:
    async with stand_in_src(transport) as src, SippSrs("srs_bye", tmp_path, transport=transport) as srs:
        _, dialog_id = await src.record(srs, bye=False)
        ended = await src.wait_for(
            lambda e: isinstance(e, DialogTerminated) and e.dialog_id == dialog_id, timeout=5
        )
        assert isinstance(ended, DialogTerminated) and ended.by_peer
        assert ended.request is not None and "SRS ends" in (ended.request.headers.get("Reason") or "")
    assert_ok(srs.result)


# --- srs_503 ---------------------------------------------------------------------------------------------


async def test_503_with_retry_after(tmp_path: Path) -> None:
    async with stand_in_src() as src, SippSrs("srs_503", tmp_path) as srs:
        answer = await src.send(src.invite(SipUri.parse(srs.uri)), await src.destination(srs))
        assert answer.status == 503 and answer.headers.get("Retry-After") == "30"
    assert_ok(srs.result)


# --- srs_auth --------------------------------------------------------------------------------------------


async def test_auth_digest(tmp_path: Path) -> None:
    credentials = (Credentials(AUTH_USER, AUTH_PASSWORD),)
    async with stand_in_src(credentials=credentials) as src, SippSrs("srs_auth", tmp_path) as srs:
        await src.record(srs, reinvites=1)
    assert_ok(srs.result)
    assert srs.result is not None
    retried = srs.result.received("INVITE")[1]
    assert (retried.header("Authorization") or "").startswith("Digest ")


async def test_auth_refuses_wrong_password(tmp_path: Path) -> None:
    credentials = (Credentials(AUTH_USER, "not-the-password"),)
    async with (
        stand_in_src(credentials=credentials) as src,
        SippSrs("srs_auth", tmp_path, time_limit=5) as srs,
    ):
        answer = await src.send(src.invite(SipUri.parse(srs.uri)), await src.destination(srs))
        assert answer.status == 403
        result = await srs.wait()
    assert result.returncode == EXIT_CALL_FAILED, result.summary()


# --- TLS with the test CA -------------------------------------------------------------------------------


@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual"])
async def test_tls_accept(mutual: bool, tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "srs")
    # With a CA the SRS demands a client certificate signed by it (SIPp's -tls_ca rule).
    server = TlsFiles(pki.server_cert, pki.server_key, pki.ca if mutual else None)
    client = TlsConfig(certfile=pki.client_cert, keyfile=pki.client_key, cafile=pki.ca)
    async with (
        stand_in_src("tls", tls=client) as src,
        SippSrs("srs_accept", tmp_path, transport="tls", tls=server) as srs,
    ):
        await src.record(srs, reinvites=1)
    assert_ok(srs.result)
    assert srs.result is not None and len(srs.result.received("INVITE")) == 2
    if srs.front is not None:  # SIPp without OpenSSL: the TLS front did the handshake
        assert srs.front.handshakes == 1  # INVITE, ACKs, re-INVITE and BYE on one connection
        assert srs.front.client_subjects == (["commonName=src.test"] if mutual else [])


async def test_tls_hides_sip_on_the_wire(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "srs")
    client = TlsConfig(certfile=pki.client_cert, keyfile=pki.client_key, cafile=pki.ca)
    srs = SippSrs("srs_accept", tmp_path, transport="tls", tls=TlsFiles(pki.server_cert, pki.server_key))
    async with stand_in_src("tls", tls=client) as src, Capture(tmp_path, [srs.port]) as capture, srs:
        await src.record(srs)
    assert_ok(srs.result)
    wire = capture.payload_bytes(srs.port)
    assert wire.startswith(b"\x16\x03"), wire[:16]  # a TLS handshake record opens the connection
    for plaintext in (b"INVITE sip:", b"siprec", b"rs-metadata", b"m=audio"):
        assert plaintext not in wire, f"{plaintext!r} crossed the wire in clear"


async def test_tls_refuses_untrusted_srs_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "srs")
    other = make_pki(tmp_path, "other")
    server = TlsFiles(pki.server_cert, pki.server_key)
    client = TlsConfig(certfile=other.client_cert, keyfile=other.client_key, cafile=other.ca)
    async with (
        stand_in_src("tls", tls=client) as src,
        SippSrs("srs_accept", tmp_path, transport="tls", tls=server, time_limit=4) as srs,
    ):
        request_id = src.ua.send(src.invite(SipUri.parse(srs.uri)), await src.destination(srs))
        outcome = await src.ua.wait(request_id, timeout=5)
        assert isinstance(outcome, RequestFailed), outcome
        result = await srs.stop()
    assert not result.received("INVITE"), "nothing may reach the SRS over an unverified TLS connection"


# --- tshark: what SIPp cannot check ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_capture_metadata_well_formed_and_labels_match(transport: str, tmp_path: Path) -> None:
    srs = SippSrs("srs_accept", tmp_path, transport=transport)
    async with stand_in_src(transport) as src, Capture(tmp_path, [srs.port]) as capture, srs:
        await src.record(srs, reinvites=1)
    assert_ok(srs.result)
    invites = capture.invites()
    assert len(invites) == 2, [m.start_line for m in capture.sip_messages()]
    for invite in invites:
        assert siprec_problems(invite) == [], invite.text()
    statuses = [m.status for m in capture.sip_messages() if m.status]
    assert statuses.count(200) == 3  # INVITE, re-INVITE, BYE


def _captured_invite(sdp: bytes, xml: bytes) -> CapturedSip:
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", sdp),
            BodyPart("application/rs-metadata+xml", xml, (("Content-Disposition", "recording-session"),)),
        ]
    )
    head = f"INVITE sip:srs@127.0.0.1 SIP/2.0\r\nContent-Type: {content_type}\r\n\r\n"
    return CapturedSip(1, "udp", "127.0.0.1:1", "127.0.0.1:2", head.encode() + body)


def test_capture_checks_can_fail() -> None:
    # The tshark-side checks must be able to fail too: a label mismatch and broken XML.
    sdp = offer_sdp("127.0.0.1", RTP_PORTS)
    xml = demo_metadata("call@example.com")
    assert siprec_problems(_captured_invite(sdp, xml)) == []
    assert sdp_labels(sdp) == ["1", "2"] and metadata_labels(xml) == ["1", "2"]
    renamed = xml.replace(b"<label>2</label>", b"<label>3</label>")
    assert siprec_problems(_captured_invite(sdp, renamed)) == [
        "labels differ: SDP ['1', '2'], metadata ['1', '3']"
    ]
    broken = xml.replace(b"&amp;", b"&")  # the unescaped ampersand of "O'Brien & Sons"
    (problem,) = siprec_problems(_captured_invite(sdp, broken))
    assert problem.startswith("metadata is not well-formed XML")


# --- the harness itself ---------------------------------------------------------------------------


async def test_harness_kills_sipp_at_its_time_limit(tmp_path: Path) -> None:
    # Nobody calls: SIPp would wait forever; the harness ends it at the limit and says so.
    async with SippSrs("srs_accept", tmp_path, time_limit=1.0) as srs:
        pass
    assert srs.result is not None and srs.result.timed_out and not srs.result.ok
    assert "killed at the time limit" in srs.result.summary()


async def test_harness_reports_a_broken_scenario(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text('<?xml version="1.0"?>\n<scenario name="broken"><recv request="INVITE"></scenario>\n')
    with pytest.raises(SippError, match="did not come up"):
        async with SippSrs(broken, tmp_path, time_limit=3.0):
            pass
