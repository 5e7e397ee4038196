"""streams/twilio_wire.py against Twilio's "Media Streams - WebSocket Messages".

Golden messages are compared as parsed dicts (key order and spacing are not part of the
protocol); the expected shapes are the documentation's examples with our values. Every
malformed server message is checked for the JSON path it blames. Not covered: the WebSocket
itself (framing, close codes), which belongs to the adapter.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import numpy.typing as npt
import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import PCMU_8K
from siprec_src.media.g711 import ulaw_decode, ulaw_encode
from siprec_src.media.spec import Leg
from siprec_src.streams import MalformedMessageError
from siprec_src.streams.twilio_wire import (
    ClearReceived,
    MarkReceived,
    MediaReceived,
    TwilioStreamEncoder,
    decode_server_message,
)

STREAM = "MZ18ad3ab5a668481ce02b83e7395059f0"
ACCOUNT = "AC" + "0" * 32
CALL = "CA" + "1" * 32


def encoder(tracks: tuple[Leg, ...] = (Leg.INBOUND, Leg.OUTBOUND)) -> TwilioStreamEncoder:
    return TwilioStreamEncoder(
        stream_sid=STREAM,
        account_sid=ACCOUNT,
        call_sid=CALL,
        tracks=tracks,
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    )


def started(tracks: tuple[Leg, ...] = (Leg.INBOUND, Leg.OUTBOUND)) -> TwilioStreamEncoder:
    enc = encoder(tracks)
    enc.connected()
    enc.start()
    return enc


# --- what we send ---------------------------------------------------------------------------------


def test_connected_and_start_golden() -> None:
    enc = encoder()
    assert json.loads(enc.connected()) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert json.loads(enc.start()) == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": STREAM,
            "callSid": CALL,
            "tracks": ["inbound", "outbound"],
            "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": STREAM,
    }


def test_media_mark_stop_golden() -> None:
    enc = started()
    frame = bytes(range(160))
    assert json.loads(enc.media(Leg.OUTBOUND, frame, timestamp_ms=5)) == {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "outbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(frame).decode(),
        },
        "streamSid": STREAM,
    }
    assert json.loads(enc.media(Leg.INBOUND, frame, timestamp_ms=5))["media"]["chunk"] == "1"  # per track
    assert json.loads(enc.mark("my label")) == {
        "event": "mark",
        "sequenceNumber": "4",
        "mark": {"name": "my label"},
        "streamSid": STREAM,
    }
    assert json.loads(enc.stop()) == {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        "streamSid": STREAM,
    }
    assert enc.sequence_number == 5


def test_no_custom_parameters_is_an_empty_object() -> None:
    enc = TwilioStreamEncoder(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL, tracks=(Leg.INBOUND,))
    enc.connected()
    start = json.loads(enc.start())["start"]
    assert start["customParameters"] == {}
    assert start["tracks"] == ["inbound"]


def test_linear_frames_are_sent_as_mulaw() -> None:
    enc = started()
    samples = np.linspace(-20000, 20000, 160).astype(np.int16)
    payload = json.loads(enc.media(Leg.INBOUND, samples, timestamp_ms=0))["media"]["payload"]
    assert base64.b64decode(payload) == ulaw_encode(samples).tobytes()


def test_full_sequence_round_trip() -> None:
    """start, 50 frames on each track (a gap of 100 ms on outbound), stop — parsed back."""
    enc = encoder()
    rng = np.random.default_rng(3)
    sent = {leg: [rng.integers(-30000, 30000, 160).astype(np.int16) for _ in range(50)] for leg in Leg}
    texts = [enc.connected(), enc.start()]
    for n in range(50):
        texts.append(enc.media(Leg.INBOUND, sent[Leg.INBOUND][n], timestamp_ms=20 * n))
        texts.append(
            enc.media(Leg.OUTBOUND, sent[Leg.OUTBOUND][n], timestamp_ms=20 * n + (100 if n >= 25 else 0))
        )
    texts.append(enc.stop())
    messages = [json.loads(text) for text in texts]

    assert [m["event"] for m in messages] == ["connected", "start", *["media"] * 100, "stop"]
    assert [m["sequenceNumber"] for m in messages[1:]] == [str(n) for n in range(1, 103)]
    assert all(m["streamSid"] == STREAM for m in messages[1:])
    for leg in Leg:
        media = [m["media"] for m in messages if m["event"] == "media" and m["media"]["track"] == leg.value]
        assert [m["chunk"] for m in media] == [str(n) for n in range(1, 51)]
        gap = 100 if leg is Leg.OUTBOUND else 0
        assert [int(m["timestamp"]) for m in media] == [20 * n + (gap if n >= 25 else 0) for n in range(50)]
        received = [ulaw_decode(base64.b64decode(m["payload"])) for m in media]
        # What arrives is what was sent, quantised by µ-law once.
        for frame, got in zip(sent[leg], received, strict=True):
            assert np.array_equal(got, ulaw_decode(ulaw_encode(frame)))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\xff" * 159, "160 bytes (20 ms at 8 kHz), not 159"),
        (np.zeros(320, dtype=np.int16), "160 int16 samples (20 ms at 8 kHz), not (320,)"),
        (np.zeros(160, dtype=np.float32), "not (160,) of float32"),
    ],
)
def test_media_frame_must_be_20ms_at_8khz(frame: bytes | npt.NDArray[np.generic], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        started().media(Leg.INBOUND, frame, timestamp_ms=0)  # type: ignore[arg-type]


def test_media_of_a_track_the_stream_does_not_carry() -> None:
    with pytest.raises(LocalProtocolError, match=r"carries \['inbound'\], not outbound") as caught:
        started((Leg.INBOUND,)).media(Leg.OUTBOUND, b"\xff" * 160, timestamp_ms=0)
    assert caught.value.field == "track"


def test_timestamps_never_go_back() -> None:
    enc = started()
    enc.media(Leg.INBOUND, b"\xff" * 160, timestamp_ms=40)
    enc.media(Leg.OUTBOUND, b"\xff" * 160, timestamp_ms=0)  # each track has its own clock
    with pytest.raises(LocalProtocolError, match="inbound timestamp 20 ms goes back from 40 ms"):
        enc.media(Leg.INBOUND, b"\xff" * 160, timestamp_ms=20)
    with pytest.raises(LocalProtocolError, match="goes back"):
        enc.media(Leg.OUTBOUND, b"\xff" * 160, timestamp_ms=-1)


def test_messages_in_the_wrong_order() -> None:
    enc = encoder()
    for send in (
        enc.start,
        enc.stop,
        lambda: enc.mark("m"),
        lambda: enc.media(Leg.INBOUND, b"", timestamp_ms=0),
    ):
        with pytest.raises(LocalProtocolError, match="when the stream is new") as caught:
            send()
        assert caught.value.code == "stream_state"
    enc.connected()
    with pytest.raises(LocalProtocolError, match="cannot send connected when the stream is connected"):
        enc.connected()
    enc.start()
    enc.stop()
    with pytest.raises(LocalProtocolError, match="cannot send media when the stream is stopped"):
        enc.media(Leg.INBOUND, b"\xff" * 160, timestamp_ms=0)
    assert enc.sequence_number == 2  # refused messages use no sequence number


def test_encoder_needs_tracks() -> None:
    for tracks in ((), (Leg.INBOUND, Leg.INBOUND)):
        with pytest.raises(LocalProtocolError, match="must be inbound, outbound or both"):
            TwilioStreamEncoder(stream_sid=STREAM, account_sid=ACCOUNT, call_sid=CALL, tracks=tracks)


# --- what a bidirectional server sends ------------------------------------------------------------


def test_decode_media_mark_clear() -> None:
    audio = bytes(range(200))
    media = {"event": "media", "streamSid": STREAM, "media": {"payload": base64.b64encode(audio).decode()}}
    received = decode_server_message(json.dumps(media), stream_sid=STREAM)
    assert received == MediaReceived(audio)
    assert isinstance(received, MediaReceived)
    assert np.array_equal(received.samples, PCMU_8K.decode(audio))
    mark = {"event": "mark", "streamSid": STREAM, "mark": {"name": "my label"}}
    assert decode_server_message(json.dumps(mark), stream_sid=STREAM) == MarkReceived("my label")
    clear = {"event": "clear", "streamSid": STREAM}
    assert decode_server_message(json.dumps(clear), stream_sid=STREAM) == ClearReceived()


def test_unknown_fields_are_ignored() -> None:
    message = {"event": "clear", "streamSid": STREAM, "sequenceNumber": "9", "extra": {"any": [1]}}
    assert decode_server_message(json.dumps(message), stream_sid=STREAM) == ClearReceived()


GOOD_PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("", "", "not JSON: Expecting value at character 0"),
        ('{"event": "clear", ', "", "not JSON"),
        ("[1, 2]", "", "expected a JSON object, got an array"),
        ('"media"', "", "expected a JSON object, got the string 'media'"),
        ("[" * 100_000 + "]" * 100_000, "", "not JSON"),
        ("{}", "event", "missing"),
        ('{"event": 7}', "event", "expected a string, got the number 7"),
        ('{"event": "start", "streamSid": "MZ"}', "event", "'start' is not a message a server may send"),
        ('{"event": "Media"}', "event", "media, mark or clear"),
        ('{"event": "clear"}', "streamSid", "missing"),
        ('{"event": "clear", "streamSid": null}', "streamSid", "expected a string, got null"),
        ('{"event": "clear", "streamSid": "MZother"}', "streamSid", "'MZother' is not this stream"),
        (f'{{"event": "media", "streamSid": "{STREAM}"}}', "media", "missing"),
        (f'{{"event": "media", "streamSid": "{STREAM}", "media": "abc"}}', "media", "expected an object"),
        (f'{{"event": "media", "streamSid": "{STREAM}", "media": {{}}}}', "media.payload", "missing"),
        (
            f'{{"event": "media", "streamSid": "{STREAM}", "media": {{"payload": true}}}}',
            "media.payload",
            "expected a string, got a boolean",
        ),
        (
            f'{{"event": "media", "streamSid": "{STREAM}", "media": {{"payload": "not base64!"}}}}',
            "media.payload",
            "not valid base64",
        ),
        (
            f'{{"event": "media", "streamSid": "{STREAM}", "media": {{"payload": "///"}}}}',
            "media.payload",
            "not valid base64",  # missing padding
        ),
        (
            f'{{"event": "media", "streamSid": "{STREAM}", "media": {{"payload": ""}}}}',
            "media.payload",
            "empty",
        ),
        (f'{{"event": "mark", "streamSid": "{STREAM}"}}', "mark", "missing"),
        (f'{{"event": "mark", "streamSid": "{STREAM}", "mark": {{}}}}', "mark.name", "missing"),
        (
            f'{{"event": "mark", "streamSid": "{STREAM}", "mark": {{"name": ["a"]}}}}',
            "mark.name",
            "expected a string, got an array",
        ),
    ],
)
def test_malformed_server_messages_name_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        decode_server_message(text, stream_sid=STREAM)
    error = caught.value
    assert error.field == field
    assert reason in str(error)
    if field:
        assert str(error).startswith(f"{field}: ")
    assert error.close_code == 1007  # RFC 6455 §7.4.1: inconsistent message data


def test_good_payload_constant_is_accepted() -> None:
    # The malformed cases above differ from this one in a single field.
    text = json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": GOOD_PAYLOAD}})
    assert decode_server_message(text, stream_sid=STREAM) == MediaReceived(b"\xff" * 160)
