"""What crosses into an isolated worker (a subinterpreter or a process), as bytes: the main side.

``dumps_call`` pickles a call with protocol 5: the function and its ``(args, kwargs)`` as two
pickles, so that the worker can tell which of them failed to load. Functions that a worker can
import travel by name; those it cannot (lambdas, closures, and everything of a ``__main__`` that
no worker may load: ``python -c``, stdin, the REPL, a notebook, a script without a main guard)
travel by value, with cloudpickle. A worker never runs such a ``__main__``: it would run the
caller's program again. ``decode`` turns a worker's reply back into a result or an
exception. The worker side is ``rustpool._worker`` (a module of its own, stdlib only); the reply
statuses are its own (0 result, 1 raised, 2 fn unloadable) plus those the Rust core adds for calls
that got no reply: 4 = the worker process died (or sent a malformed reply: it is killed), 5 = the
pool is broken (an initializer failed), 6 = the call ran past its timeout (its process was
killed).

Errors keep their type, as with the stdlib: an exception raised while pickling or unpickling the
arguments or the result is the call's exception, with a note saying which side and which object
failed; ``WorkerUnsupported`` is only for a function that cannot be loaded in the worker.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from . import _worker
from ._worker import OK, RAISED
from ._worker import describe as _describe

UNLOADABLE, CRASHED, BROKEN, TIMED_OUT = _worker.UNLOADABLE, 4, _worker.BROKEN, 6
REFUSED = _worker.REFUSED
# The subinterpreter worker's own code failed around a call (it may have run): never run again.
FAILED = 9


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


def _dumps(obj: object, buffers: list[Any] | None = None) -> bytes:
    """Pickle protocol 5, then cloudpickle (lambdas, closures) when installed; raises the error of
    the last one tried. Where workers cannot load the caller's ``__main__``, cloudpickle first:
    it pickles what ``__main__`` defines by value (plain pickle would name it, and the worker
    would not find it). With ``buffers``, big buffers go there, out of band."""
    if _main_by_value():
        try:
            import cloudpickle  # type: ignore[import-untyped]
        except ImportError:
            pass
        else:
            return cloudpickle.dumps(obj, 5, buffer_callback=_worker.keep_big(buffers))  # type: ignore[no-any-return]
    try:
        return pickle.dumps(obj, 5, buffer_callback=_worker.keep_big(buffers))
    except (Exception, SystemExit) as first:  # PicklingError, AttributeError (local objects), TypeError
        try:
            import cloudpickle
        except ImportError:
            raise first from None
        if buffers:
            buffers.clear()  # what the first try took out
        return cloudpickle.dumps(obj, 5, buffer_callback=_worker.keep_big(buffers))  # type: ignore[no-any-return]


def _pickler_by_value() -> type | None:
    """cloudpickle's pickler where what ``__main__`` defines must cross by value, else None."""
    if _main_by_value():
        try:
            import cloudpickle
        except ImportError:
            return None
        return cloudpickle.Pickler  # type: ignore[no-any-return]
    return None


# Plain and builtin functions that pickle by name pickle to the same bytes every time: a burst
# of calls of one function pickles it once. A function pickled by value (cloudpickle: ~40 us) is
# pickled once too while what its pickle is made of stays the same and cannot change in place
# (`_value_state`); any other (callable objects, functions that name a list or a function of
# ``__main__``...) is pickled for every call, so that a worker always sees its current state.
_BY_NAME = (types.FunctionType, types.BuiltinFunctionType)
# fn -> (its state when pickled, or None for a pickle by name; the bytes)
_FN_BYTES: dict[Any, tuple[object, bytes]] = {}
_FN_BYTES_MAX = 256
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), types.ModuleType, types.BuiltinFunctionType)
_NOT_IMPORTABLE = ("__main__", "__mp_main__")
# code object -> the global names it (or a function nested in it) may read
_GLOBAL_NAMES: dict[types.CodeType, tuple[str, ...]] = {}


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    names = _GLOBAL_NAMES.get(code)
    if names is None:
        found: set[str] = set()
        todo = [code]
        while todo:
            c = todo.pop()
            found.update(c.co_names)
            todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        names = _GLOBAL_NAMES[code] = tuple(sorted(found))
    return names


