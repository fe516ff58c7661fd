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
holds them. Call frame: ``CALL_MAGIC``, call id (u64), length (u32), then the body: a flags byte
(2: the result's buffers may go to the reply arena; 1: the arenas follow: call arena id (u64),
fd (i32), size (u64), reply arena id, fd, size),
the number of out-of-band buffers (u32), the payload's length (u64), one entry per buffer (where
(u8: 0 in this frame, after the payload; 1 in the call arena), offset (u64), length (u64)), the
payload, then the buffers sent in the frame. Reply frame: ``REPLY_MAGIC``, the same call id,
length (u32), status (u8), then the bytes; a status with ``WITH_BUFFERS`` set has a body instead:
flags (1: a view of the call arena outlived the call), the reply arena's size now (u64), the
number of buffers (u32), the bytes' length (u64), the entries, the bytes, the buffers sent in
the frame. The arenas are memfds of the pool's process (``rustpool/src/isolation/shm.rs``),
opened through ``/proc/<its pid>/fd``. A skip frame
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
# Set in a reply's status: a body with buffers follows (see the module docstring).
WITH_BUFFERS = 0x80

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


def _dumps(obj: object, buffers: list[Any] | None = None) -> bytes:
    """Pickle protocol 5; cloudpickle when that fails and the caller's environment has it: an
    object of a class that came by value (defined in a ``__main__`` no worker may load) names a
    class this worker cannot look up, and goes back by value too (cloudpickle's class tracker
    turns it back into the caller's own class). With ``buffers``, big buffers go there, out of
    band (``dumps_oob``)."""
    try:
        return pickle.dumps(obj, 5, buffer_callback=keep_big(buffers))
    except Exception as first:
        try:
            import cloudpickle  # type: ignore[import-untyped]

            if buffers:
                buffers.clear()  # what the first try took out
            return cloudpickle.dumps(obj, 5, buffer_callback=keep_big(buffers))  # type: ignore[no-any-return]
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


def _loads(data: bytes | memoryview, views: list[memoryview] | None = None, private: bool = False) -> Any:
    try:
        return loads_oob(data, views, private)
    except (AttributeError, ModuleNotFoundError) as e:
        if ("__main__" in str(e) or "__mp_main__" in str(e)) and _load_main():
            return loads_oob(data, views, private)
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


def run(payload: bytes | memoryview, views: list[memoryview] | None = None, private: bool = False) -> tuple[Any, ...]:
    """Run one call whose out-of-band buffers are ``views`` (``private``: over memory the caller
    may still change, see ``loads_oob``); ``(status, bytes)`` as the module docstring says, or
    ``(OK, bytes, buffers)`` for a result with buffers out of band."""
    fn_bytes, args_bytes = split(payload)
    try:
        fn = _load_fn(fn_bytes)
    except BaseException as e:
        return UNLOADABLE, _reason(e)
    try:
        args, kwargs = _loads(args_bytes, views, private)
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
    finally:
        del args, kwargs  # their views over shared memory, before it is looked at again
    try:
        data, bufs = dumps_oob(result, _dumps)
    except BaseException as e:
        what = f"{type(result).__module__}.{type(result).__qualname__}"
        return _raised(
            _noted(
                e,
                f"(raised while pickling the result of {describe(fn)}, a {what}, in the worker:"
                " it could not be pickled to be sent back)",
            )
        )
    return (OK, data, bufs) if bufs else (OK, data)


# --- out-of-band buffers ---------------------------------------------------------------------------
#
# Buffers of at least OOB_MIN bytes leave the pickle stream (protocol 5): the side that sends gets
# them as a list (contiguous byte buffers, sent without a copy into the stream) and the side that
# receives hands the same number of views to ``loads_oob``. numpy arrays (and anything else whose
# ``__reduce_ex__(5)`` makes a ``pickle.PickleBuffer``) come out through ``buffer_callback``; exact
# ``bytes`` and ``bytearray`` never reach a reducer, so a call that holds big ones (looked for a few
# levels deep: ``_holds_big``) is pickled by ``_IdPickler``, which takes them out by persistent id;
# so are memoryviews, which plain pickle refuses.


