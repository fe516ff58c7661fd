"""pool.stats() and repr(pool): the counts after a known sequence of successes, failures,
cancels, timeouts and a crashed worker, on each kind of pool; the times once calls ran."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest

import rustpool

from . import proc_helpers as ph
from .conftest import WAIT


def settle_counts(pool: rustpool.CpuExecutor | rustpool.ThreadExecutor) -> rustpool.PoolStats:
    """The stats once no call is queued or running (a settled future's counts land just before
    the future is settled; this also waits out the last worker's bookkeeping)."""
    deadline = time.monotonic() + WAIT
    while True:
        s = pool.stats()
        if s.queued == 0 and s.running == 0:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.01)


def test_a_process_pool_counts_successes_failures_a_cancel_a_timeout_and_a_crashed_worker() -> None:
    with rustpool.CpuExecutor(1, isolation="process") as pool:
        assert [pool.submit(ph.add, i, 1).result(WAIT) for i in range(5)] == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError):
            pool.submit(ph.fail, "no").result(WAIT)
        # One worker, busy: the call behind it is queued, and cancelled before it begins.
        busy = pool.submit(ph.sleep_then, 0.5, 7)
        behind = pool.submit(ph.add, 1, 1)
        assert behind.cancel()
        assert busy.result(WAIT) == 7
        with pytest.raises(rustpool.WorkerCrashed):
            pool.submit(ph.exit_with, 3).result(WAIT)
        with pytest.raises(TimeoutError):
            pool.options(timeout=0.3).submit(ph.sleep_then, 30, 1).result(WAIT)
        assert pool.submit(ph.add, 2, 2).result(WAIT) == 4
        s = settle_counts(pool)
    assert (s.done, s.failed, s.cancelled) == (7, 3, 1)  # 5 + sleeper + last; fail, crash, timeout
    assert (s.crashed, s.replaced) == (1, 2)  # the crash; the crash and the timeout's kill
    assert s.queued == s.running == s.busy == 0
    assert s.workers == 1 and s.idle == 1
    assert s.run_median is not None and s.run_p99 is not None and s.run_p99 >= 0.3 * 0.9
    assert s.wait_median is not None and s.wait_p99 is not None


def test_a_thread_pool_counts_its_calls_and_its_threads() -> None:
    arrived = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        arrived.wait(WAIT)
        release.wait(WAIT)

    with rustpool.ThreadExecutor(4) as pool:
        assert [f.result(WAIT) for f in [pool.submit(ph.add, i, 1) for i in range(10)]] == list(range(1, 11))
        with pytest.raises(ValueError):
            pool.submit(ph.fail, "no").result(WAIT)
        running = [pool.submit(hold) for _ in range(2)]  # two calls running at once, seen as such
        arrived.wait(WAIT)
        during = pool.stats()
        release.set()
        [f.result(WAIT) for f in running]
        s = settle_counts(pool)
    assert during.running == 2 and during.busy == 2 and during.workers >= 2
    assert (s.done, s.failed, s.cancelled) == (12, 1, 0)
    assert s.workers >= 1 and (s.crashed, s.replaced) == (0, 0)


def test_awaited_calls_cancelled_before_they_begin_count_as_cancelled() -> None:
    async def main() -> rustpool.PoolStats:
        with rustpool.CpuExecutor(1, isolation="thread") as pool:
            gate = threading.Event()
            first = asyncio.ensure_future(pool.run(gate.wait, WAIT))
            queued = [asyncio.ensure_future(pool.run(time.sleep, 0)) for _ in range(3)]
            await asyncio.sleep(0.05)
            for q in queued:
                q.cancel()
            gate.set()
            assert await first is True
            for q in queued:
                with pytest.raises(asyncio.CancelledError):
                    await q
            return settle_counts(pool)

    s = asyncio.run(main())
    assert (s.done, s.failed, s.cancelled) == (1, 0, 3)


def test_shutdown_with_cancel_futures_counts_the_queued_calls_as_cancelled() -> None:
    pool = rustpool.CpuExecutor(1, isolation="thread")
    gate = threading.Event()
    busy = pool.submit(gate.wait, WAIT)
    deadline = time.monotonic() + WAIT
    while pool.stats().running < 1:  # it has begun: shutdown cannot cancel it any more
        assert time.monotonic() < deadline
        time.sleep(0.005)
    queued = [pool.submit(ph.add, i, 1) for i in range(4)]
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert busy.result(WAIT) is True
    for f in queued:
        with pytest.raises(CancelledError):
            f.result(WAIT)
    s = settle_counts(pool)
    assert (s.done, s.cancelled, s.queued, s.running) == (1, 4, 0, 0)


def test_repr_shows_workers_busy_queued_and_outcomes_and_no_longer_active() -> None:
    with rustpool.CpuExecutor(2, isolation="thread") as pool:
        pool.submit(ph.add, 1, 1).result(WAIT)
        settle_counts(pool)
        text = repr(pool)
    assert "workers=2" in text and "busy=0" in text and "queued=0" in text and "done=1" in text
    assert "active=" not in text
    assert "shutdown" in repr(pool)


def test_stats_before_any_call_have_no_times() -> None:
    with rustpool.ThreadExecutor(2) as pool:
        s = pool.stats()
    assert (s.done, s.failed, s.cancelled, s.queued, s.running) == (0, 0, 0, 0, 0)
    assert s.wait_median is s.wait_p99 is s.run_median is s.run_p99 is None
