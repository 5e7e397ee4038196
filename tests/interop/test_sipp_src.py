"""SIPp (Debian sip-tester) as a vendor-style SIPREC SRC against our reference SRS, on loopback.

Covers: SIPp sends the INVITE an Acme Packet SBC sends (Require: siprec, +sip.src, Session-Expires,
multipart/mixed with two labelled sendonly m-lines and the vendor's own pre-RFC metadata document,
read in place from fixtures/vendor-siprec), checks our 200 (recvonly, the labels, the session
timer) with ``check_it`` regexps, ACKs, plays a 700 Hz tone as RTP from a pcap made here with the
stdlib (``play_pcap_audio``, raw sockets: the tests run as root), and ends with BYE. Then the
files: the first stream's WAV holds the tone for the pcap's length, the second is empty, and
session.json names the vendor's participants and whose voice is in which file.

Not covered: TLS (Debian's SIPp has no OpenSSL), SRTP (SIPp's pcap play cannot protect).
"""

from __future__ import annotations

import asyncio
import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from siprec_src.signaling.transport import ListenSpec
from siprec_src.srs.plot import dominant_frequency
from siprec_src.srs.server import SrsServer
from tests.interop.src.pcap import rtp_packets, tone_frames, write_rtp_pcap
from tests.interop.src.scenario import siprec_uac_scenario
from tests.interop.srs.harness import free_media_port, free_port, parse_message_log, sipp_binary

pytestmark = pytest.mark.interop

TONE = 700.0
SECONDS = 1.0
ACME_LABELS = ("16777227", "16777228")


def acme_metadata(fixtures_dir: Path) -> str:
    """The metadata part of the Acme Packet capture, as the SBC wrote it."""
    raw = (fixtures_dir / "vendor-siprec" / "acme-siprec-offer.txt").read_text()
    match = re.search(r"(<\?xml.*?</recording>)", raw, re.S)
    assert match, "the Acme capture has no metadata document"
    return match.group(1)


async def test_sipp_as_a_vendor_src_records_a_tone(tmp_path: Path, fixtures_dir: Path) -> None:
    pcap = write_rtp_pcap(tmp_path / "tone.pcap", rtp_packets(tone_frames(TONE, SECONDS), ssrc=0x5151))
    scenario = tmp_path / "vendor_src.xml"
    scenario.write_text(
        siprec_uac_scenario(acme_metadata(fixtures_dir), pcap, labels=ACME_LABELS, hold_ms=1800)
    )
    out = tmp_path / "recordings"
    async with SrsServer([ListenSpec("udp", "127.0.0.1", 0)], out) as server:
        port = server.addresses[0].port
        process = await asyncio.create_subprocess_exec(
            sipp_binary(),
            "-sf",
            str(scenario),
            f"127.0.0.1:{port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port("udp")),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(free_media_port()),
            "-m",
            "1",
            "-timeout",
            "20s",
            "-nostdin",
            "-trace_msg",
            "-trace_err",
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(25):
                _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
        errors = "\n".join(text[-2000:] for name, text in logs.items() if "error" in name)
        failure = f"sipp exited {process.returncode}: {stderr.decode()[-800:]}\n{errors}"
        assert process.returncode == 0, failure
        record = await server.next_ended(timeout=5)

    trace = parse_message_log(next(text for name, text in logs.items() if name.endswith("messages.log")))
    (ok,) = [
        m
        for m in trace
        if m.direction == "received" and m.status == 200 and "INVITE" in (m.header("CSeq") or "")
    ]
    assert "+sip.src" not in (ok.header("Contact") or "")

    document = json.loads(record.json_path.read_text())
    assert document["end_reason"] == "bye-from-src"
    assert 'text="call ended"' in (document["end_detail"] or "")
    assert document["sip"]["user_agent"] == "SIPp vendor-style SRC"
    people = {(p["aor"], p["name"]) for p in document["metadata"]["participants"]}
    assert people == {("sip:9000@192.168.50.102", "9000"), ("sip:1002@192.168.50.10", "1002")}
    streams = {s["label"]: s for s in document["streams"]}
    assert list(streams) == list(ACME_LABELS)
    assert [v["aor"] for v in streams["16777227"]["voice_of"]] == ["sip:9000@192.168.50.102"]
    assert [v["aor"] for v in streams["16777228"]["voice_of"]] == ["sip:1002@192.168.50.10"]
    assert streams["16777227"]["stats"]["packets"] == round(SECONDS * 50)
    assert streams["16777228"]["stats"]["packets"] == 0

    with wave.open(str(record.wav_path("16777227")), "rb") as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert samples.size / rate == pytest.approx(SECONDS, abs=0.05)
    assert dominant_frequency(samples, rate) == pytest.approx(TONE, abs=5)
    with wave.open(str(record.wav_path("16777228")), "rb") as reader:
        assert reader.getnframes() == 0
