"""What a type checker sees of rustpool: every name in ``rustpool.__all__``, used as an application
would, each result pinned with ``assert_type``. ``mypy --strict`` and basedpyright (standard mode)
must pass it (tests/test_typing.py, ``make lint``); it also runs: ``python examples/typed_usage.py``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import warnings
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Future
from typing import Literal, assert_type

import rustpool


def repeat(data: bytes, times: int) -> bytes:
    return data * times


def total(*numbers: int) -> int:
    return sum(numbers)


def square(x: int) -> int:
    return x * x


@rustpool.pin("thread")
def pinned_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def read_config() -> bytes:
    return b"{}"


async def numbers() -> AsyncIterator[int]:
    for i in range(3):
        yield i


async def default_pools() -> None:
    assert_type(rustpool.__version__, str)
    assert_type(await rustpool.to_thread(read_config), bytes)
    assert_type(await rustpool.to_thread(repeat, b"ab", 3), bytes)
    assert_type(await rustpool.to_thread(repeat, b"ab", times=3), bytes)
    assert_type(await rustpool.run_cpu(total, 1, 2, 3), int)
    assert_type(await rustpool.run_cpu(square, x=4), int)

    before = rustpool.settings()
    assert_type(before, rustpool.Settings)
    assert_type(before["isolation"], rustpool.IsolationMode)
    assert_type(before["fallback"], rustpool.FallbackPolicy)
    assert_type(before["max_threads"], int | None)
    assert_type(before["cpu_workers"], int | None)
    assert_type(before["keep_alive"], float)
    mode: rustpool.IsolationMode = "process"
    policy: rustpool.FallbackPolicy = "error"
    rustpool.configure(isolation=mode, fallback=policy, cpu_workers=2)
    rustpool.configure(max_threads=rustpool.DEFAULT_MAX_THREADS, keep_alive=rustpool.DEFAULT_KEEP_ALIVE)
    assert_type(rustpool.DEFAULT_MAX_THREADS, int)
    assert_type(rustpool.DEFAULT_KEEP_ALIVE, float)
    assert_type(rustpool.default_thread_executor(), rustpool.ThreadExecutor)
    assert_type(rustpool.default_cpu_executor(), rustpool.CpuExecutor)
    assert_type(await rustpool.run_cpu(square, 5), int)
    rustpool.configure(**before)  # settings() is what configure takes: back to the defaults


async def thread_executor() -> None:
    loop = asyncio.get_running_loop()
    with rustpool.ThreadExecutor(4, keep_alive=1.0) as threads:
        assert_type(await threads.run(repeat, b"x", times=2), bytes)
        assert_type(threads.submit(square, 3), Future[int])
        assert_type(await loop.run_in_executor(threads, square, 3), int)
        async with contextlib.aclosing(threads.amap(square, numbers(), ordered=False)) as squares:
            assert_type(squares, AsyncGenerator[int, None])
            assert_type([s async for s in squares], list[int])
        assert_type(threads.keep_alive, float)
        assert_type(threads.max_workers, int)


async def cpu_executor() -> None:
    with rustpool.CpuExecutor(2, isolation="process", max_tasks_per_child=100, kill_on_cancel=True) as pool:
        assert_type(pool.isolation, Literal["thread", "interpreter", "process"])
        assert_type(await pool.run(total, 1, 2), int)
        assert_type(pool.submit(repeat, b"y", 2), Future[bytes])
        assert_type(list(pool.map(square, range(8), chunksize="auto")), list[int])
        assert_type(list(pool.map(total, [1, 2], [3, 4], chunksize=2, buffersize=1)), list[int])
        async with contextlib.aclosing(pool.amap(total, [1, 2], [3, 4])) as sums:
            assert_type([s async for s in sums], list[int])

        shared = pool.share(b"data" * 100_000)  # sent to each worker once; calls get the bytes
        assert_type(shared, rustpool.Shared[bytes])
        assert_type(shared.value, bytes)
        assert_type(shared.nbytes, int)
        shared.close()

        timed = pool.options(timeout=1)
        assert_type(timed, rustpool.CallOptions)
        assert_type(await timed.run(square, 4), int)
        assert_type(timed.submit(repeat, b"z", times=2), Future[bytes])
        assert_type(list(timed.map(square, [1, 2])), list[int])
        async with contextlib.aclosing(timed.amap(square, numbers())) as squares:
            assert_type([s async for s in squares], list[int])

    fallback: rustpool.FallbackPolicy = "warn"
    with rustpool.CpuExecutor(isolation="auto", fallback=fallback) as auto, warnings.catch_warnings():
        warnings.simplefilter("error", rustpool.ThreadFallbackWarning)
        try:
            assert_type(await auto.run(square, 6), int)
        except rustpool.ThreadFallbackWarning as warning:  # the call could only have run on a thread
            assert_type(warning, rustpool.ThreadFallbackWarning)
        except rustpool.WorkerUnsupported as unsupported:  # an ImportError
            assert_type(unsupported.name, str | None)
        except rustpool.WorkerCrashed as crashed:  # a BrokenProcessPool
            assert_type(crashed, rustpool.WorkerCrashed)
        except Exception as error:
            if isinstance(error.__cause__, rustpool.RemoteTraceback):
                assert_type(error.__cause__.tb, str)
        # Where "auto" placed each function, a per-call choice, and a pinned function.
        placements = auto.placements()
        assert_type(placements, dict[str, rustpool.Placement])
        for placement in placements.values():
            assert_type(placement["isolation"], str)
            assert_type(placement["calls"], int)
        where: rustpool.Mode = "thread"
        assert_type(await auto.options(isolation=where).run(square, 7), int)
        assert_type(await auto.run(pinned_hash, b"x"), bytes)


def plain_script() -> None:
    with rustpool.ThreadExecutor() as ex:
        assert_type(ex.submit(repeat, b"w", 2).result(), bytes)
        assert_type(list(ex.map(total, [1, 2], [3, 4])), list[int])
        assert_type(list(ex.map(square, range(4), buffersize=2)), list[int])
        assert_type(list(ex.map(square, range(4), progress=lambda done, total: None)), list[int])
    with rustpool.CpuExecutor(isolation="thread") as cpu:
        assert_type(cpu.submit(square, 7).result(), int)
        stats = cpu.stats()
        assert_type(stats, rustpool.PoolStats)
        assert_type(stats.done, int)
        assert_type(stats.run_p99, float | None)


async def watched_loop() -> None:
    blocks: list[rustpool.LoopBlock] = []
    dog = rustpool.watch_loop(0.1, on_block=blocks.append)
    assert_type(dog, rustpool.LoopWatchdog)
    await asyncio.sleep(0)
    dog.stop()
    for block in blocks:
        assert_type(block.seconds, float)
        frame = block.culprit
        assert_type(frame, rustpool.BlockedFrame | None)
        if frame is not None:
            assert_type(frame.lineno, int)


def cluster_options() -> rustpool.Cluster:
    # CpuExecutor(cluster=...) takes this, an address, a distributed.Client or a Dask cluster.
    where = rustpool.Cluster("tcp://scheduler:8786", retry_lost=True, batch_delay=0.002)
    assert_type(where.retry_lost, bool)
    return where


async def main() -> None:
    await default_pools()
    await thread_executor()
    await cpu_executor()
    await watched_loop()
    asyncio.get_running_loop().set_default_executor(rustpool.ThreadExecutor())
    assert_type(await asyncio.to_thread(square, 8), int)


if __name__ == "__main__":
    asyncio.run(main())
    plain_script()
    print("typed_usage: ok")
