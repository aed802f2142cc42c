"""Discovery as the real server answers it in JSON: /api, /api/v1, /apis, /apis/{group}, and
/apis/{group}/{version} (APIVersions, APIResourceList, APIGroupList, APIGroup)."""

from __future__ import annotations

from collections.abc import Iterable

from tests.fakes.kubeapi.kinds import Obj, _Kind

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SHORT_NAMES = {"services": ["svc"], "nodes": ["no"], "namespaces": ["ns"], "configmaps": ["cm"],
                "events": ["ev"]}


def _resources(kinds: Iterable[_Kind]) -> list[Obj]:
    listed: list[Obj] = []
    for kind in sorted(kinds, key=lambda k: k.plural):
        entry: Obj = {"name": kind.plural, "singularName": kind.singular or kind.kind.lower(),
                      "namespaced": kind.namespaced, "kind": kind.kind, "verbs": list(_VERBS)}
        short = list(kind.short_names) or _SHORT_NAMES.get(kind.plural, [])
        if short:
            entry["shortNames"] = short
        if kind.custom:
            entry["categories"] = []  # MetalLB's CRDs name none; the server sends the field anyway
        listed.append(entry)
        if kind.status:
            listed.append({"name": f"{kind.plural}/status", "singularName": "", "namespaced": kind.namespaced,
                           "kind": kind.kind, "verbs": ["get", "patch", "update"]})
    return listed


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def discover(path: str, kinds: Iterable[_Kind]) -> Obj | None:
    """The discovery document at `path`, or None when `path` is not a discovery path."""
    parts = [p for p in path.split("/") if p]
    kinds = list(kinds)
    groups: dict[str, list[str]] = {}
    for kind in kinds:
        if kind.group and kind.version not in groups.setdefault(kind.group, []):
            groups[kind.group].append(kind.version)
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
    if parts == ["api", "v1"]:
        return {"kind": "APIResourceList", "groupVersion": "v1",
                "resources": _resources(k for k in kinds if not k.group)}
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [_group(name, versions) for name, versions in groups.items()]}
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], groups[parts[1]])}
    if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{parts[1]}/{parts[2]}",
                "resources": _resources(k for k in kinds if (k.group, k.version) == (parts[1], parts[2]))}
    return None
