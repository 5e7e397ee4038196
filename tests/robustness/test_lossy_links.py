"""Recording across lossy, delayed and reordered links (issue 9: fault injection on real sockets).

Each test makes two network namespaces joined by an impaired link (``netns.py``: a seeded
userspace netem, because the kernel here has no ``sch_netem``), runs ``siprec-src srs`` in one
and ``siprec-src record`` in the other as real processes, and states what must hold:

- the recording is set up despite the loss: SIP retransmissions (RFC 3261 §17.1.1.2 Timer A for
  the INVITE, §13.3.1.4 Timer G for the 2xx, the ACK resent on every 2xx) or TCP carry it;
- it ends with the SRC's BYE, and the SRS's ``session.json`` says so;
- each WAV holds its leg's tone (440 Hz inbound, 1250 Hz outbound);
- the SRS's statistics agree with what the link did, packet for packet: the relay counts every
  RTP packet it carried, dropped or reordered, so "lost" is checked against the truth (with a
  margin only for the packets still in flight when the session closed), not just a band;
- nothing crashed: both processes exit on their own with the documented status, no traceback.

Every random choice of the link comes from its seed and is drawn per class of packet (a SIP
message kind, a flow), so a run is reproducible: the same seed drops the same transmissions.
``drop_first`` forces the first transmission of chosen SIP messages to be lost, so a test knows
which retransmission timers had to fire. Run with ``-s`` to see the figures each test measured
(``docs/robustness.md``, "Lossy links", has them and a sweep over seeds).

Not covered here: TLS over the impaired link (the handshake adds round trips but no SIP
behaviour), SRTP (the link does not look inside RTP), IPv6.
"""

from __future__ import annotations

import itertools
import os
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from siprec_src.srs.plot import dominant_frequency
from tests.robustness.netns import DOWN, UP, Impairment, LossyLink, RecordingRun, record_across

# The link: 10 % loss, 200 ms delay with ±50 ms of jitter (which alone reorders packets
# sent 20 ms apart), and netem's "reorder 25% 50%" (a quarter of the packets skip the delay, so
# they overtake up to ten packets sent before them). Both directions. The first INVITE, the
# first 200 to it and the first ACK are always lost, so Timer A, Timer G and the ACK's
# retransmission must all work for the call to be recorded.
LOSSY = Impairment(
    loss=0.10,
    delay=0.200,
    jitter=0.050,
    reorder=0.25,
    reorder_correlation=0.50,
    drop_first=("INVITE", "200/INVITE", "ACK"),
)
SEED = 1
TONES = {"1": 440.0, "2": 1250.0}
DURATION = 4.0
FRAMES = round(DURATION * 50)  # 20 ms packets per stream
# RTP packets of one stream that may still be on the link when the SRS closes the session:
# the BYE can overtake up to (delay + jitter) / 20 ms of them (more when it skips the delay).
IN_FLIGHT = 15
ATTEMPT_TIMEOUT = 8.0  # siprec-src record's default --attempt-timeout


@pytest.fixture
def make_link() -> Iterator[Callable[..., LossyLink]]:
    """Open links for a test; every one is closed and its namespaces gone afterwards."""
    assert os.geteuid() == 0, "these tests make network namespaces: run them as root"
    links: list[LossyLink] = []

    def make(up: Impairment, down: Impairment | None = None, *, seed: int = SEED) -> LossyLink:
        link = LossyLink(up, down, seed=seed)
        links.append(link)
        return link.open()

    try:
        yield make
    finally:
        for link in links:
            link.close()
        leftovers = [link.left for link in links if link.exists()]
        assert not leftovers, f"namespaces left behind: {leftovers}"
        for link in links:
            assert link.error is None, f"the link's relay failed: {link.error!r}"
            assert link.write_errors == 0


def _assert_nothing_crashed(run: RecordingRun) -> None:
    assert run.src_status is not None, f"the SRC hung and was killed:\n{run.src_stderr}"
    assert "Traceback" not in run.src_stderr, run.src_stderr
    assert "Traceback" not in run.srs_stderr, run.srs_stderr
    assert run.srs_status == 0, f"the SRS exited {run.srs_status}:\n{run.srs_stderr}"


def _assert_recorded_and_ended_by_bye(run: RecordingRun) -> None:
    _assert_nothing_crashed(run)
    assert run.src_status == 0, run.src_stderr
    assert run.src_summary is not None
    assert run.src_summary["status"] == "stopped"
    assert run.src_summary["final_sip_status"] == 200
    assert run.session is not None, f"the SRS recorded no session:\n{run.srs_stdout}"
    assert run.session["end_reason"] == "bye-from-src", (
        f"the SRS ended the session with {run.session['end_reason']!r}, not the SRC's BYE"
    )
    assert run.srs_ended_in is not None


