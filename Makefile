# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: run test test-etcd test-cluster lint typecheck bench clean wheel venv fuzz

$(STAMP): pyproject.toml setup.py $(wildcard native/*.pyx native/*.pxd)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/fastkv

# Installs the real etcd (for the tests that compare against it) and wrk (the benchmark tool's
# load generator) when apt is available.
etcd-bin:
	@command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v wrk >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client wrk >/dev/null) || echo "etcd/wrk not installed: their tests will be skipped"; }

test: $(STAMP) etcd-bin
	$(BIN)/pytest -q -p no:cacheprovider

# The conformance suite against a real etcd 3.4 (proves the suite tests etcd's behaviour).
test-etcd: $(STAMP) etcd-bin
	FASTKV_TARGET=etcd $(BIN)/pytest -q tests/conformance

# The same suite through a follower of a 3-member cluster: fastkv, then real etcd.
test-cluster: $(STAMP) etcd-bin
	FASTKV_TARGET=fastkv-cluster $(BIN)/pytest -q tests/conformance
	FASTKV_TARGET=etcd-cluster $(BIN)/pytest -q tests/conformance

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Coverage-guided fuzzing (atheris), one target after another at low priority: FUZZ_SECONDS each (the
# bounded slice in `make test` replays the seeds only). Finds go to /tmp/fastkv-fuzz/<target>/; keep
# the new coverage as seeds with `python -m tests.fuzz.run <target> --merge`.
FUZZ_TARGETS ?= http form wal frame
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	status=0; for t in $(FUZZ_TARGETS); do nice $(PY) -m tests.fuzz.run $$t -max_total_time=$(FUZZ_SECONDS) \
	  -max_len=4096 -timeout=10 -print_final_stats=1 || status=1; done; exit $$status

bench: $(STAMP) etcd-bin
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m fastkv.bench run --all

wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps -w dist .

clean:
	rm -rf build dist *.egg-info src/*.egg-info src/fastkv/_native/*.so src/fastkv/_native/*.c native/*.c native/*.html .pytest_cache
