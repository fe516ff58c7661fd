"""Workloads of benches/big_data.py: big payloads handed to a worker (and, for the echoes, back).

They live in their own module so that worker processes (forkserver, loky, rustpool) and
subinterpreters import them by name. Nothing here imports numpy at module level: subinterpreter
workers import this module for the bytes workloads, and numpy refuses to load in a subinterpreter.
"""

from __future__ import annotations

from typing import Any


def send_len(payload: bytes) -> int:
    """The "send bytes" workload: only the way there counts; the answer is an int."""
    return len(payload)


def echo_bytes(payload: bytes) -> bytes:
    """The "echo bytes" workload: the payload crosses there and back."""
    return payload


def numpy_sum(array: Any) -> float:
    """The "numpy sum" workload: the worker sums the array the caller built and sent; a float back."""
    return float(array.sum())


def numpy_echo(array: Any) -> Any:
    """The "numpy echo" workload: the array crosses there and back."""
    return array
