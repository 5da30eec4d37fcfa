"""`coderctl watch` soak: many check rounds against the whole lab; RSS, open files and threads stay flat.

    .venv/bin/python benchmarks/watch.py [--rounds 2000] [--interval 0.5] [--only CATEGORY ...]

A round is every selected check run once (the count is the fewest runs of any check, from /status). The
watcher is one `python -m coderctl watch` process, measured from outside with psutil: after a warm-up (the
first rounds import modules and fill bounded caches, such as urllib's) and at the end, each from
ten samples (RSS: their median; open files and threads: their floor, since the checks in flight open and
close sockets and threads all the time). The bar: growth under 5 % for each; also the CPU time per round.
Exit 1 when something grew more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
BAR = 0.05


def rounds(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url + "/status", timeout=10) as response:
        doc = json.loads(response.read())
    runs = [c["runs"] for c in doc["watch"]["checks"].values()]
    return (min(runs) if runs and not doc["watch"]["pending"] else 0), doc


def measure(process: Any, samples: int = 10) -> dict[str, float]:
    """RSS as the median of the samples; open files and threads as their floor (what stays open when the
    checks in flight are not counted: a leak raises the floor, traffic does not)."""
    taken = []
    for _ in range(samples):
        with process.oneshot():
            taken.append({"rss_mib": process.memory_info().rss / 2**20, "fds": process.num_fds(),
                          "threads": process.num_threads()})
        time.sleep(0.05)
    cpu = process.cpu_times()
    return {"rss_mib": statistics.median(t["rss_mib"] for t in taken), "fds": min(t["fds"] for t in taken),
            "threads": min(t["threads"] for t in taken), "cpu_s": cpu.user + cpu.system}


def main() -> None:
    import psutil

    from lab.deployment import standalone_lab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=100, help="rounds before the first measurement")
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, standalone_lab(Path(tmp)) as lab:
        argv = [sys.executable, "-m", "coderctl", *lab.args(), "watch", "--listen", "127.0.0.1:0",
                "--interval", f"{args.interval:g}", *lab.net_args(), "--access-url", lab.access_url,
                *[a for c in args.only for a in ("--only", c)]]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CODERCTL_") and k != "KUBECONFIG"},
               "CODERCTL_WILDCARD_URL": "*.xuperson.org", "CODERCTL_EXPECTED_CODER_VERSION": "v2.25.0",
               "XDG_CONFIG_HOME": tmp, "PYTHONPATH": str(ROOT)}
        log = Path(tmp) / "watch.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp, env=env)
        try:
            url = ""
            while not url:
                if proc.poll() is not None:
                    raise SystemExit(f"watch exited {proc.returncode}: {log.read_text()}")
                url = next((x.split("serving ")[1].split("/metrics")[0] for x in log.read_text().splitlines()
                            if "serving http" in x), "")
                time.sleep(0.1)
            watched = psutil.Process(proc.pid)
            while rounds(url)[0] < args.warmup:
                time.sleep(0.5)
            first_rounds, _ = rounds(url)
            start, start_time = measure(watched), time.monotonic()
            peak = dict(start)
            trend: list[tuple[int, float]] = []
            done = first_rounds
            while done < first_rounds + args.rounds:
                time.sleep(2)
                done, doc = rounds(url)
                now = measure(watched)
                peak = {k: max(peak[k], now[k]) for k in peak}
                trend.append((done - first_rounds, now["rss_mib"]))
                print(f"\r{done - first_rounds}/{args.rounds} rounds, RSS {now['rss_mib']:.1f} MiB, "
                      f"fds {now['fds']:.0f}, threads {now['threads']:.0f}", end="", file=sys.stderr, flush=True)
            end, wall = measure(watched), time.monotonic() - start_time
            print(file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(5)
        measured = done - first_rounds
        checks = len(doc["checks"])
        print(f"{measured} rounds of {checks} checks at --interval {args.interval:g} in {wall:.0f} s "
              f"(after {first_rounds} warm-up rounds); summary at the end: {doc['summary']}")
        print(f"{'':>10} {'start':>10} {'end':>10} {'growth':>8} {'peak':>10}")
        flat = True
        for key in ("rss_mib", "fds", "threads"):
            growth = (end[key] - start[key]) / start[key]
            flat = flat and growth < BAR
            print(f"{key:>10} {start[key]:>10.1f} {end[key]:>10.1f} {growth * 100:>7.1f}% {peak[key]:>10.1f}")
        step = max(1, len(trend) // 8)
        print("RSS MiB by round: " + ", ".join(f"{r}: {m:.1f}" for r, m in trend[::step]))
        cpu = end["cpu_s"] - start["cpu_s"]
        print(f"CPU: {cpu:.1f} s for {measured} rounds = {cpu / measured * 1000:.1f} ms per round "
              f"({cpu / measured / checks * 1000:.2f} ms per check run)")
        print("flat (growth under 5 %)" if flat else "NOT flat: growth of 5 % or more")
        if not flat:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
