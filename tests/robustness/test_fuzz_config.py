"""The sidecar config file under the short fuzz run: mutated TOML (the example configs, an edge and
a connector) must give a config or the ``ConfigError`` family, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given

from siprec_src.config import ConfigFileError, parse_config
from tests.robustness.run import TARGETS, fuzz_settings, mutations

TARGET = TARGETS["config"]


@fuzz_settings(200)
@given(data=mutations(TARGET))
def test_fuzz(data: bytes) -> None:
    TARGET.run(data)


def test_an_integer_past_the_digit_limit_is_a_config_error() -> None:
    """Found by the config fuzzer: tomllib lets int()'s ValueError through."""
    with pytest.raises(ConfigFileError, match="TOML value cannot be read"):
        parse_config("[media]\nworkers = " + "1" * 5000 + "\n", file="big.toml")
