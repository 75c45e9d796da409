# Two commands on a fresh machine: `make run` and `make test`. Both create .venv and build the
# Cython extensions first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: all install run test test-compiled test-pure soak test-twice bench clean chromium promtool

all: test

$(STAMP): pyproject.toml setup.py core_ext/_ledger_c.pyx core_ext/_ledger_c.pxd core_ext/_promo_c.pyx core_ext/_promo_c.pxd core_ext/_salepath_c.pyx core_ext/_docbytes_c.pyx core_ext/_mpwrite.pxd
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	GATEWAY_REQUIRE_EXTENSIONS=1 $(PY) -c "import core_ext._select as s; assert {s.ledger.__name__, s.promo.__name__, s.salepath.__name__, s.docbytes.__name__} == {'core_ext._ledger_c', 'core_ext._promo_c', 'core_ext._salepath_c', 'core_ext._docbytes_c'}; print('core_ext: compiled extensions built')"
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

# The alerting rules' tests use promtool from Debian's prometheus package: installed here when missing
# and running as root; only the tool is wanted, so the package's service is stopped and disabled again
# where systemd started it. Otherwise those tests are skipped and say why.
promtool:
	@command -v promtool >/dev/null || [ "$$(id -u)" != 0 ] || \
		((apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) && \
		 (systemctl disable --now prometheus >/dev/null 2>&1 || true)) || \
		echo "promtool could not be installed: the alerting rules' tests will be skipped"

# The whole suite twice: once on the compiled core (which must be there), once on the pure-Python twins.
test: test-compiled test-pure

test-compiled: $(STAMP) chromium promtool
	GATEWAY_REQUIRE_EXTENSIONS=1 $(PYTEST) -q -m "not soak"

test-pure: $(STAMP) chromium promtool
	GATEWAY_PURE_PYTHON=1 $(PYTEST) -q -m "not soak"

# The soak session records what it measured (inputs fuzzed, kills, floods) and rewrites the measured
# part of docs/reliability.md from it, pass or fail; the exit status is the session's.
RECORDS := build/reliability.json
soak: $(STAMP)
	rm -f $(RECORDS)
	GATEWAY_RELIABILITY_RECORDS=$(RECORDS) $(PYTEST) -q -m soak; status=$$?; \
	$(PY) -m tests._reliability_report $(RECORDS) docs/reliability.md; exit $$status

# The whole quick suite twice in a row, as two copies running at once (one per flavour): a test that
# leans on timing, ports or shared files shows itself here. Logs in build/test-twice-*.log.
test-twice: $(STAMP)
	mkdir -p build
	for round in 1 2; do \
	  (GATEWAY_REQUIRE_EXTENSIONS=1 $(PYTEST) -q -m "not soak" > build/test-twice-$$round-compiled.log 2>&1; \
	   echo $$? > build/test-twice-$$round-compiled.rc) & \
	  (GATEWAY_PURE_PYTHON=1 $(PYTEST) -q -m "not soak" > build/test-twice-$$round-pure.log 2>&1; \
	   echo $$? > build/test-twice-$$round-pure.rc) & \
	  wait; \
	done; \
	failed=0; for f in build/test-twice-*.rc; do \
	  echo "$$f: $$(cat $$f) ($$(tail -n 1 $${f%.rc}.log))"; [ "$$(cat $$f)" = 0 ] || failed=1; \
	done; exit $$failed

# Every performance figure beside its same-run baseline: benchmarks/results.json, docs/performance.md.
# wrk loads the HTTP figures (installed here when missing; without it a Python load generator is used).
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		echo "wrk could not be installed: the HTTP figures use the Python load generator"
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info core_ext/*.so core_ext/_*_c.c
