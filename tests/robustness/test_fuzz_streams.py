"""WebSocket stream wire formats under the short fuzz run: what a bidirectional Twilio or Plivo
stream service may send us (JSON text, base64 audio, WAV files) decodes or raises
``MalformedMessageError`` / ``AudioDecodeError``, never anything else."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.streams import MalformedMessageError
from siprec_src.streams.twilio_wire import decode_server_message
from tests.robustness.run import STREAM_SID, TARGETS, fuzz_settings, mutations


@pytest.mark.parametrize("name", ["twilio_wire", "plivo_wire", "wav"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"event": ' + "1" * 5000 + "}", id="number-5000-digits"),
        pytest.param("[" * 200000, id="deep-array"),
        pytest.param('{"a":' * 100000, id="deep-object"),
        pytest.param('{"event": "media", "streamSid": "x"' + ', "k": 1' * 50000 + "}", id="wide-object"),
    ],
)
def test_hostile_json_is_a_malformed_message(text: str) -> None:
    """The 5000-digit number was found by the twilio_wire fuzzer (json's own ValueError)."""
    started = time.perf_counter()
    with pytest.raises(MalformedMessageError):
        decode_server_message(text, stream_sid=STREAM_SID)
    assert time.perf_counter() - started < 1.0