def _assert_tones(run: RecordingRun, duration: float = DURATION) -> None:
    assert run.session_dir is not None
    for label, tone in TONES.items():
        with wave.open(str(run.session_dir / f"stream-{label}.wav"), "rb") as reader:
            rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        assert samples.size / rate == pytest.approx(duration, abs=0.3), label
        assert dominant_frequency(samples, rate) == pytest.approx(tone, abs=5), label


def _check_media(run: RecordingRun, link: LossyLink, frames: int = FRAMES) -> dict[str, dict[str, float]]:
    """Hold each stream's SRS statistics against what the link did; returns the figures."""
    figures = {}
    for label in TONES:
        sent = run.sent(label)
        stats = run.stream(label)["stats"]
        flow = link.udp_flow(UP, run.remote_port(label))
        assert sent == frames, f"stream {label}: the SRC forked {sent} packets, not {frames}"
        assert flow.sent == sent, f"stream {label}: the link carried {flow.sent} of {sent} packets"
        # Received: what the link delivered, less what was still on it when the session closed.
        assert flow.delivered - IN_FLIGHT <= stats["packets"] <= flow.delivered, (label, stats, flow)
        # Lost to the network, as the SRS sees it: slots left silent whose packet never came.
        # Each is a packet the link dropped, or one that arrived after the session closed.
        missing = stats["lost"] - stats["late"]
        assert missing <= flow.dropped + (flow.delivered - stats["packets"]), (label, stats, flow)
        assert missing >= flow.dropped - IN_FLIGHT, (label, stats, flow)
        assert stats["duplicates"] == 0
        figures[label] = {
            "sent": sent,
            "link_dropped": flow.dropped,
            "link_reordered": flow.reordered,
            "received": stats["packets"],
            "lost": stats["lost"],
            "late": stats["late"],
            "reordered": stats["reordered"],
            "jitter_ms": round(stats["jitter_ms"], 1),
        }
    return figures


def _report(name: str, run: RecordingRun, figures: dict[str, dict[str, float]]) -> None:
    kinds: dict[str, int] = {}
    for packet in run.sip:
        kinds[packet.kind] = kinds.get(packet.kind, 0) + 1
    setup = "-" if run.setup_time is None else f"{run.setup_time:.3f} s"
    print(f"\n{name}: setup {setup}, SRC ran {run.src_elapsed:.1f} s, SIP transmissions {kinds}")
    for label, values in figures.items():
        print(f"  stream {label}: {values}")


async def test_clean_link_is_lossless(make_link: Callable[..., LossyLink], tmp_path: Path) -> None:
    """The control: the same harness over an unimpaired link loses nothing and sets up at once."""
    link = make_link(Impairment())
    run = await record_across(link, tmp_path, transport="udp", duration=2.0)
    _assert_recorded_and_ended_by_bye(run)
    _assert_tones(run, 2.0)
    figures = _check_media(run, link, 100)
    for label in TONES:
        stats = run.stream(label)["stats"]
        assert (stats["packets"], stats["lost"], stats["late"], stats["reordered"]) == (100, 0, 0, 0)
        assert stats["jitter_ms"] < 10
    assert [p.kind for p in run.sip if p.direction == UP] == ["INVITE", "ACK", "BYE"]
    assert run.setup_time is not None and run.setup_time < 0.5
    _report("clean", run, figures)


async def test_udp_signaling_and_rtp_over_a_lossy_link(
    make_link: Callable[..., LossyLink], tmp_path: Path
) -> None:
    link = make_link(LOSSY)
    run = await record_across(link, tmp_path, transport="udp", duration=DURATION)
    _assert_recorded_and_ended_by_bye(run)
    assert all(p.transport == "udp" for p in run.sip)

    # RFC 3261 §17.1.1.2 Timer A: the INVITE is resent after T1 = 500 ms, then doubling. A
    # timer never fires early; a loaded machine may fire it late, hence the looser upper bound.
    invites = [p.sent_at for p in run.sip if p.kind == "INVITE"]
    assert len(invites) >= 2
    for index, (earlier, later) in enumerate(itertools.pairwise(invites)):
        assert 0.49 * 2**index <= later - earlier <= 0.5 * 2**index + 0.3, invites
    # §13.3.1.4 Timer G: the SRS resends its 200 until the ACK comes; every 200 is ACKed.
    assert sum(1 for p in run.sip if p.kind == "200/INVITE") >= 2
    assert sum(1 for p in run.sip if p.kind == "ACK") >= 2
    # The first INVITE was lost: the 200 cannot come before the retransmission (T1) plus a
    # round trip, and must come before the SRC gives up on the SRS.
    assert run.setup_time is not None and 0.5 < run.setup_time < ATTEMPT_TIMEOUT

    _assert_tones(run)
    figures = _check_media(run, link)
    for label in TONES:
        stats = run.stream(label)["stats"]
        missing = (stats["lost"] - stats["late"]) / FRAMES
        assert 0.03 <= missing <= 0.25, (label, stats)  # 10 % configured
        assert stats["jitter_ms"] > 20  # ±50 ms of delay variation (the clean link: < 1 ms)
        assert stats["reordered"] > 0
        assert figures[label]["link_reordered"] > 0
    _report("udp, lossy", run, figures)


