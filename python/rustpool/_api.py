"""rustpool's public API (re-exported by ``rustpool``).

- ``await to_thread(fn, *args, **kwargs)``: blocking I/O on an elastic pool of threads owned by
  Rust (tokio's blocking pool), with the contract of ``asyncio.to_thread``.
- ``await run_cpu(fn, *args, **kwargs)``: CPU work on a bounded pool (one worker per core).
- ``ThreadExecutor`` / ``CpuExecutor``: ``concurrent.futures`` executors over the same pools, for
  plain scripts, ``loop.run_in_executor`` and ``loop.set_default_executor``; ``await pool.run(...)``
  is their awaitable form.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import math
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import thread as _cf_thread
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypedDict, TypeVar

from . import _rustpool
from ._cluster import Cluster
from ._crossing import (
    RemoteTraceback,
    ThreadFallbackWarning,
    WorkerUnsupported,
    process_chunk,
    refuse_while_loading_main,
)
from ._errors import WorkerCrashed
from ._progress import Progress, atrack, meter, total_of, track
from ._rustpool import BlockingPool, CpuPool
from ._shared import Shared
from ._stats import PoolStats
from ._watchdog import BlockedFrame, LoopBlock, LoopWatchdog, watch_loop

if TYPE_CHECKING:
    # asyncio only at type-checking time: a plain script that uses the executors does not pay its
    # import (~90 ms here); awaiting code has it loaded already.
    import asyncio
    from multiprocessing.context import BaseContext

P = ParamSpec("P")
T = TypeVar("T")

IsolationMode = Literal["auto", "thread", "interpreter", "process"]
Mode = Literal["thread", "interpreter", "process"]
"""Where a call runs, once ``"auto"`` has chosen (``CpuExecutor.isolation``, ``pin``, per-call
``options(isolation=...)``)."""
"""Where ``run_cpu`` / ``CpuExecutor`` run Python code (see ``CpuExecutor``)."""
FallbackPolicy = Literal["warn", "error"]
"""What ``isolation="auto"`` does with a call that cannot be isolated: run it on a thread of this
process with a ``ThreadFallbackWarning`` (once per function), or fail it."""

__version__: str = _rustpool.__version__
__all__ = [
    "DEFAULT_KEEP_ALIVE",
    "DEFAULT_MAX_THREADS",
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

DEFAULT_MAX_THREADS: int = _rustpool.DEFAULT_MAX_THREADS
DEFAULT_KEEP_ALIVE: float = 10.0

_counter = itertools.count()


def _check_workers(max_workers: int | None) -> None:
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")


def _check_initializer(initializer: Callable[..., object] | None) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")


async def _arg_tuples(iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...]) -> AsyncIterator[tuple[Any, ...]]:
    """``zip(*iterables)``, where any of them may be an async iterable, pulled lazily."""
    its = [it.__aiter__() if isinstance(it, AsyncIterable) else iter(it) for it in iterables]
    plain = [it for it in its if not isinstance(it, AsyncIterator)]
    if len(plain) == len(its):
        for args in zip(*plain):
            yield args
        return
    while True:
        row: list[Any] = []
        for it in its:
            try:
                row.append(await anext(it) if isinstance(it, AsyncIterator) else next(it))
            except (StopIteration, StopAsyncIteration):
                return
        yield tuple(row)


def _settle_abandoned(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel calls an async map no longer waits for (mark finished ones' errors as seen)."""
    for f in futures:
        if not f.done():
            f.cancel()
        elif not f.cancelled():
            f.exception()


