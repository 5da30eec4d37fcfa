"""The causal rules, as data: which problem or signal codes are a root cause, and which failures follow
from it. docs/doctor.md is generated from this table (scripts/gen_doctor_doc.py).

A rule fires when one of its `causes` is present (a problem of a check at warn or above, or a gathered
signal) and not already explained by a rule that fired before it. The table is read top to bottom: a
cause whose effects look like other faults comes before those faults (a wrong database host before the
crash-loop it causes, before the 503s that crash-loop causes). A cause `CODE@check` counts only when that
check raised it. What a fired rule `explains` (codes, and check ids for checks that failed without a
problem) is folded under it as consequences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    code: str
    severity: str
    title: str
    causes: tuple[str, ...]
    explains: tuple[str, ...]
    chain: str
    meaning: str
    fix: tuple[str, ...]
    supports: tuple[str, ...] = ()
    """Signals that are evidence for this cause but not enough alone (a BackOff event)."""
    claims: tuple[str, ...] = ()
    """Problem codes that, once this rule fired, are this very cause seen by a check in other words (a sync
    failure whose condition says the token expired): their checks count as the cause's, not consequences."""


CODER_DOWN: tuple[str, ...] = (
    "POD-CRASHLOOP", "POD-NOT-READY", "POD-RESTARTS", "POD-NONE", "COD-REPLICAS-UNAVAILABLE", "COD-ROLLOUT-STUCK",
    "EVENT-BACKOFF", "EVENT-PROBE-FAILED", "INGRESS-NO-READY-ENDPOINTS",
)
"""What a Coder that cannot start looks like in the cluster."""

UNREACHABLE: tuple[str, ...] = (
    "HTTP-HEALTHZ-STATUS", "HTTP-HEALTHZ-UNREACHABLE", "HTTP-HEALTHZ-NOT-CODER", "HTTP-HEALTHZ-BODY",
    "HTTP-BUILDINFO-MISSING", "HTTP-BUILDINFO-UNREACHABLE", "HTTP-WILDCARD-NOT-CODER", "HTTP-WILDCARD-UNREACHABLE",
    "DERP-RELAY-NOT-ROUTED", "DERP-RELAY-UNREACHABLE", "DERP-UPGRADE-BLOCKED", "DERP-UPGRADE-FAILED",
    "DERP-WEBSOCKET-BLOCKED", "DERP-WEBSOCKET-FAILED", "DERP-LATENCY-STATUS", "DERP-LATENCY-UNREACHABLE",
    "DERP-UNREACHABLE", "DERP-UPGRADE-DROPPED", "DERP-LOGIN-TIMEOUT", "DERP-LOGIN-FAILED", "DERP-KEYS-NO-CONNECTION",
    "DERP-HOLD-FAILED", "WS-UPGRADE-REFUSED", "WS-OPEN-FAILED", "WS-ECHO-FAILED",
    "CODER-EACS03", "CODER-EACS04", "CODER-EWS01", "CODER-EDERP02",
    "http.healthz", "http.buildinfo", "http.wildcard", "derp.relay", "derp.upgrade", "derp.websocket", "derp.login",
    "derp.keys", "derp.latency-check", "derp.hold", "derp.verdict", "ws.upgrade",
)
"""What every request through the access URL looks like while Coder does not answer behind the ingress
(503 with no ready endpoints), or while nothing can be reached at all."""

DATABASE_DOWN: tuple[str, ...] = (
    "DB-LOGIN-FAILED", "CODER-EDB01", "CODER-EDB02", "LOG-DB-CONNECT-FAILED",
    "database.url", "database.connect",
)

COFFIN = CODER_DOWN + UNREACHABLE
"""Everything that follows once Coder cannot start."""

GROUPS: dict[str, tuple[str, ...]] = {"CODER_DOWN": CODER_DOWN, "UNREACHABLE": UNREACHABLE,
                                      "DATABASE_DOWN": DATABASE_DOWN}
"""Named sets of consequences, so the table (and docs/doctor.md) can say them in one word."""

