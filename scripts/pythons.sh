#!/usr/bin/env bash
# Helpers for the Makefile: find each CPython 3.11+ on this machine and keep one venv per version.
#   pythons.sh find 3.12      -> path of the newest CPython 3.12.x (pyenv first, then PATH), or nothing
#   pythons.sh venv 3.12      -> makes/refreshes .venv-3.12 with the dev tools and the extension built
#                                into it; prints the venv's python
set -euo pipefail
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

find_python() {
    local minor="$1" best=""
    if [ -d "$PYENV_ROOT/versions" ]; then
        # CPython builds only (3.12.1, not 3.13.0t or pypy3.10-...), newest patch release.
        best=$(ls -1 "$PYENV_ROOT/versions" | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1 || true)
        if [ -n "$best" ] && [ -x "$PYENV_ROOT/versions/$best/bin/python$minor" ]; then
            echo "$PYENV_ROOT/versions/$best/bin/python$minor"
            return 0
        fi
    fi
    if command -v "python$minor" >/dev/null 2>&1; then
        local p; p=$(command -v "python$minor")
        # pyenv shims answer for versions that are not installed: check it really runs.
        if "$p" -c 'import sys; sys.exit(sys.implementation.name != "cpython")' >/dev/null 2>&1; then
            echo "$p"
        fi
    fi
}

make_venv() {
    local minor="$1" py venv="$ROOT/.venv-$1"
    py=$(find_python "$minor")
    [ -n "$py" ] || { echo "no CPython $minor found" >&2; return 1; }
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" >&2
    fi
    local stamp="$venv/.dev-requirements"
    if ! cmp -s "$ROOT/requirements-dev.txt" "$stamp"; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt" >&2
        cp "$ROOT/requirements-dev.txt" "$stamp"
    fi
    (cd "$ROOT" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release -q >&2)
    echo "$venv/bin/python"
}

case "${1:-}" in
    find) find_python "$2" ;;
    venv) make_venv "$2" ;;
    *) echo "usage: $0 find|venv MINOR" >&2; exit 2 ;;
esac
