"""``ThreadExecutor`` and ``CpuExecutor``: the semantics of ``concurrent.futures`` executors."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest

import rustpool
from rustpool import _rustpool

from .conftest import (
    HAS_INTERPRETERS,
    WAIT,
    Gate,
    async_wait_until,
    cancel_queued_call,
    wait_event,
    wait_until,
)

var: contextvars.ContextVar[str] = contextvars.ContextVar("executor_var")


def add(a: int, b: int = 0) -> int:
    return a + b


def inverse(x: int) -> float:
    return 1 / x


def echo_kwargs(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def executor_worker_raises() -> None:
    raise LookupError("from the executor worker")


def current_thread_name() -> str:
    return threading.current_thread().name


# --- construction ----------------------------------------------------------------------------


def test_thread_executor_is_a_thread_pool_executor(thread_executor: Any) -> None:
    assert isinstance(thread_executor(), ThreadPoolExecutor)


def test_cpu_executor_is_an_executor(cpu_executor: Any) -> None:
    assert isinstance(cpu_executor(), Executor)


@pytest.mark.parametrize("cls", [rustpool.ThreadExecutor, rustpool.CpuExecutor])
@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_not_positive_raises(cls: type, max_workers: int) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        cls(max_workers)


@pytest.mark.parametrize("cls", [rustpool.ThreadExecutor, rustpool.CpuExecutor])
def test_initializer_not_callable_raises_type_error(cls: type) -> None:
    with pytest.raises(TypeError, match="initializer must be a callable"):
        cls(initializer=42)


def test_thread_executor_max_workers_and_keep_alive(thread_executor: Any) -> None:
    ex = thread_executor(max_workers=7, keep_alive=2.5)
    assert ex.max_workers == 7
    assert ex.keep_alive == 2.5


def test_thread_executor_default_max_workers(thread_executor: Any) -> None:
    assert thread_executor().max_workers == rustpool.DEFAULT_MAX_THREADS == 512


@pytest.mark.parametrize("keep_alive", [-1.0, float("inf"), float("nan")])
def test_thread_executor_invalid_keep_alive_raises(keep_alive: float) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        rustpool.ThreadExecutor(keep_alive=keep_alive)


def test_cpu_executor_max_workers(cpu_executor: Any) -> None:
    assert cpu_executor(3).max_workers == 3
    default = cpu_executor().max_workers
    assert default == _rustpool.DEFAULT_CPU_WORKERS >= 1


def test_cpu_executor_isolation_thread(cpu_executor: Any) -> None:
    assert cpu_executor(isolation="thread").isolation == "thread"


def test_cpu_executor_default_isolation_is_auto(cpu_executor: Any) -> None:
    """auto: subinterpreters where they are safe (3.13+), worker processes before."""
    ex = rustpool.CpuExecutor()
    try:
        assert ex.isolation == ("interpreter" if HAS_INTERPRETERS else "process")
        assert ex.submit(add, 1, 2).result(WAIT) == 3
    finally:
        ex.shutdown()


def test_cpu_executor_isolation_process(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="process")
    assert ex.isolation == "process"
    assert ex.submit(add, 1, 2).result(WAIT) == 3


@pytest.mark.skipif(HAS_INTERPRETERS, reason="3.13+ has isolation='interpreter' (tests/test_interpreter.py)")
def test_cpu_executor_isolation_interpreter_refused_before_3_13() -> None:
    with pytest.raises(ValueError, match=r"3\.13"):
        rustpool.CpuExecutor(isolation="interpreter")


@pytest.mark.parametrize("isolation", ["bogus", "", "THREAD"])
def test_cpu_executor_invalid_isolation_raises(isolation: str) -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        rustpool.CpuExecutor(isolation=isolation)


# --- submit ----------------------------------------------------------------------------------


def test_submit_result(any_executor: Callable[..., Any]) -> None:
    f = any_executor().submit(add, 1, b=2)
    assert isinstance(f, Future)
    assert f.result(WAIT) == 3


def test_submit_kwargs_named_fn_func_self(any_executor: Callable[..., Any]) -> None:
    f = any_executor().submit(echo_kwargs, 0, fn=1, func=2, self=3)
    assert f.result(WAIT) == ((0,), {"fn": 1, "func": 2, "self": 3})


def test_submit_exception(any_executor: Callable[..., Any]) -> None:
    f = any_executor().submit(executor_worker_raises)
    exc = f.exception(WAIT)
    assert isinstance(exc, LookupError)
    with pytest.raises(LookupError, match="from the executor worker") as excinfo:
        f.result(WAIT)
    names = [frame.name for frame in traceback.extract_tb(excinfo.value.__traceback__)]
    assert "executor_worker_raises" in names


def test_submit_runs_on_a_worker_thread(any_executor: Callable[..., Any]) -> None:
    ident = any_executor().submit(threading.get_ident).result(WAIT)
    assert ident != threading.get_ident()


def test_submit_does_not_carry_contextvars(any_executor: Callable[..., Any]) -> None:
    """Like ThreadPoolExecutor.submit: the submitter's context is not copied."""
    ex = any_executor()
    token = var.set("submitter")
    try:
        assert ex.submit(var.get, "not carried").result(WAIT) == "not carried"
    finally:
        var.reset(token)


