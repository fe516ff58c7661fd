"""What crosses into an isolated worker (a subinterpreter or a process), as bytes.

The main side pickles ``(fn, args, kwargs)`` with protocol 5 (cloudpickle for lambdas and closures
when it is installed) and unpickles the worker's reply. The worker side is ``WORKER_SOURCE``: plain
Python that the Rust core runs inside each worker, which must not import rustpool's native module.

Reply statuses: 0 = the result, pickled; 1 = the exception fn raised, with its formatted traceback;
2 = the call could not be unpickled in the worker (fn never ran): the message names the problem.
The Rust core adds the statuses of calls that got no reply: 4 = the worker process died, 5 = the
pool is broken (an initializer failed), 6 = the call ran past its timeout (its process was killed).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable

OK, RAISED, UNLOADABLE, CRASHED, BROKEN, TIMED_OUT = 0, 1, 2, 4, 5, 6


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback; set as ``__cause__`` of a re-raised exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class WorkerUnsupported(ImportError):
    """The call cannot be loaded in this kind of worker (a module refuses subinterpreters, say)."""


def process_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """One batch of ``CpuExecutor.map(chunksize > 1)``; lives here so isolated workers can load it."""
    return [fn(*args) for args in chunk]


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def dumps_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bytes:
    """Pickle a call for a worker; a clear error names what cannot cross."""
    payload = (fn, args, kwargs or {})
    try:
        return pickle.dumps(payload, 5)
    except Exception as first:  # PicklingError, AttributeError (local objects), TypeError
        try:
            import cloudpickle  # type: ignore[import-not-found]
        except ImportError:
            raise _cannot_send(fn, first) from first
        try:
            return cloudpickle.dumps(payload, 5)  # type: ignore[no-any-return]
        except Exception as second:
            raise _cannot_send(fn, second) from second


def _cannot_send(fn: object, err: Exception) -> pickle.PicklingError:
    try:
        pickle.dumps(fn, 5)
    except Exception:
        return pickle.PicklingError(
            f"cannot send {_describe(fn)} to an isolated worker: {err}. Define the function at module "
            "level (lambdas and closures cross only when cloudpickle is installed)"
        )
    return pickle.PicklingError(
        f"cannot send the arguments of {_describe(fn)} to an isolated worker: {err}. Arguments and results "
        "cross as pickle bytes: pass data, not locks, sockets or open files"
    )


def decode(status: int, data: bytes, fn: object = None, mode: str = "interpreter") -> tuple[bool, Any]:
    """(True, exception) or (False, result) from a worker's reply to a call of ``fn`` made in a
    worker of isolation ``mode``."""
    if status == OK:
        try:
            return False, pickle.loads(data)
        except Exception as e:
            return True, e
    if status == CRASHED:
        from ._errors import WorkerCrashed  # main side only: it imports multiprocessing

        return True, WorkerCrashed(f"{data.decode('utf-8', 'replace')}, while running {_describe(fn)}")
    if status == TIMED_OUT:
        return True, TimeoutError(f"{_describe(fn)}: {data.decode('utf-8', 'replace')}")
    if status == BROKEN:
        from concurrent.futures.process import BrokenProcessPool

        return True, BrokenProcessPool(data.decode("utf-8", "replace"))
    if status == RAISED:
        try:
            exc, tb = pickle.loads(data)
        except Exception as e:
            return True, RuntimeError(f"the worker's exception could not be unpickled: {e!r}")
        exc.__cause__ = RemoteTraceback(tb)
        return True, exc
    reason = data.decode("utf-8", "replace").strip().splitlines()[0][:500]
    if mode == "process":
        return True, WorkerUnsupported(
            f"{_describe(fn)} cannot be loaded in a worker process (isolation=\"process\"): {reason}. "
            "Worker processes import it by name: it must be importable from the caller's sys.path"
        )
    return True, WorkerUnsupported(
        f"{_describe(fn)} cannot run in a subinterpreter (isolation=\"interpreter\"): "
        f"{reason}. Use isolation=\"process\" (or \"auto\", which falls back by itself)"
    )


def main_info() -> tuple[str, str]:
    """How a worker can load the caller's ``__main__`` (as multiprocessing's spawn does):
    (module name to run, or "") and (file path to run, or "").

    Also lets objects of ``__main__`` classes made in a worker (pickled as ``__mp_main__.X``)
    come back, as multiprocessing does."""
    main = sys.modules.get("__main__")
    if main is not None:
        sys.modules.setdefault("__mp_main__", main)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", "__mp_main__"):
        return spec.name, ""
    path = getattr(main, "__file__", None)
    if path and os.path.exists(path):
        return "", os.path.abspath(path)
    return "", ""


# Runs inside each worker, with `_setup(sys_path, cwd, main_name, main_path)` called once and
# `_run(payload) -> (status, bytes)` per call.
WORKER_SOURCE = r'''
import os, pickle, sys, traceback

_main = None

def _setup(sys_path, main_name, main_path):
    # The working directory is the process's, shared with the caller already.
    global _main
    sys.path[:] = list(sys_path)
    _main = (main_name, main_path)

def _load_main():
    # The caller's __main__, run as __mp_main__ so its `if __name__ == "__main__":` block does not
    # run, then aliased as __main__ so pickled references to it resolve (multiprocessing's spawn).
    global _main
    if _main is None:
        return False
    name, path = _main
    _main = None
    import runpy, types
    # While it loads, starting worker processes is refused (an unguarded script would start
    # them again and again, as multiprocessing's spawn also refuses).
    sys._rustpool_loading_main = True
    try:
        if name:
            ns = runpy.run_module(name, run_name="__mp_main__", alter_sys=False)
        elif path:
            ns = runpy.run_path(path, run_name="__mp_main__")
        else:
            return False
    finally:
        del sys._rustpool_loading_main
    mod = types.ModuleType("__mp_main__")
    mod.__dict__.update(ns)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = mod
    return True

def _teardown():
    # Before Py_EndInterpreter: let threading forget this thread while the module still works
    # (3.13 drops a dummy thread's entry from a thread-local finalizer that would otherwise run
    # after the module is torn down and print an ignored exception).
    th = sys.modules.get("threading")
    info = getattr(th, "_thread_local_info", None)
    if info is not None and hasattr(info, "_track_dummy_thread_ref"):
        del info._track_dummy_thread_ref

def _loads(payload):
    try:
        return pickle.loads(payload)
    except (AttributeError, ModuleNotFoundError) as e:
        if "__main__" in str(e) or "__mp_main__" in str(e):
            if _load_main():
                return pickle.loads(payload)
        raise

def _run(payload):
    try:
        fn, args, kwargs = _loads(payload)
    except BaseException as e:
        return 2, f"{type(e).__name__}: {e}".encode()
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        if isinstance(e, ImportError) and "subinterpreters" in str(e):
            # A module imported inside fn refuses subinterpreters: as if fn could not load here.
            return 2, f"{type(e).__name__}: {e}".encode()
        tb = "".join(traceback.format_exception(e))
        try:
            data = pickle.dumps((e, tb), 5)
            pickle.loads(data)  # it must also rebuild on the other side
            return 1, data
        except BaseException as pe:
            sub = RuntimeError(f"{type(e).__module__}.{type(e).__qualname__}: {e} "
                               f"(the exception could not be pickled: {pe})")
            return 1, pickle.dumps((sub, tb), 5)
    try:
        return 0, pickle.dumps(result, 5)
    except BaseException as pe:
        name = getattr(fn, "__qualname__", repr(fn))
        sub = TypeError(f"the result of {name} could not be pickled: {pe}")
        return 1, pickle.dumps((sub, "".join(traceback.format_exception(pe))), 5)
'''


# Appended to WORKER_SOURCE in a worker process: calls come as length-prefixed frames on fd
# `rfd`, replies go out on fd `wfd` as (length, status, bytes). The first frame is the pickled
# (sys_path, main_name, main_path, initializer call or None); its reply is (0, b"") once set up,
# or (5, traceback) when the initializer raised (then the process ends). EOF on `rfd` (the pool
# let this worker go, or the parent died) ends the process. After each reply the worker keeps
# reading for a short while without sleeping (`_SPIN` seconds): a call sent right away costs no
# wake-up.
PROCESS_SOURCE = r'''
import select, struct, time

_SPIN = 0.0002

def _boot(payload):
    # Ctrl-C in a terminal reaches the whole process group: it is the caller's to handle (its
    # pools shut down and this worker sees EOF); a call must not die of it half-way.
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys_path, main_name, main_path, init = pickle.loads(payload)
    _setup(sys_path, main_name, main_path)
    if init is not None:
        try:
            fn, args, kwargs = _loads(init)
            fn(*args, **kwargs)
        except BaseException as e:
            return 5, "".join(traceback.format_exception(e)).encode()
    return 0, b""

def _serve(rfd, wfd):
    os.set_blocking(rfd, False)
    buf = bytearray()
    clock = time.perf_counter
    spin_until = 0.0

    def take(n):
        while len(buf) < n:
            try:
                chunk = os.read(rfd, max(n - len(buf), 1 << 16))
            except BlockingIOError:
                if clock() >= spin_until:
                    select.select([rfd], [], [])
                continue
            if not chunk:
                return None
            buf.extend(chunk)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def frame():
        head = take(4)
        return None if head is None else take(int.from_bytes(head, "little"))

    def send(status, data):
        if len(data) > 0xFFFFFFFF:  # frames carry a 32-bit length
            err = ValueError(f"the pickled result is {len(data)} bytes; a worker process returns at most 4 GiB")
            status, data = 1, pickle.dumps((err, ""), 5)
        out = memoryview(struct.pack("<IB", len(data), status) + data)
        try:
            while out:
                out = out[os.write(wfd, out):]
        except BrokenPipeError:
            raise SystemExit(0)  # the pool let this worker go before it read the reply

    boot = frame()
    if boot is None:
        return
    status, data = _boot(boot)
    send(status, data)
    if status:
        return
    while True:
        payload = frame()
        if payload is None:
            return
        status, data = _run(payload)
        send(status, data)
        spin_until = clock() + _SPIN
'''


def refuse_while_loading_main() -> None:
    """RuntimeError inside a worker that is loading the caller's ``__main__`` (an unguarded script
    would otherwise start its pools again in every worker, as multiprocessing's spawn refuses)."""
    if getattr(sys, "_rustpool_loading_main", False):
        raise RuntimeError(
            "a rustpool worker is loading the caller's __main__ module to find a function, and that "
            "module makes a CpuExecutor (or calls run_cpu) at import: guard that code with "
            "`if __name__ == \"__main__\":` (as multiprocessing's spawn requires)"
        )


def process_boot(init: bytes | None = None) -> tuple[str, bytes]:
    """(the program a worker process runs, its first frame); ``init`` is the pickled
    initializer call (``dumps_call(initializer, initargs, None)``)."""
    refuse_while_loading_main()
    main_name, main_path = main_info()
    first = pickle.dumps((list(sys.path), main_name, main_path, init), 5)
    return WORKER_SOURCE + PROCESS_SOURCE + "\n_serve(3, 4)\n", first
