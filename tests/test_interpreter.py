"""``CpuExecutor(isolation="interpreter")``: workers that are subinterpreters with their own GIL
(CPython 3.13+).

A call crosses into a worker as a pickle and its outcome comes back the same way, so everything a
worker runs is defined in a module of its own (``tests.interp_helpers`` and friends): nothing here
can share a threading primitive with a worker, and handshakes go through files in ``tmp_path``.
Before 3.13 the mode is refused (``test_executors.py`` checks that); this whole module is skipped.

"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import pytest

if sys.version_info < (3, 13):
    pytest.skip(
        'isolation="interpreter" needs CPython 3.13+ (its refusal is tested in test_executors.py)',
        allow_module_level=True,
    )

import rustpool

from . import interp_helpers as h
from .conftest import WAIT, pickle_error, wait_until

MAIN_ID = h.interpreter_id()


@pytest.fixture
def interp(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Callable[..., rustpool.CpuExecutor]:
    """Factory for isolation="interpreter" executors (2 workers unless told), shut down at teardown."""

    def factory(max_workers: int = 2, **kwargs: Any) -> rustpool.CpuExecutor:
        return cpu_executor(max_workers, isolation="interpreter", **kwargs)

    return factory


@pytest.fixture
def auto(cpu_executor: Callable[..., rustpool.CpuExecutor]) -> Callable[..., rustpool.CpuExecutor]:
    """Factory for isolation="auto" executors that do not learn (``learn=False``): these tests
    are about auto's isolated side and its fallbacks; placement is tested in test_auto.py."""

    def factory(max_workers: int = 2, **kwargs: Any) -> rustpool.CpuExecutor:
        kwargs.setdefault("learn", False)
        return cpu_executor(max_workers, isolation="auto", **kwargs)

    return factory


class FileGate:
    """``h.gated`` from the caller's side: ``started`` appears when the call begins, ``release()``
    lets it return."""

    def __init__(self, directory: Path, name: str) -> None:
        self.started = directory / f"{name}.started"
        self.released = directory / f"{name}.release"

    def args(self) -> tuple[str, str]:
        return str(self.started), str(self.released)

    def wait_started(self) -> bool:
        return wait_until(self.started.exists)

    def release(self) -> None:
        self.released.touch()


@pytest.fixture
def file_gate(cpu_executor: Any, tmp_path: Path) -> Iterator[Callable[[str], FileGate]]:
    """Factory for FileGates, all released at teardown (before the executors are shut down)."""
    made: list[FileGate] = []

    def factory(name: str) -> FileGate:
        g = FileGate(tmp_path, name)
        made.append(g)
        return g

    yield factory
    for g in made:
        g.release()


def test_isolation_and_repr(interp: Any) -> None:
    ex = interp(2)
    assert ex.isolation == "interpreter"
    assert ex.max_workers == 2
    assert "isolation='interpreter'" in repr(ex)


def test_initializer_is_refused() -> None:
    with pytest.raises(ValueError, match="initializer"):
        rustpool.CpuExecutor(isolation="interpreter", initializer=print)


# --- crossing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "expected"),
    [
        (h.add, (1, 2), {}, 3),
        (h.add, (2**100,), {"b": -1}, 2**100 - 1),
        (h.reverse_bytes, (b"\x00\x01abc" * 1000,), {}, (b"\x00\x01abc" * 1000)[::-1]),
        (
            h.echo,
            ([1, (2, 3)], {"k": {4, 5}}),
            {"nested": {"a": [b"x", None, 1.5]}, "fn": "named fn"},
            (([1, (2, 3)], {"k": {4, 5}}), {"nested": {"a": [b"x", None, 1.5]}, "fn": "named fn"}),
        ),
        (h.scale, (h.Point(1, 2), 3), {}, h.Point(3, 6)),
        (h.box_of, (h.Point(0, 1), b"b", [1]), {}, h.Box([h.Point(0, 1), b"b", [1]])),
        (h.echo, (), {"p": h.Box([1])}, ((), {"p": h.Box([1])})),
    ],
    ids=["ints", "bigint-kwarg", "bytes", "nested-containers", "dataclass", "class-instance", "instance-kwarg"],
)
def test_submit_crossing(interp: Any, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], expected: Any) -> None:
    result = interp().submit(fn, *args, **kwargs).result(WAIT)
    assert result == expected
    assert type(result) is type(expected)


