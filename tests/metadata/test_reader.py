"""Tolerant reader of SIPREC bodies and recording metadata (siprec_src.metadata.reader).

Covers: one parametrized test over every vendor capture in fixtures/vendor-siprec (participants
with AORs and names, streams with labels, who sends which stream, that metadata labels and SDP
``a=label`` lines match), the non-SIPREC capture refused; the dialects one by one (BroadWorks'
early-draft document with its single mixed stream is built here, since the capture of it lost its
markup, see below); the refusals (DTD/entities in any encoding, billion laughs, external
entities, oversize, depth, malformed XML, wrong root, bad dataMode, missing or duplicate IDs,
ambiguous bodies); our own ``to_xml`` read back equal to the model; that any input raises only
``MetadataError``.
Does not cover: what an SRS answers (the status hint is only checked here).

Findings in the vendor data (each is asserted below):
- broadworks-offer.txt: the metadata part lost its XML markup somewhere before it was saved (only
  the text nodes are left) and its Content-Type reads ``application/ +xml``. It is found by its
  ``Content-Disposition: recording-session`` and read as a document with no participants and no
  streams; its SDP still has one mixed m-line, ``a=label:1``. Exception to the label check.
- Connectel sends no ``<participantstreamassoc>`` and Cisco's inactive-SDP capture sends empty
  ones: the streams have no known sender. Connectel's ``<name>`` holds URI parameters
  (``test_user;lang=en-US;id=22``), kept as sent.
- Sonus crosses the labels: participant 8500 sends stream label 2. Sonus and Intrado send AORs
  without a ``sip:`` scheme (kept as sent), and blank ``<name>`` elements (read as no name).
- Intrado's single participant both sends and receives its single stream.
- Acme/Avaya times have no UTC offset (read as UTC).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_src.metadata.model import (
    PARAMS_NAMESPACE,
    ExtensionData,
    RecordingMetadata,
    for_call,
    merge,
    participant_joined,
    participant_left,
    stream_added,
)
from siprec_src.metadata.reader import (
    MAX_DEPTH,
    MAX_METADATA_BYTES,
    MetadataError,
    parse_time,
    read_metadata,
    read_siprec_body,
)
from siprec_src.metadata.xml import to_xml
from siprec_src.sip.multipart import BodyPart, encode_multipart

NOW = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=label:1\r\n"
)


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return self.n.to_bytes(size, "big")


# --- the vendor corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    participants: tuple[tuple[str, str | None], ...]
    labels: tuple[str, ...]
    # label -> AORs of the participants whose voice is on it, where the capture says so.
    senders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # SDP labels with no metadata stream (documented exceptions, see the module docstring).
    sdp_only_labels: tuple[str, ...] = ()


CONNECTEL_CALLEE = ("sip:0760516936@sip-cust1.connectel.io", None)
CAPTURES: dict[str, Capture] = {
    "acme-siprec-offer.txt": Capture(
        (("sip:9000@192.168.50.102", "9000"), ("sip:1002@192.168.50.10", "1002")),
        ("16777227", "16777228"),
        {"16777227": ("sip:9000@192.168.50.102",), "16777228": ("sip:1002@192.168.50.10",)},
    ),
    "avaya-siprec-offer.txt": Capture(
        (
            ("sip:31624895902@10.10.128.62", "31624895902"),
            ("sip:33187164021@sip.webhelpgroupe.lan", "33187164021"),
        ),
        ("201835599", "201835600"),
        {
            "201835599": ("sip:31624895902@10.10.128.62",),
            "201835600": ("sip:33187164021@sip.webhelpgroupe.lan",),
        },
    ),
    "broadworks-offer-2.txt": Capture(
        (("sip:9878942259@212.188.68.145", None), ("sip:ASBCE@asbce.com", None)),
        ("10", "20"),
        {"10": ("sip:9878942259@212.188.68.145",), "20": ("sip:ASBCE@asbce.com",)},
    ),
    "broadworks-offer.txt": Capture((), (), sdp_only_labels=("1",)),
    "cisco-siprec-offer.txt": Capture(
        (("sip:7301@35.162.237.204", None), ("sip:7300@35.162.237.204", "7300")),
        ("1", "2"),
        {"1": ("sip:7301@35.162.237.204",), "2": ("sip:7300@35.162.237.204",)},
    ),
    "connectel-offer.txt": Capture(
        (("sip:0771121212@52.57.92.239", "test_user;lang=en-US;id=22"), CONNECTEL_CALLEE), ("1", "2")
    ),
    "connectel-offer2.txt": Capture(
        (("sip:0771121212@52.57.92.239", "test_user;lang=en-US"), CONNECTEL_CALLEE), ("1", "2")
    ),
    "connectel-offer3.txt": Capture(
        (("sip:0771121212@52.57.92.239", "test_user"), CONNECTEL_CALLEE), ("1", "2")
    ),
    "inactive-sdp-offer.txt": Capture(
        (("sip:0733165805@192.168.40.34", None), ("sip:+972546136443@192.168.10.140", None)), ("1", "2")
    ),
    "intrado-siprec-invite.txt": Capture(
        (("4058327108@10.105.190.136:5060", None),), ("1",), {"1": ("4058327108@10.105.190.136:5060",)}
    ),
    "procomm-siprec-offer.txt": Capture(
        (
            ("sip:016190200@87.252.209.116", "016190200"),
            ("Extension-016190619@speechpath.ie", "Speechpath-Main-Line 016190619"),
        ),
        ("a_leg", "b_leg"),
        {"a_leg": ("sip:016190200@87.252.209.116",), "b_leg": ("Extension-016190619@speechpath.ie",)},
    ),
    "sonus-siprec-offer.txt": Capture(
        (("2249888500@172.16.198.55", "Extension 8500"), ("2249888012@172.16.195.72", None)),
        ("1", "2"),
        {"1": ("2249888012@172.16.195.72",), "2": ("2249888500@172.16.198.55",)},
    ),
}
NOT_SIPREC = "non-siprec-payload.txt"


def load(fixtures_dir: Path, name: str) -> tuple[str, bytes]:
    """(Content-Type, body) as the SRS would have received them.

    The captures are bodies without their SIP message, except Intrado's, which is a whole
    INVITE: its Content-Type comes from its headers. For the others the boundary is the one of
    the first delimiter line; a capture with no delimiter at all is a bare SDP body.
    """
    path = fixtures_dir / "vendor-siprec" / name
    assert path.is_file(), f"missing vendor capture {path}"
    raw = path.read_bytes()
    if raw.startswith(b"INVITE "):
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        values = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\n")
            if line.lower().startswith(b"content-type:")
        ]
        assert len(values) == 1, f"{name}: expected one Content-Type header"
        return values[0].decode(), body
    delimiter = re.search(rb"^--(\S+?)\s*$", raw, re.M)
    if delimiter is None:
        return "application/sdp", raw
    return f'multipart/mixed;boundary="{delimiter.group(1).decode()}"', raw


def sdp_labels(sdp: bytes) -> list[str]:
    return [label.decode() for label in re.findall(rb"^a=label:(.+?)\r?$", sdp, re.M)]


def test_every_capture_is_in_the_table(fixtures_dir: Path) -> None:
    names = {path.name for path in (fixtures_dir / "vendor-siprec").iterdir()}
    assert names == {*CAPTURES, NOT_SIPREC}


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_vendor_capture(fixtures_dir: Path, name: str) -> None:
    expected = CAPTURES[name]
    content_type, body = load(fixtures_dir, name)
    sdp, md = read_siprec_body(content_type, body)
    assert sdp.startswith(b"v=0")
    assert md.data_mode == "complete"
    assert tuple((p.aor, p.name) for p in md.participants) == expected.participants
    assert all(p.participant_id for p in md.participants)
    assert tuple(s.label for s in md.streams) == expected.labels
    for label, aors in expected.senders.items():
        stream = md.stream_by_label(label)
        assert stream is not None
        assert tuple(p.aor for p in md.senders(stream.stream_id)) == aors
    if not expected.senders:
        assert all(md.senders(s.stream_id) == () for s in md.streams)
    # Each metadata label names an SDP m-line (RFC 7866 §9.1, RFC 4574) and the other way round.
    in_sdp = sdp_labels(sdp)
    assert in_sdp, f"{name}: the SDP has no a=label"
    assert sorted(expected.labels) == sorted(set(in_sdp) - set(expected.sdp_only_labels))


def test_non_siprec_capture_is_refused(fixtures_dir: Path) -> None:
    content_type, body = load(fixtures_dir, NOT_SIPREC)
    assert content_type == "application/sdp"
    with pytest.raises(MetadataError, match=r"no application/rs-metadata\+xml part") as refused:
        read_siprec_body(content_type, body)
    assert refused.value.status_hint == 415
    # Sent with a multipart Content-Type it has no delimiter: malformed, 400.
    with pytest.raises(MetadataError, match="not a SIPREC body: multipart body has no delimiter") as refused:
        read_siprec_body("multipart/mixed;boundary=uniqueBoundary", body)
    assert refused.value.status_hint == 400


def test_capture_details(fixtures_dir: Path) -> None:
    """Dialect details the table above does not show."""
    _, acme = read_siprec_body(*load(fixtures_dir, "acme-siprec-offer.txt"))
    # Pre-RFC: session= on <participant>, <associate-time> without offset read as UTC.
    assert acme.participants[0].session_id == acme.sessions[0].session_id
    assert acme.participants[0].associate_time == datetime(2019, 3, 9, 16, 50, 20, tzinfo=UTC)
    assert acme.extensions[0] == ExtensionData(
        "http://acmepacket.com/siprec/extensiondata",
        (("callingParty", "true"),),
        acme.participants[0].participant_id,
    )
    _, avaya = read_siprec_body(*load(fixtures_dir, "avaya-siprec-offer.txt"))
    caller_ext = next(e for e in avaya.extensions if e.parent == avaya.participants[0].participant_id)
    assert ("header@label", "Call-ID") in caller_ext.elements
    assert ("header/value", "134485702_44821128@10.10.128.62") in caller_ext.elements
    assert avaya.session_recording_assocs[0].associate_time == datetime(2020, 3, 27, 13, 56, 5, tzinfo=UTC)
    _, sonus = read_siprec_body(*load(fixtures_dir, "sonus-siprec-offer.txt"))
    assert sonus.sessions[0].group_id == sonus.groups[0].group_id
    (call_data,) = sonus.extensions
    assert (
        call_data.namespace == "urn:ietf:params:xml:ns:callData"
        and call_data.parent == sonus.groups[0].group_id
    )
    assert ("callData/callid", "2da553f7-a48b-1235-d6a2-5254003a4988") in call_data.elements
    _, intrado = read_siprec_body(*load(fixtures_dir, "intrado-siprec-invite.txt"))
    assert intrado.sessions[0].start_time == datetime(2022, 7, 21, 18, 36, 6, tzinfo=UTC)
    _, cisco = read_siprec_body(*load(fixtures_dir, "cisco-siprec-offer.txt"))
    assert cisco.sessions[0].sip_session_ids == (
        "e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b",
    )


# --- dialects ----------------------------------------------------------------------------------------

# Modelled on BroadWorks' early-draft documents (namespace urn:ietf:params:xml:ns:siprec): two
# participants send one mixed stream. Written for this test, not copied from a capture.
BROADWORKS_DRAFT = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
<dataMode>complete</dataMode>
<recording id="urn:uuid:r1"><requestor>SRC</requestor><type>selective</type></recording>
<group id="urn:uuid:g1" recording="urn:uuid:r1"><initiator>sip:alice@example.com</initiator></group>
<session id="urn:uuid:s1" group="urn:uuid:g1"><start-time>2019-01-13T14:48:35-05:00</start-time></session>
<participant id="urn:uuid:p1" session="urn:uuid:s1"><aor>sip:alice@example.com</aor>
<send><id>urn:uuid:m1</id></send></participant>
<participant id="urn:uuid:p2" session="urn:uuid:s1"><aor>sip:+15551234567@example.com;user=phone</aor>
<send><id>urn:uuid:m1</id></send></participant>
<stream id="urn:uuid:m1" session="urn:uuid:s1"><label>1</label><mode>mixed</mode></stream>
<extensiondata id="urn:uuid:e1" parent="urn:uuid:s1">
<callInfo xmlns="http://example.com/callinfo" version="1.0"><callID>callhalf-1:0</callID></callInfo>
</extensiondata>
</recording_metadata>"""


