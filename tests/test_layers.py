"""The layer direction of docs/architecture.md, enforced on the import graph.

Each package under siprec_src may import only the packages listed for it. The pure
protocol packages (sip, sdp, metadata) may not import asyncio, socket, ssl, time or anything
else that does I/O or reads the clock: they take bytes and ``now`` and return bytes, events
and deadlines. Checked on the source with ``ast`` so it also covers modules no test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import siprec_src

ROOT = Path(siprec_src.__file__).parent

PURE = {"sip", "sdp", "metadata", "streams"}
# package -> siprec_src packages it may import (itself is always allowed; "errors" everywhere).
ALLOWED: dict[str, set[str]] = {
    "sip": {"sip", "sdp", "metadata"},
    "sdp": {"sip", "sdp", "metadata"},
    "metadata": {"sip", "sdp", "metadata"},
    "streams": {"media"},  # WebSocket stream wire formats: pure, on the media audio codecs
    "media": set(),
    "signaling": {"sip"},
    "recording": {"sip", "sdp", "metadata", "media", "signaling", "streams"},
    "control": {"recording", "streams"},  # streams: the pure wire-format options the shapes parse
    "srs": {"sip", "sdp", "metadata", "media", "signaling"},
}
IO_MODULES = {"asyncio", "socket", "ssl", "time", "selectors", "threading", "subprocess", "multiprocessing"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _violations() -> list[str]:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package_of(path)
        allowed = ALLOWED.get(package)
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            if package in PURE and top in IO_MODULES:
                problems.append(f"{path.relative_to(ROOT)}: pure layer imports {name}")
            if top != "siprec_src" or allowed is None:
                continue
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if target in ("", "errors", package):
                continue
            known = target in ALLOWED or (ROOT / target).is_dir() or (ROOT / f"{target}.py").exists()
            if not known:
                continue  # "from siprec_src import __version__" and the like
            if target not in allowed:
                problems.append(f"{path.relative_to(ROOT)}: {package} must not import {name}")
    for path in sorted(ROOT.rglob("*.py")):
        if _package_of(path) in ("srs", "__main__", "app", "demo"):
            continue
        if any(name.startswith("siprec_src.srs") for name in _imports(path)):
            problems.append(f"{path.relative_to(ROOT)}: nothing but the CLI may import srs")
    return problems


def test_layer_direction() -> None:
    assert _violations() == []


def test_the_checker_catches_a_violation() -> None:
    # Guard against a test that cannot fail: a pure module importing asyncio must be reported.
    bad = ROOT / "sip" / "_layer_probe.py"
    bad.write_text("import asyncio\nfrom siprec_src.recording import x\n")
    try:
        found = _violations()
    finally:
        bad.unlink()
    assert any("_layer_probe.py: pure layer imports asyncio" in item for item in found)
    assert any("sip must not import siprec_src.recording" in item for item in found)