def test_await_run(interp: Any) -> None:
    ex = interp()

    async def main() -> tuple[Any, ...]:
        return tuple(
            await asyncio.gather(
                ex.run(h.add, 1, b=2),
                ex.run(h.scale, h.Point(1, 1), 5),
                ex.run(h.echo, 1, x=[2]),
            )
        )

    assert asyncio.run(main()) == (3, h.Point(5, 5), ((1,), {"x": [2]}))


def test_map(interp: Any) -> None:
    ex = interp()
    assert list(ex.map(h.add, range(20), range(20))) == [2 * i for i in range(20)]
    assert list(ex.map(abs, range(-10, 0))) == list(range(10, 0, -1))


@pytest.mark.parametrize("chunksize", [2, 7, 100])
def test_map_with_chunksize(interp: Any, chunksize: int) -> None:
    ex = interp()
    results = list(ex.map(h.add, range(20), range(20), chunksize=chunksize))
    assert results == [2 * i for i in range(20)]


def test_map_with_chunksize_under_auto_stays_in_subinterpreters(auto: Any) -> None:
    ex = auto()
    tagged = list(ex.map(h.tagged_interpreter_id, range(6), chunksize=3))
    assert [tag for tag, _ in tagged] == list(range(6))
    assert all(where != MAIN_ID for _, where in tagged), tagged


def test_run_cpu_with_interpreter_isolation(restore_defaults: None) -> None:
    rustpool.configure(isolation="interpreter", cpu_workers=2)
    assert rustpool.default_cpu_executor().isolation == "interpreter"

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(rustpool.run_cpu(h.scale, h.Point(1, 2), 2), rustpool.run_cpu(h.interpreter_id))
        )

    point, where = asyncio.run(main())
    assert point == h.Point(2, 4)
    assert where != MAIN_ID


# --- exceptions --------------------------------------------------------------------------------


def test_exception_comes_back_with_the_worker_traceback(interp: Any) -> None:
    f = interp().submit(h.fail_in_worker, "bad input")
    with pytest.raises(ValueError, match="bad input") as excinfo:
        f.result(WAIT)
    assert type(excinfo.value) is ValueError
    cause = excinfo.value.__cause__
    assert isinstance(cause, rustpool.RemoteTraceback)
    assert "fail_in_worker" in str(cause)
    assert "fail_in_worker" in cause.tb
    assert "ValueError: bad input" in cause.tb


def test_exception_through_await_run(interp: Any) -> None:
    ex = interp()

    async def main() -> None:
        await ex.run(h.fail_in_worker, "awaited")

    with pytest.raises(ValueError, match="awaited") as excinfo:
        asyncio.run(main())
    assert isinstance(excinfo.value.__cause__, rustpool.RemoteTraceback)
    assert "fail_in_worker" in str(excinfo.value.__cause__)


def test_system_exit_in_the_worker_comes_back_and_the_worker_goes_on(interp: Any) -> None:
    ex = interp(1)
    with pytest.raises(SystemExit) as excinfo:
        ex.submit(h.exit_in_worker, 3).result(WAIT)
    assert excinfo.value.code == 3
    assert ex.submit(h.add, 1, 1).result(WAIT) == 2


def test_exception_that_cannot_be_pickled_comes_back_as_runtime_error(interp: Any) -> None:
    ex = interp(1)
    with pytest.raises(RuntimeError) as excinfo:
        ex.submit(h.raise_locked_error).result(WAIT)
    message = str(excinfo.value)
    assert "LockedError" in message
    assert "holding a lock" in message
    assert "could not be pickled" in message
    cause = excinfo.value.__cause__
    assert isinstance(cause, rustpool.RemoteTraceback)
    assert "raise_locked_error" in str(cause)
    # The worker is fine afterwards.
    assert ex.submit(h.add, 2, 2).result(WAIT) == 4


