#!/usr/bin/env bash
# `make lint`, the Python half (the Makefile runs cargo fmt --check and cargo clippy first): ruff,
# mypy --strict on the package and on examples/typed_usage.py (the public API as a user's code
# sees it), basedpyright on the package and that example, and mypy.stubtest of the native module's stub against
# the built module. Runs in the newest CPython's venv (scripts/pythons.sh builds it if needed).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY_MINOR="${PY_MINOR:-$(for m in 3.13 3.12 3.11; do [ -n "$(scripts/pythons.sh find "$m")" ] && echo "$m" && break; done)}"
[ -n "$PY_MINOR" ] || { echo "make lint: no CPython 3.11+ found" >&2; exit 1; }
py=$(scripts/pythons.sh venv "$PY_MINOR")
bin=$(dirname "$py")

step() { echo "=== $*"; "$@"; }
step "$bin/ruff" check python tests examples benches
step "$py" -m mypy --strict -p rustpool
step "$py" -m mypy --strict examples/typed_usage.py
step "$bin/basedpyright" --pythonpath "$py" python/rustpool examples/typed_usage.py
step "$py" -m mypy.stubtest rustpool._rustpool --allowlist stubtest-allowlist.txt
