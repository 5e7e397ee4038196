"""Plivo XML ``<Stream>`` documents run on a call, and Plivo's stream callbacks, on loopback.

The documents are written by the official ``plivo`` helper library (``plivoxml``) and posted to
``POST /v1/calls/{id}/plivo-xml`` of the whole sidecar application (the world of
test_streams_api.py: real Engine, WebSocket services, callback receiver). The callbacks'
``X-Plivo-Signature-V3`` is checked with ``plivo.utils.validate_v3_signature``, as a Plivo
application checks it.

Covers: the reader (what ``plivoxml`` writes, seed 004's example, every refusal with its line,
attribute and code, DTDs refused by the shared safe parser); a document's streams reaching
the service (start message with ``extra_headers``, L16 16 kHz media of the call's audio) as
``application/xml``, ``text/xml`` and JSON; ``StartStream``, ``StopStream``, ``DroppedStream``
(with Plivo's error words) and ``Played`` with exactly seed 004's parameters, by POST and GET,
signed; ``streamTimeout``; no ``StopStream`` when the call ends; unsupported verbs refused
naming the verb; a document that fails midway stopping the streams it started and sending no
callback. Not covered here: the stream itself (tests/recording/test_stream.py).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from plivo import plivoxml
from plivo.utils import validate_v3_signature

from siprec_src.control.callbacks import Delivery, request_url
from siprec_src.control.plivo import (
    PLIVO_NONCE_HEADER,
    PLIVO_SIGNATURE_HEADER,
    PlivoXmlError,
    StartPlivoStream,
    parse_plivo_xml,
    plivo_v3_signature,
)
from siprec_src.media.spec import Leg
from siprec_src.streams.options import CallbackMethod, PlivoAudioTrack, PlivoContentType, PlivoStreamOptions
from tests.control.test_streams_api import (
    ALICE,
    BOB,
    SECRET,
    TIMEOUT,
    Received,
    World,
    assert_error,
    send_rtp,
    world,
)

SEED_EXAMPLE = """<Response>
\t<Stream>wss://yourstream.websocket.io/audiostream</Stream>
</Response>"""


def plivo_signed(received: Received, secret: str = SECRET) -> bool:
    """What a Plivo application runs on each callback it receives."""
    params = dict(received.params) if received.method == "POST" else None
    return bool(
        validate_v3_signature(
            received.method,
            received.url,
            received.headers[PLIVO_NONCE_HEADER],
            secret,
            received.headers[PLIVO_SIGNATURE_HEADER],
            params,
        )
    )


async def run_xml(
    w: World, call_id: str, document: str, content_type: str = "application/xml"
) -> tuple[int, Any]:
    status, body, _ = await w.native(
        "POST",
        f"/v1/calls/{call_id}/plivo-xml",
        data=document.encode(),
        headers={"Content-Type": content_type},
    )
    return status, body


def callback_fields(received: Received) -> dict[str, str]:
    fields = dict(received.params)
    fields.pop("tenant", None)  # the callback URL's own query (GET)
    assert fields.pop("Timestamp").endswith("Z")
    return fields


# --- the reader --------------------------------------------------------------------------------------


def test_what_the_helper_library_writes_reads_into_stream_options() -> None:
    element = plivoxml.StreamElement(
        "wss://bot.example.com/audio?a=1&b=2",
        bidirectional=False,
        audioTrack="both",
        streamTimeout=120,
        statusCallbackUrl="https://example.com/events?x=1&y=2",
        statusCallbackMethod="GET",
        contentType="audio/x-l16;rate=16000",
        extraHeaders="test1=12,test2=123",
        keepCallAlive=True,
    )
    document = plivoxml.ResponseElement().add(element).to_string()
    assert parse_plivo_xml(document) == (
        StartPlivoStream(
            PlivoStreamOptions(
                url="wss://bot.example.com/audio?a=1&b=2",
                audio_track=PlivoAudioTrack.BOTH,
                stream_timeout=120,
                status_callback_url="https://example.com/events?x=1&y=2",
                status_callback_method=CallbackMethod.GET,
                content_type=PlivoContentType.L16_16K,
                extra_headers=(("test1", "12"), ("test2", "123")),
                keep_call_alive=True,
            ),
            line=2,
        ),
    )
    (seed,) = parse_plivo_xml(SEED_EXAMPLE)
    assert (
        seed.options == PlivoStreamOptions(url="wss://yourstream.websocket.io/audiostream") and seed.line == 2
    )


REFUSED = [
    # (document, code, line, attribute (= the error's field), words)
    (
        "<Response>\n<Speak>Hello</Speak>\n</Response>",
        "unsupported_verb",
        2,
        None,
        "<Speak> is not supported",
    ),
    (
        "<Response><Stream>wss://h/</Stream>\n<Dial><Number>1</Number></Dial></Response>",
        "unsupported_verb",
        2,
        None,
        "<Dial>",
    ),
    (
        '<Response><Stream extraHeaders="a=1;b=2">wss://h/</Stream></Response>',
        "invalid_extra_headers",
        1,
        "extraHeaders",
        "key=value",
    ),
    (
        '<Response><Stream extraHeaders="k=' + "v" * 520 + '">wss://h/</Stream></Response>',
        "invalid_extra_headers",
        1,
        "extraHeaders",
        "more than 512",
    ),
    (
        '<Response>\n<Stream bidirectional="true" audioTrack="both">wss://h/</Stream></Response>',
        "invalid_track",
        2,
        "audioTrack",
        "not allowed with bidirectional=true",
    ),
    ("<Response><Stream>https://h/</Stream></Response>", "invalid_url", 1, "url", "ws:// or wss://"),
    (
        '<Response><Stream streamTimeout="0">wss://h/</Stream></Response>',
        "invalid_timeout",
        1,
        "streamTimeout",
        "positive",
    ),
    (
        '<Response><Stream audiotrack="both">wss://h/</Stream></Response>',
        "unknown_attribute",
        1,
        "audiotrack",
        "no attribute",
    ),
    (
        '<Response><Stream noiseCancellation="true">wss://h/</Stream></Response>',
        "not_supported",
        1,
        "noiseCancellation",
        "not supported",
    ),
    (
        "<Response><Stream><Speak/></Stream></Response>",
        "invalid_xml",
        1,
        None,
        "holds only the WebSocket URL",
    ),
    ("<Stream>wss://h/</Stream>", "invalid_xml", 1, None, "root element must be <Response>"),
    ("<Response><Stream>wss://h/</Response>", "invalid_xml", 1, None, "mismatched tag"),
    ('<!DOCTYPE r [<!ENTITY x "y">]><Response/>', "invalid_xml", None, None, "DTDs and entities are refused"),
]


@pytest.mark.parametrize(("text", "code", "line", "attribute", "words"), REFUSED)
def test_refused_documents_say_where_and_why(
    text: str, code: str, line: int | None, attribute: str | None, words: str
) -> None:
    with pytest.raises(PlivoXmlError) as caught:
        parse_plivo_xml(text)
    error = caught.value
    assert (error.code, error.line, error.field) == (code, line, attribute), str(error)
    assert words in str(error) and str(error).startswith("Plivo XML")


def test_an_empty_response_starts_nothing_and_the_size_is_bounded() -> None:
    assert parse_plivo_xml("<Response/>") == ()
    with pytest.raises(PlivoXmlError) as caught:
        parse_plivo_xml("<Response>" + " " * 200 + "</Response>", max_chars=100)
    assert caught.value.code == "xml_too_large"


# --- documents run on a call -----------------------------------------------------------------------


async def test_a_helper_library_document_streams_the_call_with_signed_plivo_callbacks() -> None:
    async with world() as w:
        call = await w.new_call("plivo-1")
        element = plivoxml.StreamElement(
            w.ws.url("/plivo"),
            audioTrack="both",
            statusCallbackUrl=w.sink.url,
            statusCallbackMethod="POST",
            contentType="audio/x-l16;rate=16000",
            extraHeaders="test1=12,test2=123",
        )
        status, body = await run_xml(w, "plivo-1", plivoxml.ResponseElement().add(element).to_string())
        assert status == 200, body
        (stream,) = body["streams"]
        sid = stream["sid"]
        assert (
            stream["format"] == "plivo"
            and stream["track"] == "both_tracks"
            and stream["status"] == "starting"
        )

        started = await w.sink.next()
        assert started.method == "POST" and plivo_signed(started)
        assert not plivo_signed(started, "another secret")
        expected = {
            "Error": "",
            "CallUUID": "plivo-1",
            "From": ALICE["aor"],
            "To": BOB["aor"],
            "ServiceURL": w.ws.url("/plivo"),
            "ExtraHeaders": "test1=12,test2=123",
            "StreamID": sid,
        }
        assert callback_fields(started) == {"Event": "StartStream", **expected}

        connection = await w.ws.connection()
        await connection.wait_for(lambda: bool(connection.messages))
        start = connection.messages[0]
        assert start["event"] == "start" and start["extra_headers"] == "test1=12,test2=123"
        assert start["start"]["streamId"] == sid and start["start"]["tracks"] == ["inbound", "outbound"]
        await send_rtp(call, (Leg.INBOUND, Leg.OUTBOUND), 5)
        await connection.wait_for(lambda: len(connection.events("media")) == 10)
        inbound = [m for m in connection.events("media") if m["media"]["track"] == "inbound"]
        samples = np.frombuffer(b"".join(base64.b64decode(m["media"]["payload"]) for m in inbound), "<i2")
        assert len(samples) == 5 * 320 and np.abs(samples).max() > 1000  # 100 ms of tone at 16 kHz

        status, stopped, _ = await w.native("POST", f"/v1/calls/plivo-1/streams/{sid}", {"status": "stopped"})
        assert status == 200 and stopped["status"] == "stopped"
        ended = await w.sink.next()
        assert plivo_signed(ended) and callback_fields(ended) == {"Event": "StopStream", **expected}


async def test_get_callbacks_dropped_stream_and_stream_timeout() -> None:
    async with world() as w:
        await w.new_call("plivo-2")
        document = (
            "<Response>"
            f'<Stream statusCallbackUrl="{w.sink.url}" statusCallbackMethod="GET">'
            f"{w.ws.url('/first')}</Stream>"
            f'<Stream statusCallbackUrl="{w.sink.url}" streamTimeout="1">{w.ws.url("/second")}</Stream>'
            "</Response>"
        )
        status, body = await run_xml(w, "plivo-2", document, "text/xml; charset=utf-8")
        assert status == 200 and len(body["streams"]) == 2, body
        first, second = (s["sid"] for s in body["streams"])
        events: dict[tuple[str, str], Received] = {}
        for _ in range(2):
            received = await w.sink.next()
            events[(received.params["StreamID"], received.params["Event"])] = received
        get = events[(first, "StartStream")]
        assert get.method == "GET" and get.params["tenant"] == "7" and plivo_signed(get)
        assert events[(second, "StartStream")].method == "POST"

        await w.ws.connection(1)
        connection = next(c for c in w.ws.connections if c.request.path == "/first")
        await connection.ws.close(code=1011)
        ends = {}
        for _ in range(2):
            received = await w.sink.next(timeout=TIMEOUT)
            ends[received.params["StreamID"]] = received
        dropped, timed_out = ends[first], ends[second]
        assert callback_fields(dropped)["Event"] == "DroppedStream" and plivo_signed(dropped)
        assert dropped.params["Error"].startswith("Connection disconnected with the remote service")
        assert timed_out.params["Event"] == "StopStream" and plivo_signed(timed_out)  # streamTimeout=1
        assert (await w.stream("plivo-2", second))["status"] == "stopped"


async def test_played_is_sent_once_the_service_audio_has_played_and_call_end_sends_nothing() -> None:
    async with world() as w:
        await w.new_call("plivo-3", playback="127.0.0.1:9")
        element = plivoxml.StreamElement(w.ws.url(), bidirectional=True, statusCallbackUrl=w.sink.url)
        status, body = await run_xml(w, "plivo-3", plivoxml.ResponseElement().add(element).to_string())
        assert status == 200, body
        assert (await w.sink.next()).params["Event"] == "StartStream"
        connection = await w.ws.connection()
        silence = np.zeros(1600, "<i2").tobytes()  # 100 ms at 16 kHz
        media = {
            "contentType": "audio/x-l16",
            "sampleRate": 16000,
            "payload": base64.b64encode(silence).decode(),
        }
        await connection.send({"event": "playAudio", "media": media})
        await connection.send({"event": "checkpoint", "streamId": body["streams"][0]["sid"], "name": "c1"})
        played = await w.sink.next()
        assert played.params["Event"] == "Played" and played.params["Error"] == "" and plivo_signed(played)
        assert connection.events("playedStream")[0]["name"] == "c1"  # the checkpoint: on the WebSocket only

        # Seed 004: no callback when the call (rather than the stream) is disconnected.
        status, _, _ = await w.native("DELETE", "/v1/calls/plivo-3")
        assert status == 204
        await connection.wait_closed()
        await asyncio.sleep(0.2)
        assert w.sink.empty()


async def test_unsupported_verbs_bad_bodies_and_roll_back() -> None:
    async with world() as w:
        await w.new_call("plivo-4")
        speak = (
            plivoxml.ResponseElement()
            .add(plivoxml.StreamElement(w.ws.url()))
            .add(plivoxml.SpeakElement("Hi"))
        )
        status, body = await run_xml(w, "plivo-4", speak.to_string())
        assert_error(status, body, 400, "unsupported_verb", None)
        assert "line 3: <Speak> is not supported" in body["error"]["message"]
        status, body = await run_xml(
            w, "plivo-4", '<Response><Stream extraHeaders="a=1 b">wss://h/</Stream></Response>'
        )
        assert_error(status, body, 400, "invalid_extra_headers", "extraHeaders")
        status, body = await run_xml(w, "plivo-4", SEED_EXAMPLE, "text/plain")
        assert_error(status, body, 415, "unsupported_media_type", None)
        status, body, _ = await w.native("POST", "/v1/calls/plivo-4/plivo-xml", {"document": SEED_EXAMPLE})
        assert_error(status, body, 400, "unknown_field", "document")
        status, body = await run_xml(w, "nowhere", SEED_EXAMPLE)
        assert_error(status, body, 404, "no_such_call", "call_id")
        status, body, _ = await w.native(
            "POST",
            "/v1/calls/plivo-4/plivo-xml",
            data=b"<Response/>",
            headers={"Authorization": "Bearer wrong"},
        )
        assert status == 401
        assert w.sidecar.call("plivo-4").streams == {} and w.ws.connections == []

        # Three both-track streams need six forked streams: the third fails, the first two stop.
        stream = f'<Stream audioTrack="both" statusCallbackUrl="{w.sink.url}">{w.ws.url()}</Stream>\n'
        status, body = await run_xml(w, "plivo-4", "<Response>\n" + stream * 3 + "</Response>")
        assert_error(status, body, 409, "stream_limit", "track")
        assert body["error"]["message"].startswith("Plivo XML line 4, <Stream>")
        streams = list(w.sidecar.call("plivo-4").streams.values())
        assert len(streams) == 2 and all(s.status.terminal for s in streams)
        await asyncio.sleep(0.2)
        assert w.sink.empty()  # a refused document sends no callback

        # The same document as JSON, within the budget: it runs.
        status, body, _ = await w.native(
            "POST", "/v1/calls/plivo-4/plivo-xml", {"xml": "<Response>" + stream * 2 + "</Response>"}
        )
        assert status == 200 and [s["status"] for s in body["streams"]] == ["starting", "starting"], body


def test_the_signature_is_plivos_for_get_post_and_urls_with_a_query() -> None:
    # Independent of the network: every shape of URL and method against the official validator.
    form = (("Event", "StartStream"), ("Error", ""), ("ServiceURL", "wss://h/a b?c=d&e"))
    for url in ("https://h.example.com/cb", "https://h.example.com/cb?x=1&a=2&a=1", "http://h:8080/p%20q?"):
        for method in ("GET", "POST"):
            delivery = Delivery(url, method=method, form=form)
            signature = plivo_v3_signature("s3cret", delivery, "12345")
            requested = request_url(delivery)
            params = dict(form) if method == "POST" else None
            assert validate_v3_signature(method, requested, "12345", "s3cret", signature, params), (
                url,
                method,
            )
            assert not validate_v3_signature(method, requested, "12346", "s3cret", signature, params)
