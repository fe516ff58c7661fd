"""Types of rustpool's native core (``src/``). The public API is in ``rustpool/__init__.py``."""

import asyncio
from concurrent.futures import Future
from typing import Any, Callable, Final, TypeVar

T = TypeVar("T")

__version__: Final[str]
DEFAULT_MAX_THREADS: Final[int]
DEFAULT_CPU_WORKERS: Final[int]

class BlockingPool:
    """The elastic blocking pool: tokio's blocking threads, made on demand, let go when idle."""

    def __new__(
        cls,
        max_threads: int = 512,
        keep_alive: float = 10.0,
        thread_name_prefix: str = "rustpool-thread",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | None = None,
    ) -> BlockingPool: ...
    def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run in a copy of the caller's context; a future of the running loop."""
    def submit(
        self, future: Future[T], func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
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
    @property
    def handoff_stats(self) -> tuple[int, int]:
        """Diagnostics: (hand-offs that finished in time, hand-offs that did not)."""
    @property
    def is_shutdown(self) -> bool: ...
    def _submit_panicking(self, future: Future[Any]) -> None:
        """Test hook: a job whose Rust side panics."""

class CpuPool:
    """The bounded CPU pool; ``isolation`` picks where the code runs (``"auto"`` is resolved)."""

    def __new__(
        cls,
        max_workers: int | None = None,
        isolation: str = "auto",
        thread_name_prefix: str = "rustpool-cpu",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        kill_on_cancel: bool = False,
    ) -> CpuPool: ...
    def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]: ...
    def run_timed(
        self, timeout: float | None, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> asyncio.Future[T]: ...
    def submit(
        self,
        future: Future[T],
        func: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None: ...
    def check_timeout(self, timeout: float) -> None: ...
    @property
    def kill_on_cancel(self) -> bool: ...
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None: ...
    @property
    def isolation(self) -> str: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def active(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def is_shutdown(self) -> bool: ...
    def _submit_panicking(self, future: Future[Any]) -> None: ...

class Drain:
    """The completion bridge's per-loop drain callback (internal)."""

    def __call__(self) -> None: ...

def resolve_isolation(name: str) -> str:
    """The mode ``name`` stands for in this build ("auto" resolved); ValueError if unavailable."""

def _exit(interrupts: int) -> None: ...
def _live_threads() -> int: ...
def _before_fork() -> None: ...
def _after_fork_parent() -> None: ...
def _after_fork_child() -> None: ...
