"""Functions sent to worker processes (module-level, so they pickle by reference)."""

from __future__ import annotations

import os
import signal
import time


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def fail(message: str) -> None:
    raise ValueError(message)


_STATE: dict[str, object] = {}


def remember(key: str, value: object) -> None:
    """An initializer: stores ``value`` in this worker process."""
    _STATE[key] = value


def recall(key: str) -> tuple[object, int]:
    return _STATE.get(key), os.getpid()


def broken_initializer() -> None:
    raise RuntimeError("the initializer broke")


def lock_result() -> object:
    import threading

    return threading.Lock()


def grow(megabytes: int) -> int:
    """Keep ``megabytes`` MiB alive in this worker process; its pid."""
    _STATE.setdefault("ballast", [])
    _STATE["ballast"].append(bytearray(megabytes << 20))  # type: ignore[attr-defined]
    return os.getpid()


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


def touch_then_sleep(path: str, seconds: float) -> None:
    open(path, "w").close()
    time.sleep(seconds)


def pid_of(_: object) -> int:
    return os.getpid()


def fail_on(value: int, bad: int) -> int:
    if value == bad:
        raise ValueError(f"boom {value}")
    return value


def numpy_pid() -> int:
    """Imports numpy (which refuses subinterpreters) inside the call; the process that ran it."""
    import numpy  # noqa: F401

    return os.getpid()


# --- calls that misuse the worker's reply pipe (fd 4) --------------------------------------------

REPLY_MAGIC = b"rpR1"  # rustpool._worker.REPLY_MAGIC, spelled out: these test the parent's checks


def write_to_reply_pipe(data: bytes) -> int:
    """Write stray bytes where the worker's replies go, then return normally."""
    os.write(4, data)
    return 1


def reply_header(call_id: int, length: int, status: int = 0) -> bytes:
    import struct

    return struct.pack("<4sQIB", REPLY_MAGIC, call_id, length, status)


def write_then_sleep(data: bytes, seconds: float) -> None:
    """Write the start of a reply frame and stop there."""
    os.write(4, data)
    time.sleep(seconds)


def start_sleepers_then_die(pid_file: str, hand_over_the_pipe: bool) -> None:
    """Leave grandchildren behind (a shell's background job, a forked child, and with
    ``hand_over_the_pipe`` one given a copy of the reply pipe on purpose), then die."""
    import subprocess

    # Their output goes nowhere: the test waits for its script's output to end, not for them.
    pids = []
    os.system(f"sleep 30 >/dev/null 2>&1 & echo $! >> {pid_file}")
    child = os.fork()
    if child == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        time.sleep(30)
        os._exit(0)
    pids.append(child)
    if hand_over_the_pipe:
        quiet = subprocess.DEVNULL
        pids.append(subprocess.Popen(["sleep", "30"], pass_fds=(4,), stdout=quiet, stderr=quiet).pid)
    with open(pid_file, "a") as f:
        f.write("".join(f"{p}\n" for p in pids))
    os.kill(os.getpid(), signal.SIGKILL)


def reply_pipe_of(pid: int) -> str:
    """What fd 4 of process ``pid`` is (``pipe:[inode]``)."""
    return os.readlink(f"/proc/{pid}/fd/4")


def fork_and_report_open_pipes(pid_file: str) -> list[str]:
    """Fork a child that lists its open fds' targets into ``pid_file``; that list."""
    child = os.fork()
    if child == 0:
        try:
            targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
        except OSError:
            targets = []
        with open(pid_file, "w") as f:
            f.write("\n".join(t for t in targets if t.startswith("pipe:")))
        os._exit(0)
    os.waitpid(child, 0)
    with open(pid_file) as f:
        return f.read().split()


class Adder:
    """A callable object: it crosses by value, with its state at the time of each call."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, x: int) -> int:
        return x + self.k
