"""A module that imports numpy at its top: a worker that unpickles a call of ``total`` must import
numpy first, which numpy refuses in a subinterpreter. Import it only after
``pytest.importorskip("numpy")``.
"""

from __future__ import annotations

import numpy

from tests.interp_helpers import interpreter_id


def total(n: int) -> tuple[int, int]:
    """``sum(range(n))`` computed by numpy, and the id of the interpreter that ran it."""
    return int(numpy.arange(n).sum()), interpreter_id()
