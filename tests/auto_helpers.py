"""Functions that tests/test_auto.py lets isolation="auto" place: some release the GIL (hashlib,
zlib, numpy), some hold it (pure Python), one does either depending on its argument.

Each returns where it ran, ``(pid, interpreter id, thread name)``, so a test can tell a thread of
the calling process from a subinterpreter or a worker process. The module is importable by name
(workers load the functions they run from it) and imports numpy only inside the function that
needs it (a subinterpreter refuses numpy).
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib

Where = tuple[int, int, str]

BUF = bytes(range(256)) * (16 * 1024)  # 4 MiB, made at import in each process


def where() -> Where:
    try:
        import _interpreters

        current = _interpreters.get_current()
        interp = int(current[0] if isinstance(current, tuple) else current)
    except ImportError:  # 3.11/3.12 expose no interpreter id: a worker there is a process
        interp = 0
    return os.getpid(), interp, threading.current_thread().name


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def sha256_rounds(rounds: int) -> Where:
    """Releases the GIL: hashlib hashes buffers over 2 KiB without it."""
    for _ in range(rounds):
        hashlib.sha256(BUF).digest()
    return where()


def compress(level: int) -> Where:
    """Releases the GIL: zlib compresses without it."""
    zlib.compress(BUF, level)
    return where()


def matmul(n: int) -> Where:
    """Releases the GIL in numpy's matrix product."""
    import numpy

    a = numpy.ones((n, n))
    for _ in range(3):
        a @ a
    return where()


def pure_python(n: int) -> Where:
    """Holds the GIL: pure-Python recursion."""
    fib(n)
    return where()


def depends(kind: str) -> Where:
    """Releases the GIL for "c" (hashing), holds it for "python" (recursion)."""
    if kind == "c":
        return sha256_rounds(4)
    return pure_python(24)
