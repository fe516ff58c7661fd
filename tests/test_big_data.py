"""Big buffers crossing into isolated workers: out of band, through shared memory in process mode.

Arguments and results of isolation="process" and "interpreter" cross as pickle protocol 5; every
buffer of at least 64 KiB (``RUSTPOOL_OOB_THRESHOLD`` overrides) travels out of band: bytes,
bytearray, memoryview, contiguous numpy arrays. In process mode they go through memfds named
``rustpool-shm`` that the parent makes: at most a call arena and a reply arena per worker (plus
up to two reply arenas per worker that results the caller keeps still show), freed when the pool
shuts down, when a worker dies, when a call times out or is cancelled with kill; when shared
memory cannot grow the pipe carries the buffers. None of this may show: values come back with
their type and every byte, with the semantics of ProcessPoolExecutor (a worker's argument and a
caller's result are their own).

Contents are compared in full (``big_data_helpers.summary`` digests every byte), not by length. The
functions sent to workers live in ``tests.big_data_helpers``. Tests that kill workers or time calls
out count the test process's fds, so they run in a fresh interpreter each, with a hard timeout.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import big_data_helpers as h
from .conftest import IMPORT_TESTS, run_script

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is in requirements-dev.txt
    np = None  # type: ignore[assignment]

KiB, MiB = 1 << 10, 1 << 20
RESULT_WAIT = 60.0  # a 32 MiB round trip on a loaded 2-core machine takes well under a second
SCRIPT_TIMEOUT = 60.0
WORKERS = 2
BOUND = 2 * WORKERS  # shared-memory arenas a pool may hold at rest: a call and a reply arena per worker
# ... and while results it returned are still alive: two more reply arenas per worker, set aside
# until those results go (then reused).
MAX_ARENAS = 4 * WORKERS

needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")
needs_interpreters = pytest.mark.skipif(
    sys.version_info < (3, 13), reason='isolation="interpreter" needs CPython 3.13+'
)
# Every mode that isolates; numpy cases run in processes only (numpy refuses subinterpreters).
MODES = ["process", pytest.param("interpreter", marks=needs_interpreters)]


@pytest.fixture(scope="module")
def pools() -> Iterator[Callable[[str], rustpool.CpuExecutor]]:
    """``pools(mode)``: one pool of ``WORKERS`` per mode for the whole module (these tests only
    run calls that return; each test that needs a fresh worker makes its own pool)."""
    made: dict[str, rustpool.CpuExecutor] = {}

    def get(mode: str) -> rustpool.CpuExecutor:
        if mode not in made:
            made[mode] = rustpool.CpuExecutor(WORKERS, isolation=mode)
        return made[mode]

    yield get
    for ex in made.values():
        ex.shutdown(wait=True, cancel_futures=True)


def call(ex: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return ex.submit(fn, *args, **kwargs).result(RESULT_WAIT)


def arrives_as(x: Any) -> Any:
    """What a worker (or the caller) gets for ``x``: itself, but a strided array arrives as a
    contiguous copy (as pickle makes it)."""
    if h.is_ndarray(x) and not (x.flags.c_contiguous or x.flags.f_contiguous):
        return np.ascontiguousarray(x)
    return x


def assert_round_trip(ex: Any, x: Any) -> None:
    """``x`` crosses to the worker and back: the worker saw it whole, the caller gets it whole."""
    expected = h.summary(arrives_as(x))
    back, seen = call(ex, h.echo_with_summary, x)
    assert seen == expected, "what the worker received differs from what was sent"
    assert type(back) is type(x)
    assert h.summary(back) == expected, "what came back differs from what was sent"


# --- round trips -------------------------------------------------------------------------------

SIZES = [0, 1, 64 * KiB - 1, 64 * KiB, MiB, 10 * MiB, 32 * MiB]
KINDS = ["bytes", "bytearray", "memoryview"]


@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_a_buffer_of_any_size_crosses_both_ways_with_its_type_and_every_byte(
    pools: Any, mode: str, kind: str, size: int
) -> None:
    assert_round_trip(pools(mode), h.make(kind, size, seed=size))


def _memoryview_2d(rows: int, cols: int) -> memoryview:
    return memoryview(bytearray(h.pattern(rows * cols * 8, rows))).cast("d", [rows, cols])


BUFFER_CASES: dict[str, Callable[[], Any]] = {
    "memoryview-2d-d": lambda: _memoryview_2d(512, 256),
    "memoryview-2d-d-small": lambda: _memoryview_2d(4, 8),
    "memoryview-read-only": lambda: memoryview(h.pattern(MiB, 7)),
    "memoryview-strided": lambda: memoryview(bytearray(h.pattern(2 * MiB, 8)))[::2],
    "memoryview-offset": lambda: memoryview(bytearray(h.pattern(2 * MiB, 9)))[12345:],
    "bytes-subclass": lambda: h.Blob(h.pattern(MiB, 10)),
    "list": lambda: [h.pattern(MiB, 1), bytearray(h.pattern(MiB, 2)), h.make("memoryview", MiB, 3), 7, "s"],
    "dict": lambda: {"big": h.pattern(10 * MiB, 4), "edge": bytearray(h.pattern(64 * KiB, 5)), "none": None},
    "tuple": lambda: (h.pattern(64 * KiB, 6), (h.pattern(MiB, 7),), b"small", 3),
    "nested-many": lambda: [{"k": (h.pattern(100 * KiB, i), bytearray(h.pattern(70 * KiB, -i)))} for i in range(20)],
}


@pytest.mark.parametrize("case", BUFFER_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_memoryviews_of_any_shape_and_nested_buffers_cross_both_ways_intact(pools: Any, mode: str, case: str) -> None:
    assert_round_trip(pools(mode), BUFFER_CASES[case]())


def _f64(n: int, seed: int = 3) -> Any:
    return np.frombuffer(h.pattern(8 * n, seed), dtype=np.float64).copy()


def _read_only(a: Any) -> Any:
    a.flags.writeable = False
    return a


ARRAY_CASES: dict[str, Callable[[], Any]] = {
    **{f"float64-{n}": (lambda n=n: _f64(n)) for n in [0, 1, 8 * KiB - 1, 8 * KiB, MiB // 8, 10 * MiB // 8]},
    "uint8-65535": lambda: np.frombuffer(h.pattern(64 * KiB - 1, 11), dtype=np.uint8).copy(),
    "uint8-65536": lambda: np.frombuffer(h.pattern(64 * KiB, 12), dtype=np.uint8).copy(),
    "int32-2d-C": lambda: np.frombuffer(h.pattern(4 * MiB, 13), dtype=np.int32).reshape(1024, 1024).copy(),
    "float64-2d-F": lambda: np.asfortranarray(_f64(512 * 512, 14).reshape(512, 512)),
    "float64-read-only": lambda: _read_only(_f64(MiB // 8, 15)),
    "float64-strided": lambda: _f64(2 * MiB // 8, 16)[::2],
    "float64-offset-view": lambda: _f64(MiB // 8 + 3, 17)[3:],
    "big-endian-int32": lambda: np.frombuffer(h.pattern(MiB, 18), dtype=">i4").copy(),
    "memoryview-of-2d-array": lambda: memoryview(_f64(256 * 512, 19).reshape(256, 512)),
    "memoryview-of-F-array": lambda: memoryview(np.asfortranarray(_f64(256 * 512, 25).reshape(256, 512))),
    "list-of-arrays": lambda: [_f64(MiB // 8, 20), np.arange(10), _f64(8 * KiB, 21)],
    "dict-of-array-and-bytes": lambda: {"a": _f64(MiB // 8, 22), "b": h.pattern(MiB, 23)},
}


@needs_numpy
@pytest.mark.parametrize("case", ARRAY_CASES)
def test_numpy_arrays_cross_both_ways_with_dtype_shape_order_and_every_byte(pools: Any, case: str) -> None:
    assert_round_trip(pools("process"), ARRAY_CASES[case]())


@pytest.mark.parametrize("kind", ["bytes", "bytearray", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_an_object_passed_twice_arrives_and_returns_as_one_object(pools: Any, mode: str, kind: str) -> None:
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    x = h.make(kind, MiB, seed=30)
    was_one, a, b = call(pools(mode), h.same_twice, x, x)
    assert was_one, "the worker got two objects for one"
    assert a is b
    assert h.summary(a) == h.summary(x)


@pytest.mark.parametrize("mode", MODES)
def test_big_keyword_arguments_cross_intact(pools: Any, mode: str) -> None:
    data, buf = h.pattern(3 * MiB, 31), bytearray(h.pattern(MiB, 32))
    args, kwargs = call(pools(mode), h.echo_args, b"small", data=data, buf=buf)
    assert args == (b"small",)
    assert kwargs == {"data": data, "buf": buf}
    assert type(kwargs["buf"]) is bytearray


@pytest.mark.parametrize("mode", MODES)
def test_a_map_chunk_of_big_arguments_crosses_intact(pools: Any, mode: str) -> None:
    items = [h.pattern(MiB + i, 40 + i) for i in range(6)]
    assert list(pools(mode).map(h.echo, items, chunksize=3, timeout=RESULT_WAIT)) == items


@pytest.mark.parametrize("mode", MODES)
def test_an_awaited_call_with_a_big_argument_returns_it_intact(pools: Any, mode: str) -> None:
    data = h.pattern(5 * MiB, 50)

    async def main() -> Any:
        return await asyncio.wait_for(pools(mode).run(h.echo, data), RESULT_WAIT)

    assert asyncio.run(main()) == data


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_big_calls_each_get_their_own_data_back(pools: Any, mode: str) -> None:
    items = [h.make("bytearray" if i % 2 else "bytes", 2 * MiB + i, 60 + i) for i in range(16)]
    futures = [pools(mode).submit(h.echo, x) for x in items]
    for x, f in zip(items, futures):
        assert f.result(RESULT_WAIT) == x


@pytest.mark.parametrize("mode", MODES)
def test_an_exception_carrying_a_big_buffer_comes_back_intact(pools: Any, mode: str) -> None:
    data = h.pattern(2 * MiB, 70)
    with pytest.raises(ValueError) as excinfo:
        call(pools(mode), h.raise_with, data)
    assert excinfo.value.args == (data,)


@pytest.mark.parametrize("kind", ["memoryview", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_a_view_the_worker_returns_brings_back_exactly_its_own_elements(pools: Any, mode: str, kind: str) -> None:
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    x = h.make(kind, 2 * MiB, seed=80)
    back = call(pools(mode), h.tail, x, 1000)
    assert type(back) is type(x)
    assert h.summary(back) == h.summary(x[1000:])


# --- semantics: the caller's values and the worker's are their own ------------------------------------


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_a_worker_that_mutates_its_argument_in_place_leaves_the_callers_unchanged(
    pools: Any, mode: str, kind: str
) -> None:
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    x = h.make(kind, 2 * MiB, seed=90)
    before = h.summary(x)
    mutated, seen = call(pools(mode), h.mutate_in_place, x)
    if kind != "memoryview":  # a memoryview may arrive read-only; an array, as with the stdlib, not
        assert mutated
    if mutated:
        assert seen == h.summary(_zeros_like(x)), "the worker's write did not stick"
    assert h.summary(x) == before, "the worker's write reached the caller's buffer"


def _zeros_like(x: Any) -> Any:
    if h.is_ndarray(x):
        return np.zeros_like(x)
    if isinstance(x, memoryview):
        return memoryview(bytearray(x.nbytes)).cast(x.format, list(x.shape))
    return type(x)(len(x))


@needs_numpy
@pytest.mark.parametrize("case", ["float64-131072", "float64-read-only", "float64-2d-F", "float64-strided"])
def test_arrays_arrive_writable_and_come_back_writable_as_with_process_pool_executor(pools: Any, case: str) -> None:
    x = ARRAY_CASES[case]()
    before = h.summary(x)
    was_writable, back = call(pools("process"), h.writable_echo, x)
    assert was_writable, "the worker got a read-only array"
    assert back.flags.writeable, "the caller got a read-only array"
    assert h.summary(back) == h.summary(arrives_as(x))
    back[...] = 0  # really writable, and the caller's own: the array sent is untouched
    assert h.summary(x) == before


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_results_the_caller_keeps_stay_intact_writable_and_its_own_across_later_calls(
    pools: Any, mode: str, kind: str
) -> None:
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    ex, size = pools(mode), 2 * MiB
    results = [call(ex, h.make, kind, size, seed) for seed in range(5)]
    for seed, r in enumerate(results):
        assert type(r) is type(h.make(kind, size, seed))
        assert h.summary(r) == h.summary(h.make(kind, size, seed)), f"result {seed} changed under the caller"
    first = results[0]
    writable = kind in ("bytearray", "ndarray") or (kind == "memoryview" and not first.readonly)
    if kind == "ndarray":
        assert first.flags.writeable
    if writable:
        first[:] = _zeros_like(first)
    # More calls of the same size (the arenas those results came through are used again).
    for seed in range(5, 10):
        assert h.summary(call(ex, h.make, kind, size, seed)) == h.summary(h.make(kind, size, seed))
    if writable:
        assert h.summary(first) == h.summary(_zeros_like(first))
    for seed, r in enumerate(results[1:], start=1):
        assert h.summary(r) == h.summary(h.make(kind, size, seed)), f"result {seed} changed under the caller"


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_a_result_stays_the_callers_own_when_the_worker_later_changes_the_buffer_it_returned(
    cpu_executor: Any, mode: str, kind: str
) -> None:
    """The worker returns one buffer of its own again and again, refilled in place between calls:
    each result the caller holds keeps what its call returned."""
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    ex = cpu_executor(1, isolation=mode)  # one worker: every call refills the same buffer
    size = 2 * MiB
    results = [call(ex, h.refill_own, kind, size, seed) for seed in range(4)]
    for seed, r in enumerate(results):
        assert h.summary(r) == h.summary(h.make(kind, size, seed)), f"result {seed} changed under the caller"


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", pytest.param("ndarray", marks=needs_numpy)])
@pytest.mark.parametrize("mode", MODES)
def test_a_worker_that_keeps_its_argument_sees_the_same_contents_on_later_calls(
    cpu_executor: Any, mode: str, kind: str
) -> None:
    """The caller sends one buffer again and again, refilled in place between calls: what the
    worker kept from each call (a module global) still holds what that call sent."""
    if kind == "ndarray" and mode == "interpreter":
        pytest.skip("numpy refuses subinterpreters")
    ex = cpu_executor(1, isolation=mode)  # one worker: every call sees what the earlier ones kept
    size = 2 * MiB
    buf = bytearray(size)  # the caller's one buffer, refilled before each call
    arg: Any = np.frombuffer(buf, dtype=np.int64) if kind == "ndarray" else None
    arg = memoryview(buf) if kind == "memoryview" else buf if kind == "bytearray" else arg
    expected = []
    for i in range(4):
        data = h.pattern(size, 100 + i)
        if kind == "bytes":
            arg = data
        else:
            buf[:] = data
        expected.append(h.summary(arg))
        assert call(ex, h.keep, arg) == expected, f"call {i}: what the worker kept from earlier calls changed"


# --- out of band, through shared memory (process mode) -------------------------------------------


def test_a_big_argument_reaches_a_worker_process_through_shared_memory(pools: Any) -> None:
    ex = pools("process")
    assert call(ex, h.maps_have_shm, h.pattern(10 * MiB, 110)), "no rustpool-shm mapped in the worker"
    assert h.shm_fds() >= 1, "the caller holds no rustpool-shm arena after a big call"


def test_calls_below_the_threshold_map_no_shared_memory_in_a_fresh_worker(cpu_executor: Any) -> None:
    if "RUSTPOOL_OOB_THRESHOLD" in os.environ:
        pytest.skip("RUSTPOOL_OOB_THRESHOLD is set: the default threshold is not in force")
    ex = cpu_executor(1, isolation="process")
    assert not call(ex, h.maps_have_shm, h.pattern(64 * KiB - 1, 111))
    assert call(ex, h.maps_have_shm, h.pattern(64 * KiB, 112)), "64 KiB did not travel through shared memory"


def test_rustpool_oob_threshold_sets_the_size_that_travels_through_shared_memory(tmp_path: Path) -> None:
    out = big_data_script(
        tmp_path,
        """
        os.environ["RUSTPOOL_OOB_THRESHOLD"] = "1024"  # read when rustpool is imported
        import rustpool
        from tests import big_data_helpers as h
        with rustpool.CpuExecutor(1, isolation="process") as ex:
            seen["below"] = ex.submit(h.maps_have_shm, h.pattern(1000, 1)).result(60)
            seen["above"] = ex.submit(h.maps_have_shm, h.pattern(4096, 2)).result(60)
        """,
    )
    assert out == {"below": False, "above": True}


def test_a_result_too_big_for_the_workers_shared_memory_falls_back_to_the_pipe_intact(cpu_executor: Any) -> None:
    ex = cpu_executor(1, isolation="process", initializer=h.limit_file_size, initargs=(MiB,))
    assert call(ex, h.file_size_limit) == MiB
    assert call(ex, h.make, "bytes", 16 * MiB, 120) == h.pattern(16 * MiB, 120)
    assert call(ex, h.make, "bytearray", 16 * MiB, 121) == h.pattern(16 * MiB, 121)
    data = h.pattern(16 * MiB, 122)
    assert call(ex, h.echo, data) == data
    # The worker goes on, for small and big calls alike.
    assert call(ex, h.make, "bytes", 512 * KiB, 123) == h.pattern(512 * KiB, 123)
    assert call(ex, h.echo, b"small") == b"small"


def test_a_thousand_calls_of_a_mebibyte_leave_fds_and_dev_shm_as_they_were(cpu_executor: Any) -> None:
    gc.collect()
    others = h.shm_fds()  # arenas of other pools still open (module fixtures)
    ex = cpu_executor(WORKERS, isolation="process")
    items = [h.pattern(MiB, 130 + i) for i in range(4)]  # rotating contents: a stale arena shows

    def round_of(calls: int) -> None:
        for start in range(0, calls, 50):
            futures = [ex.submit(h.echo, items[i % 4]) for i in range(start, start + 50)]
            for i, f in zip(range(start, start + 50), futures):
                assert f.result(RESULT_WAIT) == items[i % 4]

    round_of(100)  # warm-up: every worker has its arenas
    gc.collect()  # fds of earlier tests' pools and loops close now, not in the middle
    fds, shm = h.fd_targets(), h.dev_shm()
    round_of(1000)
    gc.collect()
    now = h.fd_targets()
    # Arenas: how many a worker holds depends on which results were still alive when its last
    # call went (a reply arena a result shows is set aside, reused once free), never on how many
    # calls ran; every other fd is exactly as it was.
    arenas = now.pop(h.SHM_NAME + " (deleted)", 0)
    fds.pop(h.SHM_NAME + " (deleted)", 0)
    assert arenas - others <= MAX_ARENAS, f"{arenas - others} arenas after 1,000 calls, more than {MAX_ARENAS}"
    assert now == fds, f"fds opened: {sorted((now - fds).elements())}; closed: {sorted((fds - now).elements())}"
    assert h.dev_shm() == shm


# --- workers that go: their shared memory goes with them (fresh interpreter each) -------------------

SCRIPT_PRELUDE = (
    IMPORT_TESTS
    + """
