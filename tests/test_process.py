"""isolation="process": worker processes that survive crashes.

Calls cross as pickle bytes, as with subinterpreters; a worker that dies (or is killed for a
timeout, a cancel, or recycled) fails at most the call it was running, and the pool goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
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
from .conftest import WAIT, pickle_error, run_script, wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def proc(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Callable[..., rustpool.CpuExecutor]:
    def make(workers: int = 2, **options: Any) -> rustpool.CpuExecutor:
        return cpu_executor(workers, isolation="process", **options)

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


def test_an_unpicklable_function_fails_its_future_with_the_pickle_error_and_the_pool_goes_on(
    proc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    ex = proc(1)
    fn = lambda: 1  # noqa: E731
    f = ex.submit(fn)  # as the stdlib: submit itself does not raise
    with pytest.raises(type(pickle_error(fn)), match="lambda") as excinfo:
        f.result(WAIT)
    assert "cloudpickle" in excinfo.value.__notes__[-1]
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
    assert wait_until(running.running)  # the worker process may take a while to start
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


# --- failures that leave the pool usable -----------------------------------------------------


def test_segfault_fails_only_its_call(proc: Any) -> None:
    ex = proc(1)
    with pytest.raises(rustpool.WorkerCrashed, match=r"signal 11 \(SIGSEGV\)"):
        ex.submit(h.segfault).result(WAIT)
    assert ex.submit(h.add, 2, 2).result(WAIT) == 4


def test_crash_is_reported_within_a_second(proc: Any) -> None:
    ex = proc(1)
    ex.submit(h.add, 0, 0).result(WAIT)  # the worker is up
    t0 = time.monotonic()
    with pytest.raises(rustpool.WorkerCrashed):
        ex.submit(h.kill_self).result(WAIT)
    assert time.monotonic() - t0 < 1.0


def test_an_unpicklable_argument_fails_its_future_with_the_pickle_error_and_the_pool_goes_on(proc: Any) -> None:
    import threading

    ex = proc(1)
    f = ex.submit(h.echo, threading.Lock())
    with pytest.raises(TypeError, match="cannot pickle") as excinfo:
        f.result(WAIT)
    assert "arguments of tests.proc_helpers.echo" in excinfo.value.__notes__[-1]
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


def test_an_unpicklable_result_keeps_its_pickle_error_naming_the_function_and_the_pool_goes_on(proc: Any) -> None:
    ex = proc(1)
    with pytest.raises(TypeError, match="cannot pickle") as excinfo:
        ex.submit(h.lock_result).result(WAIT)
    assert "result of tests.proc_helpers.lock_result, a _thread.lock" in excinfo.value.__notes__[-1]
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


def test_function_the_worker_cannot_import_raises_worker_unsupported(proc: Any, tmp_path: Path) -> None:
    # A module importable here only through a path the worker was not started with.
    (tmp_path / "only_here.py").write_text("def f():\n    return 1\n")
    ex = proc(1)  # started before the path is added: workers keep the sys.path of that moment
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here  # type: ignore[import-not-found]

        with pytest.raises(rustpool.WorkerUnsupported, match="cannot be loaded in a worker process") as excinfo:
            ex.submit(only_here.f).result(WAIT)
        assert "only_here" in str(excinfo.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here", None)
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


# --- initializer ---------------------------------------------------------------------------------


def test_initializer_runs_in_each_worker_process(proc: Any) -> None:
    ex = proc(2, initializer=h.remember, initargs=("greeting", "hello"))
    results = [ex.submit(h.recall, "greeting") for _ in range(8)]
    values = {f.result(WAIT) for f in results}
    assert {v for v, _ in values} == {"hello"}
    assert os.getpid() not in {pid for _, pid in values}


def test_initializer_runs_again_in_a_replacement_worker(proc: Any) -> None:
    ex = proc(1, initializer=h.remember, initargs=("k", 7))
    with pytest.raises(rustpool.WorkerCrashed):
        ex.submit(h.exit_with, 1).result(WAIT)
    assert ex.submit(h.recall, "k").result(WAIT)[0] == 7


def test_failing_initializer_breaks_the_pool(proc: Any) -> None:
    ex = proc(1, initializer=h.broken_initializer)
    with pytest.raises(BrokenProcessPool, match="the initializer broke"):
        ex.submit(h.add, 1, 1).result(WAIT)
    with pytest.raises(BrokenProcessPool, match="initializer"):
        ex.submit(h.add, 1, 1)


def test_unpicklable_initializer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    init = lambda: None  # noqa: E731
    with pytest.raises(type(pickle_error(init)), match="lambda"):
        rustpool.CpuExecutor(1, isolation="process", initializer=init)


def test_auto_runs_an_unpicklable_initializer_on_threads_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, cpu_executor: Any
) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    with pytest.warns(rustpool.ThreadFallbackWarning, match="<lambda> cannot run in an isolated worker"):
        assert cpu_executor(1, isolation="auto", initializer=lambda: None).isolation == "thread"
    # fallback="error": the pickling error stands.
    with pytest.raises(type(pickle_error(lambda: None)), match="lambda"):
        rustpool.CpuExecutor(1, isolation="auto", initializer=lambda: None, fallback="error")
    # ...unless an option needs processes: then the initializer must cross, and cannot.
    init = lambda: None  # noqa: E731
    with pytest.raises(type(pickle_error(init)), match="lambda"):
        rustpool.CpuExecutor(1, isolation="auto", initializer=init, max_tasks_per_child=5)


# --- timeouts and kill on cancel ---------------------------------------------------------------


def test_timeout_kills_the_worker_and_raises_timeout_error(proc: Any) -> None:
    ex = proc(1)
    first_pid = ex.submit(h.pid).result(WAIT)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"sleep_then.*timeout of 0.2s.*killed"):
        ex.options(timeout=0.2).submit(h.sleep_then, 30, 1).result(WAIT)
    assert time.monotonic() - t0 < 5
    assert not _alive(first_pid)
    # A new worker takes the next calls; a call within its timeout is unaffected.
    assert ex.options(timeout=10).submit(h.sleep_then, 0.01, 5).result(WAIT) == 5
    assert ex.submit(h.pid).result(WAIT) != first_pid


def test_timeout_counts_from_the_start_of_the_call_not_the_queue(proc: Any) -> None:
    ex = proc(1)
    ex.submit(h.add, 0, 0).result(WAIT)
    slow = ex.submit(h.sleep_then, 0.5, 1)
    # Queued behind 0.5 s of work, each of these takes 0.1 s: within a 0.4 s timeout.
    quick = [ex.options(timeout=0.4).submit(h.sleep_then, 0.1, i) for i in range(3)]
    assert slow.result(WAIT) == 1
    assert [f.result(WAIT) for f in quick] == [0, 1, 2]


def test_timeout_fails_only_its_call_with_others_in_flight(proc: Any) -> None:
    ex = proc(2)
    others = [ex.submit(h.sleep_then, 0.1, i) for i in range(6)]
    stuck = ex.options(timeout=0.3).submit(h.sleep_then, 30, -1)
    more = [ex.submit(h.sleep_then, 0.05, i) for i in range(6, 10)]
    with pytest.raises(TimeoutError):
        stuck.result(WAIT)
    assert [f.result(WAIT) for f in others + more] == list(range(10))


def test_awaited_call_with_timeout(proc: Any) -> None:
    ex = proc(1)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await ex.options(timeout=0.2).run(h.sleep_then, 30, 1)
        assert await ex.options(timeout=5).run(h.add, 2, 3) == 5

    asyncio.run(main())


def test_timeout_keyword_of_the_function_is_left_alone(proc: Any) -> None:
    # `timeout` given to submit/run goes to fn, as Executor.submit's contract says.
    ex = proc(1)
    assert ex.submit(h.echo, 1, timeout=3).result(WAIT) == ((1,), {"timeout": 3})


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_bad_timeouts_are_refused(proc: Any, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        proc(1).options(timeout=timeout)


def test_timeout_needs_a_mode_that_can_stop_a_call(cpu_executor: Any) -> None:
    with pytest.raises(ValueError, match='timeout needs isolation="process"'):
        cpu_executor(1, isolation="thread").options(timeout=1)


def cancel_while_running(ex: rustpool.CpuExecutor, marker: Path, seconds: float) -> int:
    """Await a call that runs ``seconds``, cancel it once it has started; the worker's pid."""

    async def main() -> int:
        pid = await ex.run(h.pid)
        task = asyncio.ensure_future(ex.run(h.touch_then_sleep, str(marker), seconds))
        deadline = time.monotonic() + WAIT
        while not marker.exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    return asyncio.run(main())


