# Two commands on a fresh machine: `make run` and `make test`. Both create .venv and build the
# Cython extensions first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: all install run test test-compiled test-pure soak bench clean chromium

all: test

$(STAMP): pyproject.toml setup.py core_ext/_ledger_c.pyx core_ext/_ledger_c.pxd core_ext/_promo_c.pyx core_ext/_salepath_c.pyx
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	GATEWAY_REQUIRE_EXTENSIONS=1 $(PY) -c "import core_ext._select as s; assert {s.ledger.__name__, s.promo.__name__, s.salepath.__name__} == {'core_ext._ledger_c', 'core_ext._promo_c', 'core_ext._salepath_c'}; print('core_ext: compiled extensions built')"
	touch $(STAMP)

install: $(STAMP)

# A living demo store in demo/ (kept between runs; `gateway demo --fresh` starts over). Ctrl-C stops it.
run: $(STAMP)
	$(VENV)/bin/gateway demo

# The status page's browser test uses Debian's chromium: installed here when missing and running as
# root; otherwise that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the status page's browser test will be skipped"

# The whole suite twice: once on the compiled core (which must be there), once on the pure-Python twins.
test: test-compiled test-pure

test-compiled: $(STAMP) chromium
	GATEWAY_REQUIRE_EXTENSIONS=1 $(PYTEST) -q -m "not soak"

test-pure: $(STAMP) chromium
	GATEWAY_PURE_PYTHON=1 $(PYTEST) -q -m "not soak"

soak: $(STAMP)
	$(PYTEST) -q -m soak

# Every performance figure beside its same-run baseline: benchmarks/results.json, docs/performance.md.
# wrk loads the HTTP figures (installed here when missing; without it a Python load generator is used).
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		echo "wrk could not be installed: the HTTP figures use the Python load generator"
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info core_ext/*.so core_ext/_*_c.c
