"""A real program's life: pools dropped at exit, os.fork() in both directions, Ctrl-C with calls in
flight, and calls that are cancelled after a worker claimed them or that finish in the middle of
a batch.

Everything that could hang or crash the interpreter runs in a fresh interpreter (subprocess) with
a hard timeout; the scenarios that depend on thread timing run several times each. No test asserts
on speed: Ctrl-C exit times are measured and reported outside the suite.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import rustpool

from . import conftest
from . import lifecycle_work as w
from .conftest import SCRIPT_TIMEOUT, WAIT, async_wait_until

ISOLATED = ["process"] + (["interpreter"] if sys.version_info >= (3, 13) else [])
MODES = ["thread", *ISOLATED, "auto"]


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script in ``tmp_path`` (where ``lifecycle_work`` can be imported from,
    by the script and by its workers)."""
    shutil.copy(Path(w.__file__), tmp_path / "lifecycle_work.py")
    # The fork tests fork a process that has threads on purpose (3.12+ warns about it).
    flags = ("-X", "faulthandler", "-W", "ignore::DeprecationWarning")
    return conftest.run_script(tmp_path, body, flags=flags, timeout=SCRIPT_TIMEOUT)


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr


# --- pools dropped without shutdown -------------------------------------------------------------

DROPPED = {
    "ThreadExecutor": "rustpool.ThreadExecutor(2)",
    "CpuExecutor thread": "rustpool.CpuExecutor(2, isolation='thread')",
    **{f"CpuExecutor {m}": f"rustpool.CpuExecutor(2, isolation={m!r})" for m in ISOLATED},
}


@pytest.mark.parametrize("make", DROPPED.values(), ids=DROPPED.keys())
def test_a_pool_dropped_without_shutdown_finishes_its_calls_before_the_process_exits(tmp_path: Path, make: str) -> None:
    # A pool made in a function and dropped when it returns, its calls still running: the exit
    # must wait for them (a pool thread that takes the GIL while the interpreter finalizes aborts
    # the process). Several runs: the crash this guards against came 1 time in 3.
    body = f"""
        import asyncio, rustpool
        from lifecycle_work import work

        def main():
            pool = {make}
            for i in range(12):
                pool.submit(work, "trace", i, 0.02)
            async def last():
                return await pool.run(work, "trace", "last", 0.02)
            return asyncio.run(last())

        if __name__ == "__main__":
            main()
        """
    for run in range(4):
        proc = run_script(tmp_path, body)
        assert_clean_exit(proc)
        finished = [line for line in w.lines(str(tmp_path / "trace")) if line.startswith("finished")]
        assert len(finished) == 13, f"run {run}: {finished}"
        (tmp_path / "trace").unlink()


