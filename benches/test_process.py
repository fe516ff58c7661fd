"""isolation="process": rustpool's worker processes beside the other process pools asyncio code uses.

Every group has ``rustpool.CpuExecutor(2, isolation="process")`` (awaited with ``.run``) beside
``run_in_executor(ProcessPoolExecutor(2))`` with the forkserver context (the anchor, as in
test_interpreter), with spawn and with fork, ``loky.get_reusable_executor(max_workers=2)`` through
``loop.run_in_executor`` and ``pebble.ProcessPool(max_workers=2)`` (``pool.schedule`` wrapped with
``asyncio.wrap_future``); the loky and pebble entries skip, with the reason, where they are not
installed (requirements-dev.txt installs both). Groups, in the order they run:

- cold start: a new pool each round, time to its first result (``abs``; the pool is shut down after
  the round, untimed). Its target is "no slower than ProcessPoolExecutor with spawn", so in this
  group the spawn entry has the role "anchor" (the summary takes each group's anchor from the
  entries' roles) and forkserver is an "other" entry; the ratio column is against spawn there.
- sequential round trip of a trivial call (``abs``), 300 awaited one after another: per-call time;
  target: at most 1/4 of the anchor's.
- 20,000 trivial calls gathered: throughput, target >= 5x the anchor's (with a floor entry: the same
  burst of coroutines with no offload at all).
- pure-Python fib(27) x 8 gathered: speedup over serial (the serial entry is measured in the same
  run), target >= 1.8x, and loop lag p99 < 2 ms, the bound test_interpreter's fib group and the
  README use: with both workers busy on a 2-core machine the loop's thread shares the cores with
  them, whatever the pool (every process pool here shows about 1.3-2.8 ms).

What workers can import: rustpool's workers start with the caller's ``sys.path`` (taken when the
pool is made); spawn, forkserver and loky children get it from multiprocessing's preparation data,
and fork children inherit everything, so all of them load ``_workloads`` from ``benches/`` (which
pytest puts on ``sys.path`` for this conftest).

Fork: forking a process that runs other threads can deadlock the child (a lock held by another
thread at the fork stays held forever in the child), and on 3.12+ ``os.fork`` warns about it with a
DeprecationWarning; under this project's ``filterwarnings = error`` that warning is turned into an
exception that CPython then discards, so nothing would show a fork that *was* unsafe. The fork
entries therefore check it themselves: every fork here happens only while this process runs a single
OS thread, counted in ``/proc/self/task`` (``threading.active_count()`` would miss rustpool's Rust
threads, which Python does not know about), and no subinterpreter is alive (on 3.13.0 a child forked
beside a live subinterpreter dies in its after-fork cleanup: seen after test_interpreter.py in the
same session, whose anyio.to_interpreter entries leave idle subinterpreters until exit); otherwise
they skip, saying which. So under ``make bench`` on 3.13 the fork entries skip (test_interpreter.py
runs first), and ``pytest benches/test_process.py`` on its own runs them.

- ProcessPoolExecutor with fork starts all its workers at its first submit, before its manager
  thread, and never forks again (a dead worker breaks the pool instead): one warm-up call at that
  moment is its only fork. The warm pool's fixture is requested by every other pool fixture of the
  module, so it forks before any rustpool, forkserver, spawn, loky or pebble pool here exists
  (each of those starts threads in this process). If earlier modules of the session left threads
  (anyio's idle workers, say, which end after 10 s) it waits up to ``FORK_WAIT_S`` for them to end.
- Cold start with fork forks inside the timed region, every round. That is only safe while no
  other pool of this module is alive, so the cold-start group runs first (before any module-scoped
  pool, the warm fork pool included, whose manager thread runs until the module ends), every
  cold-start pool is shut down after its round (rustpool's, ProcessPoolExecutor's, loky's and
  pebble's threads all end on shutdown), and the fork entry checks, untimed, before its first round
  and after each round's shutdown that the process is single-threaded again (a single-threaded
  process cannot gain a thread between rounds without running code of its own).
- pebble's ProcessPool would use multiprocessing's default context (fork on Linux before 3.14) and
  forks its workers from its own manager thread while its other threads run: its entries pass the
  forkserver context, like the anchor. loky's own start method ("loky") starts a fresh interpreter
  through _posixsubprocess.fork_exec, as subprocess does: safe.

What a round of each group runs, and how many rounds, is shared with test_interpreter.py
(``_groups.py``); this module declares its entries, titles, targets and notes, and keeps the fork
checks: ``_groups.cold_start`` calls the fork entry's check, untimed, after each round's shutdown
when another round follows.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

import _groups as groups
import pytest
from _groups import FIB_N, FLOOR, FORKSERVER, GATHER_CALLS, JOBS, PPE, PPE_SPAWN, SEQ_CALLS, SERIAL, WORKERS
from _workloads import fib

import rustpool

try:
    import loky
except ImportError:
    loky = None

try:
    import pebble
except ImportError:
    pebble = None

# How long a fork entry waits for threads left by earlier modules of the session to end (anyio's
# idle worker threads end after 10 s) before it skips.
FORK_WAIT_S = 12.0

RP = f'rustpool CpuExecutor({WORKERS}, isolation="process").run'
PPE_FORK = f"run_in_executor(ProcessPoolExecutor({WORKERS}), fork)"
LOKY = f"run_in_executor(loky.get_reusable_executor(max_workers={WORKERS}))"
PEBBLE = f"wrap_future(pebble.ProcessPool({WORKERS}, forkserver).schedule)"
ROLES = {RP: "rustpool", PPE: "anchor", SERIAL: "serial", FLOOR: "floor"}
# Cold start is held to ProcessPoolExecutor with spawn: there it is the anchor.
COLD_ROLES = {RP: "rustpool", PPE_SPAWN: "anchor"}

CONTEXTS = {PPE: FORKSERVER, PPE_SPAWN: "spawn", PPE_FORK: "fork"}

POOLED = [RP, PPE, PPE_SPAWN, PPE_FORK, LOKY, PEBBLE]


def _skip_reason(impl: str) -> str | None:
    if impl == LOKY and loky is None:
        return "loky is not installed here (pip install loky; requirements-dev.txt lists it)"
    if impl == PEBBLE and pebble is None:
        return "pebble is not installed here (pip install pebble; requirements-dev.txt lists it)"
    if impl == PPE_FORK and "fork" not in multiprocessing.get_all_start_methods():
        return f"multiprocessing has no fork start method on {sys.platform}"
    return None


# ---------------------------------------------------------------- fork safety


def _os_threads() -> int:
    """Threads of this process as the OS counts them (rustpool's Rust threads included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: only the threads Python knows about
        return threading.active_count()


def _subinterpreters() -> int:
    """Subinterpreters alive in this process besides the main one (made by anyone, C API included)."""
    for name in ("_interpreters", "_xxsubinterpreters"):  # 3.13+, before
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return len(mod.list_all()) - 1
    return 0


def _fork_unsafe(wait_s: float) -> str | None:
    """None when forking this process now is safe, else why not: a thread besides this one (waited
    for up to ``wait_s``: leftovers of earlier modules may be ending) or a live subinterpreter."""
    n_interp = _subinterpreters()
    if n_interp > 0:
        # Seen on 3.13.0 after test_interpreter.py in the same session: anyio.to_interpreter keeps
        # its idle subinterpreters until exit, and every forked child died in its after-fork
        # cleanup ("Fatal Python error: PyThreadState_Get: ... the GIL is released").
        return (
            f"not forked: {n_interp} subinterpreter(s) alive in this process (anyio.to_interpreter keeps "
            "its idle ones until exit, e.g. after test_interpreter.py), and a child forked beside them "
            f"dies in CPython {sys.version.split()[0]}'s after-fork cleanup (Fatal Python error: "
            "PyThreadState_Get); run this module on its own"
        )
    deadline = time.monotonic() + wait_s
    n = _os_threads()
    while n > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        n = _os_threads()
    if n <= 1:
        return None
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    return (
        f"not forked: this process runs {n} threads (Python knows of {names or 'none of them'}; the rest "
        f"are native, e.g. a live rustpool pool's) after waiting {wait_s:g} s, and forking a "
        "multi-threaded process can deadlock the child; run this module on its own"
    )


# ---------------------------------------------------------------- pools shared by the module


@pytest.fixture(scope="module")
def ppe_fork() -> Iterator[ProcessPoolExecutor | str]:
    """The warm fork pool, or why there is none. Every other pool fixture requests this one, so its
    workers are forked (at its first submit, all of them, before its manager thread starts) before
    any other pool of this module has started a thread in this process."""
    reason = _skip_reason(PPE_FORK) or _fork_unsafe(FORK_WAIT_S)
    if reason is not None:
        yield reason
        return
    ex = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("fork"))
    try:
        groups.warm(ex)
    except Exception as e:  # BrokenProcessPool: a child died; the other entries must still run
        ex.shutdown(wait=True)
        yield f"the fork pool broke while starting: {type(e).__name__}: {e}"
        return
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def rp(ppe_fork: Any) -> Iterator[rustpool.CpuExecutor]:
    ex = groups.warm_rustpool("process", "bench-proc")
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def ppe(ppe_fork: Any) -> Iterator[ProcessPoolExecutor]:
    ex = groups.warm_ppe(CONTEXTS[PPE])
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def ppe_spawn(ppe_fork: Any) -> Iterator[ProcessPoolExecutor]:
    ex = groups.warm_ppe(CONTEXTS[PPE_SPAWN])
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture(scope="module")
def loky_ex(ppe_fork: Any) -> Iterator[Executor]:
    assert loky is not None
    # Idle workers stay 10 minutes (loky's default is 10 s: a re-warm racing that timeout once
    # broke the executor with a warning, an error under this project's filterwarnings).
    ex = loky.get_reusable_executor(max_workers=WORKERS, timeout=600)
    groups.warm(ex)
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture
def loky_warm(loky_ex: Executor) -> Executor:
    """loky's executor with its workers started, untimed (they are kept 10 minutes idle; this
    makes sure of it)."""
    groups.warm(loky_ex)
    return loky_ex


