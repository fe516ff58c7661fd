"""Fixtures and the ratio summary for rustpool's benchmarks.

Run (the path must be given: pyproject's testpaths is ``tests``)::

    .venv-3.11/bin/python -m pytest benches -p no:cacheprovider --benchmark-only

Every benchmark round runs one coroutine with ``loop.run_until_complete`` on a single event loop
per module, while a 1 ms ticker (``asyncio.sleep(0.001)`` in a loop) measures how late the event
loop wakes it: that overshoot's p99 is the "loop lag" of the entry. Nothing here asserts a speed:
the summary at the end prints each group's medians, the ratio to the group's anchor, the lag, and
the project's targets beside them.

Entries may carry more than a time: ``target_serial`` (a speedup over the group's serial entry),
``lag_target_ms`` (the loop-lag bound a rustpool entry is held to; 1 ms unless a group says
otherwise) and memory figures (``rss_per_worker_mib``, ``pss_per_worker_mib``), which the summary
prints as a column and a line of their own.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

TICK_S = 0.001
ROLE_ORDER = {"rustpool": 0, "anchor": 1, "other": 2, "serial": 3, "floor": 4}


def p99(samples: list[float]) -> float:
    if not samples:
        return math.nan
    s = sorted(samples)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


class LagProbe:
    """A 1 ms ticker on the running loop; records how late each tick wakes up (seconds)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._t0: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self._t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.samples.append(max(0.0, time.perf_counter() - self._t0 - TICK_S))
            self._t0 = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)  # let the ticker arm its first sleep before the workload starts

    def stop(self) -> list[float]:
        # A tick still pending when the workload ends counts if it is already late: a workload that
        # blocks the loop for its whole run would otherwise leave no sample at all.
        if self._t0 is not None:
            late = time.perf_counter() - self._t0 - TICK_S
            if late > 0:
                self.samples.append(late)
        assert self._task is not None
        self._task.cancel()
        return self.samples


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One long-lived asyncio loop per module (a module may override it, e.g. with uvloop)."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.run_until_complete(lp.shutdown_asyncgens())
    lp.run_until_complete(lp.shutdown_default_executor())
    lp.close()


@pytest.fixture
def bench_async(benchmark: Any, loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """``bench_async(workload, group=, impl=, role=, ops=, rounds=, ...)``.

    ``workload`` is a zero-argument coroutine function: one round. ``ops`` is the number of calls
    one round makes (the summary derives per-call time and calls/s from it); ``teardown`` runs
    after each round, untimed (a cold-start entry shuts its pool down there). ``role`` is
    ``"rustpool"``, ``"anchor"`` (the group's reference), ``"other"``, ``"serial"`` (the same work
    run inline, for speedups) or ``"floor"`` (the same burst with no offload at all: what the
    loop itself costs, and the lag every entry starts from).
    """

    def run(
        workload: Callable[[], Awaitable[Any]],
        *,
        group: str,
        impl: str,
        role: str,
        ops: int,
        rounds: int,
        warmup_rounds: int = 1,
        target_ratio: float | None = None,
        target: str | None = None,
        target_serial: float | None = None,
        lag_target_ms: float | None = 1.0,
        note: str | None = None,
        teardown: Callable[[], None] | None = None,
    ) -> Any:
        per_round: list[list[float]] = []

        async def one_round() -> Any:
            probe = LagProbe()
            await probe.start()
            try:
                return await workload()
            finally:
                per_round.append(probe.stop())

        benchmark.group = group
        result = benchmark.pedantic(
            lambda: loop.run_until_complete(one_round()),
            rounds=rounds,
            iterations=1,
            warmup_rounds=warmup_rounds,
            teardown=teardown,
        )
        lags = [x for r in per_round[warmup_rounds:] for x in r]
        lag_p99_ms = p99(lags) * 1e3
        benchmark.extra_info.update(
            impl=impl,
            role=role,
            ops=ops,
            lag_p99_ms=round(lag_p99_ms, 3),
            lag_max_ms=round(max(lags, default=math.nan) * 1e3, 3),
            lag_samples=len(lags),
            lag_target_ms=lag_target_ms,
        )
        if target_serial is not None:
            benchmark.extra_info["target_serial"] = target_serial
        if target_ratio is not None:
            benchmark.extra_info["target_ratio"] = target_ratio
        if target is not None:
            benchmark.extra_info["target"] = target
        if note is not None:
            benchmark.extra_info["note"] = note
        print(f"\n[lag] {group} | {impl}: p99 {lag_p99_ms:.3f} ms over {len(lags)} ticks")
        return result

    return run


# ---------------------------------------------------------------- the ratio summary


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f}M/s"
    if r >= 1e3:
        return f"{r / 1e3:.1f}k/s"
    return f"{r:.1f}/s"


def _fmt_ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f} ms"


