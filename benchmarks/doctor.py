"""`coderctl doctor` next to `coderctl verify` on the same lab, same run: healthy, then a failing scenario.

    .venv/bin/python benchmarks/doctor.py [--runs N] [--scenario NAME]

doctor runs every verify check and gathers its evidence (events, logs, conditions, endpoints) at the same
time under the same deadline, then applies the causal table; the target is doctor <= verify + 1 s. Each run
is a fresh `python -m coderctl` process, as an operator would start it, alternating the two commands so a
busy machine slows both alike. The failing scenario is the whole chain of a wrong database host (a
crash-looping Coder, and an ingress answering 503 to everything).
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


def _time(argv: list[str]) -> tuple[float, float, dict[str, object]]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    doc = json.loads(proc.stdout)
    return wall, float(doc["duration_s"]), doc


def _compare(label: str, base: list[str], runs: int) -> None:
    verify = [sys.executable, "-m", "coderctl", *base]
    at = verify.index("verify")
    doctor = [*verify[:at], "doctor", *verify[at + 1:]]
    rows: list[tuple[float, float, float, float]] = []
    findings: list[str] = []
    for _ in range(runs):
        v_wall, v_run, _ = _time(verify)
        d_wall, d_run, doc = _time(doctor)
        rows.append((v_wall, d_wall, v_run, d_run))
        findings = [f["code"] for f in doc["findings"]]  # type: ignore[attr-defined]
    print(f"\n{label}: doctor's findings {findings or 'none'}")
    print(f"{'verify process s':>17} {'doctor process s':>17} {'verify run s':>13} {'doctor run s':>13} {'delta s':>8}")
    for v_wall, d_wall, v_run, d_run in rows:
        print(f"{v_wall:>17.3f} {d_wall:>17.3f} {v_run:>13.3f} {d_run:>13.3f} {d_wall - v_wall:>8.3f}")
    v_med = statistics.median(r[0] for r in rows)
    d_med = statistics.median(r[1] for r in rows)
    verdict = "within" if d_med <= v_med + 1 else "OVER"
    print(f"median: verify {v_med:.3f} s, doctor {d_med:.3f} s, delta {d_med - v_med:+.3f} s ({verdict} the "
          "verify + 1 s target)")


def main() -> None:
    from lab.coder import FakeCoder
    from lab.deployment import standalone_lab
    from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN, LabNginx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="db-wrong-host-crashloop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, standalone_lab(Path(tmp)) as lab:
        _compare("healthy lab", lab.verify(), args.runs)
        lab.scenario(args.scenario)
        coder = FakeCoder().start()
        coder.mode = "unavailable"
        cert = lab.ingress.ca.issue([ACCESS_HOST, f"*.{WILDCARD_DOMAIN}"], name="bench-503")
        nginx = LabNginx(coder.port, cert=cert).start()
        try:
            port = nginx.port
            net = ["--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1", "--resolve", f"*.{WILDCARD_DOMAIN}:{port}:127.0.0.1",
                   "--ca-file", str(lab.ingress.ca.ca_file), "--nameserver", lab.ingress.dns.nameserver,
                   "--access-url", f"https://{ACCESS_HOST}:{port}"]
            _compare(f"scenario {args.scenario} (ingress answering 503)", [*lab.args("-o", "json"), "verify", *net],
                     args.runs)
        finally:
            nginx.stop()
            coder.stop()


if __name__ == "__main__":
    main()
