"""Calls for tests/test_lifecycle.py: module-level (so isolated workers load them by name), and
each leaves its trace in a file (an append of one line is atomic), so that a test can tell which
calls began and which finished, whatever process or interpreter ran them."""

from __future__ import annotations

import os
import time


def mark(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def work(path: str, tag: object, seconds: float) -> object:
    """Mark the start, stay busy for ``seconds`` (a CPU loop: no sleep to be woken from), mark
    the end."""
    mark(path, f"began {tag}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    mark(path, f"finished {tag}")
    return tag


def quick(tag: object) -> object:
    return tag


def square(x: int) -> int:
    return x * x


def pid() -> int:
    return os.getpid()


def die_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(9)
