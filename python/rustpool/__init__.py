"""rustpool: asyncio executors with a Rust core that never block the event loop.

- ``await to_thread(fn, *args, **kwargs)``: blocking I/O on an elastic pool of threads owned by
  Rust (tokio's blocking pool), with the contract of ``asyncio.to_thread``.
- ``await run_cpu(fn, *args, **kwargs)``: CPU work on a bounded pool (one worker per core); the
  workers are subinterpreters with their own GIL on CPython 3.13+ and worker processes before, so
  pure-Python code runs in parallel.
- ``ThreadExecutor`` / ``CpuExecutor``: ``concurrent.futures`` executors over the same pools, for
  plain scripts, ``loop.run_in_executor`` and ``loop.set_default_executor``; ``await pool.run(...)``
  is their awaitable form.
"""

from typing import TYPE_CHECKING


def _in_subinterpreter() -> bool:
    try:
        import _interpreters as _i  # type: ignore[import-not-found, unused-ignore]  # 3.13+
    except ImportError:
        try:
            import _xxsubinterpreters as _i  # type: ignore[import-not-found, no-redef, unused-ignore]  # 3.12
        except ImportError:
            return False
    return bool(_i.get_current() != _i.get_main())


if not TYPE_CHECKING and _in_subinterpreter():
    # In a subinterpreter (a rustpool worker running the caller's __main__, say) the native core
    # must not even be tried: PyO3 modules refuse to load there, and the attempt runs their init
    # in the main interpreter. Importing rustpool still works; using a pool raises a clear error.
    # (Type checkers take the other branch: the real API.)
    from ._in_subinterpreter import *  # noqa: F403
    from ._in_subinterpreter import __all__ as __all__
    from ._in_subinterpreter import __version__ as __version__
else:
    from ._api import *  # noqa: F403
    from ._api import __all__ as __all__  # "as": re-exported (py.typed)
    from ._api import __version__ as __version__
