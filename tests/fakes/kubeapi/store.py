"""The store: objects, the one global resourceVersion, the watch history, defaulting and lists."""

from __future__ import annotations

import base64
import copy
import json
import random
import string
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from tests.fakes.kubeapi.crds import kind_from_crd, prepare_custom, validate_custom
from tests.fakes.kubeapi.errors import (
    _ApiError,
    _bad_request,
    _invalid,
    _kind_details,
)
from tests.fakes.kubeapi.kinds import (
    _NAMESPACE,
    KINDS,
    Obj,
    _Kind,
)
from tests.fakes.kubeapi.selectors import _field_selector, _label_selector
from tests.fakes.kubeapi.validation import _VALIDATORS, _validate_meta
from tests.fakes.kubeapi.workloads import default_workload


@dataclass(frozen=True)
class _Change:
    rv: int
    kind: _Kind
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None



def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def _typed(kind: _Kind, obj: Obj) -> Obj:
    return {"kind": kind.kind, "apiVersion": kind.api_version, **{k: v for k, v in obj.items()
                                                                  if k not in ("kind", "apiVersion")}}


def _without_rv(obj: Obj) -> Obj:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return out


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _strip_meta(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "kind", "apiVersion")}


def _spec_of(kind: _Kind, obj: Obj) -> Obj:
    """What moves metadata.generation: all but metadata, and but status where it has its own endpoint."""
    return {k: v for k, v in _strip_meta(obj).items() if not (kind.status and k == "status")}


