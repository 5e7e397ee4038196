"""The media benchmark's picture: one line per subject against offered calls.

``plot_media(report, path)`` draws, from the ``step.<subject>.<calls>`` figures of a
``bench_media`` report: fork packets/s reaching the recorder (with the offered rate as a dashed
line), the latency each subject adds at p99 (over the ``direct`` baseline; SRTP subjects have
none, their stamp is encrypted) and the subject's CPU seconds per million fork packets. A step
that was not sustained (loss >= 0.1 % or >= 70 % of a core) is drawn with a hollow marker.

matplotlib (the ``plot`` extra) is imported here, lazily, with the Agg backend: no display needed.
``python -m benchmarks.plot REPORT.json`` redraws the PNG of a saved report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PANELS = (
    ("value", "fork packets/s at the recorder", "linear"),
    ("added_latency_p99_us", "added latency p99 (µs)", "log"),
    ("cpu_s_per_million_fork", "CPU s per million fork packets", "linear"),
)


def series(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The step figures of a report by subject, in order of offered calls: each a dict of the
    figure's params plus its ``value`` (fork packets/s)."""
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for figure in report.get("figures", []):
        if not str(figure["name"]).startswith("step."):
            continue
        point = {**figure["params"], "value": figure["value"]}
        by_subject.setdefault(str(point["subject"]), []).append(point)
    for points in by_subject.values():
        points.sort(key=lambda point: point["calls"])
    return by_subject


def plot_media(report: dict[str, Any], path: Path) -> Path:
    """Write the PNG for ``report`` to ``path`` and return ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_subject = series(report)
    figure, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.8), constrained_layout=True)
    offered: dict[int, float] = {}
    order = [*report.get("subjects", {}), *sorted(by_subject)]
    for subject, points in by_subject.items():
        for point in points:
            offered[int(point["calls"])] = float(point["offered_rate"])
        color = f"C{order.index(subject) % 10}"  # the same colour in every panel
        for axis, (key, _, _) in zip(axes, PANELS, strict=True):
            _line(axis, subject, [p for p in points if key in p], key, color)
    if offered:
        calls = sorted(offered)
        axes[0].plot(calls, [offered[c] for c in calls], "k--", linewidth=1, label="offered")
    for axis, (_, title, scale) in zip(axes, PANELS, strict=True):
        axis.set_title(title)
        axis.set_xlabel("offered calls (2 legs x 50 packets/s)")
        axis.grid(True, alpha=0.3)
        if scale == "log" and any(line.get_ydata().size for line in axis.get_lines()):
            axis.set_yscale("log")
    axes[0].legend(fontsize="small")
    figure.suptitle(_title(report), fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _line(axis: Any, subject: str, points: Sequence[dict[str, Any]], key: str, color: str) -> None:
    if not points or (key != "value" and subject == "direct"):
        return
    values = [max(float(p[key]), 1.0) if key.endswith("_us") else float(p[key]) for p in points]
    calls = [int(p["calls"]) for p in points]
    axis.plot(calls, values, marker="o", label=subject, color=color)
    hollow = [(c, v) for c, v, p in zip(calls, values, points, strict=True) if not p.get("sustained", True)]
    if hollow:
        axis.plot(
            [c for c, _ in hollow],
            [v for _, v in hollow],
            linestyle="none",
            marker="o",
            markersize=9,
            markerfacecolor="white",
            markeredgecolor=color,
        )


def _title(report: dict[str, Any]) -> str:
    return (
        f"siprec_src media benchmark, {report.get('timestamp', '')} on {report.get('host', '?')} "
        f"({report.get('cpu_count', '?')} CPUs); hollow = not sustained"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.plot REPORT.json", file=sys.stderr)
        return 2
    source = Path(args[0])
    report = json.loads(source.read_text(encoding="utf-8"))
    print(f"wrote {plot_media(report, source.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
