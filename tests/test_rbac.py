"""docs/rbac.md's Roles are enough for verify, and nothing less works: the fake API enforces them."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from clirun import ROOT, run_cli
from lab.deployment import Lab

pytestmark = pytest.mark.fake_only


def documented_roles() -> list[dict]:  # type: ignore[type-arg]
    text = (ROOT / "docs" / "rbac.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "docs/rbac.md has no yaml block"
    return [d for d in yaml.safe_load_all(block.group(1)) if d]


def test_verify_works_with_the_documented_roles(lab: Lab) -> None:
    lab.kube.grant_only(documented_roles())
    r = run_cli(*lab.verify())
    doc = json.loads(r.stdout)
    bad = {c["id"]: c["detail"] for c in doc["checks"] if c["status"] in ("fail", "error")}
    assert bad == {}
    assert r.code == 0


def test_a_missing_permission_is_an_error_naming_it(lab: Lab) -> None:
    roles = documented_roles()
    for role in roles:
        if role.get("kind") == "Role" and role["metadata"]["namespace"] == "metallb-system":
            role["rules"] = []
    lab.kube.grant_only(roles)
    r = run_cli(*lab.verify("--only", "cluster"))
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    # without MetalLB's pools the services are still checked, without the pool comparison
    assert checks["service.coder"]["status"] == "ok"
    lab.kube.grant_only([role for role in roles if role["metadata"]["namespace"] != "flux-system"])
    r = run_cli(*lab.verify("--only", "cluster"))
    flux = {c["id"]: c for c in json.loads(r.stdout)["checks"]}["flux.ready"]
    assert flux["status"] == "error"
    assert "list" in flux["detail"] and "kustomizations" in flux["detail"] and "docs/rbac.md" in flux["remediation"]
    assert [p["code"] for p in flux["problems"]] == ["KUBE-FORBIDDEN"]
    problem = flux["problems"][0]
    assert problem["severity"] == "error"
    assert any("list kustomizations" in e and "flux-system" in e for e in problem["evidence"]), problem
    assert "kubectl auth can-i list kustomizations -n flux-system" in problem["fix"]
