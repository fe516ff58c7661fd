"""Functions that tests/test_big_data.py sends to isolated workers with big buffers, and the probes
it reads them with.

They live in a module of their own, importable by name (``tests.big_data_helpers``), because a call
crosses into a worker process or a subinterpreter as a pickle: the worker imports this module to find
the function. Its top-level imports are the standard library only, and numpy is never imported here:
this module is imported again inside every worker, and subinterpreters refuse numpy (numpy arrays are
recognised by their type's module instead).

``summary`` describes a value down to a digest of its bytes: the tests compare what the caller sent,
what the worker saw and what came back, content included, without sending the content back twice.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import time
from collections import Counter
from typing import Any

# Bound for every wait in a worker or a probe: a failing test ends with an error, never a hang.
WAIT = 30.0

# What a shared-memory arena of rustpool is, in /proc/<pid>/fd (link targets) and /proc/<pid>/maps.
SHM_NAME = "/memfd:rustpool-shm"


# --- data ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def pattern(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed`` in every process: a buffer
    moved by a wrong offset, truncated, or mixed with another call's never matches."""
    return random.Random(seed).randbytes(size)


def digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def is_ndarray(x: object) -> bool:
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


def summary(x: Any) -> Any:
    """What ``x`` is, down to the digest of its bytes: its type; a memoryview's format and shape;
    an array's dtype, shape and memory order. Containers are described item by item."""
    if isinstance(x, list | tuple):
        return (type(x).__name__, [summary(item) for item in x])
    if isinstance(x, dict):
        return ("dict", [(key, summary(value)) for key, value in sorted(x.items())])
    if isinstance(x, bytes | bytearray):
        return (type(x).__name__, len(x), digest(x))
    if isinstance(x, memoryview):
        return ("memoryview", x.format, x.shape, x.nbytes, digest(x.tobytes()))
    if is_ndarray(x):
        order = "C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "strided"
        return ("ndarray", x.dtype.str, x.shape, order, digest(x.tobytes()))
    return (type(x).__name__, repr(x))


def make(kind: str, size: int, seed: int) -> Any:
    """A fresh ``kind`` ("bytes", "bytearray", "memoryview" or "ndarray", int64) of ``size`` bytes
    of ``pattern(size, seed)``: the same value in the caller and in a worker."""
    data = pattern(size, seed)
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "ndarray":
        import numpy

        return numpy.frombuffer(data, dtype=numpy.int64).copy()
    raise ValueError(kind)


class Blob(bytes):
    """A bytes subclass: it must come back as itself, not as plain bytes."""


# --- calls -----------------------------------------------------------------------------------------


def echo(x: Any) -> Any:
    return x


def echo_with_summary(x: Any) -> tuple[Any, Any]:
    """``x`` back, with what the worker saw of it."""
    return x, summary(x)


def echo_args(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def same_twice(a: Any, b: Any) -> tuple[bool, Any, Any]:
    """Whether the two arguments arrived as one object; both back."""
    return a is b, a, b


def tail(x: Any, start: int) -> Any:
    """A view (for memoryviews and arrays) of ``x`` past ``start``."""
    return x[start:]


def raise_with(data: Any) -> None:
    raise ValueError(data)


def writable_echo(x: Any) -> tuple[bool, Any]:
    """Whether the array arrived writable; the array back."""
    return bool(x.flags.writeable), x


def mutate_in_place(x: Any) -> tuple[bool, Any]:
    """Overwrite ``x`` with zeros where it can be written; whether it was, and what it holds now."""
    if isinstance(x, bytearray):
        x[:] = bytes(len(x))
    elif isinstance(x, memoryview):
        if x.readonly:
            return False, summary(x)
        x.cast("B")[:] = bytes(x.nbytes)
    elif is_ndarray(x):
        x[...] = 0
    else:
        raise TypeError(f"cannot mutate a {type(x).__name__}")
    return True, summary(x)


_KEPT: list[Any] = []


def keep(x: Any) -> list[Any]:
    """Keep ``x`` in this worker (a module global, as user code may do); the summaries of
    everything kept so far."""
    _KEPT.append(x)
    return [summary(k) for k in _KEPT]


_OWN: list[Any] = []


def refill_own(kind: str, size: int, seed: int) -> Any:
    """This worker's one buffer of ``kind`` (made on the first call, the same object after),
    refilled in place with ``pattern(size, seed)`` and returned."""
    if not _OWN:
        _OWN.append(make(kind, size, seed))
    own = _OWN[0]
    memoryview(own).cast("B")[:] = pattern(size, seed)
    return own


def kill_self_holding(data: Any) -> None:
    """Die by SIGKILL in the middle of a call that was given ``data``."""
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_holding(data: Any, seconds: float) -> int:
    time.sleep(seconds)
    return len(data)


def touch_then_sleep_holding(path: str, data: Any, seconds: float) -> int:
    """Create ``path`` (the call has started), then sleep holding ``data``."""
    open(path, "w").close()
    time.sleep(seconds)
    return len(data)


def limit_file_size(limit: int) -> None:
    """An initializer: no file of this process may grow past ``limit`` bytes (a shared-memory
    arena neither), and growing one fails with EFBIG instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def file_size_limit() -> int:
    """This process's RLIMIT_FSIZE (soft)."""
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0]


def maps_have_shm(data: Any) -> bool:
    """Whether this process has a rustpool shared-memory arena mapped while it runs a call given
    ``data``."""
    with open("/proc/self/maps") as f:
        return SHM_NAME in f.read()


# --- probes (run in the caller) --------------------------------------------------------------------


def shm_fds(pid: int | str = "self") -> int:
    """How many open fds of process ``pid`` are rustpool shared-memory arenas (fds that vanish
    while being read are skipped)."""
    directory = f"/proc/{pid}/fd"
    count = 0
    for name in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{name}")
        except OSError:
            continue
        if target.startswith(SHM_NAME):
            count += 1
    return count


def settled_shm_fds(bound: int, timeout: float = 5.0) -> int:
    """``shm_fds()`` once it is at most ``bound``, or when ``timeout`` has passed (freeing after a
    worker's death may lag the failed future by a moment)."""
    deadline = time.monotonic() + timeout
    while (count := shm_fds()) > bound and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def fd_targets() -> Counter[str]:
    """What this process's open fds are (link targets; pipes and sockets by kind only, their
    inode numbers left out), counted."""
    targets: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        targets[target.split(":[")[0]] += 1
    return targets


# Entries that other programs make in /dev/shm while the tests run (the benches' joblib and loky,
# which may run beside the suite): not rustpool's, left out of ``dev_shm``.
FOREIGN_SHM = ("joblib_memmapping_folder_", "sem.loky-")


def dev_shm() -> list[str]:
    """The entries of /dev/shm, but those of ``FOREIGN_SHM``."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith(FOREIGN_SHM))


def warm(ex: Any, data: Any, calls: int = 8) -> None:
    """Echo ``data`` ``calls`` times at once (every worker of a small pool gets some), checking
    each result."""
    futures = [ex.submit(echo, data) for _ in range(calls)]
    for f in futures:
        assert f.result(60) == data


def part(x: Any, i: int, size: int = 1000) -> Any:
    """The ``i``-th slice of ``size`` items of ``x``, as the caller would compute it."""
    return summary(x[i * size : (i + 1) * size])


def what_arrived(x: Any) -> tuple[int, int, str, bool | None]:
    """(this worker's pid, the id of what arrived, its type, whether it is writable when it is an
    array)."""
    writable = bool(x.flags.writeable) if is_ndarray(x) else None
    return os.getpid(), id(x), type(x).__name__, writable
