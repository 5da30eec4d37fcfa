"""Infisical itself, read with the configured credentials or the operator's own service token: does it hold the
managed Secret's values, and is the Secret what the operator last wrote?

Values are compared by SHA-256 digest and never shown. The Secret's `secrets.infisical.com/version` is the
operator's ETag of the data it wrote (facts/infisical.py), so a Secret whose annotation is not the ETag of its
data was changed by something else. When the annotation is the ETag of the Secret with Infisical's current
values, the operator did sync those values and the keys that differ were edited by hand since (a warning);
otherwise the operator has not synced what Infisical holds (a failure).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, found, skip
from coderctl.checks.secrets import INFISICAL_VARS, KEYS, infisical_set
from coderctl.clients.infisical import InfisicalError, InfisicalNotFound, InfisicalTokenRejected
from coderctl.clients.kube import KubeNotFound
from coderctl.context import App
from coderctl.facts.infisical import VERSION_ANNOTATION, operator_etag
from coderctl.problems import Problem, code
from coderctl.snapshot import snapshot

INFISICAL_VALUES_NOT_SYNCED = code(
    "INFISICAL-VALUES-NOT-SYNCED", "fail", "The managed Secret does not hold Infisical's current values",
    meaning="a key of the managed Secret differs from its secret in Infisical (compared by digest) and nothing shows "
            "the operator ever wrote Infisical's current value: the operator has not synced it (its sync fails, it "
            "is down, or it has not reconciled since the change). Coder keeps running with the old value.",
    evidence="the keys that differ with their Infisical names (never values), the Infisical host, environment and "
             "path, and whether the version annotation is the ETag of the Secret's data",
    fix="make the operator sync now: annotate the InfisicalSecret (it reconciles on every update); infisical.sync "
        "says whether it can", check="infisical.values")
INFISICAL_SECRET_EDITED = code(
    "INFISICAL-SECRET-EDITED", "warn", "The managed Secret was changed after the operator's last sync",
    meaning="its secrets.infisical.com/version annotation is not the operator's ETag of its data: something other "
            "than the operator changed it (kubectl edit or apply, a restore). Infisical stays the source of truth: "
            "the operator overwrites the change at its next write, and older operators skip that write while the "
            "annotation matches Infisical's values (Infisical/infisical#2038).",
    evidence="the Secret and its annotation's state, the keys that differ from Infisical (never values)",
    fix="make the change in Infisical instead; to put Infisical's values back, remove the annotation and annotate "
        "the InfisicalSecret", check="infisical.values")
INFISICAL_VALUE_MISSING = code(
    "INFISICAL-VALUE-MISSING", "fail", "A value of the managed Secret is not in Infisical",
    meaning="Infisical has no such secret at the InfisicalSecret's environment and path (or the environment or "
            "folder does not exist there): the next sync drops the key, or the scope is wrong.",
    evidence="the Infisical names asked for, the environment and path, and Infisical's answer",
    fix="set the secret in Infisical, or correct the InfisicalSecret's envSlug and secretsPath",
    check="infisical.values")
INFISICAL_OPERATOR_TOKEN_REJECTED = code(
    "INFISICAL-OPERATOR-TOKEN-REJECTED", "fail", "Infisical rejects the operator's service token",
    meaning="Infisical answered that the token the operator logs in with is expired, revoked or unknown: the "
            "operator cannot sync either, whatever its conditions still say (Infisical/infisical#7179).",
    evidence="the Infisical host, the token's Secret, and Infisical's answer (never the token)",
    fix="create a new service token in Infisical, store it in the Secret the InfisicalSecret names, restart the "
        "operator", check="infisical.values")
INFISICAL_CREDENTIALS_REJECTED = code(
    "INFISICAL-CREDENTIALS-REJECTED", "fail", "Infisical rejects the credentials coderctl was given",
    meaning="the token or universal-auth identity from the flags, environment or profile is expired, revoked, "
            "unknown or without access to the project.",
    evidence="the Infisical host, which setting the credentials came from, and Infisical's answer",
    fix="set valid credentials (INFISICAL_TOKEN, or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and _SECRET), or unset "
        "them to use the operator's service token", check="infisical.values")
INFISICAL_UNREACHABLE = code(
    "INFISICAL-UNREACHABLE", "error", "Infisical could not be read",
    meaning="a request to Infisical failed (refused, timed out, no such host, rate limited or an error answer): "
            "nothing is known about the values it holds.",
    evidence="the Infisical host and the error",
    fix="check the host (infisical_host, else the InfisicalSecret's hostAPI) and the network from where coderctl "
        "runs", check="infisical.values")

RESYNC_ANNOTATION = "coderctl.io/resync-requested"


def _raw_data(secret: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            out[key] = b""
    return out


def _same(a: bytes | None, b: str) -> bool:
    if a is None:
        return False
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b.encode("utf-8")).digest())


def _resync(app: App) -> str:
    return (f"kubectl -n {app.namespace} annotate infisicalsecret {app.settings.infisical_secret} "
            f"{RESYNC_ANNOTATION}=\"$(date +%s)\" --overwrite   # the operator reconciles on every update of it")


def _named(keys: list[str]) -> str:
    return ", ".join(f"{k} ({INFISICAL_VARS[k]})" for k in keys)


def _access_problem(app: App, exc: InfisicalError, host: str, source: str, *, lookup: bool) -> Problem:
    """A failed request as its problem: rejected credentials (an unknown service token answers 404 to the
    project lookup), else Infisical unreachable."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    rejected = isinstance(exc, InfisicalTokenRejected) or exc.status in (401, 403) or (
        lookup and isinstance(exc, InfisicalNotFound))
    evidence = [f"Infisical at {host}, read with {source}: {reason}"]
    if not rejected:
        return INFISICAL_UNREACHABLE(
            f"Infisical at {host} could not be read: {reason}", evidence=evidence,
            fix=[f"check the host: infisical_host (CODERCTL_INFISICAL_HOST), else the InfisicalSecret's hostAPI "
                 f"(kubectl -n {app.namespace} get infisicalsecret {app.settings.infisical_secret} "
                 "-o jsonpath='{.spec.hostAPI}')",
                 f"from where coderctl runs: curl -sS {host.rstrip('/').removesuffix('/api')}/api/status"])
    if source.startswith("the operator's"):
        target = discovery.infisical_target(app)
        ns, name = target.token_secret or ("infisical-operator", "infisical-service-token")
        return INFISICAL_OPERATOR_TOKEN_REJECTED(
            f"Infisical at {host} rejected {source}: {reason}", evidence=evidence,
            fix=[f"create a new service token (Infisical: Project settings → Service tokens, scope "
                 f"{target.environment}:{target.path}), save it in a file named {target.token_key}, then: kubectl -n "
                 f"{ns} create secret generic {name} --from-file=./{target.token_key} --dry-run=client -o yaml | "
                 f"kubectl apply -f - && rm ./{target.token_key}",
                 f"kubectl -n {ns} rollout restart deployment   # the operator logs in again", _resync(app)])
    return INFISICAL_CREDENTIALS_REJECTED(
        f"Infisical at {host} rejected {source}: {reason}", evidence=evidence,
        fix=[f"check {source}: a new token or machine identity from Infisical, or unset it to use the operator's "
             "service token"])


