"""rustpool on a Dask cluster beside Dask itself: what a call costs, what batching buys, and
whether pure-Python work scales.

On a 2-worker ``LocalCluster`` (processes, one thread each; a scheduler and two worker processes
on this machine), the same client process measures, in one run:

- per-call overhead: sequential ``submit(inc, i).result()`` through ``CpuExecutor(cluster=...)``
  against raw ``client.submit(inc, i, pure=False).result()`` (10 alternating pairs of rounds of
  20 calls per round asked; the median of each and of the pairs' ratios);
- 10,000 tiny calls submitted at once and all gathered: rustpool (batched into a few Dask
  tasks) against raw ``client.submit`` per call and ``client.map``;
- fib(27) x 16 gathered, against the same 16 calls run serially in this process.

Run: ``python benches/cluster.py [rounds] [--retry-lost] [--per-call]`` (default 3 rounds;
``--retry-lost`` measures ``Cluster(..., retry_lost=True)``, which skips the at-most-once marks;
``--per-call`` stops after the first measure; needs
``distributed``: the ``rustpool[dask]`` extra, in requirements-dev.txt). Nothing here asserts a
speed.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import _workloads as w

import rustpool


def inc(x: int) -> int:
    return x + 1


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    import distributed

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
    import dask

    # Dask's profiler in this process's scheduler calls sys._current_frames(): unsafe beside
    # subinterpreters (README, Limits).
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
        )
    client = distributed.Client(cluster, set_as_default=False)
    retry_lost = "--retry-lost" in sys.argv
    pool = rustpool.CpuExecutor(cluster=rustpool.Cluster(client, retry_lost=retry_lost))
    try:
        print(f"Python {sys.version.split()[0]}, distributed {distributed.__version__}, 2-worker LocalCluster")
        print(f"command: python benches/cluster.py {rounds}")
        for _ in range(3):  # warm: imports on the workers, rustpool's node pools started
            pool.submit(inc, 1).result(60)
            client.submit(inc, 1, pure=False).result(60)

        def seq_rustpool() -> None:
            for i in range(20):
                pool.submit(inc, i).result(60)

        def seq_dask() -> None:
            for i in range(20):
                client.submit(inc, i, pure=False).result(60)

        # Alternating rounds (10 pairs per round asked), so that both see the same noise.
        pairs = [(timed(seq_rustpool) / 20, timed(seq_dask) / 20) for _ in range(rounds * 10)]
        rp_ms = statistics.median(p[0] for p in pairs) * 1e3
        dk_ms = statistics.median(p[1] for p in pairs) * 1e3
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        print(
            f"per call, sequential (retry_lost={retry_lost}, {len(pairs)} alternating rounds of 20): "
            f"rustpool {rp_ms:.2f} ms, client.submit {dk_ms:.2f} ms (pair-ratio median {ratio:.2f}x its time)"
        )

        if "--per-call" in sys.argv:
            return
        n = 10_000

        def many_rustpool() -> None:
            futures = [pool.submit(inc, i) for i in range(n)]
            assert [f.result(300) for f in futures][-1] == n

        def many_submit() -> None:
            futures = [client.submit(inc, i, pure=False) for i in range(n)]
            assert client.gather(futures)[-1] == n

        def many_map() -> None:
            assert client.gather(client.map(inc, range(n), pure=False))[-1] == n

        a = statistics.median(timed(many_rustpool) for _ in range(rounds))
        b = statistics.median(timed(many_submit) for _ in range(rounds))
        c = statistics.median(timed(many_map) for _ in range(rounds))
        print(
            f"{n:,} tiny calls: rustpool {a:.2f} s, client.submit {b:.2f} s ({b / a:.1f}x slower), "
            f"client.map {c:.2f} s ({c / a:.1f}x slower)"
        )

        jobs = 16
        serial = statistics.median(timed(lambda: [w.fib(27) for _ in range(jobs)]) for _ in range(rounds))

        def fibs() -> None:
            futures = [pool.submit(w.fib, 27) for _ in range(jobs)]
            [f.result(300) for f in futures]

        par = statistics.median(timed(fibs) for _ in range(rounds))
        print(f"fib(27) x {jobs}: serial {serial:.2f} s, rustpool on the cluster {par:.2f} s ({serial / par:.2f}x)")
    finally:
        pool.shutdown()
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