async def _amap(
    start: Callable[[tuple[Any, ...]], asyncio.Future[T]],
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
    ordered: bool,
    limit: int | None,
    workers: int,
) -> AsyncGenerator[T, None]:
    if limit is None:
        limit = max(64, 4 * workers)
    if limit < 1:
        raise ValueError("limit must be >= 1")
    args_it = _arg_tuples(iterables)
    if ordered:
        queue: collections.deque[asyncio.Future[T]] = collections.deque()
        try:
            async for args in args_it:
                queue.append(start(args))
                if len(queue) >= limit:
                    yield await queue.popleft()
            while queue:
                yield await queue.popleft()
        finally:
            _settle_abandoned(queue)
        return
    pending: set[asyncio.Future[T]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    args = await args_it.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.add(start(args))
            if not pending:
                return
            import asyncio

            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:
        _settle_abandoned(pending)


class _PoolExecutor:
    """What both executors share: their Rust pool (``_pool``) does the work."""

    _pool: Any
    _max_workers: int

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        f: Future[T] = Future()
        self._pool.submit(f, fn, args, kwargs)
        return f

    submit.__doc__ = Executor.submit.__doc__

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on this pool (a ``ThreadExecutor`` runs it in a copy of
        the caller's contextvars context, as ``to_thread`` does; a ``CpuExecutor`` carries none)."""
        return await self._pool.run(fn, *args, **kwargs)  # type: ignore[no-any-return]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait, cancel_futures)

    shutdown.__doc__ = Executor.shutdown.__doc__

    def amap(
        self,
        fn: Callable[..., T],
        /,
        *iterables: Iterable[Any] | AsyncIterable[Any],
        ordered: bool = True,
        limit: int | None = None,
        progress: Progress = False,
    ) -> AsyncGenerator[T, None]:
        """Async ``map``: ``async for result in pool.amap(fn, items): ...``.

        Pulls arguments lazily (the iterables may be async iterables) and keeps at most ``limit``
        calls in flight (default ``max(64, 4 * max_workers)``). With ``ordered=True`` results come
        in the order of the arguments, else as they complete. The first exception is raised at its
        place; leaving the loop early (break, an exception, cancellation) cancels the calls not
        started yet (at once with ``contextlib.aclosing(pool.amap(...))``, else when the
        generator is collected). ``progress``: True for a tqdm bar (the ``rustpool[progress]``
        extra), a tqdm bar of yours, or ``callback(done, total)``; it counts results as they
        are handed out."""
        m = meter(progress, fn, total_of(iterables))
        return atrack(_amap(lambda a: self._pool.run(fn, *a), iterables, ordered, limit, self._max_workers), m)

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def _describe(self) -> str:
        return ""

    def stats(self) -> PoolStats:
        """What this pool has done and is doing: workers alive, busy and idle; calls queued,
        running, done, failed and cancelled; worker processes crashed and replaced; the median
        and p99 of the time calls wait to start and take to run (see ``PoolStats``)."""
        return PoolStats.from_counts(self._pool.stats())

    def __repr__(self) -> str:
        state = "shutdown " if self._pool.is_shutdown else ""
        return (
            f"<rustpool.{type(self).__name__} max_workers={self._max_workers}{self._describe()} "
            f"{state}{self.stats().brief()}>"
        )


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
        # The base class checks the arguments (its errors, word for word) and sets the attributes
        # code may read (_max_workers, _thread_name_prefix, _initializer...); it starts no thread.
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        if max_workers is None:
            max_workers = DEFAULT_MAX_THREADS
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadExecutor-{next(_counter)}"
        self._pool = BlockingPool(max_workers, keep_alive, self._thread_name_prefix, initializer, tuple(initargs))

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        progress: Progress = False,
    ) -> Iterator[T]:
        """``Executor.map``, with Python 3.14's ``buffersize``: at most that many calls are
        submitted ahead of the result being read (the iterables are then read lazily).
        ``chunksize`` is ignored, as by ``ThreadPoolExecutor``. ``progress``: True for a tqdm
        bar (the ``rustpool[progress]`` extra), a tqdm bar of yours, or ``callback(done,
        total)``; it counts results as they are read."""
        _check_buffersize(buffersize)
        m = meter(progress, fn, total_of(iterables))
        return track(_results(self.submit, fn, zip(*iterables), timeout, buffersize), m)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        self._pool.shutdown(wait, cancel_futures)

    shutdown.__doc__ = Executor.shutdown.__doc__

    @property
    def keep_alive(self) -> float:
        return float(self._pool.keep_alive)


def _check_buffersize(buffersize: int | None) -> None:
    if buffersize is None:
        return
    if not isinstance(buffersize, int) or isinstance(buffersize, bool):
        raise TypeError("buffersize must be an integer or None")
    if buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


def _results(
    submit: Callable[..., Future[Any]],
    fn: Callable[..., T],
    calls: Iterator[tuple[Any, ...]],
    timeout: float | None,
    buffersize: int | None,
) -> Iterator[T]:
    """``Executor.map``'s contract over ``submit`` (3.14's, ``buffersize`` included): the calls
    are submitted now (the first ``buffersize`` of them, then one more per result read), results
    come in order, ``timeout`` counts from this call, and the calls not read are cancelled when
    the iterator is closed or collected."""
    end = None if timeout is None else time.monotonic() + timeout
    ahead = calls if buffersize is None else itertools.islice(calls, buffersize)
    fs = collections.deque(submit(fn, *args) for args in ahead)

    def results() -> Iterator[T]:
        try:
            while fs:
                if buffersize is not None and (args := next(calls, None)) is not None:
                    fs.append(submit(fn, *args))
                yield _result_or_cancel(fs.popleft(), None if end is None else end - time.monotonic())
        finally:
            for f in fs:
                f.cancel()

    return results()


def _flatten(batches: Iterator[list[T]]) -> Iterator[T]:
    """The results of batches, one by one; closing it closes ``batches`` (which cancels the
    batches not begun)."""
    try:
        for batch in batches:
            yield from batch
    finally:
        batches.close()  # type: ignore[attr-defined]


def _result_or_cancel(f: Future[T], timeout: float | None) -> T:
    try:
        return f.result(timeout)
    finally:
        f.cancel()  # past its timeout: the call is not wanted any more (no-op once done)


def _chunks(chunksize: int, calls: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(calls, chunksize)):
        yield chunk


def _auto_chunksize(n: int, workers: int) -> int:
    # multiprocessing.Pool.map's rule: about four batches per worker.
    size, extra = divmod(n, workers * 4)
    return max(1, size + bool(extra))


class CpuExecutor(_PoolExecutor, Executor):
    """A ``ProcessPoolExecutor``-shaped executor over rustpool's CPU pool.

    ``isolation`` picks where the Python code runs:

    - ``"process"``: worker processes (fresh interpreters started by rustpool, never forked from
      this one). The call and its result cross as pickle protocol 5 (cloudpickle for lambdas and
      closures when installed); functions of the caller's ``__main__`` work as with
      multiprocessing's spawn. A worker that dies fails only the call it ran, with
      ``WorkerCrashed``; the pool starts a new one. Workers die with this process.
    - ``"interpreter"`` (CPython 3.13+): subinterpreters with their own GIL, one per worker, in
      this process: the same crossing rules, cheaper calls and starts, but a module that refuses
      subinterpreters (numpy, any PyO3 module) raises ``WorkerUnsupported`` naming it.
    - ``"thread"``: threads of this interpreter, in parallel only while the code releases the GIL
      (hashlib, zlib, numpy, Rust extensions); no pickling, any callable.
    - ``"auto"`` (default): ``"interpreter"`` on 3.13+, ``"process"`` before (and whenever an
      option only processes have is given). Under ``"auto"`` a call runs in the best mode that can
      take it: one that refuses subinterpreters (or has a timeout) in a process; one that cannot
      be isolated at all (it or its arguments cannot be pickled, even by value) on a thread of
      this process, said with a ``ThreadFallbackWarning`` once per function, or refused with
      its error under ``fallback="error"``. The choice is remembered per function.

    Functions that no worker can import by name (lambdas, closures, and what a ``__main__``
    without a file or without an ``if __name__ == "__main__":`` guard defines: ``python -c``,
    stdin, the REPL, notebooks) cross by value (cloudpickle); workers never run such a
    ``__main__`` again.

    The arguments before ``*`` are ``ProcessPoolExecutor``'s. ``mp_context`` (a multiprocessing
    context) is accepted and asks for worker processes; rustpool starts them fresh (never a
    fork of this process, whatever the context's start method), so functions and arguments
    always cross as pickles, as with "spawn" and "forkserver".

    Process-only options: ``initializer``/``initargs`` run in each new worker process (a failing
    initializer breaks the pool, as with ProcessPoolExecutor); ``max_tasks_per_child`` and
    ``max_memory_per_child`` (bytes of RSS) replace a worker after that many calls or once it
    grows past that size; ``kill_on_cancel=True`` kills the worker of an awaited call (``run``,
    ``amap``) that is cancelled while it runs. Per-call timeouts: ``pool.options(timeout=...)``.

    ``cluster`` (a scheduler address such as ``"tcp://host:8786"``, a ``distributed.Client`` or a
    Dask cluster object; needs ``pip install 'rustpool[dask]'``): the calls run on that Dask
    cluster, batched into a few Dask tasks, each call in a rustpool worker process on its node
    (timeouts kill that process; a crash fails that call with ``WorkerCrashed``). ``max_workers``
    then only sizes ``map``'s batches (default: the cluster's threads). See ``rustpool._cluster``.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        isolation: IsolationMode = "auto",
        fallback: FallbackPolicy = "warn",
        learn: bool = True,
        thread_name_prefix: str = "",
        max_memory_per_child: int | None = None,
        kill_on_cancel: bool = False,
        cluster: Any = None,
    ) -> None:
        _check_workers(max_workers)
        _check_initializer(initializer)
        if cluster is not None:
            self._on_cluster(cluster, max_workers, isolation, locals())
            return
        if mp_context is not None and not callable(getattr(mp_context, "get_start_method", None)):
            raise TypeError(
                f"mp_context must be a multiprocessing context (multiprocessing.get_context()), not {mp_context!r}"
            )
        refuse_while_loading_main()
        prefix = thread_name_prefix or f"CpuExecutor-{next(_counter)}"
        self._pool = CpuPool(
            max_workers,
            isolation,
            prefix,
            initializer,
            tuple(initargs),
            max_tasks_per_child,
            max_memory_per_child,
            kill_on_cancel,
            mp_context is not None,
            fallback,
            learn,
        )
        # ProcessPoolExecutor's attributes, for code that reads them.
        self._max_workers = self._pool.max_workers
        self._mp_context = mp_context
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child

    def _on_cluster(self, cluster: Any, max_workers: int | None, isolation: str, given: dict[str, Any]) -> None:
        """Run this pool's calls on a Dask cluster (``rustpool._cluster``)."""
        local_only = {
            "mp_context": None,
            "initializer": None,
            "max_tasks_per_child": None,
            "max_memory_per_child": None,
            "learn": True,
            "fallback": "warn",
        }
        for name, default in local_only.items():
            if given[name] != default:
                raise ValueError(f"{name}= applies to local workers; a cluster pool (cluster=...) does not take it")
        if isolation not in ("auto", "process"):
            raise ValueError(
                f'a cluster pool runs each call in a worker process on its node: isolation="{isolation}" '
                'cannot be used with cluster= (leave "auto", or "process")'
            )
        from ._cluster import ClusterPool

        self._pool = ClusterPool(cluster, max_workers, kill_on_cancel=bool(given["kill_on_cancel"]))
        self._max_workers = self._pool.max_workers
        self._mp_context = None
        self._initializer = None
        self._initargs = ()
        self._max_tasks_per_child = None

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | Literal["auto"] = "auto",
        buffersize: int | None = None,
        progress: Progress = False,
    ) -> Iterator[T]:
        """``Executor.map``, sending the calls in batches of ``chunksize`` as ProcessPoolExecutor
        does. ``"auto"`` (default) makes about four batches per worker (``multiprocessing.Pool``'s
        rule) in the isolated modes, and one call per batch in ``"thread"`` mode (and where the
        number of calls is not known without reading the iterables while ``buffersize`` asks to
        read them lazily). ``buffersize`` (Python 3.14's): at most that many batches are submitted
        ahead of the results read. As with ProcessPoolExecutor, an exception is raised when its
        batch's turn comes."""
        return self._map(self.submit, fn, iterables, timeout, chunksize, buffersize, progress)

    def _map(
        self,
        submit: Callable[..., Future[Any]],
        fn: Callable[..., T],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        chunksize: int | Literal["auto"],
        buffersize: int | None,
        progress: Progress = False,
    ) -> Iterator[T]:
        _check_buffersize(buffersize)
        if chunksize == "auto":
            if self.isolation == "thread":
                chunksize = 1
            elif iterables and all(hasattr(it, "__len__") for it in iterables):
                chunksize = _auto_chunksize(min(len(it) for it in iterables), self._max_workers)  # type: ignore[arg-type]
            elif buffersize is not None:
                chunksize = 1
            else:
                listed = list(zip(*iterables))
                chunksize = _auto_chunksize(len(listed), self._max_workers)
                iterables = tuple(zip(*listed)) if listed else ((),)
        elif not isinstance(chunksize, int) or isinstance(chunksize, bool):
            raise TypeError(f'chunksize must be an int or "auto", not {chunksize!r}')
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        m = meter(progress, fn, total_of(iterables))
        calls = zip(*iterables)
        if chunksize == 1:
            return track(_results(submit, fn, calls, timeout, buffersize), m)
        batches = ((fn, chunk) for chunk in _chunks(chunksize, calls))
        return track(_flatten(_results(submit, process_chunk, batches, timeout, buffersize)), m)

    def share(self, obj: T) -> Shared[T]:
        """A handle that stands for ``obj`` in this pool's calls (and any other's): its big
        buffers go to shared memory once, and each worker rebuilds ``obj`` once, read only (a
        numpy array as a view of the shared pages), instead of receiving it with every call.
        For map-style work over one big input: ``pool.map(fn, itertools.repeat(h, n), range(n))``
        where ``h = pool.share(array)``; ``fn`` gets the array. ``h.close()`` frees the memory."""
        return Shared(obj)

    def options(self, *, timeout: float | None = None, isolation: Mode | None = None) -> CallOptions:
        """This pool with per-call options: ``pool.options(timeout=5).submit(fn, x)``.

        ``timeout`` (seconds): a call still running after it has its worker process killed and
        raises ``TimeoutError`` (the time counts from when the call starts to run; the pool
        replaces the worker). Needs ``isolation="process"`` or ``"auto"`` (where such calls run
        in processes). ``isolation`` (``"thread"``, ``"interpreter"`` or ``"process"``): where
        these calls run, whatever ``"auto"`` learnt for the function (a pool of a fixed mode
        takes only its own). The options never reach ``fn``: its own arguments stay its own."""
        return CallOptions(self, timeout, isolation)

    def placements(self) -> dict[str, Placement]:
        """Where ``isolation="auto"`` runs each function it has seen, and why (empty for the
        fixed modes): ``{"module.function": {"isolation": "thread", "why": "sampled: ...",
        "calls": 120, "samples": 2}}``. ``isolation`` is ``"sampling"`` while a sample runs and
        ``"unplaced"`` before one could be read."""
        return {
            name: {"isolation": where, "why": why, "calls": calls, "samples": samples}
            for name, where, why, calls, samples in self._pool.placements()
        }

    @property
    def isolation(self) -> Mode:
        """The mode this pool runs in (``"auto"`` resolved: where the functions it isolates run;
        ``placements()`` tells where each runs)."""
        mode: Mode = self._pool.isolation
        return mode

    def _describe(self) -> str:
        return f" isolation={self.isolation!r}"


