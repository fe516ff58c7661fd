"""Types of rustpool's native core (``src/``). The public API is in ``rustpool/__init__.py``.

Checked against the built module by ``python -m mypy.stubtest rustpool._rustpool`` (``make lint``,
tests/test_typing.py); what stubtest cannot express is in ``stubtest-allowlist.txt``."""

import asyncio
import types
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, Literal, ParamSpec, TypeVar, final

from typing_extensions import Buffer

_P = ParamSpec("_P")
_T = TypeVar("_T")

__all__ = [
    "DEFAULT_CPU_WORKERS",
    "DEFAULT_MAX_THREADS",
    "BlockingPool",
    "CpuPool",
    "Drain",
    "LoopWatch",
    "__version__",
    "_after_fork_child",
    "_after_fork_parent",
    "_before_fork",
    "_copy_into",
    "_exit",
    "_live_threads",
    "_set_shared_type",
    "resolve_isolation",
]

__version__: Final[str]
DEFAULT_MAX_THREADS: Final[int]
DEFAULT_CPU_WORKERS: Final[int]

# PyO3 classes: not subclassable (hence @final).

@final
class BlockingPool:
    """The elastic blocking pool: tokio's blocking threads, made on demand, let go when idle."""

    def __new__(
        cls,
        max_threads: int = 512,
        keep_alive: float = 10.0,
        thread_name_prefix: str = ...,  # "rustpool-thread" (PyO3 shows a computed default as ...)
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | None = None,
    ) -> BlockingPool: ...
    def run(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> asyncio.Future[_T]:
        """Run in a copy of the caller's context; a future of the running loop."""
    def submit(
        self, future: Future[_T], func: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Run and settle ``future`` (a ``concurrent.futures.Future``)."""
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None: ...
    @property
    def max_threads(self) -> int: ...
    @property
    def keep_alive(self) -> float: ...
    @property
    def active(self) -> int:
        """Runners alive (threads running, or about to take, queued work)."""
    @property
    def queued(self) -> int:
        """Calls queued and not started."""
    def stats(self) -> dict[str, Any]:
        """Counts and times of this pool's calls and threads (see rustpool.PoolStats)."""
    @property
    def handoff_stats(self) -> tuple[int, int]:
        """Diagnostics: (hand-offs that finished in time, hand-offs that did not)."""
    @property
    def is_shutdown(self) -> bool: ...
    def _submit_panicking(self, future: Future[Any]) -> None:
        """Test hook: a job whose Rust side panics."""

@final
class CpuPool:
    """The bounded CPU pool; ``isolation`` picks where the code runs (``"auto"`` is resolved).

    ``mp_context``: whether a multiprocessing context was given (it asks for worker processes);
    ``fallback``: ``"warn"`` or ``"error"``, what ``"auto"`` does with a call it cannot isolate;
    ``learn``: whether ``"auto"`` places each function from samples of its calls."""

    def __new__(
        cls,
        max_workers: int | None = None,
        isolation: str = "thread",
        thread_name_prefix: str = ...,  # "rustpool-cpu" (PyO3 shows a computed default as ...)
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        kill_on_cancel: bool = False,
        mp_context: bool = False,
        fallback: str = "warn",
        learn: bool = True,
    ) -> CpuPool: ...
    def run(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> asyncio.Future[_T]: ...
    def run_timed(
        self,
        timeout: float | None,
        func: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        isolation: str | None = None,
    ) -> asyncio.Future[_T]:
        """``run`` with a timeout (seconds, None for none): past it the call's worker process is
        killed and the future gets ``TimeoutError``; ``isolation``: where the call must run."""
    def submit(
        self,
        future: Future[_T],
        func: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
        isolation: str | None = None,
    ) -> None: ...
    def check_timeout(self, timeout: float) -> None:
        """ValueError unless ``timeout`` is one this pool can honour."""
    def check_isolation(self, isolation: str, timed: bool = False) -> None:
        """ValueError unless this pool can run calls in ``isolation`` (with a timeout or not)."""
    def placements(self) -> list[tuple[str, str, str, int, int]]:
        """(function, isolation, why, calls, samples) for each function "auto" has seen."""
    @property
    def kill_on_cancel(self) -> bool: ...
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None: ...
    @property
    def isolation(self) -> Literal["thread", "interpreter", "process"]: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def active(self) -> int: ...
    @property
    def queued(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    @property
    def is_shutdown(self) -> bool: ...
    def _submit_panicking(self, future: Future[Any]) -> None: ...

@final
class Drain:
    """The completion bridge's per-loop drain callback (internal; made by the native side only)."""

    def __call__(self) -> None: ...

@final
class LoopWatch:
    """The loop watchdog's clock (internal; see rustpool.watch_loop)."""

    def __new__(cls, threshold: float, interval: float, report: Callable[[str, float], bool]) -> LoopWatch: ...
    def tick(self) -> None: ...
    def frame(self) -> types.FrameType | None: ...
    def stop(self) -> None: ...
    @property
    def stopped(self) -> bool: ...

def resolve_isolation(name: str) -> str:
    """The mode ``name`` stands for in this build ("auto" resolved); ValueError if unavailable."""

def _exit(interrupts: int) -> None: ...
def _live_threads() -> int: ...
def _before_fork() -> None: ...
def _after_fork_parent() -> None: ...
def _after_fork_child() -> None: ...
def _set_shared_type(cls: type) -> None: ...
def _copy_into(dst: Buffer, offset: int, src: Buffer) -> None: ...
