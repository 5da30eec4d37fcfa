"""Backup throughput and memory: coderctl next to the commands it replaces, on one generated database.

    .venv/bin/python benchmarks/backup.py [--size-mb 200] [--runs 3] [--levels 1,6] [--only direct,exec]
                                          [--baseline DIR] [--no-verify] [--keep DIR] [--bucket]
                                          [--client DIR | --server DIR]

Sets up what the tests use (tests/lab): a real PostgreSQL with the Coder-like schema grown to about
--size-mb of table data, and the fake Kubernetes API whose exec runs commands locally. Then, in one run and
at each compression level of --levels (like with like: coderctl's default, auto, is zlib level 1 where
pg_dump writes no zstd, pg_dump's is 6, so both are measured, each against the raw command at the same level):

  raw pg_dump -Fc -ZN -f FILE                              vs  coderctl backup create --via direct --compress N
  kubectl exec ... -- pg_dump -Fc -ZN > FILE (lab API)     vs  coderctl backup create --via exec --compress N

With --bucket, also against a real S3-compatible server on loopback (`rclone serve s3`, tests/lab/s3.py):

  pg_dump -Fc -ZN | boto3 upload_fileobj (the same library's plain upload)  vs  coderctl backup create --to s3://...

(the directory destination is the `--via direct` row above). rclone runs on the same CPUs.

coderctl runs as a real process (its start-up counts) and reads every archive back while it arrives
(header, TOC, every block decompressed, COPY rows counted), which the raw commands do not; its peak RSS is
sampled every 20 ms with psutil (the coderctl process only, not pg_dump). The commands run in turn, --runs
times; the table gives the best and the median time of each, and coderctl's throughput as a fraction of the
raw command's (1.00x: as fast). Other work on the machine only ever slows a run down: say how busy it was.
--levels takes pg_dump's -Z values: zlib levels, or with a pg_dump 16+ (--client) METHOD:LEVEL such as zstd:1
and lz4, each passed as is to the raw command and to coderctl's --compress. --client DIR (e.g. .lab/pg17/bin,
tests/lab/pgclient.py) runs that pg_dump in the pod and as the raw local command; coderctl's --via direct
would still pick the pg_dump of the server's version (15 in the lab), so with --client only the exec rows
and the raw pg_dump are measured. --server DIR (e.g. .lab/pg17/bin) runs the lab's PostgreSQL from DIR instead,
and its pg_dump everywhere: in the pod, as the raw command, and first on coderctl's PATH (a deployment on 17).
--baseline DIR also times the coderctl package in DIR (e.g. `git archive HEAD coderctl | tar -x -C DIR`) in
the same rounds, marked [baseline]: a change compared on the same load.
The table shows how idle the machine's CPUs were during each command's runs (median, from /proc/stat) and
the command's own CPU time (its process tree as reaped: pg_dump is coderctl's child with --via direct, the
server's backend is nobody's), with the load average before and after.
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
from lab.s3 import LabS3  # noqa: E402

PLAIN_UPLOAD = ("import boto3, sys; from botocore.config import Config; "
                "boto3.client('s3', config=Config(s3={'addressing_style': 'path'})).upload_fileobj("
                "sys.stdin.buffer, sys.argv[1], sys.argv[2])")


@dataclass
class Row:
    name: str
    times: list[float]
    size: int
    peak_rss: int | None = None
    idle: list[float] | None = None
    cpu: list[float] | None = None

    @property
    def seconds(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Timing:
    seconds: float
    peak_rss: int | None
    idle: float | None
    """Share of the machine's CPU time that was idle meanwhile (0..1)."""
    cpu: float
    """User + system seconds of the command's process tree (what was reaped)."""


def _cpu_ticks() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])