def _fmt_mib(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.1f} MiB"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    bs = getattr(config, "_benchmarksession", None)
    benches = [b for b in getattr(bs, "benchmarks", []) if b and "role" in b.extra_info]
    if not benches:
        return
    groups: dict[str, list[Any]] = {}
    for b in benches:
        groups.setdefault(b.group or "(no group)", []).append(b)

    tr = terminalreporter
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tr.write_sep("=", "rustpool: ratios to the anchors (medians; nothing asserted)")
    tr.write_line(
        f"Python {sys.version.split()[0]} ({sys.implementation.name}), {cores} cores usable. "
        "'vs anchor' = anchor median / entry median: above 1.00x the entry is faster."
    )
    tr.write_line(
        "lag p99 = 99th percentile of how late a 1 ms asyncio.sleep ticker woke while the entry ran; "
        "lag max = the worst (a burst that blocks the loop once shows there, not in p99 of a long round)."
    )
    for name, items in groups.items():
        items.sort(key=lambda b: (ROLE_ORDER.get(b.extra_info["role"], 9), b.extra_info["impl"]))
        anchor = next((b for b in items if b.extra_info["role"] == "anchor"), None)
        serial = next((b for b in items if b.extra_info["role"] == "serial"), None)
        floor = next((b for b in items if b.extra_info["role"] == "floor"), None)
        tr.write_line("")
        tr.write_line(f"-- {name}")
        labels = {
            id(b): b.extra_info["impl"] + {"anchor": " [anchor]", "serial": " [serial]"}.get(b.extra_info["role"], "")
            for b in items
        }
        w = max(len(x) for x in labels.values())
        header = f"   {'entry':<{w}} {'median/round':>12} {'per call':>10} {'calls/s':>10} {'vs anchor':>10}"
        if serial is not None:
            header += f" {'vs serial':>10}"
        header += f" {'lag p99':>10} {'lag max':>10}"
        has_mem = any("rss_per_worker_mib" in b.extra_info for b in items)
        if has_mem:
            header += f" {'RSS/worker':>11}"
        tr.write_line(header)
        for b in items:
            ei = b.extra_info
            med = b.stats.median
            label = labels[id(b)]
            ratio = f"{anchor.stats.median / med:.2f}x" if anchor is not None else "-"
            line = (
                f"   {label:<{w}} {_fmt_time(med):>12} {_fmt_time(med / ei['ops']):>10}"
                f" {_fmt_rate(ei['ops'] / med):>10} {ratio:>10}"
            )
            if serial is not None:
                line += f" {serial.stats.median / med:>9.2f}x"
            line += f" {_fmt_ms(ei['lag_p99_ms']):>10} {_fmt_ms(ei['lag_max_ms']):>10}"
            if has_mem:
                line += f" {_fmt_mib(ei.get('rss_per_worker_mib')):>11}"
            tr.write_line(line)
        for b in items:
            ei = b.extra_info
            if "rss_per_worker_mib" in ei:
                what = ei.get("mem_what", "RSS growth / workers")
                pss = (
                    f", PSS {_fmt_mib(ei['pss_per_worker_mib'])} per worker"
                    if ei.get("pss_per_worker_mib") is not None
                    else ""
                )
                tr.write_line(
                    f"   memory {ei['impl']}: {_fmt_mib(ei['rss_per_worker_mib'])} per worker ({what}){pss}"
                )
        for b in items:
            ei = b.extra_info
            if "note" in ei:
                tr.write_line(f"   note: {ei['note']}")
        for b in items:
            ei = b.extra_info
            if ei["role"] != "rustpool":
                continue
            if "target_ratio" in ei and anchor is not None:
                got = anchor.stats.median / b.stats.median
                verdict = "met" if got >= ei["target_ratio"] else "NOT met"
                what = ei.get("target", f">= {ei['target_ratio']:g}x the anchor")
                tr.write_line(f"   target {ei['impl']}: {what}: measured {got:.2f}x -> {verdict}")
            if "target_serial" in ei and serial is not None:
                got = serial.stats.median / b.stats.median
                verdict = "met" if got >= ei["target_serial"] else "NOT met"
                tr.write_line(
                    f"   target {ei['impl']}: speedup over serial >= {ei['target_serial']:g}x: "
                    f"measured {got:.2f}x -> {verdict}"
                )
            lag_target = ei.get("lag_target_ms", 1.0)
            if lag_target is None:
                continue
            lag = ei["lag_p99_ms"]
            verdict = "met" if lag < lag_target else "NOT met"
            floor_note = (
                f" (floor with no offload at all: {_fmt_ms(floor.extra_info['lag_p99_ms'])})"
                if floor is not None
                else ""
            )
            tr.write_line(
                f"   target {ei['impl']}: loop lag p99 < {lag_target:g} ms: "
                f"measured {_fmt_ms(lag)} -> {verdict}{floor_note}"
            )
