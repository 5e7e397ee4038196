"""Interop of the SIP core with SIPp (Debian sip-tester), a real third-party peer, on loopback.

Covers: our UAC against SIPp's built-in UAS scenario (INVITE/180/200/ACK/BYE) over UDP and
TCP, and SIPp's built-in UAC scenario against our UAS core, with SIPp's exit status asserted
(0 = every call completed as its scenario expects). SIPREC-specific scenarios (regex checks
of Require/+sip.src/multipart, 422, failover, TLS) belong to the recording-session issue.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from siprec_src.signaling.transport import ListenSpec
from siprec_src.signaling.useragent import UserAgent
from siprec_src.sip.headers import NameAddress
from siprec_src.sip.message import Response
from siprec_src.sip.uri import SipUri
from siprec_src.sip.useragent import RequestReceived, UaEvent, UserAgentCore

pytestmark = pytest.mark.interop

SIPP = shutil.which("sipp")
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sipp(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    assert SIPP, "sipp is not installed: `make test` installs sip-tester (scripts/install-peers.sh)"
    return await asyncio.create_subprocess_exec(
        SIPP,
        *args,
        "-nostdin",
        "-m",
        "1",
        "-timeout",
        "15s",
        "-trace_err",
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(process: asyncio.subprocess.Process, cwd: Path) -> None:
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    errors = "\n".join(path.read_text(errors="replace")[-2000:] for path in cwd.glob("*errors.log"))
    assert process.returncode == 0, f"sipp exited {process.returncode}: {stderr.decode()[-500:]}\n{errors}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_our_uac_against_sipp_uas(transport: str, tmp_path: Path) -> None:
    port = _free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    flag = "u1" if transport == "udp" else "t1"
    sipp = await _sipp("-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-t", flag, cwd=tmp_path)
    ua = UserAgent(UserAgentCore())
    await ua.start([ListenSpec(transport, "127.0.0.1", 0)])
    try:
        params: tuple[tuple[str, str | None], ...] = (("transport", "tcp"),) if transport == "tcp" else ()
        uri = SipUri("sip", "127.0.0.1", "service", None, port, params)
        invite = ua.core.create_request(
            "INVITE",
            uri,
            NameAddress(SipUri("sip", "127.0.0.1", "src")),
            NameAddress(uri),
            transport=transport,
            body=SDP,
            content_type="application/sdp",
        )
        destination = None
        for _ in range(50):  # SIPp needs a moment to open its socket
            try:
                destination = await ua.destination_for(uri)
                if transport == "tcp":
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert destination is not None
        request_id = ua.send(invite, destination)
        outcome = await ua.wait(request_id, timeout=10)
        assert isinstance(outcome, Response) and outcome.status == 200, outcome
        dialog_id = ua.core.dialog_of(request_id)
        assert dialog_id is not None
        bye = await ua.wait(ua.bye(dialog_id), timeout=10)
        assert isinstance(bye, Response) and bye.status == 200
        await _finish(sipp, tmp_path)
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        await ua.close()


async def test_sipp_uac_against_our_uas(tmp_path: Path) -> None:
    ua: UserAgent

    def answer(event: UaEvent) -> None:
        if isinstance(event, RequestReceived) and event.request.method == "INVITE":
            ua.respond(event.server_id, 200, body=SDP, content_type="application/sdp")

    ua = UserAgent(UserAgentCore(), on_event=answer)
    await ua.start([ListenSpec("udp", "127.0.0.1", 0)])
    try:
        host, port = ua.transport.local_address("udp")
        sipp = await _sipp(
            "-sn",
            "uac",
            f"{host}:{port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(_free_port(socket.SOCK_DGRAM)),
            "-d",
            "200",
            cwd=tmp_path,
        )
        await _finish(sipp, tmp_path)
    finally:
        await ua.close()