def _pebble_pool() -> Any:
    assert pebble is not None
    return pebble.ProcessPool(max_workers=WORKERS, context=multiprocessing.get_context(FORKSERVER))


def _pebble_call(pool: Any) -> groups.Call:
    return lambda fn, *a: asyncio.wrap_future(pool.schedule(fn, args=a))


@pytest.fixture(scope="module")
def pebble_schedule(ppe_fork: Any) -> Iterator[groups.Call]:
    """A warm pebble pool's ``schedule``, awaitable."""
    pool = _pebble_pool()
    futures: list[Future[int]] = [pool.schedule(fib, args=(20,)) for _ in range(WORKERS * 2)]
    for f in futures:
        f.result()
    yield _pebble_call(pool)
    pool.close()
    pool.join()


POOLS = {
    RP: "rp",
    PPE: "ppe",
    PPE_SPAWN: "ppe_spawn",
    PPE_FORK: "ppe_fork",
    LOKY: "loky_warm",
    PEBBLE: "pebble_schedule",
}


def caller(impl: str, request: pytest.FixtureRequest) -> groups.Call:
    """``call(fn, *args) -> awaitable`` for an entry (its pool made on first use)."""
    return groups.caller(impl, request, POOLS, _skip_reason)


# ---------------------------------------------------------------- cold start (first: see the docstring)


