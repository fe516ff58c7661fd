"""A worker process's pipes (calls on its fd 3, replies on its fd 4) against what a call can do.

A call runs arbitrary code in the worker: it can start grandchildren that outlive it, write to
fd 4, or stop half-way through something that looks like a reply. The pool must still see the
worker's death, never believe a reply that is not one (``WorkerCrashed`` for that call only, the
worker replaced), never allocate what a bogus length claims, and keep a call's deadline while a
reply is being read. Scenarios that hung before run in a subprocess with a hard timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import conftest
from . import proc_helpers as h
from .conftest import IMPORT_TESTS, SCRIPT_TIMEOUT, WAIT


@pytest.fixture
def proc(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Callable[..., rustpool.CpuExecutor]:
    def make(workers: int = 1, **options: Any) -> rustpool.CpuExecutor:
        return cpu_executor(workers, isolation="process", **options)

    return make


def run_script(tmp_path: Path, body: str, timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter that imports rustpool and ``tests``."""
    return conftest.run_script(tmp_path, body, prelude=IMPORT_TESTS, flags=(), timeout=timeout)


def kill_all(pid_file: Path) -> None:
    for line in pid_file.read_text().split() if pid_file.exists() else []:
        try:
            os.kill(int(line), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_worker_shows_a_short_readable_command_line(proc: Any) -> None:
    pid = proc().submit(h.pid).result(WAIT)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")[:-1]
    assert argv[0] == sys.executable
    assert argv[-1].endswith(os.path.join("rustpool", "_worker.py"))
    assert len(" ".join(argv)) < 400


@pytest.mark.parametrize("hand_over_the_pipe", [False, True], ids=["ordinary grandchildren", "pipe passed on purpose"])
def test_a_grandchild_holding_the_reply_pipe_does_not_hide_a_worker_death(
    tmp_path: Path, hand_over_the_pipe: bool
) -> None:
    """The call leaves sleepers behind (a shell job, a fork, and maybe one given fd 4 on
    purpose), then its worker dies: the call fails with WorkerCrashed at once, although a
    grandchild may still hold the write end of the reply pipe (the death is seen on the
    process, not as EOF), and the pool goes on."""
    pids = tmp_path / "sleepers"
    try:
        out = run_script(
            tmp_path,
            f"""
            import time
            import rustpool
            from tests import proc_helpers as h
            if __name__ == "__main__":
                with rustpool.CpuExecutor(1, isolation="process") as ex:
                    ex.submit(h.add, 0, 0).result(30)
                    t0 = time.monotonic()
                    try:
                        ex.submit(h.start_sleepers_then_die, {str(pids)!r}, {hand_over_the_pipe}).result(30)
                    except rustpool.WorkerCrashed as e:
                        print("crashed", "SIGKILL" in str(e), time.monotonic() - t0 < 10)
                    print(ex.submit(h.add, 1, 2).result(30))
            """,
        )
    finally:
        kill_all(pids)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["crashed", "True", "True", "3"]
    assert len(pids.read_text().split()) == 2 + hand_over_the_pipe


def test_a_child_forked_by_a_call_does_not_hold_the_workers_pipes(proc: Any, tmp_path: Path) -> None:
    ex = proc()
    worker = ex.submit(h.pid).result(WAIT)
    reply_pipe = h.reply_pipe_of(worker)
    open_in_child = ex.submit(h.fork_and_report_open_pipes, str(tmp_path / "fds")).result(WAIT)
    assert reply_pipe not in open_in_child
    assert ex.submit(h.pid).result(WAIT) == worker  # the fork left the worker as it was


@pytest.mark.parametrize(
    ("stray", "why"),
    [
        (b"garbage that is not a frame", "does not start with rustpool's frame marker"),
        (h.reply_header(10**9, 5) + b"bogus", "answers call 1000000000 where call"),
        (h.reply_header(2, 0, status=99), "unknown status 99"),  # call 2: the second after setup
    ],
    ids=["garbage", "another call's id", "unknown status"],
)
def test_stray_bytes_on_the_reply_pipe_fail_that_call_only_with_worker_crashed(
    proc: Any, stray: bytes, why: str
) -> None:
    ex = proc()
    worker = ex.submit(h.pid).result(WAIT)
    with pytest.raises(rustpool.WorkerCrashed, match=f"malformed reply \\(.*({why})") as excinfo:
        ex.submit(h.write_to_reply_pipe, stray).result(WAIT)
    assert "write_to_reply_pipe" in str(excinfo.value)
    assert ex.submit(h.add, 2, 3).result(WAIT) == 5
    assert ex.submit(h.pid).result(WAIT) != worker  # the worker that wrote it was replaced


def test_a_reply_header_claiming_4_gib_is_refused_without_allocating_it(tmp_path: Path) -> None:
    """In a process whose address space is capped at 2 GiB (inherited by its workers): the
    parent would die allocating what the header claims; it fails the call instead."""
    out = run_script(
        tmp_path,
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        import rustpool
        from tests import proc_helpers as h
        if __name__ == "__main__":
            with rustpool.CpuExecutor(1, isolation="process") as ex:
                ex.submit(h.add, 0, 0).result(30)
                try:
                    ex.submit(h.write_to_reply_pipe, h.reply_header(2, 0xFFFFFFF0)).result(30)
                except rustpool.WorkerCrashed as e:
                    print("refused:", "claims 4294967280 bytes" in str(e))
                print(ex.submit(h.add, 1, 2).result(30))
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused:", "True", "3"]


def test_a_reply_that_stops_half_way_still_ends_at_the_calls_timeout(proc: Any) -> None:
    ex = proc()
    ex.submit(h.add, 0, 0).result(WAIT)
    half = h.reply_header(2, 100)[:10]
    with pytest.raises(TimeoutError, match=r"timeout of 0\.5s"):
        ex.options(timeout=0.5).submit(h.write_then_sleep, half, 30).result(WAIT)
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


def test_a_reply_that_stops_half_way_still_sees_the_worker_die(proc: Any) -> None:
    ex = proc()
    pid = ex.submit(h.pid).result(WAIT)
    f = ex.submit(h.write_then_sleep, h.reply_header(2, 100)[:10], 30)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(rustpool.WorkerCrashed, match="SIGKILL"):
        f.result(WAIT)
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


@pytest.mark.skipif(sys.version_info < (3, 13), reason="subinterpreters need CPython 3.13+")
def test_a_subinterpreter_worker_that_fails_to_boot_fails_its_calls_cleanly(tmp_path: Path) -> None:
    """A worker module that raises while it loads (standing in for any boot failure): each call
    the worker takes fails with a RuntimeError saying why, the process exits cleanly."""
    broken = tmp_path / "broken_worker.py"
    broken.write_text("raise ImportError('this worker cannot boot')\n")
    out = run_script(
        tmp_path,
        f"""
        import rustpool
        from rustpool import _crossing
        _crossing.worker_path = lambda: {str(broken)!r}
        if __name__ == "__main__":
            with rustpool.CpuExecutor(1, isolation="interpreter") as ex:
                for _ in range(2):
                    try:
                        ex.submit(abs, -1).result(30)
                    except RuntimeError as e:
                        print("failed:", "this worker cannot boot" in str(e))
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.split() == ["failed:", "True", "failed:", "True"]