_ROLL = "kubectl -n {ns} rollout restart deployment/{deployment}"
_INFISICAL_URL = "infisical secrets set CODER_DATABASE_URL=<url> --env {env} --path {path}"

RULES: tuple[Rule, ...] = (
    Rule("DATABASE-HOST-WRONG", "critical", "The database URL names a host that does not exist",
         ("DB-HOST-NO-SERVICE", "DB-HOST-UNRESOLVABLE", "LOG-DB-NO-SUCH-HOST"),
         (*COFFIN, *DATABASE_DOWN),
         "wrong database host → Coder cannot look it up and exits after 30 s of retries → the pod crash-loops → "
         "the Service has no ready endpoints → ingress-nginx answers 503 to every network check",
         "The URL in the managed Secret names a Service that does not exist. With the Bitnami chart under Flux "
         "the Service is `<namespace>-<release>` (coder-coder-postgresql), not coder-postgresql.",
         ("set the host to {pg_service} in Infisical, the source of truth (the operator rewrites the Secret): "
          + _INFISICAL_URL,
          "kubectl -n {ns} annotate infisicalsecret {infisical_secret} coderctl.io/resync-requested=\"$(date +%s)\" "
          "--overwrite", _ROLL)),
    Rule("DATABASE-SSL-MISMATCH", "critical", "The database URL asks for TLS; PostgreSQL has ssl off",
         ("DB-SSLMODE-MISMATCH", "DB-SSL-REJECTED", "LOG-DB-SSL-NOT-ENABLED"),
         (*COFFIN, *DATABASE_DOWN, "DB-SSL-UNKNOWN"),
         "sslmode unset → lib/pq defaults to require → 'pq: SSL is not enabled on the server' → Coder exits → "
         "crash-loop → 503 on every network check",
         "lib/pq (Coder's driver) defaults to sslmode=require; the Bitnami PostgreSQL runs with ssl off.",
         ("add ?sslmode=disable to CODER_DATABASE_URL in Infisical (the source of truth, not the Secret, which the "
          "operator overwrites): " + _INFISICAL_URL, _ROLL)),
    Rule("DATABASE-URL-MALFORMED", "critical", "The database URL does not parse",
         ("DB-URL-UNPARSABLE", "LOG-DB-URL-INVALID-PORT"), (*COFFIN, *DATABASE_DOWN),
         "a special character in the password is not percent-encoded → 'invalid port ... after host' → Coder "
         "exits → crash-loop → 503",
         "A `?`, `#`, `/`, `@` or `:` in the password must be percent-encoded in the URL.",
         ("percent-encode the password (python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.stdin"
          ".read().strip(), safe=\"\"))') and set the URL in Infisical: " + _INFISICAL_URL, _ROLL)),
    Rule("DATABASE-PASSWORD-DRIFT", "critical", "The role's password is not the one in the Secret",
         ("DB-PASSWORD-DRIFT", "LOG-DB-PASSWORD-FAILED"), (*COFFIN, *DATABASE_DOWN),
         "Secret changed after the volume was created → Bitnami never applies it → 'password authentication "
         "failed' → Coder exits after its retries → crash-loop → 503",
         "Bitnami sets passwords only when the data directory is first created (bitnami/charts#4025): a password "
         "changed later in the Secret (by a sync from Infisical) never reaches the role.",
         ("coderctl rotate-secrets   # sets a new password in PostgreSQL, Infisical, the Secret, and rolls Coder",
          "or the one ALTER ROLE that gives the role the Secret's password, typed at a prompt so it reaches "
          "neither argv nor the server log: kubectl -n {ns} exec -it {pg_pod} -c {pg_container} -- psql -U postgres "
          "-c '\\password {db_user}'", _ROLL)),
    Rule("DATABASE-ROLE-LAYOUT-BROKEN", "fail", "Coder's database user does not act as the database's owner",
         ("DB-ROLE-NOT-OWNER",), ("DB-LOGIN-ROLE-NO-SET-ROLE",),
         "the URL's user ({db_user}) is not a member of {db_owner} or has no `SET role = '{db_owner}'` → Coder's "
         "sessions do not act as {db_owner} → objects its migrations create are owned by {db_user} → Coder acting "
         "as {db_owner} cannot alter them, and they break when a rotation retires {db_user}",
         "Under rotate-secrets --strategy alternate the URL's user is a login role (<owner>_a, <owner>_b) that must "
         "be a member of the database's owner with `ALTER ROLE ... SET role = '<owner>'`; someone changed that "
         "(or set the URL's user by hand).",
         ("make {db_user} act as {db_owner} with the statements below, as postgres in database {db_name}; then "
          "REASSIGN OWNED BY {db_user} TO {db_owner} for what it created meanwhile, and restart Coder",),
         claims=("DB-OBJECTS-OWNED-ELSEWHERE",)),
    Rule("DATABASE-LOGIN-ROLE-INCOMPLETE", "warn", "The next alternate rotation would hand Coder a role that does "
         "not act as the owner",
         ("DB-LOGIN-ROLE-NO-SET-ROLE",), (),
         "the alternate strategy's idle login role is not a member of {db_owner} or has no `SET role` → the next "
         "rotation points Coder at it → its verify step finds the sessions do not act as {db_owner} and rolls back",
         "rotate-secrets --strategy alternate sets both login roles up on its first run only; one of them was "
         "changed since (or made by hand).",
         ("give the idle login role the statements below, as postgres in database {db_name}; "
          "docs/rotate-secrets.md, 'Strategy alternate'",)),
    Rule("POSTGRES-VOLUME-PENDING", "critical", "PostgreSQL's volume is not bound",
         ("PG-PVC-NOT-BOUND", "PG-PVC-MISSING"),
         (*COFFIN, *DATABASE_DOWN, "PG-NOT-READY", "EVENT-PROVISIONING-FAILED", "EVENT-FAILED-SCHEDULING",
          "postgres.statefulset"),
         "volume claim Pending → the PostgreSQL pod cannot be scheduled → no database → Coder cannot start",
         "The storage class's provisioner did not create a volume (wrong class, provisioner down, no capacity).",
         ("kubectl -n {ns} describe pvc {pvc}",
          "kubectl get storageclass {storage_class} && kubectl -n longhorn-system get pods   # is the provisioner up?",
          "fix the class or the provisioner; the claim binds by itself once a volume can be made"),
         supports=("EVENT-PROVISIONING-FAILED",)),
    Rule("POSTGRES-DOWN", "critical", "PostgreSQL is not running",
         ("PG-STATEFULSET-MISSING", "PG-SCALED-ZERO", "PG-NOT-READY", "LOG-PG-DISK-FULL"),
         (*COFFIN, *DATABASE_DOWN, "postgres.pvc"),
         "no ready PostgreSQL pod → Coder cannot connect → Coder crash-loops → 503",
         "The PostgreSQL StatefulSet has no ready pod.",
         ("kubectl -n {ns} describe pod {pg_pod}", "kubectl -n {ns} logs {pg_pod} -c {pg_container} --previous",
          "kubectl -n {ns} scale statefulset {pg_statefulset} --replicas=1   # when it was scaled to 0")),
    Rule("CODER-OOMKILLED", "critical", "Coder is killed for its memory and crash-loops",
         ("POD-OOMKILLED",), COFFIN,
         "memory limit too low → the kernel kills Coder (exit 137) → crash-loop → no ready endpoints → 503",
         "The Coder container exceeds its memory limit (exit code 137, OOMKilled).",
         ("kubectl -n {ns} set resources deployment/{deployment} -c {container} --limits=memory={memory_limit}   "
          "# at least the expected limit; more if usage is higher",
          "observed usage when it was killed: {observed_memory}",
          "set resources.limits.memory in the HelmRelease values too, or Flux reverts it"),
         supports=("EVENT-OOM",)),
    Rule("CODER-IMAGE-PULL", "critical", "Coder's image cannot be pulled",
         ("POD-IMAGE-PULL", "EVENT-IMAGE-PULL"), (*COFFIN, "EVENT-FAILED"),
         "image not pullable → the pod never starts → no ready endpoints → 503",
         "The image name or tag is wrong, the registry is unreachable, or its credentials are missing.",
         ("kubectl -n {ns} describe pod -l app.kubernetes.io/name=coder | grep -A3 Failed",
          "fix the image in the HelmRelease values (ghcr.io/coder/coder:{expected_version})")),
    Rule("CODER-SCALED-ZERO", "critical", "Coder is scaled to zero",
         ("COD-SCALED-ZERO", "COD-DEPLOYMENT-MISSING"), (*COFFIN, *DATABASE_DOWN),
         "no Coder pod → no endpoints → 503 on every network check",
         "The Coder Deployment has no replica (scaled to 0, e.g. left so by an interrupted restore) or is gone.",
         ("kubectl -n {ns} scale deployment/{deployment} --replicas=1",
          "flux reconcile helmrelease {deployment} -n {ns}   # when the Deployment is gone")),
    Rule("CODER-NOT-RUNNING", "critical", "Coder does not start",
         ("POD-CRASHLOOP", "POD-NOT-READY", "POD-NONE", "COD-REPLICAS-UNAVAILABLE", "COD-ROLLOUT-STUCK",
          "INGRESS-NO-READY-ENDPOINTS"), COFFIN,
         "Coder not ready → no ready endpoints → ingress-nginx answers 503 to every network check",
         "Coder's pods are not ready for a reason none of the known signatures names: its logs tell.",
         ("kubectl -n {ns} logs deployment/{deployment} -c {container} --previous --tail=50",
          "kubectl -n {ns} describe pod -l app.kubernetes.io/name=coder"),
         supports=("EVENT-BACKOFF", "EVENT-PROBE-FAILED")),
    Rule("CERTIFICATE-EXPIRED", "critical", "The access URL's certificate has expired",
         ("TLS-CERT-EXPIRED",), (*UNREACHABLE, "TLS-CHAIN-UNTRUSTED", "tls.access-url", "tls.wildcard"),
         "expired certificate → every TLS client refuses the access URL and the wildcard → every network check "
         "fails",
         "The certificate served for the access host (and the wildcard) is past its notAfter.",
         ("kubectl get certificate -A   # cert-manager: is renewal failing? kubectl describe certificate ...",
          "cmctl renew -n {ns} <certificate>   # or renew it in Cloudflare / your CA and update the TLS Secret")),
    Rule("CERTIFICATE-EXPIRING", "fail", "The access URL's certificate expires soon",
         ("TLS-CERT-EXPIRES-SOON", "TLS-CERT-EXPIRING"), ("tls.access-url", "tls.wildcard"),
         "renewal is not happening → in a few days every TLS client refuses the access URL",
         "The certificate ends within the warning window: its automatic renewal is failing or missing.",
         ("kubectl get certificate -A; kubectl describe certificaterequest -A   # cert-manager: why renewal fails",
          "renew it now (cmctl renew -n {ns} <certificate>, or in Cloudflare / your CA) and update the TLS "
          "Secret")),
    Rule("ACCESS-HOST-NOT-ROUTED", "critical", "The ingress does not route the access host to Coder",
         ("INGRESS-DEFAULT-BACKEND",), UNREACHABLE,
         "no Ingress rule for the access host → ingress-nginx's default backend answers 404 → every request "
         "through the access URL misses Coder",
         "Requests for the access host reach ingress-nginx but no Ingress rule of its class serves that host.",
         ("kubectl -n {ns} get ingress {ingress} -o jsonpath='{{.spec.ingressClassName}} {{.spec.rules[*].host}}'"
          "   # must be nginx and {access_host}",
          "set coder.ingress.host (and the class) in the HelmRelease values, then flux reconcile helmrelease "
          "{deployment} -n {ns}"),
         claims=("COD-ACCESS-HOST-NO-INGRESS", "ING-NO-RULE@ingress.access", "ING-MISSING@ingress.access",
                 "ING-WRONG-CLASS@ingress.access")),
    Rule("LOADBALANCER-PENDING", "fail", "A LoadBalancer Service has no address",
         ("SVC-LB-PENDING", "EVENT-LB-ALLOCATION-FAILED"), (),
         "MetalLB gave no address → EXTERNAL-IP <pending> → nothing reaches the Service from outside",
         "MetalLB did not assign an address: the pool is exhausted, the requested IP is taken, or MetalLB is down.",
         ("kubectl -n {ns} describe service {coder_service}   # MetalLB's AllocationFailed event says why",
          "kubectl -n {metallb_ns} get ipaddresspools -o yaml; kubectl -n {metallb_ns} get pods")),
    Rule("LOADBALANCER-OUTSIDE-POOL", "fail", "A LoadBalancer address is outside the MetalLB pool",
         ("SVC-LB-OUTSIDE-POOL",), ("SVC-LB-UNEXPECTED-IP",),
         "address outside the pool → not announced by MetalLB → unreachable from the network",
         "The Service's address is not in the configured MetalLB pool ({metallb_pool}).",
         ("kubectl -n {ns} annotate service {coder_service} metallb.universe.tf/loadBalancerIPs={expected_ip} "
          "--overwrite",)),
    Rule("ACCESS-URL-MISMATCH", "fail", "The access URL is not what the Ingress serves",
         ("COD-ACCESS-HOST-NO-INGRESS", "COD-ACCESS-URL-NOT-HTTPS", "HTTP-ACCESS-URL-MISMATCH",
          "ING-NO-RULE@ingress.access"),
         ("ING-NO-RULE", "CODER-EACS02", "ingress.access"),
         "CODER_ACCESS_URL names a host the Ingress does not serve (or http behind TLS) → links, OAuth callbacks "
         "and agents use a URL that does not reach Coder",
         "CODER_ACCESS_URL and the Ingress host (and scheme) must agree.",
         ("set CODER_ACCESS_URL to https://{access_host} in the HelmRelease values (coder.env), then "
          "flux reconcile helmrelease {deployment} -n {ns}",)),
    Rule("INFISICAL-TOKEN-EXPIRED", "fail", "The Infisical operator's token expired or was revoked",
         ("COND-INFISICAL-TOKEN-EXPIRED", "COND-INFISICAL-TOKEN-REVOKED", "INFISICAL-TOKEN-NOT-LOADED",
          "INFISICAL-CREDENTIALS-MISSING", "INFISICAL-CREDENTIALS-INCOMPLETE", "INFISICAL-NO-CREDENTIALS-REF",
          "INFISICAL-OPERATOR-TOKEN-REJECTED"),
         ("INFISICAL-SYNC-FAILING", "INFISICAL-NOT-RECONCILED", "INFISICAL-VALUES-NOT-SYNCED", "infisical.sync"),
         "token expired or missing → the operator cannot log in → the managed Secret is no longer synced → "
         "changes made in Infisical never reach Coder",
         "The token in {token_secret_ns}/{token_secret} reached its max TTL, was revoked, or is missing; older "
         "operators never log in again (Infisical/infisical#7179).",
         ("create a new service token (Infisical: Project settings → Service tokens, scope {env}:{path}) and save "
          "it in a file named infisicalToken (the key the operator reads), then:",
          "kubectl -n {token_secret_ns} create secret generic {token_secret} --from-file=./infisicalToken "
          "--dry-run=client -o yaml | kubectl apply -f - && rm ./infisicalToken",
          "kubectl -n {token_secret_ns} rollout restart deployment   # the operator logs in again",
          "kubectl -n {ns} annotate infisicalsecret {infisical_secret} coderctl.io/resync-requested=\"$(date +%s)\" "
          "--overwrite"),
         claims=("INFISICAL-SYNC-FAILING",)),
    Rule("INFISICAL-SYNC-BROKEN", "fail", "The Infisical operator cannot sync the managed Secret",
         ("INFISICAL-SYNC-FAILING", "INFISICAL-AUTH-UNKNOWN"),
         ("INFISICAL-NOT-RECONCILED", "INFISICAL-VALUES-NOT-SYNCED", "infisical.sync"),
         "sync failing → the managed Secret keeps old values → a change made in Infisical never reaches Coder",
         "The operator reaches Infisical but the sync fails: wrong hostAPI, project or environment slug, path, "
         "or a token without access (Infisical/infisical#725).",
         ("kubectl -n {ns} get infisicalsecret {infisical_secret} -o yaml   # hostAPI, envSlug {env}, secretsPath "
          "{path}",
          "if the token is the cause: renew {token_secret_ns}/{token_secret} (see INFISICAL-TOKEN-EXPIRED)")),
    Rule("WEBSOCKET-BLOCKED", "fail", "A proxy strips WebSocket upgrades",
         ("WS-UPGRADE-REFUSED", "DERP-UPGRADE-DROPPED", "DERP-NO-WEBSOCKET", "CODER-EWS01", "LOG-WS-UPGRADE-STRIPPED"),
         ("DERP-UPGRADE-BLOCKED", "DERP-WEBSOCKET-BLOCKED", "DERP-UNREACHABLE", "DERP-LOGIN-FAILED",
          "DERP-KEYS-NO-CONNECTION", "DERP-HOLD-FAILED", "CODER-EDERP01", "CODER-EDERP02"),
         "the proxy drops Upgrade/Connection → no WebSocket (terminals, agents) and no DERP over either transport "
         "→ workspaces cannot be reached",
         "Every hop must pass `Upgrade` and `Connection: upgrade` with HTTP/1.1.",
         ("kubectl -n {ingress_ns} get configmap {controller} -o yaml   # http-snippet needs the "
          "$connection_upgrade map; do not set proxy-http-version 1.0",
          "on any proxy in front (nginx, HAProxy): proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; "
          "proxy_set_header Connection $connection_upgrade;")),
    Rule("DERP-UPGRADE-STRIPPED", "warn", "Upgrade: DERP is blocked; only DERP over WebSocket works",
         ("DERP-UPGRADE-BLOCKED", "DERP-WEBSOCKET-ONLY", "CODER-EDERP01", "ING-UPGRADE-MAP-NO-DERP"),
         ("derp.verdict", "derp.upgrade"),
         "a proxy passes only `Upgrade: websocket` → clients fall back to DERP over WebSocket (slower, EDERP01)",
         "Something on the way (a Cloudflare tunnel, cloudflared#990, or a proxy's upgrade map) passes only "
         "WebSocket upgrades.",
         ("behind a Cloudflare tunnel: set CODER_DERP_FORCE_WEBSOCKETS=true in the HelmRelease values (coder.env), "
          "then flux reconcile helmrelease {deployment} -n {ns}",
          "otherwise let the proxy pass `Upgrade: derp` (ingress-nginx: the $connection_upgrade map in ConfigMap "
          "{ingress_ns}/{controller})")),
    Rule("PROXY-TIMEOUT-SHORT", "warn", "The ingress cuts idle relay and WebSocket connections",
         ("ING-TIMEOUT-SHORT", "ING-TIMEOUT-UNSET", "DERP-IDLE-CLOSED"), ("ingress.timeouts",),
         "proxy-read-timeout 60 s → idle DERP and WebSocket connections are closed between keepalives → "
         "terminals and agents disconnect every minute",
         "ingress-nginx's default proxy-read-timeout is 60 s; DERP keepalives come every 60-65 s.",
         ("kubectl -n {ns} annotate ingress {ingress} nginx.ingress.kubernetes.io/proxy-read-timeout=3600 "
          "nginx.ingress.kubernetes.io/proxy-send-timeout=3600 --overwrite",
          "and the same in the HelmRelease values (coder.ingress.annotations), or Flux reverts it")),
    Rule("WILDCARD-TOO-DEEP", "fail", "The wildcard is deeper than Cloudflare's Universal SSL covers",
         ("TLS-CLOUDFLARE-ONE-LEVEL",), ("TLS-NAME-MISMATCH", "HTTP-WILDCARD-UNREACHABLE", "tls.wildcard"),
         "wildcard two levels below the zone → Universal SSL has no certificate for it → "
         "ERR_SSL_VERSION_OR_CIPHER_MISMATCH on every workspace app",
         "Cloudflare's Universal SSL covers one level of subdomain only (cloudflared#687).",
         ("use a one-level wildcard (*.<zone>) for CODER_WILDCARD_ACCESS_URL, or buy an advanced certificate",)),
    Rule("WILDCARD-MISSING", "fail", "Workspace apps on the wildcard domain do not reach Coder",
         ("DNS-WILDCARD-MISSING", "ING-MISSING@ingress.wildcard", "ING-NO-RULE@ingress.wildcard",
          "COD-WILDCARD-URL-UNSET", "COD-WILDCARD-NO-INGRESS", "HTTP-WILDCARD-NOT-CODER", "HTTP-WILDCARD-UNREACHABLE",
          "HTTP-WILDCARD-URL-UNSET"),
         ("HTTP-WILDCARD-NOT-CODER", "HTTP-WILDCARD-UNREACHABLE", "HTTP-WILDCARD-URL-UNSET", "DNS-WILDCARD-MISSING",
          "DNS-NO-ANSWER", "TLS-NAME-MISMATCH", "ING-MISSING", "http.wildcard", "tls.wildcard", "dns.wildcard",
          "dns.consistency", "ingress.wildcard", "ingress.timeouts",
          "coder.env"),
         "no wildcard record, Ingress or setting → a workspace app's host does not reach Coder (default "
         "backend 404, or no such host)",
         "The wildcard needs all three: the DNS record, the wildcard Ingress, and CODER_WILDCARD_ACCESS_URL.",
         ("kubectl -n {ns} get ingress {wildcard_ingress} -o yaml   # restore it from Git: flux reconcile "
          "kustomization -n {flux_ns} <name>",
          "dig +short '*.{wildcard_domain}'   # the DNS wildcard (Cloudflare: a CNAME to the tunnel)")),
    Rule("FLUX-RELEASE-FAILED", "fail", "Flux's HelmRelease is not Ready: the running config is stale",
         ("FLUX-NOT-READY", "FLUX-SUSPENDED", "COND-FLUX-UPGRADE-FAILED"),
         ("COD-VERSION-UNEXPECTED", "HTTP-VERSION-MISMATCH", "COD-RESOURCE-DIFFERS"),
         "HelmRelease failed or suspended → Flux does not apply the values in Git → the cluster runs the "
         "previous release (an older version, old settings)",
         "A failed install/upgrade (retries exhausted) or a suspended HelmRelease leaves what runs behind Git.",
         ("kubectl -n {ns} describe helmrelease {deployment}   # the failure's message",
          "flux resume helmrelease {deployment} -n {ns}   # when suspended",
          "flux reconcile helmrelease {deployment} -n {ns} --with-source --force   # after fixing the values")),
    Rule("CODER-VERSION-UNEXPECTED", "warn", "Coder runs another version than expected",
         ("COD-VERSION-UNEXPECTED", "HTTP-VERSION-MISMATCH"), (),
         "another image tag than expected → behaviour and schema differ from what the runbook assumes",
         "The image (or the version the server reports) is not the expected one ({expected_version}).",
         ("set image.tag {expected_version} in the HelmRelease values, then flux reconcile helmrelease {deployment} "
          "-n {ns}",)),
    Rule("CLUSTER-ACCESS-DENIED", "error", "coderctl may not read part of the cluster",
         ("KUBE-FORBIDDEN",), (),
         "RBAC forbids a read → the checks that need it cannot look",
         "The kubeconfig's identity lacks a get/list permission; what the checks could not read is unknown.",
         ("kubectl auth can-i --list -n {ns}   # grant get/list on what the problem names (docs/rbac.md)",)),
)

RULES_BY_CODE: dict[str, Rule] = {r.code: r for r in RULES}
