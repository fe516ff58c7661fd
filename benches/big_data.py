"""What big payloads cost on their way to a worker process or subinterpreter, and back.

Why it exists: the other benches send small arguments, where the per-call overhead dominates. Here
the argument (and for the echoes, the result) is 1 MB to 1 GB, so the time goes into pickling,
copying through pipes and the page faults of fresh memory; this is the baseline any shared-memory
transport has to beat, measured beside the standard library and the pools people pick for it.

Executors, 2 workers each, used from asyncio (``loop.run_in_executor``), one after another so that
the child processes seen belong to the one measured:

- ``ProcessPoolExecutor(2, mp_context=forkserver)``: the anchor; "x PPE" = PPE ms / this ms in the
  same run (above 1 is faster than ProcessPoolExecutor).
- ``rustpool.CpuExecutor(2, isolation="process")``.
- ``rustpool.CpuExecutor(2, isolation="interpreter")``: CPython 3.13+ and bytes workloads only
  (numpy refuses to load in a subinterpreter).
- ``loky.get_reusable_executor(max_workers=2)``.
- ``joblib.Parallel(n_jobs=2, backend="loky", max_nbytes="1M")``, numpy workloads only (its
  automatic memmapping applies to numpy arrays). Parallel is synchronous: each call runs in a thread
  through ``asyncio.to_thread``, whose ~0.1 ms is in its times. Each round is a fresh
  ``Parallel(...)`` call, so the array is written to a memmap (in /dev/shm where it fits) every
  time, as a new array would be; inside a ``with Parallel(...)`` block joblib would reuse the file
  of an identical array. ``"1M"`` means 1 MiB and only bigger arrays are memmapped: the 1 MB row
  is pickled as usual. The echoed array comes back pickled, a plain ndarray (joblib 1.6 here).

Workloads (benches/_big_workloads.py), payloads built in the parent (1 MB = 10**6 bytes):
"send bytes" (``len`` of ``os.urandom(n)``, an int back), "echo bytes" (the bytes back),
"numpy sum" (``numpy.ones(n // 8).sum()`` in the worker, a float back), "numpy echo" (the array
back). Every result is checked once, outside the timing. A size of 1000 (1 GB) runs only when
``--sizes`` asks for it and MemAvailable is above 6x the size; before each pool's pass over a size
that is checked again, for every size, and a pass the memory no longer allows is skipped (said
under the tables) rather than left to the OOM killer.

Per cell: the executor is warm (one untimed call of each workload with a 1 KB payload when it
starts; before each cell one more small call, then the baseline RSS is read, then one untimed call
with the real payload), then the median wall time of ``--rounds`` sequential calls, each awaited
with a 120 s timeout. Peak RSS over baseline (MiB): a thread reads the resident set (the VmRSS
counter, from /proc/PID/statm) of this process and of every process under it every 5 ms during the
timed rounds; "parent" is this process (subinterpreters included), "child" the largest growth
among the processes that came with the pool measured (its workers, grandchildren included, and
helpers such as the forkserver; "-": none, as for subinterpreters). The baseline is read before
the real payload's first call, so memory a worker keeps after it (malloc does not always hand it
back) still counts. The machine's other load shows in these numbers: compare within a run.

Run: ``python benches/big_data.py [--sizes 1,10,100] [--rounds 5] [--json PATH]``. It prints
markdown tables, one per workload, with the Python version and the command on top; ``--json``
also writes every raw number. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import glob
import importlib
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Literal

import _big_workloads as w

import rustpool

MB = 1_000_000
MIB = 1 << 20
WORKERS = 2
TIMEOUT_S = 120.0
SAMPLE_S = 0.005
SMALL = 1000  # bytes of the warm-up payloads
PPE = "PPE forkserver"

Call = Callable[[Callable[[Any], Any], Any], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "bytes" or "numpy": which payload it takes
    fn: Callable[[Any], Any]
    what: str


WORKLOADS = [
    Workload("send bytes", "bytes", w.send_len, "`len(payload)` of `os.urandom(n)` bytes; an int back"),
    Workload("echo bytes", "bytes", w.echo_bytes, "the bytes payload and back"),
    Workload("numpy sum", "numpy", w.numpy_sum, "`numpy.ones(n // 8)` built here, summed in the worker; a float back"),
    Workload("numpy echo", "numpy", w.numpy_echo, "the array and back"),
]


@dataclasses.dataclass
class Cell:
    workload: str
    size_mb: int
    executor: str
    rounds_ms: list[float]
    median_ms: float
    first_call_ms: float
    rss_parent_mib: float
    rss_child_mib: float | None
    processes_seen: int
    x_ppe: float | None = None


# --- RSS sampling -------------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")
HAS_CHILDREN_FILES = bool(glob.glob(f"/proc/{os.getpid()}/task/*/children"))


def rss(pid: int) -> int | None:
    """Resident set of ``pid`` in bytes (statm's second field: the counter VmRSS shows)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> list[int]:
    """Every process under ``root``, grandchildren included (forkserver's workers are)."""
    if HAS_CHILDREN_FILES:
        found: list[int] = []
        todo = [root]
        while todo:
            pid = todo.pop()
            for path in glob.glob(f"/proc/{pid}/task/*/children"):
                try:
                    with open(path) as f:
                        kids = [int(k) for k in f.read().split()]
                except OSError:
                    continue
                found.extend(kids)
                todo.extend(kids)
        return found
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found = []
    todo = [root]
    while todo:
        kids = parents.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


class RssSampler:
    """Peak RSS of this process and its descendants while running, against a baseline."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.base: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.first: dict[int, int] = {}
        self.ignored: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _snapshot(self, pids: list[int]) -> dict[int, int]:
        got = {}
        for pid in pids:
            value = rss(pid)
            if value is not None:
                got[pid] = value
        return got

    def ignore_existing(self) -> None:
        """Leave out the processes running now (another pool's leftovers: the forkserver, a
        resource tracker), so that "child" means the processes of the pool made next."""
        self.ignored = set(descendants(self.pid))

    def _pids(self) -> list[int]:
        return [self.pid, *(pid for pid in descendants(self.pid) if pid not in self.ignored)]

    def set_baseline(self) -> None:
        self.base = self._snapshot(self._pids())

    def _sample(self, pids: list[int]) -> None:
        for pid, value in self._snapshot(pids).items():
            self.first.setdefault(pid, value)
            if value > self.peak.get(pid, -1):
                self.peak[pid] = value

    def _run(self) -> None:
        pids = self._pids()
        n = 0
        while not self._stop.wait(SAMPLE_S):
            n += 1
            if n % 10 == 0:  # processes come and go rarely: look for them every 50 ms
                pids = self._pids()
            self._sample(pids)

    def start(self) -> None:
        self.peak, self.first = {}, {}
        self._sample(self._pids())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float | None, int]:
        """(parent's growth, largest descendant's growth or None, descendants seen), in MiB.

        A process born after the baseline counts from its first sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample(self._pids())
        parent = (self.peak[self.pid] - self.base.get(self.pid, self.first[self.pid])) / MIB
        growth = [
            (peak - self.base.get(pid, self.first[pid])) / MIB for pid, peak in self.peak.items() if pid != self.pid
        ]
        return parent, (max(growth) if growth else None), len(growth)


def short_of_memory(size_mb: int) -> str | None:
    """Why a payload of ``size_mb`` would not fit (MemAvailable must exceed 6x the size), or None."""
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, ValueError, StopIteration):
        return "MemAvailable unknown" if size_mb >= 1000 else None
    return f"needs MemAvailable > {6 * size_mb} MB, have {free // MB} MB" if free <= 6 * size_mb * MB else None


