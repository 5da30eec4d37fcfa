"""Failed logins during `coderctl rotate-secrets`, per strategy, in the lab.

    .venv/bin/python benchmarks/rotation.py [--runs N] [--interval 0.05]

While a rotation runs (a real `python -m coderctl` process), two clients log in to the lab's PostgreSQL
every `--interval` seconds, as Coder's pods would:

- "new pod": with whatever the managed Secret's database URL says at that moment;
- "old pod": with the URL it started with, for as long as one of the Coder pods that ran before the
  rotation is still there (afterwards there is no old pod left to fail).

It reports each client's failed logins, the failure window (first to last failure) and the rotation's wall
time, next to the rollout's own duration. Targets: `restart` — a failure window no longer than the rollout
(met without auto-reload; with it, the app role changes before the writes so that no new pod starts with a
password the role lacks, and the window also spans the writes and the operator's sync);
`alternate` — zero failed logins for both clients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@dataclass
class Client:
    name: str
    attempts: int = 0
    failures: list[float] = field(default_factory=list)

    def window(self) -> float:
        return self.failures[-1] - self.failures[0] if self.failures else 0.0


def login(pg: Any, url_text: str) -> bool:
    import psycopg

    from coderctl.clients.postgres import DatabaseURL

    url = DatabaseURL.parse(url_text)
    try:
        with psycopg.connect(host=pg.host, port=pg.port, user=url.user, password=url.password,
                             dbname=url.database, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def coder_pods(lab: Any) -> set[str]:
    return {p["metadata"]["name"] for p in lab.kube.list("Pod", "coder")
            if p["metadata"]["name"].startswith("coder-") and "postgresql" not in p["metadata"]["name"]}


def one_run(strategy: str, auto_reload: bool, interval: float) -> dict[str, Any]:
    from lab.deployment import standalone_lab
    from rotate_support import rotation_lab

    with tempfile.TemporaryDirectory() as tmp, standalone_lab(Path(tmp)) as lab, \
            rotation_lab(lab, {"auto_reload": auto_reload}) as rot:
        started_with = rot.secret()["database-url"]
        old_pods = coder_pods(lab)
        new, old = Client("new pod"), Client("old pod")
        stop = threading.Event()
        t0 = time.monotonic()

        def poll() -> None:
            while not stop.is_set():
                now = time.monotonic() - t0
                new.attempts += 1
                if not login(lab.postgres, rot.secret()["database-url"]):
                    new.failures.append(now)
                if coder_pods(lab) & old_pods:
                    old.attempts += 1
                    if not login(lab.postgres, started_with):
                        old.failures.append(now)
                stop.wait(interval)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        argv = [sys.executable, "-m", "coderctl", *lab.args("-o", "json"), "rotate-secrets", "--yes",
                "--strategy", strategy, "--sync-timeout", "30", "--rollout-timeout", "60"]
        env = {**os.environ, **rot.env}
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
        wall = time.monotonic() - start
        time.sleep(0.5)
        stop.set()
        poller.join(5)
        if proc.returncode == 2:
            return {"strategy": strategy, "auto_reload": auto_reload, "unavailable": proc.stderr.strip()}
        doc = json.loads(proc.stdout)
        rollout = next((s["duration_s"] for s in doc["steps"] if s["name"] == "restart coder"), 0.0)
        return {"strategy": strategy, "auto_reload": auto_reload, "exit": proc.returncode, "wall_s": wall,
                "rollout_s": rollout, "clients": [new, old]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    print(f"{'strategy':<10} {'auto-reload':<11} {'client':<8} {'logins':>6} {'failed':>6} {'window s':>8} "
          f"{'rollout s':>9} {'rotation s':>10}  target")
    for _ in range(args.runs):
        for strategy, auto in (("restart", False), ("restart", True), ("alternate", False), ("alternate", True)):
            r = one_run(strategy, auto, args.interval)
            if "unavailable" in r:
                print(f"{strategy:<10} {'on' if auto else 'off':<11} not available: {r['unavailable']}")
                continue
            note = "" if r["exit"] == 0 else f" (rotation exit {r['exit']})"
            for c in r["clients"]:
                met = c.window() <= r["rollout_s"] if strategy == "restart" else not c.failures
                if strategy == "restart" and auto and not met:
                    note += " (auto-reload: the window also spans the writes and the operator's sync, by design)"
                print(f"{strategy:<10} {'on' if auto else 'off':<11} {c.name:<8} {c.attempts:>6} "
                      f"{len(c.failures):>6} {c.window():>8.2f} {r['rollout_s']:>9.2f} {r['wall_s']:>10.2f}  "
                      f"{'met' if met else 'MISSED'}{note}")

if __name__ == "__main__":
    main()