def _threshold() -> int:
    raw = os.environ.get("RUSTPOOL_OOB_THRESHOLD", "").strip()
    if not raw:
        return 64 * 1024
    try:
        n = int(raw, 0)
    except ValueError:
        n = -1
    if n < 1:
        raise ValueError(
            f"RUSTPOOL_OOB_THRESHOLD={raw!r}: expected a whole number of bytes of at least 1"
            " (buffers this big or bigger cross out of band; the default is 65536)"
        )
    return n


OOB_MIN = _threshold()
_LEAVES = frozenset((int, float, str, bool, type(None), complex))
# How many objects ``_holds_big`` looks at, at most, and how deep.
_SCAN_BUDGET = 256
_SCAN_DEPTH = 4


def _plain(obj: object) -> bool:
    """Whether ``obj`` is made of scalars and strings only (a small call's ``(args, kwargs)``, a
    small result): nothing in it can cross out of band. A quick look, one level deep."""
    t = type(obj)
    if t in _LEAVES:
        return True
    if t is tuple and len(obj) == 2 and type(obj[1]) is dict:  # type: ignore[arg-type, index]
        args: Any = obj[0]  # type: ignore[index]
        if obj[1] or type(args) is not tuple:  # type: ignore[index]
            return False
        for a in args:
            if type(a) not in _LEAVES:
                return False
        return True
    return False


def _holds_big(obj: object) -> bool:
    """Whether ``obj`` holds, within a few levels of containers and instance attributes, a
    ``bytes`` or ``bytearray`` of at least ``OOB_MIN`` bytes, or a memoryview."""
    stack = [(obj, _SCAN_DEPTH)]
    budget = _SCAN_BUDGET
    while stack and budget > 0:
        x, depth = stack.pop()
        budget -= 1
        t = type(x)
        if t in _LEAVES:
            continue
        if t is bytes or t is bytearray:
            if len(x) >= OOB_MIN:  # type: ignore[arg-type]
                return True
            continue
        if t is memoryview:
            return True
        if depth == 0:
            continue
        if t is tuple or t is list or t is set or t is frozenset:
            items: Any = x
        elif t is dict:
            items = x.values()  # type: ignore[attr-defined]
        else:
            try:
                items = object.__getattribute__(x, "__dict__")
            except Exception:
                continue
            if type(items) is not dict:
                continue
            items = items.values()
        for i, item in enumerate(items):
            if i >= _SCAN_BUDGET:
                break
            stack.append((item, depth - 1))
    return False


_PICKLERS: dict[type, type] = {}


def _id_pickler(base: type) -> type:
    """``base`` (``pickle.Pickler`` or cloudpickle's) that takes big buffers out by persistent id
    (the same object twice: one buffer, one object again on the other side)."""
    cls = _PICKLERS.get(base)
    if cls is None:

        def persistent_id(self: Any, obj: object) -> object:
            t = type(obj)
            if t is not bytes and t is not bytearray and t is not memoryview and t is not pickle.PickleBuffer:
                return None
            pid = self.ids.get(id(obj))
            if pid is None:
                pid = _new_id(self.oob, obj, t)
                if pid is not None:
                    self.ids[id(obj)] = pid
            return pid

        cls = type("_IdPickler", (base,), {"persistent_id": persistent_id})
        _PICKLERS[base] = cls
    return cls


def _new_id(oob: list[Any], obj: Any, t: type) -> tuple[Any, ...] | None:
    if t is bytes or t is bytearray:
        if len(obj) < OOB_MIN:
            return None
        oob.append(obj)
        return ("b" if t is bytes else "a", len(oob) - 1)
    if t is memoryview:
        if obj.nbytes < OOB_MIN:
            return ("M", obj.tobytes(), obj.format, obj.shape, obj.readonly)
        oob.append(obj.cast("B") if obj.c_contiguous else obj.tobytes())
        return ("m", len(oob) - 1, obj.format, obj.shape, obj.readonly)
    try:
        raw = obj.raw()
    except BufferError:
        return None  # not contiguous: in band, as plain pickle does
    if raw.nbytes < OOB_MIN:
        return None
    oob.append(raw)
    # It arrives writable (a numpy array read-only here too: what the stdlib's pickle at its
    # default protocol gives), over memory that is the receiver's own.
    return ("p", len(oob) - 1)


