"""Issue 9, reliability: fuzzing (``run.py``, ``test_fuzz_*.py``, ``corpus/``) and fault injection.

The fuzz targets and both of their drivers live in ``run.py`` (``python -m tests.robustness.run``
is the long run of ``make robustness``); this package itself imports nothing, so the fault
injection helpers here do not pay for the fuzzers' imports.
"""