def test_broadworks_early_draft_with_one_mixed_stream() -> None:
    md = read_metadata(BROADWORKS_DRAFT)
    assert [p.aor for p in md.participants] == [
        "sip:alice@example.com",
        "sip:+15551234567@example.com;user=phone",
    ]
    assert md.sessions[0].group_id == "urn:uuid:g1"
    assert md.sessions[0].start_time == datetime(2019, 1, 13, 19, 48, 35, tzinfo=UTC)
    (stream,) = md.streams
    assert stream.label == "1" and stream.session_id == "urn:uuid:s1"
    assert [p.participant_id for p in md.senders(stream.stream_id)] == ["urn:uuid:p1", "urn:uuid:p2"]
    assert md.extensions == (
        ExtensionData(
            "http://example.com/callinfo",
            (("callInfo@version", "1.0"), ("callInfo/callID", "callhalf-1:0")),
            "urn:uuid:s1",
        ),
    )


def test_no_namespace_mixed_case_and_partial() -> None:
    md = read_metadata(
        b"<recording><DATAMODE> Partial </DATAMODE>"
        b"<participantsessionassoc participant_id='p' session_id='s'>"
        b"<disassociate-time>2024-01-01T00:00:00+01:00</disassociate-time></participantsessionassoc>"
        b"</recording>"
    )
    assert md.data_mode == "partial"
    (person,) = md.participants
    assert (person.aor, person.session_id) == ("", "s")
    assert person.disassociate_time == datetime(2023, 12, 31, 23, 0, tzinfo=UTC)