def _cold_pool(impl: str, loop: asyncio.AbstractEventLoop) -> tuple[groups.Call, Callable[[], None]]:
    """A new pool: ``(call, shutdown)``."""
    if impl == RP:
        ex = rustpool.CpuExecutor(WORKERS, isolation="process", thread_name_prefix="bench-proc-cold")
        return ex.run, ex.shutdown
    if impl in (PPE, PPE_SPAWN, PPE_FORK):
        pe = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(CONTEXTS[impl]))
        return groups.executor_call(loop, pe), pe.shutdown
    if impl == LOKY:
        assert loky is not None
        # The reusable executor of the previous round was shut down: this makes a new one.
        le = loky.get_reusable_executor(max_workers=WORKERS)
        return groups.executor_call(loop, le), le.shutdown
    if impl == PEBBLE:
        pool = _pebble_pool()

        def close() -> None:
            pool.close()
            pool.join()

        return _pebble_call(pool), close
    raise AssertionError(impl)


def _fork_safe_again(rounds_done: int) -> None:
    """Between cold-start rounds of the fork entry: the next round forks, so this process must be
    single-threaded again (the pool just shut down joined its manager thread; nothing runs between
    here and the next fork)."""
    reason = _fork_unsafe(2.0)
    if reason is not None:
        pytest.skip(f"after round {rounds_done}: {reason}")


