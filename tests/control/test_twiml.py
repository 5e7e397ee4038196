"""The TwiML reader: the seed's documents, what the official helper library writes, and refusals.

Covers: every ``<Siprec>`` attribute and ``<Parameter>`` (escaped values included) read into
``StartSiprec``/``StopSiprec`` in document order; TwiML written by ``twilio.twiml``'s
``VoiceResponse``; verbs and nouns we do not run reported as ``Unsupported`` (never dropped);
one parametrized table of refused documents, each checked for its line, attribute and reason;
DTDs and entities refused (billion laughs, external entity) before any expansion; the size and
depth limits. Not covered here: running the instructions (test_twilio.py).
"""

from __future__ import annotations

import pytest
from twilio.twiml.voice_response import Start, Stop, VoiceResponse

from siprec_src.control.twiml import (
    MAX_DEPTH,
    MAX_TWIML_CHARS,
    StartSiprec,
    StopSiprec,
    TwimlError,
    Unsupported,
    parse_twiml,
)

SEED_EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Start>
    <Siprec name="my_stream_1" connectorName="Gridspace_1" track="outbound_track">
      <Parameter name="Custom1" value="Bob" />
      <Parameter name="Custom2" value="Blah" />
      <Parameter name="Custom3" value="Alice" />
    </Siprec>
  </Start>
  <Stop>
    <Siprec name="my_stream_1" />
  </Stop>