# --- executors ----------------------------------------------------------------------------------


def in_executor(ex: Executor) -> Call:
    def call(fn: Callable[[Any], Any], arg: Any) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(ex, fn, arg)

    return call


@contextlib.contextmanager
def ppe() -> Iterator[Call]:
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("forkserver")) as ex:
        yield in_executor(ex)


@contextlib.contextmanager
def rustpool_pool(isolation: Literal["process", "interpreter"]) -> Iterator[Call]:
    with rustpool.CpuExecutor(WORKERS, isolation=isolation) as ex:
        yield in_executor(ex)


@contextlib.contextmanager
def loky_pool() -> Iterator[Call]:
    import loky  # type: ignore[import-untyped]

    ex = loky.get_reusable_executor(max_workers=WORKERS)
    try:
        yield in_executor(ex)
    finally:
        ex.shutdown(wait=True)


@contextlib.contextmanager
def joblib_pool() -> Iterator[Call]:
    import joblib  # type: ignore[import-untyped]
    from joblib.externals.loky import get_reusable_executor  # type: ignore[import-untyped]

    def parallel(fn: Callable[[Any], Any], arg: Any) -> Any:
        # A fresh Parallel call per round: the array is memmapped anew, as a new array would be.
        return joblib.Parallel(n_jobs=WORKERS, backend="loky", max_nbytes="1M")([joblib.delayed(fn)(arg)])[0]

    def call(fn: Callable[[Any], Any], arg: Any) -> Awaitable[Any]:
        return asyncio.to_thread(parallel, fn, arg)

    try:
        yield call
    finally:
        # joblib's workers live in its own (vendored) loky's reusable executor; reuse=True hands back
        # the one Parallel started, whatever its arguments, to shut it down.
        get_reusable_executor(reuse=True).shutdown(wait=True)


