"""``Shared``: a big read-only object sent to the workers once, for many calls.

Passing the same 100 MB array to a thousand calls would copy it a thousand times (each call's
buffers cross on their own). ``CpuExecutor.share(obj)`` pickles ``obj`` once (protocol 5, its big
buffers out of band) into a memfd of this process; the handle pickles to a few bytes that name it.
A worker (process or subinterpreter) maps the memfd read-only on first use (through
``/proc/<pid>/fd``), rebuilds the object over the mapping (a numpy array becomes a read-only view
of the shared pages: no copy) and keeps it for the handle's next calls. Wherever a handle is an
argument of a call, the function gets the object, in every mode (threads get ``obj`` itself).
Where there is no memfd (not Linux), a handle pickles its object whole, and each worker still
unpickles it only once.
"""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any, Generic, TypeVar

from . import _crossing, _worker
from ._rustpool import _copy_into, _set_shared_type

T = TypeVar("T")
_keys = itertools.count(1)


class Shared(Generic[T]):
    """A handle that stands for ``value`` in calls to any pool: a worker gets ``value`` (read
    only, rebuilt once per worker over shared memory), never the handle. Made by
    ``CpuExecutor.share``; ``close()`` (or the handle's collection) frees the shared memory once
    the calls that use it are done. Mutating ``value`` after sharing is not seen by workers that
    already have it."""

    __slots__ = ("__weakref__", "_closed", "_state", "_value")

    def __init__(self, value: T) -> None:
        self._value = value
        key = (os.getpid(), next(_keys))
        data, bufs = _worker.dumps_oob(value, _crossing._dumps, _crossing._pickler_by_value())
        table: list[tuple[int, int]] = []
        size = 0
        for b in bufs:
            n = memoryview(b).nbytes
            table.append((size, n))
            size = _worker.aligned(size + n)
        fd = -1
        if size and hasattr(os, "memfd_create"):
            import mmap

            fd = os.memfd_create("rustpool-shm", os.MFD_CLOEXEC)
            try:
                os.posix_fallocate(fd, 0, size)
                with mmap.mmap(fd, size) as m:
                    for (off, _), b in zip(table, bufs, strict=True):
                        _copy_into(m, off, b)
            except BaseException:
                os.close(fd)
                raise
        self._closed = weakref.finalize(self, os.close, fd) if fd >= 0 else None
        if fd < 0 and bufs:
            # No shared memory here: the handle carries its object whole.
            self._state: tuple[Any, ...] = (key, -1, -1, 0, _crossing._dumps(value), ())
        else:
            self._state = (key, os.getpid(), fd, size, data, tuple(table))

    @property
    def value(self) -> T:
        """The object this handle stands for."""
        return self._value

    @property
    def nbytes(self) -> int:
        """Bytes of shared memory it holds (its out-of-band buffers)."""
        return int(self._state[3])

    def close(self) -> None:
        """Free the shared memory now (calls already sent keep what they mapped; workers that
        have not mapped it yet fail to). Closing twice is harmless."""
        if self._closed is not None:
            self._closed()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._closed is not None and not self._closed.alive:
            raise ValueError("this Shared handle is closed: its shared memory is gone")
        return (_worker.shared_value, self._state)

    def __repr__(self) -> str:
        return f"<rustpool.Shared {type(self._value).__name__}, {self.nbytes} bytes shared>"


_set_shared_type(Shared)
