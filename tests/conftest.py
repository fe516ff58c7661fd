"""Shared fixtures and helpers for the rustpool test suite.

Every wait in the suite is bounded (``WAIT``) so that a bug shows up as a failed assertion, not as a
hung run; no test asserts on speed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import rustpool

# Generous bound for any handshake: far above what a loaded 2-core machine needs, far below the
# pytest-timeout of the suite.
WAIT = 30.0
# Hard bound for a script run in a fresh interpreter (exit, fork, crash scenarios).
SCRIPT_TIMEOUT = 90.0
# A script's first lines when it imports ``tests`` (the repository root on its sys.path).
IMPORT_TESTS = f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"


def run_script(
    tmp_path: Path,
    body: str,
    *,
    prelude: str = "",
    flags: Sequence[str] = ("-X", "faulthandler"),
    timeout: float = SCRIPT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``prelude`` + ``body`` (dedented) as ``tmp_path/script.py`` in a fresh interpreter, in
    ``tmp_path``; killed past ``timeout`` (the test then fails with ``TimeoutExpired``, not a hung
    run)."""
    script = tmp_path / "script.py"
    script.write_text(prelude + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, *flags, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, interval: float = 0.002) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def pickle_error(obj: object) -> BaseException:
    """What ``pickle.dumps(obj)`` raises (an isolated pool's call fails with the same)."""
    import pickle

    try:
        pickle.dumps(obj, 5)
    except BaseException as e:
        return e
    raise AssertionError(f"{obj!r} pickles")


async def async_wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """``wait_until`` for coroutines: yields to the loop between polls."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        await asyncio.sleep(0.002)


async def wait_event(event: threading.Event, timeout: float = WAIT) -> bool:
    """Wait for a ``threading.Event`` from a coroutine without blocking the loop."""
    return await async_wait_until(event.is_set, timeout)


async def settle_loop(rounds: int = 5) -> None:
    """Let callbacks already handed to the loop (e.g. the completion drain) run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def cancel_queued_call(call: Callable[[Callable[[], Any]], Any], pool: Callable[[], Any], gate: Gate) -> bool:
    """With a one-worker pool busy running ``call(gate)``: queue ``call(ran.set)``, cancel its task
    before it starts, let the first call finish and the worker pass over the cancelled one.
    ``pool()`` is the Rust pool. True when the cancelled call ran anyway (it must not)."""
    ran = threading.Event()
    blocker = asyncio.create_task(call(gate))
    assert await wait_event(gate.started)
    queued = asyncio.create_task(call(ran.set))
    assert await async_wait_until(lambda: pool().queued == 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    gate.release()
    await blocker
    assert await async_wait_until(lambda: pool().active == 0 and pool().queued == 0)
    return ran.is_set()


async def cancel_running_call(
    call: Callable[[Callable[[], Any]], Any],
    pool: Callable[[], Any],
    gate: Gate,
    loop_errors: Callable[[asyncio.AbstractEventLoop], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Cancel the task awaiting ``call(gate)`` while the call runs: the call still runs to its end
    and its result reaches the loop (the drain runs). Returns what the loop's exception handler
    was given meanwhile (it must be nothing)."""
    errors = loop_errors(asyncio.get_running_loop())
    task = asyncio.create_task(call(gate))
    assert await wait_event(gate.started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not gate.finished.is_set()
    gate.release()
    assert await wait_event(gate.finished)
    assert await async_wait_until(lambda: pool().active == 0 and pool().queued == 0)
    await settle_loop()
    return errors


def default_pool_idle() -> bool:
    """True when the pool behind ``to_thread`` has no runner alive and nothing queued."""
    pool = rustpool.default_thread_executor()._pool
    return pool.active == 0 and pool.queued == 0


class Gate:
    """A call that blocks until released, for deterministic handshakes with pool threads.

    ``started`` is set when the call begins, ``finished`` when it returns; ``release()`` lets it
    return. The wait inside is bounded so that a failing test never leaves a thread stuck forever.
    """

    def __init__(self, result: Any = None) -> None:
        self.started = threading.Event()
        self.released = threading.Event()
        self.finished = threading.Event()
        self.result = result
        self.calls = 0
        self.thread_name: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.thread_name = threading.current_thread().name
        self.started.set()
        try:
            if not self.released.wait(WAIT):
                raise TimeoutError("Gate was never released")
            return self.result
        finally:
            self.finished.set()

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release()


@pytest.fixture
def make_gate() -> Iterator[Callable[..., Gate]]:
    made: list[Gate] = []

    def factory(result: Any = None) -> Gate:
        g = Gate(result)
        made.append(g)
        return g

    yield factory
    for g in made:
        g.release()


def _shutdown_all(executors: list[Any]) -> None:
    for ex in executors:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def thread_executor() -> Iterator[Callable[..., rustpool.ThreadExecutor]]:
    """Factory for ThreadExecutors that are always shut down (waiting) at teardown."""
    made: list[rustpool.ThreadExecutor] = []

    def factory(*args: Any, **kwargs: Any) -> rustpool.ThreadExecutor:
        ex = rustpool.ThreadExecutor(*args, **kwargs)
        made.append(ex)
        return ex

    yield factory
    _shutdown_all(made)


@pytest.fixture
def cpu_executor() -> Iterator[Callable[..., rustpool.CpuExecutor]]:
    """Factory for CpuExecutors that are always shut down (waiting) at teardown.

    Isolation "thread" unless a test names another: these tests are about executor semantics and
    use local functions and threading primitives, which only threads share (the isolated modes
    have their own tests)."""
    made: list[rustpool.CpuExecutor] = []

    def factory(*args: Any, **kwargs: Any) -> rustpool.CpuExecutor:
        kwargs.setdefault("isolation", "thread")
        ex = rustpool.CpuExecutor(*args, **kwargs)
        made.append(ex)
        return ex

    yield factory
    _shutdown_all(made)


@pytest.fixture(params=["thread", "cpu"])
def any_executor(request: pytest.FixtureRequest, thread_executor: Any, cpu_executor: Any) -> Callable[..., Any]:
    """Factory for either executor kind, taking ``max_workers`` and ``thread_name_prefix``."""
    if request.param == "thread":
        return lambda max_workers=None, **kw: thread_executor(max_workers, **kw)
    return lambda max_workers=None, **kw: cpu_executor(max_workers, **kw)


HAS_INTERPRETERS = sys.version_info >= (3, 13)


@pytest.fixture
def restore_defaults() -> Iterator[None]:
    """Put the default pools' settings back after a test that calls ``rustpool.configure``."""
    saved = rustpool.settings()
    yield
    rustpool.configure(**saved)


@pytest.fixture
def unraisables(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Everything that reaches ``sys.unraisablehook`` during the test."""
    seen: list[Any] = []

    def hook(args: Any) -> None:
        seen.append((args.exc_type, args.exc_value, args.err_msg, args.object))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


@pytest.fixture
def loop_errors() -> Callable[[asyncio.AbstractEventLoop], list[dict[str, Any]]]:
    """``install(loop)`` routes the loop's exception handler into the returned list."""

    def install(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        return errors

    return install