def runners(has_numpy: bool) -> list[tuple[str, Callable[[], contextlib.AbstractContextManager[Call]], set[str]]]:
    """(name, context manager yielding its call, payload kinds it runs); prints what is skipped."""
    kinds = {"bytes", "numpy"} if has_numpy else {"bytes"}
    made: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Call]], set[str]]] = [
        (PPE, ppe, kinds),
        ("rustpool process", lambda: rustpool_pool("process"), kinds),
    ]
    if sys.version_info >= (3, 13):
        made.append(("rustpool interpreter", lambda: rustpool_pool("interpreter"), {"bytes"}))
        if has_numpy:
            print(
                "skipped: rustpool interpreter, numpy workloads (numpy refuses to load in a subinterpreter: "
                "such calls fail with rustpool.WorkerUnsupported)"
            )
    else:
        version = platform.python_version()
        print(f"skipped: rustpool interpreter (subinterpreters need CPython 3.13+, this is {version})")
    try:
        importlib.import_module("loky")

        made.append(("loky", loky_pool, kinds))
    except ImportError as e:
        print(f"skipped: loky ({e}; requirements-dev.txt has it)")
    if not has_numpy:
        print("skipped: joblib (it only differs for numpy arrays, and numpy is not installed)")
    else:
        try:
            importlib.import_module("joblib")

            made.append(("joblib memmap", joblib_pool, {"numpy"}))
            print("skipped: joblib, bytes workloads (its memmapping applies to numpy arrays only)")
        except ImportError as e:
            print(f"skipped: joblib ({e}; requirements-dev.txt has it)")
    return made


# --- measuring ----------------------------------------------------------------------------------


