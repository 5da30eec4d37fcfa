"""Startup cost of `coderctl --help` next to `python -c "import click"`, measured in the same run.

    .venv/bin/python benchmarks/startup.py [--runs N] [--limit 1.15]

Every command runs with this interpreter, N times, interleaved (one run of each in turn, so that a busy
moment on a shared machine hits all of them alike), after one warm-up run each. Bytecode is cached for all
of them alike, in a temporary PYTHONPYCACHEPREFIX (as an installed package has it; with
PYTHONDONTWRITEBYTECODE, coderctl would be compiled from source on every run and click not).

Prints each command's median and minimum wall time and its ratio to the reference's median, and the same
for CPU time (user + system, steadier on a busy machine); exits 1 when `coderctl --help`'s median wall time
is more than --limit times the reference's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REFERENCE = "python -c 'import click'"
COMMANDS = {
    REFERENCE: [sys.executable, "-c", "import click"],
    "coderctl --help": [sys.executable, "-m", "coderctl", "--help"],
    "coderctl verify --help": [sys.executable, "-m", "coderctl", "verify", "--help"],
    "coderctl probe http --help": [sys.executable, "-m", "coderctl", "probe", "http", "--help"],
}


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time, and CPU time (user + system) of the child, which a busy machine disturbs less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--limit", type=float, default=1.15, help="largest ratio of medians allowed for --help")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coderctl-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for argv in COMMANDS.values():  # warm the page cache and bytecode
            once(argv, env)
        results: dict[str, list[float]] = {name: [] for name in COMMANDS}
        cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.runs):
            for name, argv in COMMANDS.items():
                wall, used = once(argv, env)
                results[name].append(wall)
                cpu[name].append(used)
    base = statistics.median(results[REFERENCE])
    cpu_base = statistics.median(cpu[REFERENCE])
    print(f"{args.runs} interleaved runs each, {sys.executable}")
    print(f"{'command':<28} {'median ms':>10} {'min ms':>8} {'ratio':>7} {'cpu ms':>8} {'cpu ratio':>10}")
    for name, times in results.items():
        med, cpu_med = statistics.median(times), statistics.median(cpu[name])
        print(f"{name:<28} {med * 1000:>10.1f} {min(times) * 1000:>8.1f} {med / base:>7.2f} "
              f"{cpu_med * 1000:>8.1f} {cpu_med / cpu_base:>10.2f}")
    ratio = statistics.median(results["coderctl --help"]) / base
    verdict = "ok" if ratio <= args.limit else "too slow"
    print(f"coderctl --help / import click: {ratio:.2f} (limit {args.limit:.2f}): {verdict}")
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
