"""``rustpool.watch_loop``: a watchdog that says when the event loop is blocked, and by what.

Why it exists: rustpool's first rule is "never block the loop", and one rude call breaks it for
every coroutine. asyncio's debug mode says afterwards that a callback was slow, with no stack,
and is too costly to leave on. Here the loop ticks a heartbeat (one ``call_later`` callback every
tenth of the threshold, 50 ms at most) and a Rust thread (``_rustpool.LoopWatch``) watches it without the GIL. When a
tick is ``threshold`` overdue, that thread calls ``_report`` here, with the GIL, and the loop
thread's Python stack is read right then (``LoopWatch.frame``): the innermost frames with
file, line, function and the call being made, and a hint when that call is a known blocking one
that ``await rustpool.to_thread(...)`` would take off the loop. When ticks come again, the stall's
total length is reported. Reports go to the ``rustpool.watchdog`` logger (WARNING) or to
``on_block``.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._rustpool import LoopWatch

logger = logging.getLogger("rustpool.watchdog")

# How many of the loop thread's innermost frames a report keeps.
FRAMES = 8

# (pattern on the call being made, what it is): C calls, which have no Python frame of their own.
_BLOCKING_CALLS = [
    (re.compile(r"(^|\.)sleep\($"), "time.sleep"),
    (re.compile(r"\.(recv|recv_into|recvfrom|recvmsg|accept|connect|sendall|sendfile|makefile)\($"), "socket I/O"),
    (re.compile(r"(^|\.)(read|readline|readlines|readinto|write|writelines|flush)\($"), "file I/O"),
    (re.compile(r"(^|\b)open\($"), "opening a file"),
    (re.compile(r"(^|\b)input\($"), "input()"),
    (re.compile(r"(^|\.)(wait|join|acquire|result)\($"), "waiting on a thread, lock or future"),
]
# (a part of the frame's file name, what it is): Python modules that block in their own frames.
_BLOCKING_MODULES = [
    (f"{os.sep}subprocess.py", "subprocess"),
    (f"{os.sep}socket.py", "socket I/O"),
    (f"{os.sep}ssl.py", "socket I/O (ssl)"),
    (f"{os.sep}http{os.sep}client.py", "an HTTP request (http.client)"),
    (f"{os.sep}urllib{os.sep}request.py", "an HTTP request (urllib)"),
    (f"{os.sep}requests{os.sep}", "an HTTP request (requests)"),
    (f"{os.sep}urllib3{os.sep}", "an HTTP request (urllib3)"),
    (f"{os.sep}httpx{os.sep}", "an HTTP request (httpx, sync)"),
    (f"{os.sep}shutil.py", "file copying (shutil)"),
    (f"{os.sep}sqlite3{os.sep}", "a database call (sqlite3)"),
]


@dataclass(frozen=True)
class BlockedFrame:
    """One frame of the loop thread when it was found blocked."""

    filename: str
    lineno: int
    function: str
    code: str  # the source line, stripped
    call: str  # the part of the line being run (the call, when the frame is calling), or ""

    def __str__(self) -> str:
        return f'File "{self.filename}", line {self.lineno}, in {self.function}: {self.code}'


@dataclass(frozen=True)
class LoopBlock:
    """A stall of the event loop: ``ended`` False when first seen (``seconds`` blocked so far),
    True when the loop ticked again (``seconds``: the stall's total length). ``frames``: the loop
    thread's innermost frames when the stall was seen, innermost last. ``hint``: how to take the
    blocking call off the loop, when it is a known one."""

    seconds: float
    ended: bool
    frames: tuple[BlockedFrame, ...]
    hint: str | None

    @property
    def culprit(self) -> BlockedFrame | None:
        """The innermost frame: where the loop's thread was."""
        return self.frames[-1] if self.frames else None

    def __str__(self) -> str:
        where = f" in {self.culprit.function} at {self.culprit.filename}:{self.culprit.lineno}" if self.culprit else ""
        if self.ended:
            return f"the event loop was blocked for {self.seconds:.3f} s{where}"
        lines = [f"the event loop has been blocked for {self.seconds:.3f} s{where}"]
        if self.hint:
            lines.append(f"  {self.hint}")
        lines.append("  the loop's thread (innermost last):")
        lines.extend(f"    {f}" for f in self.frames)
        return "\n".join(lines)


_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep


def _frames(frame: Any) -> tuple[BlockedFrame, ...]:
    """The innermost ``FRAMES`` frames from ``frame`` out, innermost last, without the loop's own
    frames around them (asyncio's runner and ``_run_once``)."""
    chain: list[Any] = []
    while frame is not None and len(chain) < FRAMES:
        chain.append(frame)
        frame = frame.f_back
    chain.reverse()
    while len(chain) > 1 and chain[0].f_code.co_filename.startswith(_ASYNCIO):
        chain.pop(0)
    return tuple(_frame(f) for f in chain)


def _frame(frame: Any) -> BlockedFrame:
    code = frame.f_code
    lineno = frame.f_lineno or 0
    raw = linecache.getline(code.co_filename, lineno).rstrip("\n")
    call = ""
    try:  # the columns of the instruction being run: the call, when the frame is calling
        start, end, col, end_col = list(code.co_positions())[frame.f_lasti // 2]
        if start == end == lineno and col is not None and end_col is not None:
            call = raw.encode()[col:end_col].decode(errors="replace")  # columns count bytes
    except (IndexError, ValueError):
        pass
    return BlockedFrame(code.co_filename, lineno, code.co_name, raw.strip(), call)


def _hint(frames: tuple[BlockedFrame, ...]) -> str | None:
    """A known blocking call among the innermost frames, and how to take it off the loop."""
    for f in reversed(frames):
        for part, what in _BLOCKING_MODULES:
            if part in f.filename:
                return f"{what} blocks the loop: run it with `await rustpool.to_thread(...)`"
    if frames and frames[-1].call:
        callee = frames[-1].call.split("(", 1)[0].strip()
        for pattern, what in _BLOCKING_CALLS:
            if pattern.search(callee + "("):
                return f"{what} blocks the loop: `await rustpool.to_thread({callee}, ...)` runs it in a thread"
    return None


class LoopWatchdog:
    """What ``watch_loop`` returns: ``stop()`` ends the watching, ``start()`` begins it again
    (with the same settings), ``running`` says which; a context manager that stops on exit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        on_block: Callable[[LoopBlock], object] | None,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.on_block = on_block
        self._native: LoopWatch | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._pid = os.getpid()
        self._seen: LoopBlock | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        native = self._native
        return native is not None and not native.stopped and self._pid == os.getpid()

    def start(self) -> LoopWatchdog:
        """Begin watching (again; a loop's other watchdog stops). Callable from any thread."""
        with _watched_lock:
            other = _watched.get(id(self.loop))
            _watched[id(self.loop)] = self
        if other is not None and other is not self:
            other._native_stop()
        with self._lock:
            if self.running:
                return self
            if self.loop.is_closed():
                raise RuntimeError("cannot watch a closed event loop")
            self._pid = os.getpid()
            # Ten ticks per threshold (at most every 50 ms): a stall's length is known to that.
            interval = max(min(self.threshold / 10, 0.05), 0.001)
            native = LoopWatch(self.threshold, interval, self._report)
            self._native = native
            self._interval = interval

            if _running_loop() is self.loop:
                self._tick(native)
            else:
                self.loop.call_soon_threadsafe(self._tick, native)
        return self

    def stop(self) -> None:
        """Stop watching (the watchdog's thread ends at its next look). Callable from any thread,
        and from ``on_block``."""
        with _watched_lock:
            if _watched.get(id(self.loop)) is self:
                del _watched[id(self.loop)]  # the registry never keeps a loop alive once stopped
        self._native_stop()
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            if _running_loop() is self.loop:
                handle.cancel()
            elif not self.loop.is_closed():
                try:
                    self.loop.call_soon_threadsafe(handle.cancel)
                except RuntimeError:
                    pass  # closed meanwhile

    def _native_stop(self) -> None:
        """Stop the clock (its next tick is not scheduled again), leaving the registry as it is
        (another watchdog may have taken this loop's place)."""
        with self._lock:
            native, self._native = self._native, None
        if native is not None:
            native.stop()

    def __enter__(self) -> LoopWatchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<rustpool.LoopWatchdog {state} threshold={self.threshold} loop={self.loop!r}>"

    def _tick(self, native: LoopWatch) -> None:
        if native is not self._native:
            return  # stopped, or restarted with a new clock
        native.tick()
        self._handle = self.loop.call_later(self._interval, self._tick, native)

    def _report(self, event: str, seconds: float) -> bool:
        """Called by the watchdog's thread, with the GIL: True when a stall was reported."""
        try:
            if event == "blocked":
                if self.loop.is_closed():
                    self.stop()
                    return False
                native = self._native
                if not self.loop.is_running() or native is None:
                    return False
                frame = native.frame()  # never sys._current_frames(): see LoopWatch.frame
                if frame is None:
                    return False
                frames = _frames(frame)
                block = LoopBlock(seconds, False, frames, _hint(frames))
                self._seen = block
            else:
                seen = self._seen
                if seen is None:
                    return False
                block = LoopBlock(seconds, True, seen.frames, seen.hint)
                self._seen = None
            if self.on_block is not None:
                self.on_block(block)
            else:
                logger.warning("%s", block)
            return True
        except Exception:
            logger.exception("rustpool.watch_loop: reporting a stall failed")
            return event == "blocked"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_watched: dict[int, LoopWatchdog] = {}
_watched_lock = threading.Lock()


def watch_loop(
    threshold: float = 0.1,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    on_block: Callable[[LoopBlock], object] | None = None,
) -> LoopWatchdog:
    """Watch an event loop (the running one by default; asyncio's or uvloop's) and report every
    time it is blocked for ``threshold`` seconds or more: once when the stall is seen, with the
    loop thread's innermost frames at that moment and a hint when the blocking call is a known one
    (``time.sleep``, socket and file reads, ``requests``, ``subprocess.run``...), and once when it
    ends, with its total length. Reports are ``LoopBlock`` records, logged by the
    ``rustpool.watchdog`` logger (WARNING) or given to ``on_block(block)`` (called from the
    watchdog's thread). Costs the loop one short callback every ``threshold / 10`` (50 ms at
    most). A loop is
    watched by one watchdog: watching it again replaces the first. ``stop()`` on the result ends
    it; it never keeps the process alive."""
    if not (isinstance(threshold, int | float) and not isinstance(threshold, bool) and 0.001 <= threshold <= 3600):
        raise ValueError(f"threshold must be seconds in [0.001, 3600], not {threshold!r}")
    if on_block is not None and not callable(on_block):
        raise TypeError(f"on_block must be callable, not {on_block!r}")
    if loop is None:
        loop = _running_loop()
        if loop is None:
            raise RuntimeError("watch_loop() needs an event loop: call it from a coroutine, or pass loop=")
    with _watched_lock:
        closed = [d for d in _watched.values() if d.loop.is_closed()]
    for d in closed:
        d.stop()
    return LoopWatchdog(loop, float(threshold), on_block).start()
