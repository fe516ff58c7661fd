"""``map(..., progress=...)`` and ``amap(..., progress=...)``: how far a map has come.

Why it exists: a long map that shows nothing looks hung. ``progress=True`` draws a bar with
tqdm (``tqdm.auto``: a widget in notebooks, text in a terminal; the ``rustpool[progress]``
extra), ``progress=bar`` advances a tqdm bar of the caller's (or anything with ``update(n)``),
``progress=callback`` calls ``callback(done, total)``. The count moves as results are handed to
the caller (in the caller's thread or task, never in a pool thread), so the final count is the
number of calls whose results were read; ``total`` is None when the iterables have no length.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sized
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class ProgressBar(Protocol):
    """What ``progress=`` advances: a tqdm bar, or anything with ``update(n)``."""

    def update(self, n: int = 1, /) -> object: ...


Progress: TypeAlias = "bool | ProgressBar | Callable[[int, int | None], object] | None"


def total_of(iterables: tuple[Iterable[Any], ...] | tuple[Any, ...]) -> int | None:
    """How many calls a map makes, when its iterables say (``len``); else None."""
    sized = [it for it in iterables if isinstance(it, Sized)]
    if iterables and len(sized) == len(iterables):
        return min(len(it) for it in sized)
    return None


class _Meter:
    """One map's progress: a bar it made (and closes), a bar of the caller's, or a callback."""

    def __init__(self, progress: Progress, total: int | None, desc: str) -> None:
        self.done = 0
        self.total = total
        self._owned: Any = None
        self._bar: ProgressBar | None = None
        self._callback: Callable[[int, int | None], object] | None = None
        if progress is True:
            try:
                from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]
            except ImportError as e:
                raise ImportError(
                    "progress=True draws a bar with tqdm, which is not installed: pip install 'rustpool[progress]' "
                    "(or pass progress=callback(done, total))"
                ) from e
            self._owned = self._bar = tqdm(total=total, desc=desc, unit="call")
        elif isinstance(progress, ProgressBar):
            self._bar = progress
        elif callable(progress):
            self._callback = progress
        else:
            raise TypeError(
                f"progress must be True, a tqdm bar (anything with update(n)) or a callback(done, total), "
                f"not {progress!r}"
            )

    def step(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def _desc(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def meter(progress: Progress, fn: Callable[..., Any], total: int | None) -> _Meter | None:
    """The meter of a map (made now, so that a missing tqdm fails the call to map itself)."""
    if progress is None or progress is False:
        return None
    return _Meter(progress, total, _desc(fn))


def track(results: Iterator[T], m: _Meter | None) -> Iterator[T]:
    """``results``, counted as they are read; closing it closes ``results`` (which cancels the
    calls not read)."""
    if m is None:
        return results

    def counted() -> Iterator[T]:
        try:
            for r in results:
                m.step()
                yield r
        finally:
            results.close()  # type: ignore[attr-defined]
            m.close()

    return counted()


def atrack(results: AsyncGenerator[T, None], m: _Meter | None) -> AsyncGenerator[T, None]:
    """The async form of ``track``."""
    if m is None:
        return results

    async def counted() -> AsyncGenerator[T, None]:
        try:
            async for r in results:
                m.step()
                yield r
        finally:
            await results.aclose()
            m.close()

    return counted()
