"""``siprec-src serve``: the sidecar process, in-process and as a real process sent SIGTERM.

Covers: it listens on the configured host with port 0 and reports the URL; /healthz and
/metrics answer; a stop (event or SIGTERM) closes every call with a BYE to its SRS, delivers
the last status callbacks and exits 0 in bounded time; a shutdown step that hangs is bounded
and named (exit 1); an invalid config is refused with every error (exit 2); a busy API port
is exit 1, and so is a busy SIP port. JSON log lines are JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from siprec_src.app import add_serve_arguments, serve, serve_main
from siprec_src.config import load_config, parse_config
from siprec_src.control.sidecar import Sidecar
from tests.control.test_native import callback_sink
from tests.recording.minisrs import MiniSrs

TOKEN = "serve-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
[log]
level = "{level}"
format = "{format}"

[api]
host = "127.0.0.1"
port = {port}

[api.auth]
tokens = ["{token}"]

[callbacks]
signing_secret = "serve-test-signing-secret"
timeout = 2
retries = 0

[sip]
listen = ["udp:127.0.0.1:0"]

[media]
workers = 0

[connectors.main]
srs = ["{srs}"]
attempt_timeout = 3
"""


def _config_text(srs: str, *, port: int = 0, level: str = "warning", log_format: str = "text") -> str:
    return CONFIG.format(srs=srs, port=port, level=level, format=log_format, token=TOKEN)


async def _record_a_call(session: aiohttp.ClientSession, url: str, callback: str | None = None) -> str:
    body: dict[str, Any] = {"from": {"aor": "sip:alice@example.com"}, "to": {"aor": "sip:bob@example.com"}}
    async with session.post(f"{url}/v1/calls", json=body, headers=AUTH) as response:
        assert response.status == 201, await response.text()
        call_id = str((await response.json())["call_id"])
    recording: dict[str, Any] = {"connector": "main"}
    if callback:
        recording["status_callback"] = callback
    async with session.post(f"{url}/v1/calls/{call_id}/recordings", json=recording, headers=AUTH) as response:
        assert response.status == 201, await response.text()
        sid = (await response.json())["sid"]
    async with asyncio.timeout(5):
        while True:
            async with session.get(f"{url}/v1/calls/{call_id}/recordings/{sid}", headers=AUTH) as response:
                if (await response.json())["status"] == "in-progress":
                    return call_id
            await asyncio.sleep(0.02)


async def _settle(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_serve_in_process_answers_and_stops_cleanly() -> None:
    async with MiniSrs() as srs, callback_sink() as sink:
        config = parse_config(_config_text(srs.uri()))
        stop = asyncio.Event()
        urls: list[str] = []
        task = asyncio.create_task(serve(config, stop=stop, ready=urls.append))
        await _settle(lambda: urls or task.done())
        url = urls[0]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"
            await _record_a_call(session, url, sink.url)
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
                assert response.status == 200 and "siprec_calls_active 1\n" in text
                assert "siprec_recordings_started_total 1\n" in text
            started = time.monotonic()
            stop.set()
            # While it drains, it says so: a load balancer stops sending calls.
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 503
        assert await asyncio.wait_for(task, 10) == 0
        assert time.monotonic() - started < 5
        assert srs.byes == 1
        events = [(await sink.next()).json()["event"] for _ in range(2)]
        assert events == ["recording.started", "recording.stopped"]  # delivered before exit


async def test_a_hung_shutdown_step_is_bounded_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def hang(self: Sidecar) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(Sidecar, "shutdown", hang)
    async with MiniSrs() as srs:
        stop = asyncio.Event()
        stop.set()  # stop as soon as it listens
        started = time.monotonic()
        code = await asyncio.wait_for(
            serve(parse_config(_config_text(srs.uri())), stop=stop, shutdown_timeout=0.5), 10
        )
    assert code == 1 and time.monotonic() - started < 5
    assert any(
        "did not finish within 0.5 s: closing every call (BYE to every SRS) hung" in r.getMessage()
        for r in caplog.records
    )


async def test_busy_api_and_sip_ports_are_exit_1(caplog: pytest.LogCaptureFixture) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy_udp.bind(("127.0.0.1", 0))
    try:
        config = parse_config(_config_text("sip:srs@127.0.0.1:5099", port=busy.getsockname()[1]))
        assert await asyncio.wait_for(serve(config, stop=asyncio.Event()), 10) == 1
        text = _config_text("sip:srs@127.0.0.1:5099").replace(
            "udp:127.0.0.1:0", f"udp:127.0.0.1:{busy_udp.getsockname()[1]}"
        )
        assert await asyncio.wait_for(serve(parse_config(text), stop=asyncio.Event()), 10) == 1
    finally:
        busy.close()
        busy_udp.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot listen for the API" in m for m in messages)
    assert any("cannot start SIP and media" in m for m in messages)


def test_an_invalid_config_is_refused_with_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        _config_text("sip:srs@127.0.0.1:5099").replace("attempt_timeout = 3", "sesion_timeout = 30")
        + "\n[media.extra]\n"
    )
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert serve_main(parser.parse_args(["--config", str(path)])) == 2
    err = capsys.readouterr().err
    assert "connectors.main.sesion_timeout" in err and "did you mean 'session_timeout'" in err
    assert "media.extra" in err and "2 configuration error(s); not started" in err
    assert TOKEN not in err
    missing = tmp_path / "missing.toml"
    assert serve_main(parser.parse_args(["--config", str(missing)])) == 2
    assert "cannot read the file" in capsys.readouterr().err


SERVE = (
    "import argparse, sys\n"
    "from siprec_src.app import add_serve_arguments, serve_main\n"
    "parser = argparse.ArgumentParser(prog='siprec-src serve')\n"
    "add_serve_arguments(parser)\n"
    "sys.exit(serve_main(parser.parse_args(sys.argv[1:])))\n"
)


async def test_sigterm_sends_bye_to_every_srs_and_exits_0(tmp_path: Path) -> None:
    async with MiniSrs() as srs:
        path = tmp_path / "siprec-src.toml"
        path.write_text(_config_text(srs.uri(), level="info", log_format="json"))
        load_config(path)  # the config the process reads is valid
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVE,
            "--config",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert line.startswith("siprec-src serving on http://127.0.0.1:"), line
            url = line.split()[-1]
            async with aiohttp.ClientSession() as session:
                await _record_a_call(session, url)
                await _record_a_call(session, url)
            assert srs.byes == 0
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert time.monotonic() - started < 10
            await _settle(lambda: srs.byes == 2)
            lines = (await process.stderr.read()).decode().splitlines()
            entries = [json.loads(line) for line in lines]  # every log line is a JSON object
            messages = [entry["message"] for entry in entries]
            assert "SIGTERM: shutting down" in messages and "stopped cleanly" in messages
            assert all(TOKEN not in line for line in lines)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
