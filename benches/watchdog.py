"""What ``rustpool.watch_loop`` costs a busy event loop: a loop running about 100,000 callbacks a
second (a ``call_soon`` chain, each callback a few microseconds of work), timed with and without
the watchdog in alternating rounds, so that both see the same noise.

Run: ``python benches/watchdog.py [rounds] [--uvloop]`` (default 40 rounds). Each round times
the chain without the watchdog twice (the second is a control: its ratio to the first is the
noise floor) and once with it. Prints the callback rate, the median time of each, and the
median of the pairs' ratios (the overhead). Nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import rustpool

CALLBACKS = 20_000


def work() -> int:
    return sum(range(500))  # ~10 microseconds, so that the loop runs ~100,000 callbacks/s


async def chain(n: int) -> float:
    """Run ``n`` callbacks one after another on the running loop; the seconds it took."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = n

    def step() -> None:
        nonlocal left
        work()
        left -= 1
        if left:
            loop.call_soon(step)
        else:
            done.set_result(None)

    t = time.perf_counter()
    loop.call_soon(step)
    await done
    return time.perf_counter() - t


async def main(rounds: int) -> None:
    await chain(CALLBACKS)  # warm
    plain, control, watched = [], [], []
    dog = rustpool.watch_loop(0.1)
    dog.stop()
    for _ in range(rounds):
        # Each chain comes after the same 0.2 s of idle loop (a chain right after idle time runs
        # slower on this VM, whatever else happens).
        await asyncio.sleep(0.2)
        plain.append(await chain(CALLBACKS))
        await asyncio.sleep(0.2)
        control.append(await chain(CALLBACKS))  # the same again: the noise floor of a ratio
        dog.start()  # the watchdog's thread starts here, and has looked a few times before the chain
        await asyncio.sleep(0.2)
        watched.append(await chain(CALLBACKS))
        dog.stop()
    rate = CALLBACKS / statistics.median(plain)
    ratio = statistics.median(w / p for w, p in zip(watched, plain, strict=True))
    floor = statistics.median(c / p for c, p in zip(control, plain, strict=True))
    print(f"loop: {type(asyncio.get_running_loop()).__module__}, {rate:,.0f} callbacks/s without the watchdog")
    print(
        f"{rounds} alternating rounds of {CALLBACKS:,} callbacks: without {statistics.median(plain) * 1e3:.1f} ms, "
        f"with watch_loop(0.1) {statistics.median(watched) * 1e3:.1f} ms; pair-ratio median {ratio:.4f} "
        f"({(ratio - 1) * 100:+.2f}%); the same loop twice without: {floor:.4f} ({(floor - 1) * 100:+.2f}%)"
    )


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 40
    print(f"Python {sys.version.split()[0]}; command: python benches/watchdog.py {' '.join(sys.argv[1:])}")
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main(rounds))
    else:
        asyncio.run(main(rounds))