def test_a_default_pool_replaced_by_configure_finishes_its_calls_before_the_process_exits(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        import asyncio, rustpool
        from lifecycle_work import work

        async def main():
            rustpool.configure(isolation="thread", cpu_workers=2)
            calls = [asyncio.ensure_future(rustpool.run_cpu(work, "trace", i, 0.1)) for i in range(4)]
            await asyncio.sleep(0.02)
            rustpool.configure(cpu_workers=1)  # the old pool is dropped with its calls
            for c in calls:
                c.cancel()  # nobody waits for them any more; those that began still finish

        if __name__ == "__main__":
            asyncio.run(main())
        """,
    )
    assert_clean_exit(proc)
    trace = w.lines(str(tmp_path / "trace"))
    began = {line.split()[1] for line in trace if line.startswith("began")}
    finished = {line.split()[1] for line in trace if line.startswith("finished")}
    assert began and began == finished


# --- os.fork() --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_forked_child_gets_fresh_default_pools_and_refuses_the_parents_executors(tmp_path: Path, mode: str) -> None:
    proc = run_script(
        tmp_path,
        f"""
        import asyncio, os, sys, rustpool
        from lifecycle_work import square, pid

        async def use():
            return (await rustpool.to_thread(square, 3), await rustpool.run_cpu(square, 4))

        if __name__ == "__main__":
            rustpool.configure(isolation={mode!r})
            assert asyncio.run(use()) == (9, 16)
            threads = rustpool.ThreadExecutor(2)
            cpu = rustpool.CpuExecutor(2, isolation={mode!r})
            assert threads.submit(square, 5).result() == 25
            assert cpu.submit(square, 6).result() == 36
            child = os.fork()
            if child == 0:
                for ex in (threads, cpu):
                    try:
                        ex.submit(square, 1)
                    except RuntimeError as e:
                        assert "os.fork()" in str(e), e
                        print("refused", type(ex).__name__, flush=True)
                assert asyncio.run(use()) == (9, 16)
                if {mode!r} == "process":
                    # The child's worker processes are its own.
                    assert asyncio.run(rustpool.run_cpu(pid)) != os.getpid()
                print("child done", flush=True)
                sys.exit(0)  # a normal exit: the exit hook must not wait for the parent's threads
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            assert asyncio.run(use()) == (9, 16)
            assert threads.submit(square, 7).result() == 49
            assert cpu.submit(square, 8).result() == 64
            print("parent done", flush=True)
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout.splitlines() == [
        "refused ThreadExecutor",
        "refused CpuExecutor",
        "child done",
        "parent done",
    ]


@pytest.mark.parametrize("how", ["ProcessPoolExecutor", "multiprocessing.Pool"])
def test_a_fork_process_pool_made_after_run_cpu_works(tmp_path: Path, how: str) -> None:
    # On 3.13 run_cpu's default workers are subinterpreters, which a forked child cannot survive:
    # they are ended before the fork and made again for the next call.
    use = (
        "with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as pool:\n"
        "                results = list(pool.map(square, range(8)))"
        if how == "ProcessPoolExecutor"
        else "with mp.get_context('fork').Pool(2) as pool:\n                results = pool.map(square, range(8))"
    )
    proc = run_script(
        tmp_path,
        f"""
        import asyncio, multiprocessing as mp, rustpool
        from concurrent.futures import ProcessPoolExecutor
        from lifecycle_work import square

        if __name__ == "__main__":
            assert asyncio.run(rustpool.run_cpu(square, 3)) == 9
            {use}
            assert results == [x * x for x in range(8)], results
            assert asyncio.run(rustpool.run_cpu(square, 4)) == 16
            print("ok", flush=True)
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout == "ok\n"


@pytest.mark.skipif(sys.version_info < (3, 13), reason="subinterpreters: 3.13+")
def test_a_fork_waits_for_a_call_running_in_a_subinterpreter(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        import os, sys, rustpool
        from lifecycle_work import work, lines

        if __name__ == "__main__":
            pool = rustpool.CpuExecutor(1, isolation="interpreter")
            fut = pool.submit(work, "trace", "call", 0.5)
            while not lines("trace"):
                pass
            child = os.fork()
            if child == 0:
                os._exit(0)
            # The fork happened once the subinterpreter had ended, so after the call.
            print(lines("trace"), flush=True)
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            assert fut.result() == "call"
            assert pool.submit(work, "trace", "again", 0).result() == "again"
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout == "['began call', 'finished call']\n"


# --- Ctrl-C -------------------------------------------------------------------------------------

# A program started in the background by a non-interactive shell inherits SIGINT ignored, and
# Python then leaves it so: the scripts take Ctrl-C as a terminal's foreground program does.
TAKE_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"

CTRL_C_SCRIPT = TAKE_CTRL_C + """
import asyncio, sys, rustpool
from lifecycle_work import work

async def main():
    await asyncio.gather(*(rustpool.run_cpu(work, "trace", i, {seconds}) for i in range(8)))

if __name__ == "__main__":
    rustpool.configure(isolation=sys.argv[1], cpu_workers=2)
    asyncio.run(main())
"""


def interrupt(tmp_path: Path, mode: str, seconds: float, times: int) -> tuple[subprocess.Popen[str], str]:
    """Run the Ctrl-C script in its own process group, wait until two calls began, then send the
    group SIGINT (as a terminal does) ``times`` times. Returns the process and its stderr."""
    shutil.copy(Path(w.__file__), tmp_path / "lifecycle_work.py")
    (tmp_path / "script.py").write_text(CTRL_C_SCRIPT.format(seconds=seconds))
    proc = subprocess.Popen(
        [sys.executable, "script.py", mode],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + WAIT
    while len(w.lines(str(tmp_path / "trace"))) < 2:
        assert time.monotonic() < deadline, "the calls never began"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    seen = ""
    if times == 2:
        # The second Ctrl-C once the first one's traceback is out and the program is in its exit
        # (CPython drops a Ctrl-C that lands while it still prints the traceback: that one is
        # lost with or without rustpool, so it is sent again if the first try was lost).
        assert proc.stderr is not None
        while not seen.rstrip().endswith("KeyboardInterrupt"):
            line = proc.stderr.readline()
            assert line, f"the program ended before the second Ctrl-C: {seen}"
            seen += line
        for _ in range(3):
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                pass
    try:
        _, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
        err = seen + err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the program did not end after Ctrl-C") from None
    return proc, err


def assert_only_the_users_traceback(err: str) -> None:
    for marker in ("Exception ignored", "Fatal Python error", "panicked", "Segmentation fault", "Aborted"):
        assert marker not in err, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err


@pytest.mark.parametrize("mode", ["thread", *ISOLATED])
def test_ctrl_c_with_calls_in_flight_ends_the_program_and_no_queued_call_begins(tmp_path: Path, mode: str) -> None:
    proc, err = interrupt(tmp_path, mode, seconds=1.5, times=1)
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err)
    assert_only_the_users_traceback(err)
    trace = w.lines(str(tmp_path / "trace"))
    began = [line for line in trace if line.startswith("began")]
    finished = [line for line in trace if line.startswith("finished")]
    # Two workers: the two calls running at the Ctrl-C began, none of the six queued ones did.
    assert len(began) == 2, trace
    if mode == "thread":
        assert len(finished) == 2, "running threads cannot be stopped: they finish"
    else:
        # Worker processes are killed; subinterpreters get KeyboardInterrupt in the running call.
        assert finished == [], trace


def test_a_second_ctrl_c_ends_the_program_while_pool_threads_still_run_python(tmp_path: Path) -> None:
    proc, err = interrupt(tmp_path, "thread", seconds=30.0, times=2)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "rustpool: interrupted again; 2 pool thread(s) still running Python, exiting now" in err
    assert "Fatal Python error" not in err and "panicked" not in err


def test_ctrl_c_in_shutdown_wait_raises_keyboard_interrupt_and_cancels_the_queue(tmp_path: Path) -> None:
    shutil.copy(Path(w.__file__), tmp_path / "lifecycle_work.py")
    (tmp_path / "script.py").write_text(
        TAKE_CTRL_C
        + textwrap.dedent(
            """
            import rustpool
            from lifecycle_work import work
            pool = rustpool.ThreadExecutor(1)
            futures = [pool.submit(work, "trace", i, 0.5) for i in range(4)]
            try:
                pool.shutdown(wait=True)
            except KeyboardInterrupt:
                print("interrupted", [f.cancelled() for f in futures], flush=True)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "script.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + WAIT
    while not w.lines(str(tmp_path / "trace")):
        assert time.monotonic() < deadline, "the first call never began"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == 0, err
    assert out == "interrupted [False, True, True, True]\n", (out, err)
    assert w.lines(str(tmp_path / "trace")) == ["began 0", "finished 0"]


# --- claimed calls: exactly once, and on time ------------------------------------------------


def warm_up(pool: Any) -> None:
    """A few quick calls, so that the pool takes the next ones in batches (it does while calls
    are short)."""
    for i in range(20):
        assert pool.submit(w.quick, i).result(timeout=WAIT) == i


@pytest.mark.parametrize("mode", ISOLATED)
def test_a_call_claimed_in_a_batch_and_cancelled_before_it_began_never_begins(tmp_path: Path, mode: str) -> None:
    trace = str(tmp_path / "trace")
    with rustpool.CpuExecutor(1, isolation=mode) as pool:
        warm_up(pool)

        async def main() -> None:
            calls = [asyncio.ensure_future(pool.run(w.work, trace, i, 0.4)) for i in range(8)]
            assert await async_wait_until(lambda: len(w.lines(trace)) >= 1)
            for c in calls:
                c.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            assert await pool.run(w.quick, "after") == "after"

        asyncio.run(main())
    assert w.lines(trace) == ["began 0", "finished 0"]


@pytest.mark.parametrize("mode", ISOLATED)
def test_a_result_reaches_its_future_while_the_rest_of_its_batch_still_runs(mode: str) -> None:
    with rustpool.CpuExecutor(1, isolation=mode) as pool:
        warm_up(pool)

        async def main() -> None:
            # Submitted together to a warm worker, these are claimed as one batch: the quick
            # calls first, then a long one.
            quick = [asyncio.ensure_future(pool.run(w.quick, i)) for i in range(6)]
            slow = asyncio.ensure_future(pool.run(w.work, os.devnull, "slow", 3.0))
            done, _ = await asyncio.wait(quick, timeout=2.0)
            assert len(done) == 6 and not slow.done(), "quick results waited for the slow call"
            assert await slow == "slow"

        asyncio.run(main())


def test_a_worker_process_crash_fails_its_call_while_the_calls_behind_it_run(tmp_path: Path) -> None:
    trace = str(tmp_path / "trace")
    with rustpool.CpuExecutor(1, isolation="process") as pool:
        first = pool.submit(w.work, trace, "first", 0.3)
        victim = pool.submit(w.die_after, 0.05)
        behind = [pool.submit(w.work, trace, i, 0.2) for i in range(10)]
        with pytest.raises(rustpool.WorkerCrashed):
            victim.result(timeout=WAIT)
        assert sum(f.done() for f in behind) <= 1, "the crash was reported only after the calls behind it"
        assert first.result() == "first"
        assert [f.result(timeout=WAIT) for f in behind] == list(range(10))
