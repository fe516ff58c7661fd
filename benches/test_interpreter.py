"""isolation="interpreter": rustpool's own-GIL subinterpreter workers beside the other ways to run
Python code in parallel from asyncio (CPython 3.13+; the whole module is skipped before 3.13).

Every group has ``rustpool.CpuExecutor(2, isolation="interpreter")`` (awaited with ``.run``) beside
``run_in_executor(ProcessPoolExecutor(2))`` (forkserver: the anchor), ``run_in_executor(
ThreadPoolExecutor(2))``, ``anyio.to_interpreter.run_sync`` (when this anyio has it) and
``concurrent.futures.InterpreterPoolExecutor`` (only where it exists: 3.14+). Groups:

- fib(27) x 8 gathered: speedup over serial (measured in the same run) and loop lag;
- sequential round trip of a trivial call (``abs``): per-call time;
- 20,000 trivial calls gathered: throughput;
- cold start: a new pool each round, time to its first result (the pool is shut down after the
  round, untimed);
- memory per worker: RSS growth of this process for rustpool (its workers live here), the
  children's RSS (and PSS) for the process pools; a warm pool of 2, one call per worker.

What workers can import: rustpool's workers start with the caller's ``sys.path`` (taken when the
pool is made), and forkserver children get it from multiprocessing, so both load ``_workloads``
from ``benches/`` (which pytest puts on ``sys.path`` for this conftest). anyio's and the stdlib's
subinterpreters start with the *startup* ``sys.path`` only, which under ``python -m pytest`` run
from the repository root holds the root (not ``benches/``): their fib entries get the same function
as ``benches._workloads.fib`` (the same code, under a name they can import), and skip with the
reason where that is not importable.

What a round of the fib, sequential, gathered and cold-start groups runs (and how many rounds) is
shared with test_process.py (``_groups.py``); this module declares its entries, titles, targets and
notes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import _groups as groups
import pytest
from _groups import FIB_N, FLOOR, FORKSERVER, GATHER_CALLS, JOBS, PPE, PPE_SPAWN, SEQ_CALLS, SERIAL, WORKERS
from _workloads import fib

import rustpool

if sys.version_info < (3, 13):
    pytest.skip(
        f'isolation="interpreter" needs CPython 3.13+ (own-GIL subinterpreters); this is '
        f'{sys.version.split()[0]}, where run_cpu/CpuExecutor() resolve to isolation="thread"',
        allow_module_level=True,
    )

try:
    import benches._workloads as pkg_workloads  # the name anyio's / the stdlib's subinterpreters can import
except ImportError:
    pkg_workloads = None

try:
    import anyio.to_interpreter as anyio_interp
except ImportError:
    anyio_interp = None

InterpreterPoolExecutor = getattr(concurrent.futures, "InterpreterPoolExecutor", None)

# anyio.to_interpreter makes one subinterpreter per call that finds none idle (its limiter bounds
# the calls running, not the interpreters made), so 20,000 gathered calls would make thousands of
# them: its gathered entry keeps at most this many calls in flight.
ANYIO_IN_FLIGHT = WORKERS

RP = f'rustpool CpuExecutor({WORKERS}, isolation="interpreter").run'
TPE = f"run_in_executor(ThreadPoolExecutor({WORKERS}))"
ANYIO = "anyio.to_interpreter.run_sync"
IPE = f"run_in_executor(InterpreterPoolExecutor({WORKERS}))"
ROLES = {RP: "rustpool", PPE: "anchor", SERIAL: "serial", FLOOR: "floor"}


def _skip_reason(impl: str) -> str | None:
    if impl == ANYIO:
        if anyio_interp is None:
            import anyio

            return f"anyio {getattr(anyio, '__version__', '?')} has no anyio.to_interpreter"
    if impl == IPE and InterpreterPoolExecutor is None:
        return f"concurrent.futures.InterpreterPoolExecutor does not exist on {sys.version.split()[0]} (3.14+)"
    return None


PKG_REASON = (
    "benches._workloads is not importable (run `python -m pytest benches` from the repository root): "
    "these subinterpreters start with the startup sys.path, not the caller's"
)


# ---------------------------------------------------------------- memory: reading /proc


def _status_kib(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def _pss_kib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _self_rss_kib() -> float:
    return _status_kib("self", "VmRSS")


# ---------------------------------------------------------------- pools shared by a module


@pytest.fixture(scope="module")
def rp() -> Iterator[rustpool.CpuExecutor]:
    ex = groups.warm_rustpool("interpreter", "bench-interp")
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def ppe() -> Iterator[ProcessPoolExecutor]:
    """forkserver, as in test_run_cpu: fork is unsafe (and warns) in a process running threads."""
    ex = groups.warm_ppe(FORKSERVER)
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def tpe() -> Iterator[ThreadPoolExecutor]:
    ex = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bench-interp-tpe")
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def ipe() -> Iterator[Executor | None]:
    if InterpreterPoolExecutor is None:
        yield None
        return
    ex = InterpreterPoolExecutor(max_workers=WORKERS)
    list(ex.map(abs, range(WORKERS * 2)))
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def anyio_run(loop: asyncio.AbstractEventLoop) -> groups.Call | str:
    """anyio.to_interpreter.run_sync when it runs here, else why not (anyio keeps its
    subinterpreters per event loop, so this warms the module's loop)."""
    reason = _skip_reason(ANYIO)
    if reason is not None:
        return reason
    assert anyio_interp is not None

    async def probe() -> int:
        return await anyio_interp.run_sync(abs, -1)

    try:
        loop.run_until_complete(probe())
    except Exception as e:  # BrokenWorkerInterpreter
        return f"anyio.to_interpreter does not run here: {type(e).__name__}: {e}"
    return anyio_interp.run_sync


@pytest.fixture(scope="module")
def pkg_fib_ready(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``check(impl)`` skips an anyio / InterpreterPoolExecutor fib entry whose workers cannot
    import benches._workloads (they start with the startup sys.path)."""

    def check(impl: str) -> None:
        if pkg_workloads is None:
            pytest.skip(PKG_REASON)
        if impl != ANYIO:
            return
        loop: asyncio.AbstractEventLoop = request.getfixturevalue("loop")
        assert anyio_interp is not None
        try:
            loop.run_until_complete(anyio_interp.run_sync(pkg_workloads.fib, 5))
        except Exception as e:  # ModuleNotFoundError raised in the worker
            pytest.skip(f"{PKG_REASON} ({type(e).__name__}: {e})")

    return check


POOLS = {RP: "rp", PPE: "ppe", TPE: "tpe", ANYIO: "anyio_run", IPE: "ipe"}


def caller(impl: str, request: pytest.FixtureRequest) -> groups.Call:
    """``call(fn, *args) -> awaitable`` for an entry (its pool made on first use)."""
    return groups.caller(impl, request, POOLS, _skip_reason)


def _fib_for(impl: str) -> Callable[[int], int]:
    # Workers that start with the startup sys.path get the same function under benches._workloads.
    if impl in (ANYIO, IPE):
        assert pkg_workloads is not None
        return pkg_workloads.fib
    return fib


POOLED = [RP, PPE, TPE, ANYIO, IPE]


# ---------------------------------------------------------------- memory per worker (first in the
# module: before this process has made and ended many subinterpreters)


def _new_pool(impl: str) -> Executor:
    if impl == RP:
        return rustpool.CpuExecutor(WORKERS, isolation="interpreter", thread_name_prefix="bench-cold")
    if impl == PPE:
        return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(FORKSERVER))
    if impl == PPE_SPAWN:
        return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
    if impl == IPE:
        assert InterpreterPoolExecutor is not None
        return InterpreterPoolExecutor(WORKERS)
    raise AssertionError(impl)


POOL_STARTS = [RP, PPE, PPE_SPAWN, IPE]


@pytest.mark.parametrize("impl", POOL_STARTS)
def test_memory_per_worker(bench_async: Any, benchmark: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    groups.skip_if(_skip_reason(impl))
    held: list[Executor] = []
    rounds: list[dict[str, float | None]] = []

    async def workload() -> None:
        before = _self_rss_kib()
        ex = _new_pool(impl)
        held.append(ex)
        # One call per worker, both at once: a process pool starts a worker per submit that finds
        # none idle, so this starts both; rustpool's workers both finish starting within it.
        await asyncio.gather(*(loop.run_in_executor(ex, time.sleep, 0.05) for _ in range(WORKERS)))
        growth = _self_rss_kib() - before
        m: dict[str, float | None] = {"self_growth_kib": growth}
        if isinstance(ex, ProcessPoolExecutor):
            pids = list(ex._processes)  # type: ignore[attr-defined]
            assert len(pids) == WORKERS, pids
            m["rss_kib"] = sum(_status_kib(p, "VmRSS") for p in pids) / WORKERS
            pss = [_pss_kib(p) for p in pids]
            m["pss_kib"] = None if None in pss else sum(pss) / WORKERS  # type: ignore[arg-type]
        else:
            m["rss_kib"] = growth / WORKERS
            m["pss_kib"] = None
        rounds.append(m)

    def teardown() -> None:
        while held:
            held.pop().shutdown(wait=True)
        gc.collect()  # here, untimed, not in the loop while the next round's pool starts

    gc.collect()
    bench_async(
        workload,
        group=f"memory per worker: start a pool of {WORKERS}, one call on each worker (time.sleep(0.05))",
        impl=impl,
        role=ROLES.get(impl, "other"),
        ops=1,
        rounds=3,
        warmup_rounds=0,
        lag_target_ms=None,
        teardown=teardown,
        note=(
            "rustpool: growth of this process's VmRSS (its workers are threads here) / workers; process "
            "pools: each child's VmRSS (PSS splits pages shared with the forkserver / other children), and "
            "the parent's own growth is in extra_info (parent_growth_mib). Median of 3 rounds, a new pool "
            "each (all rounds in extra_info). The time column is: make the pool, "
            "get both results."
        )
        if impl == RP
        else None,
    )
    # The median round: the first one in a full session can carry one-off growth of this process
    # that is not the pool's (seen: +2.5 MiB per worker once, then steady).
    mid = sorted(rounds, key=lambda r: r["rss_kib"] or 0)[len(rounds) // 2]
    rss = mid["rss_kib"]
    pss = mid["pss_kib"]
    benchmark.extra_info.update(
        rss_per_worker_mib=round(rss / 1024, 2) if rss is not None else None,
        pss_per_worker_mib=round(pss / 1024, 2) if pss is not None else None,
        mem_what=(
            "this process's VmRSS growth / workers"
            if impl in (RP, IPE)
            else "children's VmRSS, mean"
        ),
        rss_per_worker_mib_rounds=[round((r["rss_kib"] or 0) / 1024, 2) for r in rounds],
    )
    if impl in (PPE, PPE_SPAWN):
        benchmark.extra_info["parent_growth_mib"] = round((mid["self_growth_kib"] or 0) / 1024, 2)
    print(
        f"\n[mem] {impl}: {benchmark.extra_info['rss_per_worker_mib']} MiB/worker (median); "
        f"rounds {benchmark.extra_info['rss_per_worker_mib_rounds']}"
    )


# ---------------------------------------------------------------- fib(27) x 8


@pytest.mark.parametrize("impl", [SERIAL, *POOLED])
def test_fib_gathered(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    call = None if impl == SERIAL else caller(impl, request)
    if impl in (ANYIO, IPE):
        request.getfixturevalue("pkg_fib_ready")(impl)
    groups.fib_gathered(
        bench_async,
        call,
        fn=_fib_for(impl),
        group=f"interpreter: pure Python fib({FIB_N}) x {JOBS} gathered, {WORKERS} workers",
        impl=impl,
        role=ROLES.get(impl, "other"),
        target_serial=1.8,
        note=(
            f"{ANYIO}: one subinterpreter per call that finds none idle ({JOBS} here, made in the warm-up "
            f"round in the loop thread), {WORKERS} running at once (its default limiter = cores). "
            f"{TPE} shares the GIL: ~1x of serial."
        )
        if impl == SERIAL
        else None,
    )


# ---------------------------------------------------------------- sequential round trip


@pytest.mark.parametrize("impl", POOLED)
def test_sequential_round_trip(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    groups.sequential_round_trip(
        bench_async,
        caller(impl, request),
        group=f"interpreter: sequential round trip, abs(int) ({SEQ_CALLS} awaited calls per round)",
        impl=impl,
        role=ROLES.get(impl, "other"),
        target_ratio=5.0,
        target="per call at most 1/5 of the anchor's",
    )


# ---------------------------------------------------------------- 20,000 gathered


@pytest.mark.parametrize("impl", [*POOLED, FLOOR])
def test_gathered_throughput(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    call = caller(impl, request)
    label = impl
    if impl == ANYIO:
        label = f"{ANYIO}, at most {ANYIO_IN_FLIGHT} in flight"
        sem = asyncio.Semaphore(ANYIO_IN_FLIGHT)
        inner = call

        async def bounded(fn: Callable[..., Any], *a: Any) -> Any:
            async with sem:
                return await inner(fn, *a)

        call = bounded

    groups.gathered_throughput(
        bench_async,
        call,
        group=f"interpreter: {GATHER_CALLS:,} trivial calls (abs) gathered",
        impl=label,
        role=ROLES.get(impl, "other"),
        target_ratio=5.0,
        target="throughput >= 5x the anchor's",
        note=(
            f"{ANYIO} makes a subinterpreter for every call that finds none idle (its limiter bounds the "
            f"calls running, not the interpreters made): gathered unbounded, 20,000 calls would make "
            f"thousands, so its entry is held to {ANYIO_IN_FLIGHT} in flight by an asyncio.Semaphore"
        )
        if impl == RP
        else None,
    )


# ---------------------------------------------------------------- cold start


@pytest.mark.parametrize("impl", POOL_STARTS)
def test_cold_start(bench_async: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    groups.skip_if(_skip_reason(impl))

    def new_pool() -> tuple[groups.Call, Callable[[], None]]:
        ex = _new_pool(impl)
        return groups.executor_call(loop, ex), ex.shutdown

    groups.cold_start(
        bench_async,
        new_pool,
        group=f"interpreter: cold start, make a pool of {WORKERS} -> first result (abs)",
        impl=impl,
        role=ROLES.get(impl, "other"),
        note=(
            "a new pool each round, shut down after it untimed; forkserver's server process is started "
            "once per parent (by the warm-up round or an earlier test), so its rows do not include it; "
            "a process pool starts a worker per submit that finds none idle (one here), rustpool starts "
            f"all {WORKERS} subinterpreters at once (one after the other)"
        )
        if impl == RP
        else None,
    )
