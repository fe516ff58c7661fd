"""Interpreter exit with pool work in flight, in a fresh interpreter each (subprocess).

A pool thread that touches Python while the interpreter finalizes crashes the process ("Fatal
Python error", an abort, a segfault) or hangs it; the exit must instead be clean: status 0, nothing
on stderr. Like concurrent.futures, the interpreter lets work already handed to a pool finish.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from . import conftest

EXIT_TIMEOUT = 90.0

PRELUDE = r"""
import asyncio, os, sys, threading, time
import rustpool
# These scripts share threading.Events with the calls: CPU calls run on threads here (the isolated
# modes have exit tests of their own below).
rustpool.configure(isolation="thread")

started = {}

def say(line):
    os.write(1, (line + "\n").encode())  # one write: lines from pool threads never interleave

def work(tag, seconds):
    started[tag].set()
    time.sleep(seconds)
    say(f"finished {tag}")

def expect(*tags):
    for tag in tags:
        started[tag] = threading.Event()

async def wait_started():
    deadline = time.monotonic() + 30
    while not all(e.is_set() for e in started.values()):
        assert time.monotonic() < deadline, "calls never started"
        await asyncio.sleep(0.001)

def wait_started_sync():
    for e in started.values():
        assert e.wait(30), "calls never started"
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    return conftest.run_script(tmp_path, body, prelude=PRELUDE, timeout=EXIT_TIMEOUT)