def test_future_is_running_while_the_call_runs(any_executor: Callable[..., Any], gate: Gate) -> None:
    f = any_executor().submit(gate)
    assert gate.started.wait(WAIT)
    assert f.running()
    assert not f.done()
    gate.release()
    assert f.result(WAIT) is None


def test_submit_from_many_threads_at_once(thread_executor: Any) -> None:
    ex = thread_executor(max_workers=16)
    n_threads, per_thread = 8, 500
    barrier = threading.Barrier(n_threads)
    futures: dict[int, list[Future[int]]] = {}
    errors: list[BaseException] = []

    def submitter(k: int) -> None:
        try:
            barrier.wait(WAIT)
            futures[k] = [ex.submit(add, k * per_thread, i) for i in range(per_thread)]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    results = sorted(f.result(WAIT) for fs in futures.values() for f in fs)
    assert results == list(range(n_threads * per_thread))


def test_cpu_executor_submit_from_many_threads_at_once(cpu_executor: Any) -> None:
    ex = cpu_executor(2)
    barrier = threading.Barrier(4)
    out: list[list[Future[int]]] = []

    def submitter(k: int) -> None:
        barrier.wait(WAIT)
        out.append([ex.submit(add, k * 1000, i) for i in range(1000)])

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(f.result(WAIT) for fs in out for f in fs) == list(range(4000))


# --- map -------------------------------------------------------------------------------------


def test_map_results_in_order(any_executor: Callable[..., Any]) -> None:
    def later_items_finish_first(i: int) -> int:
        time.sleep((20 - i) * 0.001)
        return i * i

    ex = any_executor(4)
    assert list(ex.map(later_items_finish_first, range(20))) == [i * i for i in range(20)]


def test_map_several_iterables(any_executor: Callable[..., Any]) -> None:
    assert list(any_executor().map(pow, [2, 3, 4], [1, 2, 3, 99])) == [2, 9, 64]


def test_map_empty(any_executor: Callable[..., Any]) -> None:
    assert list(any_executor().map(add, [])) == []


def test_map_exception_propagates_on_iteration(any_executor: Callable[..., Any]) -> None:
    results = any_executor().map(inverse, [1, 2, 0, 4])
    assert next(results) == 1
    assert next(results) == 0.5
    with pytest.raises(ZeroDivisionError):
        next(results)


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_timeout_raises_timeout_error(any_executor: Callable[..., Any], gate: Gate, chunksize: int) -> None:
    results = any_executor(2).map(gate, range(4), timeout=0.05, chunksize=chunksize)
    with pytest.raises(TimeoutError):
        list(results)


