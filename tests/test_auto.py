"""isolation="auto" places each function from what its calls do.

A function whose calls release the GIL (hashlib, zlib, numpy) ends up on the pool's threads (no
pickling); one that holds it (pure Python) ends up isolated (subinterpreters on 3.13+, processes
before); a function that changes behaviour is placed again; a per-call isolation and a pin are
obeyed and never sampled; the fixed modes never learn. Where a call ran is read from the call
itself (pid, interpreter id, thread name), and ``placements()`` says what was decided and why.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

import rustpool

from . import auto_helpers as h
from .conftest import WAIT

ISOLATED = "interpreter" if sys.version_info >= (3, 13) else "process"
MAIN_PID = os.getpid()


@pytest.fixture
def auto(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Iterator[Callable[..., rustpool.CpuExecutor]]:
    """Factory for "auto" pools whose isolated workers have started: a sample taken while worker
    processes start on every core can misread GIL-releasing code (the next sample corrects it,
    see src/isolation/auto.rs); these tests are about the readings, not that start."""

    def make(workers: int = 2, **kw: Any) -> rustpool.CpuExecutor:
        ex = cpu_executor(workers, isolation="auto", **kw)
        warm = ex.options(isolation=ISOLATED) if kw.get("learn", True) else ex
        for f in [warm.submit(time.sleep, 0.05) for _ in range(workers)]:
            f.result(WAIT)
        return ex

    yield make


def name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def on_a_thread(w: h.Where) -> bool:
    """The call ran on one of the pool's threads in this process (not a subinterpreter)."""
    return w[0] == MAIN_PID and w[1] == 0


def isolated(w: h.Where) -> bool:
    return w[0] != MAIN_PID or w[1] != 0


def place(ex: rustpool.CpuExecutor, fn: Callable[..., Any]) -> str:
    return ex.placements()[name(fn)]["isolation"]


@pytest.mark.parametrize(
    ("fn", "arg"),
    [(h.sha256_rounds, 8), (h.compress, 6), (h.matmul, 400)],
    ids=["hashlib", "zlib", "numpy"],
)
def test_functions_that_release_the_gil_end_up_on_threads(auto: Any, fn: Callable[[int], h.Where], arg: int) -> None:
    if fn is h.matmul:
        pytest.importorskip("numpy", reason="numpy (requirements-dev.txt)")
    ex = auto()
    first = ex.submit(fn, arg).result(WAIT)
    assert on_a_thread(first)  # the sample runs on a thread
    assert place(ex, fn) == "thread", ex.placements()
    assert "releases the GIL" in ex.placements()[name(fn)]["why"]
    results = [f.result(WAIT) for f in [ex.submit(fn, arg) for _ in range(4)]]
    assert all(on_a_thread(w) for w in results), results


def test_a_pure_python_function_ends_up_isolated(auto: Any) -> None:
    ex = auto()
    assert on_a_thread(ex.submit(h.pure_python, 24).result(WAIT))  # its sample
    assert place(ex, h.pure_python) == ISOLATED, ex.placements()
    assert "holds the GIL" in ex.placements()[name(h.pure_python)]["why"]
    results = [f.result(WAIT) for f in [ex.submit(h.pure_python, 20) for _ in range(4)]]
    assert all(isolated(w) for w in results), results


def test_calls_made_while_a_function_is_sampled_go_where_its_verdict_says(auto: Any) -> None:
    ex = auto()
    futures = [ex.submit(h.pure_python, 24) for _ in range(4)]
    results = [f.result(WAIT) for f in futures]
    assert on_a_thread(results[0])  # the sample
    assert all(isolated(w) for w in results[1:]), results
    assert ex.placements()[name(h.pure_python)]["samples"] == 1


