"""What a function pickled by value costs: rustpool beside loky (the peer that pickles every call
with cloudpickle) and ProcessPoolExecutor (which cannot send such functions at all under spawn).

Where users write CPU work first (a notebook, ``python -c``, a script without a main guard),
functions cross by value. This runs, in one process and one run, for each pool: 300 sequential
awaited calls (per-call time) and 3,000 gathered calls (calls/s) of

- ``module``: a module-level function (pickled by name), the anchor's case;
- ``closure``: a closure over an int, pickled by value (rustpool pickles it once while what it
  reads stays the same);
- ``closure+list``: a closure over a list, pickled by value for every call (it may change in
  place).

Pools: ``CpuExecutor(2, isolation="process")``, ``CpuExecutor(2, isolation="interpreter")`` (3.13+),
``loky.get_reusable_executor(2)`` through ``loop.run_in_executor``, and
``ProcessPoolExecutor(2)`` (forkserver) for the module function only. Run:
``python benches/by_value.py [rounds]``; prints the median of the rounds per cell.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import rustpool

SEQ, GATHER = 300, 3_000


def module_fn(x: int) -> int:
    return x + 1


def cases() -> dict[str, Callable[[int], int]]:
    step = 1
    items = [1]

    def closure(x: int) -> int:
        return x + step

    def closure_list(x: int) -> int:
        return x + items[0]

    return {"module": module_fn, "closure": closure, "closure+list": closure_list}


def awaiter(ex: Executor) -> Callable[..., Awaitable[Any]]:
    if isinstance(ex, rustpool.CpuExecutor):
        return ex.run
    loop = asyncio.get_running_loop()
    return lambda fn, *args: loop.run_in_executor(ex, fn, *args)


async def seq_us(run: Callable[..., Awaitable[Any]], fn: Callable[[int], int]) -> float:
    t = time.perf_counter()
    for i in range(SEQ):
        await run(fn, i)
    return (time.perf_counter() - t) / SEQ * 1e6


async def gathered_per_s(run: Callable[..., Awaitable[Any]], fn: Callable[[int], int]) -> float:
    t = time.perf_counter()
    await asyncio.gather(*(run(fn, i) for i in range(GATHER)))
    return GATHER / (time.perf_counter() - t)


def pools() -> dict[str, Callable[[], Executor]]:
    made: dict[str, Callable[[], Executor]] = {"rustpool process": lambda: rustpool.CpuExecutor(2, isolation="process")}
    if sys.version_info >= (3, 13):
        made["rustpool interpreter"] = lambda: rustpool.CpuExecutor(2, isolation="interpreter")
    try:
        import loky  # type: ignore[import-untyped]

        made["loky"] = lambda: loky.get_reusable_executor(max_workers=2)
    except ImportError:
        print("loky: not installed (requirements-dev.txt), skipped")
    made["ProcessPoolExecutor"] = lambda: ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    return made


async def main(rounds: int) -> None:
    print(f"Python {sys.version.split()[0]}, {rounds} rounds, medians: us per sequential call / calls per s gathered")
    print(f"{'pool':22} {'function':13} {'seq us':>8} {'gathered/s':>11}")
    for name, make in pools().items():
        ex = make()
        run = awaiter(ex)
        for label, fn in cases().items():
            if name == "ProcessPoolExecutor" and label != "module":
                continue  # it pickles by name only: a closure fails
            await run(fn, 0)  # warm: workers started, fn loaded
            seq = statistics.median([await seq_us(run, fn) for _ in range(rounds)])
            thr = statistics.median([await gathered_per_s(run, fn) for _ in range(rounds)])
            print(f"{name:22} {label:13} {seq:8.1f} {thr:11.0f}")
        if name != "loky":
            ex.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
