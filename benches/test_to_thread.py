"""Blocking-I/O offload: rustpool.to_thread beside asyncio.to_thread and anyio.to_thread.run_sync.

Default pools on both sides: asyncio's default executor has min(32, cores + 4) threads (6 on 2
cores) and anyio's default limiter 40 tokens; rustpool's blocking pool grows to 512 threads. The
200-sleeps group adds ``run_in_executor(ThreadPoolExecutor(200))`` to show how much of that
difference is only the pool's size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
import pytest
from _workloads import SLEEP_S, noop, sleep_io

import rustpool

SEQ_CALLS = 500
GATHER_CALLS = 20_000
SLEEPS = 200

IMPLS = ["rustpool.to_thread", "asyncio.to_thread", "anyio.to_thread.run_sync"]
ROLES = {"rustpool.to_thread": "rustpool", "asyncio.to_thread": "anchor"}


@pytest.fixture(scope="module")
def tpe200() -> Iterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(max_workers=SLEEPS, thread_name_prefix="bench-tpe200")
    yield ex
    ex.shutdown(wait=True)


def caller(impl: str, loop: asyncio.AbstractEventLoop, tpe200: ThreadPoolExecutor | None = None) -> Callable[..., Any]:
    if impl == "rustpool.to_thread":
        return rustpool.to_thread
    if impl == "asyncio.to_thread":
        return asyncio.to_thread
    if impl == "anyio.to_thread.run_sync":
        return anyio.to_thread.run_sync
    if impl == "run_in_executor(ThreadPoolExecutor(200))":
        return lambda fn, *a: loop.run_in_executor(tpe200, fn, *a)
    raise AssertionError(impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_sequential_noop_latency(bench_async: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    call = caller(impl, loop)

    async def workload() -> None:
        for _ in range(SEQ_CALLS):
            await call(noop)

    bench_async(
        workload,
        group=f"to_thread: sequential no-op latency ({SEQ_CALLS} awaited calls per round)",
        impl=impl,
        role=ROLES.get(impl, "other"),
        ops=SEQ_CALLS,
        rounds=15,
        target_ratio=4.0 if impl == "rustpool.to_thread" else None,
        target="per-call latency <= 1/4 of asyncio.to_thread's (>= 4x)",
    )


FLOOR = "floor: trivial coroutines gathered, no thread"


async def _trivial(fn: Callable[[], Any]) -> None:
    return None


@pytest.mark.parametrize("impl", [*IMPLS, FLOOR])
def test_gathered_noops(bench_async: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    # The floor entry gathers as many coroutines that never leave the loop: what asyncio.gather
    # and the tasks cost by themselves, and the loop lag any offload of such a burst starts from.
    call = _trivial if impl == FLOOR else caller(impl, loop)

    async def workload() -> None:
        await asyncio.gather(*(call(noop) for _ in range(GATHER_CALLS)))

    bench_async(
        workload,
        group=f"to_thread: {GATHER_CALLS:,} no-ops gathered at once (throughput)",
        impl=impl,
        role="floor" if impl == FLOOR else ROLES.get(impl, "other"),
        ops=GATHER_CALLS,
        rounds=5,
        target_ratio=4.0 if impl == "rustpool.to_thread" else None,
        target="gathered throughput >= 4x asyncio.to_thread's",
    )


@pytest.mark.parametrize("impl", [*IMPLS, "run_in_executor(ThreadPoolExecutor(200))"])
def test_gathered_blocking_sleeps(
    bench_async: Any, loop: asyncio.AbstractEventLoop, tpe200: ThreadPoolExecutor, impl: str
) -> None:
    call = caller(impl, loop, tpe200)

    async def workload() -> None:
        await asyncio.gather(*(call(sleep_io) for _ in range(SLEEPS)))

    bench_async(
        workload,
        group=f"to_thread: {SLEEPS} blocking time.sleep({SLEEP_S * 1e3:g} ms) gathered (wall time)",
        impl=impl,
        role=ROLES.get(impl, "other"),
        ops=SLEEPS,
        rounds=6,
        target_ratio=10.0 if impl == "rustpool.to_thread" else None,
        target=">= 10x faster than asyncio.to_thread",
        note=(
            "pool sizes decide this group: asyncio's default executor has min(32, cores+4) threads, "
            "anyio 40 tokens, rustpool up to 512; the ThreadPoolExecutor(200) row is the like-for-like pool"
        )
        if impl == "asyncio.to_thread"
        else None,
    )
