"""Backup throughput and memory: coderctl next to the commands it replaces, on one generated database.

    .venv/bin/python benchmarks/backup.py [--size-mb 200] [--runs 3] [--no-verify] [--keep DIR]

Sets up what the tests use (tests/lab): a real PostgreSQL with the Coder-like schema grown to about
--size-mb of table data, and the fake Kubernetes API whose exec runs commands locally. Then, in one run:

  raw pg_dump -Fc -f FILE                              vs  coderctl backup create --via direct
  (raw pg_dump -Fc -Z1 -f FILE, coderctl's default compression level, is shown for reference)
  kubectl exec ... -- pg_dump -Fc > FILE (lab API)     vs  coderctl backup create --via exec

coderctl runs as a real process (its start-up counts); its peak RSS is sampled every 20 ms with psutil
(the coderctl process only, not pg_dump or pg_restore). coderctl also reads every archive back while it
arrives (pg_restore -f -), which the raw commands do not. The four commands run in turn, --runs times; the
table gives the best and the median time of each (other work on the machine only ever slows a run down).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402
import trustme  # noqa: E402
from lab.deployment import MANIFESTS, bitnami_pod_env, lab_database_values  # noqa: E402
from lab.kubeapi import FakeKubeAPI, lab_values, load_manifests  # noqa: E402
from lab.postgres import LabPostgres  # noqa: E402


@dataclass
class Row:
    name: str
    times: list[float]
    size: int
    peak_rss: int | None = None

    @property
    def seconds(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def run(argv: list[str], *, env: dict[str, str] | None = None, stdout_path: Path | None = None,
        sample: bool = False) -> tuple[float, int | None]:
    """Wall time and (with `sample`) the peak RSS of the process itself."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sampler() -> None:
        nonlocal peak
        try:
            p = psutil.Process(proc.pid)
            while not done.is_set():
                peak = max(peak, p.memory_info().rss)
                time.sleep(0.02)
        except psutil.Error:
            pass

    thread = threading.Thread(target=sampler, daemon=True)
    if sample:
        thread.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    if out is not subprocess.DEVNULL:
        out.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, (peak or None) if sample else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="table data to generate, in MB (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--no-verify", action="store_true",
                        help="also time coderctl with --no-verify (streaming alone, no read-back)")
    parser.add_argument("--keep", type=Path, default=None, help="leave the files here instead of a temp dir")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="coderctl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    with LabPostgres() as pg:
        t = time.perf_counter()
        data = pg.generate(args.size_mb * 1_000_000)
        print(f"generated {data / 1e6:.0f} MB of table data in {time.perf_counter() - t:.0f}s "
              f"(PostgreSQL {pg.version})", flush=True)
        values = lab_values()
        values.update(lab_database_values(pg))
        api = FakeKubeAPI(load_manifests(MANIFESTS, values), tls=ca)
        api.start()
        try:
            api.set_exec("coder", "coder-coder-postgresql-0", env=bitnami_pod_env(pg),
                         path_map={"/opt/bitnami/postgresql/bin/pg_dump": str(pg.bindir / "pg_dump")})
            kubeconfig = api.write_kubeconfig(work / "kubeconfig")
            rows = measure(pg, kubeconfig, work, args.runs, args.no_verify)
        finally:
            api.stop()
    report(rows, data)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


