"""The reference SRS under the short fuzz run: its jitter buffer with random packet sequences, and
its reading of an out-of-dialog INVITE (``check_recording_invite``, ``_read_invite``) and of an
update body.

The jitter buffer is kept per recorded stream for hours: every packet must be accounted for
(played out, duplicate, late or out of window), its state bounded whatever the sender does, and
the timeline of the recording must never go backwards.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.media.rtp import RtpPacket
from siprec_src.sip.message import parse_message
from siprec_src.sip.syntax import SipParseError
from siprec_src.srs.jitter import MAX_SOURCES, JitterBuffer
from tests.robustness.run import CORPUS, JITTER_RECORD, TARGETS, fuzz_settings, mutations, run_jitter


@pytest.mark.parametrize("name", ["jitter", "srs_invite"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


_packet = st.tuples(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(0, 1000),
    st.integers(0, 255),
)


@fuzz_settings(150)
@given(packets=st.lists(_packet, max_size=120))
def test_random_packet_sequences(packets: list[tuple[int, int, int, int, int, int]]) -> None:
    run_jitter(b"".join(JITTER_RECORD.pack(*packet) for packet in packets))


def test_a_new_ssrc_on_every_packet_keeps_the_state_bounded() -> None:
    """Found by the jitter fuzzer: every SSRC was remembered, in a list searched per packet."""
    buffer = JitterBuffer()
    started = time.perf_counter()
    for index in range(20000):
        buffer.push(RtpPacket(0, index & 0xFFFF, index * 160, index), index * 0.02)
    assert time.perf_counter() - started < 5.0
    stats = buffer.stats()
    assert stats.ssrc_changes == 19999 and stats.packets == 20000
    assert len(stats.ssrcs) == MAX_SOURCES
    assert len(buffer._left) <= MAX_SOURCES


def test_a_straggler_of_a_recent_source_is_still_late() -> None:
    buffer = JitterBuffer()
    buffer.push(RtpPacket(0, 10, 1600, 0xA), 0.0)
    buffer.push(RtpPacket(0, 500, 1600, 0xB), 0.02)
    buffer.push(RtpPacket(0, 9, 1440, 0xA), 0.04)  # an older packet of the source we left
    buffer.flush()
    assert buffer.stats().late == 1


def test_an_invite_whose_list_header_does_not_split_is_refused_at_parse() -> None:
    """Found by the srs_invite fuzzer: ``Supported: "`` reached header_tokens() in the SRS."""
    with pytest.raises(SipParseError, match="unbalanced quote"):
        parse_message((CORPUS / "srs_invite" / "supported-unbalanced-quote").read_bytes())