class CallOptions:
    """A ``CpuExecutor`` with per-call options (made by ``CpuExecutor.options``): ``submit``,
    ``map``, ``run`` and ``amap`` as the executor's, each call with the options."""

    def __init__(self, executor: CpuExecutor, timeout: float | None, isolation: Mode | None = None) -> None:
        self._executor = executor
        self._timeout = timeout
        self._isolation = isolation
        # Checked now: a bad option is refused before any call is made.
        if timeout is not None:
            executor._pool.check_timeout(timeout)
        if isolation is not None:
            executor._pool.check_isolation(isolation, timeout is not None)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        f: Future[T] = Future()
        self._executor._pool.submit(f, fn, args, kwargs, self._timeout, self._isolation)
        return f

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | Literal["auto"] = 1,
        buffersize: int | None = None,
        progress: Progress = False,
    ) -> Iterator[T]:
        """``CpuExecutor.map`` with the options; one call per batch by default, so that the
        per-call timeout applies to each call (a batch's timeout covers the whole batch)."""
        return self._executor._map(self.submit, fn, iterables, timeout, chunksize, buffersize, progress)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._executor._pool.run_timed(self._timeout, fn, args, kwargs, self._isolation)  # type: ignore[no-any-return]

    def amap(
        self,
        fn: Callable[..., T],
        /,
        *iterables: Iterable[Any] | AsyncIterable[Any],
        ordered: bool = True,
        limit: int | None = None,
        progress: Progress = False,
    ) -> AsyncGenerator[T, None]:
        pool, timeout, isolation = self._executor._pool, self._timeout, self._isolation
        workers = self._executor.max_workers
        m = meter(progress, fn, total_of(iterables))
        calls = _amap(lambda a: pool.run_timed(timeout, fn, a, None, isolation), iterables, ordered, limit, workers)
        return atrack(calls, m)

    def __repr__(self) -> str:
        return f"<rustpool.CallOptions timeout={self._timeout!r} isolation={self._isolation!r} of {self._executor!r}>"


