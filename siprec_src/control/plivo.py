"""The Plivo-shaped surface: Plivo XML ``<Stream>`` documents run on a call, and Plivo's stream callbacks.

What a Plivo user already writes (seed 004, and what ``plivo.plivoxml`` produces)::

    <Response>
      <Stream bidirectional="false" audioTrack="both" streamTimeout="120"
              statusCallbackUrl="https://example.com/events" statusCallbackMethod="POST"
              contentType="audio/x-l16;rate=16000" extraHeaders="test1=12,test2=123">
        wss://yourstream.websocket.io/audiostream
      </Stream>
    </Response>

is run on a call of the sidecar by ``POST /v1/calls/{call_id}/plivo-xml``, behind the native
API's Bearer authentication and with its error shape. The body is the document itself
(``application/xml`` or ``text/xml``, UTF-8), or ``{"xml": "<Response>…"}`` as
``application/json`` for clients that only send JSON. Each ``<Stream>`` starts a WebSocket
stream in Plivo's AudioStream format (``recording/stream.py``); the answer (200) lists them,
each ``starting``, in the native stream resource's shape, and they are stopped like any stream
(``POST /v1/calls/{call_id}/streams/{sid}``, or by ending the call).

Refused, with nothing started: any other Plivo verb (``<Speak>``, ``<Dial>``, ``<Record>``…)
with 400 ``unsupported_verb`` naming it and its line (silently skipping an instruction would
leave a call unstreamed); XML that is not well-formed, a DTD or entity, a root other than
``<Response>``, elements inside ``<Stream>`` (400 ``invalid_xml``); an attribute Plivo does not
document or a value it does not allow, each with the code of ``streams/options.py``
(``invalid_extra_headers``, ``invalid_track``, ``invalid_url``, ``unknown_attribute``...), the
line, and the attribute as ``field``. A document that fails while running (the stream budget,
a second bidirectional stream) stops the streams it already started, and answers the error with
the line of the ``<Stream>`` at fault.

**Status callbacks** (``statusCallbackUrl``/``statusCallbackMethod``, form-encoded, ``POST`` by
default) carry exactly seed 004's parameters: ``Event`` (``StartStream``, ``StopStream``,
``DroppedStream``, ``Played``), ``Error`` (the reason of a ``DroppedStream``, empty otherwise),
``CallUUID``, ``From``, ``To`` (the call's parties), ``ServiceURL``, ``ExtraHeaders`` (as
written), ``StreamID`` and ``Timestamp``. As the seed says, no ``StopStream`` is sent when the
stream ends because the call ended. ``Played`` is sent each time everything a bidirectional
service queued has been played out.

They are signed the way Plivo signs (``X-Plivo-Signature-V3`` and
``X-Plivo-Signature-V3-Nonce``: base64 HMAC-SHA256 over the URL, sorted parameters and the
nonce), keyed with ``[callbacks] signing_secret`` (the sidecar has no Plivo auth token), so
``plivo.utils.signature_v3.validate_v3_signature(method, url, nonce, secret, signature,
params)`` accepts them. Without a signing secret they are not signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from siprec_src.control import native
from siprec_src.control.callbacks import Delivery, request_method, request_url
from siprec_src.control.sidecar import Sidecar, StreamNotifier
from siprec_src.control.twiml import XmlDocumentError, parse_xml
from siprec_src.errors import LocalProtocolError
from siprec_src.recording.engine import Call
from siprec_src.recording.events import (
    StreamDropped,
    StreamEvent,
    StreamPlayed,
    StreamStarted,
    StreamStopped,
)
from siprec_src.recording.stream import Stream
from siprec_src.streams.options import PlivoStreamOptions

__all__ = [
    "MAX_PLIVO_XML_CHARS",
    "PLIVO_NONCE_HEADER",
    "PLIVO_SIGNATURE_HEADER",
    "PlivoXmlError",
    "StartPlivoStream",
    "add_routes",
    "parse_plivo_xml",
    "plivo_v3_signature",
]

log = logging.getLogger(__name__)

MAX_PLIVO_XML_CHARS = 100_000  # far above any <Response> of streams; the body limit applies first
PLIVO_SIGNATURE_HEADER = "X-Plivo-Signature-V3"
PLIVO_NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
_XML_TYPES = ("application/xml", "text/xml")
# Seed 004: "No callback is sent when a call (rather than a stream) gets disconnected."
_CALL_ENDED = "call ended"


class PlivoXmlError(XmlDocumentError):
    """The Plivo XML cannot be used; ``field`` is the attribute at fault (native error shape)."""

    shape = "Plivo XML"
    invalid_code = "invalid_xml"
    too_large_code = "xml_too_large"


@dataclass(frozen=True, slots=True)
class StartPlivoStream:
    """One ``<Stream>`` of the document: the stream it asks for, and its line."""

    options: PlivoStreamOptions
    line: int


def parse_plivo_xml(text: str, *, max_chars: int = MAX_PLIVO_XML_CHARS) -> tuple[StartPlivoStream, ...]:
    """The streams a Plivo XML document starts, in order; ``PlivoXmlError`` if it cannot be run whole."""
    root = parse_xml(text, max_chars=max_chars, error=PlivoXmlError)
    if root.tag != "Response":
        raise PlivoXmlError(f"the root element must be <Response>, not <{root.tag}>", line=root.line)
    if root.attributes:
        key = next(iter(root.attributes))
        raise PlivoXmlError("<Response> takes no attributes", line=root.line, attribute=key)
    streams: list[StartPlivoStream] = []
    for element in root.children:
        if element.tag != "Stream":
            raise PlivoXmlError(
                f"<{element.tag}> is not supported by siprec-src (it runs <Stream> only); "
                "nothing was executed",
                line=element.line,
                code="unsupported_verb",
            )
        if element.children:
            raise PlivoXmlError(
                f"<Stream> holds only the WebSocket URL, not <{element.children[0].tag}>",
                line=element.children[0].line,
            )
        try:
            options = PlivoStreamOptions.from_xml(element.text, element.attributes)
        except LocalProtocolError as exc:
            raise PlivoXmlError(
                f"<Stream>: {exc}", line=element.line, attribute=exc.field, code=exc.code
            ) from None
        streams.append(StartPlivoStream(options, element.line))
    return tuple(streams)


def add_routes(app: web.Application, sidecar: Sidecar) -> None:
    """Mount ``POST /v1/calls/{call_id}/plivo-xml`` (native Bearer authentication and errors)."""
    api = PlivoXmlApi(sidecar)
    app.router.add_post("/v1/calls/{call_id}/plivo-xml", api.native.guarded(api.run_document))


class PlivoXmlApi:
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.native = native.NativeApi(sidecar)  # its authentication, errors and JSON bodies

    async def run_document(self, request: web.Request) -> web.StreamResponse:
        call = self.sidecar.call(request.match_info["call_id"])
        text = await self._document(request)
        streams = await self.run(call, parse_plivo_xml(text))
        return web.json_response({"streams": [native.stream_resource(self.sidecar, s) for s in streams]})

    async def run(self, call: Call, instructions: tuple[StartPlivoStream, ...]) -> list[Stream]:
        """Start every stream of the document, or none: a failure stops those already started.

        Callbacks are attached once all started, so a refused document sends none.
        """
        started: list[Stream] = []
        try:
            for instruction in instructions:
                try:
                    started.append(await self.sidecar.start_stream(call, instruction.options))
                except LocalProtocolError as exc:
                    raise LocalProtocolError(
                        f"Plivo XML line {instruction.line}, <Stream>: {exc}", field=exc.field, code=exc.code
                    ) from exc
        except BaseException:
            for stream in started:
                await self.sidecar.stop_stream(stream)
            raise
        for stream, instruction in zip(started, instructions, strict=True):
            if instruction.options.status_callback_url is not None:
                self.sidecar.watch_stream(stream, self._notifier(call, instruction.options))
        return started

    async def _document(self, request: web.Request) -> str:
        declared = request.headers.get("Content-Type")
        media_type = (declared or "application/xml").split(";", 1)[0].strip().lower()
        if media_type == "application/json" or media_type.endswith("+json"):
            body = await self.native.json_body(request, "PlivoXmlRequest")
            return str(body["xml"])
        if media_type not in _XML_TYPES:
            raise LocalProtocolError(
                f'the body must be application/xml (or text/xml, or JSON {{"xml": ...}}), not {media_type}',
                code="unsupported_media_type",
            )
        raw = await request.read()  # over max_body_bytes: 413
        try:
            return raw.decode(request.charset or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise PlivoXmlError(
                f"the document cannot be decoded as {request.charset or 'UTF-8'}: {exc}"
            ) from None

    # --- status callbacks -------------------------------------------------------------------

    def _notifier(self, call: Call, options: PlivoStreamOptions) -> StreamNotifier:
        url = options.status_callback_url
        assert url is not None
        method = options.status_callback_method.value
        secret = self.sidecar.settings.callbacks.signing_secret

        def notify(stream: Stream, event: StreamEvent) -> Delivery | None:
            form = callback_form(call, stream, options, event, self.sidecar.clock())
            if form is None:
                return None
            delivery = Delivery(url, method=method, form=form, event=dict(form)["Event"])
            return delivery if secret is None else sign_plivo(delivery, secret)

        return notify


def callback_form(
    call: Call, stream: Stream, options: PlivoStreamOptions, event: StreamEvent, now: datetime
) -> tuple[tuple[str, str], ...] | None:
    """Seed 004's callback parameters for ``event``, or ``None`` when Plivo sends none."""
    error = ""
    if isinstance(event, StreamStarted):
        kind = "StartStream"
    elif isinstance(event, StreamStopped):
        if event.reason == _CALL_ENDED:
            return None
        kind = "StopStream"
    elif isinstance(event, StreamDropped):
        kind, error = "DroppedStream", event.error
    elif isinstance(event, StreamPlayed) and event.name is None:
        kind = "Played"  # everything queued was played: nothing else to play on the call
    else:
        return None  # checkpoints are answered on the WebSocket (playedStream); drops are counted
    return (
        ("Event", kind),
        ("Error", error),
        ("CallUUID", call.call_id),
        ("From", call.caller.aor),
        ("To", call.callee.aor),
        ("ServiceURL", stream.url),
        ("ExtraHeaders", options.extra_headers_text),
        ("StreamID", stream.sid),
        ("Timestamp", now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"),
    )


# --- Plivo's V3 signature -------------------------------------------------------------------------


def sign_plivo(delivery: Delivery, key: str, nonce: str | None = None) -> Delivery:
    """``delivery`` with ``X-Plivo-Signature-V3`` (keyed with ``key``) and its nonce."""
    nonce = nonce if nonce is not None else str(secrets.randbelow(10**20)).zfill(20)
    signature = plivo_v3_signature(key, delivery, nonce)
    headers = (*delivery.headers, (PLIVO_SIGNATURE_HEADER, signature), (PLIVO_NONCE_HEADER, nonce))
    return Delivery(
        delivery.url,
        method=delivery.method,
        form=delivery.form,
        json=delivery.json,
        headers=headers,
        event=delivery.event,
    )


def plivo_v3_signature(key: str, delivery: Delivery, nonce: str) -> str:
    """base64(HMAC-SHA256(key, "<base>.<nonce>")), Plivo's V3 scheme, where ``<base>`` is the URL
    as requested without its query, then ``?`` and the query parameters sorted (``k=v`` joined
    by ``&``), and for a POST with a form, a ``.`` after a non-empty query and every form
    parameter sorted by name as ``namevalue``."""
    method = request_method(delivery)
    parts = urlsplit(request_url(delivery))
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = parse_qs(parts.query, keep_blank_values=True)
    sorted_query = "&".join(
        "&".join(f"{name}={value}" for value in sorted(query[name])) for name in sorted(query)
    )
    params: dict[str, Any] = {} if method == "GET" else dict(delivery.form or ())
    if params:
        base += "?" + sorted_query + ("." if sorted_query else "")
        base += "".join(f"{name}{params[name]}" for name in sorted(params))
    elif sorted_query:
        base += "?" + sorted_query
    digest = hmac.new(key.encode("utf-8"), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