@pytest.mark.parametrize(("n", "chunksize"), [(10, 3), (9, 3), (1, 5), (7, 1), (7, 7), (100, 8)])
def test_cpu_map_chunksize_results_equal_and_in_order(cpu_executor: Any, n: int, chunksize: int) -> None:
    ex = cpu_executor(2)
    assert list(ex.map(add, range(n), range(n), chunksize=chunksize)) == [2 * i for i in range(n)]


def test_cpu_map_chunksize_batches_the_calls(cpu_executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """chunksize > 1 sends ceil(n / chunksize) jobs, not n."""
    ex = cpu_executor(2)
    submits = 0
    real_submit = ex.submit

    def counting_submit(*args: Any, **kwargs: Any) -> Future[Any]:
        nonlocal submits
        submits += 1
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(ex, "submit", counting_submit)
    assert list(ex.map(add, range(10), chunksize=3)) == list(range(10))
    assert submits == 4


def test_cpu_map_chunksize_exception_propagates_on_iteration(cpu_executor: Any) -> None:
    results = cpu_executor(2).map(inverse, [1, 2, 0, 4, 5], chunksize=2)
    assert next(results) == 1
    assert next(results) == 0.5
    with pytest.raises(ZeroDivisionError):
        next(results)


@pytest.mark.parametrize("chunksize", [0, -1])
def test_cpu_map_chunksize_below_one_raises(cpu_executor: Any, chunksize: int) -> None:
    with pytest.raises(ValueError, match=re.escape("chunksize must be >= 1.")):
        cpu_executor().map(add, range(3), chunksize=chunksize)


def test_thread_map_accepts_chunksize(thread_executor: Any) -> None:
    """ThreadPoolExecutor.map takes chunksize and ignores it; so does ThreadExecutor."""
    assert list(thread_executor().map(add, range(10), chunksize=4)) == list(range(10))


# --- shutdown --------------------------------------------------------------------------------


def test_cancelled_queued_future_never_runs(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(1)
    first = ex.submit(gate)
    assert gate.started.wait(WAIT)
    ran = threading.Event()
    queued = ex.submit(ran.set)
    assert queued.cancel()
    gate.release()
    assert first.result(WAIT) is None
    assert ex.submit(add, 1).result(WAIT) == 1
    assert queued.cancelled()
    assert not ran.is_set()


def test_executor_dropped_without_shutdown_finishes_its_work(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(2)
    f = ex.submit(gate)
    assert gate.started.wait(WAIT)
    rest = [ex.submit(add, i) for i in range(5)]
    del ex
    gc.collect()
    gate.release()
    assert f.result(WAIT) is None
    assert [r.result(WAIT) for r in rest] == list(range(5))


def test_shutdown_wait_waits_for_running_work(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(2)
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def work() -> str:
        started.set()
        release.wait(WAIT)
        time.sleep(0.1)
        finished.append("done")
        return "result"

    f = ex.submit(work)
    assert started.wait(WAIT)
    release.set()
    ex.shutdown(wait=True)
    assert finished == ["done"]
    assert f.done()
    assert f.result(0) == "result"


def test_shutdown_wait_runs_queued_work(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(1)
    first = ex.submit(gate)
    assert gate.started.wait(WAIT)
    rest = [ex.submit(add, i) for i in range(5)]
    threading.Timer(0.05, gate.release).start()
    ex.shutdown(wait=True)
    assert first.done()
    assert [f.result(0) for f in rest] == list(range(5))


def test_shutdown_no_wait_returns_while_work_runs(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(1)
    f = ex.submit(gate)
    assert gate.started.wait(WAIT)
    ex.shutdown(wait=False)
    assert not f.done()
    gate.release()
    assert f.result(WAIT) is None


def test_shutdown_cancel_futures_cancels_queued(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(1)
    first = ex.submit(gate)
    assert gate.started.wait(WAIT)
    queued = [ex.submit(add, i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.release()
    assert first.result(WAIT) is None
    assert not first.cancelled()
    ex.shutdown(wait=True)
    assert ex._pool.active == 0
    assert ex._pool.queued == 0


def test_submit_after_shutdown_raises(any_executor: Callable[..., Any]) -> None:
    ex = any_executor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(add, 1)


def test_run_after_shutdown_raises(any_executor: Callable[..., Any]) -> None:
    ex = any_executor()
    ex.shutdown()

    async def main() -> None:
        await ex.run(add, 1)

    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        asyncio.run(main())


def test_shutdown_twice_is_harmless(any_executor: Callable[..., Any]) -> None:
    ex = any_executor()
    ex.shutdown()
    ex.shutdown(wait=True, cancel_futures=True)
    assert ex._pool.is_shutdown


def test_shutdown_from_inside_a_worker_does_not_deadlock(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(2)
    f = ex.submit(ex.shutdown, True)
    assert f.result(WAIT) is None
    assert ex._pool.is_shutdown


def test_context_manager_shuts_down_and_waits(any_executor: Callable[..., Any], gate: Gate) -> None:
    with any_executor(2) as ex:
        f = ex.submit(gate)
        assert gate.started.wait(WAIT)
        threading.Timer(0.05, gate.release).start()
    assert f.done()
    assert ex._pool.is_shutdown
    with pytest.raises(RuntimeError):
        ex.submit(add, 1)


def test_pool_counters(any_executor: Callable[..., Any], gate: Gate) -> None:
    ex = any_executor(1)
    assert (ex._pool.active, ex._pool.queued, ex._pool.is_shutdown) == (0, 0, False)
    first = ex.submit(gate)
    assert gate.started.wait(WAIT)
    rest = [ex.submit(add, i) for i in range(3)]
    assert ex._pool.active == 1
    assert ex._pool.queued == 3
    gate.release()
    assert [f.result(WAIT) for f in rest] == [0, 1, 2]
    assert first.done()
    assert wait_until(lambda: ex._pool.active == 0)
    ex.shutdown()
    assert ex._pool.is_shutdown


# --- workers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_workers", [1, 3])
def test_max_workers_bounds_concurrency(any_executor: Callable[..., Any], max_workers: int) -> None:
    """Never more than max_workers calls at once; and max_workers calls do run at once (each
    group of max_workers meets at a barrier)."""
    ex = any_executor(max_workers)
    lock = threading.Lock()
    running = peak = 0
    barrier = threading.Barrier(max_workers)

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            barrier.wait(WAIT)
            time.sleep(0.002)
            return i
        finally:
            with lock:
                running -= 1

    n = max_workers * 10
    assert [f.result(WAIT) for f in [ex.submit(work, i) for i in range(n)]] == list(range(n))
    assert peak == max_workers


def test_thread_names_carry_the_prefix(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(2, thread_name_prefix="my-prefix")
    names = {f.result(WAIT) for f in [ex.submit(current_thread_name) for _ in range(20)]}
    assert names
    assert all(re.fullmatch(r"my-prefix_\d+", n) for n in names), names


def test_thread_executor_default_thread_names(thread_executor: Any) -> None:
    name = thread_executor().submit(current_thread_name).result(WAIT)
    assert re.fullmatch(r"ThreadExecutor-\d+_\d+", name), name


def test_cpu_executor_default_thread_names(cpu_executor: Any) -> None:
    name = cpu_executor().submit(current_thread_name).result(WAIT)
    assert re.fullmatch(r"CpuExecutor-\d+_\d+", name), name


def test_threads_let_go_after_keep_alive_are_replaced(thread_executor: Any) -> None:
    """keep_alive=0: idle threads go at once; later work gets new threads, initialized again."""
    inits: list[int] = []
    local = threading.local()

    def init() -> None:
        inits.append(threading.get_ident())
        local.ready = True

    ex = thread_executor(2, "short-lived", init, keep_alive=0.0)
    for _ in range(3):
        assert ex.submit(lambda: getattr(local, "ready", False)).result(WAIT)
        assert wait_until(lambda: ex._pool.active == 0)
        time.sleep(0.02)
    assert inits
    assert threading.get_ident() not in inits


def test_threads_let_go_leave_threading_enumerate(thread_executor: Any) -> None:
    """A pool thread that the pool lets go is no longer listed by threading.enumerate(), as a
    ThreadPoolExecutor's finished threads are not (no stale entries piling up with thread churn)."""
    ex = thread_executor(4, "gone-when-idle", keep_alive=0.0)
    barrier = threading.Barrier(4)
    assert [f.result(WAIT) for f in [ex.submit(barrier.wait, WAIT) for _ in range(4)]]
    names = lambda: [t.name for t in threading.enumerate() if t.name.startswith("gone-when-idle_")]  # noqa: E731
    assert wait_until(lambda: ex._pool.active == 0)
    assert wait_until(lambda: not names(), timeout=10.0), names()


@pytest.mark.parametrize("kind", ["thread", "cpu"])
def test_initializer_runs_in_each_worker(thread_executor: Any, cpu_executor: Any, kind: str) -> None:
    local = threading.local()
    init_threads: list[int] = []
    lock = threading.Lock()

    def init(tag: str, n: int) -> None:
        with lock:
            init_threads.append(threading.get_ident())
        local.value = (tag, n)

    if kind == "thread":
        ex = thread_executor(2, "", init, ("tag", 7))
    else:
        ex = cpu_executor(2, initializer=init, initargs=("tag", 7))
    futures = [ex.submit(lambda: (getattr(local, "value", None), threading.get_ident())) for _ in range(50)]
    seen = [f.result(WAIT) for f in futures]
    assert {value for value, _ in seen} == {("tag", 7)}
    assert threading.get_ident() not in init_threads
    with lock:
        assert {ident for _, ident in seen} <= set(init_threads)


def test_initializer_failure_breaks_the_thread_executor(
    thread_executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="concurrent.futures")

    def bad_init() -> None:
        raise OSError("initializer failed")

    ex = thread_executor(2, initializer=bad_init)
    f = ex.submit(add, 1, 2)
    with pytest.raises(BrokenThreadPool):
        f.result(WAIT)
    with pytest.raises(BrokenThreadPool):
        ex.submit(add, 1, 2)
    assert any("Exception in initializer" in r.getMessage() for r in caplog.records)


def test_initializer_failure_breaks_pending_futures(thread_executor: Any) -> None:
    def bad_init() -> None:
        raise OSError("initializer failed")

    ex = thread_executor(1, initializer=bad_init)
    futures = [ex.submit(add, i) for i in range(5)]
    for f in futures:
        with pytest.raises(BrokenThreadPool):
            f.result(WAIT)


def test_initializer_failure_breaks_the_cpu_executor(cpu_executor: Any) -> None:
    def bad_init() -> None:
        raise OSError("initializer failed")

    ex = cpu_executor(2, initializer=bad_init)
    # The CPU pool starts its workers eagerly, so the break may already be known at submit.
    with pytest.raises(BrokenExecutor):
        ex.submit(add, 1, 2).result(WAIT)
    with pytest.raises(BrokenExecutor):
        ex.submit(add, 1, 2)


def test_panic_in_the_rust_side_becomes_an_exception(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(1)
    f: Future[Any] = Future()
    ex._pool._submit_panicking(f)
    exc = f.exception(WAIT)
    assert type(exc).__name__ == "PanicException"
    assert isinstance(exc, BaseException)
    # The pool (even its single worker) is still usable.
    assert ex.submit(add, 2, 3).result(WAIT) == 5
    assert [f.result(WAIT) for f in [ex.submit(add, i) for i in range(10)]] == list(range(10))


# --- asyncio integration ---------------------------------------------------------------------


def test_run_in_executor(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(thread_name_prefix="rie")

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ex, add, 40, 2), await loop.run_in_executor(ex, current_thread_name)

    value, name = asyncio.run(main())
    assert value == 42
    assert name.startswith("rie_")


def test_run_in_executor_exception(any_executor: Callable[..., Any]) -> None:
    ex = any_executor()

    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(ex, executor_worker_raises)

    with pytest.raises(LookupError):
        asyncio.run(main())


def test_set_default_executor(thread_executor: Any) -> None:
    ex = thread_executor(4, thread_name_prefix="default-ex")

    async def main() -> tuple[str, str, int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        a = await asyncio.to_thread(current_thread_name)
        b = await loop.run_in_executor(None, current_thread_name)
        c = await asyncio.to_thread(add, 1, b=2)
        return a, b, c

    a, b, c = asyncio.run(main())
    assert a.startswith("default-ex_")
    assert b.startswith("default-ex_")
    assert c == 3
    # asyncio.run shuts the default executor down through our shutdown().
    assert ex._pool.is_shutdown


def test_set_default_executor_carries_context_through_asyncio_to_thread(thread_executor: Any) -> None:
    ex = thread_executor(2)

    async def main() -> str:
        asyncio.get_running_loop().set_default_executor(ex)
        var.set("caller")
        return await asyncio.to_thread(var.get)

    assert asyncio.run(main()) == "caller"


def test_executor_run(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(2, thread_name_prefix="awaitable")

    async def main() -> tuple[int, Any, str]:
        return (
            await ex.run(add, 1, b=2),
            await ex.run(echo_kwargs, fn=1, func=2, self=3),
            await ex.run(current_thread_name),
        )

    value, kwargs, name = asyncio.run(main())
    assert value == 3
    assert kwargs == ((), {"fn": 1, "func": 2, "self": 3})
    assert name.startswith("awaitable_")


def test_thread_executor_run_carries_contextvars(thread_executor: Any) -> None:
    ex = thread_executor()

    def mutate() -> str:
        seen = var.get()
        var.set("worker")
        return seen

    async def main() -> tuple[str, str]:
        var.set("caller")
        return await ex.run(mutate), var.get()

    assert asyncio.run(main()) == ("caller", "caller")


def test_cpu_executor_run_does_not_carry_contextvars(cpu_executor: Any) -> None:
    ex = cpu_executor(1)

    async def main() -> str:
        var.set("caller")
        return await ex.run(var.get, "not carried")

    assert asyncio.run(main()) == "not carried"


def test_executor_run_exception(any_executor: Callable[..., Any]) -> None:
    ex = any_executor()

    async def main() -> None:
        await ex.run(executor_worker_raises)

    with pytest.raises(LookupError) as excinfo:
        asyncio.run(main())
    assert "executor_worker_raises" in [f.name for f in traceback.extract_tb(excinfo.value.__traceback__)]


def test_executor_run_gathered(any_executor: Callable[..., Any]) -> None:
    ex = any_executor(2)

    async def main() -> list[int]:
        return await asyncio.gather(*(ex.run(add, i, 1) for i in range(500)))

    assert asyncio.run(main()) == [i + 1 for i in range(500)]


def test_shutdown_cancel_futures_cancels_queued_run_calls(any_executor: Callable[..., Any], gate: Gate) -> None:
    """Queued awaitable calls are cancelled by shutdown(cancel_futures=True): their awaiters get
    CancelledError, as with run_in_executor on a ThreadPoolExecutor."""
    ex = any_executor(1)
    ran = threading.Event()

    async def main() -> None:
        blocker = asyncio.create_task(ex.run(gate))
        assert await wait_event(gate.started)
        queued = [asyncio.create_task(ex.run(ran.set)) for _ in range(3)]
        assert await async_wait_until(lambda: ex._pool.queued == 3)
        ex.shutdown(wait=False, cancel_futures=True)
        for task in queued:
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)
        gate.release()
        assert await blocker is None

    asyncio.run(main())
    assert not ran.is_set()


def test_initializer_failure_breaks_awaitable_run(thread_executor: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="concurrent.futures")

    def bad_init() -> None:
        raise OSError("initializer failed")

    ex = thread_executor(1, initializer=bad_init)

    async def main() -> None:
        with pytest.raises(BrokenThreadPool):
            await asyncio.wait_for(ex.run(add, 1, 2), WAIT)
        with pytest.raises(BrokenThreadPool):
            await ex.run(add, 1, 2)

    asyncio.run(main())


def test_executor_run_cancel_before_start(any_executor: Callable[..., Any], gate: Gate) -> None:
    """A call still queued when the task awaiting ``pool.run`` is cancelled never starts."""
    ex = any_executor(1)

    async def main() -> bool:
        ran = await cancel_queued_call(ex.run, lambda: ex._pool, gate)
        assert await ex.run(abs, -4) == 4
        return ran

    assert asyncio.run(main()) is False


# --- configure and the default pools ---------------------------------------------------------


def test_default_executors_are_singletons() -> None:
    assert rustpool.default_thread_executor() is rustpool.default_thread_executor()
    assert rustpool.default_cpu_executor() is rustpool.default_cpu_executor()
    assert isinstance(rustpool.default_thread_executor(), rustpool.ThreadExecutor)
    assert isinstance(rustpool.default_cpu_executor(), rustpool.CpuExecutor)


def test_configure_max_threads_replaces_the_thread_pool(restore_defaults: None) -> None:
    old = rustpool.default_thread_executor()
    rustpool.configure(max_threads=4)
    new = rustpool.default_thread_executor()
    assert new is not old
    assert new.max_workers == 4
    assert old._pool.is_shutdown
    assert asyncio.run(rustpool.to_thread(add, 1, 1)) == 2


def test_configure_keep_alive(restore_defaults: None) -> None:
    rustpool.configure(keep_alive=1.5)
    assert rustpool.default_thread_executor().keep_alive == 1.5


def test_configure_cpu_workers_replaces_the_cpu_pool(restore_defaults: None) -> None:
    old = rustpool.default_cpu_executor()
    rustpool.configure(cpu_workers=2)
    new = rustpool.default_cpu_executor()
    assert new is not old
    assert new.max_workers == 2
    assert old._pool.is_shutdown
    assert asyncio.run(rustpool.run_cpu(add, 2, 2)) == 4


def test_configure_isolation_auto(restore_defaults: None) -> None:
    rustpool.configure(isolation="thread")
    assert rustpool.default_cpu_executor().isolation == "thread"
    rustpool.configure(isolation="auto")
    assert rustpool.default_cpu_executor().isolation == ("interpreter" if HAS_INTERPRETERS else "process")


def test_configure_only_replaces_what_changed(restore_defaults: None) -> None:
    thread_ex = rustpool.default_thread_executor()
    cpu_ex = rustpool.default_cpu_executor()
    rustpool.configure(cpu_workers=1)
    assert rustpool.default_thread_executor() is thread_ex
    assert rustpool.default_cpu_executor() is not cpu_ex
    rustpool.configure(cpu_workers=1)
    assert rustpool.default_cpu_executor().max_workers == 1


def test_configure_bounds_to_thread(restore_defaults: None) -> None:
    rustpool.configure(max_threads=2)
    lock = threading.Lock()
    running = peak = 0

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(rustpool.to_thread(work) for _ in range(20)))

    asyncio.run(main())
    assert 1 <= peak <= 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_threads": 0},
        {"cpu_workers": -1},
        {"isolation": "bogus"},
        {"keep_alive": -1.0},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_configure_invalid_raises_and_changes_nothing(restore_defaults: None, kwargs: dict[str, Any]) -> None:
    thread_ex = rustpool.default_thread_executor()
    cpu_ex = rustpool.default_cpu_executor()
    before = rustpool.settings()
    with pytest.raises(ValueError):
        rustpool.configure(**kwargs)
    assert rustpool.settings() == before
    assert rustpool.default_thread_executor() is thread_ex
    assert rustpool.default_cpu_executor() is cpu_ex


@pytest.mark.parametrize("keep_alive", [float("nan"), float("inf")])
def test_configure_refuses_non_finite_keep_alive(restore_defaults: None, keep_alive: float) -> None:
    """configure's own message says "a finite number of seconds >= 0", as ThreadExecutor's does;
    accepting nan/inf would make every later to_thread call fail instead."""
    before = rustpool.settings()
    with pytest.raises(ValueError, match="keep_alive"):
        rustpool.configure(keep_alive=keep_alive)
    assert rustpool.settings() == before
    assert asyncio.run(rustpool.to_thread(add, 1, 2)) == 3


@pytest.mark.skipif(HAS_INTERPRETERS, reason="every isolation mode exists on 3.13+")
@pytest.mark.parametrize("isolation", ["interpreter"])
def test_configure_refuses_isolation_not_available_yet(restore_defaults: None, isolation: str) -> None:
    """CpuExecutor refuses these modes in this release; configure must refuse them up front, not
    accept them (shutting the working CPU pool down) and make every later run_cpu fail."""
    cpu_ex = rustpool.default_cpu_executor()
    with pytest.raises(ValueError, match=isolation):
        rustpool.configure(isolation=isolation)
    assert rustpool.default_cpu_executor() is cpu_ex
    assert not cpu_ex._pool.is_shutdown
    assert asyncio.run(rustpool.run_cpu(add, 1, 2)) == 3


def test_configure_lets_running_calls_on_the_old_pool_finish(restore_defaults: None, gate: Gate) -> None:
    gate.result = "finished on the old pool"

    async def main() -> str:
        task = asyncio.create_task(rustpool.to_thread(gate))
        assert await wait_event(gate.started)
        rustpool.configure(max_threads=8)
        gate.release()
        result = await task
        assert await rustpool.to_thread(add, 1, 2) == 3
        return result

    assert asyncio.run(main()) == "finished on the old pool"


def test_version() -> None:
    assert isinstance(rustpool.__version__, str)
    assert re.match(r"\d+\.\d+", rustpool.__version__)


# --- amap (both executors) ------------------------------------------------------------------


def test_amap_carries_contextvars_on_thread_executor(thread_executor: Any) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    ex = thread_executor(4)

    async def main() -> list[str]:
        var.set("caller")
        return [r async for r in ex.amap(lambda i: f"{var.get()}-{i}", range(3))]

    assert asyncio.run(main()) == ["caller-0", "caller-1", "caller-2"]


def test_amap_leaving_early_cancels_calls_not_started(any_executor: Any) -> None:
    ex = any_executor(1)
    started: list[int] = []

    def record(i: int) -> int:
        started.append(i)
        time.sleep(0.05)
        return i

    async def main() -> list[int]:
        out = []
        gen = ex.amap(record, range(100), limit=10)
        async for r in gen:
            out.append(r)
            if r == 2:
                break
        await gen.aclose()
        return out

    assert asyncio.run(main()) == [0, 1, 2]
    time.sleep(0.2)
    # 10 calls were in flight at the break; those that had not started never ran (without the
    # cancel all 13 would have).
    assert len(started) <= 5
    assert started == sorted(started)


def test_amap_limit_must_be_positive(any_executor: Any) -> None:
    async def main() -> None:
        async for _ in any_executor(1).amap(abs, [1], limit=0):
            pass

    with pytest.raises(ValueError, match="limit must be >= 1"):
        asyncio.run(main())
