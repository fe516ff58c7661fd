"""rustpool on uvloop: the completion bridge only needs ``call_soon_threadsafe``/``create_future``."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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


@pytest.fixture(autouse=True)
def _cpu_pool_on_threads(restore_defaults: None) -> None:
    """These tests are about run_cpu's asyncio contract and use local functions and threading
    primitives, which only isolation="thread" shares; the isolated modes have their own tests."""
    rustpool.configure(isolation="thread")

uvloop = pytest.importorskip("uvloop", reason="uvloop is an optional dependency (not built for every CPython)")

T = TypeVar("T")
var: contextvars.ContextVar[str] = contextvars.ContextVar("uvloop_var")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh uvloop loop, checking that it really is uvloop."""

    async def checked() -> T:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await main()

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(checked())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def add(a: int, b: int = 0) -> int:
    return a + b


def uv_worker_raises() -> None:
    raise KeyError("from the uvloop worker")


def test_uvloop_run_helper() -> None:
    async def main() -> int:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await rustpool.to_thread(add, 1, 2)

    assert uvloop.run(main()) == 3


def test_to_thread_result_and_kwargs() -> None:
    async def main() -> int:
        return await rustpool.to_thread(add, 1, b=41)

    assert run(main) == 42


def test_to_thread_many_gathered() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(rustpool.to_thread(add, i, 1) for i in range(2000)))

    assert run(main) == [i + 1 for i in range(2000)]


def test_to_thread_carries_contextvars() -> None:
    async def main() -> str:
        var.set("uv-caller")
        return await rustpool.to_thread(var.get)

    assert run(main) == "uv-caller"


def test_to_thread_exception() -> None:
    async def main() -> None:
        await rustpool.to_thread(uv_worker_raises)

    with pytest.raises(KeyError, match="from the uvloop worker"):
        run(main)


def test_run_cpu_result() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(rustpool.run_cpu(add, i, i) for i in range(200)))

    assert run(main) == [2 * i for i in range(200)]


def test_run_cpu_exception() -> None:
    async def main() -> None:
        await rustpool.run_cpu(uv_worker_raises)

    with pytest.raises(KeyError):
        run(main)


def test_cancel_before_start_never_runs(thread_executor: Any, gate: Gate) -> None:
    ex = thread_executor(max_workers=1)
    assert run(lambda: cancel_queued_call(ex.run, lambda: ex._pool, gate)) is False


def test_cancel_during_the_call_is_silent(gate: Gate, unraisables: list[Any], loop_errors: Any) -> None:
    pool = lambda: rustpool.default_thread_executor()._pool  # noqa: E731
    assert run(lambda: cancel_running_call(rustpool.to_thread, pool, gate, loop_errors)) == []
    assert gate.calls == 1
    assert unraisables == []


def test_wait_for_timeout(gate: Gate, loop_errors: Any) -> None:
    async def main() -> list[dict[str, Any]]:
        errors = loop_errors(asyncio.get_running_loop())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(rustpool.to_thread(gate), 0.05)
        gate.release()
        assert await async_wait_until(default_pool_idle)
        await settle_loop()
        return errors

    assert run(main) == []


def test_loop_closed_while_a_call_runs(make_gate: Callable[..., Gate], unraisables: list[Any]) -> None:
    """uvloop.run ends while calls (one to_thread, one run_cpu) still run: their completions find
    a closed uvloop loop and are dropped silently."""
    gates = [make_gate(), make_gate()]
    tasks: list[asyncio.Task[Any]] = []

    async def main() -> None:
        tasks.append(asyncio.create_task(rustpool.to_thread(gates[0])))
        tasks.append(asyncio.create_task(rustpool.run_cpu(gates[1])))
        for g in gates:
            assert await wait_event(g.started)

    uvloop.run(main())
    for g in gates:
        g.release()
    for g in gates:
        assert g.finished.wait(WAIT)
    cpu = rustpool.default_cpu_executor()._pool
    assert wait_until(lambda: default_pool_idle() and cpu.active == 0)
    gc.collect()
    assert all(t.cancelled() for t in tasks)
    assert unraisables == []


def test_run_in_executor_thread_executor(thread_executor: Any) -> None:
    ex = thread_executor(4, thread_name_prefix="uv-rie")

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        return (
            await loop.run_in_executor(ex, add, 2, 3),
            await loop.run_in_executor(ex, lambda: threading.current_thread().name),
        )

    value, name = run(main)
    assert value == 5
    assert name.startswith("uv-rie_")


def test_run_in_executor_cpu_executor(cpu_executor: Any) -> None:
    ex = cpu_executor(2)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(ex, add, i, 1) for i in range(50)))

    assert run(main) == [i + 1 for i in range(50)]


def test_set_default_executor(thread_executor: Any) -> None:
    ex = thread_executor(4, thread_name_prefix="uv-default")

    async def main() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        name = lambda: threading.current_thread().name  # noqa: E731
        return await asyncio.to_thread(name), await loop.run_in_executor(None, name)

    a, b = run(main)
    assert a.startswith("uv-default_")
    assert b.startswith("uv-default_")


def test_executor_run_awaitable(thread_executor: Any, cpu_executor: Any) -> None:
    tex, cex = thread_executor(2), cpu_executor(2)

    async def main() -> tuple[int, int]:
        return await tex.run(add, 1, 1), await cex.run(add, 2, 2)

    assert run(main) == (2, 4)