def test_session_end_read_from_stop_time_or_end_time() -> None:
    for tag in (b"stop-time", b"end-time"):
        md = read_metadata(
            b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><session session_id='s'><"
            + tag
            + b">2024-01-01T00:00:00Z</"
            + tag
            + b"></session></recording>"
        )
        assert md.sessions[0].end_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_unknown_elements_are_ignored_and_bad_times_dropped() -> None:
    md = read_metadata(
        b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><future-element/>"
        b"<session session_id='s'><start-time>yesterday</start-time><surprise>x</surprise></session>"
        b"</recording>"
    )
    assert md.sessions[0].start_time is None


def test_extensions_inside_associations_belong_to_their_block() -> None:
    md = read_metadata(
        b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'>"
        b"<participantstreamassoc participant_id='p'><send>s</send><x:k xmlns:x='urn:x'>v</x:k>"
        b"<associate-time>2024-01-01T00:00:00Z</associate-time></participantstreamassoc>"
        b"<sessionrecordingassoc session_id='s'><x:k xmlns:x='urn:x'>w</x:k></sessionrecordingassoc>"
        b"</recording>"
    )
    assert md.extensions == (
        ExtensionData("urn:x", (("k", "v"),), "p"),
        ExtensionData("urn:x", (("k", "w"),), "s"),
    )
    assert md.participant_stream_assocs[0].associate_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_body_part_selection() -> None:
    metadata = to_xml(two_party())
    legacy = BodyPart("application/rs-metadata", metadata, (("Content-Disposition", "recording-session"),))
    mangled = BodyPart("application/ +xml", metadata, (("Content-Disposition", "recording-session"),))
    extra = BodyPart("application/gtd", b"IAM,\r\n", (("Content-Disposition", "signal;handling=optional"),))
    sdp = BodyPart("application/sdp", SDP)
    for parts in ([sdp, legacy, extra], [mangled, sdp]):
        content_type, body = encode_multipart(parts)
        assert read_siprec_body(content_type, body) == (SDP, two_party())
    cases: list[tuple[list[BodyPart], str, int]] = [
        ([sdp, legacy, legacy], "2 recording metadata parts", 400),
        ([sdp, sdp, legacy], "2 application/sdp parts", 400),
        ([legacy], "no application/sdp part", 415),
        ([sdp, extra], r"no application/rs-metadata\+xml part", 415),
    ]
    for parts, match, status in cases:
        content_type, body = encode_multipart(parts)
        with pytest.raises(MetadataError, match=match) as refused:
            read_siprec_body(content_type, body)
        assert refused.value.status_hint == status


