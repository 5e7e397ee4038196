"""rtpengine as a real peer, driven over its ng control protocol (``benchmarks/rtpengine.py``).

Covers, against the real daemon on loopback (``interop``): a two-party call set up with
``offer``/``answer`` relays RTP both ways; ``subscribe request`` for both legs plus ``subscribe
answer`` naming two sinks makes rtpengine send a copy of each leg to its own sink, from the port
its subscribe offer advertised, in plain RTP/AVP or in SDES-SRTP that our own SrtpReceiver
decrypts; ``unsubscribe`` stops the copies and not the call; ``delete`` forgets the call and stops
all media; errors come back as NgError with rtpengine's reason; the daemon can be pinned to a CPU.
Without the daemon: bencode (strict both ways) and the UDP client's cookie matching,
retransmission and timeout, against a scripted fake server.

Not covered: rtpengine's kernel forwarding, transcoding, DTLS-SRTP, RTCP content, IPv6.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.rtpengine import (
    SRTP_SUITE,
    AsyncNgClient,
    BencodeError,
    NgClient,
    NgError,
    NgTimeoutError,
    RtpEngine,
    RtpEngineError,
    bdecode,
    bencode,
    parse_sdp,
    subscribe_answer_request,
    subscribe_request,
)
from siprec_src.media.rtp import RtpPacket
from siprec_src.media.spec import SrtpKeys
from siprec_src.media.srtp import SrtpReceiver

PACKETS = 50
TOLERANCE = 2  # loopback UDP through a userspace relay: allow a couple of drops, never extras
CALLER_SSRC = 0xCA11E200
CALLEE_SSRC = 0xCA11EE00


# --- bencode -----------------------------------------------------------------------------------


def test_bencode_matches_the_documented_wire_form_and_round_trips() -> None:
    # ng_control_protocol.md: "5323_1 d7:command4:pinge" / "d6:result4:ponge".
    assert bencode({"command": "ping"}) == b"d7:command4:pinge"
    assert bdecode(b"d6:result4:ponge") == {"result": "pong"}
    value = {"sdp": "v=0\r\n", "from-tags": ["a", "b"], "n": -42, "z": {"k": b"\xff\x00"}, "e": ""}
    # Keys in raw-byte order, nested values in place, "" as a 0-length string.
    assert bencode({"b": 1, "a": ["x", b"\x00"], "c": {}, "": ""}) == b"d0:0:1:al1:x1:\x00e1:bi1e1:cdee"
    wire = bencode(value)
    assert bdecode(wire, text=False)["z"] == {"k": b"\xff\x00"}
    decoded = bdecode(wire)
    assert decoded["from-tags"] == ["a", "b"] and decoded["n"] == -42 and decoded["sdp"] == "v=0\r\n"
    assert bencode(decoded) == wire  # surrogateescape keeps the non-UTF-8 bytes


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"i01e", "malformed integer"),
        (b"i-0e", "malformed integer"),
        (b"ie", "malformed integer"),
        (b"i12", "truncated integer"),
        (b"03:abc", "malformed string length"),
        (b"4:abc", "runs past the end"),
        (b"3abc", "truncated string length"),
        (b"l1:a", "truncated"),
        (b"d1:ai1e1:ai2ee", "given twice"),
        (b"di1ei2ee", "is not a string"),
        (b"i1ei2e", "trailing data"),
        (b"x", "unexpected byte"),
        (b"", "truncated"),
    ],
)
def test_bdecode_refuses_malformed_input(data: bytes, complaint: str) -> None:
    with pytest.raises(BencodeError, match=complaint):
        bdecode(data)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: "x"}, {"a": 1, b"a": 2}])
def test_bencode_refuses_what_it_cannot_say(value: object) -> None:
    with pytest.raises(BencodeError):
        bencode(value)


# --- the client against a scripted fake rtpengine --------------------------------------------


class FakeNg:
    """A UDP ng peer run by a thread: ``script`` maps the n-th received datagram to replies (or none)."""

    def __init__(self, script: dict[int, list[bytes]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.script = script
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return (host, port)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            cookie = data.partition(b" ")[0]
            for reply in self.script.get(len(self.received), []):
                self.sock.sendto(reply.replace(b"$COOKIE", cookie), peer)

    def __enter__(self) -> FakeNg:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_client_retransmits_the_same_datagram_and_ignores_other_cookies() -> None:
    # The first request is "lost"; the retransmission gets a stale reply first, then ours.
    script = {2: [b"stale_1 d6:result5:errore", b"$COOKIE d6:result4:ponge"]}
    with FakeNg(script) as fake, NgClient(fake.address, timeout=2.0, retransmit=0.1) as client:
        assert client.ping()
    assert len(fake.received) == 2 and fake.received[0] == fake.received[1]
    cookie, _, body = fake.received[0].partition(b" ")
    assert cookie and bdecode(body) == {"command": "ping"}


def test_client_raises_the_error_reason_and_times_out_with_a_count() -> None:
    script = {1: [b"$COOKIE d6:result5:error12:error-reason15:Unknown call-ide"]}
    with FakeNg(script) as fake, NgClient(fake.address, timeout=0.5, retransmit=0.1) as client:
        with pytest.raises(NgError, match="Unknown call-id") as info:
            client.query("nope")
        assert info.value.command == "query" and info.value.reason == "Unknown call-id"
        started = time.monotonic()
        with pytest.raises(NgTimeoutError, match=r"'ping' after [3-6] sends"):
            client.ping()
        assert 0.4 < time.monotonic() - started < 1.5


def test_missing_binary_says_how_to_install_it() -> None:
    with pytest.raises(RtpEngineError, match="apt-get install rtpengine-daemon"):
        RtpEngine(binary="/nonexistent/rtpengine").start()


# --- against the real daemon -------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[RtpEngine]:
    with RtpEngine(log_level=6) as daemon:
        yield daemon
        # A crash mid-test would otherwise surface as a confusing timeout.
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log_tail()


@pytest.fixture
def udp() -> Iterator[dict[str, socket.socket]]:
    socks: dict[str, socket.socket] = {}
    for name in ("caller", "callee", "sink_caller", "sink_callee"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks[name] = sock
    yield socks
    for sock in socks.values():
        sock.close()


def _addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()
    return (host, port)


def _send(sock: socket.socket, target: tuple[str, int], ssrc: int, marker: bytes, sequences: range) -> None:
    for seq in sequences:
        packet = RtpPacket(payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=ssrc, payload=marker * 160)
        sock.sendto(bytes(packet), target)
        time.sleep(0.0005)  # a little pacing, as a phone would (20 ms) but faster


def _collect(
    sock: socket.socket, expected: int, timeout: float = 2.0, receiver: SrtpReceiver | None = None
) -> list[tuple[RtpPacket, tuple[str, int], bytes]]:
    """Packets until ``expected`` arrived or ``timeout``, then whatever trickles in for 0.1 s more."""
    got: list[tuple[RtpPacket, tuple[str, int], bytes]] = []
    deadline = time.monotonic() + timeout
    while (wait := deadline - time.monotonic()) > 0:
        sock.settimeout(wait if len(got) < expected else 0.1)
        try:
            raw, source = sock.recvfrom(2048)
        except TimeoutError:
            break
        plain = receiver.unprotect(raw) if receiver is not None else raw
        got.append((RtpPacket.parse(plain), source, raw))
    return got


def _assert_leg(
    got: list[tuple[RtpPacket, tuple[str, int], bytes]], ssrc: int, marker: bytes, sequences: range
) -> None:
    seqs = [packet.sequence for packet, _, _ in got]
    assert len(seqs) == len(set(seqs)), "duplicates"
    assert PACKETS - TOLERANCE <= len(seqs) <= PACKETS, f"{len(seqs)} of {PACKETS} packets"
    assert set(seqs) <= set(sequences)
    for packet, _, _ in got:
        assert packet.ssrc == ssrc and packet.payload == marker * 160 and packet.payload_type == 0


def _assert_silent(*socks: socket.socket) -> None:
    time.sleep(0.2)
    for sock in socks:
        sock.settimeout(0.01)
        with pytest.raises(TimeoutError):
            sock.recvfrom(2048)


@pytest.mark.interop
def test_call_relays_then_forks_each_leg_to_its_sink(
    engine: RtpEngine, udp: dict[str, socket.socket]
) -> None:
    ng = engine.client
    call = ng.start_call("relay-fork-1", _addr(udp["caller"]), _addr(udp["callee"]))
    assert call.caller_target != call.callee_target
    for target in (call.caller_target, call.callee_target):
        assert target[0] == engine.media_address and engine.port_min <= target[1] <= engine.port_max

    # 1. The relay: caller -> rtpengine -> callee and back.
    first = range(1000, 1000 + PACKETS)
    _send(udp["caller"], call.caller_target, CALLER_SSRC, b"A", first)
    _send(udp["callee"], call.callee_target, CALLEE_SSRC, b"B", first)
    _assert_leg(_collect(udp["callee"], PACKETS), CALLER_SSRC, b"A", first)
    _assert_leg(_collect(udp["caller"], PACKETS), CALLEE_SSRC, b"B", first)

    # 2. The fork: one subscription to both legs, each copy to its own sink.
    sinks = [_addr(udp["sink_caller"]), _addr(udp["sink_callee"])]
    fork = ng.fork(call.call_id, [call.caller_tag, call.callee_tag], sinks)
    assert fork.from_tags == (call.caller_tag, call.callee_tag) and fork.to_tag
    offer = parse_sdp(fork.offer_sdp)
    assert [m.direction for m in offer] == ["sendonly", "sendonly"]
    assert [m.protocol for m in offer] == ["RTP/AVP", "RTP/AVP"] and fork.keys == (None, None)
    assert [m.endpoint for m in parse_sdp(fork.answer_sdp)] == sinks

    second = range(2000, 2000 + PACKETS)
    _send(udp["caller"], call.caller_target, CALLER_SSRC, b"A", second)
    _send(udp["callee"], call.callee_target, CALLEE_SSRC, b"B", second)
    to_caller_sink = _collect(udp["sink_caller"], PACKETS)
    to_callee_sink = _collect(udp["sink_callee"], PACKETS)
    _assert_leg(to_caller_sink, CALLER_SSRC, b"A", second)
    _assert_leg(to_callee_sink, CALLEE_SSRC, b"B", second)
    # Each copy comes from the port rtpengine's subscribe offer advertised for that leg.
    assert {source for _, source, _ in to_caller_sink} == {fork.sources[0]}
    assert {source for _, source, _ in to_callee_sink} == {fork.sources[1]}
    # ... and the call itself still flows.
    _assert_leg(_collect(udp["callee"], PACKETS), CALLER_SSRC, b"A", second)
    _assert_leg(_collect(udp["caller"], PACKETS), CALLEE_SSRC, b"B", second)

    # 3. unsubscribe stops the copies, not the call.
    ng.unsubscribe(call.call_id, fork.to_tag)
    third = range(3000, 3000 + PACKETS)
    _send(udp["caller"], call.caller_target, CALLER_SSRC, b"A", third)
    _send(udp["callee"], call.callee_target, CALLEE_SSRC, b"B", third)
    _assert_leg(_collect(udp["callee"], PACKETS), CALLER_SSRC, b"A", third)
    _assert_leg(_collect(udp["caller"], PACKETS), CALLEE_SSRC, b"B", third)
    _assert_silent(udp["sink_caller"], udp["sink_callee"])

    # 4. delete forgets the call: nothing flows, and rtpengine no longer knows the Call-ID.
    ng.delete(call.call_id)
    with pytest.raises(NgError, match="Unknown call-id"):
        ng.query(call.call_id)
    _send(udp["caller"], call.caller_target, CALLER_SSRC, b"A", range(4000, 4010))
    _send(udp["callee"], call.callee_target, CALLEE_SSRC, b"B", range(4000, 4010))
    _assert_silent(udp["caller"], udp["callee"], udp["sink_caller"], udp["sink_callee"])


@pytest.mark.interop
def test_srtp_fork_is_decrypted_with_the_offered_sdes_key(
    engine: RtpEngine, udp: dict[str, socket.socket]
) -> None:
    ng = engine.client
    call = ng.start_call("srtp-fork-1", _addr(udp["caller"]), _addr(udp["callee"]))
    sinks = [_addr(udp["sink_caller"]), _addr(udp["sink_callee"])]
    fork = ng.fork(call.call_id, [call.caller_tag, call.callee_tag], sinks, srtp=True)
    for section in parse_sdp(fork.offer_sdp):
        assert section.protocol == "RTP/SAVP"
        # Only the suite we asked for is offered (SDES no-<suite> for all the others).
        assert [c.split()[1] for c in section.crypto] == [SRTP_SUITE]
    assert all(key is not None and key[0] == SRTP_SUITE for key in fork.keys)
    assert fork.keys[0] != fork.keys[1]

    sequences = range(500, 500 + PACKETS)
    _send(udp["caller"], call.caller_target, CALLER_SSRC, b"A", sequences)
    _send(udp["callee"], call.callee_target, CALLEE_SSRC, b"B", sequences)
    receivers = [SrtpReceiver(SrtpKeys(*key)) for key in fork.keys if key is not None]
    to_caller_sink = _collect(udp["sink_caller"], PACKETS, receiver=receivers[0])
    to_callee_sink = _collect(udp["sink_callee"], PACKETS, receiver=receivers[1])
    _assert_leg(to_caller_sink, CALLER_SSRC, b"A", sequences)
    _assert_leg(to_callee_sink, CALLEE_SSRC, b"B", sequences)
    for _, _, raw in to_caller_sink + to_callee_sink:
        assert len(raw) == 12 + 160 + 10  # RFC 3711 §4.2: an 80-bit auth tag follows the payload
        assert raw[12:172] not in (b"A" * 160, b"B" * 160)  # the payload really is encrypted
    # The call leg itself stays plain RTP.
    _assert_leg(_collect(udp["callee"], PACKETS), CALLER_SSRC, b"A", sequences)
    ng.delete(call.call_id)


@pytest.mark.interop
def test_refusals_carry_rtpengine_reason(engine: RtpEngine, udp: dict[str, socket.socket]) -> None:
    ng = engine.client
    with pytest.raises(NgError, match=r"(?i)unknown call-id") as info:
        ng.request(subscribe_request("no-such-call", ["x"]))
    assert info.value.command == "subscribe request"
    call = ng.start_call("refusals-1", _addr(udp["caller"]), _addr(udp["callee"]))
    sdp = parse_sdp(ng.request(subscribe_request(call.call_id, [call.caller_tag]))["sdp"])
    assert len(sdp) == 1
    with pytest.raises(NgError) as info:
        ng.request(subscribe_answer_request(call.call_id, "no-such-to-tag", "v=0\r\n"))
    assert info.value.command == "subscribe answer" and info.value.reason
    ng.delete(call.call_id)


@pytest.mark.interop
async def test_async_client_runs_the_recipe_with_requests_in_flight_together(
    engine: RtpEngine, udp: dict[str, socket.socket]
) -> None:
    async with await AsyncNgClient.connect(engine.ng_address) as ng:
        assert all(await asyncio.gather(*(ng.ping() for _ in range(20))))
        call = await ng.start_call("async-1", _addr(udp["caller"]), _addr(udp["callee"]))
        sinks = [_addr(udp["sink_caller"]), _addr(udp["sink_callee"])]
        fork = await ng.fork(call.call_id, [call.caller_tag, call.callee_tag], sinks)
        sequences = range(7000, 7000 + PACKETS)
        await asyncio.to_thread(_send, udp["caller"], call.caller_target, CALLER_SSRC, b"A", sequences)
        got = await asyncio.to_thread(_collect, udp["sink_caller"], PACKETS)
        _assert_leg(got, CALLER_SSRC, b"A", sequences)
        assert {source for _, source, _ in got} == {fork.sources[0]}
        await ng.delete(call.call_id)
        with pytest.raises(NgError, match="Unknown call-id"):
            await ng.query(call.call_id)


@pytest.mark.interop
def test_daemon_is_pinned_accounted_and_stopped_by_sigterm() -> None:
    cpu = max(os.sched_getaffinity(0))
    daemon = RtpEngine(cpu=cpu, log_level=6)
    with daemon:
        pid = daemon.pid
        assert daemon.argv("rtpengine").count("--config-file=none") == 1
        assert "--table=-1" in daemon.argv("rtpengine")
        threads = list(daemon.threads())
        assert len(threads) > 1 and all(os.sched_getaffinity(tid) == {cpu} for tid in threads)
        assert daemon.cpu_seconds() >= 0.0
        assert daemon.client.ping()
        log = daemon.log_text()
        assert "Startup complete" in log, log
        process = daemon.process
        assert process is not None
    assert process.returncode == 0, "rtpengine should exit cleanly on SIGTERM"
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/comm") as comm:
        assert comm.read().strip() != "rtpengine"  # gone (or the pid reused by something else)
