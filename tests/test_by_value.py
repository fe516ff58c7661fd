"""Functions that no worker can import by name cross by value, and CPU work never moves to a
thread silently.

Where users write CPU work first (``python -c``, a script piped to stdin, a notebook cell, a
script without a main guard, a lambda), a worker cannot import the function: rustpool pickles it
by value (cloudpickle) and it runs in parallel in another process or subinterpreter, without the
caller's program running again there. A call that truly cannot be isolated (a closure over a
lock) runs on a thread under ``isolation="auto"`` with one ``ThreadFallbackWarning`` per
function, or fails under ``fallback="error"``.

Each program runs in a fresh interpreter with ``-W error``: any warning (a fallback among them)
would end it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import proc_helpers as h
from .conftest import SCRIPT_TIMEOUT, WAIT

MODES = ["process", pytest.param("interpreter", marks=pytest.mark.skipif(
    sys.version_info < (3, 13), reason="isolation='interpreter' needs CPython 3.13+"
))]

# A program whose functions no worker can import: it prints where each call ran. Its top level
# prints once; were a worker to run the program again, the line would show twice (workers share
# this process's stdout).
PROGRAM = """
import asyncio, os, sys
import rustpool

print("top level ran", flush=True)
FACTOR = 2


class Point:
    def __init__(self, x):
        self.x = x


def where(x):
    try:
        import _interpreters
        interp = _interpreters.get_current()[0]
    except ImportError:
        interp = 0
    return os.getpid(), interp, x * FACTOR


def shifted(p):
    return Point(p.x + 1)


async def main(mode):
    rustpool.configure(isolation=mode)
    pid, interp, value = await rustpool.run_cpu(where, 21)
    print("value", value)
    print("other process", pid != os.getpid())
    print("other interpreter", interp != 0)
    value, pid = await rustpool.run_cpu(lambda x: (x + 1, os.getpid()), 41)
    print("lambda", value, "other process", pid != os.getpid())
    p = await rustpool.run_cpu(shifted, Point(1))
    print("class comes back", type(p) is Point, p.x)


asyncio.run(main(sys.argv[-1]))
"""


def _expected(mode: str) -> list[str]:
    return [
        "top level ran",
        "value 42",
        f"other process {mode == 'process'}",
        f"other interpreter {mode == 'interpreter'}",
        f"lambda 42 other process {mode == 'process'}",
        "class comes back True 2",
    ]


def _run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -W error *args`` (the program takes its mode as its last argument)."""
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )


def _check(out: subprocess.CompletedProcess[str], mode: str) -> None:
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines() == _expected(mode)


@pytest.mark.parametrize("mode", MODES)
def test_functions_of_python_dash_c_run_in_isolated_workers(tmp_path: Path, mode: str) -> None:
    _check(_run(["-c", PROGRAM, mode], tmp_path), mode)


@pytest.mark.parametrize("mode", MODES)
def test_functions_of_a_program_read_from_stdin_run_in_isolated_workers(tmp_path: Path, mode: str) -> None:
    _check(_run(["-", mode], tmp_path, stdin=PROGRAM), mode)


