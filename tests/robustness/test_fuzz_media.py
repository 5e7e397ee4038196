"""The data plane under the short fuzz run: RTP and RTCP parsing, SRTP/SRTCP unprotect of forged,
tampered and replayed packets, SDES key-params, and the receive path of a tap port (``LegReceiver``
with four forks) fed datagrams through a fake socket.

What must hold: only ``RtpError``/``SrtpError`` escape the codecs; the receive path never raises,
counts every datagram exactly once (forwarded, malformed, RTCP, wrong source or failed SRTP),
and forwards only packets an RTP parser accepts.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.media.srtp import SrtpError, SrtpReceiver, SrtpSender
from tests.robustness.run import (
    GCM_KEYS,
    SEP,
    SRTP_KEYS,
    TARGETS,
    _rtp,
    fuzz_settings,
    mutations,
    run_leg_receiver,
)


@pytest.mark.parametrize("name", ["rtp", "rtcp", "srtp", "srtp_key_params", "leg_receiver"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


@fuzz_settings(60)
@given(datagrams=st.lists(st.binary(max_size=300), max_size=60))
def test_random_datagrams_on_a_tap_port(datagrams: list[bytes]) -> None:
    run_leg_receiver(SEP.join(datagrams))


@pytest.mark.parametrize("keys", [SRTP_KEYS, GCM_KEYS], ids=["aes-cm-80", "aead-gcm"])
def test_every_tampered_byte_fails_authentication(keys: object) -> None:
    sender = SrtpSender(keys)  # type: ignore[arg-type]
    receiver = SrtpReceiver(keys)  # type: ignore[arg-type]
    packet = sender.protect(_rtp(7, 1120))
    for index in range(len(packet)):
        for bit in (0x01, 0x80):
            tampered = bytearray(packet)
            tampered[index] ^= bit
            with pytest.raises(SrtpError):
                receiver.unprotect(bytes(tampered))
    for cut in range(len(packet)):
        with pytest.raises(SrtpError):
            receiver.unprotect(packet[:cut])
    assert receiver.unprotect(packet) == _rtp(7, 1120)
    with pytest.raises(SrtpError, match="replayed"):
        receiver.unprotect(packet)
    with pytest.raises(SrtpError, match="too long"):
        receiver.unprotect(packet + bytes(2000))
