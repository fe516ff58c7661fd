"""How long a program takes to end after Ctrl-C, rustpool beside ProcessPoolExecutor.

A whole-process measure, so not a pytest-benchmark group: each case runs a script in its own
process group (as a terminal does), lets eight 4 s CPU calls start on 2 workers, sends the group
SIGINT after 1 s (and, for "double", a second one 0.5 s later if it still runs), and times the
exit from the first SIGINT. Run: ``python benches/ctrl_c.py [runs]``; prints the median
and range per case.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORK = """
import time

def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds
"""

# As a terminal's foreground program (a background job of a non-interactive shell starts with
# SIGINT ignored).
TAKE_CTRL_C = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"

RUSTPOOL = TAKE_CTRL_C + """
import asyncio, sys, rustpool
from ctrl_c_work import spin

async def main():
    await asyncio.gather(*(rustpool.run_cpu(spin, 4.0) for _ in range(8)))

if __name__ == "__main__":
    rustpool.configure(isolation=sys.argv[1], cpu_workers=2)
    asyncio.run(main())
"""

STDLIB = TAKE_CTRL_C + """
import asyncio, multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from ctrl_c_work import spin

async def main():
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(2, mp_context=mp.get_context("forkserver")) as ex:
        await asyncio.gather(*(loop.run_in_executor(ex, spin, 4.0) for _ in range(8)))

if __name__ == "__main__":
    asyncio.run(main())
"""


def exit_time(workdir: Path, script: str, args: list[str], double: bool) -> float:
    proc = subprocess.Popen(
        [sys.executable, script, *args],
        cwd=workdir,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    if double:
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return float("inf")
    return time.monotonic() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    modes = ["thread", "process"] + (["interpreter"] if sys.version_info >= (3, 13) else [])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "ctrl_c_work.py").write_text(textwrap.dedent(WORK))
        (workdir / "rustpool_case.py").write_text(textwrap.dedent(RUSTPOOL))
        (workdir / "stdlib_case.py").write_text(textwrap.dedent(STDLIB))
        cases = [(f"rustpool isolation={m}", "rustpool_case.py", [m]) for m in modes]
        cases.append(("ProcessPoolExecutor(2, forkserver)", "stdlib_case.py", []))
        print(f"Python {sys.version.split()[0]}, {runs} runs each: seconds from the first Ctrl-C to exit")
        print(f"{'case':40} {'single':>22} {'double':>22}")
        for name, script, args in cases:
            cells = []
            for double in (False, True):
                times = [exit_time(workdir, script, args, double) for _ in range(runs)]
                cells.append(f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})")
            print(f"{name:40} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()
