"""What every benchmark reports the same way: a figure, the machine it ran on, the JSON file, the table."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siprec_src import __version__

RESULTS_DIR = Path(__file__).resolve().parent / "results"

ParamValue = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, with what it was measured over."""

    name: str
    value: float
    unit: str
    params: dict[str, ParamValue] = field(default_factory=dict)


def machine(benchmark: str) -> dict[str, Any]:
    """The head of a report: which benchmark, when, and on what machine and Python."""
    return {
        "benchmark": benchmark,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "siprec_src": __version__,
    }


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<benchmark>-<date>-<host>.json`` into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report["timestamp"]).strftime("%Y%m%d-%H%M%S")
    host = re.sub(r"[^A-Za-z0-9.-]", "_", str(report["host"])) or "unknown"
    path = out_dir / f"{report['benchmark']}-{stamp}-{host}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def format_table(figures: Sequence[Figure]) -> str:
    rows = [("name", "value", "unit")]
    for figure in figures:
        value = f"{figure.value:,.1f}" if figure.value >= 100 else f"{figure.value:.3f}"
        rows.append((figure.name, value, figure.unit))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{name:<{widths[0]}}  {value:>{widths[1]}}  {unit}" for name, value, unit in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first and the last column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in (columns, *rows)) for i in range(len(columns))]
    last = len(columns) - 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            out.append(f"{cell:<{width}}" if index in (0, last) else f"{cell:>{width}}")
        return "  ".join(out).rstrip()

    lines = [line(columns), "  ".join("-" * width for width in widths)]
    lines += [line(row) for row in rows]
    return "\n".join(lines)
