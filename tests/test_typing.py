"""The public API as a type checker sees it: ``examples/typed_usage.py`` passes ``mypy --strict``
(its ``assert_type`` lines pin the result types), and a call with a wrong argument is reported, so
the check is not vacuous (rustpool's ``__init__`` chooses its star import at run time; a checker
must see the real API, not the in-subinterpreter stand-ins)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mypy", reason="mypy (requirements-dev.txt) checks the typed example")


def mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_typed_example_passes_mypy_strict(tmp_path: Path) -> None:
    out = mypy(tmp_path, ROOT / "examples" / "typed_usage.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_reports_a_wrong_argument_to_run_cpu_and_to_thread(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        textwrap.dedent(
            """
            import rustpool

            def double(x: int) -> int:
                return 2 * x

            async def main() -> None:
                await rustpool.run_cpu(double, "two")
                await rustpool.to_thread(double, 1, 2)
            """
        )
    )
    out = mypy(tmp_path, wrong)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'Argument 2 to "run_cpu" has incompatible type "str"; expected "int"' in out.stdout
    assert 'Too many arguments for "to_thread"' in out.stdout
