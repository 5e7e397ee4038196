"""The media benchmark's harness (benchmarks/bench_media.py, benchmarks/plot.py) with tiny loads,
so the benchmark cannot rot.

Covers: one run of ``main`` with a handful of calls through the C relay and siprec_src (1 and 2
workers, RTP and SRTP) loses nothing at a trivial rate and writes the JSON report and a valid
PNG; rtpengine (interop, plain and SRTP) set up over ng relays and forks every packet of both
legs, its relayed copies counted at the blackholes; the pure pieces: which step a ratio compares,
the ratio and target arithmetic, baseline latency subtraction, the saturation rule, the table
formatter. Does not cover speed: no measured figure is compared with a threshold.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from benchmarks import bench_media
from benchmarks.bench_media import SUBJECTS, Blackholes, Step, ratio, ratios, targets
from benchmarks.report import format_rows
from siprec_src.errors import SiprecError


def step(subject: str, calls: int, *, cpu: float | None = 1.0, lost: int = 0, **changes: object) -> Step:
    """A step of ``calls`` calls over 1 s: 100 packets per call, ``cpu`` CPU seconds."""
    sent = 100 * calls
    made = Step(
        subject=subject,
        calls=calls,
        offered_rate=sent,
        duration=1.0,
        sent=sent,
        fork_received=sent - lost,
        out_packets=(sent - lost) * (2 if subject.startswith("rtpengine") else 1),
        span_s=1.0,
        lag_s=0.0,
        cpu_s=cpu,
        cores=0 if subject == "direct" else 1,
        latency_us={"p50": 10.0, "p99": 20.0, "p999": 30.0},
    )
    for key, value in changes.items():
        setattr(made, key, value)
    return made


def test_a_tiny_run_writes_the_report_and_a_png(tmp_path: Path) -> None:
    argv = ["--quick", "--calls", "5", "--duration", "0.3", "--out", str(tmp_path)]
    assert bench_media.main([*argv, "--subjects", "c-relay,siprec,siprec-srtp,siprec-2w"]) == 0
    (report_path,) = tmp_path.glob("media-*.json")
    report = json.loads(report_path.read_text())
    figures = {figure["name"]: figure for figure in report["figures"]}
    assert {"pipeline.plain.time", "pipeline.rewrite.time", "pipeline.srtp.time"} <= set(figures)
    for subject in ("direct", "c-relay", "siprec", "siprec-srtp", "siprec-2w"):
        params = figures[f"step.{subject}.5"]["params"]
        assert params["sent"] == params["fork_received"] == 5 * 100 * 0.3 and params["lost"] == 0
        assert params["out_per_in"] == 1.0
        assert ("cpu_s" in params) == (subject != "direct")
    assert figures["step.siprec.5"]["params"]["forwarded"] == 150
    assert figures["step.siprec-2w.5"]["params"]["workers"] == 2
    # Set up as users do: REST API calls and recordings, SIPREC INVITEs to the stub SRS.
    for subject in ("siprec", "siprec-srtp", "siprec-2w"):
        params = figures[f"step.{subject}.5"]["params"]
        assert params["setup"] == "REST API + stub SRS" and params["srs_answered"] == 5, params
    assert "added_latency_p99_us" in figures["step.siprec.5"]["params"]
    assert "latency_p99_us" not in figures["step.siprec-srtp.5"]["params"]  # the stamp is encrypted
    assert figures["target.loss_at_rated_load"]["params"]["met"]  # targets are reported
    png = report_path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 2 * height > 0


@pytest.mark.interop
@pytest.mark.parametrize("name", ["rtpengine", "rtpengine-srtp"])
def test_rtpengine_relays_and_forks_every_packet(name: str) -> None:
    subject = SUBJECTS[name]
    # make test installs rtpengine (scripts/install-peers.sh): missing is a failure, not a skip
    assert bench_media.available(subject) is None, bench_media.available(subject)
    done = asyncio.run(bench_media.run_step(subject, calls=4, duration=0.5))
    assert done.sent == done.fork_received == 4 * 100 * 0.5  # both legs of every call forked
    assert done.params["relayed"] == done.sent  # and relayed to the other party
    assert done.out_packets == 2 * done.sent and done.out_per_in == 2.0
    assert done.cpu_s is not None and done.params["rtpengine_threads"] == 1
    assert (done.latency_us is None) == subject.srtp


def test_blackholes_count_what_the_kernel_dropped_and_what_is_queued() -> None:
    holes = Blackholes(3)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for index in range(3):
                for _ in range(40):  # more than the smallest receive buffer holds
                    sender.sendto(bytes(172), holes.address(index))
        assert holes.delivered() == 120
    finally:
        holes.close()


def test_ratio_compares_the_highest_step_both_sustained() -> None:
    steps = [
        step("siprec", 100, cpu=0.25),  # 40k fork packets per CPU-second
        step("siprec", 200, cpu=0.5),
        step("siprec", 300, cpu=0.5, lost=3000),  # not sustained: loss
        step("rtpengine", 100, cpu=0.5),  # 20k fork packets (and 20k relayed) per CPU-second
        step("rtpengine", 200, cpu=4.0),  # not sustained: 400 % of a core
        step("c-relay", 100, cpu=0.125),
        step("c-relay", 200, cpu=0.25),  # 80k per CPU-second
    ]
    versus_rtpengine = ratio(steps, "siprec", "rtpengine")
    assert versus_rtpengine is not None and versus_rtpengine.calls == 100 and versus_rtpengine.both_sustained
    assert versus_rtpengine.fork_per_cpu == pytest.approx(2.0)
    assert versus_rtpengine.out_per_cpu == pytest.approx(1.0)  # rtpengine sends twice as much
    assert versus_rtpengine.capacity == pytest.approx(2.0)  # 200 calls sustained against 100
    versus_relay = ratio(steps, "siprec", "c-relay")
    assert versus_relay is not None and versus_relay.calls == 200
    assert versus_relay.fork_per_cpu == pytest.approx(0.5)
    assert {(r.subject, r.reference) for r in ratios(steps)} == {
        ("siprec", "rtpengine"),
        ("siprec", "c-relay"),
    }
    assert ratio(steps, "siprec", "nobody") is None


def test_ratio_falls_back_to_the_lowest_common_step() -> None:
    steps = [step("siprec", 100, cpu=0.5, lost=500), step("rtpengine", 100, lost=500), step("rtpengine", 200)]
    found = ratio(steps, "siprec", "rtpengine")
    assert found is not None and found.calls == 100 and not found.both_sustained and found.capacity is None


def test_targets_and_baseline_latency() -> None:
    steps = [
        step("direct", 1000, cpu=None),
        step("siprec", 1000, cpu=0.5, latency_us={"p50": 110.0, "p99": 520.0, "p999": 1030.0}),
        step("rtpengine", 1000, cpu=0.25),  # twice our fork packets per CPU-second
        step("siprec-2w", 1000, cpu=0.5),
    ]
    bench_media.add_baseline_latency(steps)
    assert steps[1].added_latency_us == {"p50": 100.0, "p99": 500.0, "p999": 1000.0}
    assert steps[0].added_latency_us is None
    goals = {goal.name: goal for goal in targets(steps, ratios(steps), workers_share_a_core=True)}
    assert (
        goals["plain_vs_rtpengine"].measured == pytest.approx(0.5)
        and goals["plain_vs_rtpengine"].met is False
    )
    assert goals["p99_at_1000_calls"].measured == 500.0 and goals["p99_at_1000_calls"].met
    assert goals["loss_at_rated_load"].met and goals["loss_at_rated_load"].note == "1000 calls"
    assert goals["srtp_vs_rtpengine"].met is None  # no SRTP subject ran
    assert goals["two_workers"].met is None and "1.00x" in goals["two_workers"].note
    text = bench_media.target_table(list(goals.values()))
    assert "missed (25% of goal)" in text and "not measured" in text


def test_saturation_and_sustained_rules() -> None:
    assert step("siprec", 100, cpu=0.69).sustained
    assert not step("siprec", 100, cpu=0.71).sustained  # >= 70 % of one core
    assert not step("siprec", 100, lost=10).sustained  # 0.1 % loss
    assert step("siprec-2w", 100, cpu=1.2, cores=2).sustained  # 60 % of each of 2 cores
    assert step("siprec", 100, lost=600).saturated and step("siprec", 100, cpu=0.98).saturated
    assert not step("siprec", 100, cpu=0.9, lost=100).saturated
    assert step("direct", 100, cpu=None).sustained


def test_format_rows_aligns_columns() -> None:
    text = format_rows(("name", "value", "note"), [("a", "1", "x"), ("longer", "1,000", "")])
    assert text.splitlines() == [
        "name    value  note",
        "------  -----  ----",
        "a           1  x",
        "longer  1,000",
    ]


def test_a_subject_that_cannot_be_set_up_ends_its_ladder_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, int]] = []

    async def run_step(subject: bench_media.Subject, calls: int, duration: float, quiet: float) -> Step:
        ran.append((subject.name, calls))
        if subject.name == "siprec":
            raise SiprecError("no SRS took the recording: 408")
        return step(subject.name, calls, cpu=None if subject.name == "direct" else 0.5)

    monkeypatch.setattr(bench_media, "run_step", run_step)
    ladder = bench_media.Ladder(
        pipeline_packets=1, repeats=1, calls=(10, 20), duration=1.0, quiet_wait=0.0, retries=0
    )
    subjects = [SUBJECTS["direct"], SUBJECTS["siprec"], SUBJECTS["c-relay"]]
    steps, skipped = asyncio.run(bench_media.run_ladder(subjects, ladder, log=lambda line: None))
    assert ran == [("direct", 10), ("siprec", 10), ("c-relay", 10), ("direct", 20), ("c-relay", 20)]
    assert [(s.subject, s.calls) for s in steps] == [
        ("direct", 10),
        ("c-relay", 10),
        ("direct", 20),
        ("c-relay", 20),
    ]
    assert skipped == {"siprec": "failed at 10 calls: SiprecError: no SRS took the recording: 408"}