def measure(pg: LabPostgres, kubeconfig: Path, work: Path, runs: int, no_verify: bool) -> list[Row]:
    pg_env = {**os.environ, **pg.env()}
    pg_dump = str(pg.bindir / "pg_dump")
    coderctl = [sys.executable, "-m", "coderctl", "--kubeconfig", str(kubeconfig), "--timeout", "10"]
    env = {**os.environ, "NO_COLOR": "1", "HOME": str(work), "XDG_DATA_HOME": str(work / "xdg")}
    env.pop("KUBECONFIG", None)
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("kubectl not found: skipping the kubectl exec baseline", file=sys.stderr)
    script = 'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dump -Fc -U coder -d coder'
    commands: dict[str, Any] = {
        "pg_dump -Fc -f FILE": lambda out: run([pg_dump, "-Fc", "-f", str(out / "raw.dump")], env=pg_env),
        "pg_dump -Fc -Z1 -f FILE": lambda out: run([pg_dump, "-Fc", "-Z1", "-f", str(out / "raw1.dump")],
                                                   env=pg_env),
        "coderctl backup create --via direct": lambda out: run(
            [*coderctl, "backup", "create", "--via", "direct", "--database-url", pg.url(), "--output-dir",
             str(out)], env=env, sample=True),
        "kubectl exec -- pg_dump -Fc > FILE": lambda out: run(
            [kubectl or "kubectl", "--kubeconfig", str(kubeconfig), "-n", "coder", "exec",
             "coder-coder-postgresql-0", "-c", "postgresql", "--", "sh", "-c", script],
            stdout_path=out / "kubectl.dump"),
        "coderctl backup create --via exec": lambda out: run(
            [*coderctl, "backup", "create", "--via", "exec", "--output-dir", str(out)], env=env, sample=True),
    }
    if no_verify:
        commands["coderctl backup create --via direct --no-verify"] = lambda out: run(
            [*coderctl, "backup", "create", "--via", "direct", "--no-verify", "--database-url", pg.url(),
             "--output-dir", str(out)], env=env, sample=True)
        commands["coderctl backup create --via exec --no-verify"] = lambda out: run(
            [*coderctl, "backup", "create", "--via", "exec", "--no-verify", "--output-dir", str(out)], env=env,
            sample=True)
    if not kubectl:
        del commands["kubectl exec -- pg_dump -Fc > FILE"]
    run([pg_dump, "-Fc", "-f", str(work / "warmup.dump")], env=pg_env)  # warm the database's cache
    (work / "warmup.dump").unlink()
    rows = {name: Row(name, [], 0) for name in commands}
    for i in range(runs):
        for name, command in commands.items():
            out = work / f"run{i}-{len(rows[name].times)}-{name.split()[0]}-{name.split()[-1]}"
            out.mkdir(parents=True)
            seconds, peak = command(out)
            row = rows[name]
            row.times.append(seconds)
            row.size = max(p.stat().st_size for p in out.iterdir() if p.suffix == ".dump")
            if peak:
                row.peak_rss = max(row.peak_rss or 0, peak)
            shutil.rmtree(out)
            print(f"  run {i + 1}: {name}: {seconds:.2f}s", flush=True)
    return list(rows.values())


def report(rows: list[Row], data: int) -> None:
    base = {r.name: r for r in rows}
    pairs = {"coderctl backup create --via direct": "pg_dump -Fc -f FILE",
             "coderctl backup create --via exec": "kubectl exec -- pg_dump -Fc > FILE",
             "coderctl backup create --via direct --no-verify": "pg_dump -Fc -f FILE",
             "coderctl backup create --via exec --no-verify": "kubectl exec -- pg_dump -Fc > FILE"}
    print()
    print(f"table data: {data / 1e6:.0f} MB; best of {len(rows[0].times)} runs (median in brackets)")
    print()
    print("| command | seconds | MB/s of table data | archive MB | throughput vs baseline | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        against = base.get(pairs.get(r.name, ""))
        ratio = f"{against.seconds / r.seconds:.2f}x ({against.median / r.median:.2f}x)" if against else ""
        rss = f"{r.peak_rss / 1e6:.0f}" if r.peak_rss else ""
        print(f"| {r.name} | {r.seconds:.2f} ({r.median:.2f}) | {data / r.seconds / 1e6:.1f} | {r.size / 1e6:.1f} | "
              f"{ratio} | {rss} |")


if __name__ == "__main__":
    main()
