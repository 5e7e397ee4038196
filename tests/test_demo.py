"""``siprec-src demo`` runs end to end and its SRS really refuses what an SRS must refuse."""

from __future__ import annotations

from siprec_src import __main__ as cli
from siprec_src.demo import DemoSrs, demo_metadata, run_demo
from siprec_src.metadata import read_metadata
from siprec_src.sip.headers import Headers
from siprec_src.sip.message import Request
from siprec_src.sip.multipart import BodyPart, encode_multipart
from siprec_src.sip.uri import SipUri


async def test_demo_passes_and_prints_the_flow() -> None:
    out: list[str] = []
    assert await run_demo(out)
    text = "\n".join(out)
    assert "demo passed" in text
    assert text.count("SIPREC INVITE (2 streams)") == 2


def test_metadata_escapes_display_names() -> None:
    metadata = read_metadata(demo_metadata("abc@host"))
    assert [p.name for p in metadata.participants] == ["Alice O'Brien & Sons", "Bob <support>"]
    assert [s.label for s in metadata.streams] == ["1", "2"]


def _invite(contact: str, require: bool) -> Request:
    content_type, body = encode_multipart(
        [
            BodyPart("application/sdp", b"v=0\r\n"),
            BodyPart(
                "application/rs-metadata+xml",
                demo_metadata("x@y"),
                (("Content-Disposition", "recording-session"),),
            ),
        ]
    )
    headers = Headers([("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"), ("Contact", contact)])
    if require:
        headers.add("Require", "siprec")
    headers.add("Content-Type", content_type)
    return Request("INVITE", SipUri("sip", "d", "c"), headers, body)


def test_demo_srs_checks() -> None:
    assert DemoSrs._check(_invite("<sip:src@h>;+sip.src", True)) is None
    assert DemoSrs._check(_invite("<sip:src@h>", True)) == "Contact lacks +sip.src"
    assert DemoSrs._check(_invite("<sip:src@h>;+sip.src", False)) == "no Require: siprec"


def test_cli_without_a_command_prints_help() -> None:
    assert cli.main([]) == 2
