"""rustpool: asyncio executors with a Rust core that never block the event loop.

- ``await to_thread(fn, *args, **kwargs)``: blocking I/O on an elastic pool of threads owned by
  Rust (tokio's blocking pool), with the contract of ``asyncio.to_thread``.
- ``await run_cpu(fn, *args, **kwargs)``: CPU work on a bounded pool (one worker per core); on
  CPython 3.13+ the workers are subinterpreters with their own GIL, so pure-Python code runs in
  parallel.
- ``ThreadExecutor`` / ``CpuExecutor``: ``concurrent.futures`` executors over the same pools, for
  plain scripts, ``loop.run_in_executor`` and ``loop.set_default_executor``; ``await pool.run(...)``
  is their awaitable form.
"""

try:
    from ._api import *  # noqa: F403
    from ._api import __all__, __version__  # noqa: F401
except ImportError as _e:
    # Inside a subinterpreter (a rustpool worker running the caller's __main__, say) the native
    # core refuses to load, as every PyO3 module does: importing rustpool still works there, and
    # using a pool raises a clear error.
    if "subinterpreters" not in str(_e):
        raise
    from ._in_subinterpreter import *  # noqa: F403
    from ._in_subinterpreter import __all__, __version__  # noqa: F401
