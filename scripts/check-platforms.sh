#!/usr/bin/env bash
# The Rust core keeps its Linux-only calls behind cfg(target_os = "linux"); this type-checks the
# crate for macOS from this machine, so that a Linux-only call outside that cfg (or an import only
# Linux uses) is caught here rather than by a macOS user. No Python or SDK of the target is
# needed: PyO3 gets its interpreter's description from a config file made here. Each target is
# checked for CPython 3.11 and 3.13 (Py_3_13 compiles the subinterpreter workers). A target whose
# standard library is not installed is SKIPPED with the reason; the run fails if a check fails.
# Windows is not a target: process isolation there would need another worker transport.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGETS="${TARGETS:-x86_64-apple-darwin}"
MINORS="${PYTHON_MINORS:-3.11 3.13}"
ran=() skipped=() failed=()

configs=$(mktemp -d)
trap 'rm -rf "$configs"' EXIT
sysroot=$(rustc --print sysroot)

for target in $TARGETS; do
    if [ ! -d "$sysroot/lib/rustlib/$target/lib" ]; then
        echo "=== $target: SKIPPED (its rust-std is not installed: rustup target add $target)"
        skipped+=("$target (no rust-std)")
        continue
    fi
    for m in $MINORS; do
        cfg="$configs/pyo3-$m.cfg"
        # What PyO3's build script would otherwise ask the target's interpreter; no link lines
        # (nothing is linked by a check).
        printf '%s\n' implementation=CPython "version=$m" shared=true abi3=false \
            pointer_width=64 build_flags= suppress_build_script_link_lines=true >"$cfg"
        echo "=== $target, CPython $m: cargo clippy -D warnings"
        # clippy rather than check: an unused import on one platform is only a warning to check.
        if PYO3_CONFIG_FILE="$cfg" cargo clippy --quiet --target "$target" -- -D warnings; then
            ran+=("$target/$m")
        else
            failed+=("$target/$m")
        fi
    done
done

echo
echo "=== check-platforms summary"
echo "passed:  ${ran[*]:-none}"
echo "skipped: ${skipped[*]:-none}"
echo "failed:  ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