@check("infisical.values", "secrets", "Infisical holds the values the managed Secret has",
       needs=("secret.database",), modules=("requests", "infisical_sdk"))
def infisical_values(app: App) -> Outcome:
    """The three database values in Infisical equal the managed Secret's keys (compared by digest, never shown),
    read with the configured credentials or the operator's service token; the Secret's
    secrets.infisical.com/version is the operator's ETag of its data (else it was changed by hand)."""
    if snapshot(app).infisical_secret is None:
        return skip(f"no InfisicalSecret {app.namespace}/{app.settings.infisical_secret}: nothing syncs the Secret "
                    "from Infisical")
    name = app.settings.database_secret
    try:
        secret = discovery.secret_object(app, name)
    except KubeNotFound:
        raise SkipCheck(f"no Secret {app.namespace}/{name} (secret.database)") from None
    target = discovery.infisical_target(app)
    try:
        source = discovery.infisical_auth_source(app)
        client, project = discovery.infisical_client(app)
    except discovery.InfisicalCredentialsMissing as exc:
        return skip(str(exc))
    except KubeNotFound:
        ns, token = target.token_secret or ("", "")
        return skip(f"the operator's token Secret {ns}/{token} does not exist (infisical.token); set INFISICAL_TOKEN "
                    "or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID/_SECRET to read Infisical")
    except InfisicalError as exc:
        return found([_access_problem(app, exc, target.host, source, lookup=True)], "")
    deadline = time.monotonic() + 2 * app.timeout
    held: dict[str, str] = {}
    absent: dict[str, str] = {}
    for key, var in INFISICAL_VARS.items():
        try:
            held[key] = client.get_secret(var, project_id=project, environment=target.environment,
                                          path=target.path, deadline=deadline).value
        except InfisicalNotFound as exc:
            absent[key] = str(exc).splitlines()[0]
        except InfisicalError as exc:
            return found([_access_problem(app, exc, target.host, source, lookup=False)], "")
    return found(_compare(app, secret, held, absent, target), (
        f"Infisical ({target.host}, {target.environment}:{target.path}) holds the Secret's {', '.join(KEYS)} "
        f"(compared by digest), read with {source}; the Secret is as the operator wrote it"),
        host=target.host, environment=target.environment, path=target.path, credentials=source)


