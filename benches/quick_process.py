"""Quick side-by-side for isolation="process" until it has its pytest-benchmark group (issue 5):
sequential round trip and 20,000 gathered calls, rustpool vs ProcessPoolExecutor(forkserver), warm
pools of 2, medians. Run: .venv-3.13/bin/python benches/quick_process.py"""
import asyncio
import multiprocessing
import statistics
import time

import rustpool
from concurrent.futures import ProcessPoolExecutor
async def seq(call, n=300):
    t = time.perf_counter()
    for _ in range(n): await call()
    return (time.perf_counter() - t) / n * 1e6
async def gathered(call, n=20000):
    t = time.perf_counter(); await asyncio.gather(*[call() for _ in range(n)]); return n / (time.perf_counter() - t)
async def main():
    loop = asyncio.get_running_loop()
    ex = rustpool.CpuExecutor(2, isolation="process"); pe = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))

    def rp():
        return ex.run(abs, -1)

    def pp():
        return loop.run_in_executor(pe, abs, -1)

    await seq(rp, 50); await seq(pp, 50)
    s_rp = statistics.median([await seq(rp) for _ in range(5)]); s_pp = statistics.median([await seq(pp) for _ in range(5)])
    g_rp = statistics.median([await gathered(rp) for _ in range(3)]); g_pp = statistics.median([await gathered(pp) for _ in range(3)])
    print(f"sequential: rustpool {s_rp:.1f} us, PPE {s_pp:.1f} us ({s_pp/s_rp:.2f}x); gathered 20k: rustpool {g_rp/1e3:.1f}k/s, PPE {g_pp/1e3:.1f}k/s ({g_rp/g_pp:.2f}x)")
    ex.shutdown(); pe.shutdown()
if __name__ == "__main__":
    asyncio.run(main())
