"""Functions and objects of CPython's concurrent.futures deadlock and shutdown tests, as rustpool's
adapted versions of them send to workers (module-level and stdlib-only: they must load in worker
processes and subinterpreters alike)."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from typing import Any, NoReturn


def crash(delay: float = 0.0) -> NoReturn:
    """Die of SIGSEGV (after ``delay`` seconds)."""
    if delay:
        time.sleep(delay)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)  # the signal is on its way
    raise AssertionError("still alive")


def crash_with_data(data: str) -> NoReturn:
    crash()


def exit_1() -> NoReturn:
    sys.exit(1)


def raise_error(error: type[BaseException]) -> NoReturn:
    raise error()


def raise_error_hiding_stderr(error: type[BaseException]) -> NoReturn:
    """Raise ``error`` after sending ``sys.stderr`` nowhere (the caller restores it)."""
    import io

    sys.stderr = io.StringIO()
    raise error()


def make(cls: type[Any]) -> Any:
    return cls()


class CrashAtPickle:
    def __reduce__(self) -> Any:
        crash()


class CrashAtUnpickle:
    def __reduce__(self) -> Any:
        return crash, ()


class ExitAtPickle:
    def __reduce__(self) -> Any:
        exit_1()


class ExitAtUnpickle:
    def __reduce__(self) -> Any:
        return exit_1, ()


class ErrorAtPickle:
    def __reduce__(self) -> Any:
        raise pickle.PicklingError("error in pickle")


class ErrorAtUnpickle:
    def __reduce__(self) -> Any:
        return raise_error_hiding_stderr, (pickle.UnpicklingError,)


def sleep_and_print(seconds: float, message: str) -> None:
    time.sleep(seconds)
    print(message, flush=True)


def sleep_then_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def fail_with(message: str) -> NoReturn:
    raise ValueError(message)
