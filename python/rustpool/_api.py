"""rustpool's public API (re-exported by ``rustpool``).

- ``await to_thread(fn, *args, **kwargs)``: blocking I/O on an elastic pool of threads owned by
  Rust (tokio's blocking pool), with the contract of ``asyncio.to_thread``.
- ``await run_cpu(fn, *args, **kwargs)``: CPU work on a bounded pool (one worker per core).
- ``ThreadExecutor`` / ``CpuExecutor``: ``concurrent.futures`` executors over the same pools, for
  plain scripts, ``loop.run_in_executor`` and ``loop.set_default_executor``; ``await pool.run(...)``
  is their awaitable form.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from concurrent.futures import Executor, Future
from concurrent.futures import thread as _cf_thread
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from . import _rustpool
from ._crossing import RemoteTraceback, WorkerUnsupported, process_chunk
from ._errors import WorkerCrashed
from ._rustpool import BlockingPool, CpuPool

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")

__version__: str = _rustpool.__version__
__all__ = [
    "DEFAULT_KEEP_ALIVE",
    "DEFAULT_MAX_THREADS",
    "CpuExecutor",
    "RemoteTraceback",
    "WorkerCrashed",
    "WorkerUnsupported",
    "ThreadExecutor",
    "__version__",
    "configure",
    "default_cpu_executor",
    "default_thread_executor",
    "run_cpu",
    "settings",
    "to_thread",
]

DEFAULT_MAX_THREADS: int = _rustpool.DEFAULT_MAX_THREADS
DEFAULT_KEEP_ALIVE: float = 10.0

_counter = itertools.count()
# Every executor still alive, drained at interpreter exit (as concurrent.futures does).
_live: weakref.WeakSet[Executor] = weakref.WeakSet()


def _check_workers(max_workers: int | None) -> None:
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")


def _check_initializer(initializer: Callable[..., object] | None) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")


class _PoolExecutor:
    """What both executors share: their Rust pool (``_pool``) does the work."""

    _pool: Any
    _max_workers: int

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        f: Future[T] = Future()
        self._pool.submit(f, fn, args, kwargs)
        return f

    submit.__doc__ = Executor.submit.__doc__

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` on this pool (a ``ThreadExecutor`` runs it in a copy of
        the caller's contextvars context, as ``to_thread`` does; a ``CpuExecutor`` carries none)."""
        return await self._pool.run(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait, cancel_futures)

    shutdown.__doc__ = Executor.shutdown.__doc__

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def _describe(self) -> str:
        return ""

    def __repr__(self) -> str:
        state = "shutdown" if self._pool.is_shutdown else f"active={self._pool.active}"
        return f"<rustpool.{type(self).__name__} max_workers={self._max_workers}{self._describe()} {state}>"