@pytest.mark.parametrize("mode", MODES)
def test_an_unguarded_script_runs_in_isolated_workers_and_its_top_level_runs_once(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(PROGRAM)
    _check(_run([str(script), mode], tmp_path), mode)


def test_auto_runs_the_stdlib_docs_example_without_a_guard_in_worker_processes(tmp_path: Path) -> None:
    """concurrent.futures' ProcessPoolExecutor example, with CpuExecutor and no main guard."""
    script = tmp_path / "primes.py"
    script.write_text(
        textwrap.dedent(
            """
            import math, os
            import rustpool

            PRIMES = [112272535095293, 112582705942171, 112272535095293, 115280095190773]

            def is_prime(n):
                if n % 2 == 0:
                    return False
                sqrt_n = int(math.floor(math.sqrt(n)))
                for i in range(3, sqrt_n + 1, 2):
                    if n % i == 0:
                        return False
                return True, os.getpid()

            def main():
                with rustpool.CpuExecutor(2, isolation="process") as executor:
                    for number, (prime, pid) in zip(PRIMES, executor.map(is_prime, PRIMES, chunksize=1)):
                        print(number, prime, pid != os.getpid())

            print("top level ran")
            main()
            """
        )
    )
    out = _run([str(script)], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "top level ran" and lines.count("top level ran") == 1
    assert lines[1:] == [f"{n} True True" for n in (112272535095293, 112582705942171, 112272535095293, 115280095190773)]


def test_a_guarded_script_is_still_imported_by_name(tmp_path: Path) -> None:
    """With a main guard, workers load the script as ``__mp_main__`` (as multiprocessing's spawn):
    a function's module-level state is the worker's own, not a copy of the caller's."""
    script = tmp_path / "guarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import rustpool

            STATE = ["at import"]

            def state():
                return STATE[0], __name__

            if __name__ == "__main__":
                STATE[0] = "changed by the caller"
                with rustpool.CpuExecutor(1, isolation="process") as ex:
                    print(*ex.submit(state).result(60))
            """
        )
    )
    out = _run([str(script)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["at import __mp_main__"]


def test_a_lambda_in_the_test_process_runs_in_a_worker_process() -> None:
    with rustpool.CpuExecutor(1, isolation="process") as ex:
        assert ex.submit(lambda: h.pid()).result(WAIT) != h.pid()


# --- what truly cannot be isolated --------------------------------------------------------------


def _closure_over_a_lock() -> Any:
    lock = threading.Lock()

    def locked_double(x: int) -> tuple[int, int]:
        with lock:
            return x * 2, threading.get_ident()

    return locked_double


def test_auto_warns_once_per_function_that_cannot_be_isolated(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="auto", max_tasks_per_child=100)  # in processes on every version
    fn = _closure_over_a_lock()
    with pytest.warns(rustpool.ThreadFallbackWarning) as record:
        value, ident = ex.submit(fn, 21).result(WAIT)
    assert (value, ident != threading.get_ident()) == (42, True)  # on a thread of this process
    assert len(record) == 1
    message = str(record[0].message)
    assert "tests.test_by_value._closure_over_a_lock.<locals>.locked_double cannot run in an isolated worker" in message
    assert "runs it on a thread of this process" in message
    assert "lock" in message  # the reason
    assert 'fallback="error"' in message  # and how to make it an error
    assert record[0].filename == __file__  # it points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ex.submit(fn, 1).result(WAIT)[0] == 2  # the same function: not said again
    with pytest.warns(rustpool.ThreadFallbackWarning, match="h.echo|proc_helpers.echo"):
        assert ex.submit(h.echo, threading.Lock()).result(WAIT)[0][0] is not None


def test_fallback_error_fails_the_call_with_the_pickling_error(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="auto", fallback="error", learn=False)
    fn = _closure_over_a_lock()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = ex.submit(fn, 21)
        with pytest.raises(TypeError, match="lock") as excinfo:
            f.result(WAIT)
    assert 'fallback="error"' in excinfo.value.__notes__[-1]
    assert ex.submit(h.add, 2, 2).result(WAIT) == 4  # the pool goes on


def test_configure_fallback_error_applies_to_run_cpu() -> None:
    import asyncio

    before = rustpool.settings()
    rustpool.configure(fallback="error")
    try:
        assert rustpool.settings()["fallback"] == "error"
        fn = _closure_over_a_lock()
        # Pinned where run_cpu isolates (unpinned, "auto" would sample it on a thread first).
        rustpool.pin(rustpool.default_cpu_executor().isolation)(fn)
        with pytest.raises(TypeError, match="lock"):
            asyncio.run(rustpool.run_cpu(fn, 1))
    finally:
        rustpool.configure(**before)


def test_an_error_filter_for_the_warning_fails_the_call_with_it(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="auto", learn=False)
    lock = threading.Lock()

    def locked() -> None:  # a function of its own: warnings are said once per function
        with lock:
            pass

    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=rustpool.ThreadFallbackWarning)
        with pytest.raises(rustpool.ThreadFallbackWarning, match="locked cannot run"):
            ex.submit(locked).result(WAIT)


def test_a_function_no_worker_can_load_runs_on_threads_with_a_warning(cpu_executor: Any, tmp_path: Path) -> None:
    """A module the caller loaded from a path the workers do not have: its functions pickle by
    name, then no worker process can import them."""
    import importlib.util

    (tmp_path / "elsewhere_mod.py").write_text("import os\ndef pid():\n    return os.getpid()\n")
    spec = importlib.util.spec_from_file_location("elsewhere_mod", tmp_path / "elsewhere_mod.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["elsewhere_mod"] = mod
    try:
        spec.loader.exec_module(mod)
        ex = cpu_executor(1, isolation="auto", max_tasks_per_child=100)
        with pytest.warns(rustpool.ThreadFallbackWarning, match="elsewhere_mod.pid.*No module named 'elsewhere_mod'"):
            assert ex.submit(mod.pid).result(WAIT) == h.pid()
        strict = cpu_executor(1, isolation="auto", max_tasks_per_child=100, fallback="error")
        with pytest.raises(rustpool.WorkerUnsupported, match="elsewhere_mod"):
            strict.submit(mod.pid).result(WAIT)
    finally:
        del sys.modules["elsewhere_mod"]


def test_explicit_isolated_modes_raise_instead_of_moving_to_threads(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="process")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="lock"):
            ex.submit(_closure_over_a_lock(), 1).result(WAIT)


def test_an_unknown_fallback_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="fallback must be one of"):
        rustpool.CpuExecutor(1, fallback="thread")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback must be one of"):
        rustpool.configure(fallback="quiet")  # type: ignore[arg-type]


# --- a function pickled by value is pickled again when what it reads changes ------------------------


@pytest.mark.parametrize("isolation", MODES)
def test_a_function_by_value_sees_the_callers_current_globals_and_closure(cpu_executor: Any, isolation: str) -> None:
    ex = cpu_executor(1, isolation=isolation)
    factor = 2
    data = [1]

    def scaled(x: int) -> int:  # a closure over an int: pickled once while it stays the same
        return x * factor

    def total() -> int:  # a closure over a list, which can change in place: pickled every call
        return sum(data)

    assert ex.submit(scaled, 21).result(WAIT) == 42
    assert ex.submit(scaled, 21).result(WAIT) == 42
    factor = 3
    assert ex.submit(scaled, 21).result(WAIT) == 63
    assert ex.submit(total).result(WAIT) == 1
    data.append(2)
    assert ex.submit(total).result(WAIT) == 3


def test_a_main_function_by_value_sees_the_callers_current_globals(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import asyncio, rustpool

        N = 1
        SEEN = []

        def read():
            return N, len(SEEN)

        async def main():
            global N
            rustpool.configure(isolation="process")
            first = await rustpool.run_cpu(read)
            N = 2
            SEEN.append("x")
            print(first, await rustpool.run_cpu(read))

        asyncio.run(main())
        """
    )
    out = _run(["-c", program], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["(1, 0) (2, 1)"]


@pytest.mark.parametrize("mode", MODES)
def test_functions_of_an_ipython_cell_run_in_isolated_workers(tmp_path: Path, mode: str) -> None:
    """IPython runs notebook cells (ipykernel drives the same shell): a cell's functions live in a
    ``__main__`` with no file."""
    cell = textwrap.dedent(
        f"""
        import asyncio, os, warnings, rustpool
        warnings.simplefilter("error", rustpool.ThreadFallbackWarning)
        rustpool.configure(isolation={mode!r})

        def where(x):
            try:
                import _interpreters
                interp = _interpreters.get_current()[0]
            except ImportError:
                interp = 0
            return os.getpid(), interp, x * 2

        pid, interp, value = asyncio.run(rustpool.run_cpu(where, 21))
        print("cell:", value, pid != os.getpid(), interp != 0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor", "-c", cell],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("cell:")]
    assert lines == [f"cell: 42 {mode == 'process'} {mode == 'interpreter'}"], out.stdout + out.stderr
