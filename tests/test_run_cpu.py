"""``rustpool.run_cpu``: ``loop.run_in_executor`` semantics on the bounded CPU pool."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import re
import threading
import traceback
from typing import Any

import pytest

import rustpool

from .conftest import WAIT, Gate, async_wait_until, cancel_queued_call, cancel_running_call


@pytest.fixture(autouse=True)
def _cpu_pool_on_threads(restore_defaults: None) -> None:
    """These tests are about run_cpu's asyncio contract and use local functions and threading
    primitives, which only isolation="thread" shares; the isolated modes have their own tests."""
    rustpool.configure(isolation="thread")

var: contextvars.ContextVar[str] = contextvars.ContextVar("run_cpu_var")


def mul(a: int, b: int = 1, *, c: int = 1) -> int:
    return a * b * c


def echo_kwargs(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def cpu_worker_raises() -> None:
    raise ArithmeticError("from the cpu worker")


def test_returns_result() -> None:
    assert asyncio.run(rustpool.run_cpu(mul, 6, 7)) == 42


def test_positional_and_keyword_arguments() -> None:
    assert asyncio.run(rustpool.run_cpu(mul, 2, b=3, c=4)) == 24


def test_kwargs_named_fn_func_self_reach_the_function() -> None:
    assert asyncio.run(rustpool.run_cpu(echo_kwargs, fn=1, func=2, self=3)) == ((), {"fn": 1, "func": 2, "self": 3})


def test_is_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(rustpool.run_cpu)

    async def main() -> int:
        return await asyncio.create_task(rustpool.run_cpu(mul, 3, 3))

    assert asyncio.run(main()) == 9


def test_runs_on_a_named_cpu_pool_thread() -> None:
    name = asyncio.run(rustpool.run_cpu(lambda: threading.current_thread().name))
    assert re.fullmatch(r"rustpool-run_cpu_\d+", name), name


def test_exception_and_traceback() -> None:
    with pytest.raises(ArithmeticError, match="from the cpu worker") as excinfo:
        asyncio.run(rustpool.run_cpu(cpu_worker_raises))
    names = [f.name for f in traceback.extract_tb(excinfo.value.__traceback__)]
    assert "cpu_worker_raises" in names


def test_does_not_carry_the_callers_context() -> None:
    """Like run_in_executor: the caller's contextvars are not visible in the call."""

    async def main() -> str:
        var.set("caller")
        return await rustpool.run_cpu(var.get, "not carried")

    assert asyncio.run(main()) == "not carried"


def test_gathered_calls_in_order() -> None:
    data = [bytes([i]) * 10_000 for i in range(64)]

    async def main() -> list[str]:
        return await asyncio.gather(*(rustpool.run_cpu(lambda d: hashlib.sha256(d).hexdigest(), d) for d in data))

    assert asyncio.run(main()) == [hashlib.sha256(d).hexdigest() for d in data]


def test_cancel_before_start_never_runs_the_call(restore_defaults: None, gate: Gate) -> None:
    rustpool.configure(cpu_workers=1)
    pool = lambda: rustpool.default_cpu_executor()._pool  # noqa: E731

    async def main() -> bool:
        ran = await cancel_queued_call(rustpool.run_cpu, pool, gate)
        assert await rustpool.run_cpu(mul, 5) == 5
        return ran

    assert asyncio.run(main()) is False


def test_cancel_during_the_call_lets_it_finish_silently(gate: Gate, unraisables: list[Any], loop_errors: Any) -> None:
    pool = lambda: rustpool.default_cpu_executor()._pool  # noqa: E731
    assert asyncio.run(cancel_running_call(rustpool.run_cpu, pool, gate, loop_errors)) == []
    assert gate.calls == 1
    assert unraisables == []


def test_outside_a_running_loop_raises_runtime_error() -> None:
    ran = threading.Event()
    coro = rustpool.run_cpu(ran.set)
    try:
        with pytest.raises(RuntimeError, match="no running event loop"):
            coro.send(None)
    finally:
        coro.close()
    assert not ran.is_set()


def test_wait_for_timeout(gate: Gate) -> None:
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(rustpool.run_cpu(gate), 0.05)
        gate.release()
        pool = rustpool.default_cpu_executor()._pool
        assert await async_wait_until(lambda: pool.active == 0 and pool.queued == 0, WAIT)

    asyncio.run(main())