def test_cancelling_an_awaited_call_kills_its_worker_when_asked(proc: Any, tmp_path: Path) -> None:
    ex = proc(1, kill_on_cancel=True)
    pid = cancel_while_running(ex, tmp_path / "started", 30)
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)
    assert ex.submit(h.add, 1, 2).result(WAIT) == 3


def test_cancelling_an_awaited_call_lets_it_finish_by_default(proc: Any, tmp_path: Path) -> None:
    ex = proc(1)
    pid = cancel_while_running(ex, tmp_path / "started", 0.3)
    assert ex.submit(h.pid).result(WAIT) == pid  # the same worker, not killed


# --- recycling ---------------------------------------------------------------------------------


def test_max_tasks_per_child_replaces_workers(proc: Any) -> None:
    ex = proc(1, max_tasks_per_child=3)
    pids = [ex.submit(h.pid).result(WAIT) for _ in range(9)]
    assert [len(set(pids[i : i + 3])) for i in (0, 3, 6)] == [1, 1, 1]
    assert len(set(pids)) == 3
    # Also when calls arrive together (they are sent in batches).
    pids = [f.result(WAIT) for f in [ex.submit(h.pid) for _ in range(9)]]
    assert max(pids.count(p) for p in set(pids)) <= 3


def test_max_memory_per_child_replaces_a_worker_that_grew(proc: Any) -> None:
    ex = proc(1, max_memory_per_child=200 << 20)
    first = ex.submit(h.grow, 1).result(WAIT)
    assert ex.submit(h.grow, 1).result(WAIT) == first  # still small: kept
    assert ex.submit(h.grow, 300).result(WAIT) == first  # the call that grew it completes...
    assert ex.submit(h.pid).result(WAIT) != first  # ...then the worker is replaced


