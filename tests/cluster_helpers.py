"""Functions the cluster tests send to Dask workers (importable by name there)."""

from __future__ import annotations

import os
import time


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> None:
    raise ValueError(f"boom {x}")


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def where() -> tuple[int, int]:
    """(this process's pid, its parent's): on a cluster, the parent is the Dask worker."""
    return os.getpid(), os.getppid()


def _publish_then_sleep(path: str, value: int, seconds: float) -> int:
    """Write ``value`` to ``path`` (atomically: a reader never sees half of it), then sleep."""
    with open(path + ".tmp", "w") as f:
        f.write(str(value))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return value


def touch_then_sleep(path: str, seconds: float) -> int:
    """Write this process's parent (the Dask worker on a cluster) to ``path``, then sleep."""
    return _publish_then_sleep(path, os.getppid(), seconds)


def pid_then_sleep(path: str, seconds: float) -> int:
    """Write this process's pid (the worker process of the call) to ``path``, then sleep."""
    return _publish_then_sleep(path, os.getpid(), seconds)
