"""CPython's ``test_concurrent_futures/test_shutdown.py`` adapted to rustpool's executors: the same
scenarios (submit after shutdown, exit with work in flight, cancel_futures, shutdown without
waiting, a cancelled call right before shutdown), on ``ThreadExecutor`` and on ``CpuExecutor``
with worker processes and (3.13+) subinterpreters. Scenarios that could hang, or that are about
interpreter exit, run in a fresh interpreter with a hard timeout.

By-design differences from the stdlib, asserted as such:

- ``shutdown(cancel_futures=True)`` cancels every call no worker has claimed yet. A worker claims
  a call only once it can run it: a thread started on demand once it runs and gets the GIL, an
  isolated worker once its process or subinterpreter is up. Right after 50 submissions the
  stdlib's "some of them have started" need not hold (all 50 are usually cancelled, on every
  executor; ThreadPoolExecutor's new thread and ProcessPoolExecutor's call queue take a few
  first). Once a worker has started one, the calls it runs finish.
- ``shutdown(wait=False)`` with a call running at interpreter exit does not hang on worker
  processes (the stdlib skips that scenario for ProcessPoolExecutor, which hangs: gh-83386).
- The internals the stdlib looks at (``_threads``, ``_processes``, the manager thread) do not
  exist; ``pool.active`` and the pids of the workers stand for them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import conftest
from . import stdlib_helpers as s
from .conftest import IMPORT_TESTS, SCRIPT_TIMEOUT, WAIT, wait_until

KINDS = ["ThreadExecutor", "process", *(["interpreter"] if sys.version_info >= (3, 13) else [])]
ISOLATED = [k for k in KINDS if k != "ThreadExecutor"]


def constructor(kind: str) -> str:
    """The expression that makes an executor of ``kind`` (for scripts), given its worker count."""
    if kind == "ThreadExecutor":
        return "rustpool.ThreadExecutor({n})"
    return f"rustpool.CpuExecutor({{n}}, isolation={kind!r})"


@pytest.fixture
def make(thread_executor: Callable[..., Any], cpu_executor: Callable[..., Any]) -> Callable[[str, int], Any]:
    def factory(kind: str, workers: int) -> Any:
        if kind == "ThreadExecutor":
            return thread_executor(workers)
        return cpu_executor(workers, isolation=kind)

    return factory


def run_script(tmp_path: Path, body: str, timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter that imports rustpool and ``tests``."""
    return conftest.run_script(tmp_path, body, prelude=IMPORT_TESTS, flags=(), timeout=timeout)


@pytest.mark.parametrize("kind", KINDS)
def test_submit_after_shutdown_raises_runtime_error(make: Any, kind: str) -> None:
    ex = make(kind, 2)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 2, 5)


@pytest.mark.parametrize("kind", KINDS)
def test_interpreter_exit_lets_a_call_in_flight_finish(tmp_path: Path, kind: str) -> None:
    out = run_script(
        tmp_path,
        f"""
        import rustpool
        from tests.stdlib_helpers import sleep_and_print
        if __name__ == "__main__":
            t = {constructor(kind).format(n=5)}
            t.submit(sleep_and_print, 0.5, "apple")
        """,
    )
    assert (out.returncode, out.stderr, out.stdout.strip()) == (0, "", "apple")


@pytest.mark.parametrize("kind", KINDS)
def test_submit_from_an_atexit_hook_raises_runtime_error(tmp_path: Path, kind: str) -> None:
    out = run_script(
        tmp_path,
        f"""
        import atexit
        import rustpool

        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError:
                print("runtime-error")
                raise

        if __name__ == "__main__":
            t = {constructor(kind).format(n=5)}
            t.submit(id, 42).result(30)
        """,
    )
    assert "RuntimeError: cannot schedule new futures" in out.stderr
    assert out.stdout.strip() == "runtime-error"


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_waits_for_50_queued_calls(make: Any, kind: str) -> None:
    ex = make(kind, 2)
    fs = [ex.submit(time.sleep, 0.01) for _ in range(50)]
    ex.shutdown()
    assert all(f.done() for f in fs)
    assert [f.result(0) for f in fs] == [None] * 50


