"""Validation: the parts of the real registry strategies portside depends on."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from tests.fakes.kubeapi.errors import (
    _bad_request,
    _FieldError,
)
from tests.fakes.kubeapi.kinds import (
    Obj,
    _Kind,
)

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


def _validate_secret(obj: Obj, old: Obj | None) -> list[_FieldError]:
    errs = []
    data = obj.get("data") or {}
    for key, value in data.items():
        if not _CONFIG_KEY.fullmatch(key) or len(key) > 253:
            errs.append(_FieldError("Invalid", f"data[{key}]", key, "a valid config key must consist of "
                                    "alphanumeric characters, '-', '_' or '.'"))
        if not isinstance(value, str) or not _is_base64(value):
            # The real server fails decoding the body first; the field is named the same way.
            errs.append(_FieldError("Invalid", f"data[{key}]", "", "illegal base64 data"))
    if sum(len(k) + len(str(v)) * 3 // 4 for k, v in data.items()) > 1024 * 1024:
        errs.append(_FieldError("TooLong", "data", "", "may not be more than 1048576 bytes"))
    if old is not None and obj.get("type", "Opaque") != old.get("type", "Opaque"):
        errs.append(_FieldError("Invalid", "type", obj.get("type"), "field is immutable"))
    return errs


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _selector_errors(spec: Obj, template_labels: dict[str, Any] | None) -> list[_FieldError]:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return [_FieldError("Required", "spec.selector")]
    if template_labels is None:
        return []
    wanted = selector.get("matchLabels") or {}
    if any(template_labels.get(k) != v for k, v in wanted.items()):
        return [_FieldError("Invalid", "spec.template.metadata.labels", template_labels,
                            "`selector` does not match template `labels`")]
    return []


def _validate_deployment(obj: Obj, old: Obj | None) -> list[_FieldError]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    errs = _selector_errors(spec, labels)
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        errs.append(_FieldError("Invalid", "spec.replicas", replicas, "must be greater than or equal to 0"))
    pod = template.get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        errs.append(_FieldError("Required", "spec.template.spec.containers"))
    for i, container in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        errs += _check_name(str(container.get("name") or ""), "label", f"{where}.name")
        if not container.get("image"):
            errs.append(_FieldError("Required", f"{where}.image"))
        for j, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errs.append(_FieldError("Invalid", f"{where}.ports[{j}].containerPort", number,
                                        "must be between 1 and 65535, inclusive"))
    if pod.get("restartPolicy", "Always") != "Always":
        errs.append(_FieldError("NotSupported", "spec.template.spec.restartPolicy", pod["restartPolicy"],
                                'supported values: "Always"'))
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        errs.append(_FieldError("Invalid", "spec.selector", spec.get("selector"), "field is immutable"))
    return errs


def _validate_budget(obj: Obj, old: Obj | None) -> list[_FieldError]:
    spec = obj.get("spec") or {}
    errs = _selector_errors(spec, None)
    if "minAvailable" in spec and "maxUnavailable" in spec:
        errs.append(_FieldError("Invalid", "spec", spec, "minAvailable and maxUnavailable cannot be both set"))
    for field in ("minAvailable", "maxUnavailable"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            errs.append(_FieldError("Invalid", f"spec.{field}", value, "must be greater than or equal to 0"))
    return errs


_VALIDATORS: dict[str, Callable[[Obj, Obj | None], list[_FieldError]]] = {
    "Service": _validate_service, "Lease": _validate_lease, "ConfigMap": _validate_configmap,
    "EndpointSlice": _validate_endpointslice, "Event": _validate_event, "Secret": _validate_secret,
    "Deployment": _validate_deployment, "PodDisruptionBudget": _validate_budget,
}



# MicroTime fields (metav1.MicroTime) decode with exactly this Go layout: six fractional digits,
# no more and no fewer, so `2026-12-01T05:35:22+00:00` (what Python's isoformat() writes for a
# whole second) is refused while decoding, before any validation.
_MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_MICRO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")
_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_MICRO_FIELDS = {"Lease": (("spec", "acquireTime"), ("spec", "renewTime")),
                 "Event": (("eventTime",), ("series", "lastObservedTime"))}


def _micro_time_error(value: Any) -> str | None:
    """Go's time.ParseError text for a MicroTime that does not decode, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"json: cannot unmarshal {type(value).__name__} into Go value of type string"
    if _MICRO_TIME.fullmatch(value):
        return None
    prefix = f'parsing time {json.dumps(value)} as "{_MICRO_LAYOUT}": cannot parse '
    if not _SECONDS.match(value):
        return prefix + f'{json.dumps(value)} as "2006"'
    rest = value[19:]
    if not re.match(r"\.\d{6}", rest):
        return prefix + f'{json.dumps(rest)} as ".000000"'
    return prefix + f'{json.dumps(rest[7:])} as "Z07:00"'


def _decode_error(kind: _Kind, obj: Obj) -> str | None:
    """Why `obj` would not decode into its Go type (only MicroTime is checked), or None."""
    for path in _MICRO_FIELDS.get(kind.kind, ()):
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        problem = _micro_time_error(node)
        if problem:
            return problem
    return None


def _check_decodes(kind: _Kind, obj: Obj) -> None:
    """A create or update body that does not decode: 400, as the handler's transformDecodeError says it."""
    problem = _decode_error(kind, obj)
    if problem:
        raise _bad_request(f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: '
                           f"{problem}")