@pytest.mark.parametrize(
    ("option", "value"), [("max_tasks_per_child", 0), ("max_memory_per_child", 0)]
)
def test_bad_recycling_options_are_refused(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option):
        rustpool.CpuExecutor(1, isolation="process", **{option: value})


@pytest.mark.parametrize("option", ["max_tasks_per_child", "max_memory_per_child", "kill_on_cancel"])
def test_process_options_are_refused_in_thread_mode(option: str) -> None:
    with pytest.raises(ValueError, match=f'{option} needs isolation="process"'):
        rustpool.CpuExecutor(1, isolation="thread", **{option: True if option == "kill_on_cancel" else 5})


@pytest.mark.parametrize("option", ["max_tasks_per_child", "kill_on_cancel", "initializer"])
def test_auto_with_a_process_option_picks_processes(cpu_executor: Any, option: str) -> None:
    value = {"max_tasks_per_child": 5, "kill_on_cancel": True, "initializer": h.pid}[option]
    ex = cpu_executor(1, isolation="auto", **{option: value})
    assert ex.isolation == "process"
    assert ex.submit(h.pid).result(WAIT) != os.getpid()


# --- auto ----------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13+: auto is subinterpreters (tests/test_interpreter.py)")
def test_auto_is_processes_before_3_13(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="auto", learn=False)  # where it isolates (placement: test_auto.py)
    assert ex.isolation == "process"
    assert ex.submit(h.pid).result(WAIT) != os.getpid()


