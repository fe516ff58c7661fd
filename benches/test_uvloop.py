"""The to_thread latency and gathered-throughput comparisons again, on uvloop (if installed).

Only rustpool.to_thread and its anchor asyncio.to_thread: uvloop changes the cost of the loop's
thread-safe wake-up, which both depend on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _workloads import noop

import rustpool

uvloop = pytest.importorskip("uvloop")

SEQ_CALLS = 500
GATHER_CALLS = 20_000
IMPLS = {"rustpool.to_thread": rustpool.to_thread, "asyncio.to_thread": asyncio.to_thread}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = uvloop.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_asyncgens())
    lp.run_until_complete(lp.shutdown_default_executor())
    lp.close()


@pytest.mark.parametrize("impl", list(IMPLS))
def test_uvloop_sequential_noop_latency(bench_async: Any, impl: str) -> None:
    call = IMPLS[impl]

    async def workload() -> None:
        for _ in range(SEQ_CALLS):
            await call(noop)

    bench_async(
        workload,
        group=f"uvloop, to_thread: sequential no-op latency ({SEQ_CALLS} awaited calls per round)",
        impl=impl,
        role="rustpool" if impl.startswith("rustpool") else "anchor",
        ops=SEQ_CALLS,
        rounds=15,
        target_ratio=4.0 if impl.startswith("rustpool") else None,
        target="per-call latency <= 1/4 of asyncio.to_thread's (>= 4x)",
    )


@pytest.mark.parametrize("impl", list(IMPLS))
def test_uvloop_gathered_noops(bench_async: Any, impl: str) -> None:
    call = IMPLS[impl]

    async def workload() -> None:
        await asyncio.gather(*(call(noop) for _ in range(GATHER_CALLS)))

    bench_async(
        workload,
        group=f"uvloop, to_thread: {GATHER_CALLS:,} no-ops gathered at once (throughput)",
        impl=impl,
        role="rustpool" if impl.startswith("rustpool") else "anchor",
        ops=GATHER_CALLS,
        rounds=5,
        target_ratio=4.0 if impl.startswith("rustpool") else None,
        target="gathered throughput >= 4x asyncio.to_thread's",
    )
