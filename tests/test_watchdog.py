"""rustpool.watch_loop: a stall of the event loop is reported once when seen (with the loop
thread's frames and a hint) and once when it ends; a loop that does not stall is never reported;
the watchdog stops, restarts, and never holds the process at exit.

Stalls here are 0.3 s against a 0.1 s threshold, so that a busy machine (the loop's thread
descheduled for tens of milliseconds) does not change what is reported.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import rustpool

THRESHOLD = 0.1


async def sleeps_on_the_loop() -> None:
    time.sleep(0.3)  # the blocking call the reports must name


def spin(seconds: float) -> int:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:  # pure Python: holds the GIL
        n += 1
    return n


async def spins_on_the_loop() -> None:
    spin(0.3)


async def watched(body: Callable[[], Coroutine[Any, Any, None]]) -> list[rustpool.LoopBlock]:
    """Run ``body`` on the running loop under a watchdog, with quiet time around it so that the
    stall's end is seen; the reports it got."""
    got: list[rustpool.LoopBlock] = []
    dog = rustpool.watch_loop(THRESHOLD, on_block=got.append)
    try:
        await asyncio.sleep(0.1)
        await body()
        await asyncio.sleep(0.3)
    finally:
        dog.stop()
    return got


def test_time_sleep_on_the_loop_is_reported_once_with_its_line_and_the_to_thread_hint() -> None:
    got = asyncio.run(watched(sleeps_on_the_loop))
    assert [b.ended for b in got] == [False, True]
    seen, ended = got
    assert seen.culprit is not None
    assert seen.culprit.function == "sleeps_on_the_loop"
    assert seen.culprit.filename == __file__
    assert seen.culprit.lineno == sleeps_on_the_loop.__code__.co_firstlineno + 1
    assert seen.culprit.call == "time.sleep(0.3)"
    assert seen.hint is not None and "rustpool.to_thread(time.sleep" in seen.hint
    assert THRESHOLD <= seen.seconds < 0.3
    assert 0.25 <= ended.seconds < 1.0  # its total length, to a tick (10 ms) and the machine's noise
    assert ended.culprit == seen.culprit


def test_a_pure_python_busy_loop_is_reported_with_its_frame() -> None:
    got = asyncio.run(watched(spins_on_the_loop))
    assert [b.ended for b in got] == [False, True]
    frames = [f.function for f in got[0].frames]
    assert frames[-2:] == ["spins_on_the_loop", "spin"]
    assert got[0].hint is None  # not a known blocking call: no hint to give
    assert "spin" in str(got[0]) and "the event loop has been blocked" in str(got[0])


def test_a_loop_that_never_blocks_reports_nothing_over_five_seconds_of_ticks() -> None:
    async def busy_but_polite() -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            spin(0.002)  # short callbacks, many of them
            await asyncio.sleep(0)

    assert asyncio.run(watched(busy_but_polite)) == []


