"""``rustpool.to_thread``: the contract of ``asyncio.to_thread`` on rustpool's blocking pool."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import logging
import threading
import time
import traceback
import weakref
from typing import Any

import pytest

import rustpool

from .conftest import (
    WAIT,
    Gate,
    async_wait_until,
    cancel_queued_call,
    cancel_running_call,
    default_pool_idle,
    settle_loop,
    wait_event,
    wait_until,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def add(a: int, b: int = 0, *, c: int = 0) -> int:
    return a + b + c


def echo_kwargs(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


# --- results and arguments -------------------------------------------------------------------


def test_returns_result() -> None:
    assert asyncio.run(rustpool.to_thread(add, 2, 3)) == 5


def test_returns_none() -> None:
    assert asyncio.run(rustpool.to_thread(lambda: None)) is None


def test_returns_the_same_object() -> None:
    obj = object()
    assert asyncio.run(rustpool.to_thread(lambda: obj)) is obj


def test_positional_and_keyword_arguments() -> None:
    assert asyncio.run(rustpool.to_thread(add, 1, b=2, c=3)) == 6


def test_kwargs_named_fn_func_self_reach_the_function() -> None:
    args, kwargs = asyncio.run(rustpool.to_thread(echo_kwargs, 1, fn="a", func="b", self="c"))
    assert args == (1,)
    assert kwargs == {"fn": "a", "func": "b", "self": "c"}


def test_empty_kwargs_are_not_passed_as_a_positional() -> None:
    assert asyncio.run(rustpool.to_thread(echo_kwargs)) == ((), {})


def test_runs_on_a_pool_thread_not_the_loop_thread() -> None:
    async def main() -> tuple[int, str]:
        return await rustpool.to_thread(lambda: (threading.get_ident(), threading.current_thread().name))

    ident, name = asyncio.run(main())
    assert ident != threading.get_ident()
    assert name.startswith("rustpool-to_thread_")


def test_is_a_coroutine_function_usable_with_create_task() -> None:
    assert inspect.iscoroutinefunction(rustpool.to_thread)

    async def main() -> int:
        coro = rustpool.to_thread(add, 40, 2)
        assert inspect.iscoroutine(coro)
        task = asyncio.create_task(coro)
        return await task

    assert asyncio.run(main()) == 42


# --- contextvars -----------------------------------------------------------------------------


def test_runs_in_a_copy_of_the_callers_context() -> None:
    async def main() -> str:
        request_id.set("caller-value")
        return await rustpool.to_thread(request_id.get)

    assert asyncio.run(main()) == "caller-value"


def test_context_changes_inside_do_not_leak_back() -> None:
    def mutate() -> str:
        seen = request_id.get()
        request_id.set("worker-value")
        return seen

    async def main() -> tuple[str, str]:
        request_id.set("caller-value")
        seen = await rustpool.to_thread(mutate)
        return seen, request_id.get()

    assert asyncio.run(main()) == ("caller-value", "caller-value")


def test_context_is_copied_per_call() -> None:
    """A value set inside one call is not visible to the next call from the same caller."""

    def set_and_report() -> str:
        before = request_id.get("unset")
        request_id.set("leaked")
        return before

    async def main() -> list[str]:
        return [await rustpool.to_thread(set_and_report) for _ in range(3)]

    assert asyncio.run(main()) == ["unset", "unset", "unset"]


def test_concurrent_tasks_each_see_their_own_context() -> None:
    async def one(i: int) -> str:
        request_id.set(f"task-{i}")
        await asyncio.sleep(0)
        return await rustpool.to_thread(request_id.get)

    async def main() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(50)))

    assert asyncio.run(main()) == [f"task-{i}" for i in range(50)]


# --- exceptions ------------------------------------------------------------------------------


class Boom(Exception):
    pass


def worker_raises_for_traceback() -> None:
    raise Boom("from the worker")


def test_exception_type_and_message() -> None:
    with pytest.raises(Boom, match="from the worker"):
        asyncio.run(rustpool.to_thread(worker_raises_for_traceback))


def test_exception_is_the_object_the_function_raised() -> None:
    raised = Boom("identity")

    def fn() -> None:
        raise raised

    async def main() -> BaseException:
        try:
            await rustpool.to_thread(fn)
        except Boom as e:
            return e
        raise AssertionError("no exception")

    assert asyncio.run(main()) is raised


def test_traceback_contains_the_worker_frame() -> None:
    async def main() -> None:
        await rustpool.to_thread(worker_raises_for_traceback)

    with pytest.raises(Boom) as excinfo:
        asyncio.run(main())
    names = [frame.name for frame in traceback.extract_tb(excinfo.value.__traceback__)]
    assert "worker_raises_for_traceback" in names
    # The awaiting coroutine is in it too, before the worker's frame.
    assert "main" in names
    assert names.index("main") < names.index("worker_raises_for_traceback")


def test_explicit_exception_chaining_is_preserved() -> None:
    def chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError as e:
            raise ValueError("outer") from e

    with pytest.raises(ValueError, match="outer") as excinfo:
        asyncio.run(rustpool.to_thread(chained))
    assert isinstance(excinfo.value.__cause__, KeyError)
    assert excinfo.value.__suppress_context__


def test_implicit_exception_context_is_preserved() -> None:
    def during_handling() -> None:
        try:
            raise KeyError("first")
        except KeyError:
            raise ValueError("second")  # noqa: B904 - the implicit context is what is tested

    with pytest.raises(ValueError, match="second") as excinfo:
        asyncio.run(rustpool.to_thread(during_handling))
    assert isinstance(excinfo.value.__context__, KeyError)
    assert excinfo.value.__cause__ is None


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_reaches_the_awaiter_like_asyncio_to_thread(exc_type: type[BaseException]) -> None:
    """asyncio.to_thread raises a KeyboardInterrupt/SystemExit of the function in the awaiting
    coroutine (ThreadPoolExecutor stores any BaseException on the future); rustpool must match."""

    def fn() -> None:
        raise exc_type("from the worker")

    async def outcome(to_thread: Any) -> tuple[type[BaseException], str]:
        try:
            await to_thread(fn)
        except BaseException as e:  # noqa: BLE001 - the point of the test
            return type(e), str(e)
        raise AssertionError("no exception")

    async def main() -> tuple[Any, Any]:
        return await outcome(asyncio.to_thread), await outcome(rustpool.to_thread)

    reference, ours = asyncio.run(main())
    assert reference == (exc_type, "from the worker")
    assert ours == reference


def test_stop_iteration_from_the_function_raises_instead_of_hanging() -> None:
    """StopIteration cannot be set on an asyncio future (asyncio.to_thread hangs on it); the call
    must end with an exception that says so, not hang."""

    def fn() -> None:
        raise StopIteration("from the worker")

    async def main() -> BaseException:
        try:
            await asyncio.wait_for(rustpool.to_thread(fn), WAIT)
        except TimeoutError:
            raise AssertionError("to_thread hung on a StopIteration") from None
        except Exception as e:  # noqa: BLE001
            return e
        raise AssertionError("no exception")

    exc = asyncio.run(main())
    assert not isinstance(exc, StopIteration)
    chain = [exc, exc.__cause__, exc.__context__]
    assert any(
        isinstance(e, StopIteration) or (e is not None and "StopIteration" in str(e)) for e in chain
    ), repr(exc)


def test_pool_stays_usable_after_an_exception() -> None:
    async def main() -> int:
        with pytest.raises(Boom):
            await rustpool.to_thread(worker_raises_for_traceback)
        return await rustpool.to_thread(add, 1, 1)

    assert asyncio.run(main()) == 2


# --- cancellation ----------------------------------------------------------------------------


def test_to_thread_cancel_before_start_never_runs_the_call(restore_defaults: None, gate: Gate) -> None:
    """A call still queued when its task is cancelled never starts (the executors' ``run``: see
    test_executors.py)."""
    rustpool.configure(max_threads=1)
    pool = lambda: rustpool.default_thread_executor()._pool  # noqa: E731
    assert asyncio.run(cancel_queued_call(rustpool.to_thread, pool, gate)) is False


def test_cancel_during_the_call_lets_it_finish_silently(
    gate: Gate, unraisables: list[Any], loop_errors: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    pool = lambda: rustpool.default_thread_executor()._pool  # noqa: E731
    errors = asyncio.run(cancel_running_call(rustpool.to_thread, pool, gate, loop_errors))
    gc.collect()
    assert gate.calls == 1
    assert errors == []
    assert unraisables == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_cancel_during_a_failing_call_logs_nothing(
    unraisables: list[Any], loop_errors: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled call that then raises: no 'exception was never retrieved' or the like."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def fn() -> None:
        started.set()
        release.wait(WAIT)
        finished.set()
        raise Boom("nobody listens")

    async def main() -> list[dict[str, Any]]:
        errors = loop_errors(asyncio.get_running_loop())
        task = asyncio.create_task(rustpool.to_thread(fn))
        assert await wait_event(started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await wait_event(finished)
        assert await async_wait_until(default_pool_idle)
        await settle_loop()
        return errors

    errors = asyncio.run(main())
    gc.collect()
    assert errors == []
    assert unraisables == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_loop_closed_while_a_cancelled_call_still_runs(
    unraisables: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.run ends (cancelling the task, closing the loop) while the call sleeps; the call's
    completion later finds a closed loop: no error, no warning, no unraisable."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    gates = [Gate(), Gate()]
    tasks: list[asyncio.Task[Any]] = []

    def failing() -> None:
        gates[1]()
        raise Boom("raised after the loop closed")

    async def main() -> None:
        tasks.append(asyncio.create_task(rustpool.to_thread(gates[0])))
        tasks.append(asyncio.create_task(rustpool.to_thread(failing)))
        assert await wait_event(gates[0].started)
        assert await wait_event(gates[1].started)

    try:
        asyncio.run(main())
        for g in gates:
            assert not g.finished.is_set()
            g.release()
        for g in gates:
            assert g.finished.wait(WAIT)
        assert wait_until(default_pool_idle)
        gc.collect()
    finally:
        for g in gates:
            g.release()
    assert len(tasks) == 2 and all(t.cancelled() for t in tasks)
    assert unraisables == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_loop_closed_with_completions_waiting_in_its_queue(
    thread_executor: Any, gate: Gate, unraisables: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The calls complete and hand their results to the loop, which is closed before it drains."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    ex = thread_executor()
    loop = asyncio.new_event_loop()
    try:

        def raises_once_released() -> None:
            assert gate.released.wait(WAIT)
            worker_raises_for_traceback()

        async def start() -> list[Any]:
            # Both calls end only once the loop has stopped (one finishing during the submission's
            # hand-off would be drained by the loop before it stops).
            return [ex._pool.run(gate), ex._pool.run(raises_once_released)]

        futures = loop.run_until_complete(start())
        assert gate.started.wait(WAIT)
        gate.release()
        assert wait_until(lambda: ex._pool.active == 0 and ex._pool.queued == 0)
        assert not any(f.done() for f in futures)
    finally:
        gate.release()
        loop.close()
    del futures
    gc.collect()
    assert unraisables == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_results_arriving_after_loop_close_are_released(thread_executor: Any, make_gate: Any) -> None:
    """A result that completes after its loop closed is dropped, not kept alive. Here the loop
    closes while a completion (call a) is waiting in its queue; call b completes after that."""

    class Result:
        pass

    ex = thread_executor(2)
    a, b = make_gate(1), make_gate()
    ref: list[weakref.ref[Result]] = []

    def make_result() -> Result:
        r = Result()
        ref.append(weakref.ref(r))
        b()
        return r

    loop = asyncio.new_event_loop()
    try:

        async def start() -> list[Any]:
            return [ex._pool.run(a), ex._pool.run(make_result)]

        futures = loop.run_until_complete(start())
        assert a.started.wait(WAIT)
        assert b.started.wait(WAIT)
        a.release()
        assert wait_until(lambda: ex._pool.active == 1)  # a's outcome is queued on the loop
    finally:
        loop.close()
    b.release()
    assert wait_until(lambda: ex._pool.active == 0)
    del futures
    gc.collect()
    assert ref and ref[0]() is None, "the result of a call whose loop is closed is still referenced"


def test_wait_for_timeout_raises_and_drops_the_call(
    gate: Gate, unraisables: list[Any], loop_errors: Any
) -> None:
    async def main() -> list[dict[str, Any]]:
        errors = loop_errors(asyncio.get_running_loop())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(rustpool.to_thread(gate), 0.05)
        gate.release()
        # Whether it had started or not, nothing of it is left and nothing complains.
        assert await async_wait_until(default_pool_idle)
        await settle_loop()
        assert await rustpool.to_thread(add, 1, 2) == 3
        return errors

    assert asyncio.run(main()) == []
    assert unraisables == []


def test_wait_for_without_timeout_returns_the_result() -> None:
    async def main() -> int:
        return await asyncio.wait_for(rustpool.to_thread(add, 20, 22), WAIT)

    assert asyncio.run(main()) == 42


def test_cancelling_the_outer_task_before_it_starts_submits_nothing() -> None:
    ran = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(rustpool.to_thread(ran.set))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await async_wait_until(default_pool_idle)

    asyncio.run(main())
    assert not ran.is_set()


# --- composition -----------------------------------------------------------------------------


def test_gather_results_in_order() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(rustpool.to_thread(add, i, i) for i in range(100)))

    assert asyncio.run(main()) == [2 * i for i in range(100)]


def test_gather_return_exceptions() -> None:
    async def main() -> list[Any]:
        return await asyncio.gather(
            rustpool.to_thread(add, 1),
            rustpool.to_thread(worker_raises_for_traceback),
            rustpool.to_thread(add, 2),
            return_exceptions=True,
        )

    first, err, last = asyncio.run(main())
    assert (first, last) == (1, 2)
    assert isinstance(err, Boom)


def test_task_group() -> None:
    async def main() -> list[int]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(rustpool.to_thread(add, i, 1)) for i in range(20)]
        return [t.result() for t in tasks]

    assert asyncio.run(main()) == [i + 1 for i in range(20)]


def test_task_group_propagates_a_failure() -> None:
    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(rustpool.to_thread(add, 1))
            tg.create_task(rustpool.to_thread(worker_raises_for_traceback))

    with pytest.raises(ExceptionGroup) as excinfo:
        asyncio.run(main())
    assert [type(e) for e in excinfo.value.exceptions] == [Boom]


def test_many_concurrent_calls_all_correct() -> None:
    n = 5000

    async def main() -> list[int]:
        return await asyncio.gather(*(rustpool.to_thread(add, i, b=1) for i in range(n)))

    assert asyncio.run(main()) == [i + 1 for i in range(n)]


def test_200_blocking_calls_run_at_the_same_time() -> None:
    """200 gathered calls are all running at once: a 200-party barrier only opens then."""
    barrier = threading.Barrier(200)

    def meet(i: int) -> int:
        barrier.wait(WAIT)
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(rustpool.to_thread(meet, i) for i in range(200)))

    assert asyncio.run(main()) == list(range(200))


def test_200_gathered_sleeps_overlap() -> None:
    """200 sleeps of 50 ms take 10 s one after another; gathered they must overlap. The bound is
    half the serial time: a behaviour check (concurrency), not a benchmark."""
    n, nap = 200, 0.05

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(rustpool.to_thread(time.sleep, nap) for _ in range(n)))
        return time.perf_counter() - t0

    assert asyncio.run(main()) < n * nap / 2


def test_event_loop_keeps_running_while_calls_block(gate: Gate) -> None:
    async def main() -> None:
        task = asyncio.create_task(rustpool.to_thread(gate))
        # The loop polls (asyncio.sleep) while the call blocks in its thread.
        assert await wait_event(gate.started)
        await asyncio.sleep(0.01)
        assert not task.done()
        assert not gate.finished.is_set()
        gate.release()
        await task

    asyncio.run(main())
    assert gate.finished.is_set()


# --- loops and threads -----------------------------------------------------------------------


def test_outside_a_running_loop_raises_runtime_error() -> None:
    ran = threading.Event()
    coro = rustpool.to_thread(ran.set)
    try:
        with pytest.raises(RuntimeError, match="no running event loop"):
            coro.send(None)
    finally:
        coro.close()
    assert not ran.is_set()


def test_non_callable_raises_type_error_when_awaited() -> None:
    with pytest.raises(TypeError):
        asyncio.run(rustpool.to_thread(42))  # type: ignore[arg-type]


def test_nested_event_loop_inside_a_pool_call() -> None:
    """A call that runs its own event loop (in the pool thread) and uses to_thread from it."""

    def inner() -> list[int]:
        async def nested() -> list[int]:
            return await asyncio.gather(*(rustpool.to_thread(add, i, 10) for i in range(20)))

        return asyncio.run(nested())

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(rustpool.to_thread(inner) for _ in range(3)))

    assert asyncio.run(main()) == [[i + 10 for i in range(20)]] * 3


def test_successive_event_loops_in_one_thread() -> None:
    for i in range(3):
        assert asyncio.run(rustpool.to_thread(add, i, 1)) == i + 1


def test_event_loops_in_several_threads_at_once() -> None:
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    async def main(k: int) -> list[int]:
        barrier.wait(WAIT)
        return await asyncio.gather(*(rustpool.to_thread(add, k, i) for i in range(200)))

    def thread_main(k: int) -> None:
        try:
            results[k] = asyncio.run(main(k))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=thread_main, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    assert results == {k: [k + i for i in range(200)] for k in range(4)}


def test_loops_alternating_in_one_thread() -> None:
    """Two loops driven in turn from the same thread each get their own results."""
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        for i in range(6):
            loop = loops[i % 2]
            assert loop.run_until_complete(rustpool.to_thread(add, i, 100)) == i + 100
    finally:
        for loop in loops:
            loop.close()
