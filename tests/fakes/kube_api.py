"""A fake Kubernetes API server on loopback, for tests that drive the official `kubernetes` client.

`FakeKube` serves plain HTTP (no TLS) on 127.0.0.1 from a ThreadingHTTPServer, and the official
client talks to it exactly as to a real apiserver (`fake.client_configuration()`, or
`fake.write_kubeconfig(path)` + `kubernetes.config.load_kube_config`).

Resources served (paths as the real server has them):
  core/v1 Services (+ /status), Nodes (+ /status, cluster-scoped), Namespaces (+ /status,
  cluster-scoped), ConfigMaps, Events; discovery.k8s.io/v1 EndpointSlices;
  coordination.k8s.io/v1 Leases.  Also GET /version.  events.k8s.io/v1 is not served.

Server behaviours reproduced:
- One global, monotonically increasing resourceVersion (a decimal string, as etcd revisions are);
  every object carries metadata.resourceVersion, uid, creationTimestamp; EndpointSlices also a
  generation (1 on create, +1 when anything but metadata changes), as their registry strategy does.
  metadata.namespace comes from the URL; a differing namespace in the body is 400 BadRequest.
- create: 201; 409 AlreadyExists; 404 when the namespace does not exist (NamespaceLifecycle);
  422 Invalid without metadata.name/generateName or with a malformed name/label; generateName;
  500 when metadata.resourceVersion is set on create (as the etcd3 store refuses it).
- get: 404 NotFound.  replace (PUT): 409 Conflict on a stale metadata.resourceVersion; Leases
  require one (422), others allow unconditional updates; Leases and Events may be created by PUT
  (AllowCreateOnUpdate), the others 404; a name differing from the URL is 400.
- Status subresource (Services, Nodes, Namespaces): writes to the main resource keep the old
  status; PUT/PATCH to /status keep the old spec (metadata written there is kept, as the real
  status strategies only reset spec).  A Service's status is dropped on create.
- An update that changes nothing is a no-op: same resourceVersion, no watch event.
- Defaulting as the real registry does it for the fields portside reads: Service type, clusterIP
  (and clusterIPs, ipFamilies, ipFamilyPolicy), port protocol and targetPort, nodePorts for
  NodePort/LoadBalancer, externalTrafficPolicy, internalTrafficPolicy, sessionAffinity,
  allocateLoadBalancerNodePorts, status.loadBalancer.ingress[].ipMode=VIP (Kubernetes >= 1.30);
  Namespace phase Active, finalizers and the kubernetes.io/metadata.name label. clusterIP and a
  port's nodePort are kept when an update leaves them out; changing clusterIP is 422.
- Validation (422, field paths and messages in the real format) of names, labels, Service
  type/ports/ingress IPs, Lease durations, ConfigMap keys, EndpointSlice addressType/addresses and
  Event involvedObject.namespace.
- delete: Services and Namespaces return the object, the other kinds a Success Status;
  DeleteOptions preconditions (uid, resourceVersion) give 409. Deleting a Namespace deletes the
  objects in it (what the namespace controller does, here synchronously).
  deletecollection (DELETE on a collection) with selectors.
- list: kind `ServiceList` etc., metadata.resourceVersion, items without kind/apiVersion, ordered
  by etcd key; labelSelector (=, ==, !=, in, notin, exists, !exists), fieldSelector (=, ==, != on
  the fields the real server supports for each kind, 400 for others); limit/continue pagination
  over a consistent snapshot with remainingItemCount; 410 Expired for a compacted continue token;
  resourceVersionMatch=Exact; lists across all namespaces (/api/v1/services).
- PATCH: merge (RFC 7386), strategic merge (merge keys: Service spec.ports by port, conditions
  and Node addresses by type, metadata.ownerReferences by uid, finalizers merged as sets; other
  lists replaced; `$patch: delete|replace`, `$deleteFromPrimitiveList/`, `$retainKeys`), JSON
  patch (RFC 6902; a failed test or bad path is 422); metadata.resourceVersion in a patch body is a
  precondition (409 when stale); server-side apply is 415.
- dryRun=All: validated and answered, nothing stored.
- watch (watch=true|1): chunked newline-delimited JSON events ADDED/MODIFIED/DELETED/BOOKMARK/ERROR;
  without resourceVersion (or "0") the current objects first as ADDED; resume after a
  resourceVersion by replaying the retained history; older than the history window (`history=`,
  `compact()`) -> ERROR event with a 410 Expired Status; selectors applied to events, an object
  leaving/entering the selection sent as DELETED/ADDED; allowWatchBookmarks -> BOOKMARK every
  `bookmark_interval` seconds carrying the newest resourceVersion; sendInitialEvents=true ends the
  initial ADDED events with a bookmark annotated k8s.io/initial-events-end; timeoutSeconds.
  Watchers are woken by a Condition, and every watch ends when the server stops.
- Errors are metav1 Status bodies (kind Status, status Failure, message, reason, details, code)
  with the real messages; 429/5xx faults carry Retry-After.
- Optional bearer token: with `token=`, requests without it get 401 Unauthorized.

Test-only surface: a request log (`requests()`, `writes()`, `clear_log()`), fault injection
(`fail_next()`), direct state access (`put_object()`, `get_object()`, `list_objects()`,
`delete_object()`), history compaction (`compact()`).

Not reproduced: managedFields, server-side apply, graceful deletion and finalizers (objects are
deleted at once), admission webhooks, RBAC, protobuf/CBOR, the `kubernetes` Service in `default`,
fieldValidation=Strict (unknown fields are kept, not rejected).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import json
import random
import re
import socket
import string
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_BASE_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class _Kind:
    kind: str
    plural: str
    group: str
    namespaced: bool
    status: bool = False  # has a /status subresource
    create_on_update: bool = False
    unconditional_update: bool = True
    returns_deleted: bool = False
    generation: bool = False
    fields: tuple[str, ...] = _BASE_FIELDS
    merge_keys: tuple[tuple[str, str], ...] = ()  # strategic merge: list path -> merge key ("" = set)

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def resource(self) -> str:
        """The qualified resource as it appears in messages: `leases.coordination.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_META_KEYS = (("metadata.finalizers", ""), ("metadata.ownerReferences", "uid"))
_EVENT_FIELDS = _BASE_FIELDS + tuple(
    f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                                    "fieldPath")
) + ("reason", "reportingComponent", "source", "type")

KINDS: tuple[_Kind, ...] = (
    _Kind("Namespace", "namespaces", "", namespaced=False, status=True, returns_deleted=True,
          fields=(*_BASE_FIELDS, "status.phase"), merge_keys=(*_META_KEYS, ("spec.finalizers", ""))),
    _Kind("Service", "services", "", namespaced=True, status=True, returns_deleted=True,
          merge_keys=(*_META_KEYS, ("spec.ports", "port"), ("status.conditions", "type"))),
    _Kind("Node", "nodes", "", namespaced=False, status=True, fields=(*_BASE_FIELDS, "spec.unschedulable"),
          merge_keys=(*_META_KEYS, ("status.addresses", "type"), ("status.conditions", "type"),
                      ("spec.podCIDRs", ""))),
    _Kind("ConfigMap", "configmaps", "", namespaced=True, merge_keys=_META_KEYS),
    _Kind("Event", "events", "", namespaced=True, create_on_update=True, fields=_EVENT_FIELDS,
          merge_keys=_META_KEYS),
    _Kind("EndpointSlice", "endpointslices", "discovery.k8s.io", namespaced=True, generation=True,
          merge_keys=_META_KEYS),
    _Kind("Lease", "leases", "coordination.k8s.io", namespaced=True, create_on_update=True,
          unconditional_update=False, merge_keys=_META_KEYS),
)
_BY_ROUTE = {(k.group, k.plural): k for k in KINDS}
_BY_KIND = {k.kind: k for k in KINDS}
_NAMESPACE = _BY_KIND["Namespace"]

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
            504: "Timeout"}
_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "gitCommit": "0" * 40,
            "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3",
            "compiler": "gc", "platform": "linux/amd64"}
_PHRASES = {429: "Too many requests, please try again later.",
            500: "Internal error occurred: injected fault",
            503: "the server is currently unable to handle the request",
            504: "the server was unable to return a response in the time allotted, but may still be "
                 "processing the request"}


# ---------------------------------------------------------------------------------------------
# Errors as metav1.Status


class _ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, details: Obj | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason or _REASONS.get(code, "Unknown"),
                            "code": code}
        if details is not None:
            self.status["details"] = details
        self.code = code
        self.headers = headers or {}


def _details(kind: _Kind, name: str, **extra: Any) -> Obj:
    d: Obj = {"name": name}
    if kind.group:
        d["group"] = kind.group
    d["kind"] = kind.plural
    d.update(extra)
    return d


def _not_found(kind: _Kind, name: str) -> _ApiError:
    return _ApiError(404, f'{kind.resource} "{name}" not found', details=_details(kind, name))


def _conflict(kind: _Kind, name: str, why: str) -> _ApiError:
    return _ApiError(409, f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}',
                     details=_details(kind, name))


_STALE = "the object has been modified; please apply your changes to the latest version and try again"


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, message)


def _rejected(cause: str) -> _ApiError:
    """422 as NewGenericServerResponse builds it for JSON patch failures."""
    return _ApiError(422, "the server rejected our request due to an error in our request",
                     details={"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})


@dataclass(frozen=True)
class _GoValue:
    """A value shown as Go's %#v shows it (unquoted), e.g. 0x0 for a uint64 zero."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _FieldError:
    type: str  # Required | Invalid | NotSupported | Duplicate | Forbidden
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        shown = json.dumps(self.value) if isinstance(self.value, str | int | float) else str(self.value)
        if self.type == "Required":
            text = "Required value"
        elif self.type == "Invalid":
            text = f"Invalid value: {shown}"
        elif self.type == "NotSupported":
            text = f"Unsupported value: {shown}"
        elif self.type == "Duplicate":
            return f"Duplicate value: {shown}"
        else:
            text = "Forbidden"
        return f"{text}: {self.detail}" if self.detail else text


def _invalid(kind_name: str, name: str, errors: list[_FieldError], details: Obj | None = None) -> _ApiError:
    parts = [f"{e.field}: {e.body()}" for e in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    d = dict(details or {"name": name, "kind": kind_name})
    d["causes"] = [{"reason": f"FieldValue{e.type}", "message": e.body(), "field": e.field} for e in errors]
    return _ApiError(422, f'{kind_name} "{name}" is invalid: {joined}', details=d)


# ---------------------------------------------------------------------------------------------
# Validation and defaulting (the parts of the real registry strategies portside depends on)

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_RULES = {
    "subdomain": (_DNS1123_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case "
                  "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                  "character (e.g. 'example.com', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    "label": (_DNS1123_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric "
              "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
              "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    "dns1035": (_DNS1035_LABEL, 63, "a DNS-1035 label must consist of lower case alphanumeric characters "
                "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
                "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
}
_NAME_RULE = {"Service": "dns1035", "Namespace": "label"}


def _check_name(value: str, rule: str, path: str) -> list[_FieldError]:
    regex, limit, text = _NAME_RULES[rule]
    errs = []
    if len(value) > limit:
        errs.append(_FieldError("Invalid", path, value, f"must be no more than {limit} characters"))
    if not regex.fullmatch(value):
        errs.append(_FieldError("Invalid", path, value, text))
    return errs


def _check_qualified_key(key: str, path: str) -> list[_FieldError]:
    prefix, _, name = key.rpartition("/")
    ok = bool(_QUALIFIED.fullmatch(name)) and len(name) <= 63
    if prefix:
        ok = ok and bool(_DNS1123_SUBDOMAIN.fullmatch(prefix)) and len(prefix) <= 253
    if ok:
        return []
    return [_FieldError("Invalid", path, key, "name part must consist of alphanumeric characters, '-', '_' "
                        "or '.', and must start and end with an alphanumeric character")]


def _validate_meta(kind: _Kind, obj: Obj) -> list[_FieldError]:
    meta = obj["metadata"]
    errs = []
    name = meta.get("name") or ""
    if not name:
        errs.append(_FieldError("Required", "metadata.name", detail="name or generateName is required"))
    else:
        errs += _check_name(name, _NAME_RULE.get(kind.kind, "subdomain"), "metadata.name")
    for key, value in (meta.get("labels") or {}).items():
        errs += _check_qualified_key(key, "metadata.labels")
        if not isinstance(value, str) or len(value) > 63 or (value and not _QUALIFIED.fullmatch(value)):
            errs.append(_FieldError("Invalid", "metadata.labels", value, "a valid label must be an empty "
                                    "string or consist of alphanumeric characters, '-', '_' or '.', and must "
                                    "start and end with an alphanumeric character"))
    for key in meta.get("annotations") or {}:
        errs += _check_qualified_key(key, "metadata.annotations")
    return errs


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return True


def _validate_service(obj: Obj, old: Obj | None) -> list[_FieldError]:
    spec, errs = obj.get("spec") or {}, []
    svc_type = spec.get("type", "ClusterIP")
    types = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
    if svc_type not in types:
        errs.append(_FieldError("NotSupported", "spec.type", svc_type,
                                "supported values: " + ", ".join(f'"{t}"' for t in types)))
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and svc_type != "ExternalName":
        errs.append(_FieldError("Required", "spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        where = f"spec.ports[{i}]"
        if len(ports) > 1 and not port.get("name"):
            errs.append(_FieldError("Required", f"{where}.name"))
        elif port.get("name") in names:
            errs.append(_FieldError("Duplicate", f"{where}.name", port["name"]))
        names.add(port.get("name", ""))
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            errs.append(_FieldError("Invalid", f"{where}.port", number,
                                    "must be between 1 and 65535, inclusive"))
        if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
            errs.append(_FieldError("NotSupported", f"{where}.protocol", port.get("protocol"),
                                    'supported values: "SCTP", "TCP", "UDP"'))
    if spec.get("externalTrafficPolicy") and svc_type not in ("NodePort", "LoadBalancer"):
        errs.append(_FieldError("Invalid", "spec.externalTrafficPolicy", spec["externalTrafficPolicy"],
                                "may only be set when `type` is 'NodePort' or 'LoadBalancer'"))
    if spec.get("loadBalancerIP") and not _is_ip(spec["loadBalancerIP"]):
        errs.append(_FieldError("Invalid", "spec.loadBalancerIP", spec["loadBalancerIP"],
                                "must be a valid IP address"))
    if old is not None:
        old_spec = old.get("spec") or {}
        changing_type = "ExternalName" in (svc_type, old_spec.get("type"))
        if not changing_type and spec.get("clusterIP") != old_spec.get("clusterIP"):
            errs.append(_FieldError("Invalid", "spec.clusterIPs[0]", spec.get("clusterIP"),
                                    "may not change once set"))
        if old_spec.get("loadBalancerClass") != spec.get("loadBalancerClass") and \
                old_spec.get("type") == "LoadBalancer" == svc_type:
            errs.append(_FieldError("Invalid", "spec.loadBalancerClass", spec.get("loadBalancerClass"),
                                    "may not change once set"))
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    for i, entry in enumerate(ingress):
        if "ip" in entry and not _is_ip(entry["ip"]):
            errs.append(_FieldError("Invalid", f"status.loadBalancer.ingress[{i}].ip", entry["ip"],
                                    "must be a valid IP address"))
        if entry.get("ipMode") not in (None, "VIP", "Proxy"):
            errs.append(_FieldError("NotSupported", f"status.loadBalancer.ingress[{i}].ipMode",
                                    entry["ipMode"], 'supported values: "Proxy", "VIP"'))
    return errs


def _validate_lease(obj: Obj, old: Obj | None) -> list[_FieldError]:
    spec, errs = obj.get("spec") or {}, []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errs.append(_FieldError("Invalid", "spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errs.append(_FieldError("Invalid", "spec.leaseTransitions", transitions,
                                "must be greater than or equal to 0"))
    return errs


def _validate_configmap(obj: Obj, old: Obj | None) -> list[_FieldError]:
    errs = []
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for section, values in (("data", data), ("binaryData", binary)):
        for key in values:
            if not _CONFIG_KEY.fullmatch(key) or len(key) > 253:
                errs.append(_FieldError("Invalid", f"{section}[{key}]", key, "a valid config key must "
                                        "consist of alphanumeric characters, '-', '_' or '.'"))
    for key in set(data) & set(binary):
        errs.append(_FieldError("Invalid", f"data[{key}]", key, "duplicate of key present in binaryData"))
    size = sum(len(k) + len(str(v)) for values in (data, binary) for k, v in values.items())
    if size > 1024 * 1024:
        errs.append(_FieldError("Invalid", "[]", "", "Too long: must have at most 1048576 bytes"))
    return errs


def _validate_endpointslice(obj: Obj, old: Obj | None) -> list[_FieldError]:
    errs = []
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        errs.append(_FieldError("NotSupported", "addressType", family,
                                'supported values: "FQDN", "IPv4", "IPv6"'))
    elif old is not None and family != old.get("addressType"):
        errs.append(_FieldError("Invalid", "addressType", family, "field is immutable"))
    for i, endpoint in enumerate(obj.get("endpoints") or []):
        addresses = endpoint.get("addresses") or []
        if not 1 <= len(addresses) <= 100:
            errs.append(_FieldError("Required", f"endpoints[{i}].addresses", detail="must contain at least 1 "
                                    "address" if not addresses else "must have at most 100 addresses"))
        for j, address in enumerate(addresses):
            version = {"IPv4": 4, "IPv6": 6}.get(str(family))
            if version and (not _is_ip(address) or ipaddress.ip_address(address).version != version):
                errs.append(_FieldError("Invalid", f"endpoints[{i}].addresses[{j}]", address,
                                        f"must be a valid {family} address"))
    return errs


def _validate_event(obj: Obj, old: Obj | None) -> list[_FieldError]:
    involved = obj.get("involvedObject") or {}
    namespace = obj["metadata"].get("namespace")
    if involved.get("namespace") and involved["namespace"] != namespace:
        return [_FieldError("Invalid", "involvedObject.namespace", involved["namespace"],
                            "does not match event.namespace")]
    return []


_VALIDATORS: dict[str, Callable[[Obj, Obj | None], list[_FieldError]]] = {
    "Service": _validate_service, "Lease": _validate_lease, "ConfigMap": _validate_configmap,
    "EndpointSlice": _validate_endpointslice, "Event": _validate_event,
}


# ---------------------------------------------------------------------------------------------
# Patches


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _strategic_map(orig: Obj, patch: Obj, path: str, keys: dict[str, str]) -> Obj | None:
    """Strategic merge of `patch` onto the map `orig`; None means `$patch: delete`."""
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        replaced: Obj = _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
        return replaced
    if directive not in (None, "merge"):
        raise _bad_request(f"Unknown patch type: {directive} in map: {patch}")
    result = dict(orig)
    for key, value in patch.items():
        sub = f"{path}.{key}" if path else key
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
        elif key.startswith("$") :  # $setElementOrder/..., $retainKeys: handled below or ordering only
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result[key] if isinstance(result.get(key), dict) else {}
            merged = _strategic_map(base, value, sub, keys)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in keys:
            result[key] = _strategic_list(result.get(key) or [], value, keys[sub], sub, keys)
        else:
            result[key] = _strip_directives(value)
    if "$retainKeys" in patch:
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _strategic_list(orig: list[Any], patch: list[Any], merge_key: str, path: str,
                    keys: dict[str, str]) -> list[Any]:
    if not merge_key:  # a list of scalars with patchStrategy=merge: a set union, order kept
        return list(orig) + [v for v in patch if v not in orig]
    def replaces(e: Any) -> bool:
        return isinstance(e, dict) and e.get("$patch") == "replace"

    if any(replaces(e) for e in patch):
        return [_strip_directives(e) for e in patch if not replaces(e)]
    result = [copy.deepcopy(e) for e in orig]
    for element in patch:
        if not isinstance(element, dict) or merge_key not in element:
            raise _ApiError(500, f"map: {element} does not contain declared merge key: {merge_key}")
        index = next((i for i, e in enumerate(result) if e.get(merge_key) == element[merge_key]), None)
        if element.get("$patch") == "delete":
            result = [e for e in result if e.get(merge_key) != element[merge_key]]
        elif index is None:
            result.append(_strip_directives(element))
        else:
            result[index] = _strategic_map(result[index], element, path, keys) or {}
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad_request(f'JSON pointer must start with "/": {path}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch; failures are 422 as the apiserver reports them."""
    if not isinstance(ops, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)

    def parent(tokens: list[str], op: str) -> tuple[Any, str]:
        if not tokens:
            raise _rejected(f"{op} operation does not apply: doc is missing path: \"\"")
        node: Any = doc
        for token in tokens[:-1]:
            try:
                node = node[int(token)] if isinstance(node, list) else node[token]
            except (KeyError, IndexError, ValueError, TypeError):
                raise _rejected(f"{op} operation does not apply: doc is missing path: "
                                f"/{'/'.join(tokens)}") from None
        return node, tokens[-1]

    def get(tokens: list[str], op: str) -> Any:
        if not tokens:
            return doc
        node, last = parent(tokens, op)
        try:
            return node[int(last)] if isinstance(node, list) else node[last]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _rejected(f"{op} operation does not apply: doc is missing path: "
                            f"/{'/'.join(tokens)}") from None

    def add(tokens: list[str], value: Any, op: str) -> None:
        node, last = parent(tokens, op)
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= index <= len(node):
                raise _rejected(f"{op} operation does not apply: index out of bounds: {last}")
            node.insert(index, value)
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise _rejected(f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}")

    def remove(tokens: list[str], op: str) -> Any:
        value = get(tokens, op)
        node, last = parent(tokens, op)
        if isinstance(node, list):
            del node[int(last)]
        else:
            del node[last]
        return value

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _bad_request(f"invalid JSON patch operation: {op}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _bad_request(f"missing value for {kind} operation")
        if kind == "add":
            add(tokens, copy.deepcopy(op["value"]), kind)
        elif kind == "remove":
            remove(tokens, kind)
        elif kind == "replace":
            remove(tokens, kind)
            add(tokens, copy.deepcopy(op["value"]), kind)
        elif kind == "move":
            add(tokens, remove(_pointer(op.get("from", "")), kind), kind)
        elif kind == "copy":
            add(tokens, copy.deepcopy(get(_pointer(op.get("from", "")), kind)), kind)
        elif kind == "test":
            if not _same(get(tokens, kind), op["value"]):
                raise _rejected(f"testing value {op['path']} failed: test failed")
        else:
            raise _bad_request(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------------------------------------
# Selectors

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9._-]*))?\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # exists | !exists | = | != | in | notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # != and notin match a missing label too


@dataclass(frozen=True)
class _LabelSelector:
    requirements: tuple[_Requirement, ...]

    def __call__(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _label_selector(text: str) -> _LabelSelector:
    requirements = []
    for term in _split_terms(text):
        m = _REQUIREMENT.match(term)
        if not m or (m["neg"] and m["op"]):
            raise _bad_request(f"unable to parse requirement: found '{term.strip()}', expected: valid "
                               "label selector")
        key, op, value = m["key"], (m["op"] or "").strip(), m["value"] or ""
        if m["neg"]:
            requirements.append(_Requirement(key, "!exists"))
        elif not op:
            requirements.append(_Requirement(key, "exists"))
        elif op in ("=", "==", "!="):
            requirements.append(_Requirement(key, "!=" if op == "!=" else "=", frozenset({value})))
        else:
            if not value.startswith("("):
                raise _bad_request(f"unable to parse requirement: found '{term.strip()}', expected: '('")
            values = frozenset(v.strip() for v in value[1:-1].split(",") if v.strip())
            requirements.append(_Requirement(key, op, values))
    return _LabelSelector(tuple(requirements))


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if path == "source":
        node = (obj.get("source") or {}).get("component")
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


@dataclass(frozen=True)
class _FieldSelector:
    terms: tuple[tuple[str, bool, str], ...]  # (field path, equal?, value)

    def __call__(self, obj: Obj) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in self.terms)


def _field_selector(kind: _Kind, text: str) -> _FieldSelector:
    terms = []
    for term in _split_terms(text):
        m = re.fullmatch(r"\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in kind.fields:
            raise _bad_request(f"field label not supported: {path}")
        terms.append((path, op != "!=", value))
    return _FieldSelector(tuple(terms))


# ---------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True)
class _Change:
    rv: int
    kind: _Kind
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the fake saw it. `body` is the parsed JSON body (None when there was none)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status: int
    body: Any = None


@dataclass
class Fault:
    """An injected failure: the next `remaining` requests matching method and path fail with `status`."""

    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    retry_after: int | None = None
    message: str | None = None
    reason: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.path.search(path))

    def error(self) -> _ApiError:
        headers, details = {}, None
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
            details = {"retryAfterSeconds": self.retry_after}
        message = self.message or _PHRASES.get(self.status, f"injected fault ({self.status})")
        return _ApiError(self.status, message, self.reason, details, headers)


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


@dataclass
class _Watch:
    kind: _Kind
    namespace: str | None
    labels: _LabelSelector
    fields: _FieldSelector
    since: int | None  # None: send the current objects first
    bookmarks: bool
    initial_end_bookmark: bool
    timeout: float | None


@dataclass
class _Response:
    status: int
    body: Obj
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing leaks
    block_on_close = True

    def __init__(self, fake: FakeKube, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the kill tests) resets its socket: expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle's algorithm meets the
        # client's delayed ACK and every response takes ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeKube:
    """A Kubernetes API server fake on http://127.0.0.1:<port>; see the module docstring."""

    def __init__(self, *, history: int = 1000, bookmark_interval: float = 60.0,
                 namespaces: Iterable[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
                 token: str | None = None, host: str = "127.0.0.1") -> None:
        self.history_limit = history
        self.bookmark_interval = bookmark_interval
        self._token = token
        self._host = host
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[_Kind, dict[str, Obj]] = {k: {} for k in KINDS}
        self._history: list[_Change] = []
        self._rv = 1000
        self._compacted = self._rv  # watching from a resourceVersion below this is 410 Gone
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._next_ip = 10
        self._next_node_port = 30000
        self._closed = False
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeKube:
        """Listen on an ephemeral loopback port and serve in a background thread."""
        self._httpd = _Server(self, (self._host, 0))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-kube",
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch, close every connection and join every thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._httpd.drop_connections()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeKube is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def client_configuration(self) -> Any:
        """A `kubernetes.client.Configuration` pointing at this server."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        if self._token:
            config.api_key = {"BearerToken": self._token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this server; close it when done."""
        from kubernetes import client

        return client.ApiClient(self.client_configuration())

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON, which is YAML) that `kubernetes.config.load_kube_config` accepts."""
        user: Obj = {"token": self._token} if self._token else {}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake",
                          "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))
        return target

    # -- test helpers: log, faults, state --------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests, oldest first; only those with `method` and a path matching regex `path`
        when given."""
        with self._lock:
            return [r for r in self._log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def writes(self) -> list[LoggedRequest]:
        """Logged requests that are not GETs (creates, updates, patches, deletes)."""
        with self._lock:
            return [r for r in self._log if r.method != "GET"]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def fail_next(self, method: str, path: str, status: int, *, count: int = 1,
                  retry_after: int | None = None, message: str | None = None,
                  reason: str | None = None) -> Fault:
        """Make the next `count` requests with `method` ("*" for any) and a path matching regex `path`
        fail with `status` and a Status body. 429 gets `Retry-After: 1` unless `retry_after` is given."""
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(method.upper() if method != "*" else "*", re.compile(path), status, count,
                      retry_after, message, reason)
        with self._lock:
            self._faults.append(fault)
        return fault

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
        k = _BY_KIND[kind]
        key = f"{namespace or 'default'}/{name}" if k.namespaced else name
        with self._lock:
            found = self._objects[k].get(key)
            return _typed(k, copy.deepcopy(found)) if found else None

    def list_objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Stored objects of `kind` (in `namespace`, or all), ordered as the server lists them."""
        k = _BY_KIND[kind]
        with self._lock:
            return [_typed(k, copy.deepcopy(o)) for key, o in sorted(self._objects[k].items())
                    if namespace is None or o["metadata"].get("namespace") == namespace]

    def delete_object(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete directly, emitting the watch event; False when there was nothing to delete."""
        k = _BY_KIND[kind]
        key = f"{namespace or 'default'}/{name}" if k.namespaced else name
        with self._changed:
            if key not in self._objects[k]:
                return False
            self._remove(k, key)
            return True

    # -- store internals (call with the lock held) -----------------------------------------

    @staticmethod
    def _kind_of(obj: Obj) -> _Kind:
        kind = _BY_KIND.get(str(obj.get("kind")))
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
        else:
            for system in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if system in old["metadata"]:
                    meta[system] = old["metadata"][system]
                else:
                    meta.pop(system, None)
        self._default(kind, obj, old)
        errors = _validate_meta(kind, obj)
        if kind.kind in _VALIDATORS:
            errors += _VALIDATORS[kind.kind](obj, old)
        if errors:
            raise _invalid(kind.kind, meta.get("name") or "", errors,
                           {"name": meta.get("name") or "", **({"group": kind.group} if kind.group else {}),
                            "kind": kind.kind})
        if old is not None:
            if kind.generation and _strip_meta(obj) != _strip_meta(old):
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
            for other in KINDS:
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

    # -- HTTP ------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        method = handler.command
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type")
        try:
            logged_body = json.loads(raw) if raw else None
        except ValueError:
            logged_body = raw.decode("utf-8", "replace")
        try:
            result = self._dispatch(handler, method, url.path, query, content_type, raw)
        except _ApiError as e:
            result = _Response(e.code, e.status, e.headers)
        except Exception as e:  # a bug in the fake: show it, answer like the apiserver does
            traceback.print_exc()
            result = _Response(500, _ApiError(500, f"Internal error occurred: {e!r}").status)
        status = 200 if isinstance(result, _Watch) else result.status
        with self._lock:
            self._log.append(LoggedRequest(method, url.path, query, content_type, status, logged_body))
        try:
            if isinstance(result, _Watch):
                self._stream(handler, result)
            else:
                data = json.dumps(result.body).encode()
                handler.send_response(result.status)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                for name, value in result.headers.items():
                    handler.send_header(name, value)
                handler.end_headers()
                handler.wfile.write(data)
        except OSError:  # the client went away
            handler.close_connection = True

    def _dispatch(self, handler: _Handler, method: str, path: str, query: dict[str, str],
                  content_type: str | None, raw: bytes) -> _Response | _Watch:
        if self._token is not None and handler.headers.get("Authorization") != f"Bearer {self._token}":
            raise _ApiError(401, "Unauthorized")
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path)), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1
                raise fault.error()
        if path in ("/version", "/version/") and method == "GET":
            return _Response(200, _VERSION)
        kind, namespace, name, sub = self._route(path)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise _bad_request(f"error decoding request body: {e}") from None
        dry_run = query.get("dryRun") == "All"
        with self._changed:
            if name is None:
                if method == "GET":
                    if query.get("watch") in _TRUE:
                        return self._watch_plan(kind, namespace, query)
                    return _Response(200, self._list(kind, namespace, query))
                if method == "POST" and (namespace is not None or not kind.namespaced):
                    return _Response(201, self._create(kind, namespace, body, dry_run))
                if method == "DELETE":
                    return _Response(200, self._delete_collection(kind, namespace, query, dry_run))
            else:
                if method == "GET":
                    return _Response(200, _typed(kind, copy.deepcopy(self._get(kind, namespace, name))))
                if method == "PUT":
                    return self._replace(kind, namespace, name, body, sub, dry_run)
                if method == "PATCH":
                    patched = self._patch(kind, namespace, name, body, content_type or "", sub, dry_run)
                    return _Response(200, patched)
                if method == "DELETE" and sub is None:
                    return _Response(200, self._delete(kind, namespace, name, body, dry_run))
        raise _ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _route(path: str) -> tuple[_Kind, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis" and parts[2] == "v1":
            group, rest = parts[1], parts[3:]
        else:
            rest, group = [], None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        kind = _BY_ROUTE.get((group or "", rest[0])) if group is not None and rest else None
        if kind is None or len(rest) > 3 or (namespace is not None and not kind.namespaced) \
                or (len(rest) == 3 and (rest[2] != "status" or not kind.status)) \
                or (len(rest) >= 2 and kind.namespaced and namespace is None):
            raise _ApiError(404, "the server could not find the requested resource", details={})
        return kind, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None

    def _get(self, kind: _Kind, namespace: str | None, name: str) -> Obj:
        found = self._objects[kind].get(f"{namespace}/{name}" if kind.namespaced else name)
        if found is None:
            raise _not_found(kind, name)
        return found

    def _prepare_body(self, kind: _Kind, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format - accepted media types "
                               "include: application/json, application/yaml")
        api_version, kind_name = body.get("apiVersion"), body.get("kind")
        if api_version not in (None, "", kind.api_version):
            raise _bad_request(f"the API version in the data ({api_version}) does not match the expected "
                               f"API version ({kind.api_version})")
        if kind_name not in (None, "", kind.kind):
            raise _bad_request(f"the kind in the data ({kind_name}) does not match the expected kind "
                               f"({kind.kind})")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if kind.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise _bad_request("the namespace of the provided object does not match the namespace sent "
                                   "on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _create(self, kind: _Kind, namespace: str | None, body: Any, dry_run: bool) -> Obj:
        obj = self._prepare_body(kind, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise _ApiError(500, "resourceVersion should not be set on objects to be created")
        if kind.namespaced and namespace not in self._objects[_NAMESPACE]:
            raise _not_found(_NAMESPACE, str(namespace))
        if meta.get("name") and _key(obj) in self._objects[kind]:
            raise _ApiError(409, f'{kind.resource} "{meta["name"]}" already exists', reason="AlreadyExists",
                            details=_details(kind, meta["name"]))
        return _typed(kind, copy.deepcopy(self._write(kind, obj, None, dry_run=dry_run)))

    def _update(self, kind: _Kind, name: str, obj: Obj, old: Obj, sub: str | None, dry_run: bool) -> Obj:
        """Shared by PUT and PATCH: preconditions, then the status-subresource split, then the write."""
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise _conflict(kind, name, _STALE)
        if sub == "status":
            # The status strategies of Services, Nodes and Namespaces reset only spec: metadata
            # (labels, annotations) written through /status is kept, as on a real server.
            if "spec" in old:
                obj["spec"] = copy.deepcopy(old["spec"])
            else:
                obj.pop("spec", None)
        elif kind.status:
            obj["status"] = copy.deepcopy(old.get("status", {}))
        return _typed(kind, copy.deepcopy(self._write(kind, obj, old, dry_run=dry_run)))

    def _replace(self, kind: _Kind, namespace: str | None, name: str, body: Any, sub: str | None,
                 dry_run: bool) -> _Response:
        obj = self._prepare_body(kind, namespace, body)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise _bad_request(f"the name of the object ({meta.get('name', '')}) does not match the name on "
                               f"the URL ({name})")
        old = self._objects[kind].get(_key(obj))
        if old is None:
            if kind.create_on_update and sub is None:
                meta.pop("resourceVersion", None)
                return _Response(201, self._create(kind, namespace, obj, dry_run))
            raise _not_found(kind, name)
        if not meta.get("resourceVersion") and not kind.unconditional_update:
            # Leases: AllowUnconditionalUpdate is false, and the error names the resource, not the kind.
            error = _FieldError("Invalid", "metadata.resourceVersion", _GoValue("0x0"),
                                "must be specified for an update")
            raise _invalid(kind.resource, name, [error], _details(kind, name))
        return _Response(200, self._update(kind, name, obj, old, sub, dry_run))

    def _patch(self, kind: _Kind, namespace: str | None, name: str, patch: Any, content_type: str,
               sub: str | None, dry_run: bool) -> Obj:
        old = self._get(kind, namespace, name)
        current = _typed(kind, copy.deepcopy(old))
        media = content_type.split(";")[0].strip()
        if media == "application/json-patch+json":
            patched = _json_patch(current, patch)
        elif not isinstance(patch, dict) and media.endswith("merge-patch+json"):
            raise _bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
        elif media == "application/merge-patch+json":
            patched = _merge_patch(current, patch)
        elif media == "application/strategic-merge-patch+json":
            patched = _strategic_map(current, patch, "", dict(kind.merge_keys)) or {}
        else:
            raise _ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                 "include: application/json-patch+json, application/merge-patch+json, "
                                 "application/strategic-merge-patch+json")
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise _invalid(kind.kind, name, [_FieldError("Required", "metadata")])
        obj = self._prepare_body(kind, namespace, patched)
        if obj["metadata"].get("name") != name:
            raise _bad_request(f"the name of the object ({obj['metadata'].get('name', '')}) does not match "
                               f"the name on the URL ({name})")
        return self._update(kind, name, obj, old, sub, dry_run)

    def _delete(self, kind: _Kind, namespace: str | None, name: str, options: Any, dry_run: bool) -> Obj:
        old = self._get(kind, namespace, name)
        pre = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise _conflict(kind, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                        f"object meta: {old['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise _conflict(kind, name, f"Precondition failed: ResourceVersion in precondition: "
                                        f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                        f"{old['metadata']['resourceVersion']}")
        if not dry_run:
            old = self._remove(kind, _key(old))
        if kind.returns_deleted:
            return _typed(kind, copy.deepcopy(old))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(kind, name, uid=old["metadata"]["uid"])}

    def _delete_collection(self, kind: _Kind, namespace: str | None, query: dict[str, str],
                           dry_run: bool) -> Obj:
        selectors = {k: v for k, v in query.items() if k in ("labelSelector", "fieldSelector")}
        listed = self._list(kind, namespace, selectors)
        if not dry_run:
            for item in listed["items"]:
                self._remove(kind, _key(item))
        listed["items"] = [_typed(kind, i) for i in listed["items"]]
        return listed

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
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta,
                "items": [copy.deepcopy(obj) for _, obj in page]}

    # -- watch -----------------------------------------------------------------------------

    def _watch_plan(self, kind: _Kind, namespace: str | None, query: dict[str, str]) -> _Watch:
        rv = query.get("resourceVersion", "")
        initial = query.get("sendInitialEvents") in _TRUE
        if initial:
            errors = []
            if query.get("resourceVersionMatch") != "NotOlderThan":
                errors.append(_FieldError("Forbidden", "resourceVersionMatch", detail="sendInitialEvents "
                                          "requires setting resourceVersionMatch to NotOlderThan"))
            if query.get("allowWatchBookmarks") not in _TRUE:
                errors.append(_FieldError("Required", "allowWatchBookmarks", detail="allowWatchBookmarks "
                                          "must be true if sendInitialEvents = true"))
            if errors:
                raise _invalid("ListOptions", "", errors, {"kind": "ListOptions"})
        since = None if rv in ("", "0") or initial else int(rv) if rv.isdigit() else -1
        if since == -1:
            raise _bad_request(f"resourceVersion: Invalid value: {rv!r}: must be a number")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        return _Watch(kind, namespace, _label_selector(query.get("labelSelector", "")),
                      _field_selector(kind, query.get("fieldSelector", "")), since,
                      query.get("allowWatchBookmarks") in _TRUE, initial, timeout)

    def _selected(self, watch: _Watch, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if watch.namespace is not None and obj["metadata"].get("namespace") != watch.namespace:
            return False
        return watch.labels(obj["metadata"].get("labels") or {}) and watch.fields(obj)

    def _events(self, watch: _Watch, changes: list[_Change]) -> Iterator[Obj]:
        for change in changes:
            if change.kind is not watch.kind:
                continue
            now, before = self._selected(watch, change.obj), self._selected(watch, change.prev)
            if change.type == "MODIFIED" and now != before:  # entered or left the selection
                yield {"type": "ADDED" if now else "DELETED", "object": _typed(watch.kind, change.obj)}
            elif (now if change.type != "DELETED" else before):
                yield {"type": change.type, "object": _typed(watch.kind, change.obj)}

    def _bookmark(self, kind: _Kind, rv: int, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK",
                "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}}

    def _stream(self, handler: _Handler, watch: _Watch) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def send(event: Obj) -> None:
            data = json.dumps(event).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        start = time.monotonic()
        deadline = start + watch.timeout if watch.timeout is not None else None
        next_bookmark = start + self.bookmark_interval
        with self._lock:
            if watch.since is None:
                cursor = self._rv
                pending = [{"type": "ADDED", "object": _typed(watch.kind, copy.deepcopy(o))}
                           for _, o in sorted(self._objects[watch.kind].items()) if self._selected(watch, o)]
                if watch.initial_end_bookmark:
                    pending.append(self._bookmark(watch.kind, cursor, initial_end=True))
            else:
                cursor, pending = watch.since, []
        try:
            while True:
                for event in pending:
                    send(event)
                now = time.monotonic()
                if watch.bookmarks and now >= next_bookmark:
                    send(self._bookmark(watch.kind, cursor))
                    next_bookmark = now + self.bookmark_interval
                with self._changed:
                    while not self._closed and self._rv <= cursor and cursor >= self._compacted:
                        due = (deadline, next_bookmark if watch.bookmarks else None)
                        waits = [d - time.monotonic() for d in due if d is not None]
                        if waits and min(waits) <= 0:
                            break
                        self._changed.wait(min(waits) if waits else None)
                    if self._closed or (deadline is not None and time.monotonic() >= deadline):
                        break
                    if cursor < self._compacted:  # asked for, or fell behind, a compacted revision
                        pending = [{"type": "ERROR", "object": _ApiError(
                            410, f"too old resource version: {cursor} ({self._compacted})").status}]
                        cursor = -1
                    else:
                        changes = [c for c in self._history if c.rv > cursor]
                        pending = list(self._events(watch, changes))
                        cursor = self._rv
                if cursor == -1:
                    for event in pending:
                        send(event)
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:  # the client went away
            pass


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _strip_meta(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "kind", "apiVersion")}