def test_auto_runs_unpicklable_calls_on_threads_with_a_warning(
    cpu_executor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    ex = cpu_executor(1, isolation="auto", max_tasks_per_child=100)  # processes on every version
    lock = threading.Lock()
    with pytest.warns(rustpool.ThreadFallbackWarning, match="<lambda>"):
        assert ex.submit(lambda x: (x, os.getpid()), lock).result(WAIT) == (lock, os.getpid())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="subinterpreters need CPython 3.13+")
def test_auto_runs_timed_calls_in_processes_on_3_13(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="auto")
    assert ex.isolation == "interpreter"
    assert ex.options(timeout=5).submit(h.pid).result(WAIT) != os.getpid()
    with pytest.raises(TimeoutError):
        ex.options(timeout=0.2).submit(h.sleep_then, 30, 1).result(WAIT)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="subinterpreters need CPython 3.13+")
def test_auto_runs_calls_that_refuse_subinterpreters_in_processes(cpu_executor: Any) -> None:
    pytest.importorskip("numpy", reason="numpy (requirements-dev.txt): a module that refuses subinterpreters")
    ex = cpu_executor(1, isolation="auto", learn=False)  # its isolated side (placement: test_auto.py)
    assert ex.isolation == "interpreter"
    # The first call began in a subinterpreter before its import failed: it is not run again.
    with pytest.raises(rustpool.WorkerUnsupported, match="not run again"):
        ex.submit(h.numpy_pid).result(WAIT)
    assert ex.submit(h.numpy_pid).result(WAIT) != os.getpid()  # remembered: straight to processes
    assert ex.submit(h.numpy_pid).result(WAIT) != os.getpid()


def test_a_main_that_makes_a_pool_at_import_cannot_start_workers_in_a_worker(tmp_path: Path) -> None:
    """A script with a main guard that still makes its pool at its top level: loading it in a
    worker would make the pool again (and again). As with multiprocessing's spawn, that is
    refused, with a message saying why. (A script with no guard at all is never loaded by a
    worker: its functions cross by value, see test_by_value.py.)"""
    script = tmp_path / "pool_at_import.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, rustpool

            def where():
                return os.getpid()

            ex = rustpool.CpuExecutor(1, isolation="process")

            if __name__ == "__main__":
                try:
                    ex.submit(where).result(60)
                except rustpool.WorkerUnsupported as e:
                    print("refused:", "__name__" in str(e))
                ex.shutdown()
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["refused: True"]


# --- map and amap --------------------------------------------------------------------------------


def test_map_auto_chunksize_sends_batches(proc: Any) -> None:
    ex = proc(2, max_tasks_per_child=4)
    # 80 calls, 2 workers: 8 batches of 10, so at most 4 batches (not 4 calls) per process.
    pids = list(ex.map(h.pid_of, range(80)))
    assert len(set(pids)) <= 80 // 10
    assert list(ex.map(h.add, range(50), range(50))) == [2 * i for i in range(50)]
    assert list(ex.map(h.add, [], [])) == []


def test_map_chunksize_must_be_positive_int_or_auto(proc: Any) -> None:
    ex = proc(1)
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(h.add, [1], [1], chunksize=0)
    with pytest.raises(TypeError, match="chunksize"):
        ex.map(h.add, [1], [1], chunksize="big")


def test_amap_in_order_and_as_completed(proc: Any) -> None:
    ex = proc(2)
    delays = [0.3, 0.0, 0.15, 0.0]

    async def main() -> tuple[list[int], list[int]]:
        ordered = [r async for r in ex.amap(h.sleep_then, delays, range(4))]
        done = [r async for r in ex.amap(h.sleep_then, delays, range(4), ordered=False)]
        return ordered, done

    ordered, done = asyncio.run(main())
    assert ordered == [0, 1, 2, 3]
    assert sorted(done) == [0, 1, 2, 3] and done != [0, 1, 2, 3]