def test_a_function_that_changes_behaviour_is_placed_again(auto: Any) -> None:
    ex = auto()
    ex.submit(h.depends, "c").result(WAIT)
    assert place(ex, h.depends) == "thread", ex.placements()
    # Now it holds the GIL: a later sample (after 64 calls and 0.5 s) moves it.
    time.sleep(0.6)
    deadline = time.monotonic() + WAIT
    while place(ex, h.depends) != ISOLATED and time.monotonic() < deadline:
        ex.submit(h.depends, "python").result(WAIT)
    assert place(ex, h.depends) == ISOLATED, ex.placements()
    assert ex.placements()[name(h.depends)]["samples"] >= 2
    assert isolated(ex.submit(h.depends, "python").result(WAIT))


def test_a_per_call_isolation_is_obeyed_and_not_sampled(auto: Any) -> None:
    ex = auto()
    assert on_a_thread(ex.options(isolation="thread").submit(h.pure_python, 10).result(WAIT))
    assert isolated(ex.options(isolation=ISOLATED).submit(h.sha256_rounds, 1).result(WAIT))
    pid, _, _ = ex.options(isolation="process").submit(h.sha256_rounds, 1).result(WAIT)
    assert pid != MAIN_PID
    assert ex.placements() == {}  # forced calls teach nothing


def test_a_per_call_timeout_with_a_thread_is_refused(auto: Any) -> None:
    with pytest.raises(ValueError, match="a timeout needs a worker process"):
        auto().options(timeout=1, isolation="thread")


def test_a_pinned_function_runs_where_pinned_and_is_never_sampled(auto: Any) -> None:
    def spin() -> h.Where:  # pure Python, but pinned to threads
        h.fib(18)
        return h.where()

    rustpool.pin("thread")(spin)
    ex = auto()
    results = [f.result(WAIT) for f in [ex.submit(spin) for _ in range(3)]]
    assert all(on_a_thread(w) for w in results), results
    placement = ex.placements()[name(spin)]
    assert (placement["isolation"], placement["samples"]) == ("thread", 0)
    assert "pinned" in placement["why"]


def test_pin_refuses_auto_and_unknown_modes() -> None:
    with pytest.raises(ValueError, match="pin names where to run"):
        rustpool.pin("auto")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot mark"):
        rustpool.pin("thread")(len)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_fixed_modes_never_learn(cpu_executor: Any, isolation: str) -> None:
    ex = cpu_executor(1, isolation=isolation)
    results = [ex.submit(h.sha256_rounds, 2).result(WAIT) for _ in range(3)]
    assert all(on_a_thread(w) == (isolation == "thread") for w in results), results
    assert ex.placements() == {}
    other = "process" if isolation == "thread" else "thread"
    with pytest.raises(ValueError, match='needs a pool with isolation="auto"'):
        ex.options(isolation=other)  # type: ignore[arg-type]


def test_learn_false_isolates_every_call(auto: Any) -> None:
    ex = auto(learn=False)
    assert isolated(ex.submit(h.sha256_rounds, 1).result(WAIT))
    assert ex.placements() == {}


def test_map_batches_are_placed_by_the_mapped_function(auto: Any) -> None:
    ex = auto()
    results = list(ex.map(h.sha256_rounds, [2] * 8, chunksize=2))
    assert all(on_a_thread(w) for w in results), results
    assert place(ex, h.sha256_rounds) == "thread"


def test_a_sampled_call_cancelled_before_it_runs_lets_the_waiting_calls_go_on(auto: Any, tmp_path: Any) -> None:
    """The sample is queued behind a call that holds the pool's only thread; cancelling it
    must not leave the calls that wait for its verdict waiting for ever."""
    ex = auto(1)
    release = threading.Event()

    def hold() -> None:
        release.wait(WAIT)

    rustpool.pin("thread")(hold)
    holder = ex.submit(hold)
    sample: Future[h.Where] = ex.submit(h.compress, 1)  # queued behind `hold` on the one thread
    waiting = ex.submit(h.compress, 1)  # waits for the sample's verdict
    assert sample.cancel()
    release.set()
    holder.result(WAIT)
    assert waiting.result(WAIT)[0] > 0  # it ran (isolated: the sample was never read)
    ex.submit(h.compress, 1).result(WAIT)  # and the function is sampled again later
