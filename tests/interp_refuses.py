"""A module that imports in the main interpreter but refuses subinterpreters at import time, as
numpy and every PyO3 extension do ("does not support loading in subinterpreters"), without needing
numpy. Each refusal is logged (one line) to the file named by $RUSTPOOL_TEST_REFUSALS, so that a
test can count how often a worker tried to load it.
"""

from __future__ import annotations

import os

from tests.interp_helpers import in_subinterpreter, interpreter_id

if in_subinterpreter():
    _log = os.environ.get("RUSTPOOL_TEST_REFUSALS")
    if _log:
        with open(_log, "a") as _f:
            _f.write("refused\n")
    raise ImportError(f"module {__name__} does not support loading in subinterpreters")


def double_where(n: int) -> tuple[int, int]:
    """``n * 2`` and the id of the interpreter that computed it."""
    return n * 2, interpreter_id()
