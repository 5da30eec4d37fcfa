"""The support bundle is safe to attach to a public issue: no secret value or token of the lab appears in
any member (decompressed), in plain, base64 or percent-encoded form; it opens with `tar -tzf`, is mode
0600, and holds what its README says."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from clirun import run_cli
from lab.deployment import Lab
from test_doctor_scenarios import Ingress

pytestmark = pytest.mark.fake_only


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote(value)}
    for shift in range(3):  # base64 of the value wherever it sits in a longer encoded text
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        skip = (shift * 4 + 2) // 3 + 1 if shift else 0
        forms.add(encoded[skip:].rstrip("=")[:-2] or encoded)
    return {f for f in forms if len(f) >= 6}


def _lab_secrets(lab: Lab, extra: list[str]) -> set[str]:
    values = [*lab.secret_values(), *extra]
    kubeconfig = yaml.safe_load(lab.kubeconfig.read_text())
    values += [u["user"].get("token", "") for u in kubeconfig.get("users", [])]
    for ns, name in [("coder", "coder-database-secrets"), ("infisical-operator", "infisical-service-token")]:
        values += list((lab.kube.secret_data(ns, name) or {}).values())
    return {form for v in values if v for form in _forms(v)}


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_bundle_holds_no_secret_and_opens_with_tar(lab: Lab, tmp_path: Path) -> None:
    ingress = Ingress(lab)
    try:
        lab.scenario("db-wrong-host-crashloop")
        ingress.start(mode="unavailable")
        assert ingress.coder is not None
        token = ingress.coder.session_token
        bundle = tmp_path / "support.tar.gz"
        r = run_cli(*lab.args(), "doctor", *ingress.args(), "--bundle", str(bundle),
                    env={"CODER_SESSION_TOKEN": token})
    finally:
        ingress.stop()
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert r.code == 1 and "Traceback" not in r.stderr, r.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    listed = subprocess.run(["tar", "-tzf", str(bundle)], capture_output=True, text=True, check=True).stdout.split()
    members = _members(bundle)
    assert sorted(listed) == sorted(members)
    names = {n.removeprefix("coderctl-doctor/") for n in members}
    assert {"README.md", "report.json", "evidence.json", "versions.json", "config.json",
            "manifests/coder/secrets.json", "manifests/coder/deployments.json",
            "manifests/infisical-operator/secrets.json"} <= names
    assert any(n.startswith("logs/coder_coder-") and n.endswith(".previous.log") for n in names), names

    secrets = _lab_secrets(lab, [token])
    assert len(secrets) > 10
    for name, data in members.items():
        text = data.decode("utf-8")
        for secret in secrets:
            assert secret not in text, f"a secret value leaked into {name}"
    raw = bundle.read_bytes()  # and the file's own bytes, headers included
    for secret in secrets:
        assert secret.encode() not in raw

    report = json.loads(members["coderctl-doctor/report.json"])
    assert report["findings"][0]["code"] == "DATABASE-HOST-WRONG"
    secrets_doc = json.loads(members["coderctl-doctor/manifests/coder/secrets.json"])
    db = next(s for s in secrets_doc if s["metadata"]["name"] == "coder-database-secrets")
    assert set(db["data"]) == {"postgres-admin-password", "coder-user-password", "database-url"}
    assert "stringData" not in db
    for doc in (json.loads(v) for k, v in members.items() if k.startswith("coderctl-doctor/manifests/")):
        for obj in doc:
            assert "managedFields" not in obj["metadata"]
    readme = members["coderctl-doctor/README.md"].decode()
    assert "DATABASE-HOST-WRONG" in readme and "report.json" in readme


def test_bundle_path_must_be_in_an_existing_directory(lab: Lab, tmp_path: Path) -> None:
    r = run_cli(*lab.args(), "doctor", *Ingress(lab).args(), "--bundle", str(tmp_path / "no" / "b.tar.gz"))
    assert r.code == 2 and "--bundle" in r.stderr
