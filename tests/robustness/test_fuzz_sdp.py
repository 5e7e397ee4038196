"""SDP under the short fuzz run: the parser and its lazy accessors, the SRS answering any offer,
the SRC reading any answer and any offer an SRS makes.

Seeds: the SDP of every vendor capture (read in place) and the offers and answers our own
builders write, plain and SRTP. Beside the targets: the SRS never echoes an ambiguous crypto tag.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.sdp.session import SdpError, parse_sdp
from siprec_src.sdp.siprec import NegotiationError
from tests.robustness.run import CORPUS, TARGETS, _srs_answer, fuzz_settings, mutations


@pytest.mark.parametrize("name", ["sdp", "sdp_offer", "sdp_answer"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


def test_an_offer_with_one_crypto_tag_on_two_lines_is_refused() -> None:
    """RFC 4568 §5.1.2: the answer names the accepted line by tag only, so tags must be unique.

    Found by the sdp_offer fuzzer: the SRS answered tag 1 with the first line's suite, and the
    SRC, looking the tag up, found the second line's.
    """
    offer = parse_sdp((CORPUS / "sdp_offer" / "duplicate-crypto-tag").read_bytes())
    with pytest.raises(SdpError, match="not unique"):
        _ = offer.media[0].crypto
    with pytest.raises(NegotiationError, match="not unique"):
        _srs_answer(offer)
