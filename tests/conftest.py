"""Shared test helpers: where the shared fixtures live (read in place, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(
    os.environ.get("SIPREC_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")
)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    # A missing fixtures folder must fail loudly, not skip: the tests prove nothing without it.
    assert FIXTURES.is_dir(), f"fixtures folder not found at {FIXTURES} (set SIPREC_FIXTURES)"
    return FIXTURES
