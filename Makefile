# Two commands for a newcomer: `make demo` and `make test`. Both create .venv
# and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-fleet fault-test test lint fmt bench bench-compare clean sandbox-deps browser-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/warden demo

# Two `warden serve` replicas (ports 7071, 7072) on the local PostgreSQL and Redis; a kill
# through one stops agents on both (docs/fleet.md). HOLD=1 keeps them up for the console.
demo-fleet: $(STAMP)
	$(BIN)/python -m warden.examples.fleet.demo $(if $(HOLD),--hold)

test: $(STAMP) sandbox-deps browser-deps
	$(BIN)/warden policy test src/warden/examples
	$(BIN)/python -m pytest -n 2

# The web console's tests drive Debian's Chromium with Playwright (docs/fleet.md).
# As root with apt it is installed here; otherwise a note says how, and the
# browser tests are skipped (in CI they must run: WARDEN_REQUIRE_BROWSER).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "note: could not install chromium; the browser tests will be skipped"; \
	  else \
	    echo "note: chromium is missing (Debian/Ubuntu: sudo apt-get install chromium); the browser tests will be skipped"; \
	  fi; \
	}

# The runtime sandbox runs code under bubblewrap (docs/runtime.md). As root with
# apt (CI, a container) it is installed here; otherwise a note says how, and the
# tests that need it are skipped.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
	      || echo "note: could not install bubblewrap; the sandbox tests will be skipped"; \
	  else \
	    echo "note: bubblewrap is missing (Debian/Ubuntu: sudo apt-get install bubblewrap); the sandbox tests will be skipped"; \
	  fi; \
	}

# Load and fault tests: they restart the shared PostgreSQL and Redis, so they run serially
# and only here (deselected in `make test`); see docs/fleet.md, "Load and faults".
fault-test: $(STAMP)
	WARDEN_FAULT_TESTS=1 $(BIN)/python -m pytest -p no:xdist tests/fleet

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy --strict src

fmt: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-compare: $(STAMP)
	bash benchmarks/compare/setup_agt.sh .venv-agt
	$(BIN)/python benchmarks/run.py --compare .venv-agt/bin/python

clean:
	rm -rf $(VENV) .venv-agt .mypy_cache .ruff_cache .pytest_cache .hypothesis