async def test_tcp_signaling_over_a_lossy_link(make_link: Callable[..., LossyLink], tmp_path: Path) -> None:
    """TCP retransmits in the kernel (here: the first segment of the INVITE, of its 200, of the ACK)."""
    link = make_link(LOSSY)
    run = await record_across(link, tmp_path, transport="tcp", duration=DURATION)
    _assert_recorded_and_ended_by_bye(run)
    assert {p.transport for p in run.sip} == {"tcp"}
    assert run.session is not None and run.session["sip"]["src_address"].startswith("tcp:")
    assert run.setup_time is not None and 0.3 < run.setup_time < ATTEMPT_TIMEOUT
    _assert_tones(run)
    figures = _check_media(run, link)
    for label in TONES:
        stats = run.stream(label)["stats"]
        assert 0.03 <= (stats["lost"] - stats["late"]) / FRAMES <= 0.25, (label, stats)
    _report("tcp, lossy", run, figures)


# 30 % loss on SIP alone (RTP untouched), both directions, 200 ± 50 ms. Seed 7: the INVITE gets
# through on its fourth transmission. Seed 6: every transmission the SRC makes before its
# attempt timeout is lost (the INVITE is three IP fragments: each must pass), and it must give up
# cleanly.
HEAVY_SIP_LOSS = Impairment(loss=0.30, delay=0.200, jitter=0.050, sip_only=True)


async def test_heavy_signaling_loss_still_completes(
    make_link: Callable[..., LossyLink], tmp_path: Path
) -> None:
    link = make_link(HEAVY_SIP_LOSS, seed=7)
    run = await record_across(link, tmp_path, transport="udp", duration=2.0, src_deadline=45)
    _assert_recorded_and_ended_by_bye(run)
    assert sum(1 for p in run.sip if p.kind == "INVITE") >= 2
    assert run.setup_time is not None and run.setup_time < ATTEMPT_TIMEOUT
    for label in TONES:
        stats = run.stream(label)["stats"]
        assert (stats["packets"], stats["lost"]) == (100, 0)
    _report("udp, 30 % SIP loss, seed 7", run, {})


async def test_heavy_signaling_loss_fails_cleanly(
    make_link: Callable[..., LossyLink], tmp_path: Path
) -> None:
    """No answer within the attempt timeout: exit status 1, one line saying why, no session left."""
    link = make_link(HEAVY_SIP_LOSS, seed=6)
    run = await record_across(
        link,
        tmp_path,
        transport="udp",
        duration=2.0,
        src_deadline=45,
        extra_args=["--attempt-timeout", "4"],
        srs_end_wait=0.5,
    )
    _assert_nothing_crashed(run)
    assert run.src_status == 1
    assert run.src_elapsed < 4 + 6  # the attempt timeout (and start-up), not Timer B (32 s), nor a hang
    lines = run.src_stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("siprec-src record: no SRS took the recording"), lines
    assert "408 no final answer within 4 s" in lines[0]
    invites = [p for p in run.sip if p.kind == "INVITE"]
    assert len(invites) == 4  # sent at 0, 0.5, 1.5 and 3.5 s (Timer A), then the attempt ends
    assert all(p.delivered_at is None for p in invites)
    assert run.session is None  # the SRS never heard of it, so it wrote nothing
    assert not [p for p in run.sip if p.direction == DOWN]
    _report("udp, 30 % SIP loss, seed 6", run, {})


async def test_a_lost_bye_is_retransmitted(make_link: Callable[..., LossyLink], tmp_path: Path) -> None:
    link = make_link(Impairment(delay=0.100, drop_first=("BYE",)))
    run = await record_across(link, tmp_path, transport="udp", duration=2.0, srs_end_wait=2.0)
    byes = [p for p in run.sip if p.kind == "BYE" and p.direction == UP]
    assert byes and byes[0].delivered_at is None
    _assert_recorded_and_ended_by_bye(run)
    assert len(byes) >= 2
    assert 0.49 <= byes[1].sent_at - byes[0].sent_at <= 0.8  # Timer E: T1 = 500 ms