def test_bad_content_type_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError, match="not a SIPREC body"):
        read_siprec_body("multipart", b"")


# --- refusals ----------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><dataMode>&lol3;</dataMode></recording>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE recording [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"><dataMode>&xxe;</dataMode></recording>"""


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_ENTITY, "DOCTYPE"),
        (b'<!DOCTYPE recording SYSTEM "http://example.com/x.dtd"><recording/>', "DOCTYPE"),
        (b"<recording><!ENTITY x 'y'></recording>", "ENTITY"),
        # UTF-16: the byte search cannot see "<!DOCTYPE"; the parser's own handler refuses it.
        (
            '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><recording/>'.encode(
                "utf-16"
            ),
            "DOCTYPE",
        ),
        (b"<recording><dataMode>&undefined;</dataMode></recording>", "undefined entity"),
        (b"<recording><dataMode>complete</recording>", "not well-formed"),
        (b"", "not well-formed"),
        (b"<recording/><recording/>", "not well-formed"),
        (b"<a>" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
        (b"<html xmlns='http://www.w3.org/1999/xhtml'/>", "not recording metadata"),
        (b"<recording xmlns='urn:example'/>", "not recording metadata"),
        (b"<recording><dataMode>sometimes</dataMode></recording>", "neither 'complete' nor 'partial'"),
        (
            b"<recording><participant><nameID aor='sip:a@b'/></participant></recording>",
            "without participant_id",
        ),
        (b"<recording><stream stream_id='a'/><stream id='a'/></recording>", "two blocks with stream_id 'a'"),
    ],
)
def test_refused_documents(document: bytes, match: str) -> None:
    with pytest.raises(MetadataError, match=match) as refused:
        read_metadata(document)
    assert refused.value.status_hint == 400


