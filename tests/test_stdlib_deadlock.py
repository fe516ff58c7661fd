"""CPython's ``test_concurrent_futures/test_deadlock.py`` (``ExecutorDeadlockTest``), adapted to
rustpool's isolated executors: the same scenarios (a crash, an exit or an error while a call's
arguments or result are pickled or unpickled, or while it runs), in our style.

Every scenario runs on ``isolation="process"``; those that do not kill the worker also run on
``isolation="interpreter"`` (3.13+; a crash there would take this process with it).

By-design differences from ProcessPoolExecutor, asserted as such:

- A call whose worker dies fails alone, with ``WorkerCrashed`` (a ``BrokenProcessPool``, so the
  stdlib's expectation holds), and the pool goes on; the stdlib breaks the whole pool. Each
  scenario ends by running one more call on the same pool.
- An exception raised while the worker unpickles the arguments (an ``UnpicklingError``, a
  ``SystemExit``) is that call's exception, its type kept; the stdlib's worker cannot tell and
  the pool breaks (``BrokenProcessPool``).
- An exception raised while this process unpickles a result is that call's exception, its type
  kept; the stdlib's result handler breaks the pool (``BrokenProcessPool``).
- Each of those exceptions carries a note saying which side and which object failed.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import rustpool

from . import stdlib_helpers as s
from .conftest import WAIT

MODES = ["process"] + (["interpreter"] if sys.version_info >= (3, 13) else [])

# (scenario, fn, args, what the stdlib raises, what rustpool raises, survives a subinterpreter)
CASES = [
    ("error at task pickle", id, (s.ErrorAtPickle(),), pickle.PicklingError, pickle.PicklingError, True),
    ("exit at task unpickle", id, (s.ExitAtUnpickle(),), BrokenProcessPool, SystemExit, True),
    ("error at task unpickle", id, (s.ErrorAtUnpickle(),), BrokenProcessPool, pickle.UnpicklingError, True),
    ("crash at task unpickle", id, (s.CrashAtUnpickle(),), BrokenProcessPool, rustpool.WorkerCrashed, False),
    ("crash during func", s.crash, (), BrokenProcessPool, rustpool.WorkerCrashed, False),
    ("exit during func", s.exit_1, (), SystemExit, SystemExit, True),
    ("error during func", s.raise_error, (RuntimeError,), RuntimeError, RuntimeError, True),
    ("crash during result pickle", s.make, (s.CrashAtPickle,), BrokenProcessPool, rustpool.WorkerCrashed, False),
    ("exit during result pickle", s.make, (s.ExitAtPickle,), SystemExit, SystemExit, True),
    ("error during result pickle", s.make, (s.ErrorAtPickle,), pickle.PicklingError, pickle.PicklingError, True),
    ("error during result unpickle", s.make, (s.ErrorAtUnpickle,), BrokenProcessPool, pickle.UnpicklingError, True),
    ("exit during result unpickle", s.make, (s.ExitAtUnpickle,), BrokenProcessPool, SystemExit, True),
]

# Where the note of a kept exception says it came from.
NOTES = {
    "error at task pickle": "while pickling the arguments of builtins.id",
    "exit at task unpickle": "while unpickling the arguments of builtins.id in the worker",
    "error at task unpickle": "while unpickling the arguments of builtins.id in the worker",
    "exit during result pickle": (
        "while pickling the result of tests.stdlib_helpers.make, a tests.stdlib_helpers.ExitAtPickle"
    ),
    "error during result pickle": (
        "while pickling the result of tests.stdlib_helpers.make, a tests.stdlib_helpers.ErrorAtPickle"
    ),
    "error during result unpickle": "while unpickling the result of tests.stdlib_helpers.make in the calling process",
    "exit during result unpickle": "while unpickling the result of tests.stdlib_helpers.make in the calling process",
}


def cases(mode: str) -> list[Any]:
    return [
        pytest.param(mode, *case[1:5], id=f"{mode}: {case[0]}")
        for case in CASES
        if mode == "process" or case[5]
    ]


@pytest.mark.parametrize(
    ("mode", "fn", "args", "stdlib_raises", "raises"), [c for mode in MODES for c in cases(mode)]
)
def test_each_failure_fails_its_call_only_and_the_pool_goes_on(
    cpu_executor: Callable[..., rustpool.CpuExecutor],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    mode: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    stdlib_raises: type[BaseException],
    raises: type[BaseException],
) -> None:
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # ErrorAtUnpickle redirects it while it raises
    scenario = request.node.callspec.id.split(": ", 1)[1]
    ex = cpu_executor(2, isolation=mode)
    f = ex.submit(fn, *args)  # never raises: the outcome is on the future
    with pytest.raises(raises) as excinfo:
        f.result(WAIT)
    if raises is rustpool.WorkerCrashed:
        assert issubclass(raises, stdlib_raises)  # the stdlib's expectation holds
    elif scenario in NOTES:
        assert NOTES[scenario] in excinfo.value.__notes__[-1]
    # Where the stdlib breaks the pool, this one goes on.
    assert ex.submit(abs, -3).result(WAIT) == 3


def test_a_worker_that_crashes_after_shutdown_fails_its_call(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> None:
    ex = cpu_executor(2, isolation="process")
    f = ex.submit(s.crash, 0.1)
    ex.shutdown(wait=True)
    with pytest.raises(BrokenProcessPool):
        f.result(0)


@pytest.mark.parametrize("mode", MODES)
def test_a_call_that_cannot_be_pickled_fails_on_its_future_after_shutdown_without_wait(
    cpu_executor: Callable[..., rustpool.CpuExecutor], mode: str
) -> None:
    ex = cpu_executor(2, isolation=mode)
    assert ex.submit(id, 42).result(WAIT)
    f = ex.submit(id, s.ErrorAtPickle())
    ex.shutdown(wait=False)
    with pytest.raises(pickle.PicklingError):
        f.result(WAIT)


def test_a_crash_while_a_big_argument_is_in_the_pipe_is_a_clean_error(
    cpu_executor: Callable[..., rustpool.CpuExecutor],
) -> None:
    data = "a" * ((4 << 20) + 1)  # more than a pipe holds
    ex = cpu_executor(2, isolation="process")
    with pytest.raises(BrokenProcessPool):
        list(ex.map(s.crash_with_data, [data] * 10, timeout=WAIT))


@pytest.mark.parametrize("mode", MODES)
def test_many_calls_submitted_before_the_workers_are_up_all_complete(
    cpu_executor: Callable[..., rustpool.CpuExecutor], mode: str
) -> None:
    """The stdlib's gh-105829 scenario (its wake-up pipe filled while the manager thread was late)
    has no counterpart here; what it guarded, submissions never block on a pool not started yet,
    is what this checks."""
    ex = cpu_executor(2, isolation=mode)
    assert list(ex.map(int, range(100), timeout=WAIT)) == list(range(100))
