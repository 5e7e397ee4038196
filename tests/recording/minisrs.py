"""A minimal in-test SRS on real loopback sockets: answers SIPREC INVITEs, counts RTP per m-line.

Not the reference SRS (that is ``siprec_src/srs``, its own issue): just enough of one to test
the engine end to end: it answers every (re-)INVITE with ``build_answer_for_srs``, one
receiving UDP socket pair per offered m-line, unprotects SRTP with the key it answered, and
keeps every packet so a test can check sequence numbers, SSRCs and RTCP.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from siprec_src.media.rtp import RtpPacket, is_rtcp
from siprec_src.media.spec import SrtpKeys
from siprec_src.media.srtp import SrtpReceiver, generate_key_params
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.sdp.session import parse_sdp
from siprec_src.sdp.siprec import CryptoSuite, build_answer_for_srs
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.message import Request
from siprec_src.sip.multipart import decode_multipart
from siprec_src.sip.useragent import (
    DialogTerminated,
    RequestReceived,
    UaConfig,
    UaEvent,
    UserAgentCore,
)


@dataclass
class MediaSink:
    """One answered m-line: an RTP socket and the RTCP socket next to it."""

    rtp: socket.socket
    rtcp: socket.socket
    key: str | None = None  # our (the SRS's) inline key; what the SRC sends is protected with its own
    receiver: SrtpReceiver | None = None
    rtcp_receiver: SrtpReceiver | None = None
    packets: list[RtpPacket] = field(default_factory=list)
    rtcp_packets: list[bytes] = field(default_factory=list)
    undecryptable: int = 0

    @property
    def port(self) -> int:
        return int(self.rtp.getsockname()[1])


@dataclass
class MiniSrs:
    listen: ListenSpec = field(default_factory=lambda: ListenSpec("udp", "127.0.0.1", 0))
    tls: TlsConfig | None = None
    answer: bool = True  # False: a silent SRS that never answers INVITEs
    invites: list[Request] = field(default_factory=list)
    sinks: list[MediaSink] = field(default_factory=list)
    byes: int = 0
    ua: UserAgent | None = None

    async def __aenter__(self) -> MiniSrs:
        core = UserAgentCore(UaConfig(user_agent="mini-srs", supported=("timer", "siprec")))
        self.ua = UserAgent(core, tls=self.tls, on_event=self._on_event)
        listens = [self.listen]
        await self.ua.start(listens)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ua is not None
        await self.ua.close()
        loop = asyncio.get_running_loop()
        for sink in self.sinks:
            for sock in (sink.rtp, sink.rtcp):
                loop.remove_reader(sock.fileno())
                sock.close()

    def uri(self, user: str = "srs") -> str:
        assert self.ua is not None
        transport = self.listen.transport
        host, port = self.ua.transport.local_address(transport)
        if transport == "tls":
            return f"sips:{user}@{host}:{port}"
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user}@{host}:{port}{suffix}"

    def _sink(self, secure: bool) -> MediaSink:
        loop = asyncio.get_running_loop()
        while True:  # an even RTP port with RTCP on the next (RFC 3550 §11)
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", 0))
            port = rtp.getsockname()[1]
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if port % 2:
                    raise OSError
                rtcp.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                rtp.close()
                rtcp.close()
        rtp.setblocking(False)
        rtcp.setblocking(False)
        sink = MediaSink(
            rtp, rtcp, generate_key_params(CryptoSuite.AES_CM_128_HMAC_SHA1_80) if secure else None
        )
        loop.add_reader(rtp.fileno(), self._read, sink, rtp)
        loop.add_reader(rtcp.fileno(), self._read, sink, rtcp)
        self.sinks.append(sink)
        return sink

    def _read(self, sink: MediaSink, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            if is_rtcp(data):
                if sink.rtcp_receiver is not None:
                    try:
                        data = sink.rtcp_receiver.unprotect_rtcp(data)
                    except Exception:
                        sink.undecryptable += 1
                        continue
                sink.rtcp_packets.append(data)
                continue
            if sink.receiver is not None:
                try:
                    data = sink.receiver.unprotect(data)
                except Exception:
                    sink.undecryptable += 1
                    continue
            sink.packets.append(RtpPacket.parse(data))

    def _on_event(self, event: UaEvent) -> None:
        assert self.ua is not None
        if isinstance(event, DialogTerminated):
            self.byes += 1
        if not isinstance(event, RequestReceived) or event.request.method != "INVITE":
            return
        request = event.request
        self.invites.append(request)
        if not self.answer:
            return
        ctype = request.content_type or ""
        if ctype.startswith("multipart/"):
            read_siprec_body(ctype, request.body)  # refuse what an SRS would refuse
            sdp = next(
                p.body for p in decode_multipart(ctype, request.body) if p.media_type == "application/sdp"
            )
        else:
            sdp = request.body
        offer = parse_sdp(sdp)
        secure = any(m.proto.upper() == "RTP/SAVP" for m in offer.media)
        if event.dialog_id is None or not self.sinks:
            sinks = [self._sink(secure) for _ in offer.media]
        else:
            sinks = self.sinks[-len(offer.media) :]
        keys = (
            [{CryptoSuite.AES_CM_128_HMAC_SHA1_80: s.key.removeprefix("inline:")} for s in sinks]
            if secure
            else None
        )
        answer = build_answer_for_srs(
            offer, address="127.0.0.1", ports=[s.port for s in sinks], crypto_keys=keys
        )
        if secure:
            for sink, media in zip(sinks, offer.media, strict=True):
                chosen = next(c for c in media.crypto if c.suite.upper() == "AES_CM_128_HMAC_SHA1_80")
                their = SrtpKeys(chosen.suite, chosen.key_params[0])
                if sink.receiver is None:
                    sink.receiver = SrtpReceiver(their)
                    sink.rtcp_receiver = SrtpReceiver(their)
        self.ua.respond(event.server_id, 200, body=bytes(answer), content_type="application/sdp")
