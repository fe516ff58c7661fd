"""The code every isolated worker runs: a subinterpreter (``isolation="interpreter"``, which loads
this file by path) or a worker process (``isolation="process"``, which runs this file as its
program: ``python -P .../rustpool/_worker.py``, so ``ps`` shows what it is).

It imports only the standard library, and little of it at start: a subinterpreter cannot load
rustpool's native module, and both kinds of worker should start fast.

A call arrives as ``dumps_call``'s bytes (``rustpool._crossing``): the pickled function, then the
pickled ``(args, kwargs)``, unpickled one after the other so that a failure says which of them
failed. ``run(payload) -> (status, bytes)``; the statuses:

- 0 (``OK``): the pickled result.
- 1 (``RAISED``): the pickled ``(exception, formatted traceback)``: what fn raised, or what was
  raised while unpickling the arguments or pickling the result (its type kept, a note saying
  where it came from).
- 2 (``UNLOADABLE``): the function itself could not be loaded here (fn never ran); the message.
- 8 (``REFUSED``): fn began, then imported a module that refuses subinterpreters; the message (it
  is not run again: what it did up to the import may have happened).

In a worker process (``serve``), calls come as frames on fd 3 and replies go out on fd 4; both
are made non-inheritable at start, and closed in a child forked by a call, so a grandchild never
holds them. Call frame: ``CALL_MAGIC``, call id (u64), length (u32), then the payload. Reply
frame: ``REPLY_MAGIC``, the same call id, length (u32), status (u8), then the bytes. A skip frame
(``SKIP_MAGIC``, a call id, length 0) takes back a call written earlier: if it has not begun, it
never does and its answer is ``SKIPPED`` (before a call begins, the worker reads every frame
already written). The first frame (id 0) is the setup: the pickled ``(sys_path, main_name,
main_path, initializer call or None)``; its reply is ``OK`` once set up, or 5 (broken) with the
initializer's traceback (then the process ends). EOF on fd 3 (the pool let this worker go, or the
parent died) ends the process.
"""

from __future__ import annotations

import os
import pickle
import sys

TYPE_CHECKING = False  # typing is not imported at run time: it costs a worker's start
if TYPE_CHECKING:
    from typing import Any

OK, RAISED, UNLOADABLE, BROKEN = 0, 1, 2, 5
# The answer to a call the pool took back before it began (it never ran).
SKIPPED = 7
# fn began, then imported a module that refuses subinterpreters: it is not run again anywhere
# (what it did up to the import may have happened); "auto" sends its next calls to processes.
REFUSED = 8

CALL_MAGIC = b"rpC1"
REPLY_MAGIC = b"rpR1"
SKIP_MAGIC = b"rpS1"
CALL_HEADER = 16  # magic, id (u64), length (u32)

# The caller's __main__ (module name, file path), loaded on first need.
_main: tuple[str, str] | None = None