import asyncio, json, os, time
seen = {}
"""
)


def big_data_script(tmp_path: Path, body: str) -> dict[str, Any]:
    """Run ``body`` in a fresh interpreter (hard timeout); the ``seen`` dict it filled."""
    proc = run_script(
        tmp_path,
        textwrap.dedent(body) + "\nprint(json.dumps(seen))\n",
        prelude=SCRIPT_PRELUDE,
        timeout=SCRIPT_TIMEOUT,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


LIFECYCLE = """
import rustpool
from tests import big_data_helpers as h
WORKERS, BOUND = {workers}, {bound}
big = h.pattern(10 << 20, 1)
ex = rustpool.CpuExecutor(WORKERS, isolation="process"{options})
h.warm(ex, big)
seen["warm"] = h.shm_fds()
{scenario}
h.warm(ex, big)  # the replacement workers make arenas of their own
seen["after"] = h.settled_shm_fds(BOUND)
ex.shutdown(wait=True)
seen["shutdown"] = h.settled_shm_fds(0)
"""


def lifecycle(tmp_path: Path, scenario: str, options: str = "") -> dict[str, Any]:
    body = LIFECYCLE.format(workers=WORKERS, bound=BOUND, options=options, scenario=textwrap.dedent(scenario))
    out = big_data_script(tmp_path, body)
    assert out["after"] <= BOUND, f"{out}: arenas of gone workers are still open"
    assert out["shutdown"] == 0, f"{out}: arenas are still open after shutdown"
    return out


def test_a_worker_killed_mid_call_with_a_big_argument_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    out = lifecycle(
        tmp_path,
        """
        seen["crashed"] = 0
        for _ in range(3):
            try:
                ex.submit(h.kill_self_holding, big).result(60)
            except rustpool.WorkerCrashed:
                seen["crashed"] += 1
        """,
    )
    assert out["crashed"] == 3


def test_a_call_timed_out_with_a_big_argument_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    out = lifecycle(
        tmp_path,
        """
        seen["timed_out"] = 0
        for _ in range(3):
            try:
                ex.options(timeout=0.3).submit(h.sleep_holding, big, 30).result(60)
            except TimeoutError:
                seen["timed_out"] += 1
        """,
    )
    assert out["timed_out"] == 3


def test_a_call_cancelled_with_kill_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    out = lifecycle(
        tmp_path,
        """
        async def cancel_while_running(marker):
            task = asyncio.ensure_future(ex.run(h.touch_then_sleep_holding, marker, big, 30))
            deadline = time.monotonic() + 30
            while not os.path.exists(marker):
                assert time.monotonic() < deadline, "the call never started"
                await asyncio.sleep(0.01)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return 1
            return 0

        seen["cancelled"] = sum(asyncio.run(cancel_while_running(f"started-{i}")) for i in range(3))
        """,
        options=", kill_on_cancel=True",
    )
    assert out["cancelled"] == 3


def test_recycled_workers_leave_no_shared_memory_behind(tmp_path: Path) -> None:
    out = lifecycle(
        tmp_path,
        """
        pids = set()
        for _ in range(3):
            h.warm(ex, big, calls=4)
            pids |= {f.result(60) for f in [ex.submit(os.getpid) for _ in range(2)]}
        seen["workers"] = len(pids)
        """,
        options=", max_tasks_per_child=2",
    )
    assert out["workers"] > WORKERS  # workers were replaced


def test_shutdown_with_big_calls_running_and_queued_leaves_no_shared_memory_behind(tmp_path: Path) -> None:
    out = big_data_script(
        tmp_path,
        """
        import rustpool
        from tests import big_data_helpers as h
        big = h.pattern(10 << 20, 1)
        ex = rustpool.CpuExecutor(2, isolation="process")
        h.warm(ex, big)
        marker = os.path.join(os.getcwd(), "began")
        futures = [ex.submit(h.touch_then_sleep_holding, marker, big, 0.2) for _ in range(6)]
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.005)  # shut down once a call runs (under load none may have begun yet)
        ex.shutdown(wait=True, cancel_futures=True)
        seen["finished"] = sum(1 for f in futures if not f.cancelled() and f.result(0) == len(big))
        seen["shutdown"] = h.settled_shm_fds(0)
        """,
    )
    assert out["finished"] >= 1
    assert out["shutdown"] == 0


# --- share: one big input sent once for many calls ----------------------------------------------

SHARE_MODES = ["thread", *MODES]


@pytest.mark.parametrize("mode", SHARE_MODES)
def test_a_shared_input_reaches_every_call_as_the_object_itself(cpu_executor: Any, mode: str) -> None:
    ex = cpu_executor(WORKERS, isolation=mode)
    data = h.pattern(4 * MiB, 200)
    shared = ex.share(data)
    got = list(ex.map(h.part, [shared] * 8, range(8)))
    assert got == [h.part(data, i) for i in range(8)]
    assert {kind for _, _, kind, _ in ex.map(h.what_arrived, [shared] * 4)} == {"bytes"}
    kw = ex.submit(h.part, x=shared, i=3).result(RESULT_WAIT)  # a keyword argument too
    assert kw == h.part(data, 3)


@needs_numpy
def test_a_shared_array_is_rebuilt_once_per_worker_process_as_a_read_only_view(cpu_executor: Any) -> None:
    ex = cpu_executor(WORKERS, isolation="process")
    arr = np.arange(2_000_000, dtype=np.float64)
    shared = ex.share(arr)
    assert shared.nbytes == arr.nbytes
    seen = list(ex.map(h.what_arrived, [shared] * 16))
    ids_per_worker: dict[int, set[int]] = {}
    for pid, ident, kind, writable in seen:
        assert (kind, writable) == ("ndarray", False)
        ids_per_worker.setdefault(pid, set()).add(ident)
    assert all(len(ids) == 1 for ids in ids_per_worker.values()), ids_per_worker
    assert list(ex.map(h.part, [shared] * 4, range(4))) == [h.part(arr, i) for i in range(4)]


def test_a_closed_share_frees_its_memory_and_fails_the_calls_that_name_it(cpu_executor: Any) -> None:
    ex = cpu_executor(WORKERS, isolation="process")
    h.warm(ex, b"started")  # the workers' own arenas exist before the count
    before = h.shm_fds()
    shared = ex.share(h.pattern(2 * MiB, 201))
    assert h.shm_fds() == before + 1
    shared.close()
    shared.close()  # twice is harmless
    assert h.shm_fds() == before
    with pytest.raises(ValueError, match="closed"):
        ex.submit(h.echo, shared).result(RESULT_WAIT)


def test_a_threshold_that_is_not_a_positive_number_of_bytes_is_refused_at_import() -> None:
    import subprocess

    for bad in ("64k", "0", "-5"):
        proc = subprocess.run(
            [sys.executable, "-c", "import rustpool"],
            env={**os.environ, "RUSTPOOL_OOB_THRESHOLD": bad},
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
        assert proc.returncode != 0, bad
        assert "ValueError: RUSTPOOL_OOB_THRESHOLD=" in proc.stderr, proc.stderr
