"""Workloads shared by the benchmarks.

They live in their own module so that ProcessPoolExecutor workers (forkserver) can import them by
name.
"""

from __future__ import annotations

import hashlib
import time

SLEEP_S = 0.020
FIB_N = 25
# 8 MiB, built once per process at import: process-pool workers hash their own copy, so the
# "prebuilt" variants measure compute parallelism, not the cost of shipping 8 MiB to a worker.
BUF = bytes(range(256)) * (32 * 1024)


def noop() -> None:
    return None


def sleep_io() -> None:
    """Stands in for a blocking I/O call (a driver without asyncio support, a file read, ...)."""
    time.sleep(SLEEP_S)


def fib(n: int) -> int:
    """Pure-Python CPU work: holds the GIL the whole time."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def sha256_prebuilt(salt: int) -> str:
    """sha256 over the 8 MiB module buffer; hashlib releases the GIL while it hashes."""
    h = hashlib.sha256(salt.to_bytes(4, "little"))
    h.update(BUF)
    return h.hexdigest()


def sha256_of(buf: bytes, salt: int) -> str:
    """sha256 over a buffer handed in by the caller (a process pool pickles it per call)."""
    h = hashlib.sha256(salt.to_bytes(4, "little"))
    h.update(buf)
    return h.hexdigest()


def matmul(n: int) -> float:
    """numpy matrix products (small arguments): numpy releases the GIL in BLAS."""
    import numpy

    a = numpy.full((n, n), 0.5)
    return float((a @ a @ a).sum())


def json_crunch(doc: str) -> int:
    """Parse a JSON document and total a field: the json module holds the GIL."""
    import json

    return sum(row["n"] for row in json.loads(doc)["rows"])


def thumbnail(raw: bytes, size: int) -> int:
    """Decode a square RGB image, make a thumbnail, encode it as JPEG (Pillow releases the GIL in
    its resampling and codecs)."""
    import io

    from PIL import Image

    img = Image.frombytes("RGB", (size, size), raw)
    img = img.resize((size // 2, size // 2), Image.Resampling.LANCZOS)
    img.thumbnail((256, 256))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return len(out.getvalue())
