# rustpool: everything a fresh machine needs goes through here.
#   make demo   build, then rustpool side by side with the standard library's executors
#   make test   cargo test + pytest on every CPython 3.11+ found (missing versions are reported)
#   make bench  pytest-benchmark tables, rustpool beside its anchors, and a PNG chart per table
#               (docs/charts/<version>/, from .benchmarks/bench-<version>.json)
#   make lint   cargo fmt + clippy, then ruff, mypy --strict, basedpyright, stubtest (scripts/lint.sh)
SHELL := /bin/bash
# The newest CPython found: the demo shows the best mode the machine has.
PY ?= $(shell for m in 3.13 3.12 3.11; do [ -n "$$(scripts/pythons.sh find $$m)" ] && echo $$m && break; done)
BENCH_PYTHONS ?= 3.11 3.13

.PHONY: all build demo test bench lint clean

all: build

build:
	@scripts/pythons.sh venv $(PY) >/dev/null

demo:
	@[ -n "$(PY)" ] || { echo "make demo: no CPython 3.11+ found (pyenv's ~/.pyenv/versions or python3.X on PATH)" >&2; exit 1; }
	@echo "building rustpool for Python $(PY) (venv .venv-$(PY), release build: ~1 min on a fresh machine)..."
	@py=$$(scripts/pythons.sh venv $(PY)) && \
	  echo "running the demo: examples/demo.py, rustpool beside the stdlib's executors (~30 s)..." && \
	  $$py examples/demo.py

test:
	@scripts/test-all.sh

bench:
	@set -e; for m in $(BENCH_PYTHONS); do \
	  if [ -z "$$(scripts/pythons.sh find $$m)" ]; then echo "=== bench on $$m: SKIPPED (not installed)"; continue; fi; \
	  py=$$(scripts/pythons.sh venv $$m); echo "=== bench on Python $$m"; mkdir -p .benchmarks; \
	  $$py -m pytest benches -p no:cacheprovider --benchmark-only --benchmark-columns=min,median,max,rounds --benchmark-sort=name -q \
	    --benchmark-json=.benchmarks/bench-$$m.json; \
	  $$py benches/charts.py .benchmarks/bench-$$m.json docs/charts/$$m; \
	done

lint:
	cargo fmt --check
	cargo clippy --quiet -- -D warnings
	@scripts/check-platforms.sh
	@scripts/lint.sh

clean:
	rm -rf target .venv-3.* python/rustpool/*.so .benchmarks
