"""Which kubeconfig files a run uses, read as kubectl reads them, with messages that say what is wrong.

kubectl's rules: `--kubeconfig` or `$KUBECONFIG` may list several files (`:`-separated); missing ones are
skipped and the rest merged, the first file to define a name (context, cluster, user) or `current-context`
winning. It is an error only when none of them exists. Without either, `~/.kube/config`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coderctl.errors import ConfigError


@dataclass
class Kubeconfigs:
    """The existing files of a kubeconfig list, and what kubectl's merge of them says about contexts."""

    paths: list[Path]
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    current_context: str | None = None
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    """Each cluster's entry and the file that defines it (relative paths in it start from that file's directory)."""
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        return os.pathsep.join(str(p) for p in self.paths)

    def context(self, name: str | None) -> tuple[str, dict[str, Any]] | None:
        chosen = name or self.current_context
        if not chosen or chosen not in self.contexts:
            return None
        return chosen, self.contexts[chosen]

    def check_context(self, name: str | None) -> None:
        """An unknown context, named with the ones that exist."""
        if name and name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise ConfigError(f"kubeconfig {self.shown}: no context {name!r} (contexts: {known})")


def listed(kubeconfig: str | None) -> list[str]:
    """The entries of --kubeconfig, else of $KUBECONFIG (empty when neither names a file)."""
    return [p for p in (kubeconfig or os.environ.get("KUBECONFIG") or "").split(os.pathsep) if p]


def read_kubeconfigs(kubeconfig: str | None) -> Kubeconfigs | None:
    """The kubeconfig files to merge, each checked to be a YAML mapping; None when no file is named and
    ~/.kube/config does not exist (in-cluster configuration may apply)."""
    entries = listed(kubeconfig)
    if not entries:
        default = Path("~/.kube/config").expanduser()
        if not default.is_file():
            return None
        entries = [str(default)]
    found = Kubeconfigs(paths=[])
    missing: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            raise ConfigError(f"kubeconfig {path} is a directory; a kubeconfig is a file (or ':'-separated files)")
        if not path.exists():
            missing.append(str(path))
            continue
        _merge(found, path, _load(path))
        found.paths.append(path)
    if not found.paths:
        if len(missing) == 1:
            raise ConfigError(f"kubeconfig {missing[0]} does not exist")
        raise ConfigError(f"none of the kubeconfig files exists: {', '.join(missing)}")
    return found


def _load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"kubeconfig {path} is not valid: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {first}") from None
    if doc is None:
        return {}
    if isinstance(doc, list):
        raise ConfigError(f"kubeconfig {path} is a YAML list; a kubeconfig is a mapping with clusters, contexts "
                          "and users (kind: Config)")
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is a YAML {type(doc).__name__}, not a kubeconfig (a mapping with "
                          "clusters, contexts and users)")
    return doc


def _merge(into: Kubeconfigs, path: Path, doc: dict[str, Any]) -> None:
    contexts = doc.get("contexts") or []
    if not isinstance(contexts, list):
        raise ConfigError(f"kubeconfig {path} is not valid: contexts must be a list")
    for entry in contexts:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            body = entry.get("context")
            into.contexts.setdefault(entry["name"], body if isinstance(body, dict) else {})
    for key, names in (("clusters", into.clusters), ("users", into.users)):
        entries = doc.get(key) or []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                body = entry.get(key[:-1])
                if isinstance(body, dict):
                    names.setdefault(entry["name"], (body, path.absolute()))
    current = doc.get("current-context")
    if into.current_context is None and isinstance(current, str) and current:
        into.current_context = current


def kubeconfig_contexts(kubeconfig: str | None) -> list[str]:
    """The context names (for completion)."""
    found = read_kubeconfigs(kubeconfig)
    return list(found.contexts) if found else []


def context_namespace(kubeconfig: str | None, context: str | None) -> tuple[str, str] | None:
    """(namespace, context name) of the context in use, when it sets one; None when it does not or the
    kubeconfig cannot be read (the Kubernetes client reports that when it is needed)."""
    try:
        found = read_kubeconfigs(kubeconfig)
    except ConfigError:
        return None
    chosen = found.context(context) if found else None
    if chosen is None:
        return None
    namespace = chosen[1].get("namespace")
    return (namespace, chosen[0]) if isinstance(namespace, str) and namespace else None
