"""rustpool's executors take what the standard library's take, where they take it.

Code written for ``ProcessPoolExecutor(max_workers, mp_context, initializer, initargs, *,
max_tasks_per_child)`` or ``ThreadPoolExecutor(max_workers, thread_name_prefix, initializer,
initargs)`` works unchanged with ``CpuExecutor`` / ``ThreadExecutor``, positional arguments
included; ``map`` takes Python 3.14's ``buffersize``.
"""

from __future__ import annotations

import inspect
import itertools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

import rustpool

from . import proc_helpers as h
from .conftest import WAIT


def _params(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls).parameters.values())


@pytest.mark.parametrize(
    ("ours", "theirs"), [(rustpool.CpuExecutor, ProcessPoolExecutor), (rustpool.ThreadExecutor, ThreadPoolExecutor)]
)
def test_the_stdlib_executors_parameters_come_first_in_the_same_order_and_kinds(ours: type, theirs: type) -> None:
    stdlib = _params(theirs)
    mine = _params(ours)[: len(stdlib)]
    assert [(p.name, p.kind, p.default) for p in mine] == [(p.name, p.kind, p.default) for p in stdlib]


def test_process_pool_executor_positional_arguments_work_unchanged() -> None:
    """``ProcessPoolExecutor(1, get_context("spawn"), init, initargs)``: an mp_context asks for
    worker processes, and the initializer runs in each."""
    ctx = multiprocessing.get_context("spawn")
    with rustpool.CpuExecutor(1, ctx, h.remember, ("key", "set by initargs")) as ex:
        assert ex.isolation == "process"
        value, pid = ex.submit(h.recall, "key").result(WAIT)
    assert value == "set by initargs"
    assert pid != os.getpid()


def test_a_fork_context_with_max_tasks_per_child_is_accepted_as_workers_never_fork() -> None:
    # ProcessPoolExecutor refuses this pair (a forked worker cannot be replaced safely); rustpool
    # starts every worker fresh, whatever the context's start method.
    with rustpool.CpuExecutor(1, multiprocessing.get_context("fork"), max_tasks_per_child=1) as ex:
        pids = {ex.submit(h.pid).result(WAIT) for _ in range(2)}
    assert len(pids) == 2 and os.getpid() not in pids


def test_mp_context_must_be_a_multiprocessing_context() -> None:
    with pytest.raises(TypeError, match="mp_context must be a multiprocessing context"):
        rustpool.CpuExecutor(1, "spawn")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "isolation",
    [
        "thread",
        pytest.param(
            "interpreter",
            marks=pytest.mark.skipif(sys.version_info < (3, 13), reason="isolation='interpreter' needs CPython 3.13+"),
        ),
    ],
)
def test_mp_context_with_a_mode_that_is_not_processes_is_a_value_error(isolation: Any) -> None:
    with pytest.raises(ValueError, match='mp_context needs isolation="process"'):
        rustpool.CpuExecutor(1, multiprocessing.get_context("spawn"), isolation=isolation)


def test_thread_executor_checks_its_arguments_as_thread_pool_executor_does() -> None:
    for bad in ({"max_workers": 0}, {"initializer": 5}):
        with pytest.raises(Exception) as stdlib:
            ThreadPoolExecutor(**bad)  # type: ignore[arg-type]
        with pytest.raises(type(stdlib.value), match=str(stdlib.value)):
            rustpool.ThreadExecutor(**bad)  # type: ignore[arg-type]


def test_thread_executor_has_thread_pool_executors_attributes() -> None:
    ex = rustpool.ThreadExecutor(3, "named", h.remember, ("k", 1))
    try:
        assert ex._max_workers == 3
        assert ex._thread_name_prefix == "named"
        assert ex._initializer is h.remember
        assert ex._initargs == ("k", 1)
        assert ex._shutdown is False
    finally:
        ex.shutdown()
    assert ex._shutdown is True


# --- map(buffersize=) ----------------------------------------------------------------------------


def _square(x: int) -> int:
    return x * x


@pytest.fixture(params=["ThreadExecutor", "CpuExecutor-thread", "CpuExecutor-process"])
def executor(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "ThreadExecutor":
        ex: Any = rustpool.ThreadExecutor(2)
    else:
        ex = rustpool.CpuExecutor(2, isolation=request.param.split("-")[1])
    yield ex
    ex.shutdown()


def _counted(read: list[int]) -> Iterator[int]:
    for i in itertools.count():
        read.append(i)
        yield i


def test_map_with_buffersize_reads_an_endless_iterable_lazily(executor: Any) -> None:
    read: list[int] = []
    results = executor.map(_square, _counted(read), buffersize=3)
    assert len(read) == 3  # the first calls are submitted at once, no more
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(read) == 3 + 5  # one more submitted per result read
    results.close()


def test_map_with_buffersize_gives_every_result_in_order(executor: Any) -> None:
    assert list(executor.map(_square, range(20), buffersize=4)) == [x * x for x in range(20)]


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_cpu_map_with_buffersize_and_chunksize_counts_batches(cpu_executor: Any, isolation: str) -> None:
    read: list[int] = []
    results = cpu_executor(2, isolation=isolation).map(_square, _counted(read), chunksize=4, buffersize=2)
    assert len(read) == 2 * 4  # two batches submitted, no more
    assert [next(results) for _ in range(6)] == [x * x for x in range(6)]
    results.close()


@pytest.mark.parametrize(
    ("buffersize", "error", "message"),
    [(0, ValueError, "buffersize must be None or > 0"), (1.5, TypeError, "buffersize must be an integer or None")],
)
def test_map_checks_buffersize_as_python_3_14_does(
    executor: Any, buffersize: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        executor.map(_square, range(3), buffersize=buffersize)


def test_closing_a_buffered_map_cancels_the_calls_not_begun(thread_executor: Callable[..., Any]) -> None:
    release = threading.Event()
    started: list[int] = []

    def slow(x: int) -> int:
        started.append(x)
        if x:
            release.wait(WAIT)
        return x

    ex = thread_executor(1)
    results = ex.map(slow, range(10), buffersize=3)
    assert next(results) == 0  # calls 1-3 are submitted now; 1 holds the only thread
    results.close()  # 2 and 3 have not begun: cancelled
    release.set()
    ex.shutdown(wait=True)
    assert started == [0, 1]
