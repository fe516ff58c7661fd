"""``CpuExecutor(cluster=...)``: the same executor, its calls run on a Dask cluster.

Why it exists: CPU work that outgrows one machine should not be rewritten. Dask distributed
schedules; rustpool keeps its own guarantees on every node:

- Calls are batched: a dispatcher thread takes what has been submitted (waiting ``batch_delay``
  for more while calls keep coming) and sends it as a few Dask tasks, about four per worker
  thread of the cluster, so 10,000 tiny calls are not 10,000 tasks (Dask costs ~1 ms per task).
- On its node, each call of a batch runs in a rustpool worker process (a ``CpuExecutor`` of
  that Dask worker, ``isolation="process"``, one worker process per Dask thread): a per-call
  timeout kills that process, not the Dask worker, and a call that crashes its process fails
  alone with ``WorkerCrashed``.
- A call cancelled before its batch goes never runs. Once sent it runs (Dask cannot stop a
  task), unless the pool has ``kill_on_cancel=True``: an awaited call (``run``, ``amap``)
  cancelled while it runs has its worker process on the node killed (``client.run`` reaches the
  node; there the batch's calls are awaited on a loop of the Dask worker's own).
- A Dask worker lost while it holds a batch fails only that batch's calls, with
  ``WorkerCrashed`` naming each call, unless ``retry_lost=True`` lets Dask run the batch again
  elsewhere (it may then run twice). Its scheduler's ``allowed-failures`` still bounds retries.
- ``Shared`` handles (``pool.share``) go to the cluster once (``client.scatter``).

This module imports ``distributed`` only when a cluster pool is made: it is an optional extra
(``pip install 'rustpool[dask]'``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
import traceback
import uuid
from concurrent.futures import CancelledError, Future
from typing import Any

from ._crossing import RemoteTraceback

# How many batches per worker thread of the cluster a burst of calls is cut into.
BATCHES_PER_THREAD = 4
# A batch holds at most this many calls.
MAX_BATCH = 2048
_batches = itertools.count()
# Names this client's marks apart from another client's on the same scheduler.
_session = uuid.uuid4().hex[:12]


class Cluster:
    """Where a cluster pool runs, and how: ``CpuExecutor(cluster=rustpool.Cluster(address,
    retry_lost=True))`` (a plain address, ``distributed.Client`` or Dask cluster object is
    ``Cluster(it)`` with the defaults).

    ``where``: a scheduler address (``"tcp://host:8786"``), a ``distributed.Client`` (used, never
    closed by the pool) or a Dask cluster object (``LocalCluster``, ...). ``retry_lost``: a batch
    whose Dask worker is lost runs again elsewhere (Dask's own retry: its calls may run twice);
    by default its calls fail with ``WorkerCrashed`` instead (each batch then costs a few
    scheduler round trips more). ``batch_delay``: how long the pool waits for more calls while
    batches are out (seconds)."""

    def __init__(self, where: Any, *, retry_lost: bool = False, batch_delay: float = 0.001) -> None:
        if not (isinstance(batch_delay, int | float) and 0 <= batch_delay < 1):
            raise ValueError(f"batch_delay must be seconds in [0, 1), not {batch_delay!r}")
        self.where = where
        self.retry_lost = bool(retry_lost)
        self.batch_delay = float(batch_delay)

    def __repr__(self) -> str:
        return f"rustpool.Cluster({self.where!r}, retry_lost={self.retry_lost}, batch_delay={self.batch_delay})"


def _needs_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ImportError(
            "CpuExecutor(cluster=...) and configure(cluster=...) run calls on a Dask cluster and need "
            "Dask distributed: pip install 'rustpool[dask]'"
        ) from e
    return distributed


class ClusterPool:
    """What ``CpuExecutor`` calls ``_pool`` when it runs on a cluster (the Rust ``CpuPool``'s
    methods, in Python: Dask is Python)."""

    def __init__(
        self, cluster: Any, max_workers: int | None, *, kill_on_cancel: bool = False, connect_timeout: float = 10.0
    ) -> None:
        distributed = self._distributed = _needs_distributed()
        options = cluster if isinstance(cluster, Cluster) else Cluster(cluster)
        cluster, batch_delay, retry_lost = options.where, options.batch_delay, options.retry_lost
        if isinstance(cluster, distributed.Client):
            self._client, self._owns_client = cluster, False
        else:
            address = getattr(cluster, "scheduler_address", cluster)  # a LocalCluster, or an address
            if not isinstance(address, str):
                raise TypeError(
                    f"cluster must be a scheduler address, a distributed.Client or a Dask cluster, not {cluster!r}"
                )
            # A synchronous client (its own event loop thread), even when made inside a coroutine.
            self._client = distributed.Client(
                address, set_as_default=False, timeout=connect_timeout, asynchronous=False
            )
            self._owns_client = True
        threads = sum(self._client.nthreads().values())
        self.max_workers = max_workers or max(threads, 1)
        self._threads_seen: int = max(int(threads), 1)
        self._threads_at = time.monotonic()
        self.isolation = "process"
        self._delay = batch_delay
        self._retry_lost = retry_lost
        self._kill_on_cancel = kill_on_cancel
        # Under kill_on_cancel: where each sent call is, (batch name, index), until it settles.
        self._where: dict[Future[Any], tuple[str, int]] = {}
        self._lock = threading.Condition()
        self._queue: collections.deque[tuple[Future[Any], Any, tuple[Any, ...], dict[str, Any], float | None]] = (
            collections.deque()
        )
        self._sent: dict[Any, list[Future[Any]]] = {}
        self._clearing = 0  # marks of settled batches still being cleared
        # For stats(): calls "done", "failed", "cancelled", and batches "lost" with a Dask worker.
        self._counts: collections.Counter[str] = collections.Counter()
        self._closing = False
        self._scattered: dict[Any, Any] = {}
        self._scatter_lock = threading.Lock()
        self._dispatcher = threading.Thread(target=self._dispatch, name="rustpool-cluster-dispatch", daemon=True)
        self._dispatcher.start()

    # --- the CpuPool surface ------------------------------------------------------------------

    @property
    def is_shutdown(self) -> bool:
        return self._closing

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._queue) + sum(len(b) for b in self._sent.values())

    def check_timeout(self, timeout: float) -> None:
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")

    def check_isolation(self, isolation: str, timed: bool) -> None:
        if isolation != "process":
            raise ValueError(
                f'a cluster pool runs every call in worker processes on its nodes: isolation="{isolation}" '
                'cannot be chosen per call (only "process")'
            )

    def placements(self) -> list[tuple[str, str, str, int, int]]:
        return []

    def stats(self) -> dict[str, Any]:
        """``PoolStats``'s counts for the cluster: workers are the cluster's Dask threads (as
        last asked), running the calls of batches out; times are not kept here (None)."""
        with self._lock:
            queued = len(self._queue)
            running = sum(len(b) for b in self._sent.values())
            counts = self._counts.copy()
        workers = self._threads_seen
        return {
            "workers": workers,
            "busy": min(running, workers),
            "idle": max(workers - running, 0),
            "queued": queued,
            "running": running,
            "done": counts["done"],
            "failed": counts["failed"],
            "cancelled": counts["cancelled"],
            "crashed": counts["lost"],
            "replaced": 0,
            "wait_median": None,
            "wait_p99": None,
            "run_median": None,
            "run_p99": None,
        }

    def submit(
        self,
        f: Future[Any],
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        timeout: float | None = None,
        isolation: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        call = (f, fn, args, kwargs or {}, timeout)
        with self._lock:
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            # A lone call from a thread that runs no event loop goes at once, from this thread
            # (what a raw ``client.submit`` costs it): no hop to the dispatcher. From a loop, or
            # while batches are out, the dispatcher sends it (and batches what keeps coming).
            alone = not self._queue and not self._sent and asyncio._get_running_loop() is None
            if not alone:
                self._queue.append(call)
                self._lock.notify_all()
        if alone and f.set_running_or_notify_cancel():
            self._send([call])

    def run(self, fn: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return self.run_timed(None, fn, args, kwargs, None)

    def run_timed(
        self, timeout: float | None, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, isolation: Any
    ) -> asyncio.Future[Any]:
        """The call, submitted now, as a future of the running loop (as the Rust pool's ``run``):
        cancelling it before its batch goes means it never runs."""
        f: Future[Any] = Future()
        self.submit(f, fn, args, kwargs, timeout, isolation)
        awaited = asyncio.wrap_future(f)
        if self._kill_on_cancel:
            awaited.add_done_callback(lambda a: self._kill_running(f) if a.cancelled() else None)
        return awaited

    def _kill_running(self, f: Future[Any]) -> None:
        """An awaited call was cancelled after its batch went (under ``kill_on_cancel``): ask
        the node that runs it to kill its worker process."""
        with self._lock:
            where = self._where.get(f)
        if where is not None and not f.done():
            self._client.loop.add_callback(self._kill_remote, *where)

    async def _kill_remote(self, batch: str, index: int) -> None:
        try:
            await self._client.run(_node_cancel, batch, index)  # every worker: one holds the batch
        except BaseException:
            pass  # the batch settled meanwhile, or the cluster is gone

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closing = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
                    self._counts["cancelled"] += 1
            self._lock.notify_all()
        if wait:
            self._dispatcher.join()
            with self._lock:
                while self._sent:
                    self._lock.wait(0.1)
                # The marks of settled batches are being cleared: let that finish (bounded).
                deadline = time.monotonic() + 5.0
                while self._clearing and time.monotonic() < deadline:
                    self._lock.wait(0.05)
        if self._owns_client and (wait or not self._sent):
            try:
                self._client.close()
            except Exception:
                pass

    # --- dispatch: calls to batches to Dask tasks ---------------------------------------------

    def _threads(self) -> int:
        """The cluster's worker threads, asked of the scheduler at most once a second."""
        now = time.monotonic()
        if now - self._threads_at > 1.0:
            try:
                self._threads_seen = max(int(sum(self._client.nthreads().values())), 1)
            except Exception:
                pass
            self._threads_at = now
        return self._threads_seen

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if not self._queue and self._closing:
                    return
            # While batches are out, calls that keep coming share the next ones: wait a moment
            # for them. A call that finds nothing in flight goes at once.
            if self._sent:
                time.sleep(self._delay)
            with self._lock:
                taken = list(self._queue)
                self._queue.clear()
            calls = [c for c in taken if c[0].set_running_or_notify_cancel()]
            if len(calls) < len(taken):
                with self._lock:
                    self._counts["cancelled"] += len(taken) - len(calls)  # cancelled before they went
            if calls:
                self._send(calls)

    def _send(self, calls: list[tuple[Future[Any], Any, tuple[Any, ...], dict[str, Any], float | None]]) -> None:
        threads = self._threads()
        per = max(1, min(MAX_BATCH, -(-len(calls) // (threads * BATCHES_PER_THREAD))))
        for start in range(0, len(calls), per):
            chunk = calls[start : start + per]
            payload = [(fn, self._unshare_call(fn, args), self._unshare_kw(kw), t) for _, fn, args, kw, t in chunk]
            futures = [c[0] for c in chunk]
            # The batch's first run sets a Dask Event of its name (unset until then: nothing to
            # make here); a second run finds it set. Cleared (deleted) once the batch settles.
            batch = f"rustpool-ran-{_session}-{next(_batches)}"
            mark = None if self._retry_lost else batch
            try:
                awaited = batch if self._kill_on_cancel else None
                task = self._client.submit(_node_run, payload, mark, awaited, pure=False)
            except Exception as e:
                for f in futures:
                    _fail(f, e)
                continue
            with self._lock:
                self._sent[task] = futures
                if self._kill_on_cancel:
                    self._where.update((f, (batch, i)) for i, f in enumerate(futures))
            # Settled by a coroutine on the client's own event loop, where Dask learns that the
            # task finished: no hop through another thread on the way back.
            self._client.loop.add_callback(self._settle_batch, task, futures, mark)

    def _unshare_call(self, fn: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` with ``Shared`` handles scattered (also inside a ``map`` batch's calls)."""
        from ._crossing import process_chunk

        if fn is process_chunk and len(args) == 2:
            return (args[0], [self._unshare(a) for a in args[1]])
        return self._unshare(args)

    def _unshare(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        from ._shared import Shared

        if not any(type(a) is Shared for a in args):
            return args
        return tuple(self._scatter(a) if type(a) is Shared else a for a in args)

    def _unshare_kw(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from ._shared import Shared

        if not any(type(v) is Shared for v in kwargs.values()):
            return kwargs
        return {k: self._scatter(v) if type(v) is Shared else v for k, v in kwargs.items()}

    def _scatter(self, handle: Any) -> Any:
        """A Dask future of a ``Shared`` handle's value, scattered once to every worker (Dask
        passes the value itself to the task)."""
        key = id(handle)
        with self._scatter_lock:  # the dispatcher and a caller sending a lone call
            got = self._scattered.get(key)
            if got is None or got[0] is not handle:
                got = (handle, self._client.scatter(handle.value, broadcast=True, hash=False))
                self._scattered[key] = got
        return got[1]

    # --- settle: Dask results to the calls' futures ---------------------------------------------

    async def _settle_batch(self, task: Any, futures: list[Future[Any]], mark: str | None) -> None:
        """On the client's event loop: wait for the batch's task, settle its calls' futures,
        then clear its mark."""
        lost = False
        try:
            outcomes = await task
        except BaseException as e:  # a lost worker, a cluster gone, a client closed
            outcomes = [(False, _lost(e, i, len(futures)), "") for i in range(len(futures))]
            lost = True
        with self._lock:
            self._counts["lost"] += lost
            self._counts.update(
                "done" if ok else "cancelled" if isinstance(value, CancelledError) else "failed"
                for ok, value, _ in outcomes
            )
            # Gone from the batches out before the callers wake: the next lone call goes at once.
            self._sent.pop(task, None)
            for f in futures if self._where else ():
                self._where.pop(f, None)
            if mark is not None:
                self._clearing += 1
            self._lock.notify_all()
        for f, (ok, value, tb) in zip(futures, outcomes, strict=False):
            if ok:
                f.set_result(value)
            else:
                if tb:
                    value.__cause__ = RemoteTraceback(tb)
                f.set_exception(value)
        if mark is None:
            return
        try:
            await self._client.scheduler.event_clear(name=mark)
        except BaseException:
            pass  # the cluster is gone: so is the mark
        finally:
            with self._lock:
                self._clearing -= 1
                self._lock.notify_all()


def _fail(f: Future[Any], e: BaseException) -> None:
    if not f.done():
        f.set_exception(e)


def _lost(e: BaseException, i: int, n: int) -> BaseException:
    from ._errors import WorkerCrashed

    return WorkerCrashed(
        f"the Dask worker running call {i + 1} of a batch of {n} was lost or failed before the batch returned "
        f"({type(e).__name__}: {e}); the call may or may not have run"
    )


# --- on the node -----------------------------------------------------------------------------------

_node_pool: Any = None
_node_lock = threading.Lock()


def _local_pool() -> Any:
    """This Dask worker's rustpool pool: one worker process per Dask thread."""
    global _node_pool
    with _node_lock:
        if _node_pool is None:
            from distributed import get_worker

            from ._api import CpuExecutor

            threads = get_worker().state.nthreads
            # kill_on_cancel acts on awaited calls only: the batches of kill_on_cancel pools.
            _node_pool = CpuExecutor(
                threads, isolation="process", thread_name_prefix="rustpool-on-dask", kill_on_cancel=True
            )
        return _node_pool


_node_loop: asyncio.AbstractEventLoop | None = None
# The awaited calls of kill_on_cancel batches running here, by (batch name, index).
_node_awaited: dict[tuple[str, int], asyncio.Future[Any]] = {}


def _awaiting_loop() -> asyncio.AbstractEventLoop:
    """This Dask worker's event loop (a thread of its own) that awaits kill_on_cancel batches:
    cancelling an awaited call kills its worker process."""
    global _node_loop
    with _node_lock:
        if _node_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="rustpool-on-dask-loop", daemon=True).start()
            _node_loop = loop
        return _node_loop


def _node_cancel(batch: str, index: int) -> bool:
    """Cancel call ``index`` of ``batch`` if it runs here (its worker process is killed)."""
    awaited = _node_awaited.get((batch, index))
    if awaited is None or _node_loop is None:
        return False
    _node_loop.call_soon_threadsafe(awaited.cancel)
    return True


Calls = list[tuple[Any, tuple[Any, ...], dict[str, Any], float | None]]


def _run_awaited(pool: Any, calls: Calls, batch: str) -> list[Any]:
    """A kill_on_cancel batch: each call awaited on this node's loop, cancellable by name."""

    async def run_all() -> list[asyncio.Future[Any]]:
        awaited = []
        try:
            for i, (fn, args, kwargs, timeout) in enumerate(calls):
                ex = pool.options(timeout=timeout) if timeout is not None else pool
                awaited.append(asyncio.ensure_future(ex.run(fn, *args, **kwargs)))
                _node_awaited[(batch, i)] = awaited[-1]
            await asyncio.wait(awaited)
        finally:
            for i in range(len(calls)):
                _node_awaited.pop((batch, i), None)
        return awaited

    awaited = asyncio.run_coroutine_threadsafe(run_all(), _awaiting_loop()).result()
    out: list[Any] = []
    for a in awaited:
        if a.cancelled():
            out.append((False, CancelledError("call cancelled by its caller; its worker process was killed"), ""))
        elif (e := a.exception()) is not None:
            out.append(_failed(e))
        else:
            out.append((True, a.result(), ""))
    return out


def _claim(mark: str) -> bool:
    """Set the batch's Dask ``Event`` (the scheduler's ``event_*`` handlers, called straight
    from this worker: a fraction of ``distributed.Event``'s cost); False when it was set already."""
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()

    async def claim() -> bool:
        if await worker.scheduler.event_is_set(name=mark):
            return False
        await worker.scheduler.event_set(name=mark)
        return True

    return bool(sync(worker.loop, claim))


def _node_run(calls: Calls, mark: str | None, awaited: str | None) -> list[Any]:
    """Run a batch on this node, each call in a rustpool worker process: ``(True, result, "")``
    or ``(False, exception, remote traceback)`` per call, in order. ``mark``: the name of the
    batch's Dask ``Event`` (None under ``retry_lost``): unset on the batch's first run, set by
    it; a second run (its first worker was lost) finds it set and runs nothing. ``awaited``: the
    batch's name when its pool kills cancelled calls (its calls are then awaited, by name)."""
    if mark is not None and not _claim(mark):
        raise RuntimeError("the Dask worker that began this batch was lost; it is not run again (retry_lost=False)")
    pool = _local_pool()
    if awaited is not None:
        return _run_awaited(pool, calls, awaited)
    futures = []
    for fn, args, kwargs, timeout in calls:
        ex = pool.options(timeout=timeout) if timeout is not None else pool
        try:
            futures.append(ex.submit(fn, *args, **kwargs))
        except BaseException as e:
            failed: Future[Any] = Future()
            failed.set_exception(e)
            futures.append(failed)
    out: list[Any] = []
    for f in futures:
        try:
            out.append((True, f.result(), ""))
        except BaseException as e:
            out.append(_failed(e))
    return out


def _failed(e: BaseException) -> tuple[bool, BaseException, str]:
    cause = e.__cause__
    tb = str(cause) if isinstance(cause, RemoteTraceback) else "".join(traceback.format_exception(e))
    return (False, _portable(e), tb)


def _portable(e: BaseException) -> BaseException:
    """``e`` if it pickles (Dask sends it back), else a RuntimeError that says what it was."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        e.__cause__ = None  # the traceback travels as text
        e.__context__ = None
        return e
    except Exception:
        return RuntimeError(f"{type(e).__module__}.{type(e).__qualname__}: {e} (the exception could not be pickled)")
