# Two commands on a fresh Debian 12 machine with Python 3.11: `make demo` and `make test`.
# Both create .venv, install the package with its dev extra, and install the Debian peers
# the tests use (SIPp from sip-tester, tshark) when they are missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: all install peers lint typecheck pytest test demo bench bench-quick robustness clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

peers:
	@bash scripts/install-peers.sh

lint: install
	$(VENV)/bin/ruff check siprec_src tests benchmarks examples
	$(VENV)/bin/ruff format --check siprec_src tests benchmarks examples

typecheck: install
	$(VENV)/bin/mypy --strict siprec_src

pytest: install peers
	$(VENV)/bin/pytest

test: lint typecheck pytest

demo: install
	$(VENV)/bin/siprec-src demo

bench: install peers
	$(PY) -m benchmarks.bench_sip
	$(PY) -m benchmarks.bench_signaling
	$(PY) -m benchmarks.bench_media

bench-quick: install peers
	$(PY) -m benchmarks.bench_signaling --quick
	$(PY) -m benchmarks.bench_media --quick

# The long runs: every fuzzer for a bounded time, then a 300 s load soak (short versions of
# both run inside `make test`).
robustness: install peers
	$(PY) -m pip install --quiet atheris || echo "atheris unavailable: the built-in mutator runs instead"
	$(PY) -m tests.robustness.run
	$(PY) -m tests.robustness.soak --calls 200 --churn 20 --seconds 300 --max-kib-per-call-control 0.5 --max-kib-per-call-worker 0.5

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