def test_reports_go_to_the_rustpool_watchdog_logger_by_default(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        dog = rustpool.watch_loop(THRESHOLD)
        await asyncio.sleep(0.05)
        await sleeps_on_the_loop()
        await asyncio.sleep(0.2)
        dog.stop()

    with caplog.at_level(logging.WARNING, logger="rustpool.watchdog"):
        asyncio.run(main())
    records = [r for r in caplog.records if r.name == "rustpool.watchdog"]
    assert len(records) == 2
    assert "has been blocked" in records[0].getMessage() and "sleeps_on_the_loop" in records[0].getMessage()
    assert "rustpool.to_thread(time.sleep" in records[0].getMessage()
    assert "was blocked for" in records[1].getMessage()


def test_a_stopped_watchdog_reports_nothing_and_a_restarted_one_reports_again() -> None:
    async def main() -> tuple[list[rustpool.LoopBlock], list[rustpool.LoopBlock]]:
        got: list[rustpool.LoopBlock] = []
        dog = rustpool.watch_loop(THRESHOLD, on_block=got.append)
        await asyncio.sleep(0.05)
        dog.stop()
        assert not dog.running
        await sleeps_on_the_loop()
        await asyncio.sleep(0.2)
        while_stopped = list(got)
        dog.start()
        assert dog.running
        await asyncio.sleep(0.05)
        await sleeps_on_the_loop()
        await asyncio.sleep(0.2)
        dog.stop()
        return while_stopped, got

    while_stopped, got = asyncio.run(main())
    assert while_stopped == []
    assert [b.ended for b in got] == [False, True]


def test_watching_a_loop_again_replaces_the_first_watchdog() -> None:
    async def main() -> tuple[list[rustpool.LoopBlock], list[rustpool.LoopBlock]]:
        first: list[rustpool.LoopBlock] = []
        second: list[rustpool.LoopBlock] = []
        a = rustpool.watch_loop(THRESHOLD, on_block=first.append)
        b = rustpool.watch_loop(THRESHOLD, on_block=second.append)
        assert not a.running and b.running
        await asyncio.sleep(0.05)
        await sleeps_on_the_loop()
        await asyncio.sleep(0.2)
        b.stop()
        return first, second

    first, second = asyncio.run(main())
    assert first == []
    assert len(second) == 2


def test_a_loop_that_is_not_running_is_not_reported_as_blocked() -> None:
    got: list[rustpool.LoopBlock] = []
    loop = asyncio.new_event_loop()
    try:
        dog = rustpool.watch_loop(THRESHOLD, loop=loop, on_block=got.append)
        loop.run_until_complete(asyncio.sleep(0.1))
        time.sleep(0.4)  # the loop is stopped here, not blocked
        loop.run_until_complete(asyncio.sleep(0.1))
        dog.stop()
    finally:
        loop.close()
    assert got == []


def test_watch_loop_checks_its_arguments() -> None:
    with pytest.raises(RuntimeError, match="needs an event loop"):
        rustpool.watch_loop()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="threshold"):
            rustpool.watch_loop(0, loop=loop)
        with pytest.raises(TypeError, match="on_block"):
            rustpool.watch_loop(loop=loop, on_block=3)  # type: ignore[arg-type]
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed event loop"):
        rustpool.watch_loop(loop=loop)


def test_on_uvloop_a_blocking_call_is_reported_too() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is an optional dependency (not built for every CPython)")
    got = uvloop.run(watched(sleeps_on_the_loop))
    assert [b.ended for b in got] == [False, True]
    assert got[0].culprit is not None and got[0].culprit.function == "sleeps_on_the_loop"
    assert got[0].hint is not None and "to_thread" in got[0].hint


STALLS_BESIDE_SUBINTERPRETERS = textwrap.dedent(
    """
    import asyncio, time, rustpool

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    async def main():
        got = []
        dog = rustpool.watch_loop(0.05, on_block=got.append)
        with rustpool.CpuExecutor(2, isolation="interpreter") as pool:
            busy = [asyncio.ensure_future(pool.run(fib, 24)) for _ in range(40)]
            for _ in range(12):  # stalls while the subinterpreters run Python
                await asyncio.sleep(0.03)
                time.sleep(0.12)
            await asyncio.gather(*busy)
        dog.stop()
        seen = [b for b in got if not b.ended]
        assert len(seen) == 12, got
        assert all(b.culprit.function == "main" for b in seen), seen
        print("ok", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.skipif(sys.version_info < (3, 13), reason='isolation="interpreter" needs CPython 3.13+')
def test_reading_the_loops_frame_beside_running_subinterpreters_never_corrupts_the_process() -> None:
    # sys._current_frames() would make frame objects for the subinterpreters' threads with this
    # interpreter's allocator (a CPython bug); the watchdog reads the loop thread's frame only.
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", STALLS_BESIDE_SUBINTERPRETERS],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout == "ok\n"


EXITS = textwrap.dedent(
    """
    import asyncio, time, rustpool

    async def main():
        rustpool.watch_loop(0.05)  # left running
        await asyncio.sleep(0.2)

    asyncio.run(main())
    time.sleep(0.3)  # the loop is closed: nothing to report
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("round", range(3))
def test_a_program_that_leaves_the_watchdog_on_exits_zero_promptly(round: int) -> None:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", EXITS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "done\n"
    assert "blocked" not in out.stderr
    assert time.monotonic() - started < 20
