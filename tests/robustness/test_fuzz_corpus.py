"""The regression corpus, the seeds, the mutation engine and the long-run driver.

``corpus/<target>/`` holds every input that broke a target (``corpus/README.md`` says what each
one broke and the fix); each is replayed here against its target, and each is also a seed of
that target, so the fuzzers keep mutating around old bugs. The long-run driver is run for a
second on a target with a planted bug (``_selftest``) and on a real one, so ``make robustness``
is known to find, save and report a crash before anyone relies on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.robustness.run import (
    _OPS,
    CORPUS,
    MAX_INPUT,
    SELFTEST,
    TARGETS,
    main,
    mutate,
    parse_libfuzzer,
    random_input,
)


def _corpus() -> list[tuple[str, Path]]:
    return [
        (folder.name, path)
        for folder in sorted(CORPUS.iterdir())
        if folder.is_dir()
        for path in sorted(folder.iterdir())
    ]


@pytest.mark.parametrize(("name", "path"), _corpus(), ids=[f"{n}/{p.name}" for n, p in _corpus()])
def test_corpus_input(name: str, path: Path) -> None:
    TARGETS[name].run(path.read_bytes())


def test_the_corpus_folders_name_targets_and_the_readme_lists_every_input() -> None:
    folders = {folder.name for folder in CORPUS.iterdir() if folder.is_dir()}
    assert folders <= set(TARGETS), f"corpus folders without a target: {folders - set(TARGETS)}"
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    for name, path in _corpus():
        assert f"`{name}/{path.name}`" in readme, f"{name}/{path.name} is not described in corpus/README.md"


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_seed_passes(name: str) -> None:
    seeds = TARGETS[name].seeds()
    assert seeds, f"{name} has no seed"
    for seed in seeds:
        TARGETS[name].run(seed)


def test_every_edit_applies_to_any_input_and_stays_bounded() -> None:
    pool = (b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n", b"v=0\no=- 1 1 IN IP4 1.2.3.4\n")
    for kind in range(len(_OPS)):
        for data in (b"", b"x", pool[0]):
            for position, argument in ((0, 0), (7, 3), (1 << 20, 1 << 16)):
                out = mutate(data, [(kind, position, argument, b"\xff\x00")], pool, (b"tok",))
                assert isinstance(out, bytes) and len(out) <= MAX_INPUT
    huge = mutate(pool[0], [(13, 5, 65535, b"A" * 16)] * 8, pool, ())
    assert len(huge) <= MAX_INPUT


def test_random_inputs_are_reproducible() -> None:
    import random

    target = TARGETS["sdp"]
    rng = random.Random(5)
    first = [random_input(target, rng) for _ in range(20)]
    rng = random.Random(5)
    again = [random_input(target, rng) for _ in range(20)]
    assert first == again
    assert len(set(first)) > 1


def test_the_long_run_finds_saves_and_reports_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "--targets",
            f"{SELFTEST.name},wav",
            "--seconds-per-target",
            "1",
            "--engine",
            "mutate",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 1, "a crash makes the run fail"
    (report_path,) = tmp_path.glob("robustness-*.json")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["benchmark"] == "robustness" and report["engine"] == "mutate"
    selftest, wav = report["targets"]
    assert selftest["target"] == SELFTEST.name and len(selftest["crashes"]) == 1
    crash = selftest["crashes"][0]
    assert crash["kind"].startswith("ValueError") and "planted bug" in crash["message"]
    assert b"boom" in Path(crash["file"]).read_bytes()
    assert selftest["inputs"] > 100 and selftest["inputs_per_second"] > 0
    assert wav["target"] == "wav" and wav["crashes"] == [] and wav["inputs"] > 100
    assert wav["slowest_input_seconds"] < 10 and wav["peak_rss_mb"] > 0
    out = capsys.readouterr().out
    assert "wrote" in out and "wav" in out


def test_list_names_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(TARGETS)


FINISHED = """INFO: Seed: 1234
#2\tINITED cov: 64 ft: 154 corp: 35/2048b exec/s: 0 rss: 40Mb
#716088\tDONE   cov: 71 ft: 160 corp: 40/2200b lim: 4096 exec/s: 42122 rss: 44Mb
Done 716088 runs in 17 second(s)
stat::number_of_executed_units: 716088
stat::peak_rss_mb:                 44
"""
CRASHED = """#1024\tNEW    cov: 12 ft: 12 corp: 3/10b lim: 4 exec/s: 0 rss: 38Mb L: 4/4 MS: 1 InsertByte-
 === Uncaught Python exception: ===
ValueError: the self-test target found its planted bug
Traceback (most recent call last):
  File "run.py", line 1, in _selftest
ValueError: the self-test target found its planted bug

==4242== ERROR: libFuzzer: fuzz target exited
MS: 1 InsertByte-; base unit: 0
artifact_prefix='/tmp/x/'; Test unit written to /tmp/x/crash-0b1e
"""
FINDING = """ === Uncaught Python exception: ===
Finding: our serialization of a parsed message does not parse: too long
Traceback (most recent call last):
  File "run.py", line 737, in run_sip_message
Finding: our serialization of a parsed message does not parse: too long
"""
TIMED_OUT = """#9\tpulse  cov: 5 ft: 5 corp: 1/1b exec/s: 0 rss: 30Mb
==77== ERROR: libFuzzer: timeout after 10 seconds
"""


def test_libfuzzer_output_is_read() -> None:
    done = parse_libfuzzer(FINISHED)
    assert (done.inputs, done.seconds, done.crash) == (716088, 17.0, None)
    assert done.coverage == {"edges": 71, "features": 160, "corpus": 40}
    crashed = parse_libfuzzer(CRASHED)
    assert crashed.inputs == 1024 and crashed.seconds == 0.0
    assert crashed.crash == "ValueError: the self-test target found its planted bug"
    assert (
        parse_libfuzzer(FINDING).crash
        == "Finding: our serialization of a parsed message does not parse: too long"
    )
    assert parse_libfuzzer(TIMED_OUT).crash == "timeout after 10 seconds"