def test_exception_that_cannot_be_unpickled_comes_back_as_runtime_error(interp: Any) -> None:
    """TwoArgError pickles in the worker but cannot be rebuilt in the caller (args has one value,
    __init__ wants two): a RuntimeError in its place, naming the type, never a hang."""
    ex = interp(1)
    with pytest.raises(RuntimeError) as excinfo:
        ex.submit(h.raise_two_arg_error).result(WAIT)
    assert "TwoArgError" in str(excinfo.value)
    assert ex.submit(h.add, 2, 3).result(WAIT) == 5


def test_exception_that_cannot_be_unpickled_keeps_the_worker_traceback(interp: Any) -> None:
    with pytest.raises(RuntimeError) as excinfo:
        interp(1).submit(h.raise_two_arg_error).result(WAIT)
    assert "first/second" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, rustpool.RemoteTraceback)
    assert "raise_two_arg_error" in str(excinfo.value.__cause__)


def test_result_that_cannot_be_pickled_raises_type_error(interp: Any) -> None:
    ex = interp(1)
    with pytest.raises(TypeError, match="could not be pickled") as excinfo:
        ex.submit(h.return_a_lock).result(WAIT)
    assert "cannot pickle '_thread.lock'" in str(excinfo.value)  # the pickle error itself
    assert "result of tests.interp_helpers.return_a_lock" in excinfo.value.__notes__[-1]
    assert isinstance(excinfo.value.__cause__, rustpool.RemoteTraceback)
    assert ex.submit(h.add, 3, 3).result(WAIT) == 6


# --- what cannot cross -------------------------------------------------------------------------

