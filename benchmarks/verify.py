"""`coderctl verify` against the whole lab: total wall time next to the slowest single check, same run.

    .venv/bin/python benchmarks/verify.py [--runs N] [--only CATEGORY ...]

The runner's concurrency works when the total stays close to the slowest check (the issue's bar: within
1.5x). Each run is a fresh `python -m coderctl` process, as an operator would start it; the table shows
the check durations coderctl reports in its JSON and the process's own wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from lab.deployment import standalone_lab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, standalone_lab(Path(tmp)) as lab:
        argv = [sys.executable, "-m", "coderctl", *lab.verify(*[a for c in args.only for a in ("--only", c)])]
        rows = []
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - start
            doc = json.loads(proc.stdout)
            slowest = max(doc["checks"], key=lambda c: c["duration_s"])
            rows.append((doc["duration_s"], slowest["duration_s"], slowest["id"], wall, doc["summary"]))
        print(f"{'checks total s':>14} {'slowest s':>10} {'ratio':>6} {'process s':>10}  slowest check / summary")
        for total, slow, cid, wall, summary in rows:
            print(f"{total:>14.3f} {slow:>10.3f} {total / slow:>6.2f} {wall:>10.3f}  {cid} {summary}")
        med_total = statistics.median(r[0] for r in rows)
        med_slow = statistics.median(r[1] for r in rows)
        print(f"median: checks total {med_total:.3f} s, slowest check {med_slow:.3f} s, ratio {med_total / med_slow:.2f}")


if __name__ == "__main__":
    main()
