"""Functions and classes that tests/test_interpreter.py sends into isolation="interpreter" workers.

They live in a module of their own, importable by name (``tests.interp_helpers``), because a call
crosses into a subinterpreter as a pickle: the worker imports this module to find the function.
Keep its imports to the standard library: this module is imported again inside every worker.
Nothing here may rely on threading primitives shared with the caller (they cannot cross); handshakes
with the caller go through files instead (``gated``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from typing import Any

# Bound for every wait inside a worker: a failing test ends with an error, never a hung worker.
WAIT = 30.0


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Box:
    """A plain class (no dataclass machinery) whose instances cross by pickle."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.items == self.items

    def __repr__(self) -> str:
        return f"Box({self.items!r})"


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def scale(p: Point, k: int) -> Point:
    return Point(p.x * k, p.y * k)


def box_of(*items: Any) -> Box:
    return Box(list(items))


def reverse_bytes(data: bytes) -> bytes:
    return data[::-1]


def interpreter_id() -> int:
    """The id of the interpreter this runs in (0 for the main interpreter)."""
    import _interpreters

    current = _interpreters.get_current()  # 3.13: (id, whence)
    return int(current[0] if isinstance(current, tuple) else current)


def tagged_interpreter_id(tag: Any) -> tuple[Any, int]:
    return tag, interpreter_id()


def in_subinterpreter() -> bool:
    try:
        import _interpreters
    except ImportError:
        return False
    main = _interpreters.get_main()
    return interpreter_id() != int(main[0] if isinstance(main, tuple) else main)


def os_thread_name() -> str:
    """The OS name of the calling thread (Linux: what the Rust side named the worker thread)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def cwd() -> str:
    return os.getcwd()


def sys_path() -> list[str]:
    return list(sys.path)


def touch(path: str, text: str = "") -> str:
    with open(path, "w") as f:
        f.write(text)
    return path


def sleep_then_touch(seconds: float, path: str) -> str:
    time.sleep(seconds)
    return touch(path)


def gated(started: str, release: str, result: Any = None) -> Any:
    """Create ``started``, then block until ``release`` exists (bounded): a gate across interpreters."""
    touch(started)
    deadline = time.monotonic() + WAIT
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.002)
    return result


def barrier_interpreter_id(directory: str, parties: int) -> int:
    """Wait (bounded) until ``parties`` calls are inside this function at once, then return this
    interpreter's id: the calls that pass the barrier together ran at the same time."""
    touch(os.path.join(directory, f"arrived-{threading.get_native_id()}"))
    deadline = time.monotonic() + WAIT
    while len([n for n in os.listdir(directory) if n.startswith("arrived-")]) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {os.listdir(directory)} arrived")
        time.sleep(0.002)
    return interpreter_id()


def fail_in_worker(message: str) -> None:
    raise ValueError(message)


def exit_in_worker(code: int) -> None:
    raise SystemExit(code)


class TwoArgError(Exception):
    """Pickles, but cannot be unpickled: ``args`` holds one value and ``__init__`` needs two."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class LockedError(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_two_arg_error() -> None:
    raise TwoArgError("first", "second")


def raise_locked_error() -> None:
    raise LockedError("holding a lock")


def return_a_lock() -> Any:
    return threading.Lock()


def import_numpy_inside() -> int:
    """numpy imported when the call runs (after the call was unpickled in the worker)."""
    import numpy

    return int(numpy.arange(5).sum())


def mark_then_import_numpy(path: str) -> int:
    """Leave a side effect (a line appended to ``path``), then import numpy (which refuses
    subinterpreters)."""
    with open(path, "a") as f:
        f.write("began\n")
    import numpy

    return int(numpy.arange(5).sum())

