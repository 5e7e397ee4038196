"""A stub SRS for the media benchmark: it answers SIPREC INVITEs so that each forked stream goes
to the load generator's sink port for that stream.

The media benchmark sets siprec_src up through the real control path (issue 8): calls and
recordings are created through the sidecar's REST API, and the sidecar sends SIPREC INVITEs
here. Recording ``n`` carries the ``X-Bench-Call: n`` header (a recording ``param``); its m-line
``m`` (label ``m + 1``: inbound first, as ``both_tracks`` orders them) is answered with the sink
port of stream ``2n + m``, ``sink_base + 2 * stream`` (RTCP to the port after it). With
``secure`` it answers the offered AES_CM_128_HMAC_SHA1_80 line with a key of its own.
"""

from __future__ import annotations

from siprec_src.media.srtp import generate_key_params
from siprec_src.metadata.reader import read_siprec_body
from siprec_src.sdp.session import parse_sdp
from siprec_src.sdp.siprec import CryptoSuite, build_answer_for_srs
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.useragent import RequestReceived, UaConfig, UaEvent, UserAgentCore

SUITE = CryptoSuite("AES_CM_128_HMAC_SHA1_80")


def _srs_key() -> str:
    return generate_key_params(SUITE.value).removeprefix("inline:")


class StubSrs:
    def __init__(self, host: str, sink_base: int, *, tls: TlsConfig | None = None) -> None:
        self.host = host
        self.sink_base = sink_base
        self.tls = tls
        self.answered = 0
        self.refused = 0
        self._ua: UserAgent | None = None

    async def start(self) -> None:
        core = UserAgentCore(UaConfig(user_agent="bench-stub-srs", supported=("siprec",)))
        self._ua = UserAgent(core, tls=self.tls, on_event=self._on_event)
        transport = "tls" if self.tls is not None else "udp"
        await self._ua.start([ListenSpec(transport, self.host, 0)])

    async def close(self) -> None:
        if self._ua is not None:
            await self._ua.close()

    @property
    def uri(self) -> str:
        assert self._ua is not None
        if self.tls is not None:
            host, port = self._ua.transport.local_address("tls")
            return f"sips:srs@{host}:{port}"
        host, port = self._ua.transport.local_address("udp")
        return f"sip:srs@{host}:{port};transport=udp"

    def _on_event(self, event: UaEvent) -> None:
        if not isinstance(event, RequestReceived) or event.request.method != "INVITE":
            return  # the core answers BYE and OPTIONS itself
        assert self._ua is not None
        request = event.request
        try:
            call = int(request.headers.get("X-Bench-Call") or "")
            sdp, _ = read_siprec_body(request.content_type or "", request.body)
            offer = parse_sdp(sdp)
            ports = [self.sink_base + 2 * (2 * call + m) for m in range(len(offer.media))]
            keys = None
            if self.tls is not None:
                keys = [{SUITE: _srs_key()} for _ in offer.media]
            answer = build_answer_for_srs(offer, address=self.host, ports=ports, crypto_keys=keys)
        except Exception as exc:  # a benchmark stub: say why, and let the run fail visibly
            self.refused += 1
            self._ua.respond(event.server_id, 488, reason=f"bench stub: {exc}"[:100])
            return
        self.answered += 1
        self._ua.respond(event.server_id, 200, body=bytes(answer), content_type="application/sdp")