</Response>
"""


def test_the_seed_example_reads_in_document_order_with_lines() -> None:
    assert parse_twiml(SEED_EXAMPLE) == (
        StartSiprec(
            name="my_stream_1",
            connector_name="Gridspace_1",
            track="outbound_track",
            parameters=(("Custom1", "Bob"), ("Custom2", "Blah"), ("Custom3", "Alice")),
            line=4,
        ),
        StopSiprec("my_stream_1", line=11),
    )


def test_the_most_basic_siprec_leaves_every_default_to_the_executor() -> None:
    text = '<Response><Start><Siprec connectorName="my_addon_connector" /></Start></Response>'
    assert parse_twiml(text) == (StartSiprec(connector_name="my_addon_connector", line=1),)


def test_what_the_official_helper_library_writes() -> None:
    response = VoiceResponse()
    start = Start()
    siprec = start.siprec(
        name="rec-1",
        connector_name="Default",
        track="both_tracks",
        status_callback="https://example.com/cb?a=1&b=2",
        status_callback_method="GET",
    )
    siprec.parameter(name="Agent", value='O\'Brien & <Sons> "quoted"')
    siprec.parameter(name="Empty", value="")
    response.append(start)
    stop = Stop()
    stop.siprec(name="rec-1")
    response.append(stop)
    assert parse_twiml(str(response)) == (
        StartSiprec(
            name="rec-1",
            connector_name="Default",
            track="both_tracks",
            status_callback="https://example.com/cb?a=1&b=2",
            status_callback_method="GET",
            parameters=(("Agent", 'O\'Brien & <Sons> "quoted"'), ("Empty", "")),
            line=1,
        ),
        StopSiprec("rec-1", line=1),
    )


def test_verbs_and_nouns_we_do_not_run_are_reported_not_dropped() -> None:
    text = (
        "<Response>\n"
        "<Say>Hello</Say>\n"
        '<Start><Transcription/><Siprec connectorName="c"/></Start>\n'
        '<Stop><Transcription name="s"/></Stop>\n'
        '<Pause length="60"/>\n'
        "</Response>"
    )
    instructions = parse_twiml(text)
    assert instructions == (
        Unsupported("Say", None, 2),
        Unsupported("Start", "Transcription", 3),
        StartSiprec(connector_name="c", line=3),
        Unsupported("Stop", "Transcription", 4),
        Unsupported("Pause", None, 5),
    )
    unsupported = [i for i in instructions if isinstance(i, Unsupported)]
    assert [u.element for u in unsupported] == [
        "<Say>",
        "<Start><Transcription>",
        "<Stop><Transcription>",
        "<Pause>",
    ]


def test_an_empty_response_has_no_instructions() -> None:
    assert parse_twiml("<Response/>") == ()
    assert parse_twiml('<?xml version="1.0"?>\n<Response>\n</Response>') == ()


REFUSED = [
    # (document, line, attribute, words the reason must contain)
    ("<Respons/>", 1, None, "root element must be <Response>"),
    ('<Response version="2"/>', 1, "version", "no attribute 'version'"),
    ("<Response>\n<Start/>\n</Response>", 2, None, "<Start> needs a noun"),
    ('<Response><Start a="1"><Siprec/></Start></Response>', 1, "a", "<Start> has no attribute"),
    (
        '<Response>\n<Start>\n<Siprec connectorname="x"/></Start></Response>',
        3,
        "connectorname",
        "known: name, connectorName",
    ),
    ('<Response><Start><Siprec track=""/></Start></Response>', 1, "track", "track is empty"),
    ('<Response><Start><Siprec name="  "/></Start></Response>', 1, "name", "name is empty"),
    ("<Response><Stop>\n<Siprec/></Stop></Response>", 2, "name", "needs the name of the recording"),
    (
        '<Response><Stop><Siprec name="a"><Parameter name="x"/></Siprec></Stop></Response>',
        1,
        None,
        "no elements",
    ),
    ("<Response><Start><Siprec>\n<Param/></Siprec></Start></Response>", 2, None, "<Parameter> only"),
    (
        '<Response><Start><Siprec><Parameter value="v"/></Siprec></Start></Response>',
        1,
        "name",
        "needs a name",
    ),
    (
        '<Response><Start><Siprec><Parameter name="n" valu="v"/></Siprec></Start></Response>',
        1,
        "valu",
        "no attribute 'valu'",
    ),
    ("<Response>\n<Start><Siprec></Start>\n</Response>", 2, None, "mismatched tag"),
    ("<Response><Start><Siprec a='1' a='2'/></Start></Response>", 1, None, "duplicate attribute"),
    ("", 1, None, "no element found"),
    ("not xml at all", 1, None, "syntax error"),
    ("<Response/><Response/>", 1, None, "junk after document element"),
]


@pytest.mark.parametrize(("text", "line", "attribute", "reason"), REFUSED)
def test_refused_documents_say_where_and_why(
    text: str, line: int, attribute: str | None, reason: str
) -> None:
    with pytest.raises(TwimlError) as caught:
        parse_twiml(text)
    error = caught.value
    assert (error.line, error.attribute) == (line, attribute)
    assert reason in str(error)
    assert error.code == "invalid_twiml" and error.field == "Twiml"


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE Response [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Response><Start><Siprec name="&lol3;"/></Start></Response>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE Response SYSTEM "file:///etc/passwd">
<Response/>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, "<!doctype Response><Response/>"])
def test_dtds_and_entities_are_refused(text: str) -> None:
    with pytest.raises(TwimlError, match="DTDs and entities are refused"):
        parse_twiml(text)


def test_size_limit_is_twilios_4000_characters() -> None:
    body = '<Response><Start><Siprec connectorName="c"/></Start></Response>'
    padded = body + " " * (MAX_TWIML_CHARS - len(body))
    assert len(padded) == MAX_TWIML_CHARS
    assert parse_twiml(padded) == (StartSiprec(connector_name="c", line=1),)
    with pytest.raises(TwimlError) as caught:
        parse_twiml(padded + " ")
    assert caught.value.code == "twiml_too_large"
    assert "4001 characters, more than the 4000" in str(caught.value)


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    deep = "<Response>" + "<Say>" * MAX_DEPTH + "</Say>" * MAX_DEPTH + "</Response>"
    with pytest.raises(TwimlError, match=f"deeper than {MAX_DEPTH} levels"):
        parse_twiml(deep, max_chars=10_000)
    shallow = "<Response>" + "<Say>" * (MAX_DEPTH - 1) + "</Say>" * (MAX_DEPTH - 1) + "</Response>"
    assert parse_twiml(shallow, max_chars=10_000) == (Unsupported("Say", None, 1),)
