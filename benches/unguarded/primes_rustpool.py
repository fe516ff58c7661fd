"""concurrent.futures' ProcessPoolExecutor example, as its docs give it but with no main guard and
rustpool's CpuExecutor: a script whose functions no worker can import by name (they cross by
value). Timed whole, beside primes_stdlib.py, with farm-bench (see docs/benchmarks.md)."""

import math

import rustpool

PRIMES = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419]

def is_prime(n):
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False

    sqrt_n = math.isqrt(n)
    for i in range(3, sqrt_n + 1, 2):
        if n % i == 0:
            return False
    return True

def main():
    with rustpool.CpuExecutor() as executor:
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):
            print(f"{number} is prime: {prime}")

main()
