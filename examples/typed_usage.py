"""What a type checker sees of rustpool: checked by `mypy --strict` in tests/test_typing.py, so
that the public API stays typed (results, arguments, executors as context managers)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import assert_type

import rustpool


def repeat(data: bytes, times: int) -> bytes:
    return data * times


def total(*numbers: int) -> int:
    return sum(numbers)


async def main() -> None:
    assert_type(await rustpool.to_thread(repeat, b"ab", 3), bytes)
    assert_type(await rustpool.run_cpu(total, 1, 2, 3), int)
    with rustpool.CpuExecutor(2, isolation="thread") as pool:
        assert_type(await pool.run(repeat, b"x", times=2), bytes)
        assert_type(pool.submit(total, 4, 5), Future[int])
        assert_type(pool.isolation, str)


if __name__ == "__main__":
    asyncio.run(main())
    with rustpool.ThreadExecutor(4) as threads:
        assert_type(list(threads.map(total, [1, 2], [3, 4])), list[int])