def test_amap_bounds_calls_in_flight_and_pulls_lazily(proc: Any) -> None:
    ex = proc(2)
    pulled: list[int] = []

    def source() -> Any:
        for i in range(40):
            pulled.append(i)
            yield i

    async def main() -> list[int]:
        out = []
        async for r in ex.amap(h.add, source(), itertools.repeat(0), limit=3):
            # Never more than `limit` calls ahead of what was consumed.
            assert len(pulled) - len(out) <= 3
            out.append(r)
        return out

    assert asyncio.run(main()) == list(range(40))


def test_amap_takes_async_iterables_and_raises_in_place(proc: Any) -> None:
    ex = proc(1)

    async def numbers() -> Any:
        for i in range(5):
            yield i

    async def main() -> list[int]:
        out = []
        with pytest.raises(ValueError, match="boom 3"):
            async for r in ex.amap(h.fail_on, numbers(), itertools.repeat(3)):
                out.append(r)
        return out

    assert asyncio.run(main()) == [0, 1, 2]


def test_amap_with_timeout_option(proc: Any) -> None:
    ex = proc(1)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async for _ in ex.options(timeout=0.2).amap(h.sleep_then, [0.0, 30], [1, 2]):
                pass

    asyncio.run(main())


def test_ctrl_c_reaches_the_caller_not_the_workers(proc: Any) -> None:
    """SIGINT (Ctrl-C reaches the whole process group) must not kill a call half-way in a worker."""
    ex = proc(1)
    pid = ex.submit(h.pid).result(WAIT)
    f = ex.submit(h.sleep_then, 0.3, 9)
    time.sleep(0.1)
    os.kill(pid, signal.SIGINT)
    assert f.result(WAIT) == 9
    assert ex.submit(h.pid).result(WAIT) == pid


def test_a_worker_killed_while_idle_is_replaced_without_failing_a_call(proc: Any) -> None:
    ex = proc(1)
    pid = ex.submit(h.pid).result(WAIT)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while _alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ex.submit(h.add, 1, 2).result(WAIT) == 3
    assert ex.submit(h.pid).result(WAIT) != pid


def test_large_arguments_and_results_cross_whole(proc: Any) -> None:
    ex = proc(2)
    big = os.urandom(24 << 20)
    args, _ = ex.submit(h.echo, big).result(WAIT)
    assert args[0] == big
    # Many medium calls at once: more than the pipes hold, sent in batches.
    blobs = [os.urandom(100_000) for _ in range(40)]
    futures = [ex.submit(h.echo, b) for b in blobs]
    assert [f.result(WAIT)[0][0] for f in futures] == blobs


def test_a_callable_object_crosses_with_its_state_at_each_call(proc: Any) -> None:
    # Functions that pickle by name are pickled once per burst; a callable object never is.
    ex = proc(1)
    adder = h.Adder(1)
    assert ex.submit(adder, 1).result(WAIT) == 2
    adder.k = 10
    assert ex.submit(adder, 1).result(WAIT) == 11
    assert ex.submit(h.add, 1, 2).result(WAIT) == 3
    assert ex.submit(h.add, 2, 2).result(WAIT) == 4


def test_worker_processes_start_while_numpy_computes_on_another_thread(tmp_path: Path) -> None:
    """Starting a worker runs none of this process's fork handlers: OpenBLAS's would shut its
    thread pool down under a matrix product running on another thread, which then spins for
    ever (seen with libc's fork(); Python's subprocess avoids the handlers too)."""
    pytest.importorskip("numpy", reason="numpy (requirements-dev.txt): OpenBLAS registers a fork handler")
    out = run_script(
        tmp_path,
        """
        import threading
        import numpy
        import rustpool

        stop = threading.Event()

        def products():
            a = numpy.ones((300, 300))
            while not stop.is_set():
                a @ a

        t = threading.Thread(target=products, daemon=True)
        t.start()
        for _ in range(15):
            with rustpool.CpuExecutor(2, isolation="process") as ex:
                assert ex.submit(abs, -1).result(30) == 1
        stop.set()
        t.join(30)
        print("numpy went on:", not t.is_alive())
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["numpy went on: True"]
