"""SIP under the short fuzz run: messages, the TCP/TLS stream framer, URIs, header values, Digest
challenges (parsed, answered by a UAC core), multipart bodies.

Each target's checks are in ``run.py``; the inputs are its seeds (the 49 RFC 4475 torture
messages, read in place, and SIPREC INVITEs around the vendor bodies) with hypothesis-drawn edits,
derandomized so every run sees the same inputs. Here too: the stream framer under abuse a random
edit reaches only by luck (Content-Length values, endless headers, every chunking of the torture
stream), and the UAC's answer to a challenge it cannot use.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.sip.framer import FramingError, StreamFramer
from siprec_src.sip.message import ParseLimits, Request
from tests.robustness.run import FRAMER_LIMITS, TARGETS, _frame, fuzz_settings, mutations, torture_messages

SIP_TARGETS = ("sip_message", "sip_framer", "sip_uri", "sip_headers", "sip_auth", "sip_ua_auth", "multipart")


@pytest.mark.parametrize("name", SIP_TARGETS)
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


def _request(content_length: bytes) -> bytes:
    return (
        b"OPTIONS sip:srs@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP pc.example.com;branch=z9hG4bK-cl\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:srs@example.com>\r\n"
        b"Call-ID: cl@example.com\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n" + content_length + b"\r\n\r\n"
    )


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: 99999999999",  # more than 9 digits
        b"Content-Length: " + b"1" * 5000,  # past int()'s digit limit
        b"Content-Length: -1",
        b"Content-Length: 0x10",
        "Content-Length: ²".encode(),
        "Content-Length: １".encode(),  # fullwidth digit
        b"Content-Length: 4 4",
        b"Content-Length: 4\r\nl: 5",  # two different lengths: request smuggling
        b"X-No-Length: 1",  # none at all: no way to find the end on a stream
        b"Content-Length: 65000",  # fits in digits, not in the 4096-byte limit
    ],
)
def test_framer_refuses_every_bad_content_length(header: bytes) -> None:
    framer = StreamFramer(FRAMER_LIMITS)
    with pytest.raises(FramingError) as caught:
        framer.feed(_request(header) + b"x" * 100)
    assert caught.value.status_hint in (400, 513)


def test_framer_accepts_a_repeated_equal_content_length() -> None:
    framer = StreamFramer(FRAMER_LIMITS)
    (message,) = framer.feed(_request(b"Content-Length: 4\r\nl: 4") + b"abcd")
    assert isinstance(message, Request) and message.body == b"abcd"


@pytest.mark.parametrize("chunk", [1, 1000, 70000])
def test_framer_never_buffers_an_endless_header_section(chunk: int) -> None:
    """A peer that never sends the empty line is cut off at the limit, whatever the read size."""
    limits = ParseLimits()
    framer = StreamFramer(limits)
    fed = 0
    line = b"X-Padding: " + b"a" * 200 + b"\r\n"
    stream = b"OPTIONS sip:a@b SIP/2.0\r\n" + line * 2000
    with pytest.raises(FramingError) as caught:
        while fed < len(stream):
            framer.feed(stream[fed : fed + chunk])
            fed += chunk
            assert framer.buffered <= limits.max_message_size
    assert caught.value.status_hint == 513
    assert fed <= limits.max_message_size + chunk


def _frameable() -> list[bytes]:
    """The torture messages a stream can carry: each frames on its own (parsing may still fail)."""
    out = []
    for message in torture_messages():
        framer = StreamFramer(ParseLimits())
        try:
            items = framer.feed(message)
        except FramingError:
            continue  # no usable Content-Length (ncl, mcl01...): fatal on a stream
        if len(items) == 1 and not framer.buffered:
            out.append(message)  # (not the ones whose body runs past Content-Length)
    return out


@fuzz_settings(50)
@given(cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=300), seed=st.integers(0, 2**32))
def test_framer_cuts_the_torture_stream_the_same_in_any_pieces(cuts: list[int], seed: int) -> None:
    """The torture messages back to back (keepalives between), shuffled, cut anywhere: the same items."""
    messages = _frameable()
    assert len(messages) >= 25, "most RFC 4475 messages carry a usable Content-Length"
    random.Random(seed).shuffle(messages)
    stream = b"\r\n\r\n".join(messages)
    expected, expected_failed = _frame(stream, [len(stream)], ParseLimits())
    got, failed = _frame(stream, cuts * (len(stream) // sum(cuts) + 1), ParseLimits())
    assert not expected_failed and not failed
    assert got == expected
    assert len(expected) == len(messages)
    assert sum(kind == "error" for kind, _ in expected) >= 5, "invalid messages frame and are refused"