def _fixed(value: object) -> bool:
    """Whether ``value`` pickles to the same bytes for as long as it is the same object: an
    immutable scalar, a module, or a function or class that pickles by name."""
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, (types.FunctionType, type)):
        return getattr(value, "__module__", None) not in _NOT_IMPORTABLE and "<locals>" not in value.__qualname__
    return isinstance(value, tuple) and all(_fixed(v) for v in value)


def _value_state(fn: Any) -> tuple[object, ...] | None:
    """What the by-value pickle of plain function ``fn`` is made of (its code, defaults, closure
    and the globals it names), when every part is ``_fixed``; equal states pickle to equal
    bytes. None when some part could change in place (a list, a dict, a ``__main__`` function
    with globals of its own...)."""
    if type(fn) is not types.FunctionType or fn.__dict__:
        return None
    kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
    cells = tuple(c.cell_contents for c in fn.__closure__ or ())
    g = fn.__globals__
    names = tuple(g.get(n, _Missing) for n in _global_names(fn.__code__))
    state = (fn.__code__, fn.__defaults__ or (), kwdefaults, cells, names)
    if not all(_fixed(v) for part in state[1:] for v in part):
        return None
    return state


class _Missing:
    """A global name that is not there (a builtin, or not defined yet)."""


def _remember(fn: Any, fn_bytes: bytes) -> None:
    if type(fn) not in _BY_NAME:
        return
    state = _value_state(fn) if b"cloudpickle" in fn_bytes else None
    if state is None and b"cloudpickle" in fn_bytes:
        return
    if len(_FN_BYTES) >= _FN_BYTES_MAX:
        _FN_BYTES.clear()
    _FN_BYTES[fn] = (state, fn_bytes)


def _remembered(fn: Any) -> bytes | None:
    if type(fn) not in _BY_NAME:
        return None
    known = _FN_BYTES.get(fn)
    if known is None:
        return None
    state, fn_bytes = known
    if state is not None and _value_state(fn) != state:
        return None
    return fn_bytes


def dumps_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> bytes | tuple[bytes, list[Any]]:
    """A call for a worker: the pickled fn (length-prefixed), then the pickled ``(args, kwargs)``;
    with the arguments' big buffers (``_worker.dumps_oob``) beside it when there are any.

    An error keeps its type (a PicklingError stays one, so does a TypeError for a lock), with a
    note naming what could not be sent."""
    try:
        fn_bytes = _remembered(fn)
        if fn_bytes is None:
            fn_bytes = _dumps(fn)
            _remember(fn, fn_bytes)
    except (Exception, SystemExit) as e:
        e.add_note(
            f"(raised while pickling the function {_describe(fn)} to send it to an isolated worker: define "
            "it at module level; lambdas and closures cross only when cloudpickle is installed)"
        )
        raise
    try:
        both = (args, kwargs or {})
        if _worker._plain(both):  # a small call: no buffer to take out
            args_bytes, buffers = _dumps(both), None
        else:
            args_bytes, buffers = _worker.dumps_oob(both, _dumps, _pickler_by_value())
    except (Exception, SystemExit) as e:
        e.add_note(
            f"(raised while pickling the arguments of {_describe(fn)} to send them to an isolated worker: "
            "arguments and results cross as pickle bytes: pass data, not locks, sockets or open files)"
        )
        raise
    call = len(fn_bytes).to_bytes(4, "little") + fn_bytes + args_bytes
    return (call, buffers) if buffers else call