def test_oversize_document_is_refused_before_parsing() -> None:
    padding = b"<!--" + b"x" * MAX_METADATA_BYTES + b"-->"
    document = b"<recording>" + padding + b"</recording>"
    with pytest.raises(MetadataError, match="more than the 65536 accepted") as refused:
        read_metadata(document)
    assert refused.value.status_hint == 413
    assert read_metadata(document, max_bytes=len(document)) == RecordingMetadata()
    # The limit also applies inside a SIPREC body.
    content_type, body = encode_multipart(
        [BodyPart("application/sdp", SDP), BodyPart("application/rs-metadata+xml", to_xml(two_party()))]
    )
    with pytest.raises(MetadataError, match="accepted"):
        read_siprec_body(content_type, body, max_metadata_bytes=100)


def test_parse_time() -> None:
    assert parse_time("2017-06-23T12:16:06.040Z") == datetime(2017, 6, 23, 12, 16, 6, 40000, tzinfo=UTC)
    assert parse_time(" 2022-07-21T12:36:06-06:00 ") == datetime(2022, 7, 21, 18, 36, 6, tzinfo=UTC)
    assert parse_time("2019-03-09T16:50:20") == datetime(2019, 3, 9, 16, 50, 20, tzinfo=UTC)
    assert parse_time("not a time") is None
    assert parse_time("2019-03-09T16:50:20+05:30") == datetime(
        2019, 3, 9, 16, 50, 20, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )


