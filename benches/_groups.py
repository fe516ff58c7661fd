"""The groups test_interpreter.py and test_process.py both run, written once.

Each of those modules declares its entries (labels, roles, the fixtures that give their pools),
its group titles, targets and notes, and hands them to the functions here, which own what a round
runs, how many rounds there are and what a round must return: a sequential round trip of ``abs``,
20,000 ``abs`` calls gathered, pure-Python ``fib(27)`` x 8 gathered (beside the same work run
inline) and the cold start of a new pool. ``target_ratio`` / ``target_serial`` are the rustpool
entry's: an entry of another role gets none (the summary reports targets for rustpool entries only).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import pytest
from _workloads import fib

import rustpool

WORKERS = 2
FIB_N = 27
JOBS = 8
SEQ_CALLS = 300
GATHER_CALLS = 20_000

PPE = f"run_in_executor(ProcessPoolExecutor({WORKERS}), forkserver)"
PPE_SPAWN = f"run_in_executor(ProcessPoolExecutor({WORKERS}), spawn)"
SERIAL = "serial, in the loop thread"
FLOOR = "floor: trivial coroutines gathered, abs called in the loop"

FORKSERVER = "forkserver" if sys.platform.startswith("linux") else "spawn"

Call = Callable[..., Awaitable[Any]]


def skip_if(reason: str | None) -> None:
    __tracebackhide__ = True  # pytest reports the skip at the caller's line, in its module
    if reason is not None:
        pytest.skip(reason)


def warm(ex: Executor) -> None:
    """Start every worker and let it import _workloads (occupy them all at once)."""
    list(ex.map(fib, [20] * (WORKERS * 2)))


def warm_rustpool(isolation: str, thread_name_prefix: str) -> rustpool.CpuExecutor:
    ex = rustpool.CpuExecutor(WORKERS, isolation=isolation, thread_name_prefix=thread_name_prefix)
    assert ex.isolation == isolation
    warm(ex)
    return ex


def warm_ppe(context: str) -> ProcessPoolExecutor:
    ex = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context(context))
    warm(ex)
    return ex


def executor_call(loop: asyncio.AbstractEventLoop, ex: Executor) -> Call:
    return lambda fn, *a: loop.run_in_executor(ex, fn, *a)


async def inline(fn: Callable[..., Any], *a: Any) -> Any:
    return fn(*a)


def caller(
    impl: str,
    request: pytest.FixtureRequest,
    pools: Mapping[str, str],
    skip_reason: Callable[[str], str | None],
) -> Call:
    """``call(fn, *args) -> awaitable`` for an entry. The floor's calls ``fn`` in the loop; a pooled
    entry skips with ``skip_reason(impl)`` when there is one, else its pool is the fixture
    ``pools[impl]`` (made on first use), which gives a rustpool CpuExecutor (awaited with ``.run``),
    another Executor (through ``loop.run_in_executor``), such a ``call`` already, or a string: why
    the entry skips here."""
    __tracebackhide__ = True  # as in skip_if
    if impl == FLOOR:
        return inline
    skip_if(skip_reason(impl))
    pool = request.getfixturevalue(pools[impl])
    if isinstance(pool, str):
        pytest.skip(pool)
    if isinstance(pool, rustpool.CpuExecutor):
        return pool.run
    if isinstance(pool, Executor):
        return executor_call(request.getfixturevalue("loop"), pool)
    assert callable(pool), (impl, pool)
    return pool


def _rustpool_only(role: str, target: float | None) -> float | None:
    return target if role == "rustpool" else None


def sequential_round_trip(
    bench_async: Any, call: Call, *, group: str, impl: str, role: str, target_ratio: float, target: str
) -> None:
    """``SEQ_CALLS`` calls of ``abs``, each awaited before the next: per-call time."""

    async def workload() -> None:
        for i in range(SEQ_CALLS):
            assert await call(abs, -i) == i

    bench_async(
        workload,
        group=group,
        impl=impl,
        role=role,
        ops=SEQ_CALLS,
        rounds=8,
        target_ratio=_rustpool_only(role, target_ratio),
        target=target,
    )


def gathered_throughput(
    bench_async: Any,
    call: Call,
    *,
    group: str,
    impl: str,
    role: str,
    target_ratio: float,
    target: str,
    note: str | None = None,
) -> None:
    """``GATHER_CALLS`` calls of ``abs`` gathered at once: throughput. The floor entry (``call`` is
    ``inline``) gathers as many coroutines that never leave the loop: what asyncio.gather and its
    tasks cost by themselves, and the loop lag any offload of such a burst starts from."""

    async def workload() -> list[int]:
        return await asyncio.gather(*(call(abs, -i) for i in range(GATHER_CALLS)))

    out = bench_async(
        workload,
        group=group,
        impl=impl,
        role=role,
        ops=GATHER_CALLS,
        rounds=3,
        target_ratio=_rustpool_only(role, target_ratio),
        target=target,
        note=note,
    )
    assert out == list(range(GATHER_CALLS))


def fib_gathered(
    bench_async: Any,
    call: Call | None,
    *,
    group: str,
    impl: str,
    role: str,
    target_serial: float,
    note: str | None = None,
    fn: Callable[[int], int] = fib,
) -> None:
    """``fib(FIB_N)`` ``JOBS`` times, gathered through ``call`` (``fn``: the workers' fib), or one
    after another in the loop thread when ``call`` is None (the serial entry): speedup over serial,
    and loop lag held to 2 ms."""
    if call is None:

        async def workload() -> list[int]:
            return [fib(FIB_N) for _ in range(JOBS)]

    else:

        async def workload() -> list[int]:
            return await asyncio.gather(*(call(fn, FIB_N) for _ in range(JOBS)))

    out = bench_async(
        workload,
        group=group,
        impl=impl,
        role=role,
        ops=JOBS,
        rounds=5,
        target_serial=_rustpool_only(role, target_serial),
        lag_target_ms=2.0,
        note=note,
    )
    assert out == [fib(FIB_N)] * JOBS


def cold_start(
    bench_async: Any,
    new_pool: Callable[[], tuple[Call, Callable[[], None]]],
    *,
    group: str,
    impl: str,
    role: str,
    target_ratio: float | None = None,
    target: str | None = None,
    note: str | None = None,
    before_next_round: Callable[[int], None] | None = None,
) -> None:
    """A new pool each round, timed from making it to its first result (``abs``). ``new_pool()``
    gives ``(call, shutdown)``; the pool is shut down after its round, untimed (in the round's
    teardown), and then ``before_next_round(rounds_done)`` runs, untimed, when another round
    follows."""
    rounds, warmup_rounds = 5, 1
    held: list[Callable[[], None]] = []
    rounds_done = 0

    async def workload() -> int:
        call, shutdown = new_pool()
        held.append(shutdown)
        return await call(abs, -1)

    def teardown() -> None:
        nonlocal rounds_done
        while held:
            held.pop()()
        rounds_done += 1
        if before_next_round is not None and rounds_done < warmup_rounds + rounds:
            before_next_round(rounds_done)

    out = bench_async(
        workload,
        group=group,
        impl=impl,
        role=role,
        ops=1,
        rounds=rounds,
        warmup_rounds=warmup_rounds,
        lag_target_ms=None,
        teardown=teardown,
        target_ratio=_rustpool_only(role, target_ratio),
        target=target,
        note=note,
    )
    assert out == 1