class _ReadOnlyBuffer(BaseException):
    """A read-only buffer met by ``buffer_callback``: pickle would make it arrive read-only, so
    the call is pickled again with persistent ids (``_IdPickler``), which sends it writable. A
    BaseException: the pickling fallbacks, which catch Exception, let it through."""


def keep_big(bufs: list[Any] | None) -> Any:
    """A ``buffer_callback`` that takes out (into ``bufs``) the buffers of at least ``OOB_MIN``
    bytes; None without ``bufs``."""
    if bufs is None:
        return None

    def keep(pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:
            return True
        if raw.nbytes < OOB_MIN:
            return True
        if raw.readonly:
            raise _ReadOnlyBuffer
        bufs.append(raw)
        return False

    return keep


def dumps_oob(obj: object, dumps: Any, by: type | None = None) -> tuple[bytes, list[Any]]:
    """``(pickle, buffers)``: ``obj`` pickled (protocol 5) with its buffers of at least
    ``OOB_MIN`` bytes left out, in the order ``loads_oob`` takes them back. ``dumps(obj, bufs)``
    pickles when nothing needs persistent ids; ``by`` is the pickler class (pickle's, or
    cloudpickle's for what crosses by value) that ``_IdPickler`` extends otherwise."""
    bufs: list[Any] = []
    if _plain(obj):
        return dumps(obj, None), bufs  # no buffer in it: no callback to pay for
    if not _holds_big(obj):
        try:
            return dumps(obj, bufs), bufs
        except _ReadOnlyBuffer:
            bufs.clear()
    import io

    f = io.BytesIO()
    p = _id_pickler(by or pickle.Pickler)(f, 5, buffer_callback=keep_big(bufs))
    p.oob = bufs
    p.ids = {}
    try:
        p.dump(obj)
    except Exception as first:
        if by is not None:
            raise
        try:
            import cloudpickle
        except ImportError:
            raise first from None
        return dumps_oob(obj, dumps, cloudpickle.Pickler)
    return f.getvalue(), bufs


class _IdUnpickler(pickle.Unpickler):
    views: list[memoryview]
    made: dict[int, Any]
    private: bool

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "M":
            return _shaped(memoryview(bytearray(pid[1])), pid[2], pid[3], pid[4])
        obj = self.made.get(pid[1])
        if obj is None:
            view = self.views[pid[1]]
            if kind == "b":
                obj = bytes(view)
            elif kind == "a":
                obj = bytearray(view)
            elif kind == "m":
                obj = _shaped(_own(view) if self.private else view, pid[2], pid[3], pid[4])
            elif kind == "p":
                obj = _own(view) if self.private else view
            else:
                raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
            self.made[pid[1]] = obj
        return obj


def _own(view: memoryview) -> memoryview:
    """A writable copy of ``view``."""
    return memoryview(bytearray(view))


def _shaped(view: memoryview, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    try:
        view = view.cast("B").cast(fmt, list(shape))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pass  # a format memoryview.cast does not take: its bytes
    return view.toreadonly() if readonly else view


def loads_oob(data: bytes | memoryview, views: list[memoryview] | None = None, private: bool = False) -> Any:
    """What ``dumps_oob`` pickled, its buffers given back as ``views``. ``private``: the views
    show memory the sender may still change (a subinterpreter's caller's): what arrives as a
    view gets a copy of its own."""
    if not views:
        try:
            return pickle.loads(data)
        except pickle.UnpicklingError as e:
            if "persistent" not in str(e):
                raise
            views = []  # small memoryviews, sent in their persistent ids
    import io

    u = _IdUnpickler(io.BytesIO(data), buffers=(_own(v) for v in views) if private else views)
    u.views = views
    u.made = {}
    u.private = private
    return u.load()


def lend(raw: memoryview) -> memoryview:
    """A view of ``raw`` for a call: every view made from it (a numpy array over it, a slice)
    holds ``raw`` exported, so ``take_back`` can tell whether one outlived the call."""
    return memoryview(pickle.PickleBuffer(raw))


_SHARED: dict[Any, Any] = {}
# A worker keeps the objects of this many ``Shared`` handles (the last ones used).
_SHARED_MAX = 8


def shared_value(key: Any, pid: int, fd: int, size: int, data: bytes, table: tuple[tuple[int, int], ...]) -> Any:
    """The object of a ``rustpool.Shared`` handle: rebuilt once per worker over the pool's memfd
    ``fd`` of process ``pid`` (mapped read-only: its arrays are views of the shared pages)."""
    obj = _SHARED.pop(key, _SHARED)
    if obj is _SHARED:
        if fd < 0:
            obj = _loads(data)
        else:
            import mmap

            f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                root = memoryview(mmap.mmap(f, size, prot=mmap.PROT_READ))
            finally:
                os.close(f)
            obj = _loads(data, [root[off : off + n] for off, n in table])
        while len(_SHARED) >= _SHARED_MAX:
            del _SHARED[next(iter(_SHARED))]
    _SHARED[key] = obj  # the most recently used last
    return obj


def run_lent(payload: bytes, raws: list[memoryview]) -> tuple[tuple[Any, ...], list[memoryview]]:
    """``run`` with ``raws``, views of memory the caller lends (a subinterpreter's call reads its
    buffers in the calling interpreter's memory): the reply, and the views still exported when
    it is done (the caller's memory must then stay alive until ``take_back`` says so)."""
    reply = run(payload, [lend(r) for r in raws], True)
    return reply, [r for r in raws if not take_back(r)]


def take_back(raw: memoryview) -> bool:
    """True once no view made by ``lend`` from ``raw`` is alive any more (the memory under it may
    then be written again); False while one is (kept by the call's function, say)."""
    try:
        raw.release()
    except BufferError:
        return False
    return True


# --- worker processes ----------------------------------------------------------------------------

# After each reply the worker keeps reading for this long without sleeping: a call sent right away
# costs no wake-up.
_SPIN = 0.0002


def _boot(payload: bytes | bytearray) -> tuple[int, bytes]:
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


class _Arenas:
    """A worker process's view of its shared memory: the call arena (written by the pool, read
    here through views lent to each call) and the reply arenas (written here: the one the pool
    names now, and the last few it named, kept mapped for when it names one of them again)."""

    KEEP_REPLY_ARENAS = 3

    def __init__(self) -> None:
        import mmap

        self._mmap = mmap.mmap
        # Mapped with their pages at once (one fault per arena, not one per page).
        self._flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        self.parent = os.getppid()
        self.call_id = 0
        self.call_root: memoryview | None = None
        # reply arena id -> [fd, size, mapping or None], the current one last
        self.replies: dict[int, list[Any]] = {}
        self.reply_id = 0
        self.reply_fd = -1
        self.reply_size = 0
        self.reply_map: Any = None

    def _open(self, fd: int) -> int:
        return os.open(f"/proc/{self.parent}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)

    def _map(self, fd: int, size: int) -> Any:
        return self._mmap(fd, size, flags=self._flags)

    def told(self, call: tuple[int, int, int], reply: tuple[int, int, int]) -> None:
        """The pool names the arenas (id, its fd, size) the next calls use."""
        cid, cfd, csize = call
        if cid != self.call_id or (self.call_root is not None and len(self.call_root) != csize):
            # The old call arena's mapping stays while a view kept by a call still shows it.
            self.call_root = None
            self.call_id = cid
            if cfd >= 0 and csize > 0:
                fd = self._open(cfd)
                try:
                    self.call_root = memoryview(self._map(fd, csize))
                finally:
                    os.close(fd)
        rid, rfd, rsize = reply
        if rid != self.reply_id:
            self._keep_reply()
            entry = self.replies.pop(rid, None)
            if entry is None and rfd >= 0:
                fd = self._open(rfd)
                entry = [fd, rsize, self._map(fd, rsize) if rsize else None]
            self.reply_id = rid
            self.reply_fd, self.reply_size, self.reply_map = entry if entry is not None else (-1, 0, None)
            while len(self.replies) >= self.KEEP_REPLY_ARENAS:
                self._drop(self.replies.pop(next(iter(self.replies))))

    def _keep_reply(self) -> None:
        if self.reply_fd >= 0:
            self.replies[self.reply_id] = [self.reply_fd, self.reply_size, self.reply_map]
        self.reply_fd, self.reply_size, self.reply_map = -1, 0, None

    @staticmethod
    def _drop(entry: list[Any]) -> None:
        fd, _, m = entry
        if m is not None:
            m.close()
        os.close(fd)

    def call_views(self, where: list[tuple[int, int, int]], inline: memoryview) -> list[memoryview]:
        """The raw views of a call's buffers (in the call arena, or in its frame)."""
        raws = []
        for kind, off, n in where:
            if kind == 1:
                if self.call_root is None:
                    raise ValueError("a call names a call arena this worker was not given")
                raws.append(self.call_root[off : off + n])
            else:
                raws.append(inline[off : off + n])
        return raws

    def write_reply(self, bufs: list[Any]) -> list[tuple[int, int, int]] | None:
        """Copy a result's buffers to the reply arena (grown as needed); their entries, or None
        when they must go in the frame (no arena, or no room for it: the pipe then carries them)."""
        if self.reply_fd < 0:
            return None
        entries = []
        off = 0
        for b in bufs:
            n = memoryview(b).nbytes
            entries.append((1, off, n))
            off = aligned(off + n)
        if off > self.reply_size:
            # Whole MiB, or half as much again as before when that is more (as the pool grows its).
            size = max(-(-off // (1 << 20)) << 20, self.reply_size * 3 // 2)
            try:
                os.posix_fallocate(self.reply_fd, 0, size)
            except OSError:
                return None  # no room (a full machine, a file size limit): the pipe
            if self.reply_map is not None:
                self.reply_map.close()
            self.reply_map = self._map(self.reply_fd, size)
            self.reply_size = size
        m = self.reply_map
        for (_, at, n), b in zip(entries, bufs, strict=True):
            m[at : at + n] = b if type(b) is not memoryview or b.format == "B" else b.cast("B")
        return entries


_ALIGN = 64


def aligned(n: int) -> int:
    """``n`` rounded up to where the next out-of-band buffer starts."""
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


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
    arenas_desc = struct.Struct("<QiQQiQ")
    counts = struct.Struct("<IQ")
    entry = struct.Struct("<BQQ")
    reply_body = struct.Struct("<BQIQ")
    arenas = _Arenas()

    # Calls read and not run yet, and the ids the pool took back (a skip frame: the awaiting side
    # cancelled a call that was already written to this worker before it began).
    pending: list[tuple[int, bytearray]] = []
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
            with memoryview(buf) as whole:
                # Writable: a numpy array sent in the frame arrives writable, as its caller's was.
                pending.append((call_id, bytearray(whole[CALL_HEADER : CALL_HEADER + length])))
            del buf[: CALL_HEADER + length]

    def next_call() -> tuple[int, bytearray] | None:
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

    def write(out: memoryview) -> None:
        try:
            while out:
                out = out[os.write(wfd, out) :]
        except OSError:
            # The pool let this worker go before it read the reply (or, in a forked child of a
            # call, the pipe is closed): nothing to answer to.
            os._exit(0)

    def send(call_id: int, status: int, data: bytes) -> None:
        if len(data) > 0xFFFFFFFF:  # frames carry a 32-bit length
            err = ValueError(f"the pickled result is {len(data)} bytes; a worker process returns at most 4 GiB")
            status, data = RAISED, pickle.dumps((err, ""), 5)
        write(memoryview(reply_header.pack(REPLY_MAGIC, call_id, len(data), status) + data))

    def place(bufs: list[Any], reply_free: bool) -> tuple[list[tuple[int, int, int]], list[bytes]]:
        """Where a result's buffers go: copied to the reply arena (entries only), or, with no
        arena or no room in it, in the frame (copies of them: the call's views are looked at
        again before the frame is written)."""
        where = arenas.write_reply(bufs) if reply_free else None
        if where is not None:
            return where, []
        where, inline, off = [], [], 0
        for b in bufs:
            raw = memoryview(b)
            where.append((0, off, raw.nbytes))
            inline.append(raw.tobytes())
            off = aligned(off + raw.nbytes)
        return where, inline

    def send_with_buffers(
        call_id: int, status: int, data: bytes, where: list[tuple[int, int, int]], inline: list[bytes], pinned: bool
    ) -> None:
        head = bytearray(reply_body.pack(int(pinned), arenas.reply_size, len(where), len(data)))
        for w in where:
            head += entry.pack(*w)
        head += data
        size = len(head) + (aligned(where[-1][1] + where[-1][2]) if inline else 0)
        if size > 0xFFFFFFFF:
            err = ValueError(f"the pickled result is {size} bytes; a worker process returns at most 4 GiB")
            status, data, where, inline = RAISED, pickle.dumps((err, ""), 5), [], []
            head = bytearray(reply_body.pack(int(pinned), arenas.reply_size, 0, len(data))) + data
            size = len(head)
        write(memoryview(reply_header.pack(REPLY_MAGIC, call_id, size, status | WITH_BUFFERS) + head))
        for (_, off, n), b in zip(where if inline else [], inline, strict=True):
            write(memoryview(b))
            pad = aligned(off + n) - off - n
            if pad:
                write(memoryview(bytes(pad)))

    def run_call(call_id: int, body: bytearray) -> None:
        view = memoryview(body)
        flags = body[0]
        if not flags & 1:
            nbuf, n = counts.unpack_from(body, 1)
            if not nbuf:  # a call without buffers (most): straight to run
                status, data, *more = run(view[13 : 13 + n])
                if more:
                    placed, inline = place(more[0], bool(flags & 2))
                    del more
                    send_with_buffers(call_id, status, data, placed, inline, False)
                else:
                    send(call_id, status, data)
                return
        reply_free = bool(flags & 2)
        try:
            pos = 1
            if view[0] & 1:
                cid, cfd, csize, rid, rfd_, rsize = arenas_desc.unpack_from(view, 1)
                arenas.told((cid, cfd, csize), (rid, rfd_, rsize))
                pos += arenas_desc.size
            nbuf, n = counts.unpack_from(view, pos)
            pos += counts.size
            where = [entry.unpack_from(view, pos + i * entry.size) for i in range(nbuf)]
            pos += nbuf * entry.size
            raws = arenas.call_views(where, view[pos + n :])
        except Exception as e:  # the pool's shared memory could not be opened: say so
            err = RuntimeError(f"the worker process could not take the call's buffers: {e!r}")
            send(call_id, RAISED, pickle.dumps((err, ""), 5))
            return
        status, data, *more = run(view[pos : pos + n], [lend(r) for r in raws] if nbuf else None)
        # The result's buffers leave first: one may be a view of the call arena (fn returned its
        # argument), which must not count as a view kept past the call.
        placed, inline = place(more[0], reply_free) if more else ([], [])
        del more
        pinned = False
        for r, (kind, _, _) in zip(raws, where, strict=True):
            if not take_back(r) and kind == 1:
                pinned = True
        del raws
        if placed or pinned:
            send_with_buffers(call_id, status, data, placed, inline, pinned)
        else:
            send(call_id, status, data)

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
            send(call_id, SKIPPED, b"")
        else:
            run_call(call_id, payload)
        spin_until = clock() + _SPIN


if __name__ == "__main__":
    serve()