# The default pools behind to_thread and run_cpu, made on first use.
_lock = threading.Lock()
_default_thread: ThreadExecutor | None = None
_default_cpu: CpuExecutor | None = None
_thread_rs: BlockingPool | None = None
_cpu_rs: CpuPool | None = None


class Placement(TypedDict):
    """Where ``isolation="auto"`` runs one function (``CpuExecutor.placements()``)."""

    isolation: str
    why: str
    calls: int
    samples: int


F = TypeVar("F", bound=Callable[..., Any])


def pin(isolation: Mode) -> Callable[[F], F]:
    """Decorator: under ``isolation="auto"`` this function always runs in ``isolation``, never
    sampled (``@rustpool.pin("thread")`` for code you know releases the GIL). Pools of a fixed
    mode ignore it. Read when a pool first sees the function."""
    if isolation not in ("thread", "interpreter", "process"):
        raise ValueError(f'pin names where to run: "thread", "interpreter" or "process", not {isolation!r}')
    _rustpool.resolve_isolation(isolation)  # ValueError where this build lacks the mode

    def pinned(fn: F) -> F:
        try:
            fn.__rustpool_isolation__ = isolation  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            raise TypeError(
                f"rustpool.pin cannot mark {fn!r} (it takes no attributes): wrap it in a function, "
                "or choose per call with pool.options(isolation=...)"
            ) from None
        return fn

    return pinned


