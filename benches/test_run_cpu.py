"""CPU offload: rustpool.run_cpu beside ProcessPoolExecutor and ThreadPoolExecutor.

run_cpu uses the default CPU pool, whose isolation is "auto": "interpreter" (own-GIL
subinterpreters) on CPython 3.13+, "thread" (threads of this interpreter) on 3.11/3.12. Every
run_cpu entry is labelled with the mode it resolved to here (``default_cpu_executor().isolation``).
"thread" runs work in parallel only while that work releases the GIL (hashlib over a large
buffer, zlib, numpy): there the pure-Python fib group shows that it does NOT parallelise Python
bytecode (about 1x of serial) and that such work lags the event loop, as any thread pool does.
"interpreter" runs the fib group in parallel too (like the process pool); test_interpreter.py
compares it in detail.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from _workloads import BUF, FIB_N, fib, noop, sha256_of, sha256_prebuilt

import rustpool

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SEQ_CALLS = 500
JOBS = 8
# The mode run_cpu's default pool resolved to on this Python ("auto" -> "interpreter" on 3.13+,
# "thread" before): every run_cpu label says it, so the tables stay honest on each version.
RUN_CPU_MODE = rustpool.default_cpu_executor().isolation
RUN_CPU = f'rustpool.run_cpu (isolation="{RUN_CPU_MODE}")'


@pytest.fixture(scope="module")
def ppe() -> Iterator[ProcessPoolExecutor]:
    """A warm process pool, one worker per core, made once for the module.

    forkserver, not fork: this process already runs rustpool's threads, and 3.12+ warns (an error
    under filterwarnings=error) about forking a multi-threaded process.
    """
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ex = ProcessPoolExecutor(max_workers=CORES, mp_context=multiprocessing.get_context(method))
    # Workers start on demand: occupy them all at once so every one is up and has imported.
    list(ex.map(fib, [22] * (CORES * 2)))
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def tpe() -> Iterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="bench-tpe")
    yield ex
    ex.shutdown(wait=True)


def caller(
    impl: str, loop: asyncio.AbstractEventLoop, ppe: ProcessPoolExecutor, tpe: ThreadPoolExecutor
) -> Callable[..., Any]:
    if impl.startswith("rustpool.run_cpu"):
        return rustpool.run_cpu
    if impl.startswith("run_in_executor(ProcessPoolExecutor"):
        return lambda fn, *a: loop.run_in_executor(ppe, fn, *a)
    if impl.startswith("run_in_executor(ThreadPoolExecutor"):
        return lambda fn, *a: loop.run_in_executor(tpe, fn, *a)
    raise AssertionError(impl)


@pytest.mark.parametrize("impl", [RUN_CPU, f"run_in_executor(ProcessPoolExecutor({CORES}))"])
def test_sequential_noop_latency(
    bench_async: Any, loop: asyncio.AbstractEventLoop, ppe: ProcessPoolExecutor, tpe: ThreadPoolExecutor, impl: str
) -> None:
    call = caller(impl, loop, ppe, tpe)

    async def workload() -> None:
        for _ in range(SEQ_CALLS):
            await call(noop)

    bench_async(
        workload,
        group=f"run_cpu: sequential no-op latency ({SEQ_CALLS} awaited calls per round)",
        impl=impl,
        role="rustpool" if impl.startswith("rustpool") else "anchor",
        ops=SEQ_CALLS,
        rounds=12,
    )


CPU_IMPLS = [
    "serial, in the loop thread",
    RUN_CPU,
    f"run_in_executor(ProcessPoolExecutor({CORES}))",
    f"run_in_executor(ThreadPoolExecutor({CORES}))",
]


def _role(impl: str) -> str:
    if impl.startswith("serial"):
        return "serial"
    if impl.startswith("rustpool"):
        return "rustpool"
    if impl.startswith("run_in_executor(ProcessPoolExecutor") and "sent" not in impl:
        return "anchor"
    return "other"


@pytest.mark.parametrize("impl", [*CPU_IMPLS, f"run_in_executor(ProcessPoolExecutor({CORES})), 8 MiB sent per call"])
def test_gil_releasing_sha256(
    bench_async: Any, loop: asyncio.AbstractEventLoop, ppe: ProcessPoolExecutor, tpe: ThreadPoolExecutor, impl: str
) -> None:
    if impl.startswith("serial"):

        async def workload() -> list[str]:
            return [sha256_prebuilt(i) for i in range(JOBS)]

    elif "sent per call" in impl:

        async def workload() -> list[str]:
            return await asyncio.gather(*(loop.run_in_executor(ppe, sha256_of, BUF, i) for i in range(JOBS)))

    else:
        call = caller(impl, loop, ppe, tpe)

        async def workload() -> list[str]:
            return await asyncio.gather(*(call(sha256_prebuilt, i) for i in range(JOBS)))

    out = bench_async(
        workload,
        group=f"CPU, GIL-releasing: hashlib.sha256 over 8 MiB x {JOBS} gathered",
        impl=impl,
        role=_role(impl),
        ops=JOBS,
        rounds=10,
        note=(
            (
                "hashlib releases the GIL while hashing, so threads (run_cpu, ThreadPoolExecutor) run it in "
                "parallel; the ProcessPoolExecutor anchor hashes a buffer each worker already holds"
                if RUN_CPU_MODE == "thread"
                else "hashlib releases the GIL while hashing, so ThreadPoolExecutor runs it in parallel; the "
                "ProcessPoolExecutor anchor and run_cpu's subinterpreters hash a buffer each worker already "
                "holds (built when the worker imports _workloads)"
            )
            + "; the '8 MiB sent' row pays pickling + pipe transfer of the buffer as real code would"
        )
        if impl.startswith("serial")
        else None,
    )
    assert out == [sha256_prebuilt(i) for i in range(JOBS)]


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_pure_python_fib(
    bench_async: Any, loop: asyncio.AbstractEventLoop, ppe: ProcessPoolExecutor, tpe: ThreadPoolExecutor, impl: str
) -> None:
    if impl.startswith("serial"):

        async def workload() -> list[int]:
            return [fib(FIB_N) for _ in range(JOBS)]

    else:
        call = caller(impl, loop, ppe, tpe)

        async def workload() -> list[int]:
            return await asyncio.gather(*(call(fib, FIB_N) for _ in range(JOBS)))

    out = bench_async(
        workload,
        group=f"CPU, pure Python (holds the GIL): fib({FIB_N}) x {JOBS} gathered",
        impl=impl,
        role=_role(impl),
        ops=JOBS,
        rounds=6,
        note=(
            'isolation="thread" does NOT parallelise pure-Python code on a GIL build: expect run_cpu ~1x of '
            "serial and a loop lag of the GIL switch interval (5 ms) or more; only the process pool scales"
            if RUN_CPU_MODE == "thread"
            else f'run_cpu resolved to isolation="{RUN_CPU_MODE}" here: own-GIL subinterpreters run pure Python '
            "in parallel like the process pool (expect ~cores x serial, a low loop lag); ThreadPoolExecutor "
            "shares the GIL (~1x of serial, a loop lag of the switch interval or more)"
        )
        if impl.startswith("serial")
        else None,
    )
    assert out == [fib(FIB_N)] * JOBS
