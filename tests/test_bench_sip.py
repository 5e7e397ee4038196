"""Smoke test of benchmarks/bench_sip.py with tiny counts, so the benchmark cannot rot.

Covers: the SIPREC INVITE and 200 OK parse and round-trip byte for byte, the metadata is
well-formed RFC 7865 XML, every benchmark function runs, and the JSON report has its shape.
Does not cover speed: no figure is compared with any threshold.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import bench_sip
from siprec_src.sip.message import Request, Response, parse_message
from siprec_src.sip.multipart import decode_multipart

TINY = bench_sip.Counts(
    codec_iterations=3, repeats=1, options=10, options_window=3, dialogs=4, dialogs_window=2
)


def test_siprec_messages_round_trip() -> None:
    invite = bench_sip.siprec_invite()
    raw = bytes(invite)
    parsed = parse_message(raw)
    assert isinstance(parsed, Request) and bytes(parsed) == raw
    assert parsed.header_tokens("Require") == {"siprec"}
    assert parsed.contacts[0].param("+sip.src") == ""
    parts = decode_multipart(parsed.content_type or "", parsed.body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/rs-metadata+xml"]
    assert parts[1].header("Content-Disposition") == "recording-session"
    root = ET.fromstring(parts[1].body)
    assert root.tag == "{urn:ietf:params:xml:ns:recording:1}recording"
    ok_raw = bytes(bench_sip.siprec_ok(invite))
    ok = parse_message(ok_raw)
    assert isinstance(ok, Response) and ok.status == 200 and bytes(ok) == ok_raw


async def test_benchmarks_run_and_report(tmp_path: Path) -> None:
    figures = bench_sip.bench_codec(TINY.codec_iterations, TINY.repeats)
    figures += await bench_sip.bench_loopback(TINY)
    for figure in figures:
        if "transport" in figure.params:
            assert figure.params["failed"] == 0, figure

    report = bench_sip.build_report(figures, TINY, "asyncio", quick=True)
    path = bench_sip.write_report(report, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("sip-") and path.suffix == ".json"
    loaded = json.loads(path.read_text(encoding="utf-8"))
    for key in ("timestamp", "host", "python", "loop", "cpu_count", "counts", "figures"):
        assert key in loaded
    names = {f["name"] for f in loaded["figures"]}
    assert {"invite.parse.time", "options_udp.rate", "options_tcp.cpu", "dialogs_udp.rate"} <= names
    for entry in loaded["figures"]:
        assert set(entry) == {"name", "value", "unit", "params"}
        assert isinstance(entry["value"], float) and entry["unit"]
    assert "invite.parse.time" in bench_sip.format_table(figures)
