"""Interop: ``siprec-src record`` (the real SRC: RecordingSession, Engine, media) against SIPp SRSs.

Each test runs the CLI as a user would (``python -m siprec_src record ... --json``) against one
or two SIPp SRS scenarios (tests/interop/srs/scenarios), and asserts both exit statuses: the
CLI's (0 only when recorded and ended cleanly) and SIPp's (0 only when every regex check on
the SIPREC INVITE held and the call flow was the scenario's). tshark reads a capture to check
what SIPp cannot: the metadata is well-formed XML whose labels match the SDP's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop.srs.capture import Capture, siprec_problems
from tests.interop.srs.harness import AUTH_PASSWORD, AUTH_USER, SippResult, SippSrs, TlsFiles
from tests.pki import make_pki

pytestmark = pytest.mark.interop


async def record(*args: str, timeout: float = 25.0) -> tuple[int, dict[str, Any], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "siprec_src",
        "record",
        "--json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    summary = json.loads(out) if out.strip() else {}
    assert process.returncode is not None
    return process.returncode, summary, err.decode()


def assert_ok(result: SippResult | None) -> None:
    assert result is not None and result.ok, result.summary() if result else "SIPp did not run"


def events(summary: dict[str, Any]) -> list[str]:
    return [e["event"] for e in summary["events"]]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_record_both_tracks(transport: str, tmp_path: Path) -> None:
    async with SippSrs("srs_accept", tmp_path, transport=transport) as srs:
        status, summary, err = await record("--srs", srs.uri, "--duration", "1")
    assert status == 0, err
    assert_ok(srs.result)
    assert summary["final_sip_status"] == 200 and summary["srs"] == srs.uri
    assert [(s["label"], s["track"]) for s in summary["streams"]] == [
        ("1", "inbound_track"),
        ("2", "outbound_track"),
    ]
    assert all(s["packets_sent"] == 50 and s["bytes_sent"] == 8000 for s in summary["streams"])
    assert events(summary) == ["AttemptStarted", "RecordingStarted", "RecordingStopped"]


async def test_record_one_track_with_params(tmp_path: Path) -> None:
    async with SippSrs("srs_accept", tmp_path) as srs:
        status, summary, err = await record(
            "--srs", srs.uri, "--duration", "0.5", "--track", "inbound_track", "--param", "CustomerId=42"
        )
    assert status == 0, err
    assert_ok(srs.result)
    (invite,) = srs.result.received("INVITE")  # type: ignore[union-attr]
    assert invite.header("X-CustomerId") == "42"
    assert [s["track"] for s in summary["streams"]] == ["inbound_track"]


async def test_record_retries_after_422_with_min_se(tmp_path: Path) -> None:
    async with SippSrs("srs_422", tmp_path) as srs:
        status, _summary, err = await record("--srs", srs.uri, "--duration", "0.5", "--session-timeout", "90")
    assert status == 0, err
    assert_ok(srs.result)
    invites = srs.result.received("INVITE")  # type: ignore[union-attr]
    assert invites[0].header("Session-Expires") == "90;refresher=uac"
    assert invites[1].header("Session-Expires") == "1800;refresher=uac"
    assert invites[1].header("Min-SE") == "1800"


async def test_record_fails_over_from_a_silent_srs(tmp_path: Path) -> None:
    silent = SippSrs("srs_silent", tmp_path / "silent", extra_args=("-set", "silence_ms", "3000"))
    second = SippSrs("srs_accept", tmp_path / "second")
    async with silent, second:
        status, summary, err = await record(
            "--srs", silent.uri, "--srs", second.uri, "--attempt-timeout", "1", "--duration", "0.5"
        )
    assert status == 0, err
    assert_ok(second.result)
    assert summary["srs"] == second.uri
    assert events(summary)[:3] == ["AttemptStarted", "AttemptFailed", "AttemptStarted"]
    assert summary["events"][1]["status"] == 408


async def test_record_ends_cleanly_when_the_srs_sends_bye(tmp_path: Path) -> None:
    async with SippSrs("srs_bye", tmp_path) as srs:
        status, summary, err = await record("--srs", srs.uri, "--duration", "5")
    assert status == 0, err
    assert_ok(srs.result)
    stopped = summary["events"][-1]
    assert stopped["event"] == "RecordingStopped" and stopped["by"] == "srs"


async def test_record_reports_a_503(tmp_path: Path) -> None:
    async with SippSrs("srs_503", tmp_path) as srs:
        status, summary, err = await record("--srs", srs.uri, "--duration", "0.5")
    assert status == 1
    assert "503" in err
    failed = [e for e in summary["events"] if e["event"] == "AttemptFailed"]
    assert failed and failed[0]["retry_after"] == 30


async def test_record_answers_a_digest_challenge(tmp_path: Path) -> None:
    async with SippSrs("srs_auth", tmp_path) as srs:
        status, _, err = await record(
            "--srs", srs.uri, "--duration", "0.5", "--auth", f"{AUTH_USER}:{AUTH_PASSWORD}"
        )
    assert status == 0, err
    assert_ok(srs.result)


async def test_record_secure_over_tls_with_the_test_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, "srs")
    async with SippSrs(
        "srs_accept", tmp_path, transport="tls", tls=TlsFiles(pki.server_cert, pki.server_key)
    ) as srs:
        status, summary, err = await record(
            "--srs", srs.uri, "--secure", "--tls-ca", str(pki.ca), "--duration", "0.5"
        )
    assert status == 0, err
    assert_ok(srs.result)
    (invite, *_) = srs.result.received("INVITE")  # type: ignore[union-attr]
    assert "RTP/SAVP" in invite.text and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in invite.text
    assert summary["srs"] == srs.uri


async def test_record_capture_shows_well_formed_metadata_with_matching_labels(tmp_path: Path) -> None:
    srs = SippSrs("srs_accept", tmp_path)
    async with Capture(tmp_path, [srs.port]) as capture, srs:
        status, _, err = await record("--srs", srs.uri, "--duration", "0.5")
    assert status == 0, err
    assert_ok(srs.result)
    (invite,) = capture.invites()
    assert siprec_problems(invite) == [], invite.text()
    (tmp_path / "captured-invite.txt").write_text(invite.text())


async def test_record_with_a_connector_from_a_config_file(tmp_path: Path) -> None:
    async with SippSrs("srs_accept", tmp_path) as srs:
        config = tmp_path / "sidecar.toml"
        config.write_text(
            '[api.auth]\ntokens = ["t0ken-for-tests"]\n'
            '[callbacks]\nsigning_secret = "s1gning-secret-for-tests"\n'
            '[sip]\nlisten = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\n'
            '[media]\nhost = "127.0.0.1"\nworkers = 1\n'
            f'[connectors.sipp]\nsrs = ["{srs.uri}"]\n'
        )
        status, summary, err = await record("--config", str(config), "--connector", "sipp", "--duration", "1")
    assert status == 0, err
    assert_ok(srs.result)
    assert summary["final_sip_status"] == 200 and summary["srs_list"] == ["sipp"]


async def test_record_refuses_a_connector_without_a_config(tmp_path: Path) -> None:
    status, _, err = await record("--connector", "main", "--duration", "1")
    assert status != 0 and "--config FILE" in err
