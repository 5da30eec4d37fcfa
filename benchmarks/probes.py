"""The network and dns checks against the lab (nginx, fake Coder, Knot): slowest check next to the total.

    .venv/bin/python benchmarks/probes.py [--runs N] [--timeout SECONDS]

Healthy: `coderctl verify --only network --only dns` in a fresh process per run; the bar is a total within
1.5x the slowest check. Hang: the fake Coder accepts connections and never answers; the bar is a total
within --timeout + 2 s.
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


def run(argv: list[str], env: dict[str, str]) -> tuple[float, dict]:  # type: ignore[type-arg]
    import os

    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
    wall = time.perf_counter() - start
    return wall, json.loads(proc.stdout)


def main() -> None:
    from lab.coder import FakeCoder
    from lab.dns import LabDNS, reference_zones
    from lab.nginx import ACCESS_HOST, LabNginx
    from lab.tls import LabCA
    from probeargs import WILDCARD, network_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    env = {"CODERCTL_WILDCARD_URL": WILDCARD, "NO_COLOR": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        ca = LabCA(Path(tmp))
        cert = ca.issue([ACCESS_HOST, WILDCARD], name="ingress")
        with FakeCoder() as coder, LabNginx(coder.port, cert) as nginx, LabDNS(reference_zones()) as dns:
            base = [sys.executable, "-m", "coderctl", "-o", "json"]
            checks = ["verify", "--only", "network", "--only", "dns", *network_args(nginx, ca, dns)]
            print(f"{'healthy run':<12} {'total s':>8} {'slowest s':>10} {'ratio':>6}  slowest check")
            ratios = []
            for i in range(args.runs):
                _, doc = run(base + checks, env)
                slowest = max(doc["checks"], key=lambda c: c["duration_s"])
                ratio = doc["duration_s"] / slowest["duration_s"]
                ratios.append(ratio)
                print(f"{i + 1:<12} {doc['duration_s']:>8.3f} {slowest['duration_s']:>10.3f} {ratio:>6.2f}  "
                      f"{slowest['id']}")
            print(f"median ratio {statistics.median(ratios):.2f} (bar: 1.5)")
            coder.mode = "hang"
            wall, doc = run(base[:-2] + ["-o", "json", "--timeout", str(args.timeout)] + checks, env)
            print(f"hang: total {doc['duration_s']:.2f} s, process {wall:.2f} s, --timeout "
                  f"{args.timeout:g} s (bar: {args.timeout + 2:g} s); {doc['summary']}")


if __name__ == "__main__":
    main()