def run(argv: list[str], *, env: dict[str, str] | None = None, stdout_path: Path | None = None,
        sample: bool = False, cwd: Path | None = None) -> Timing:
    """Wall time, how idle the machine was, the CPU time of the command and (with `sample`) the peak RSS of
    the process itself."""
    import resource

    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    ticks = _cpu_ticks()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE, cwd=cwd)
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
    after, now = _cpu_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done.set()
    if not isinstance(out, int):
        out.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {err.decode()[-2000:]}")
    idle = (after[0] - ticks[0]) / max(after[1] - ticks[1], 1) if ticks and after else None
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    return Timing(elapsed, (peak or None) if sample else None, idle, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="table data to generate, in MB (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (default 3)")
    parser.add_argument("--levels", default="1,6",
                        help="pg_dump -Z values to compare at, comma-separated (default 1,6: coderctl's and "
                             "pg_dump's defaults with a zlib-only pg_dump; zstd:1 with --client DIR of pg_dump 16+)")
    parser.add_argument("--only", default="direct,exec",
                        help="which paths to measure, comma-separated: direct, exec (default both)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also time the coderctl package in DIR (another version), marked [baseline]")
    parser.add_argument("--no-verify", action="store_true",
                        help="also time coderctl with --no-verify (streaming alone, no read-back)")
    parser.add_argument("--keep", type=Path, default=None, help="leave the files here instead of a temp dir")
    parser.add_argument("--bucket", action="store_true",
                        help="also back up to a bucket of a local `rclone serve s3` (and its plain upload)")
    parser.add_argument("--client", type=Path, default=None, metavar="DIR",
                        help="pg_dump from DIR (the pod's, and the raw command's), e.g. .lab/pg17/bin")
    parser.add_argument("--server", type=Path, default=None, metavar="DIR",
                        help="the lab's PostgreSQL and every pg_dump from DIR, e.g. .lab/pg17/bin")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="coderctl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    levels = [level.strip() for level in args.levels.split(",") if level.strip()]
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    server = args.server.resolve() if args.server else None
    client = server or (args.client.resolve() if args.client else None)
    s3 = LabS3(work / "s3").start() if args.bucket else None
    with LabPostgres(bindir=server) as pg:
        values = lab_values()
        values.update(lab_database_values(pg))
        api = FakeKubeAPI(load_manifests(MANIFESTS, values), tls=ca)
        api.start()
        try:
            tools = client or pg.bindir
            env = {**bitnami_pod_env(pg), "PATH": f"{tools}:{bitnami_pod_env(pg)['PATH']}"}
            api.set_exec("coder", "coder-coder-postgresql-0", env=env,
                         path_map={"/opt/bitnami/postgresql/bin/pg_dump": str(tools / "pg_dump")})
            kubeconfig = api.write_kubeconfig(work / "kubeconfig")
            print("fixed costs, on the small seed database:", flush=True)
            seed = pg.data_size()
            fixed, fixed_pairs = measure(pg, kubeconfig, work, args.runs, levels, args.no_verify, s3, only,
                                         args.baseline, client, server is not None)
            t = time.perf_counter()
            data = pg.generate(args.size_mb * 1_000_000)
            print(f"generated {data / 1e6:.0f} MB of table data in {time.perf_counter() - t:.0f}s "
                  f"(PostgreSQL {pg.version})", flush=True)
            rows, pairs = measure(pg, kubeconfig, work, args.runs, levels, args.no_verify, s3, only, args.baseline,
                                  client, server is not None)
        finally:
            api.stop()
            if s3 is not None:
                s3.stop()
    report(fixed, fixed_pairs, seed, title="the seed database: fixed costs (start-up, discovery, lookups)")
    report(rows, pairs, data, fixed={r.name: r for r in fixed})
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