class Settings(TypedDict):
    """The default pools' settings (``settings()``; ``configure`` takes each as a keyword)."""

    max_threads: int | None
    keep_alive: float
    cpu_workers: int | None
    isolation: IsolationMode
    fallback: FallbackPolicy
    cluster: Any


_settings: Settings = {
    "max_threads": None,
    "keep_alive": DEFAULT_KEEP_ALIVE,
    "cpu_workers": None,
    "isolation": "auto",
    "fallback": "warn",
    "cluster": None,
}


def settings() -> Settings:
    """The default pools' settings (what ``configure`` takes): ``configure(**settings())`` is a no-op."""
    return _settings.copy()


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
                _settings["cpu_workers"],
                isolation=_settings["isolation"],
                fallback=_settings["fallback"],
                thread_name_prefix="rustpool-run_cpu",
                cluster=_settings["cluster"],
            )
            _cpu_rs = _default_cpu._pool
        return _default_cpu


_UNSET: Any = object()


def configure(
    *,
    max_threads: int | None = _UNSET,
    keep_alive: float = _UNSET,
    cpu_workers: int | None = _UNSET,
    isolation: IsolationMode = _UNSET,
    fallback: FallbackPolicy = _UNSET,
    cluster: Any = _UNSET,
) -> None:
    """Set up the default pools behind ``to_thread`` and ``run_cpu``.

    ``cluster`` (a Dask scheduler address, a ``distributed.Client`` or a Dask cluster): every
    ``run_cpu`` runs there from now on (``CpuExecutor(cluster=...)``); ``None`` goes back to
    local workers. ``to_thread`` always stays local.

    Only the settings named change. A default pool that already exists is replaced: the old one
    stops taking work and is shut down without waiting (calls it already has still complete).
    ``fallback`` is ``CpuExecutor``'s: ``"error"`` refuses to run a call that cannot be
    isolated on a thread of this process.
    """
    global _default_thread, _default_cpu, _thread_rs, _cpu_rs
    new = _settings.copy()
    for key, value in (
        ("max_threads", max_threads),
        ("keep_alive", keep_alive),
        ("cpu_workers", cpu_workers),
        ("isolation", isolation),
        ("fallback", fallback),
        ("cluster", cluster),
    ):
        if value is not _UNSET:
            new[key] = value  # type: ignore[literal-required]
    _check_workers(new["max_threads"])
    _check_workers(new["cpu_workers"])
    _rustpool.resolve_isolation(new["isolation"])  # ValueError for unknown or unavailable modes
    if new["fallback"] not in ("warn", "error"):
        raise ValueError(f"fallback must be one of ['warn', 'error'], not {new['fallback']!r}")
    if not (math.isfinite(new["keep_alive"]) and new["keep_alive"] >= 0):
        raise ValueError("keep_alive must be a finite number of seconds >= 0")
    with _lock:
        old: list[ThreadExecutor | CpuExecutor | None] = []
        if (new["max_threads"], new["keep_alive"]) != (_settings["max_threads"], _settings["keep_alive"]):
            old.append(_default_thread)
            _default_thread = _thread_rs = None
        if (new["cpu_workers"], new["isolation"], new["fallback"], new["cluster"]) != (
            _settings["cpu_workers"],
            _settings["isolation"],
            _settings["fallback"],
            _settings["cluster"],
        ):
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