class _Store:
    """Objects, the global resourceVersion and the watch history (internals: call with the lock held)."""

    def __init__(self, history: int, namespaces: Iterable[str], crds: Iterable[Obj] = ()) -> None:
        self.history_limit = history
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[_Kind, dict[str, Obj]] = {k: {} for k in KINDS}
        self._kinds: dict[str, _Kind] = {k.kind: k for k in KINDS}
        for crd in crds:
            self.add_crd(crd)
        self._history: list[_Change] = []
        self._rv = 1000
        self._compacted = self._rv  # watching from a resourceVersion below this is 410 Gone
        self._next_ip = 10
        self._next_node_port = 30000
        for name in namespaces:
            self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def add_crd(self, crd: Obj) -> None:
        """Serve the custom resources a CustomResourceDefinition defines (its storage version)."""
        kind = kind_from_crd(crd)
        with self._lock:
            if kind.kind in self._kinds:
                raise ValueError(f"FakeKube already serves {kind.kind}")
            self._kinds[kind.kind] = kind
            self._objects[kind] = {}

    def _route_of(self, group: str, version: str, plural: str) -> _Kind | None:
        return next((k for k in self._kinds.values()
                     if (k.group, k.version, k.plural) == (group, version, plural)), None)

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out."""
        with self._lock:
            return str(self._rv)

    def compact(self) -> str:
        """Forget the whole watch history, as etcd compaction does; returns the compaction revision."""
        with self._changed:
            self._history.clear()
            self._compacted = self._rv
            self._changed.notify_all()
            return str(self._rv)

    def put_object(self, obj: Obj) -> Obj:
        """Create or overwrite an object directly (status included), emitting the watch event.
        Defaults apply; an invalid object raises ValueError. A missing namespace is created."""
        kind = self._kind_of(obj)
        body = copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        with self._changed:
            if kind.namespaced:
                meta.setdefault("namespace", "default")
                if meta["namespace"] not in self._objects[_NAMESPACE]:
                    self.put_object({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": meta["namespace"]}})
            else:
                meta.pop("namespace", None)
            old = self._objects[kind].get(_key(body)) if meta.get("name") else None
            meta.pop("resourceVersion", None)
            try:
                stored = self._write(kind, body, old, keep_status=True)
            except _ApiError as e:
                raise ValueError(e.status["message"]) from None
            return _typed(kind, copy.deepcopy(stored))

    def get_object(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The stored object (a copy, with kind and apiVersion), or None."""
        k = self._kinds[kind]
        key = f"{namespace or 'default'}/{name}" if k.namespaced else name
        with self._lock:
            found = self._objects[k].get(key)
            return _typed(k, copy.deepcopy(found)) if found else None

    def list_objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Stored objects of `kind` (in `namespace`, or all), ordered as the server lists them."""
        k = self._kinds[kind]
        with self._lock:
            return [_typed(k, copy.deepcopy(o)) for key, o in sorted(self._objects[k].items())
                    if namespace is None or o["metadata"].get("namespace") == namespace]

    def delete_object(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete directly, emitting the watch event; False when there was nothing to delete."""
        k = self._kinds[kind]
        key = f"{namespace or 'default'}/{name}" if k.namespaced else name
        with self._changed:
            if key not in self._objects[k]:
                return False
            self._remove(k, key)
            return True

    # -- store internals (call with the lock held) -----------------------------------------

    def _kind_of(self, obj: Obj) -> _Kind:
        kind = self._kinds.get(str(obj.get("kind")))
        if kind is None or obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise ValueError(f"FakeKube does not serve {obj.get('apiVersion')}/{obj.get('kind')}")
        return kind

    def _record(self, kind: _Kind, type_: str, obj: Obj, prev: Obj | None) -> None:
        self._history.append(_Change(self._rv, kind, type_, copy.deepcopy(obj), prev))
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit]
            del self._history[: len(dropped)]
            self._compacted = dropped[-1].rv
        self._changed.notify_all()

    def _write(self, kind: _Kind, obj: Obj, old: Obj | None, *, keep_status: bool = False,
               dry_run: bool = False) -> Obj:
        """Default, validate and store `obj` (a create when `old` is None); returns the stored object."""
        meta = obj["metadata"]
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        if old is None:
            if not meta.get("name") and meta.get("generateName"):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                meta["name"] = meta["generateName"] + suffix
            for system in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(system, None)
            if kind.kind == "Service" and not keep_status:
                obj["status"] = {}
            elif kind.custom and kind.status and not keep_status:
                obj.pop("status", None)  # create cannot set the status of a custom resource
        else:
            for system in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if system in old["metadata"]:
                    meta[system] = old["metadata"][system]
                else:
                    meta.pop(system, None)
        self._default(kind, obj, old)
        if kind.custom:
            prepare_custom(kind, obj)
        errors = _validate_meta(kind, obj)
        if kind.custom:
            errors += validate_custom(kind, obj)
        elif kind.kind in _VALIDATORS:
            errors += _VALIDATORS[kind.kind](obj, old)
        if errors:
            raise _invalid(kind.qualified_kind, meta.get("name") or "", errors,
                           _kind_details(kind, meta.get("name") or ""))
        if old is not None:
            if kind.generation and _spec_of(kind, obj) != _spec_of(kind, old):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            if _without_rv(_strip_type(obj)) == _without_rv(old):
                return old  # nothing changed: etcd is not written, no resourceVersion, no event
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if kind.generation:
                meta["generation"] = 1
        if dry_run:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"] if old else ""
            return obj
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        stored = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        self._objects[kind][_key(obj)] = stored
        self._record(kind, "ADDED" if old is None else "MODIFIED", stored, old)
        return stored

    def _remove(self, kind: _Kind, key: str) -> Obj:
        old = self._objects[kind][key]
        if kind is _NAMESPACE:  # what the namespace controller does, here before the namespace goes
            terminating = copy.deepcopy(old)
            terminating["metadata"]["deletionTimestamp"] = _now()
            terminating["status"] = {"phase": "Terminating"}
            self._rv += 1
            terminating["metadata"]["resourceVersion"] = str(self._rv)
            self._objects[kind][key] = terminating
            self._record(kind, "MODIFIED", terminating, old)
            for other in self._kinds.values():
                if other.namespaced:
                    for k in [k for k in self._objects[other] if k.startswith(key + "/")]:
                        self._remove(other, k)
            old = terminating
        del self._objects[kind][key]
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._record(kind, "DELETED", gone, old)
        return old

    def _default(self, kind: _Kind, obj: Obj, old: Obj | None) -> None:
        if kind.kind == "Namespace":
            meta = obj["metadata"]
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif kind.kind == "Service":
            self._default_service(obj, old)
        elif kind.kind == "EndpointSlice":
            for port in obj.get("ports") or []:
                port.setdefault("protocol", "TCP")
        elif kind.kind == "Event":
            obj.setdefault("reportingComponent", "")
            obj.setdefault("reportingInstance", "")
        elif kind.kind in ("Deployment", "Secret"):
            default_workload(kind.kind, obj)

    def _default_service(self, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        svc_type = spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if svc_type != "ExternalName":
            # An update that leaves clusterIP out keeps the allocated one (kubernetes >= 1.20).
            if "clusterIP" not in spec and old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            if "clusterIP" not in spec or spec["clusterIP"] == "":
                spec["clusterIP"] = f"10.96.{self._next_ip // 256}.{self._next_ip % 256}"
                self._next_ip += 1
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        old_ports = {p.get("port"): p for p in old_spec.get("ports") or []}
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            if "targetPort" not in port and isinstance(port.get("port"), int):
                port["targetPort"] = port["port"]
            if svc_type in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                kept = old_ports.get(port.get("port"), {}).get("nodePort")
                if kept:
                    port["nodePort"] = kept
                elif svc_type == "NodePort" or spec.get("allocateLoadBalancerNodePorts", True):
                    port["nodePort"] = self._next_node_port
                    self._next_node_port += 1
        if svc_type in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if svc_type == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        status = obj.setdefault("status", {})
        balancer = status.setdefault("loadBalancer", {})
        for entry in balancer.get("ingress") or []:
            if "ip" in entry:
                entry.setdefault("ipMode", "VIP")

    def _state_at(self, kind: _Kind, rv: int) -> dict[str, Obj]:
        """The objects of `kind` as they were at `rv`, by undoing the retained history after it."""
        if rv < self._compacted:
            raise _ApiError(410, f"too old resource version: {rv} ({self._compacted})")
        state = dict(self._objects[kind])
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.kind is kind:
                key = _key(change.obj)
                if change.prev is None:
                    state.pop(key, None)
                else:
                    state[key] = change.prev
        return state

    def _list(self, kind: _Kind, namespace: str | None, query: dict[str, str]) -> Obj:
        labels = _label_selector(query.get("labelSelector", ""))
        fields = _field_selector(kind, query.get("fieldSelector", ""))
        start, snapshot = "", self._rv
        if query.get("continue"):
            try:
                token = json.loads(base64.b64decode(query["continue"]))
                start, snapshot = str(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                                   "(version meta.k8s.io/v1)") from None
            if snapshot < self._compacted:
                raise _ApiError(410, "The provided continue parameter is too old to display a consistent "
                                     "list result. You can start a new list without the continue parameter.")
        elif query.get("resourceVersionMatch") == "Exact" and query.get("resourceVersion"):
            snapshot = int(query["resourceVersion"])
        state = self._state_at(kind, snapshot) if snapshot != self._rv else self._objects[kind]
        prefix = f"{namespace}/" if namespace is not None else ""
        matching = [(key, obj) for key, obj in sorted(state.items())
                    if key.startswith(prefix) and key >= start
                    and labels(obj["metadata"].get("labels") or {}) and fields(obj)]
        limit = int(query.get("limit") or 0)
        page, rest = (matching[:limit], matching[limit:]) if limit > 0 else (matching, [])
        meta: Obj = {"resourceVersion": str(snapshot)}
        if rest:
            token = {"v": "meta.k8s.io/v1", "rv": snapshot, "start": page[-1][0] + "\x00"}
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                meta["remainingItemCount"] = len(rest)
        # Custom resources are unstructured: their list items keep kind and apiVersion.
        items = [_typed(kind, copy.deepcopy(obj)) if kind.custom else copy.deepcopy(obj) for _, obj in page]
        return {"kind": kind.list_kind or f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta,
                "items": items}