def measure(pg: LabPostgres, kubeconfig: Path, work: Path, runs: int, levels: list[str],
            no_verify: bool, s3: LabS3 | None = None, only: set[str] | None = None,
            baseline: Path | None = None, client: Path | None = None,
            own_server: bool = False) -> tuple[list[Row], dict[str, str]]:
    """Rows of timings, and which raw command each coderctl row is compared with."""
    only = only if only is not None else {"direct", "exec"}
    pg_env = {**os.environ, **pg.env()}
    pg_dump = str((client or pg.bindir) / "pg_dump")
    coderctl_direct = "direct" in only and (client is None or own_server)
    coderctl = [sys.executable, "-m", "coderctl", "--kubeconfig", str(kubeconfig), "--timeout", "10"]
    # bytecode cached, as an installed package has it (with PYTHONDONTWRITEBYTECODE, as this machine's shell sets,
    # coderctl would be compiled from source on every run: about 0.07 s that no installed coderctl spends)
    env = {**os.environ, "NO_COLOR": "1", "HOME": str(work), "XDG_DATA_HOME": str(work / "xdg"),
           "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("KUBECONFIG", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if own_server and client is not None:
        env["PATH"] = f"{client}:{env['PATH']}"  # coderctl's local pg_dump for the 17 server
    versions: list[tuple[str, dict[str, str], Path | None]] = [("", env, None)]
    if baseline is not None:
        where = baseline.resolve()
        versions.append((" [baseline]", {**env, "PYTHONPATH": str(where)}, where))
    kubectl = shutil.which("kubectl")
    if kubectl and "exec" not in only:
        kubectl = None
    elif not kubectl:
        print("kubectl not found: skipping the kubectl exec baselines", file=sys.stderr)
    commands: dict[str, Any] = {}
    pairs: dict[str, str] = {}
    for level in levels:
        raw = f"pg_dump -Fc -Z{level} -f FILE"
        flags = ["", "--no-verify"] if no_verify else [""]
        if "direct" in only or s3 is not None:
            commands[raw] = lambda out, z=level: run([pg_dump, "-Fc", f"-Z{z}", "-f", str(out / "raw.dump")],
                                                     env=pg_env)
        for flag, (tag, venv, cwd) in [(f, v) for f in flags for v in versions] if coderctl_direct else []:
            name = f"coderctl backup create --via direct --compress {level}" + (f" {flag}" if flag else "") + tag
            commands[name] = lambda out, z=level, f=flag, e=venv, c=cwd: run(
                [*coderctl, "backup", "create", "--via", "direct", "--compress", str(z), *([f] if f else []),
                 "--database-url", pg.url(), "--output-dir", str(out)], env=e, sample=True, cwd=c)
            pairs[name] = raw
        if kubectl:
            script = f'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dump -Fc -Z{level} -U coder -d coder'
            kraw = f"kubectl exec -- pg_dump -Fc -Z{level} > FILE"
            commands[kraw] = lambda out, s=script: run(
                [kubectl, "--kubeconfig", str(kubeconfig), "-n", "coder", "exec", "coder-coder-postgresql-0", "-c",
                 "postgresql", "--", "sh", "-c", s], stdout_path=out / "kubectl.dump")
        for flag, (tag, venv, cwd) in [(f, v) for f in flags for v in versions] if "exec" in only else []:
            name = f"coderctl backup create --via exec --compress {level}" + (f" {flag}" if flag else "") + tag
            commands[name] = lambda out, z=level, f=flag, e=venv, c=cwd: run(
                [*coderctl, "backup", "create", "--via", "exec", "--compress", str(z), *([f] if f else []),
                 "--output-dir", str(out)], env=e, sample=True, cwd=c)
            if kubectl:
                pairs[name] = f"kubectl exec -- pg_dump -Fc -Z{level} > FILE"
    bucket = s3.bucket() if s3 is not None else ""
    if s3 is not None:
        s3env = {**env, **s3.env()}
        for level in levels:
            raw = f"pg_dump -Fc -Z{level} | boto3 upload_fileobj"
            commands[raw] = lambda out, z=level: run(
                ["sh", "-c", f'"{pg_dump}" -Fc -Z{z} | "{sys.executable}" -c "$0" "$1" "$2"', PLAIN_UPLOAD,
                 bucket, f"{out.name}/plain.dump"], env={**pg_env, **s3.env()})
            name = f"coderctl backup create --via direct --compress {level} --to s3://..."
            commands[name] = lambda out, z=level: run(
                [*coderctl, "backup", "create", "--via", "direct", "--compress", str(z), "--database-url", pg.url(),
                 "--to", f"s3://{bucket}/{out.name}/"], env=s3env, sample=True)
            pairs[name] = raw
    load = os.getloadavg()
    print(f"  load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} before", flush=True)
    run([pg_dump, "-Fc", "-f", str(work / "warmup.dump")], env=pg_env)  # warm the database's cache
    (work / "warmup.dump").unlink()
    rows = {name: Row(name, [], 0, idle=[], cpu=[]) for name in commands}
    for i in range(runs):
        for index, (name, command) in enumerate(commands.items()):
            out = work / f"run{i}-{index}"
            out.mkdir(parents=True)
            timing = command(out)
            seconds, peak = timing.seconds, timing.peak_rss
            row = rows[name]
            row.times.append(seconds)
            assert row.cpu is not None and row.idle is not None
            row.cpu.append(timing.cpu)
            if timing.idle is not None:
                row.idle.append(timing.idle)
            uploaded = s3.root / "data" / bucket / out.name if s3 is not None else out
            row.size = max(p.stat().st_size for d in (out, uploaded) if d.is_dir() for p in d.iterdir()
                           if p.suffix == ".dump")
            if s3 is not None:
                shutil.rmtree(uploaded, ignore_errors=True)
            if peak:
                row.peak_rss = max(row.peak_rss or 0, peak)
            shutil.rmtree(out)
            idle = f", {timing.idle:.0%} of the CPUs idle" if timing.idle is not None else ""
            print(f"  run {i + 1}: {name}: {seconds:.2f}s (cpu {timing.cpu:.2f}s{idle})", flush=True)
    return list(rows.values()), pairs


def report(rows: list[Row], pairs: dict[str, str], data: int, *, title: str = "",
           fixed: dict[str, Row] | None = None) -> None:
    """A table per run. With `fixed` (the same commands on the seed database), also the marginal ratio:
    the raw command's time over coderctl's, each less its own fixed cost (what a larger database tends to)."""
    base = {r.name: r for r in rows}
    load = os.getloadavg()
    print()
    print(f"{title or 'table data'}: {data / 1e6:.0f} MB; best of {len(rows[0].times)} runs (median in brackets); "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")
    print()
    print("| command | seconds | MB/s of table data | archive MB | throughput vs the raw command, same level "
          "| marginal, medians less fixed costs | peak RSS MB | CPU s | CPUs idle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        against = base.get(pairs.get(r.name, ""))
        ratio = (f"{against.seconds / r.seconds:.2f}x ({against.median / r.median:.2f}x) of `{against.name}`"
                 if against else "")
        marginal = ""
        if against and fixed and r.name in fixed and against.name in fixed and r.median > fixed[r.name].median:
            marginal = (f"{(against.median - fixed[against.name].median) / (r.median - fixed[r.name].median):.2f}x")
        rss = f"{r.peak_rss / 1e6:.0f}" if r.peak_rss else ""
        cpu = f"{statistics.median(r.cpu):.2f}" if r.cpu else ""
        idle = f"{statistics.median(r.idle):.0%}" if r.idle else ""
        print(f"| {r.name} | {r.seconds:.2f} ({r.median:.2f}) | {data / r.seconds / 1e6:.1f} | {r.size / 1e6:.1f} | "
              f"{ratio} | {marginal} | {rss} | {cpu} | {idle} |")


if __name__ == "__main__":
    main()