def _interrupted() -> bool:
    """Whether the program is ending because of a Ctrl-C nobody caught (the interpreter records
    the uncaught exception before it runs the exit hooks)."""
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


_exited = False


def _at_exit(interrupts: int | None = None) -> None:
    # Like concurrent.futures: every pool (dropped and replaced ones included) finishes the work
    # it was given before the interpreter goes, then no pool thread touches Python again. After
    # a Ctrl-C, calls that have not begun are cancelled and worker processes are killed instead;
    # a Ctrl-C during the wait does the same, a second one ends the process. A Ctrl-C can land on
    # any line here: none of them may skip the wait.
    global _exited
    if _exited:
        return
    _exited = True
    try:
        try:
            if interrupts is None:
                interrupts = int(_interrupted())
        except KeyboardInterrupt:
            interrupts = 2  # one ended the program (most likely), this one its exit
        _rustpool._exit(interrupts)
    except KeyboardInterrupt:
        _exit_now()


def _exit_now() -> None:
    """A second Ctrl-C while pool threads still run Python: finalizing under them would crash
    the process, so end it now, as the user asked."""
    live = _rustpool._live_threads()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a closed stream or a third Ctrl-C cannot stop the exit
            pass
    os.write(2, f"rustpool: interrupted again; {live} pool thread(s) still running Python, exiting now\n".encode())
    os._exit(130)


def _at_exit_backstop() -> None:
    # atexit runs after threading's exit hooks and still before the interpreter finalizes. Here
    # only when threading's shutdown never reached `_at_exit`: an exception (a second Ctrl-C, in
    # practice) ended it first.
    if not _exited:
        _at_exit(2 if _interrupted() else 1)


def _after_fork_child() -> None:
    # None of the parent's pool threads exist here: the default pools are made again on first
    # use; executors made before the fork refuse calls with a RuntimeError naming the fork.
    global _lock, _default_thread, _default_cpu, _thread_rs, _cpu_rs
    _rustpool._after_fork_child()
    _lock = threading.Lock()
    _default_thread = _default_cpu = None
    _thread_rs = _cpu_rs = None


threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
atexit.register(_at_exit_backstop)
os.register_at_fork(
    before=_rustpool._before_fork, after_in_parent=_rustpool._after_fork_parent, after_in_child=_after_fork_child
)
