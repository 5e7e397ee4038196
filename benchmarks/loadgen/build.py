"""Compile the load generator's C programs on demand.

``build("rtpgen")`` returns the path of ``benchmarks/build/rtpgen``, compiling
``benchmarks/loadgen/rtpgen.c`` first when the binary is missing or older than its source or
the shared ``common.h``. The compiler is ``$CC`` (default ``gcc``) with ``-O2 -Wall -Wextra
-Werror``, so a warning is a build failure. The binary is written under a temporary name and
renamed into place, so two processes building at once never run a half-written file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
BUILD_DIR = SOURCE_DIR.parent / "build"
PROGRAMS = ("rtpgen", "rtpsink", "relay")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11")
LDFLAGS = ("-pthread",)
HEADERS = ("common.h",)


class BuildError(RuntimeError):
    """The compiler is missing or rejected a source file (its output is in the message)."""


def _sources(name: str) -> list[Path]:
    return [SOURCE_DIR / f"{name}.c", *(SOURCE_DIR / header for header in HEADERS)]


def needs_build(name: str, build_dir: Path = BUILD_DIR) -> bool:
    """True when the binary is missing or older than any of its sources."""
    binary = build_dir / name
    if not binary.exists():
        return True
    built = binary.stat().st_mtime_ns
    return any(source.stat().st_mtime_ns > built for source in _sources(name))


def build(name: str, *, force: bool = False, build_dir: Path = BUILD_DIR) -> Path:
    """Path of the compiled program ``name`` (one of ``PROGRAMS``), compiling it if stale."""
    if name not in PROGRAMS:
        raise ValueError(f"unknown program {name!r}; allowed: {', '.join(PROGRAMS)}")
    binary = build_dir / name
    if not force and not needs_build(name, build_dir):
        return binary
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise BuildError(f"C compiler {compiler!r} not found (install gcc, or set CC)")
    build_dir.mkdir(parents=True, exist_ok=True)
    temporary = build_dir / f".{name}.{os.getpid()}.tmp"
    command = [
        compiler,
        *CFLAGS,
        "-o",
        str(temporary),
        str(SOURCE_DIR / f"{name}.c"),
        *LDFLAGS,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
    os.replace(temporary, binary)
    return binary


def build_all(*, force: bool = False, build_dir: Path = BUILD_DIR) -> dict[str, Path]:
    """Every program, by name."""
    return {name: build(name, force=force, build_dir=build_dir) for name in PROGRAMS}
