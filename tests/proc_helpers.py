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


_STATE: dict[str, object] = {}


def remember(key: str, value: object) -> None:
    """An initializer: stores ``value`` in this worker process."""
    _STATE[key] = value


def recall(key: str) -> tuple[object, int]:
    return _STATE.get(key), os.getpid()


def broken_initializer() -> None:
    raise RuntimeError("the initializer broke")


def lock_result() -> object:
    import threading

    return threading.Lock()


def grow(megabytes: int) -> int:
    """Keep ``megabytes`` MiB alive in this worker process; its pid."""
    _STATE.setdefault("ballast", [])
    _STATE["ballast"].append(bytearray(megabytes << 20))  # type: ignore[attr-defined]
    return os.getpid()


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def touch_then_sleep(path: str, seconds: float) -> None:
    open(path, "w").close()
    time.sleep(seconds)


def pid_of(_: object) -> int:
    return os.getpid()


def fail_on(value: int, bad: int) -> int:
    if value == bad:
        raise ValueError(f"boom {value}")
    return value


def numpy_pid() -> int:
    """Imports numpy (which refuses subinterpreters) inside the call; the process that ran it."""
    import numpy  # noqa: F401

    return os.getpid()
