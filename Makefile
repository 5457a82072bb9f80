# Express notification service — developer entry points (GNU make).
# A fresh clone needs only python3 (with its venv module) and make;
# `make test` installs the rest (the venv from PyPI, mosquitto from apt).

PY ?= python3
VENV = .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.stamp
CONFIG ?= config/example.toml
PYTEST_ARGS ?=
# Set BROWSER_DEPS=no to skip installing Chromium (dashboard browser tests).
BROWSER_DEPS ?= yes

# Root runs apt-get directly; others through sudo (non-interactive: fail
# rather than hang waiting for a password).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo "sudo -n")
APT_GET = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
APT_INSTALL = $(APT_GET) install -y --no-install-recommends

.DEFAULT_GOAL := help
.PHONY: help venv setup run test test-deps test-slow chaos soak fuzz bench bench-channels lint check-config clean distclean

help:
	@echo "make setup|venv     create $(VENV) and install the project (editable, with test extras)"
	@echo "make run            run the demo daemon with $(CONFIG)"
	@echo "make test           fast tests (not slow, not bench); PYTEST_ARGS='-k foo' passes options"
	@echo "make test-deps      install mosquitto, promtool (and chromium) with apt-get when missing"
	@echo "make test-slow      soak/chaos tests"
	@echo "make chaos          SIGKILL/broker-restart chaos on every channel (docs/reliability.md)"
	@echo "make soak           30-minute steady replay, RSS and open files sampled (SOAK_SECONDS=…)"
	@echo "make fuzz           long fuzzing runs (FUZZ_EXAMPLES, FUZZ_ROUNDS); atheris targets in fuzz/"
	@echo "make bench          benchmarks: bench/run.py writes bench/REPORT.md"
	@echo "make lint           ruff check, ruff format --check, mypy"
	@echo "make check-config   validate $(CONFIG)"
	@echo "make clean          caches and build output; distclean also removes $(VENV) and var/"

# --- environment -------------------------------------------------------------

venv setup: $(STAMP)

# Re-install only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || { \
	  echo "error: '$(PY) -m venv' failed; on Debian/Ubuntu install python3-venv" >&2; \
	  rm -rf $(VENV); exit 1; }
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	@touch $@

# mosquitto: Debian puts it in /usr/sbin, not on a non-root PATH, so check both.
# A failing apt-get ends with one clear line, not just apt's own noise.
test-deps:
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; else \
	  echo "mosquitto missing: installing it with apt-get"; \
	  $(APT_INSTALL) mosquitto || { $(APT_GET) update && $(APT_INSTALL) mosquitto; } || { \
	    echo "error: could not install mosquitto (tests start private brokers)." >&2; \
	    echo "       install it yourself: apt-get install mosquitto" >&2; exit 1; }; \
	fi
	@if command -v promtool >/dev/null 2>&1; then :; else \
	  echo "promtool missing: installing prometheus with apt-get"; \
	  $(APT_INSTALL) prometheus || { $(APT_GET) update && $(APT_INSTALL) prometheus; } || { \
	    echo "error: could not install prometheus (promtool checks the alert rules)." >&2; \
	    echo "       install it yourself: apt-get install prometheus" >&2; exit 1; }; \
	fi
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
	  echo "PostgreSQL missing: installing it with apt-get (scale-out store tests)"; \
	  $(APT_INSTALL) postgresql || { $(APT_GET) update && $(APT_INSTALL) postgresql; } || { \
	    echo "error: could not install postgresql (tests start a private cluster)." >&2; \
	    echo "       install it yourself: apt-get install postgresql" >&2; exit 1; }; \
	fi
	@if [ "$(BROWSER_DEPS)" != yes ]; then :; \
	elif command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; else \
	  echo "chromium missing: installing it with apt-get"; \
	  $(APT_INSTALL) chromium || { $(APT_GET) update && $(APT_INSTALL) chromium; } || { \
	    echo "error: could not install chromium (dashboard browser tests)." >&2; \
	    echo "       install it yourself (apt-get install chromium) or run with BROWSER_DEPS=no" >&2; \
	    exit 1; }; \
	fi

# --- run ---------------------------------------------------------------------

run: $(STAMP)
	@mkdir -p var
	@echo "dashboard  http://127.0.0.1:9120/#token=demo-admin"
	@echo "metrics    http://127.0.0.1:9120/metrics"
	@echo "SMTP       127.0.0.1:2525"
	@echo "MQTT       mqtt://127.0.0.1:11883 (embedded broker)"
	exec $(BIN)/monitor run -c $(CONFIG)

check-config: $(STAMP)
	$(BIN)/monitor check-config -c $(CONFIG)

# --- tests -------------------------------------------------------------------

test: $(STAMP) test-deps
	$(BIN)/pytest -q -m "not slow and not bench" $(PYTEST_ARGS)

test-slow: $(STAMP) test-deps
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

# Reliability (docs/reliability.md).  Figures land in test-artifacts/.
chaos: $(STAMP) test-deps
	$(BIN)/pytest -q -m slow tests/test_chaos*.py $(PYTEST_ARGS)

soak: $(STAMP) test-deps
	$(BIN)/pytest -q -s -m slow tests/test_soak*.py $(PYTEST_ARGS)

# The property tests with many more examples, the listener fuzzing with many
# more rounds, then each atheris target for FUZZ_SECONDS (when atheris is
# installed: pip install atheris; otherwise fuzz/run.py mutates the corpus).
FUZZ_EXAMPLES ?= 5000
FUZZ_ROUNDS ?= 2500
FUZZ_SECONDS ?= 60
fuzz: $(STAMP) test-deps
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -o timeout=3600 tests/test_fuzz_parsers.py tests/test_formats_fuzz.py tests/test_modem_fuzz.py
	FUZZ_ROUNDS=$(FUZZ_ROUNDS) $(BIN)/pytest -q -o timeout=3600 tests/test_fuzz_listeners.py
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# The standard set in one go (bench/run.py, see docs/simulator.md): channel
# ceilings vs the daemon with the same client, Alertmanager (also under wrk,
# benchmarks/bench_http.py), the writer (benchmarks/bench_writer.py) and the
# pytest-benchmark suites of tests/bench; writes bench/REPORT.md.
# BENCH_ARGS='--runs 1 --seconds 2' for a quick look.
bench: $(STAMP) test-deps
	@command -v wrk >/dev/null && command -v prometheus-alertmanager >/dev/null || \
	  $(APT_INSTALL) wrk prometheus-alertmanager
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The channel teams' own scripts (their client processes, their figures).
bench-channels: $(STAMP) test-deps
	$(BIN)/python tests/bench/bench_mqtt.py
	@test ! -f tests/bench/bench_smtp.py || $(BIN)/python tests/bench/bench_smtp.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# --- cleaning ----------------------------------------------------------------

clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .benchmarks build dist test-artifacts *.egg-info

distclean: clean
	rm -rf $(VENV) var