def decode(
    status: int, data: bytes, fn: object = None, mode: str = "interpreter", buffers: list[Any] | None = None
) -> tuple[bool, Any]:
    """(True, exception) or (False, result) from a worker's reply to a call of ``fn`` made in a
    worker of isolation ``mode``; ``buffers``: the result's out-of-band buffers (over shared
    memory the result's views keep)."""
    if status == OK:
        try:
            return False, _worker.loads_oob(data, [memoryview(b) for b in buffers] if buffers else None)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # as the stdlib: even a SystemExit is this call's outcome
            e.add_note(f"(raised while unpickling the result of {_describe(fn)} in the calling process)")
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
    if status == FAILED:
        return True, RuntimeError(f"the subinterpreter worker failed while it ran {_describe(fn)}: {reason}")
    if status == REFUSED:
        return True, WorkerUnsupported(
            f"{_describe(fn)} imported a module that cannot run in a subinterpreter: {reason}. The call "
            "was not run again (what it did before the import may have happened); under "
            'isolation="auto" the next calls of it run in worker processes, else use isolation="process"'
        )
    if mode == "process":
        return True, WorkerUnsupported(
            f'{_describe(fn)} cannot be loaded in a worker process (isolation="process"): {reason}. '
            "Worker processes import it by name: it must be importable from the caller's sys.path"
        )
    return True, WorkerUnsupported(
        f'{_describe(fn)} cannot run in a subinterpreter (isolation="interpreter"): '
        f'{reason}. Use isolation="process" (or "auto", which falls back by itself)'
    )


def main_info() -> tuple[str, str]:
    """How a worker can load the caller's ``__main__`` (as multiprocessing's spawn does):
    (module name to run, or "") and (file path to run, or ""); both empty when no worker may
    load it (see ``_loadable_main``): what it defines then crosses by value.

    Also lets objects of ``__main__`` classes made in a worker (pickled as ``__mp_main__.X``)
    come back, as multiprocessing does."""
    main = sys.modules.get("__main__")
    if main is not None:
        sys.modules.setdefault("__mp_main__", main)
    return _loadable_main(main)


def _main_by_value() -> bool:
    return _loadable_main(sys.modules.get("__main__")) == ("", "")


# The last answer of _loadable_main: (the __main__ module, its file's path) -> the answer. It
# is asked for every call that crosses, so it reads the file once, not on each call (a script
# edited while it runs keeps the answer its file gave first).
_main_seen: tuple[object, str | None, tuple[str, str]] | None = None


def _loadable_main(main: object) -> tuple[str, str]:
    """(module name, or "") and (file path, or "") by which a worker may run ``main``: a file
    (or a module run with ``-m``) with an ``if __name__ == "__main__":`` guard. Without one,
    running it again would run the caller's program again in every worker (its top level, and
    the pools it starts); without a file (``-c``, stdin, the REPL, a notebook) there is nothing
    to run."""
    global _main_seen
    spec = getattr(main, "__spec__", None)
    name = spec.name if spec is not None and spec.name not in ("__main__", "__mp_main__") else ""
    path = getattr(spec, "origin", None) if name else getattr(main, "__file__", None)
    seen = _main_seen
    if seen is not None and seen[0] is main and seen[1] == path:
        return seen[2]
    if not path or not os.path.isfile(path):
        answer = ("", "")
    elif _has_main_guard(path):
        answer = (name, "" if name else os.path.abspath(path))
    else:
        answer = ("", "")
    _main_seen = (main, path, answer)
    return answer


