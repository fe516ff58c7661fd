"""map(..., progress=...) and amap(..., progress=...): a tqdm bar (made, or the caller's) or a
callback, whose final count is the number of calls; a clear error when tqdm is missing."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import rustpool

from . import proc_helpers as ph
from .conftest import WAIT

tqdm = pytest.importorskip("tqdm", reason="tqdm is the rustpool[progress] extra (in requirements-dev.txt)")


def final_count(text: str) -> tuple[int, int]:
    """The last ``n/total`` a tqdm bar printed."""
    counts = re.findall(r"(\d+)/(\d+)", text)
    assert counts, text
    n, total = counts[-1]
    return int(n), int(total)


@pytest.mark.parametrize("chunksize", [1, 7, "auto"])
def test_map_with_progress_true_draws_a_bar_whose_final_count_is_the_number_of_calls(
    chunksize: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with rustpool.CpuExecutor(2, isolation="process") as pool:
        assert list(pool.map(ph.add, range(50), range(50), chunksize=chunksize, progress=True)) == [
            2 * i for i in range(50)
        ]
    err = capsys.readouterr().err
    assert final_count(err) == (50, 50)
    assert "add" in err  # the bar is named after the function


def test_a_thread_executor_map_advances_a_bar_of_the_caller() -> None:
    out = io.StringIO()
    bar = tqdm.tqdm(total=30, file=out)
    with rustpool.ThreadExecutor(4) as pool:
        assert sum(pool.map(ph.add, range(30), range(30), progress=bar)) == sum(2 * i for i in range(30))
    assert bar.n == 30
    bar.close()  # the caller's bar: the map leaves it open
    assert final_count(out.getvalue()) == (30, 30)


def test_amap_ordered_and_unordered_call_the_callback_once_per_result() -> None:
    async def main(ordered: bool) -> tuple[list[int], list[tuple[int, int | None]]]:
        seen: list[tuple[int, int | None]] = []
        with rustpool.CpuExecutor(2, isolation="thread") as pool:
            results = [
                r
                async for r in pool.amap(
                    ph.add, range(40), range(40), ordered=ordered, progress=lambda d, t: seen.append((d, t))
                )
            ]
        return results, seen

    for ordered in (True, False):
        results, seen = asyncio.run(main(ordered))
        assert sorted(results) == [2 * i for i in range(40)]
        assert seen == [(i, 40) for i in range(1, 41)]


def test_amap_with_options_and_an_async_iterable_has_no_total_and_still_counts() -> None:
    async def items() -> Any:
        for i in range(12):
            yield i

    async def main() -> list[tuple[int, int | None]]:
        seen: list[tuple[int, int | None]] = []
        with rustpool.CpuExecutor(2, isolation="process") as pool:
            got = [
                r
                async for r in pool.options(timeout=WAIT).amap(
                    ph.add, items(), range(12), progress=lambda d, t: seen.append((d, t))
                )
            ]
        assert got == [2 * i for i in range(12)]
        return seen

    assert asyncio.run(main())[-1] == (12, None)


def test_leaving_a_map_early_closes_the_bar_it_made_at_the_count_reached(capsys: pytest.CaptureFixture[str]) -> None:
    with rustpool.ThreadExecutor(2) as pool:
        results = pool.map(ph.add, range(20), range(20), progress=True)
        assert [next(results) for _ in range(5)] == [0, 2, 4, 6, 8]
        results.close()  # type: ignore[attr-defined]
    assert final_count(capsys.readouterr().err) == (5, 20)


def test_progress_takes_a_bar_a_callback_or_true_and_nothing_else() -> None:
    with rustpool.ThreadExecutor(2) as pool, pytest.raises(TypeError, match="progress must be"):
        pool.map(ph.add, [1], [2], progress=3)  # type: ignore[arg-type]


def test_without_tqdm_progress_true_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tqdm"] = None  # as if it were not installed
        import rustpool
        with rustpool.ThreadExecutor(2) as pool:
            try:
                pool.map(abs, [1, -2], progress=True)
            except ImportError as e:
                print(e)
            print(list(pool.map(abs, [1, -2], progress=lambda d, t: None)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert "pip install 'rustpool[progress]'" in out.stdout
    assert "[1, 2]" in out.stdout