@pytest.fixture
def no_cloudpickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if cloudpickle were not installed (``import cloudpickle`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "cloudpickle", None)


needs_no_cloudpickle = pytest.mark.usefixtures("no_cloudpickle")


def _closure() -> Callable[[], int]:
    captured = 41

    def inner_closure() -> int:
        return captured + 1

    return inner_closure


@needs_no_cloudpickle
@pytest.mark.parametrize(
    ("make", "name"), [(lambda: (lambda: 42), "<lambda>"), (_closure, "inner_closure")], ids=["lambda", "closure"]
)
def test_an_unpicklable_callable_fails_its_future_with_the_pickle_error(
    interp: Any, make: Callable[[], Any], name: str
) -> None:
    ex = interp(1)
    fn = make()
    error = type(pickle_error(fn))
    f = ex.submit(fn)  # as the stdlib: submit itself does not raise
    with pytest.raises(error) as excinfo:
        f.result(WAIT)
    assert name in str(excinfo.value)
    assert "cloudpickle" in excinfo.value.__notes__[-1]

    async def main() -> Any:
        return await ex.run(fn)

    with pytest.raises(error, match="cloudpickle"):
        asyncio.run(main())
    # The pool is still usable.
    assert ex.submit(h.add, 4, 4).result(WAIT) == 8


@needs_no_cloudpickle
def test_unpicklable_callable_runs_on_threads_under_auto_with_a_warning(auto: Any) -> None:
    ex = auto(1)
    assert ex.isolation == "interpreter"
    with pytest.warns(rustpool.ThreadFallbackWarning, match="<lambda> cannot run in an isolated worker"):
        assert ex.submit(lambda: 42).result(WAIT) == 42
    with pytest.warns(rustpool.ThreadFallbackWarning, match="inner_closure cannot run"):
        assert ex.submit(_closure()).result(WAIT) == 42
    # Functions that can cross still go to the subinterpreters.
    assert ex.submit(h.interpreter_id).result(WAIT) != MAIN_ID

    async def main() -> Any:
        return await ex.run(lambda x: x * 2, 21)

    with pytest.warns(rustpool.ThreadFallbackWarning, match="<lambda>"):
        assert asyncio.run(main()) == 42


def test_lambdas_and_closures_cross_with_cloudpickle(interp: Any) -> None:
    """With cloudpickle installed, lambdas and closures run in the subinterpreter itself."""
    pytest.importorskip("cloudpickle", reason="cloudpickle is in requirements-dev.txt")
    ex = interp(1)
    assert ex.submit(lambda x: x * 2, 21).result(WAIT) == 42
    assert ex.submit(_closure()).result(WAIT) == 42

    def where() -> Any:
        import _interpreters

        return _interpreters.get_current()[0]

    assert ex.submit(where).result(WAIT) != MAIN_ID


@needs_no_cloudpickle
def test_an_unpicklable_argument_fails_its_future_with_the_pickle_error(interp: Any) -> None:
    f = interp(1).submit(h.echo, threading.Lock())
    with pytest.raises(TypeError, match="lock") as excinfo:
        f.result(WAIT)
    assert "arguments of tests.interp_helpers.echo" in excinfo.value.__notes__[-1]


def test_unpicklable_argument_runs_on_threads_under_auto_with_a_warning(auto: Any) -> None:
    lock = threading.Lock()
    with pytest.warns(rustpool.ThreadFallbackWarning, match="interp_helpers.echo cannot run.*lock"):
        args, kwargs = auto(1).submit(h.echo, lock, k=lock).result(WAIT)
    assert args == (lock,) and kwargs == {"k": lock}


# --- where the calls run -----------------------------------------------------------------------


def test_calls_run_in_another_interpreter(interp: Any) -> None:
    assert MAIN_ID == 0
    assert interp(1).submit(h.interpreter_id).result(WAIT) != MAIN_ID


def test_workers_are_distinct_interpreters_running_at_once(interp: Any, tmp_path: Path) -> None:
    """Two calls that can only return once both are running (a file barrier): each worker is its
    own interpreter, and they run at the same time."""
    ex = interp(2)
    futures = [ex.submit(h.barrier_interpreter_id, str(tmp_path), 2) for _ in range(2)]
    ids = [f.result(WAIT + 10) for f in futures]
    assert len(set(ids)) == 2
    assert MAIN_ID not in ids


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the OS thread name from /proc (Linux)")
def test_runs_on_a_thread_named_with_the_prefix(interp: Any) -> None:
    name = interp(1, thread_name_prefix="ipool").submit(h.os_thread_name).result(WAIT)
    assert name == "ipool_0"


def test_sys_path_of_the_caller_at_pool_creation(
    interp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moddir = tmp_path / "extra_path"
    moddir.mkdir()
    (moddir / "helpermod_xyz.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(moddir))
    import helpermod_xyz  # type: ignore[import-not-found]

    monkeypatch.setitem(sys.modules, "helpermod_xyz", helpermod_xyz)  # forgotten at teardown

    ex = interp(1)
    assert ex.submit(helpermod_xyz.triple, 14).result(WAIT) == 42
    assert str(moddir) in ex.submit(h.sys_path).result(WAIT)


def test_sys_path_changed_after_pool_creation_is_not_seen(
    interp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = interp(1)
    assert ex.submit(h.add, 1).result(WAIT) == 1  # the worker is up
    moddir = tmp_path / "late_path"
    moddir.mkdir()
    (moddir / "helpermod_late.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(moddir))
    import helpermod_late  # type: ignore[import-not-found]

    monkeypatch.setitem(sys.modules, "helpermod_late", helpermod_late)  # forgotten at teardown

    with pytest.raises(rustpool.WorkerUnsupported, match="helpermod_late"):
        ex.submit(helpermod_late.triple, 1).result(WAIT)


def test_working_directory_of_the_caller(
    cpu_executor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ex = cpu_executor(2, isolation="interpreter")
    try:
        assert ex.submit(h.cwd).result(WAIT) == str(tmp_path)
    finally:
        # Every worker has set itself up before the test puts the directory back.
        ex.shutdown(wait=True)


def test_creating_a_pool_does_not_change_the_callers_directory_later(
    cpu_executor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    ex = cpu_executor(2, isolation="interpreter")
    try:
        monkeypatch.chdir(second)
        ex.submit(h.add, 1).result(WAIT)
    finally:
        ex.shutdown(wait=True)
    assert os.getcwd() == str(second)


MAIN_SCRIPT = r'''
import dataclasses
import os
import sys

import rustpool

@dataclasses.dataclass
class Pair:
    a: int
    b: int

def add_pair(pair, extra=0):
    return pair.a + pair.b + extra

def make_pair(a):
    return Pair(a, a)

def where():
    import _interpreters
    return _interpreters.get_current()[0]

if __name__ == "__main__":
    print("guard ran", flush=True)
    ex = rustpool.CpuExecutor(2, isolation="interpreter")
    print("result", ex.submit(add_pair, Pair(20, 21), extra=1).result(30), flush=True)
    print("mapped", list(ex.map(add_pair, [Pair(i, i) for i in range(4)])), flush=True)
    print("subinterpreter", ex.submit(where).result(30) != 0, flush=True)
    RETURN_INSTANCE
    ex.shutdown()
'''


def run_main_script(tmp_path: Path, return_instance: bool) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "main_script.py"
    line = 'print("returned", ex.submit(make_pair, 7).result(30), flush=True)' if return_instance else "pass"
    script.write_text(textwrap.dedent(MAIN_SCRIPT).replace("RETURN_INSTANCE", line))
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_functions_of_the_callers_main_module(tmp_path: Path) -> None:
    """Functions and classes of a script's ``__main__`` cross as with multiprocessing's spawn: the
    worker runs the script as ``__mp_main__``, so its ``if __name__ == "__main__":`` block does not
    run again."""
    proc = run_main_script(tmp_path, return_instance=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines.count("guard ran") == 1, proc.stdout
    assert "result 42" in lines
    assert "mapped [0, 2, 4, 6]" in lines
    assert "subinterpreter True" in lines


def test_instances_of_main_classes_come_back(tmp_path: Path) -> None:
    proc = run_main_script(tmp_path, return_instance=True)
    assert proc.returncode == 0, proc.stderr
    assert "returned Pair(a=7, b=7)" in proc.stdout.splitlines()


# --- modules that refuse subinterpreters -------------------------------------------------------


@pytest.fixture
def refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The log where tests.interp_refuses notes each refusal (set before the pool exists: a
    worker's os.environ is read when it starts)."""
    log = tmp_path / "refusals.log"
    monkeypatch.setenv("RUSTPOOL_TEST_REFUSALS", str(log))
    return log


def refusal_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_module_refusing_subinterpreters_raises_worker_unsupported(interp: Any, refusals: Path) -> None:
    from . import interp_refuses

    ex = interp(1)
    with pytest.raises(rustpool.WorkerUnsupported) as excinfo:
        ex.submit(interp_refuses.double_where, 2).result(WAIT)
    assert isinstance(excinfo.value, ImportError)
    message = str(excinfo.value)
    assert "tests.interp_refuses" in message
    assert "does not support loading in subinterpreters" in message
    assert 'isolation="process"' in message and '"auto"' in message
    assert refusal_count(refusals) == 1
    # Not remembered without a fallback: the next call tries again and fails the same way.
    with pytest.raises(rustpool.WorkerUnsupported):
        ex.submit(interp_refuses.double_where, 2).result(WAIT)
    assert refusal_count(refusals) == 2
    assert ex.submit(h.add, 5, 5).result(WAIT) == 10


def test_module_refusing_subinterpreters_falls_back_under_auto_and_is_remembered(
    auto: Any, refusals: Path
) -> None:
    from . import interp_refuses

    ex = auto(1)
    assert ex.submit(interp_refuses.double_where, 2).result(WAIT) == (4, MAIN_ID)
    assert refusal_count(refusals) == 1
    # Remembered: the second call goes straight to the process fallback, no subinterpreter tries
    # to load it again.
    assert ex.submit(interp_refuses.double_where, 3).result(WAIT) == (6, MAIN_ID)

    async def main() -> Any:
        return await ex.run(interp_refuses.double_where, 4)

    assert asyncio.run(main()) == (8, MAIN_ID)
    assert refusal_count(refusals) == 1
    # Other functions still run in the subinterpreter.
    assert ex.submit(h.interpreter_id).result(WAIT) != MAIN_ID


NUMPY_REASON = "numpy (requirements-dev.txt): a real module that refuses subinterpreters"


def test_numpy_imported_by_the_functions_module_raises_worker_unsupported(interp: Any) -> None:
    """The function's module imports numpy at its top: the worker fails while unpickling the call
    (fn never runs), which is what WorkerUnsupported reports."""
    pytest.importorskip("numpy", reason=NUMPY_REASON)
    from . import interp_numpy_top

    with pytest.raises(rustpool.WorkerUnsupported) as excinfo:
        interp(1).submit(interp_numpy_top.total, 5).result(WAIT)
    assert isinstance(excinfo.value, ImportError)
    message = str(excinfo.value)
    assert "numpy" in message
    assert "interp_numpy_top.total" in message
    assert 'isolation="process"' in message and '"auto"' in message


def test_numpy_imported_by_the_functions_module_falls_back_under_auto(auto: Any) -> None:
    pytest.importorskip("numpy", reason=NUMPY_REASON)
    from . import interp_numpy_top

    ex = auto(1)
    assert ex.submit(interp_numpy_top.total, 5).result(WAIT) == (10, MAIN_ID)
    assert ex.submit(interp_numpy_top.total, 6).result(WAIT) == (15, MAIN_ID)  # remembered


def test_numpy_imported_inside_the_function_counts_as_unsupported(cpu_executor: Any) -> None:
    """``import numpy`` in the function's body fails after the call was unpickled; an ImportError
    that says the module refuses subinterpreters is treated like one met while unpickling:
    WorkerUnsupported under explicit "interpreter", naming numpy."""
    pytest.importorskip("numpy", reason=NUMPY_REASON)
    ex = cpu_executor(1, isolation="interpreter")
    with pytest.raises(rustpool.WorkerUnsupported, match="numpy") as excinfo:
        ex.submit(h.import_numpy_inside).result(WAIT)
    assert "auto" in str(excinfo.value)
    assert len(str(excinfo.value).splitlines()) == 1  # numpy's long troubleshooting text is cut


def test_a_function_that_imports_numpy_runs_once_and_its_next_calls_go_to_processes_under_auto(
    cpu_executor: Any, tmp_path: Path
) -> None:
    """The call began in a subinterpreter and did something before its import failed: it is not
    run again in a process (a call runs at most once); it fails with WorkerUnsupported, and the
    function's next calls run in worker processes."""
    pytest.importorskip("numpy", reason=NUMPY_REASON)
    trace = tmp_path / "trace"
    ex = cpu_executor(1, isolation="auto", learn=False)  # auto's isolated side
    with pytest.raises(rustpool.WorkerUnsupported, match="was not run again") as excinfo:
        ex.submit(h.mark_then_import_numpy, str(trace)).result(WAIT)
    assert "numpy" in str(excinfo.value)
    assert trace.read_text() == "began\n"
    assert ex.submit(h.mark_then_import_numpy, str(trace)).result(WAIT) == 10
    assert ex.submit(h.mark_then_import_numpy, str(trace)).result(WAIT) == 10
    assert trace.read_text() == "began\n" * 3


# --- shutdown ----------------------------------------------------------------------------------


def test_shutdown_wait_waits_for_running_and_queued_calls(cpu_executor: Any, tmp_path: Path) -> None:
    ex = cpu_executor(2, isolation="interpreter")
    paths = [str(tmp_path / f"done-{i}") for i in range(5)]
    futures = [ex.submit(h.sleep_then_touch, 0.1, p) for p in paths]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result(0) for f in futures] == paths
    assert all(os.path.exists(p) for p in paths)


def test_shutdown_cancel_futures_cancels_queued_calls(interp: Any, file_gate: Any, tmp_path: Path) -> None:
    ex = interp(1)
    gate = file_gate("first")
    first = ex.submit(h.gated, *gate.args(), "first done")
    assert gate.wait_started()
    queued = [ex.submit(h.touch, str(tmp_path / f"queued-{i}")) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.release()
    assert first.result(WAIT) == "first done"
    ex.shutdown(wait=True)
    assert not any((tmp_path / f"queued-{i}").exists() for i in range(3))


def test_shutdown_with_sleeping_call_and_cancel_futures(interp: Any, tmp_path: Path) -> None:
    """The brief's shape: a first call that sleeps; whatever had not started is cancelled, and
    what ran finished before shutdown(wait=True) returned."""
    ex = interp(1)
    first = ex.submit(h.sleep_then_touch, 0.5, str(tmp_path / "first"))
    rest = [ex.submit(h.touch, str(tmp_path / f"rest-{i}")) for i in range(4)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.done() and all(f.done() for f in rest)
    for i, f in enumerate(rest):
        assert f.cancelled() != (tmp_path / f"rest-{i}").exists()
    if not first.cancelled():
        assert (tmp_path / "first").exists()


def test_submit_after_shutdown_raises(interp: Any) -> None:
    ex = interp(1)
    assert ex.submit(h.add, 1).result(WAIT) == 1
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(h.add, 1)

    async def main() -> Any:
        return await ex.run(h.add, 1)

    with pytest.raises(RuntimeError, match="after shutdown"):
        asyncio.run(main())


def test_shutdown_of_a_pool_that_never_ran_anything(interp: Any) -> None:
    interp(2).shutdown(wait=True)


# --- many calls --------------------------------------------------------------------------------


def test_many_gathered_calls(interp: Any) -> None:
    ex = interp(2)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(ex.run(abs, -i) for i in range(2000))))

    assert asyncio.run(main()) == list(range(2000))


def test_submit_from_many_threads(interp: Any) -> None:
    ex = interp(2)
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def submitter(t: int) -> None:
        try:
            futures = [ex.submit(h.add, t * 1000, i) for i in range(200)]
            results[t] = [f.result(WAIT) for f in futures]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not errors
    assert results == {t: [t * 1000 + i for i in range(200)] for t in range(8)}


# --- cancellation ------------------------------------------------------------------------------


def test_cancelled_task_of_a_queued_call_never_runs(interp: Any, file_gate: Any, tmp_path: Path) -> None:
    ex = interp(1)
    gate = file_gate("busy")
    never = tmp_path / "never"

    async def main() -> None:
        busy = asyncio.create_task(ex.run(h.gated, *gate.args(), "busy done"))
        assert await asyncio.to_thread(gate.wait_started)
        queued = asyncio.create_task(ex.run(h.touch, str(never)))
        await asyncio.sleep(0)  # the call is queued behind the busy one
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.release()
        assert await busy == "busy done"
        # FIFO, one worker: once this one ran, the cancelled one would have run before it.
        assert await ex.run(h.add, 1, 1) == 2

    asyncio.run(main())
    assert not never.exists()


def test_cancelled_future_of_a_queued_call_never_runs(interp: Any, file_gate: Any, tmp_path: Path) -> None:
    ex = interp(1)
    gate = file_gate("busy")
    never = tmp_path / "never"
    busy = ex.submit(h.gated, *gate.args(), "busy done")
    assert gate.wait_started()
    queued: Future[Any] = ex.submit(h.touch, str(never))
    assert queued.cancel()
    gate.release()
    assert busy.result(WAIT) == "busy done"
    assert ex.submit(h.add, 2, 2).result(WAIT) == 4
    with pytest.raises(CancelledError):
        queued.result(0)
    assert not never.exists()