def assert_cancel_futures(fs: list[Any], some_started: bool) -> None:
    cancelled = [f for f in fs if f.cancelled()]
    assert len(cancelled) > 20
    others = [f for f in fs if not f.cancelled()]
    for f in others:
        assert f.done()
        assert f.exception() is None
    if some_started:
        assert others


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_futures_right_after_submitting_may_cancel_all(make: Any, kind: str) -> None:
    """By design (module docstring): a call no worker has claimed yet is cancelled."""
    ex = make(kind, 2)
    fs = [ex.submit(time.sleep, 0.1) for _ in range(50)]
    ex.shutdown(cancel_futures=True)
    assert_cancel_futures(fs, some_started=False)


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_futures_once_calls_have_started_lets_them_finish(make: Any, kind: str) -> None:
    ex = make(kind, 2)
    assert all(f.result(WAIT) is None for f in [ex.submit(time.sleep, 0.05) for _ in range(4)])
    fs = [ex.submit(time.sleep, 0.1) for _ in range(50)]
    assert wait_until(lambda: any(f.running() or f.done() for f in fs))
    ex.shutdown(cancel_futures=True)
    assert_cancel_futures(fs, some_started=True)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_without_wait_at_exit_with_a_call_running_does_not_hang(tmp_path: Path, kind: str) -> None:
    """gh-83386 (the stdlib skips it for ProcessPoolExecutor, where it hangs)."""
    out = run_script(
        tmp_path,
        f"""
        import rustpool
        from tests.stdlib_helpers import sleep_and_print
        if __name__ == "__main__":
            t = {constructor(kind).format(n=3)}
            t.submit(sleep_and_print, 0.5, "apple")
            t.shutdown(wait=False)
        """,
    )
    assert (out.returncode, out.stderr, out.stdout.strip()) == (0, "", "apple")


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_right_after_a_call_is_cancelled_does_not_hang(tmp_path: Path, kind: str) -> None:
    """gh-94440, in a fresh interpreter with a hard timeout."""
    out = run_script(
        tmp_path,
        f"""
        import rustpool
        if __name__ == "__main__":
            t = {constructor(kind).format(n=1)}
            t.submit(int).result(30)
            t.submit(int).cancel()
            t.shutdown(wait=True)
            print("done")
        """,
        timeout=60,
    )
    assert (out.returncode, out.stderr, out.stdout.strip()) == (0, "", "done")


@pytest.mark.parametrize("kind", KINDS)
def test_calls_in_flight_finish_when_the_pool_is_left(make: Any, kind: str) -> None:
    """The stdlib's context-manager, del and shutdown(wait=False) scenarios: results computed
    before the pool lets its workers go."""
    with make(kind, 5) as ex:
        assert list(ex.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert ex._pool.is_shutdown

    ex = make(kind, 5)
    results = ex.map(abs, range(-5, 5))
    ex.shutdown(wait=False)
    assert list(results) == [abs(v) for v in range(-5, 5)]

    ex = make(kind, 5)
    results = ex.map(abs, range(-5, 5))
    del ex
    assert list(results) == [abs(v) for v in range(-5, 5)]


@pytest.mark.parametrize("kind", KINDS)
def test_workers_end_once_shutdown_returns(make: Any, kind: str) -> None:
    """The stdlib joins its threads or processes; here the pool says none is active."""
    ex = make(kind, 3)
    assert [f.result(WAIT) for f in [ex.submit(abs, -i) for i in range(3)]] == [0, 1, 2]
    ex.shutdown(wait=True)
    assert ex._pool.active == 0


def test_cancel_futures_without_wait_at_exit_is_clean(tmp_path: Path) -> None:
    out = run_script(
        tmp_path,
        """
        import rustpool
        from tests.stdlib_helpers import sleep_and_print
        if __name__ == "__main__":
            t = rustpool.ThreadExecutor()
            t.submit(sleep_and_print, 0.1, "apple")
            t.shutdown(wait=False, cancel_futures=True)
        """,
    )
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.strip() in ("apple", "")  # it may be cancelled before it starts


@pytest.mark.parametrize("workers", [2, 4])
def test_one_task_per_child_with_a_failing_task_and_shutdown_without_wait(workers: int) -> None:
    """gh-132969: max_tasks_per_child=1, a call raises, shutdown(wait=False): no error, no hang."""
    ex = rustpool.CpuExecutor(workers, isolation="process", max_tasks_per_child=1)
    try:
        f1 = ex.submit(s.sleep_then_return, 0.1, 1)
        f2 = ex.submit(s.fail_with, "failing task")
        f3 = ex.submit(s.sleep_then_return, 0.3, 3)
        result = f1.result(WAIT)
        with pytest.raises(ValueError, match="failing task"):
            f2.result(WAIT)
        ex.shutdown(wait=False)
        assert f3.result(WAIT) == 3
    finally:
        ex.shutdown(wait=True)
    assert result == 1
    assert ex._pool.active == 0
