"""CpuExecutor(cluster=...) and configure(cluster=...) on a real Dask LocalCluster.

A module fixture starts a scheduler and two worker processes (one thread each) on this machine;
tests that kill workers or close a cluster make their own. Every wait has a timeout: a cluster
that misbehaves fails a test, it never hangs the run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import cluster_helpers as h

distributed = pytest.importorskip("distributed", reason="Dask distributed is the rustpool[dask] extra")

# Dask's own housekeeping leaves sockets for the collector and warns about it; the warnings are
# Dask's, not about what these tests check.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

WAIT = 60.0


def local_cluster() -> Any:
    import dask

    # The scheduler runs in this process, and Dask's profiler samples it with
    # sys._current_frames(), which corrupts memory while subinterpreters run here (a CPython
    # bug; the default local pool on 3.13 is one): the profiler is off, as README's Limits say.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        return distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # never the default port: tests make clusters side by side
            worker_dashboard_address=None,
            silence_logs=50,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    c = local_cluster()
    yield c
    c.close()


@pytest.fixture
def pool(cluster: Any) -> Iterator[rustpool.CpuExecutor]:
    with rustpool.CpuExecutor(cluster=cluster) as ex:
        yield ex


def dask_worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


def test_results_and_exceptions_come_back_with_the_remote_traceback(pool: rustpool.CpuExecutor) -> None:
    assert pool.submit(h.inc, 1).result(WAIT) == 2
    with pytest.raises(ValueError, match="boom 3") as info:
        pool.submit(h.boom, 3).result(WAIT)
    assert isinstance(info.value.__cause__, rustpool.RemoteTraceback)
    assert "boom" in str(info.value.__cause__)


def test_stats_count_the_calls_settled_on_the_cluster(cluster: Any) -> None:
    with rustpool.CpuExecutor(cluster=cluster) as pool:
        assert [f.result(WAIT) for f in [pool.submit(h.inc, i) for i in range(20)]] == list(range(1, 21))
        with pytest.raises(ValueError):
            pool.submit(h.boom, 1).result(WAIT)
        s = pool.stats()
        assert (s.done, s.failed, s.cancelled, s.queued, s.running) == (20, 1, 0, 0, 0)
        assert s.workers == 2  # the cluster's Dask threads
        assert "done=20" in repr(pool)


def test_each_call_runs_in_a_worker_process_whose_parent_is_a_dask_worker(
    pool: rustpool.CpuExecutor, cluster: Any
) -> None:
    with distributed.Client(cluster, set_as_default=False) as client:
        workers = dask_worker_pids(client)
    pid, parent = pool.submit(h.where).result(WAIT)
    assert parent in workers
    assert pid not in workers and pid != os.getpid()


def test_configure_cluster_routes_run_cpu_and_none_brings_it_back(cluster: Any) -> None:
    with distributed.Client(cluster, set_as_default=False) as client:
        workers = dask_worker_pids(client)
    try:
        rustpool.configure(cluster=cluster.scheduler_address)
        _, parent = asyncio.run(rustpool.run_cpu(h.where))
        assert parent in workers
        assert rustpool.settings()["cluster"] == cluster.scheduler_address
    finally:
        rustpool.configure(cluster=None)
    pid, parent = asyncio.run(rustpool.run_cpu(h.where))
    assert os.getpid() in (pid, parent)  # here again: a thread, subinterpreter or worker process of ours


def test_a_timeout_kills_the_call_on_its_node_and_the_next_call_works(pool: rustpool.CpuExecutor) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="its worker process was killed"):
        pool.options(timeout=0.5).submit(h.sleep_then, 30, 1).result(WAIT)
    assert time.monotonic() - started < 20
    assert [pool.submit(h.inc, i).result(WAIT) for i in range(4)] == [1, 2, 3, 4]


def wait_for_file(path: Path) -> str:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def test_kill_on_cancel_kills_the_worker_process_of_a_cancelled_call_on_its_node(cluster: Any, tmp_path: Path) -> None:
    client = distributed.Client(cluster, set_as_default=False)
    dask_workers = dask_worker_pids(client)
    with rustpool.CpuExecutor(cluster=client, kill_on_cancel=True) as pool:

        async def main() -> int:
            running = asyncio.ensure_future(pool.run(h.pid_then_sleep, str(tmp_path / "pid"), 60))
            pid = int(await asyncio.to_thread(wait_for_file, tmp_path / "pid"))
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            return pid

        pid = asyncio.run(main())
        deadline = time.monotonic() + 20
        while True:  # the call's worker process on the node is killed, not left to sleep 60 s
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"worker process {pid} of the cancelled call still runs"
            time.sleep(0.05)
        assert [pool.submit(h.inc, i).result(WAIT) for i in range(4)] == [1, 2, 3, 4]
    assert dask_worker_pids(client) == dask_workers  # the Dask workers themselves live on
    client.close()


@pytest.mark.parametrize("ordered", [True, False])
def test_amap_over_a_thousand_calls(pool: rustpool.CpuExecutor, ordered: bool) -> None:
    async def main() -> list[int]:
        return [x async for x in pool.amap(h.inc, range(1000), ordered=ordered)]

    got = asyncio.run(asyncio.wait_for(main(), WAIT))
    if ordered:
        assert got == list(range(1, 1001))
    else:
        assert sorted(got) == list(range(1, 1001))


def test_ten_thousand_tiny_calls_take_far_fewer_dask_tasks(pool: rustpool.CpuExecutor, cluster: Any) -> None:
    with distributed.Client(cluster, set_as_default=False) as client:
        with distributed.get_task_stream(client) as stream:
            futures = [pool.submit(h.inc, i) for i in range(10_000)]
            assert [f.result(WAIT) for f in futures] == list(range(1, 10_001))
        tasks = [t for t in stream.data if "_node_run" in str(t.get("key"))]
    assert 0 < len(tasks) <= 500, f"{len(tasks)} Dask tasks for 10,000 calls"


def test_map_with_auto_chunks_and_a_shared_input(pool: rustpool.CpuExecutor) -> None:
    assert list(pool.map(h.inc, range(200))) == list(range(1, 201))
    data = list(range(1000))
    shared = pool.share(data)
    assert list(pool.map(len, [shared] * 20)) == [1000] * 20


def test_shutdown_waits_for_calls_in_flight_and_cancels_the_queued_when_asked(cluster: Any) -> None:
    ex = rustpool.CpuExecutor(cluster=cluster)
    running = [ex.submit(h.sleep_then, 0.3, i) for i in range(4)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in running] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(h.inc, 1)


def test_a_killed_dask_worker_fails_only_the_calls_it_held_and_the_pool_goes_on(tmp_path: Path) -> None:
    cluster = local_cluster()
    try:
        with rustpool.CpuExecutor(cluster=cluster) as ex, distributed.Client(cluster, set_as_default=False) as c:
            marker = tmp_path / "began"
            victim = ex.submit(h.touch_then_sleep, str(marker), 30)
            deadline = time.monotonic() + WAIT
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert marker.exists(), "the call never began"
            # The Dask worker that runs it: the parent of the process that made the marker.
            holder = int(marker.read_text())
            assert holder in dask_worker_pids(c)
            os.kill(holder, signal.SIGKILL)
            with pytest.raises(rustpool.WorkerCrashed, match="Dask worker"):
                victim.result(WAIT)
            assert [ex.submit(h.inc, i).result(WAIT) for i in range(3)] == [1, 2, 3]
    finally:
        cluster.close()


def test_a_cluster_that_goes_away_mid_run_fails_the_calls_clearly(tmp_path: Path) -> None:
    cluster = local_cluster()
    ex = rustpool.CpuExecutor(cluster=cluster)
    try:
        pending = ex.submit(h.sleep_then, 30, 1)
        time.sleep(0.5)
        cluster.close()
        with pytest.raises(rustpool.WorkerCrashed, match="scheduler-connection-lost"):
            pending.result(WAIT)
    finally:
        ex.shutdown(wait=False)


def test_without_distributed_a_cluster_pool_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "import rustpool\n"
        "try:\n"
        "    rustpool.CpuExecutor(cluster='tcp://127.0.0.1:1')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert "pip install 'rustpool[dask]'" in out.stdout, out.stdout + out.stderr


def test_with_retry_lost_a_batch_whose_worker_dies_runs_again_elsewhere(tmp_path: Path) -> None:
    cluster = local_cluster()
    try:
        with rustpool.CpuExecutor(cluster=rustpool.Cluster(cluster, retry_lost=True)) as ex:
            marker = tmp_path / "began"
            call = ex.submit(h.touch_then_sleep, str(marker), 2)
            deadline = time.monotonic() + WAIT
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            first = int(marker.read_text())
            marker.unlink()
            os.kill(first, signal.SIGKILL)
            assert call.result(WAIT) != first  # finished, on another Dask worker
            assert marker.exists()  # it began again
            assert ex.submit(h.inc, 1).result(WAIT) == 2
    finally:
        cluster.close()


def test_cluster_options_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_delay"):
        rustpool.Cluster("tcp://127.0.0.1:1", batch_delay=-1)
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        rustpool.CpuExecutor(cluster="tcp://127.0.0.1:1", max_tasks_per_child=3)
    with pytest.raises(ValueError, match='isolation="thread"'):
        rustpool.CpuExecutor(cluster="tcp://127.0.0.1:1", isolation="thread")