def describe(fn: object) -> str:
    """``module.qualname`` of a function, for messages."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def setup(sys_path: list[str], main_name: str, main_path: str) -> None:
    """Look like the caller: its ``sys.path`` now, its ``__main__`` when a call needs it (the
    working directory is the process's, shared with the caller already)."""
    global _main
    sys.path[:] = list(sys_path)
    _main = (main_name, main_path)


def _load_main() -> bool:
    # The caller's __main__, run as __mp_main__ so its `if __name__ == "__main__":` block does not
    # run, then aliased as __main__ so pickled references to it resolve (multiprocessing's spawn).
    global _main
    if _main is None:
        return False
    name, path = _main
    _main = None
    import runpy
    import types

    # While it loads, starting worker processes is refused (an unguarded script would start them
    # again and again, as multiprocessing's spawn also refuses).
    sys._rustpool_loading_main = True  # type: ignore[attr-defined]
    try:
        if name:
            ns = runpy.run_module(name, run_name="__mp_main__", alter_sys=False)
        elif path:
            ns = runpy.run_path(path, run_name="__mp_main__")
        else:
            return False
    finally:
        del sys._rustpool_loading_main  # type: ignore[attr-defined]
    mod = types.ModuleType("__mp_main__")
    mod.__dict__.update(ns)
    sys.modules["__mp_main__"] = sys.modules["__main__"] = mod
    return True


def teardown() -> None:
    """Before ``Py_EndInterpreter``: let threading forget this thread while the module still works
    (3.13 drops a dummy thread's entry from a thread-local finalizer that would otherwise run after
    the module is torn down and print an ignored exception)."""
    th = sys.modules.get("threading")
    info = getattr(th, "_thread_local_info", None)
    if info is not None and hasattr(info, "_track_dummy_thread_ref"):
        del info._track_dummy_thread_ref


def _dumps(obj: object) -> bytes:
    """Pickle protocol 5; cloudpickle when that fails and the caller's environment has it: an
    object of a class that came by value (defined in a ``__main__`` no worker may load) names a
    class this worker cannot look up, and goes back by value too (cloudpickle's class tracker
    turns it back into the caller's own class)."""
    try:
        return pickle.dumps(obj, 5)
    except Exception as first:
        try:
            import cloudpickle  # type: ignore[import-untyped]

            return cloudpickle.dumps(obj, 5)  # type: ignore[no-any-return]
        except Exception:
            raise first from None


# Functions by their pickled bytes: a burst of calls of one function unpickles it once (and one
# that came by value keeps its globals from call to call in this worker, as an imported one does).
_FNS: dict[bytes, Any] = {}
_FNS_MAX = 64
_FN_CACHED_UP_TO = 1 << 16  # bytes


def _load_fn(data: memoryview) -> Any:
    if len(data) > _FN_CACHED_UP_TO:
        return _loads(data)
    key = data.tobytes()
    fn = _FNS.get(key)
    if fn is None:
        fn = _loads(data)
        # Only functions: a callable object unpickles afresh for every call, as with the stdlib
        # (what one call does to it is not seen by the next).
        if type(fn).__name__ in ("function", "builtin_function_or_method"):
            if len(_FNS) >= _FNS_MAX:
                _FNS.clear()
            _FNS[key] = fn
    return fn


def _loads(data: bytes | memoryview) -> Any:
    try:
        return pickle.loads(data)
    except (AttributeError, ModuleNotFoundError) as e:
        if ("__main__" in str(e) or "__mp_main__" in str(e)) and _load_main():
            return pickle.loads(data)
        raise


def _refuses_subinterpreters(e: BaseException) -> bool:
    return isinstance(e, ImportError) and "subinterpreters" in str(e)


def _reason(e: BaseException) -> bytes:
    text = str(e).strip()
    name = getattr(e, "name", None) if isinstance(e, ImportError) else None
    if name and name not in text.split("\n", 1)[0]:
        text = f"module {name!r}: {text}"  # numpy's message starts with an empty line
    return f"{type(e).__name__}: {text}".encode()


def _raised(e: BaseException) -> tuple[int, bytes]:
    """``RAISED`` with ``e`` and its traceback, or a RuntimeError that says why ``e`` cannot cross."""
    import traceback

    tb = "".join(traceback.format_exception(e))
    try:
        data = _dumps((e, tb))
        pickle.loads(data)  # it must also rebuild on the other side
        return RAISED, data
    except BaseException as pe:
        sub = RuntimeError(
            f"{type(e).__module__}.{type(e).__qualname__}: {e} (the exception could not be pickled: {pe})"
        )
        return RAISED, pickle.dumps((sub, tb), 5)


def _noted(e: BaseException, note: str) -> BaseException:
    # The exception keeps its type and arguments (as with the stdlib); the note says where.
    try:
        e.add_note(note)
    except Exception:
        pass
    return e


def split(payload: bytes | memoryview) -> tuple[memoryview, memoryview]:
    """(pickled fn, pickled (args, kwargs)) of a call made by ``dumps_call``."""
    view = memoryview(payload)
    n = int.from_bytes(view[:4], "little")
    return view[4 : 4 + n], view[4 + n :]


def run(payload: bytes) -> tuple[int, bytes]:
    """Run one call; ``(status, bytes)`` as the module docstring says."""
    fn_bytes, args_bytes = split(payload)
    try:
        fn = _load_fn(fn_bytes)
    except BaseException as e:
        return UNLOADABLE, _reason(e)
    try:
        args, kwargs = _loads(args_bytes)
    except BaseException as e:
        if _refuses_subinterpreters(e):
            return UNLOADABLE, _reason(e)  # a module of an argument's class refuses this worker
        return _raised(_noted(e, f"(raised while unpickling the arguments of {describe(fn)} in the worker)"))
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        if _refuses_subinterpreters(e):
            # A module imported inside fn refuses subinterpreters. fn ran up to there: it must not
            # be run again elsewhere (a call runs at most once).
            return REFUSED, _reason(e)
        return _raised(e)
    try:
        return OK, _dumps(result)
    except BaseException as e:
        what = f"{type(result).__module__}.{type(result).__qualname__}"
        return _raised(
            _noted(
                e,
                f"(raised while pickling the result of {describe(fn)}, a {what}, in the worker:"
                " it could not be pickled to be sent back)",
            )
        )


# --- worker processes ----------------------------------------------------------------------------

# After each reply the worker keeps reading for this long without sleeping: a call sent right away
# costs no wake-up.
_SPIN = 0.0002


def _boot(payload: bytes) -> tuple[int, bytes]:
    # Ctrl-C in a terminal reaches the whole process group: it is the caller's to handle (its
    # pools shut down and this worker sees EOF); a call must not die of it half-way.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys_path, main_name, main_path, init = pickle.loads(payload)
    setup(sys_path, main_name, main_path)
    if init is not None:
        try:
            fn_bytes, args_bytes = split(init)
            fn = _loads(fn_bytes)
            args, kwargs = _loads(args_bytes)
            fn(*args, **kwargs)
        except BaseException as e:
            import traceback

            return BROKEN, "".join(traceback.format_exception(e)).encode()
    return OK, b""


def _close_pipes_in_forked_child(rfd: int, wfd: int) -> None:
    # A call that forks (a fork-context multiprocessing pool, say): the child must not hold the
    # pipes (it would hide this worker's death from the pool) nor answer calls.
    def close() -> None:
        for fd in (rfd, wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    os.register_at_fork(after_in_child=close)


def serve(rfd: int = 3, wfd: int = 4) -> None:
    """The worker process's loop: frames in on ``rfd``, replies out on ``wfd``, until EOF."""
    import select
    import struct
    import time

    # Started processes (os.system, subprocess, an exec in a call) never get the pipes.
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    _close_pipes_in_forked_child(rfd, wfd)
    os.set_blocking(rfd, False)
    buf = bytearray()
    clock = time.perf_counter
    spin_until = 0.0
    reply_header = struct.Struct("<4sQIB")
    call_header = struct.Struct("<4sQI")

    # Calls read and not run yet, and the ids the pool took back (a skip frame: the awaiting side
    # cancelled a call that was already written to this worker before it began).
    pending: list[tuple[int, bytes]] = []
    skipped: set[int] = set()

    def read_available() -> bool:
        """Read what the pipe holds now (all of it); False at EOF."""
        while True:
            need = CALL_HEADER
            if len(buf) >= CALL_HEADER:
                need = CALL_HEADER + call_header.unpack_from(buf)[2] - len(buf)
            try:
                chunk = os.read(rfd, max(need, 1 << 16))
            except BlockingIOError:
                return True
            except OSError:
                return False  # closed under us (a forked child of a call): leave
            if not chunk:
                return False
            buf.extend(chunk)

    def parse() -> None:
        """Move every whole frame from ``buf`` to ``pending`` (or ``skipped``)."""
        while len(buf) >= CALL_HEADER:
            magic, call_id, length = call_header.unpack_from(buf)
            if magic == SKIP_MAGIC:
                skipped.add(call_id)
                del buf[:CALL_HEADER]
                continue
            if magic != CALL_MAGIC:
                # Something else read from our pipe: the stream is out of step for good.
                sys.stderr.write("rustpool worker: a malformed call frame; this worker process ends\n")
                os._exit(70)
            if len(buf) < CALL_HEADER + length:
                return
            pending.append((call_id, bytes(buf[CALL_HEADER : CALL_HEADER + length])))
            del buf[: CALL_HEADER + length]

    def next_call() -> tuple[int, bytes] | None:
        """The next call (waiting for one), once every frame already written is read: a skip
        written before the call begins is always seen. None at EOF."""
        while True:
            still_open = read_available()
            parse()
            if pending:
                return pending.pop(0)
            if not still_open:
                return None
            if clock() >= spin_until:
                select.select([rfd], [], [])

    def send(call_id: int, status: int, data: bytes) -> None:
        if len(data) > 0xFFFFFFFF:  # frames carry a 32-bit length
            err = ValueError(f"the pickled result is {len(data)} bytes; a worker process returns at most 4 GiB")
            status, data = RAISED, pickle.dumps((err, ""), 5)
        out = memoryview(reply_header.pack(REPLY_MAGIC, call_id, len(data), status) + data)
        try:
            while out:
                out = out[os.write(wfd, out) :]
        except OSError:
            # The pool let this worker go before it read the reply (or, in a forked child of a
            # call, the pipe is closed): nothing to answer to.
            os._exit(0)

    first = next_call()
    if first is None:
        return
    call_id, payload = first
    status, data = _boot(payload)
    send(call_id, status, data)
    if status:
        return
    while True:
        call = next_call()
        if call is None:
            return
        call_id, payload = call
        if call_id in skipped:
            skipped.discard(call_id)
            status, data = SKIPPED, b""
        else:
            status, data = run(payload)
        send(call_id, status, data)
        spin_until = clock() + _SPIN


if __name__ == "__main__":
    serve()