class ThreadExecutor(_PoolExecutor, _cf_thread.ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose threads are tokio's blocking pool.

    Threads are made on demand up to ``max_workers`` (default 512: blocking I/O waits, it does not
    compute) and let go after ``keep_alive`` seconds idle. It subclasses ``ThreadPoolExecutor`` so
    that ``loop.set_default_executor`` accepts it; none of the base class's Python threads exist.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        keep_alive: float = DEFAULT_KEEP_ALIVE,
    ) -> None:
        _check_workers(max_workers)
        _check_initializer(initializer)
        if max_workers is None:
            max_workers = DEFAULT_MAX_THREADS
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadExecutor-{next(_counter)}"
        self._pool = BlockingPool(
            max_workers, keep_alive, self._thread_name_prefix, initializer, tuple(initargs)
        )
        _live.add(self)

    def map(  # type: ignore[override]
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        return Executor.map(self, fn, *iterables, timeout=timeout, chunksize=chunksize)

    @property
    def keep_alive(self) -> float:
        return float(self._pool.keep_alive)


def _chunks(chunksize: int, iterables: tuple[Iterable[Any], ...]) -> Iterator[list[tuple[Any, ...]]]:
    it = zip(*iterables)
    while chunk := list(itertools.islice(it, chunksize)):
        yield chunk


class CpuExecutor(_PoolExecutor, Executor):
    """A ``ProcessPoolExecutor``-shaped executor over rustpool's CPU pool.

    ``isolation`` picks where the Python code runs:

    - ``"interpreter"`` (CPython 3.13+): subinterpreters with their own GIL, one per worker, so
      pure-Python code runs in parallel. The call and its result cross as pickle protocol 5
      (cloudpickle for lambdas and closures when installed); functions of the caller's
      ``__main__`` work as with multiprocessing's spawn. A call whose modules refuse
      subinterpreters (numpy, any PyO3 module) raises ``WorkerUnsupported`` naming the module.
    - ``"thread"``: threads of this interpreter, in parallel only while the code releases the GIL
      (hashlib, zlib, numpy, Rust extensions); no pickling, any callable.
    - ``"auto"`` (default): ``"interpreter"`` on 3.13+, and a call that cannot cross into a
      subinterpreter (cannot be pickled, or refuses to load there) runs on threads instead, a
      choice remembered per function; ``"thread"`` before 3.13 and when an initializer is given.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        isolation: str = "auto",
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        thread_name_prefix: str = "",
    ) -> None:
        _check_workers(max_workers)
        _check_initializer(initializer)
        prefix = thread_name_prefix or f"CpuExecutor-{next(_counter)}"
        self._pool = CpuPool(max_workers, isolation, prefix, initializer, tuple(initargs))
        self._max_workers = self._pool.max_workers
        _live.add(self)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """``Executor.map``; ``chunksize`` > 1 sends the calls in batches, as ProcessPoolExecutor does."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        batches = super().map(process_chunk, itertools.repeat(fn), _chunks(chunksize, iterables), timeout=timeout)
        return itertools.chain.from_iterable(batches)

    @property
    def isolation(self) -> str:
        """The mode this pool runs in (``"auto"`` resolved)."""
        return str(self._pool.isolation)

    def _describe(self) -> str:
        return f" isolation={self.isolation!r}"


# The default pools behind to_thread and run_cpu, made on first use.
_lock = threading.Lock()
_default_thread: ThreadExecutor | None = None
_default_cpu: CpuExecutor | None = None
_thread_rs: BlockingPool | None = None
_cpu_rs: CpuPool | None = None
_settings: dict[str, Any] = {
    "max_threads": None,
    "keep_alive": DEFAULT_KEEP_ALIVE,
    "cpu_workers": None,
    "isolation": "auto",
}


def settings() -> dict[str, Any]:
    """The default pools' settings (what ``configure`` takes): ``configure(**settings())`` is a no-op."""
    return dict(_settings)


def default_thread_executor() -> ThreadExecutor:
    """The pool behind ``to_thread`` (made on first use)."""
    global _default_thread, _thread_rs
    with _lock:
        if _default_thread is None:
            _default_thread = ThreadExecutor(
                _settings["max_threads"], "rustpool-to_thread", keep_alive=_settings["keep_alive"]
            )
            _thread_rs = _default_thread._pool
        return _default_thread


def default_cpu_executor() -> CpuExecutor:
    """The pool behind ``run_cpu`` (made on first use)."""
    global _default_cpu, _cpu_rs
    with _lock:
        if _default_cpu is None:
            _default_cpu = CpuExecutor(
                _settings["cpu_workers"], _settings["isolation"], thread_name_prefix="rustpool-run_cpu"
            )
            _cpu_rs = _default_cpu._pool
        return _default_cpu


_UNSET: Any = object()


def configure(
    *,
    max_threads: int | None = _UNSET,
    keep_alive: float = _UNSET,
    cpu_workers: int | None = _UNSET,
    isolation: str = _UNSET,
) -> None:
    """Set up the default pools behind ``to_thread`` and ``run_cpu``.

    Only the settings named change. A default pool that already exists is replaced: the old one
    stops taking work and is shut down without waiting (calls it already has still complete).
    """
    global _default_thread, _default_cpu, _thread_rs, _cpu_rs
    new = dict(_settings)
    for key, value in (
        ("max_threads", max_threads),
        ("keep_alive", keep_alive),
        ("cpu_workers", cpu_workers),
        ("isolation", isolation),
    ):
        if value is not _UNSET:
            new[key] = value
    _check_workers(new["max_threads"])
    _check_workers(new["cpu_workers"])
    _rustpool.resolve_isolation(new["isolation"])  # ValueError for unknown or unavailable modes
    if not (math.isfinite(new["keep_alive"]) and new["keep_alive"] >= 0):
        raise ValueError("keep_alive must be a finite number of seconds >= 0")
    with _lock:
        old = []
        if (new["max_threads"], new["keep_alive"]) != (_settings["max_threads"], _settings["keep_alive"]):
            old.append(_default_thread)
            _default_thread = _thread_rs = None
        if (new["cpu_workers"], new["isolation"]) != (_settings["cpu_workers"], _settings["isolation"]):
            old.append(_default_cpu)
            _default_cpu = _cpu_rs = None
        _settings.update(new)
    for ex in old:
        if ex is not None:
            ex.shutdown(wait=False)


async def to_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``func(*args, **kwargs)`` on the blocking pool and await its result.

    The contract of ``asyncio.to_thread``: the call runs in a copy of the caller's contextvars
    context, its exception is raised here with its traceback, and cancelling the awaiting task
    stops a call that has not started (a running call finishes; its result is dropped).
    """
    pool = _thread_rs
    if pool is None:
        pool = default_thread_executor()._pool
    return await pool.run(func, *args, **kwargs)


async def run_cpu(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``func(*args, **kwargs)`` on the CPU pool and await its result.

    The contract of ``loop.run_in_executor(ProcessPoolExecutor(), ...)`` (no contextvars carried).
    See ``CpuExecutor`` for what each isolation mode runs in parallel.
    """
    pool = _cpu_rs
    if pool is None:
        pool = default_cpu_executor()._pool
    return await pool.run(func, *args, **kwargs)


def _at_exit() -> None:
    # Like concurrent.futures: let every pool finish its work before the interpreter goes, then
    # tell the Rust side that pool threads must not touch Python any more.
    for ex in list(_live):
        ex.shutdown(wait=True)
    # Executors collected without shutdown: their subinterpreters end by themselves; they must
    # all be gone before the main interpreter finalizes.
    _rustpool._join_interpreters()
    _rustpool._mark_exiting()


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
