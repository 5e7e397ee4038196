"""The signaling benchmark (benchmarks/bench_signaling.py) end to end with tiny counts, so it cannot rot.

Runs ``main --quick`` with a few sessions per configuration (UDP with the pipelines in-process,
UDP with one media worker, TCP) on real sockets against SIPp (``benchmarks/sipp/srs_load.xml``)
and checks the JSON report: complete, and consistent with SIPp's own statistics (SIPp completed
exactly the sessions we completed, failed none, exited 0 by itself, and held as many calls as
we held active recordings). Also the pure pieces: percentiles and the target arithmetic.
Does not cover speed: no measured figure is compared with a threshold. About 10 s (each
configuration spawns a Python process of its own).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_signaling
from benchmarks.bench_signaling import Target, percentile

WARMUP, SESSIONS, WINDOW, LATENCY_SESSIONS, HOLD, SUSTAIN = 4, 30, 8, 4, 24, 2.0


def test_a_tiny_quick_run_agrees_with_sipp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--quick",
        "--out",
        str(tmp_path),
        "--warmup",
        str(WARMUP),
        "--sessions",
        str(SESSIONS),
        "--window",
        str(WINDOW),
        "--latency-sessions",
        str(LATENCY_SESSIONS),
        "--hold",
        str(HOLD),
        "--quiet-wait",
        "0",
        "--sustain",
        str(SUSTAIN),
    ]
    assert bench_signaling.main(argv) == 0
    (path,) = tmp_path.glob("signaling-*.json")
    report = json.loads(path.read_text(encoding="utf-8"))
    for key in ("timestamp", "host", "python", "loop", "cpu_count", "sipp", "counts", "settings", "targets"):
        assert report[key], key
    assert report["benchmark"] == "signaling" and report["quick"] is True and report["consistent"] is True
    assert "SIPp v" in report["sipp"]

    configs = {config["label"]: config for config in report["configs"]}
    assert list(configs) == [config.label for config in bench_signaling.QUICK.configs]
    for label, config in configs.items():
        held = HOLD if config["config"]["hold"] else 0
        sustained = config["sustained"]
        assert (sustained is not None) == (label == "udp-w0"), label  # --sustain: the first config
        # The hold and the sustained run have an engine of their own, each with its own warm-up.
        engines = 1 + (1 if held else 0) + (1 if sustained else 0)
        expected = engines * WARMUP + SESSIONS + LATENCY_SESSIONS + held
        if sustained:
            expected += sustained["completed"]
            assert sustained["failed"] == 0 and sustained["seconds"] == SUSTAIN
            # Sampled in quarters (a short run); none is steady: that takes 32 s.
            assert sustained["interval"] == SUSTAIN / 4 and len(sustained["intervals"]) >= 2
            assert 0 < sum(each["sessions"] for each in sustained["intervals"]) <= sustained["completed"]
            assert sustained["first"][0] > 0 and sustained["steady"] == [0.0, 0.0]
        assert config["completed"] == expected and config["failed"] == 0, label
        sipp = config["sipp"]
        assert sipp["returncode"] == 0 and not sipp["killed"], (label, sipp)
        assert sipp["created"] == sipp["successful"] == expected, (label, sipp)
        assert sipp["failed"] == sipp["unexpected"] == sipp["current"] == 0, (label, sipp)
        assert config["consistent"] is True

        rate = config["rate"]
        assert (rate["sessions"], rate["window"], rate["completed"]) == (SESSIONS, WINDOW, SESSIONS)
        # SIPp's CPU comes in 10 ms clock ticks: a few sessions may not reach one.
        assert rate["rate"] > 0 and rate["per_core"] > 0 and rate["cpu_ours"] > 0 and rate["cpu_sipp"] >= 0
        assert (rate["cpu_worker"] > 0) == (config["config"]["workers"] > 0), label
        assert 0 < rate["setup_ms"]["p50"] <= rate["setup_ms"]["p99"]
        assert 0 < rate["teardown_ms"]["p50"] <= rate["teardown_ms"]["p99"]
        assert all(third > 0 for third in rate["thirds_cpu_ms"])
        assert config["window1"]["window"] == 1 and config["window1"]["completed"] == LATENCY_SESSIONS

        if held:
            (level,) = config["hold"]
            # SIPp saw as many calls in progress as we held active recordings.
            assert level["active"] == level["opened"] == level["sipp_current"] == HOLD
            assert level["kib_per_session"] == (level["control_kib"] + level["worker_kib"]) / HOLD
        else:
            assert config["hold"] == []

    targets = {target["name"]: target for target in report["targets"]}
    assert set(targets) == {f"{label}.sessions_per_core" for label in configs} | {
        f"{label}.rss_per_session" for label, config in configs.items() if config["config"]["hold"]
    }
    for label, config in configs.items():
        target = targets[f"{label}.sessions_per_core"]
        assert target["measured"] == config["rate"]["per_core"]
        assert target["ratio"] == pytest.approx(config["rate"]["per_core"] / 500)
        assert target["met"] == (target["ratio"] >= 1)

    names = {figure["name"] for figure in report["figures"]}
    for label in configs:
        assert {f"{label}.rate", f"{label}.per_core", f"{label}.cpu", f"{label}.setup_p99"} <= names
    assert f"udp-w0.rss_per_session.{HOLD}" in names

    printed = capsys.readouterr().out
    assert "udp-w1" in printed and "targets:" in printed and f"wrote {path}" in printed


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.99) == 3.0
    assert percentile([], 0.5) == 0.0


def test_targets_are_oriented_so_that_one_means_met() -> None:
    rate = Target("r", "rate", 400.0, 500.0, True, "sessions/CPU-s")
    assert rate.ratio == pytest.approx(0.8) and rate.met is False and rate.verdict == "missed (80% of goal)"
    memory = Target("m", "rss", 40.0, 50.0, False, "KiB")
    assert memory.ratio == pytest.approx(1.25) and memory.met is True and memory.verdict == "met"
    assert Target("n", "none", None, 50.0, False, "KiB").verdict == "not measured"
