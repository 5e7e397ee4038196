"""TwiML and Plivo XML under the short fuzz run, and the XML attacks a ``Twiml`` parameter or a
Plivo XML body may carry: only ``TwimlError``/``PlivoXmlError`` (a 400 naming what is wrong),
refused before anything expands, in bounded time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.control.plivo import PlivoXmlError, parse_plivo_xml
from siprec_src.control.twiml import MAX_DEPTH, MAX_TWIML_CHARS, TwimlError, parse_twiml
from tests.robustness.run import BILLION_LAUGHS, TARGETS, XXE, fuzz_settings, mutations


@pytest.mark.parametrize("name", ["twiml", "plivo_xml"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


def _twiml(document: bytes) -> str:
    return document.replace(b"recording", b"Response").decode()


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        pytest.param(_twiml(BILLION_LAUGHS), "DTDs and entities are refused", id="billion-laughs"),
        pytest.param(_twiml(XXE), "DTDs and entities are refused", id="xxe-file-etc-passwd"),
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE Response SYSTEM "http://203.0.113.9/x.dtd"><Response/>',
            "DTDs and entities are refused",
            id="external-dtd",
        ),
        pytest.param("<Response><Say>&xxe;</Say></Response>", "undefined entity", id="undeclared-entity"),
        pytest.param("<Response>" + "<a>" * 500 + "</a>" * 500 + "</Response>", "deeper than", id="deep"),
        pytest.param("<Response>" + "<a>" * 1200, "deeper than", id="deep-unclosed"),
        pytest.param("<Response>" + " " * MAX_TWIML_CHARS + "</Response>", "more than", id="too-long"),
    ],
)
def test_attacks_are_refused_quickly(document: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TwimlError, match=reason) as caught:
        parse_twiml(document)
    assert time.perf_counter() - started < 0.5
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd was read


def test_the_depth_limit_is_below_the_attacks() -> None:
    assert MAX_DEPTH < 500 and MAX_TWIML_CHARS >= 7 * 500 + 21


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_twiml(BILLION_LAUGHS), id="billion-laughs"),
        pytest.param(_twiml(XXE), id="xxe-file-etc-passwd"),
        pytest.param("<Response>" + "<a>" * 500 + "</a>" * 500 + "</Response>", id="deep"),
        pytest.param("<Response><Stream>&xxe;</Stream></Response>", id="undeclared-entity"),
        pytest.param(
            '<Response><Stream streamTimeout="' + "1" * 5000 + '">wss://a.example/b</Stream></Response>',
            id="timeout-5000-digits",  # found by the plivo_xml fuzzer: int()'s ValueError
        ),
    ],
)
def test_plivo_xml_attacks_are_refused_quickly(document: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PlivoXmlError) as caught:
        parse_plivo_xml(document, max_chars=1 << 20)
    assert time.perf_counter() - started < 0.5
    assert "root:" not in str(caught.value)
