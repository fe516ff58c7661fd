#!/usr/bin/env bash
# `make test`: cargo test, then the pytest suite on every CPython 3.11+ on this machine. A version
# that is not installed is skipped with a printed reason; the run fails if any version fails or if
# no version could run at all.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
MINORS="${PYTHON_MINORS:-3.11 3.12 3.13}"
ran=() skipped=() failed=()

first=""
for m in $MINORS; do first=$(scripts/pythons.sh find "$m"); [ -n "$first" ] && break; done
if [ -z "$first" ]; then echo "FAIL: no CPython among $MINORS found (pyenv root ${PYENV_ROOT:-$HOME/.pyenv}, PATH)"; exit 1; fi

echo "=== cargo test (Rust unit tests, linked against $first)"
libdir=$("$first" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
if ! PYO3_PYTHON="$first" LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo test --quiet; then
    failed+=("cargo test")
fi

for m in $MINORS; do
    py=$(scripts/pythons.sh find "$m")
    if [ -z "$py" ]; then
        echo "=== Python $m: SKIPPED (not installed: no ${PYENV_ROOT:-$HOME/.pyenv}/versions/$m.* and no python$m on PATH)"
        skipped+=("$m (not installed)")
        continue
    fi
    echo "=== Python $m ($py): build + pytest"
    if ! vpy=$(scripts/pythons.sh venv "$m"); then
        failed+=("$m (build)"); continue
    fi
    if "$vpy" -m pytest tests -p no:cacheprovider "$@"; then
        ran+=("$m")
    else
        failed+=("$m (pytest)")
    fi
done

echo
echo "=== make test summary"
echo "ran:     ${ran[*]:-none}"
echo "skipped: ${skipped[*]:-none}"
echo "failed:  ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ] && [ ${#ran[@]} -gt 0 ]