@pytest.mark.parametrize("impl", POOLED)
def test_cold_start(bench_async: Any, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    groups.skip_if(_skip_reason(impl))
    if impl == PPE_FORK:
        groups.skip_if(_fork_unsafe(FORK_WAIT_S))
    groups.cold_start(
        bench_async,
        lambda: _cold_pool(impl, loop),
        before_next_round=_fork_safe_again if impl == PPE_FORK else None,
        group=f"process: cold start, make a pool of {WORKERS} -> first result (abs)",
        impl=impl,
        role=COLD_ROLES.get(impl, "other"),
        target_ratio=1.0,
        target="time to first result no slower than ProcessPoolExecutor with spawn (this group's anchor)",
        note=(
            "a new pool each round, shut down after it untimed. The anchor here is ProcessPoolExecutor "
            "with spawn (the target); forkserver's server process is started once per parent (by its "
            "warm-up round or an earlier module), so its rows do not include it. ProcessPoolExecutor "
            "with spawn or forkserver starts a worker per submit that finds none idle (one here), with fork "
            f"all {WORKERS} at its first submit; rustpool starts its {WORKERS} `python -c` workers. "
            "The fork entry forks inside the timed region, only while this process is single-threaded "
            "(checked, untimed, between rounds)"
        )
        if impl == RP
        else None,
    )


# ---------------------------------------------------------------- sequential round trip


@pytest.mark.parametrize("impl", POOLED)
def test_sequential_round_trip(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    groups.sequential_round_trip(
        bench_async,
        caller(impl, request),
        group=f"process: sequential round trip, abs(int) ({SEQ_CALLS} awaited calls per round)",
        impl=impl,
        role=ROLES.get(impl, "other"),
        target_ratio=4.0,
        target="per call at most 1/4 of the anchor's",
    )


# ---------------------------------------------------------------- 20,000 gathered


@pytest.mark.parametrize("impl", [*POOLED, FLOOR])
def test_gathered_throughput(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    groups.gathered_throughput(
        bench_async,
        caller(impl, request),
        group=f"process: {GATHER_CALLS:,} trivial calls (abs) gathered",
        impl=impl,
        role=ROLES.get(impl, "other"),
        target_ratio=5.0,
        target="throughput >= 5x the anchor's",
    )


# ---------------------------------------------------------------- fib(27) x 8


@pytest.mark.parametrize("impl", [SERIAL, *POOLED])
def test_fib_gathered(bench_async: Any, request: pytest.FixtureRequest, impl: str) -> None:
    groups.fib_gathered(
        bench_async,
        None if impl == SERIAL else caller(impl, request),
        group=f"process: pure Python fib({FIB_N}) x {JOBS} gathered, {WORKERS} workers",
        impl=impl,
        role=ROLES.get(impl, "other"),
        target_serial=1.8,
        note=(
            "the fork pool's workers were forked once, at the module's first warm pool (before any "
            "other pool of the module), so no fork happens here; pebble runs with forkserver"
        )
        if impl == SERIAL
        else None,
    )