def payload(kind: str, n: int) -> Any:
    if kind == "bytes":
        return os.urandom(n)
    import numpy

    return numpy.ones(n // 8)


def check(wl: Workload, result: Any, sent: Any, n: int) -> None:
    if wl.name == "send bytes":
        ok = result == n
    elif wl.name == "echo bytes":
        ok = isinstance(result, bytes) and result == sent
    elif wl.name == "numpy sum":
        ok = result == float(n // 8)
    else:
        import numpy

        ok = isinstance(result, numpy.ndarray) and result.dtype == sent.dtype and numpy.array_equal(result, sent)
    if not ok:
        shown = repr(result) if not hasattr(result, "__len__") else f"{type(result).__name__} of len {len(result)}"
        raise RuntimeError(f"{wl.name}, {n} bytes: wrong result {shown}")


async def once(call: Call, fn: Callable[[Any], Any], arg: Any) -> Any:
    return await asyncio.wait_for(call(fn, arg), TIMEOUT_S)


async def measure(
    name: str, call: Call, wl: Workload, size_mb: int, sent: Any, small: Any, rounds: int, sampler: RssSampler
) -> Cell:
    n = size_mb * MB
    check(wl, await once(call, wl.fn, small), small, SMALL)  # the workers are up and idle
    sampler.set_baseline()
    t = time.perf_counter()
    result = await once(call, wl.fn, sent)
    first = (time.perf_counter() - t) * 1e3
    check(wl, result, sent, n)
    del result
    times = []
    sampler.start()
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            await once(call, wl.fn, sent)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        parent, child, seen = sampler.stop()
    return Cell(wl.name, size_mb, name, times, statistics.median(times), first, parent, child, seen)


# --- output -------------------------------------------------------------------------------------


def size_label(size_mb: int) -> str:
    return f"{size_mb // 1000} GB" if size_mb % 1000 == 0 else f"{size_mb} MB"


def table(wl: Workload, cells: list[Cell], names: list[str], sizes: list[int]) -> list[str]:
    by = {(c.executor, c.size_mb): c for c in cells if c.workload == wl.name}
    cols = [name for name in names if any((name, s) in by for s in sizes)]
    if not cols:
        return []
    head = ["size"]
    for name in cols:
        head += [f"{name} ms"] + ([] if name == PPE else ["x PPE"]) + ["RSS +MiB"]
    lines = [f"### {wl.name}: {wl.what}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sizes:
        row = [size_label(s)]
        for name in cols:
            c = by.get((name, s))
            if c is None:
                row += ["-"] * (2 if name == PPE else 3)
                continue
            row.append(f"{c.median_ms:.1f}" if c.median_ms < 100 else f"{c.median_ms:.0f}")
            if name != PPE:
                row.append(f"**{c.x_ppe:.2f}x**" if c.x_ppe is not None else "-")
            kid = f"{c.rss_child_mib:.0f}" if c.rss_child_mib is not None else "-"
            row.append(f"{c.rss_parent_mib:.0f} / {kid}")
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


async def main(args: argparse.Namespace) -> None:
    sizes: list[int] = args.sizes
    rounds: int = args.rounds
    command = shlex.join(["python", *sys.argv])
    print(
        f"Python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} CPUs), rustpool "
        f"{rustpool.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"command: {command}")
    print(f"{WORKERS} workers each; median of {rounds} sequential calls per cell, in wall ms")
    try:
        import numpy  # noqa: F401

        has_numpy = True
    except ImportError:
        has_numpy = False
        print("skipped: numpy workloads (numpy not installed; requirements-dev.txt has it)")
    skips: list[str] = []
    kept = []
    for s in sizes:
        short = short_of_memory(s)
        if s >= 1000 and short:
            skips.append(f"{size_label(s)} ({short})")
            print(f"skipped: {skips[-1]}")
        else:
            kept.append(s)
    sizes = kept
    early = len(skips)
    made = runners(has_numpy)
    print()
    sampler = RssSampler()
    cells: list[Cell] = []
    small = {"bytes": payload("bytes", SMALL)}
    if has_numpy:
        small["numpy"] = payload("numpy", SMALL)
    for name, make, kinds in made:
        loads = [wl for wl in WORKLOADS if wl.kind in kinds]
        sampler.ignore_existing()
        t = time.perf_counter()
        with make() as call:
            for wl in loads:  # start the workers and import what the calls need
                check(wl, await once(call, wl.fn, small[wl.kind]), small[wl.kind], SMALL)
            print(f"{name}: warm in {time.perf_counter() - t:.2f} s", file=sys.stderr)
            for s in sizes:
                short = short_of_memory(s)
                if short:  # checked again: the machine's other work may have taken it since
                    skips.append(f"{name}, {size_label(s)} ({short})")
                    print(f"skipped: {skips[-1]}", file=sys.stderr)
                    continue
                for kind in sorted(kinds):
                    sent = payload(kind, s * MB)
                    for wl in loads:
                        if wl.kind != kind:
                            continue
                        cell = await measure(name, call, wl, s, sent, small[kind], rounds, sampler)
                        cells.append(cell)
                        took = f"{cell.median_ms:8.1f} ms (first {cell.first_call_ms:.0f})"
                        print(f"  {wl.name:10} {size_label(s):>6}: {took}", file=sys.stderr)
                    del sent
    anchor = {(c.workload, c.size_mb): c.median_ms for c in cells if c.executor == PPE}
    for c in cells:
        if c.executor != PPE and (c.workload, c.size_mb) in anchor:
            c.x_ppe = anchor[c.workload, c.size_mb] / c.median_ms
    names = [name for name, _, _ in made]
    print(
        "x PPE = ProcessPoolExecutor ms / this ms (above 1 is faster). RSS +MiB = parent / child: peak growth "
        "over the baseline during the timed rounds, of this process / of the pool's largest-growing process."
    )
    print()
    for wl in WORKLOADS:
        for line in table(wl, cells, names, sizes):
            print(line)
    for skip in skips[early:]:
        print(f"skipped: {skip}")
    if args.json:
        raw = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "rustpool": rustpool.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": command,
            "workers": WORKERS,
            "rounds": rounds,
            "mb": MB,
            "cells": [dataclasses.asdict(c) for c in cells],
            "skipped": skips,
        }
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
        print(f"raw numbers: {args.json}")


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError("sizes are positive whole MB, comma-separated: 1,10,100")
    return sizes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=[1, 10, 100], help="payload sizes in MB (1000: 1 GB)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per cell (the median is shown)")
    parser.add_argument("--json", metavar="PATH", help="also write every raw number to PATH")
    ns = parser.parse_args()
    if ns.rounds < 1:
        parser.error("--rounds must be at least 1")
    asyncio.run(main(ns))
