"""Smoke test of benchmarks/bench_media.py with tiny loads, so the benchmark cannot rot.

Covers: every pipeline micro-benchmark runs, one worker run per mode goes through the real
control path with the C load generator and sink and loses nothing at a trivial rate, and the
JSON report has its shape. Does not cover speed: no figure is compared with any threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_media


def test_media_benchmark_runs_and_reports(tmp_path: Path) -> None:
    argv = ["--quick", "--out", str(tmp_path), "--streams", "20", "--duration", "0.5", "--rates", "1000"]
    assert bench_media.main([*argv, "--modes", "plain,srtp"]) == 0
    (report_path,) = tmp_path.glob("media-*.json")
    report = json.loads(report_path.read_text())
    names = {figure["name"] for figure in report["figures"]}
    assert {"pipeline.plain.time", "pipeline.rewrite.time", "pipeline.srtp.time"} <= names
    for mode in ("plain", "srtp"):
        (run,) = [f for f in report["figures"] if f["name"] == f"worker.{mode}.1000"]
        assert run["params"]["lost"] == 0 and run["params"]["sink_received"] == run["params"]["sent"]