def assert_clean_exit(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstderr:\n{proc.stderr}"
    for marker in ("Fatal Python error", "Traceback", "panicked", "Aborted", "Segmentation fault"):
        assert marker not in proc.stderr, proc.stderr
    assert proc.stderr == "", proc.stderr


def finished(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("finished ")}


@pytest.mark.parametrize("how", ["sys.exit", "return"])
def test_exit_while_calls_run_in_cancelled_tasks_and_executors(tmp_path: Path, how: str) -> None:
    proc = run_script(
        tmp_path,
        f"""
        expect("to_thread", "run_cpu", "thread_submit", "cpu_submit")
        tex = rustpool.ThreadExecutor(2)
        cex = rustpool.CpuExecutor(1, isolation="thread")

        async def main():
            tasks = [
                asyncio.create_task(rustpool.to_thread(work, "to_thread", 0.3)),
                asyncio.create_task(rustpool.run_cpu(work, "run_cpu", 0.3)),
            ]
            tex.submit(work, "thread_submit", 0.3)
            cex.submit(work, "cpu_submit", 0.3)
            await wait_started()
            for t in tasks:
                t.cancel()
            await asyncio.sleep(0)
            {"sys.exit(0)" if how == "sys.exit" else "return"}

        asyncio.run(main())
        """,
    )
    assert_clean_exit(proc)
    # Work already running when the interpreter starts to exit runs to its end.
    assert finished(proc) == {"to_thread", "run_cpu", "thread_submit", "cpu_submit"}


def test_asyncio_run_returns_with_calls_still_running(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        expect("a", "b", "c")

        async def main():
            for tag in ("a", "b"):
                asyncio.create_task(rustpool.to_thread(work, tag, 0.3))
            asyncio.create_task(rustpool.run_cpu(work, "c", 0.3))
            await wait_started()

        asyncio.run(main())
        say("asyncio.run returned")
        """,
    )
    assert_clean_exit(proc)
    assert "asyncio.run returned" in proc.stdout
    assert finished(proc) == {"a", "b", "c"}


def test_exit_from_a_plain_script_with_submitted_work(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        expect("t", "c")
        tex = rustpool.ThreadExecutor(1)
        cex = rustpool.CpuExecutor(1, isolation="thread")
        tex.submit(work, "t", 0.2)
        cex.submit(work, "c", 0.2)
        # Queued behind the running calls when the script ends.
        queued = [tex.submit(say, f"finished queued-t{i}") for i in range(3)]
        queued += [cex.submit(say, f"finished queued-c{i}") for i in range(3)]
        wait_started_sync()
        """,
    )
    assert_clean_exit(proc)
    assert finished(proc) == {"t", "c"} | {f"queued-t{i}" for i in range(3)} | {f"queued-c{i}" for i in range(3)}


def test_exit_with_idle_pool_threads(tmp_path: Path) -> None:
    """Pool threads kept alive idle (keep_alive) when the interpreter exits."""
    proc = run_script(
        tmp_path,
        """
        async def main():
            await asyncio.gather(*(rustpool.to_thread(time.sleep, 0.01) for _ in range(20)))
            await asyncio.gather(*(rustpool.run_cpu(abs, -i) for i in range(20)))
        asyncio.run(main())
        ex = rustpool.ThreadExecutor(4, keep_alive=60)
        list(ex.map(time.sleep, [0.01] * 8))
        say("done")
        """,
    )
    assert_clean_exit(proc)
    assert proc.stdout == "done\n"


def test_exit_with_executor_dropped_without_shutdown(tmp_path: Path) -> None:
    """The last reference to a pool goes away on one of its own threads, then the process exits."""
    proc = run_script(
        tmp_path,
        """
        import gc
        expect("dropped")
        ex = rustpool.ThreadExecutor(2)
        f = ex.submit(work, "dropped", 0.1)
        wait_started_sync()
        del ex
        gc.collect()
        f.result(30)
        time.sleep(0.05)
        say("done")
        """,
    )
    assert_clean_exit(proc)
    assert finished(proc) == {"dropped"}
    assert "done" in proc.stdout


def test_exit_while_pool_threads_come_and_go(tmp_path: Path) -> None:
    """keep_alive=0: pool threads are let go all the time, including while the interpreter exits;
    a daemon thread keeps submitting until the pools refuse work."""
    proc = run_script(
        tmp_path,
        """
        ex = rustpool.ThreadExecutor(8, keep_alive=0.0)
        go = threading.Event()

        def pump():
            try:
                while True:
                    for f in [ex.submit(time.sleep, 0.0005) for _ in range(8)]:
                        f.result(30)
                    go.set()
            except RuntimeError:
                pass  # "cannot schedule new futures after (interpreter) shutdown"

        threading.Thread(target=pump, daemon=True).start()
        assert go.wait(30)
        """,
    )
    assert_clean_exit(proc)


# --- isolation="interpreter" (CPython 3.13+) ---------------------------------------------------
# The calls run in subinterpreters, which end on their own worker threads before the main
# interpreter finalizes: a crash there ("Fatal Python error", a double free at Py_EndInterpreter)
# shows as a bad exit status or text on stderr. The worker function lives in the script's __main__
# (a worker loads it as __mp_main__, so the pool code sits under the main guard); it reports
# through os.write and files, since no threading primitive crosses into a subinterpreter.

needs_interpreters = pytest.mark.skipif(
    sys.version_info < (3, 13), reason='isolation="interpreter" needs CPython 3.13+'
)

INTERPRETER_PRELUDE = r"""
import asyncio, gc, os, sys, time
import rustpool

def say(line):
    os.write(1, (line + "\n").encode())

def iwork(tag, seconds, hold=None):
    open(f"started-{tag}", "w").close()  # in the script's directory (the process's cwd)
    say(f"started {tag}")
    deadline = time.monotonic() + 30
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.002)  # held until the script creates the file `hold`
    time.sleep(seconds)
    say(f"finished {tag}")
    return tag

def wait_started(*tags):
    deadline = time.monotonic() + 30
    while not all(os.path.exists(f"started-{t}") for t in tags):
        assert time.monotonic() < deadline, "calls never started"
        time.sleep(0.002)

async def await_started(*tags):
    deadline = time.monotonic() + 30
    while not all(os.path.exists(f"started-{t}") for t in tags):
        assert time.monotonic() < deadline, "calls never started"
        await asyncio.sleep(0.002)
"""


def run_interpreter_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """``body`` is the script's ``if __name__ == "__main__":`` block (unindented)."""
    for stale in [*tmp_path.glob("started-*"), tmp_path / "go"]:
        stale.unlink(missing_ok=True)
    script = tmp_path / "script.py"
    guarded = textwrap.indent(textwrap.dedent(body), "    ")
    script.write_text(INTERPRETER_PRELUDE + '\nif __name__ == "__main__":\n' + guarded)
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )


def tagged(proc: subprocess.CompletedProcess[str], what: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(what + " ")]


def interpreter_exit_body(how: str, mode: str = "interpreter") -> str:
    return f"""
    def main():
        rustpool.configure(isolation={mode!r})
        ex = rustpool.CpuExecutor(2, isolation={mode!r})
        # Two run, two wait in the queue when the script ends.
        for tag in ("s0", "s1", "s2", "s3"):
            ex.submit(iwork, tag, 0.3)

        async def amain():
            other = rustpool.CpuExecutor(1, isolation={mode!r})
            tasks = [
                asyncio.create_task(other.run(iwork, "run", 0.3, "go")),
                asyncio.create_task(other.run(iwork, "run-queued", 0.3)),
                # The default CPU pool, in the same mode.
                asyncio.create_task(rustpool.run_cpu(iwork, "run_cpu", 0.3)),
            ]
            await await_started("run", "run_cpu")
            for t in tasks:
                t.cancel()  # "run" and "run_cpu" go on; "run-queued" never starts
            await asyncio.sleep(0)
            open("go", "w").close()

        asyncio.run(amain())
        wait_started("s0", "s1")
        say("exiting")
        {"sys.exit(0)" if how == "sys.exit" else "return"}

    main()
    """


def assert_started_calls_finished(proc: subprocess.CompletedProcess[str]) -> None:
    assert "exiting" in proc.stdout.splitlines(), proc.stdout
    started, done = tagged(proc, "started"), tagged(proc, "finished")
    assert sorted(started) == sorted(done), proc.stdout
    assert {"s0", "s1", "s2", "s3", "run", "run_cpu"} <= set(done), proc.stdout
    assert "run-queued" not in started, proc.stdout


ISOLATED = [
    pytest.param("interpreter", marks=needs_interpreters),
    "process",
]


@pytest.mark.parametrize("mode", ISOLATED)
@pytest.mark.parametrize("how", ["sys.exit", "return"])
def test_exit_while_isolated_calls_run(tmp_path: Path, how: str, mode: str) -> None:
    proc = run_interpreter_script(tmp_path, interpreter_exit_body(how, mode))
    assert_clean_exit(proc)
    assert_started_calls_finished(proc)


@needs_interpreters
def test_exit_while_interpreter_calls_run_repeatedly(tmp_path: Path) -> None:
    """The same exits again and again: a crash while subinterpreters end can be intermittent."""
    for attempt in range(5):
        how = "sys.exit" if attempt % 2 else "return"
        proc = run_interpreter_script(tmp_path, interpreter_exit_body(how))
        assert_clean_exit(proc)
        assert_started_calls_finished(proc)


@pytest.mark.parametrize("mode", ISOLATED)
@pytest.mark.parametrize("wait_for_result", [False, True], ids=["running", "done"])
def test_exit_with_isolated_executor_dropped_without_shutdown(tmp_path: Path, wait_for_result: bool, mode: str) -> None:
    proc = run_interpreter_script(
        tmp_path,
        f"""
        ex = rustpool.CpuExecutor(2, isolation={mode!r})
        f = ex.submit(iwork, "dropped", 0.3)
        queued = [ex.submit(iwork, f"dropped-{{i}}", 0.05) for i in range(3)]
        wait_started("dropped")
        del ex
        gc.collect()
        if {wait_for_result}:
            assert f.result(30) == "dropped"
            assert [q.result(30) for q in queued] == [f"dropped-{{i}}" for i in range(3)]
        say("exiting")
        """,
    )
    assert_clean_exit(proc)
    assert "exiting" in proc.stdout.splitlines()
    assert set(tagged(proc, "finished")) == {"dropped"} | {f"dropped-{i}" for i in range(3)}
