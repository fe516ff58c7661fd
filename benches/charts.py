"""One PNG chart per benchmark table, from a pytest-benchmark JSON file (``make bench`` writes
both): rustpool beside each anchor, so that a reader sees the result instead of reading it.

Each chart has two panels for one group (one table of the summary): the time per call of every
entry (log scale; rustpool's entries in one colour, the anchors and others in grey, each bar
labelled with its time and its ratio to the group's anchor), and the loop lag p99 of each entry
(how late a 1 ms ticker on the event loop woke while it ran). An index (``README.md`` in the
output folder) lists the charts with their groups' names.

Run: ``python benches/charts.py .benchmarks/bench-3.13.json docs/charts/3.13`` (needs
matplotlib, in requirements-dev.txt).
"""

from __future__ import annotations

import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import ROLE_ORDER
from conftest import _fmt_time as fmt_time

COLOURS = {"rustpool": "#d9531e", "anchor": "#5b6770", "other": "#9aa5ad", "serial": "#c7cdd1", "floor": "#c7cdd1"}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "group"


def groups(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        if "role" not in b.get("extra_info", {}):
            continue
        out.setdefault(b.get("group") or "(no group)", []).append(b)
    for items in out.values():
        items.sort(key=lambda b: (ROLE_ORDER.get(b["extra_info"]["role"], 9), b["extra_info"]["impl"]))
    return out


def chart(name: str, items: list[dict[str, Any]], path: Path, python: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchor = next((b for b in items if b["extra_info"]["role"] == "anchor"), None)
    labels, per_call, lags, colours, notes = [], [], [], [], []
    for b in items:
        ei = b["extra_info"]
        role = ei["role"]
        labels.append(ei["impl"] + {"anchor": " [anchor]", "serial": " [serial]"}.get(role, ""))
        per_call.append(b["stats"]["median"] / ei["ops"])
        lag = ei.get("lag_p99_ms")
        lags.append(0.0 if lag is None or (isinstance(lag, float) and math.isnan(lag)) else lag)
        colours.append(COLOURS.get(role, "#9aa5ad"))
        ratio = f"  {anchor['stats']['median'] / b['stats']['median']:.2f}x" if anchor is not None else ""
        notes.append(fmt_time(per_call[-1]) + ratio)
    height = 1.2 + 0.42 * len(items)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, height), gridspec_kw={"width_ratios": [3, 1.4]}, sharey=True, layout="constrained"
    )
    ys = list(range(len(items)))[::-1]
    left.barh(ys, per_call, color=colours)
    left.set_xscale("log")
    left.set_yticks(ys, labels)
    left.set_xlabel("time per call, median (log scale); ratio = anchor time / entry time")
    for y, v, note in zip(ys, per_call, notes, strict=True):
        left.text(v, y, " " + note, va="center", fontsize=8)
    left.set_xlim(min(per_call) / 2, max(per_call) * 12)
    right.barh(ys, lags, color=colours)
    right.set_xlabel("loop lag p99 (ms)")
    for y, v in zip(ys, lags, strict=True):
        right.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    right.set_xlim(0, max([*lags, 1.0]) * 1.35)
    fig.suptitle("\n".join(textwrap.wrap(f"{name} (Python {python})", 110)), fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benches/charts.py BENCH.json OUT_DIR")
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    data = json.loads(src.read_text())
    python = data.get("machine_info", {}).get("python_version", "?")
    out.mkdir(parents=True, exist_ok=True)
    index = [f"# Benchmark charts, Python {python}", "", f"Made by `make bench` from `{src.name}`.", ""]
    for name, items in groups(data).items():
        path = out / f"{slug(name)}.png"
        chart(name, items, path, python)
        index.append(f"- [{name}]({path.name})")
    (out / "README.md").write_text("\n".join(index) + "\n")
    print(f"charts: {len(index) - 4} PNGs in {out}")


if __name__ == "__main__":
    main()
