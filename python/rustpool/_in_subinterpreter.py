"""What ``import rustpool`` gives inside a subinterpreter, where the native core cannot load.

The names exist (so a module that imports them at its top can be loaded in a worker); using any of
them raises a RuntimeError that says why.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ._crossing import RemoteTraceback, ThreadFallbackWarning, WorkerUnsupported

__all__ = [
    "BlockedFrame",
    "CallOptions",
    "Cluster",
    "CpuExecutor",
    "FallbackPolicy",
    "IsolationMode",
    "LoopBlock",
    "LoopWatchdog",
    "Mode",
    "Placement",
    "PoolStats",
    "RemoteTraceback",
    "Settings",
    "Shared",
    "ThreadExecutor",
    "ThreadFallbackWarning",
    "WorkerCrashed",
    "WorkerUnsupported",
    "__version__",
    "configure",
    "default_cpu_executor",
    "default_thread_executor",
    "pin",
    "run_cpu",
    "settings",
    "to_thread",
    "watch_loop",
]

from ._version import __version__


class WorkerCrashed(Exception):
    """Stands in for rustpool.WorkerCrashed here (the real one needs multiprocessing)."""


def _unavailable(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError(
        "rustpool's pools cannot be used inside a subinterpreter (its native core cannot load there); "
        "submit the work from the main interpreter"
    )


class ThreadExecutor:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unavailable()


class CpuExecutor(ThreadExecutor):
    pass


class CallOptions(ThreadExecutor):
    pass


class Shared(ThreadExecutor):
    pass


class Cluster(ThreadExecutor):
    pass


class LoopWatchdog(ThreadExecutor):
    pass


BlockedFrame = LoopBlock = LoopWatchdog


# Type aliases and the settings' type, as names only (nothing here takes them).
IsolationMode = FallbackPolicy = Mode = str
Settings = Placement = PoolStats = dict


def pin(isolation: str) -> Any:
    """As rustpool.pin: a module that pins its functions at import loads in a worker too."""

    def pinned(fn: Any) -> Any:
        fn.__rustpool_isolation__ = isolation
        return fn

    return pinned


to_thread = run_cpu = configure = settings = default_thread_executor = default_cpu_executor = watch_loop = _unavailable
