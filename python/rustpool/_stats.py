"""``pool.stats()``: what a pool has done and is doing, from counters its Rust side keeps as it
claims and settles calls (and, on a cluster, that the cluster pool keeps).

Why it exists: a pool that is slow, stuck or losing workers should say so without a debugger.
``repr(pool)`` shows the counts that matter at a glance; ``stats()`` has them all.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PoolStats:
    """A pool's counts and times, as ``pool.stats()`` returns them.

    ``workers``: workers alive (threads of a thread pool, idle ones included; worker threads of
    subinterpreters or processes; a cluster's Dask worker threads); ``busy``: those running a call;
    ``idle``: the rest. ``queued``: calls submitted and not begun; ``running``: begun and not
    settled; ``done``, ``failed``, ``cancelled``: calls settled with a result, an exception, or
    cancelled (before they began, or, killed, while they ran). ``crashed``: worker processes that
    died by themselves; ``replaced``: worker processes let go for a new one (crashed, killed by a
    timeout or ``kill_on_cancel``, or recycled by ``max_tasks_per_child``/
    ``max_memory_per_child``). ``wait_median``/``wait_p99``: seconds calls waited from submit to
    their start; ``run_median``/``run_p99``: seconds from start to settle (None before any call;
    read from histograms with buckets about 9% wide)."""

    workers: int
    busy: int
    idle: int
    queued: int
    running: int
    done: int
    failed: int
    cancelled: int
    crashed: int
    replaced: int
    wait_median: float | None
    wait_p99: float | None
    run_median: float | None
    run_p99: float | None

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> PoolStats:
        return cls(**{f.name: counts[f.name] for f in fields(cls)})

    def brief(self) -> str:
        """The counts ``repr(pool)`` shows."""
        text = (
            f"workers={self.workers} busy={self.busy} queued={self.queued} "
            f"done={self.done} failed={self.failed} cancelled={self.cancelled}"
        )
        if self.crashed or self.replaced:
            text += f" crashed={self.crashed} replaced={self.replaced}"
        return text