def _compare(app: App, secret: dict[str, Any], held: dict[str, str], absent: dict[str, str],
             target: discovery.InfisicalTarget) -> list[Problem]:
    ns, name = app.namespace, app.settings.database_secret
    where = f"Secret {ns}/{name}"
    scope = f"{target.host} {target.environment}:{target.path}"
    data = _raw_data(secret)
    differ = [k for k in KEYS if k in held and not _same(data.get(k), held[k])]
    annotation = ((secret.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
    edited = annotation != operator_etag(data)
    synced = annotation == operator_etag({**data, **{k: v.encode("utf-8") for k, v in held.items()}})
    problems: list[Problem] = []
    if absent:
        problems.append(INFISICAL_VALUE_MISSING(
            f"Infisical ({scope}) has no {', '.join(INFISICAL_VARS[k] for k in absent)}",
            evidence=[f"{INFISICAL_VARS[k]} in Infisical {scope}: {why}" for k, why in absent.items()],
            fix=[infisical_set(app, *(INFISICAL_VARS[k] for k in absent)) + "   # the operator then syncs it",
                 f"or correct the scope: kubectl -n {ns} get infisicalsecret {app.settings.infisical_secret} -o yaml"
                 "   # secretsScope envSlug and secretsPath"]))
    compared = [f"{where} key {k} differs from {INFISICAL_VARS[k]} in Infisical {scope} (SHA-256 digests compared; "
                "values not shown)" for k in differ]
    if edited:
        state = (f"has no {VERSION_ANNOTATION} annotation: the operator did not write it" if annotation is None
                 else f"annotation {VERSION_ANNOTATION} is not the ETag of its data: it was changed after the "
                      "operator's last sync")
        values, fix = "", [_resync(app)]
        if not differ:
            values = "; its values equal Infisical's"
        elif synced:
            values = f"; {_named(differ)} differ from Infisical, whose values the operator wrote last"
            fix = [infisical_set(app, *(INFISICAL_VARS[k] for k in differ)) + "   # a change belongs in Infisical, "
                   "the source of truth",
                   f"or put Infisical's values back: kubectl -n {ns} annotate secret {name} {VERSION_ANNOTATION}-   # "
                   "the operator skips a Secret whose annotation matches Infisical's values (Infisical/infisical#2038)",
                   *fix]
        problems.append(INFISICAL_SECRET_EDITED(
            f"{where} {state}{values}", evidence=[f"{where} {state}", *(compared if synced else [])], fix=fix))
    if differ and not (edited and synced):
        problems.append(INFISICAL_VALUES_NOT_SYNCED(
            f"{where} does not hold Infisical's current {_named(differ)}: the operator has not synced them",
            evidence=[*compared, f"{where} annotation {VERSION_ANNOTATION}: "
                                 + ("the ETag of its data (the operator wrote it)" if not edited else
                                    "neither the ETag of its data nor of Infisical's values")],
            fix=[_resync(app),
                 f"if it does not sync: kubectl -n {ns} describe infisicalsecret {app.settings.infisical_secret}   "
                 "# infisical.sync shows the operator's conditions",
                 f"Coder reads the new values when it restarts (auto-reload rolls it): kubectl -n {ns} rollout status "
                 f"deployment/{app.settings.coder_deployment}"]))
    return problems
