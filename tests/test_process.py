"""isolation="process": worker processes that survive crashes (issue 5, first part).

Calls cross as pickle bytes, as with subinterpreters; a worker that dies fails only the call it
was running, with rustpool.WorkerCrashed naming the exit code or signal, and the pool goes on.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import proc_helpers as h
from .conftest import WAIT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def proc(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Callable[..., rustpool.CpuExecutor]:
    def make(workers: int = 2) -> rustpool.CpuExecutor:
        return cpu_executor(workers, isolation="process")

    return make


def test_calls_run_in_other_processes(proc: Any) -> None:
    ex = proc(2)
    assert ex.isolation == "process"
    assert ex.submit(h.add, 2, 3).result(WAIT) == 5
    assert ex.submit(h.pid).result(WAIT) != os.getpid()
    assert list(ex.map(h.add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]

    async def main() -> int:
        return await ex.run(h.add, 20, 22)

    assert asyncio.run(main()) == 42


def test_exception_comes_back_with_the_worker_traceback(proc: Any) -> None:
    with pytest.raises(ValueError, match="from the worker") as excinfo:
        proc(1).submit(h.fail, "from the worker").result(WAIT)
    assert isinstance(excinfo.value.__cause__, rustpool.RemoteTraceback)
    assert "in fail" in str(excinfo.value.__cause__)


def test_unpicklable_function_is_refused_at_submit(proc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    ex = proc(1)
    with pytest.raises(pickle.PicklingError, match="lambda"):
        ex.submit(lambda: 1)
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


@pytest.mark.parametrize(
    ("crash", "args", "message"),
    [(h.exit_with, (3,), "exited with code 3"), (h.kill_self, (), "signal 9 (SIGKILL)")],
    ids=["os._exit", "SIGKILL"],
)
def test_a_crash_fails_only_its_call_and_the_pool_goes_on(
    proc: Any, crash: Callable[..., None], args: tuple[Any, ...], message: str
) -> None:
    ex = proc(2)
    before = [ex.submit(h.sleep_then, 0.2, i) for i in range(3)]
    crashed = ex.submit(crash, *args)
    after = [ex.submit(h.sleep_then, 0.05, i) for i in range(3, 6)]
    with pytest.raises(rustpool.WorkerCrashed, match=re.escape(message)) as excinfo:
        crashed.result(WAIT)
    assert isinstance(excinfo.value, BrokenProcessPool)
    assert crash.__name__ in str(excinfo.value)
    assert [f.result(WAIT) for f in before + after] == list(range(6))
    assert ex.submit(h.add, 1, 2).result(WAIT) == 3


def test_shutdown_cancel_futures_cancels_queued_calls(proc: Any) -> None:
    ex = proc(1)
    running = ex.submit(h.sleep_then, 0.5, 1)
    time.sleep(0.1)
    queued = [ex.submit(h.sleep_then, 0, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == 1
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(h.add, 1, 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, killed, cannot reap it; init will).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(ROOT)!r})
            import rustpool
            from tests import proc_helpers as h
            if __name__ == "__main__":
                ex = rustpool.CpuExecutor(2, isolation="process")
                pids = {{ex.submit(h.sleep_then, 0.2, 0) and ex.submit(h.pid).result() for _ in range(6)}}
                print(*sorted(pids), flush=True)
                time.sleep(60)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        pids = [int(p) for p in line.split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(WAIT)
        if parent.stdout:
            parent.stdout.close()
    deadline = time.monotonic() + 2.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if _alive(p)]


def test_main_functions_run_in_worker_processes(tmp_path: Path) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, rustpool

            def where(x):
                return x * 2, os.getpid()

            if __name__ == "__main__":
                print("guard ran")
                with rustpool.CpuExecutor(1, isolation="process") as ex:
                    value, pid = ex.submit(where, 21).result(60)
                print(value, pid != os.getpid())
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines() == ["guard ran", "42 True"]


def test_initializer_is_refused_for_now() -> None:
    with pytest.raises(ValueError, match="initializer"):
        rustpool.CpuExecutor(1, isolation="process", initializer=print)
