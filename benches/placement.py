"""Where "auto" places work, measured: CpuExecutor's default beside its fixed modes and the stdlib.

For each workload, 8 calls gathered on 2 workers, the speedup over running them one after another
in the loop's thread (serial, measured in the same run; above 1.0 is faster), for:
``CpuExecutor(2)`` (auto, after its sampling calls: one untimed round first), ``isolation="thread"``,
every call isolated (``learn=False``: interpreter on 3.13+ with processes for what
subinterpreters refuse, process before: the default before placement was learnt), and
``ProcessPoolExecutor(2)``
(forkserver). Workloads: sha256 of 32 MiB handed in (GIL released, big argument), numpy 700x700
products (GIL released, small arguments), fib(27) (pure Python), JSON parsing of a 2 MB
document (the json module holds the GIL), Pillow thumbnails of a 1600x1600 image (GIL released
in resampling and codecs). Also what the sampling cost: the first (sampled) round's time against
the learnt rounds', and the loop's lag (p99 of a 1 ms ticker) during each.

Run: ``python benches/placement.py [rounds]`` (median of the rounds per cell; default 3).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import _workloads as w

import rustpool

JOBS = 8
ISOLATED = "interpreter" if sys.version_info >= (3, 13) else "process"


def workloads() -> dict[str, tuple[Callable[..., Any], tuple[Any, ...]]]:
    doc = json.dumps({"rows": [{"n": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(40_000)]})
    size = 1600
    raw = os.urandom(size * size * 3)
    made: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "sha256 32 MiB": (w.sha256_of, (os.urandom(32 << 20), 1)),
        "fib(27)": (w.fib, (27,)),
        "json 2 MB": (w.json_crunch, (doc,)),
    }
    try:
        import numpy  # noqa: F401

        made["numpy matmul 700"] = (w.matmul, (700,))
    except ImportError:
        print("numpy matmul: skipped (numpy not installed; requirements-dev.txt has it)")
    try:
        import PIL  # noqa: F401

        made["Pillow thumbnail"] = (w.thumbnail, (raw, size))
    except ImportError:
        print("Pillow thumbnail: skipped (pillow not installed; requirements-dev.txt has it)")
    return made


async def lagged(coro: Any) -> tuple[float, float]:
    """(wall seconds of ``coro``, loop lag p99 in ms while it ran)."""
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - t - 0.001) * 1e3)

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await coro
    wall = time.perf_counter() - t0
    done = True
    await tick
    lags.sort()
    return wall, lags[int(0.99 * (len(lags) - 1))] if lags else 0.0


def runner(ex: Executor) -> Callable[..., Any]:
    if isinstance(ex, rustpool.CpuExecutor):
        return ex.run
    loop = asyncio.get_running_loop()
    return lambda fn, *args: loop.run_in_executor(ex, fn, *args)


async def batch(run: Callable[..., Any], fn: Callable[..., Any], args: tuple[Any, ...], warm: bool = False) -> None:
    # The warm-up round may meet a first call that refuses subinterpreters (numpy, Pillow): it
    # fails once, and the pool sends the function to processes from then on.
    await asyncio.gather(*(run(fn, *args) for _ in range(JOBS)), return_exceptions=warm)


async def main(rounds: int) -> None:
    print(f"Python {sys.version.split()[0]}, {JOBS} calls gathered on 2 workers, median of {rounds} rounds")
    print("speedup over serial (lag p99 ms) | auto's first round (sampling): wall x learnt, lag")
    header = f"{'workload':18} {'auto':>13} {'thread':>13} {'isolated':>13} {'PPE(2)':>13} | {'1st round':>16}"
    print(header)
    for label, (fn, args) in workloads().items():
        serial = []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(JOBS):
                fn(*args)
            serial.append(time.perf_counter() - t)
        base = statistics.median(serial)
        cells = []
        first = ""
        pools: list[tuple[str, Callable[[], Executor]]] = [
            ("auto", lambda: rustpool.CpuExecutor(2)),
            ("thread", lambda: rustpool.CpuExecutor(2, isolation="thread")),
            # "auto" without learning: every call isolated (processes for what subinterpreters
            # refuse), the default before placement was learnt.
            ("isolated", lambda: rustpool.CpuExecutor(2, learn=False)),
            ("ppe", lambda: ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))),
        ]
        for name, make in pools:
            ex = make()
            run = runner(ex)
            # Warm: workers started (and, for auto, the function sampled and placed).
            warm_wall, warm_lag = await lagged(batch(run, fn, args, warm=True))
            walls, lags = [], []
            for _ in range(rounds):
                wall, lag = await lagged(batch(run, fn, args))
                walls.append(wall)
                lags.append(lag)
            med = statistics.median(walls)
            cells.append(f"{base / med:5.2f}x ({statistics.median(lags):4.1f})")
            if name == "auto":
                placed = ex.placements().get(f"{fn.__module__}.{fn.__qualname__}", {}).get("isolation", "?")  # type: ignore[attr-defined]
                first = f"{warm_wall / med:4.1f}x, {warm_lag:4.1f} ms -> {placed}"
            ex.shutdown()
        print(f"{label:18} {cells[0]:>13} {cells[1]:>13} {cells[2]:>13} {cells[3]:>13} | {first}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
