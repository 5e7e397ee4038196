"""``siprec-src demo`` records a call end to end and fails when the audio is not where it belongs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from siprec_src import __main__ as cli
from siprec_src.demo import StreamCheck, format_result, run_demo
from siprec_src.media.spec import Leg

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("secure", [True, False], ids=["tls-srtp", "udp-rtp"])
async def test_demo_records_each_leg_into_its_own_file(secure: bool, tmp_path: Path) -> None:
    result = await run_demo(tmp_path, duration=1.0, secure=secure)
    assert result.problems == []
    by_leg = {c.leg: c for c in result.streams}
    assert by_leg[Leg.INBOUND].voice_of == "Alice" and by_leg[Leg.OUTBOUND].voice_of == "Bob"
    assert round(by_leg[Leg.INBOUND].frequency) in range(435, 446)
    assert round(by_leg[Leg.OUTBOUND].frequency) in range(1240, 1261)
    for check in result.streams:
        assert check.sent == 50 and check.received == 50 and check.lost == 0
        assert check.srtp_suite == ("AES_CM_128_HMAC_SHA1_80" if secure else None)
        assert 0.9 < check.seconds < 1.1
    assert result.png is not None and result.png.read_bytes().startswith(PNG_SIGNATURE)
    assert result.session_json is not None and result.session_json.exists()
    messages = [what.split("  [")[0] for _, what in result.flow]
    assert messages[0].startswith("INVITE sip") and "Require: siprec" in result.flow[0][1]
    assert [m.split()[0] for m in messages if not m.startswith("100 ")] == [
        "INVITE",
        "200",
        "ACK",
        "BYE",
        "200",
    ]
    text = format_result(result)
    assert "OK: each leg's tone is in its own file" in text and "FAILED" not in text


def _check(**changes: object) -> StreamCheck:
    values: dict[str, object] = {
        "label": "1",
        "leg": Leg.INBOUND,
        "voice_of": "Alice",
        "expected_voice": "Alice",
        "srtp_suite": None,
        "sent": 200,
        "received": 200,
        "lost": 0,
        "jitter_ms": 0.1,
        "wav": Path("stream-1.wav"),
        "seconds": 4.0,
        "frequency": 440.0,
    }
    values.update(changes)
    return StreamCheck(**values)  # type: ignore[arg-type]


def test_a_correct_stream_passes() -> None:
    assert _check().problems == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"frequency": 1250.0}, "tone is 1250 Hz"),  # the legs swapped: outbound audio in the inbound file
        ({"frequency": 0.0}, "tone is 0 Hz"),  # silence
        ({"voice_of": "Bob"}, "metadata says Bob"),
        ({"received": 150, "lost": 50}, "150 received"),
        ({"sent": 0, "received": 0}, "0 packets sent"),
    ],
)
def test_the_demo_fails_when_audio_lands_in_the_wrong_place(changes: dict[str, object], says: str) -> None:
    problems = _check(**changes).problems
    assert len(problems) == 1 and says in problems[0]


def test_make_demo_command_exits_0_and_prints_the_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "siprec_src", "demo", "--out", str(tmp_path), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "stream  leg" in done.stdout and (tmp_path / "demo.png").exists()


def test_cli_without_a_command_prints_help() -> None:
    assert cli.main([]) == 2