# --- round trips ---------------------------------------------------------------------------------------


def two_party() -> RecordingMetadata:
    return for_call(
        "a84b4c76e66710@pc33.atlanta.example.com",
        [("sip:o'brien&sons@example.com", '"O\'Brien & Sons <sales>"'), ("sip:bob@biloxi.example.com", None)],
        [("1", 0, [1]), ("2", 1, [0])],
        NOW,
        Counter(),
        custom_parameters=[("X-Tenant", "acme & co"), ("X-Trace", "  spaced  ")],
    )


def test_own_output_reads_back_equal() -> None:
    md = two_party()
    assert read_metadata(to_xml(md)) == md
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", SDP),
            BodyPart(
                "application/rs-metadata+xml", to_xml(md), (("Content-Disposition", "recording-session"),)
            ),
        ]
    )
    assert read_siprec_body(content_type, body) == (SDP, md)


def test_partial_updates_read_back_equal() -> None:
    rng = Counter()
    snapshot = two_party()
    joined = participant_joined(snapshot, "sip:carol@example.com", "Carol", NOW, rng, send_labels=["2"])
    assert read_metadata(to_xml(joined)) == joined
    snapshot = merge(snapshot, joined)
    added = stream_added(snapshot, "3", joined.participants[0].participant_id, [], NOW, rng)
    assert read_metadata(to_xml(added)) == added
    left = participant_left(merge(snapshot, added), snapshot.participants[1].participant_id, NOW)
    assert read_metadata(to_xml(left)) == left
    ended = RecordingMetadata("partial", sessions=(replace(snapshot.sessions[0], end_time=NOW),))
    assert read_metadata(to_xml(ended)) == ended
    # What an SRS does with them: fold each into its snapshot, as the SRC did.
    srs_view = read_metadata(to_xml(snapshot))
    for update in (added, left):
        srs_view = merge(srs_view, read_metadata(to_xml(update)))
    assert srs_view == merge(merge(snapshot, added), left)


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=30).filter(
    lambda s: s == s.strip()
)


@settings(max_examples=150, deadline=None)
@given(
    aors=st.lists(_TEXT, min_size=1, max_size=4),
    names=st.lists(st.none() | _TEXT, min_size=4, max_size=4),
    labels=st.lists(_TEXT, min_size=1, max_size=4, unique=True),
    params=st.lists(
        st.tuples(_TEXT, st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")))), max_size=3
    ),
)
def test_round_trip_property(
    aors: list[str], names: list[str | None], labels: list[str], params: list[tuple[str, str]]
) -> None:
    people = [(aor, names[i]) for i, aor in enumerate(aors)]
    streams = [
        (label, i % len(people), [j for j in range(len(people)) if j != i % len(people)])
        for i, label in enumerate(labels)
    ]
    md = for_call("call", people, streams, NOW, Counter(), custom_parameters=params)
    assert read_metadata(to_xml(md)) == md


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_raise_only_metadata_error(data: bytes) -> None:
    with contextlib.suppress(MetadataError):
        read_metadata(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_documents_raise_only_metadata_error(data: st.DataObject) -> None:
    document = bytearray(to_xml(two_party()))
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(document) - 1))
        document[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MetadataError):
        read_metadata(bytes(document))


def test_params_namespace_constant_is_what_the_writer_uses() -> None:
    assert f'xmlns="{PARAMS_NAMESPACE}"'.encode() in to_xml(two_party())