def _has_main_guard(path: str) -> bool:
    """Whether the source at ``path`` has, at its top level, ``if __name__ == "__main__":``."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            continue
        test = node.test
        if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
            continue
        sides = [test.left, test.comparators[0]]
        names = [s.id for s in sides if isinstance(s, ast.Name)]
        consts = [s.value for s in sides if isinstance(s, ast.Constant)]
        if names == ["__name__"] and consts == ["__main__"]:
            return True
    return False


class ThreadFallbackWarning(RuntimeWarning):
    """A call under ``isolation="auto"`` runs on a thread of this process, where pure-Python code
    does not run in parallel, because it cannot be isolated (it cannot be pickled, or no worker
    can load it). Said once per function; ``fallback="error"`` (or a warnings filter) makes it an
    error."""


# Functions already announced (their code objects; or their names, for other callables).
_announced: set[object] = set()


def thread_fallback(fn: object, why: BaseException | str, strict: bool) -> None:
    """``isolation="auto"`` is about to run ``fn`` on a thread of this process, because of
    ``why`` (the error that kept the call from crossing, or a worker's message): warn, the first
    time for ``fn``; under ``strict`` (``fallback="error"``), raise the error the call fails with
    instead. Called by the pools (``src/isolation/fallback.rs``)."""
    if strict:
        if isinstance(why, BaseException):
            why.add_note(
                f'(isolation="auto" with fallback="error": {_describe(fn)} cannot be isolated, and '
                "is not run on a thread of this process instead)"
            )
            raise why
        raise WorkerUnsupported(
            f'{_describe(fn)} cannot be loaded in a worker process: {why} (isolation="auto" with '
            'fallback="error": it is not run on a thread of this process instead)'
        )
    key = getattr(fn, "__code__", None) or _describe(fn)
    if key in _announced:
        return
    if isinstance(why, BaseException):
        notes = [n for n in getattr(why, "__notes__", ()) if isinstance(n, str)]
        reason = f"{type(why).__name__}: {why}" + (f" {notes[-1]}" if notes else "")
        fix = (
            "Pass only what pickles (locks, sockets, open files and generators do not): "
            "define the function at module level and give it its data as arguments"
        )
    else:
        reason = why.strip().splitlines()[0] if why.strip() else "it could not be loaded"
        fix = "Make it importable by the workers: define it in a module on the caller's sys.path"
    warnings.warn(
        ThreadFallbackWarning(
            f'{_describe(fn)} cannot run in an isolated worker, so isolation="auto" runs it on a '
            f"thread of this process, where pure-Python code does not run in parallel. Why: "
            f'{reason[:500]}. {fix}; or choose isolation="thread" (no warning); '
            'fallback="error" makes this an error.'
        ),
        stacklevel=_callers_level(),
    )
    _announced.add(key)


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside rustpool: the warning points at the user's
    line."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)  # thread_fallback's, level 1 of its warnings.warn
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def refuse_while_loading_main() -> None:
    """RuntimeError inside a worker that is loading the caller's ``__main__`` (an unguarded script
    would otherwise start its pools again in every worker, as multiprocessing's spawn refuses)."""
    if getattr(sys, "_rustpool_loading_main", False):
        raise RuntimeError(
            "a rustpool worker is loading the caller's __main__ module to find a function, and that "
            "module makes a CpuExecutor (or calls run_cpu) at import: guard that code with "
            '`if __name__ == "__main__":` (as multiprocessing\'s spawn requires)'
        )


def worker_path() -> str:
    """The file of ``rustpool._worker``: a worker process runs it as its program, a subinterpreter
    loads it by path (so neither imports the ``rustpool`` package, and its native module, first)."""
    return os.path.abspath(_worker.__file__)


def process_boot(init: bytes | None = None) -> tuple[list[str], bytes]:
    """(the command line of a worker process, its first frame); ``init`` is the pickled
    initializer call (``dumps_call(initializer, initargs, None)``).

    The command is this interpreter with its flags (``-X``, ``-W``, ``-O``..., as multiprocessing's
    spawn passes them), ``-P`` (the file's directory, rustpool's own, is not put on ``sys.path``;
    the worker takes the caller's ``sys.path`` from its first frame) and the worker file."""
    refuse_while_loading_main()
    main_name, main_path = main_info()
    first = pickle.dumps((list(sys.path), main_name, main_path, init), 5)
    import subprocess  # here: this module is also imported inside subinterpreters

    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return [sys.executable, *flags, "-P", worker_path()], first
