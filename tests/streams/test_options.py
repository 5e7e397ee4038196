"""streams/options.py: Twilio and Plivo stream requests, their defaults, and every refusal.

Each refusal is checked for the attribute it names (``field``, as the shape spells it), its
stable ``code``, and a message that lists what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import L16_8K, L16_16K, PCMU_8K
from siprec_src.media.spec import Leg
from siprec_src.streams.options import (
    DEFAULT_STREAM_TIMEOUT,
    CallbackMethod,
    PlivoAudioTrack,
    PlivoContentType,
    PlivoStreamOptions,
    TwilioStreamOptions,
    TwilioTrack,
    parse_extra_headers,
)

WSS = "wss://yourstream.websocket.io/audiostream"


def refusal(call: Callable[..., object], *args: object, **kwargs: object) -> LocalProtocolError:
    with pytest.raises(LocalProtocolError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- Twilio ---------------------------------------------------------------------------------------


def test_twilio_defaults() -> None:
    options = TwilioStreamOptions.from_twiml({"url": WSS})
    assert options == TwilioStreamOptions(url=WSS)
    assert options.track is TwilioTrack.INBOUND
    assert options.status_callback_method is CallbackMethod.POST
    assert (options.name, options.status_callback, options.parameters) == (None, None, ())
    assert options.legs == (Leg.INBOUND,)
    assert options.audio_format == PCMU_8K
    assert not options.bidirectional


def test_twilio_full_request() -> None:
    options = TwilioStreamOptions.from_twiml(
        {
            "url": "ws://127.0.0.1:9000/fork?session=1",
            "name": "Example Audio Stream",
            "track": "both_tracks",
            "statusCallback": "https://example.com/stream-events",
            "statusCallbackMethod": "get",
        },
        [{"name": "FirstName", "value": "Jane"}, {"name": "LastName", "value": "Doe"}, {"name": "Empty"}],
    )
    assert options.track is TwilioTrack.BOTH
    assert options.legs == (Leg.INBOUND, Leg.OUTBOUND)
    assert options.status_callback_method is CallbackMethod.GET
    assert options.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "Empty": ""}


@pytest.mark.parametrize(
    ("track", "legs"),
    [
        ("inbound_track", (Leg.INBOUND,)),
        ("outbound_track", (Leg.OUTBOUND,)),
        ("both_tracks", (Leg.INBOUND, Leg.OUTBOUND)),
    ],
)
def test_twilio_track_legs(track: str, legs: tuple[Leg, ...]) -> None:
    assert TwilioStreamOptions.from_twiml({"url": WSS, "track": track}).legs == legs


@pytest.mark.parametrize(
    ("attributes", "field", "code", "allowed"),
    [
        ({}, "url", "missing_url", "needs a url"),
        ({"url": "https://example.com/ws"}, "url", "invalid_url", "ws:// or wss://"),
        ({"url": "/relative/path"}, "url", "invalid_url", "ws:// or wss://"),
        ({"url": "wss:///no-host"}, "url", "invalid_url", "with a host"),
        ({"url": "wss://example.com/a b"}, "url", "invalid_url", "without spaces"),
        ({"url": "wss://example.com/#frag"}, "url", "invalid_url", "no #fragment"),
        ({"url": "wss://example.com:99999/"}, "url", "invalid_url", "not a valid URL"),
        (
            {"url": WSS, "track": "inbound"},
            "track",
            "invalid_track",
            "inbound_track, outbound_track, both_tracks",
        ),
        ({"url": WSS, "statusCallbackMethod": "PUT"}, "statusCallbackMethod", "invalid_method", "GET, POST"),
        (
            {"url": WSS, "statusCallback": "ftp://example.com/"},
            "statusCallback",
            "invalid_url",
            "http:// or https://",
        ),
        ({"url": WSS, "name": ""}, "name", "invalid_name", "1-64 characters"),
        ({"url": WSS, "name": "x" * 65}, "name", "invalid_name", "1-64 characters"),
        ({"url": WSS, "name": "tab\there"}, "name", "invalid_name", "without control characters"),
        (
            {"url": WSS, "connectorName": "Gridspace_1"},
            "connectorName",
            "unknown_attribute",
            "url, name, track",
        ),
    ],
)
def test_twilio_refusals(attributes: dict[str, str], field: str, code: str, allowed: str) -> None:
    error = refusal(TwilioStreamOptions.from_twiml, attributes)
    assert (error.field, error.code) == (field, code)
    assert allowed in str(error)


def test_twilio_bidirectional_is_inbound_only() -> None:
    assert TwilioStreamOptions(url=WSS, bidirectional=True).legs == (Leg.INBOUND,)
    error = refusal(TwilioStreamOptions.from_twiml, {"url": WSS, "track": "both_tracks"}, bidirectional=True)
    assert (error.field, error.code) == ("track", "invalid_track")
    assert "inbound_track only" in str(error)


@pytest.mark.parametrize(
    ("parameters", "field", "code", "message"),
    [
        ([{"value": "x"}], "Parameter.name", "invalid_parameter", "needs a name"),
        ([{"name": ""}], "Parameter.name", "invalid_parameter", "must be non-empty"),
        (
            [{"name": "a", "value": "line\nbreak"}],
            "Parameter.name",
            "invalid_parameter",
            "control characters",
        ),
        (
            [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}],
            "Parameter.name",
            "duplicate_parameter",
            "twice",
        ),
        (
            [{"name": "a", "colour": "red"}],
            "colour",
            "unknown_attribute",
            "<Parameter> has no attribute 'colour'",
        ),
        ([{"name": f"p{i}"} for i in range(100)], "Parameter", "invalid_parameter", "at most 99"),
    ],
)
def test_twilio_parameter_refusals(
    parameters: list[dict[str, str]], field: str, code: str, message: str
) -> None:
    error = refusal(TwilioStreamOptions.from_twiml, {"url": WSS}, parameters)
    assert (error.field, error.code) == (field, code)
    assert message in str(error)


def test_twilio_99_parameters_are_allowed() -> None:
    options = TwilioStreamOptions.from_twiml(
        {"url": WSS}, [{"name": f"p{i}", "value": "v"} for i in range(99)]
    )
    assert len(options.custom_parameters) == 99


def test_twilio_direct_construction_is_checked_too() -> None:
    error = refusal(TwilioStreamOptions, url=WSS, track="both_tracks")  # a str, not the enum
    assert (error.field, error.code) == ("track", "invalid_track")


# --- Plivo ----------------------------------------------------------------------------------------


def test_plivo_defaults_as_seed_004_lists_them() -> None:
    options = PlivoStreamOptions.from_xml(f"\n{WSS}\n", {})
    assert options == PlivoStreamOptions(url=WSS)
    assert options.bidirectional is False
    assert options.audio_track is PlivoAudioTrack.INBOUND
    assert options.stream_timeout == DEFAULT_STREAM_TIMEOUT == 86_400
    assert options.status_callback_method is CallbackMethod.POST
    assert options.content_type is PlivoContentType.L16_8K
    assert options.audio_format == L16_8K
    assert options.extra_headers == () and options.extra_headers_text == ""
    assert options.keep_call_alive is False
    assert (options.noise_cancellation, options.noise_cancellation_level) == (False, 85)
    assert options.legs == (Leg.INBOUND,)


def test_plivo_full_request_as_in_the_seed_example() -> None:
    # The C# example of seed 004, attribute for attribute.
    options = PlivoStreamOptions.from_xml(
        WSS,
        {
            "bidirectional": "False",
            "audioTrack": "both",
            "streamTimeout": "120",
            "statusCallbackUrl": "https://example.com/confevents/",
            "statusCallbackMethod": "POST",
            "contentType": "audio/x-l16;rate=16000",
            "extraHeaders": "test1=12,test2=123",
            "keepCallAlive": "true",
            "noiseCancellation": "false",
            "noiseCancellationLevel": "60",
        },
    )
    assert options.legs == (Leg.INBOUND, Leg.OUTBOUND)
    assert options.stream_timeout == 120
    assert options.audio_format == L16_16K
    assert options.extra_headers == (("test1", "12"), ("test2", "123"))
    assert options.extra_headers_text == "test1=12,test2=123"
    assert options.keep_call_alive is True
    assert options.noise_cancellation_level == 60


@pytest.mark.parametrize(
    ("content_type", "audio_format"),
    [
        ("audio/x-l16;rate=8000", L16_8K),
        ("audio/x-l16;rate=16000", L16_16K),
        ("audio/x-mulaw;rate=8000", PCMU_8K),
    ],
)
def test_plivo_content_types(content_type: str, audio_format: object) -> None:
    assert PlivoStreamOptions.from_xml(WSS, {"contentType": content_type}).audio_format == audio_format


def test_plivo_bidirectional_with_inbound_track() -> None:
    options = PlivoStreamOptions.from_xml(WSS, {"bidirectional": "true", "audioTrack": "inbound"})
    assert options.bidirectional and options.legs == (Leg.INBOUND,)


@pytest.mark.parametrize("track", ["outbound", "both"])
def test_plivo_bidirectional_refuses_outbound_and_both(track: str) -> None:
    error = refusal(PlivoStreamOptions.from_xml, WSS, {"bidirectional": "true", "audioTrack": track})
    assert (error.field, error.code) == ("audioTrack", "invalid_track")
    assert f"audioTrack {track} is not allowed with bidirectional=true" in str(error)


@pytest.mark.parametrize(
    ("text", "attributes", "field", "code", "allowed"),
    [
        ("", {}, "url", "invalid_url", "ws:// or wss://"),
        ("https://example.com/", {}, "url", "invalid_url", "ws:// or wss://"),
        (WSS, {"audioTrack": "inbound_track"}, "audioTrack", "invalid_track", "inbound, outbound, both"),
        (WSS, {"bidirectional": "yes"}, "bidirectional", "invalid_boolean", "true or false"),
        (WSS, {"keepCallAlive": "1"}, "keepCallAlive", "invalid_boolean", "true or false"),
        (WSS, {"streamTimeout": "0"}, "streamTimeout", "invalid_timeout", "positive integer"),
        (WSS, {"streamTimeout": "-5"}, "streamTimeout", "invalid_timeout", "positive integer"),
        (WSS, {"streamTimeout": "1.5"}, "streamTimeout", "invalid_timeout", "positive integer"),
        (WSS, {"statusCallbackMethod": "DELETE"}, "statusCallbackMethod", "invalid_method", "GET, POST"),
        (WSS, {"statusCallbackUrl": "not a url"}, "statusCallbackUrl", "invalid_url", "http:// or https://"),
        (
            WSS,
            {"contentType": "audio/x-mulaw;rate=16000"},
            "contentType",
            "invalid_content_type",
            "audio/x-l16;rate=8000, audio/x-l16;rate=16000, audio/x-mulaw;rate=8000",
        ),
        (WSS, {"noiseCancellation": "true"}, "noiseCancellation", "not_supported", "not supported"),
        (
            WSS,
            {"noiseCancellationLevel": "59"},
            "noiseCancellationLevel",
            "invalid_value",
            "between 60 and 100",
        ),
        (
            WSS,
            {"noiseCancellationLevel": "101"},
            "noiseCancellationLevel",
            "invalid_value",
            "between 60 and 100",
        ),
        (
            WSS,
            {"noiseCancellationLevel": "high"},
            "noiseCancellationLevel",
            "invalid_value",
            "between 60 and 100",
        ),
        (WSS, {"track": "inbound"}, "track", "unknown_attribute", "bidirectional, audioTrack, streamTimeout"),
    ],
)
def test_plivo_refusals(text: str, attributes: dict[str, str], field: str, code: str, allowed: str) -> None:
    error = refusal(PlivoStreamOptions.from_xml, text, attributes)
    assert (error.field, error.code) == (field, code)
    assert allowed in str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test1=12,", "item '' is not key=value"),
        ("test1", "item 'test1' is not key=value"),
        ("test-1=12", "item 'test-1=12' is not key=value"),
        ("a=1;b=2", "item 'a=1;b=2' is not key=value"),
        ("a=", "item 'a=' is not key=value"),
        ("a=1, b=2", "item ' b=2' is not key=value"),
        ("k=" + "v" * 511, "513 bytes, more than 512"),
    ],
)
def test_plivo_extra_headers_refusals(text: str, message: str) -> None:
    error = refusal(PlivoStreamOptions.from_xml, WSS, {"extraHeaders": text})
    assert (error.field, error.code) == ("extraHeaders", "invalid_extra_headers")
    assert message in str(error)


def test_plivo_extra_headers_limit_is_512_bytes_inclusive() -> None:
    text = "k=" + "v" * 510
    assert len(text) == 512
    assert parse_extra_headers(text) == (("k", "v" * 510),)
    assert PlivoStreamOptions.from_xml(WSS, {"extraHeaders": text}).extra_headers_text == text


def test_plivo_direct_construction_is_checked_too() -> None:
    error = refusal(PlivoStreamOptions, url=WSS, extra_headers=(("a b", "1"),))
    assert (error.field, error.code) == ("extraHeaders", "invalid_extra_headers")
    error = refusal(PlivoStreamOptions, url=WSS, stream_timeout=0)
    assert (error.field, error.code) == ("streamTimeout", "invalid_timeout")
    error = refusal(PlivoStreamOptions, url=WSS, extra_headers=(("k", "v" * 600),))
    assert "more than 512" in str(error)
