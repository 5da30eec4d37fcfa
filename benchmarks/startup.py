"""Startup cost of `coderctl --help` next to `python -c "import click"`, measured in the same run.

    .venv/bin/python benchmarks/startup.py [--runs N]

Prints the median and minimum wall time of each command over N runs, and the difference, which is what
coderctl itself adds on top of the interpreter and click.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import click'": [sys.executable, "-c", "import click"],
    "coderctl --help": [sys.executable, "-m", "coderctl", "--help"],
    "coderctl verify --help": [sys.executable, "-m", "coderctl", "verify", "--help"],
}


def measure(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm the page cache and bytecode
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    results = {name: measure(argv, args.runs) for name, argv in COMMANDS.items()}
    base = statistics.median(results["python -c 'import click'"])
    print(f"{'command':<28} {'median ms':>10} {'min ms':>8} {'vs click':>9}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<28} {med * 1000:>10.1f} {min(times) * 1000:>8.1f} {(med - base) * 1000:>+8.1f}")


if __name__ == "__main__":
    main()
