"""streams/plivo_wire.py against Plivo's "Stream Event Protocol" and seed 004.

Golden messages are compared as parsed dicts; expected shapes follow Plivo's examples with our
values. playAudio is decoded for every documented content type (and the older raw/wav of seed
004), and each malformed message is checked for the JSON path it blames.
"""

from __future__ import annotations

import base64
import io
import json
import re
import wave
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from siprec_src.errors import LocalProtocolError
from siprec_src.media.audio import L16_8K, L16_16K, PCMU_8K, AudioFormat, Encoding
from siprec_src.media.g711 import ulaw_decode, ulaw_encode
from siprec_src.media.spec import Leg
from siprec_src.streams import MalformedMessageError
from siprec_src.streams.plivo_wire import (
    CheckpointReceived,
    ClearAudioReceived,
    PlayAudioReceived,
    PlivoStreamEncoder,
    decode_server_message,
)

STREAM = "20170ada-f610-433b-8758-c02a2aab3662"
CALL = "12345678-1234-1234-1234-123456789abc"
ACCOUNT = "MAXXXXXXXXXXXXXXXXXX"
EPOCH_MS = 1_705_312_200_000


def encoder(
    audio_format: AudioFormat = L16_8K, tracks: tuple[Leg, ...] = (Leg.INBOUND,), extra_headers: str = ""
) -> PlivoStreamEncoder:
    return PlivoStreamEncoder(
        stream_id=STREAM,
        call_id=CALL,
        account_id=ACCOUNT,
        tracks=tracks,
        audio_format=audio_format,
        epoch_ms=EPOCH_MS,
        extra_headers=extra_headers,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- what we send ---------------------------------------------------------------------------------


def test_start_golden() -> None:
    enc = encoder(PCMU_8K, (Leg.INBOUND, Leg.OUTBOUND), extra_headers="test1=12,test2=123")
    assert json.loads(enc.start()) == {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL,
            "streamId": STREAM,
            "accountId": ACCOUNT,
            "tracks": ["inbound", "outbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "test1=12,test2=123",
    }


@pytest.mark.parametrize(("fmt", "encoding"), [(L16_8K, "audio/x-l16"), (L16_16K, "audio/x-l16")])
def test_start_media_format_of_l16(fmt: AudioFormat, encoding: str) -> None:
    media_format = json.loads(encoder(fmt).start())["start"]["mediaFormat"]
    assert media_format == {"encoding": encoding, "sampleRate": fmt.sample_rate}


def test_media_golden() -> None:
    enc = encoder(L16_8K, (Leg.INBOUND, Leg.OUTBOUND))
    enc.start()
    samples = np.arange(-80, 80, dtype=np.int16)
    assert json.loads(enc.media(Leg.INBOUND, samples, timestamp_ms=20)) == {
        "event": "media",
        "sequenceNumber": 2,
        "streamId": STREAM,
        "media": {
            "track": "inbound",
            "timestamp": str(EPOCH_MS + 20),
            "chunk": 1,
            "payload": b64(samples.astype("<i2").tobytes()),
        },
        "extra_headers": "",
    }
    outbound = json.loads(enc.media(Leg.OUTBOUND, samples, timestamp_ms=20))
    assert (outbound["sequenceNumber"], outbound["media"]["chunk"], outbound["media"]["track"]) == (
        3,
        1,
        "outbound",
    )


def test_acknowledgements_golden() -> None:
    enc = encoder()
    enc.start()
    assert json.loads(enc.played_stream("customer greeting audio")) == {
        "event": "playedStream",
        "sequenceNumber": 2,
        "streamId": STREAM,
        "name": "customer greeting audio",
    }
    assert json.loads(enc.cleared_audio()) == {
        "event": "clearedAudio",
        "sequenceNumber": 3,
        "streamId": STREAM,
    }


@pytest.mark.parametrize("fmt", [PCMU_8K, L16_8K, L16_16K])
def test_full_sequence_round_trip(fmt: AudioFormat) -> None:
    """start, 25 frames on each track, a checkpoint answered — parsed back and decoded."""
    enc = encoder(fmt, (Leg.INBOUND, Leg.OUTBOUND))
    rng = np.random.default_rng(5)
    size = fmt.samples_per_frame
    sent = {leg: [rng.integers(-30000, 30000, size).astype(np.int16) for _ in range(25)] for leg in Leg}
    texts = [enc.start()]
    for n in range(25):
        for leg in Leg:
            texts.append(enc.media(leg, sent[leg][n], timestamp_ms=20 * n))
    texts.append(enc.played_stream("done"))
    messages = [json.loads(text) for text in texts]

    assert [m["event"] for m in messages] == ["start", *["media"] * 50, "playedStream"]
    assert [m["sequenceNumber"] for m in messages] == list(range(1, 53))
    assert messages[0]["start"]["mediaFormat"] == {
        "encoding": fmt.encoding.value,
        "sampleRate": fmt.sample_rate,
    }
    for leg in Leg:
        media = [m["media"] for m in messages if m["event"] == "media" and m["media"]["track"] == leg.value]
        assert [m["chunk"] for m in media] == list(range(1, 26))
        assert [int(m["timestamp"]) - EPOCH_MS for m in media] == [20 * n for n in range(25)]
        for frame, m in zip(sent[leg], media, strict=True):
            got = fmt.decode(base64.b64decode(m["payload"]))
            expected = ulaw_decode(ulaw_encode(frame)) if fmt.encoding is Encoding.PCMU else frame
            assert np.array_equal(got, expected)


def test_frames_already_encoded_are_sent_as_is() -> None:
    enc = encoder(PCMU_8K)
    enc.start()
    frame = bytes(range(160))
    assert (
        base64.b64decode(json.loads(enc.media(Leg.INBOUND, frame, timestamp_ms=0))["media"]["payload"])
        == frame
    )


@pytest.mark.parametrize(
    ("fmt", "frame", "message"),
    [
        (L16_8K, b"\x00" * 160, "a 20 ms frame of audio/x-l16 at 8000 Hz is 320 bytes, not 160"),
        (
            L16_16K,
            np.zeros(160, dtype=np.int16),
            "a 20 ms frame at 16000 Hz is 320 int16 samples, not (160,)",
        ),
        (PCMU_8K, b"\xff" * 320, "a 20 ms frame of audio/x-mulaw at 8000 Hz is 160 bytes, not 320"),
    ],
)
def test_media_frame_must_be_20ms_of_the_stream_format(
    fmt: AudioFormat, frame: bytes | npt.NDArray[np.int16], message: str
) -> None:
    enc = encoder(fmt)
    enc.start()
    with pytest.raises(LocalProtocolError, match=re.escape(message)):
        enc.media(Leg.INBOUND, frame, timestamp_ms=0)


def test_encoder_misuse() -> None:
    enc = encoder()
    sends: list[Callable[[], str]] = [
        lambda: enc.media(Leg.INBOUND, b"", timestamp_ms=0),
        lambda: enc.played_stream("x"),
        enc.cleared_audio,
    ]
    for send in sends:
        with pytest.raises(LocalProtocolError, match="before start") as caught:
            send()
        assert caught.value.code == "stream_state"
    enc.start()
    with pytest.raises(LocalProtocolError, match="already started"):
        enc.start()
    with pytest.raises(LocalProtocolError, match=r"carries \['inbound'\], not outbound"):
        enc.media(Leg.OUTBOUND, b"\x00" * 320, timestamp_ms=0)
    enc.media(Leg.INBOUND, b"\x00" * 320, timestamp_ms=40)
    with pytest.raises(LocalProtocolError, match="inbound timestamp 39 ms goes back from 40 ms"):
        enc.media(Leg.INBOUND, b"\x00" * 320, timestamp_ms=39)
    assert enc.sequence_number == 2
    with pytest.raises(LocalProtocolError, match="not A-law"):
        encoder(AudioFormat(Encoding.PCMA, 8000))
    with pytest.raises(LocalProtocolError, match="must be inbound, outbound or both"):
        encoder(tracks=())


# --- what a bidirectional server sends ------------------------------------------------------------


def play_audio(content_type: str, sample_rate: object, payload: str, **extra: object) -> str:
    media = {"contentType": content_type, "sampleRate": sample_rate, "payload": payload}
    return json.dumps({"event": "playAudio", "media": media, **extra})


def decode(text: str, stream_format: AudioFormat = L16_8K) -> object:
    return decode_server_message(text, stream_id=STREAM, stream_format=stream_format)


def wav_file(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


SAMPLES = np.array([0, 1, -1, 1000, -32768, 32767, 12345], dtype=np.int16)


@pytest.mark.parametrize("rate", [8000, 16000, "8000", "16000"])
def test_play_audio_l16(rate: object) -> None:
    received = decode(play_audio("audio/x-l16", rate, b64(SAMPLES.astype("<i2").tobytes())))
    assert isinstance(received, PlayAudioReceived)
    assert (received.content_type, received.sample_rate) == ("audio/x-l16", int(str(rate)))
    assert np.array_equal(received.samples, SAMPLES)
    assert not received.samples.flags.writeable


def test_play_audio_mulaw() -> None:
    codes = bytes(range(256))
    received = decode(play_audio("audio/x-mulaw", 8000, b64(codes), streamId=STREAM))
    assert isinstance(received, PlayAudioReceived)
    assert np.array_equal(received.samples, ulaw_decode(codes))


@pytest.mark.parametrize("content_type", ["wav", "audio/wav"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_play_audio_wav(content_type: str, rate: int) -> None:
    received = decode(play_audio(content_type, rate, b64(wav_file(SAMPLES, rate))))
    assert isinstance(received, PlayAudioReceived)
    assert received.sample_rate == rate
    assert np.array_equal(received.samples, SAMPLES)
    assert not received.samples.flags.writeable


@pytest.mark.parametrize(
    ("stream_format", "payload", "expected"),
    [
        (L16_16K, SAMPLES.astype("<i2").tobytes(), SAMPLES),
        (PCMU_8K, bytes([0xFF, 0x7F, 0x00]), ulaw_decode(bytes([0xFF, 0x7F, 0x00]))),
    ],
)
def test_play_audio_raw_is_in_the_stream_encoding(
    stream_format: AudioFormat,
    payload: bytes,
    expected: npt.NDArray[np.int16],
) -> None:
    received = decode(play_audio("raw", stream_format.sample_rate, b64(payload)), stream_format)
    assert isinstance(received, PlayAudioReceived)
    assert np.array_equal(received.samples, expected)


def test_checkpoint_and_clear_audio() -> None:
    checkpoint = {"event": "checkpoint", "streamId": STREAM, "name": "customer greeting audio"}
    assert decode(json.dumps(checkpoint)) == CheckpointReceived("customer greeting audio")
    assert decode(json.dumps({"event": "clearAudio", "streamId": STREAM})) == ClearAudioReceived()


L16_PAYLOAD = b64(SAMPLES.astype("<i2").tobytes())


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("not json", "", "not JSON"),
        ("null", "", "expected a JSON object, got null"),
        ('{"event": "sendDTMF", "dtmf": "42"}', "event", "playAudio, checkpoint or clearAudio"),
        ('{"event": "media"}', "event", "'media' is not a message a server may send"),
        ('{"event": "playAudio"}', "media", "missing"),
        ('{"event": "playAudio", "media": []}', "media", "expected an object, got an array"),
        (
            play_audio("audio/x-l16", 8000, L16_PAYLOAD, streamId="other"),
            "streamId",
            "'other' is not this stream",
        ),
        (play_audio("audio/x-l16", 8000, L16_PAYLOAD, streamId=5), "streamId", "expected a string"),
        (
            json.dumps({"event": "playAudio", "media": {"sampleRate": 8000, "payload": L16_PAYLOAD}}),
            "media.contentType",
            "missing",
        ),
        (
            play_audio("audio/mpeg", 8000, L16_PAYLOAD),
            "media.contentType",
            "'audio/mpeg' is not one of audio/x-l16, audio/x-mulaw, raw, wav",
        ),
        (
            json.dumps(
                {"event": "playAudio", "media": {"contentType": "audio/x-l16", "payload": L16_PAYLOAD}}
            ),
            "media.sampleRate",
            "missing",
        ),
        (
            play_audio("audio/x-l16", "8k", L16_PAYLOAD),
            "media.sampleRate",
            "expected an integer, got the string '8k'",
        ),
        (
            play_audio("audio/x-l16", 8000.5, L16_PAYLOAD),
            "media.sampleRate",
            "expected an integer, got the number",
        ),
        (
            play_audio("audio/x-l16", True, L16_PAYLOAD),
            "media.sampleRate",
            "expected an integer, got a boolean",
        ),
        (
            play_audio("audio/x-l16", 44100, L16_PAYLOAD),
            "media.sampleRate",
            "44100 is not allowed for audio/x-l16",
        ),
        (
            play_audio("audio/x-mulaw", 16000, L16_PAYLOAD),
            "media.sampleRate",
            "16000 is not allowed for audio/x-mulaw",
        ),
        (
            json.dumps({"event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 8000}}),
            "media.payload",
            "missing",
        ),
        (play_audio("audio/x-l16", 8000, "%%%"), "media.payload", "not valid base64"),
        (play_audio("audio/x-l16", 8000, ""), "media.payload", "empty payload"),
        (play_audio("audio/x-l16", 8000, b64(b"\x01\x02\x03")), "media.payload", "3 bytes of L16"),
        (play_audio("wav", 8000, b64(b"RIFF")), "media.payload", "shorter than a RIFF header"),
        (
            play_audio("wav", 8000, b64(wav_file(SAMPLES, 16000))),
            "media.sampleRate",
            "8000 does not match the WAV",
        ),
        ('{"event": "checkpoint", "streamId": "' + STREAM + '"}', "name", "missing"),
        ('{"event": "checkpoint", "name": "n"}', "streamId", "missing"),
        ('{"event": "clearAudio"}', "streamId", "missing"),
        ('{"event": "clearAudio", "streamId": "b77e037d"}', "streamId", "'b77e037d' is not this stream"),
    ],
)
def test_malformed_server_messages_name_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        decode(text)
    assert caught.value.field == field
    assert reason in str(caught.value)
    if field:
        assert str(caught.value).startswith(f"{field}: ")
