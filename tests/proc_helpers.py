"""Functions sent to worker processes (module-level, so they pickle by reference)."""

from __future__ import annotations

import os
import signal
import time


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)
