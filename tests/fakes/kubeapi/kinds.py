"""The kinds the fake serves, with the per-kind registry behaviour it reproduces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    version: str = "v1"
    custom: bool = False  # defined by a CustomResourceDefinition (see crds.py)
    singular: str = ""
    short_names: tuple[str, ...] = ()
    list_kind: str = ""
    schema: Obj | None = field(default=None, compare=False, hash=False)  # a CRD's openAPIV3Schema

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_kind(self) -> str:
        """The kind as NewInvalid names it: `Lease.coordination.k8s.io`, `Service`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

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
    _Kind("Secret", "secrets", "", namespaced=True, fields=(*_BASE_FIELDS, "type"), merge_keys=_META_KEYS),
    _Kind("Deployment", "deployments", "apps", namespaced=True, status=True, generation=True, short_names=("deploy",),
          merge_keys=(*_META_KEYS, ("spec.template.spec.containers", "name"),
                      ("spec.template.spec.volumes", "name"), ("status.conditions", "type"))),
    _Kind("PodDisruptionBudget", "poddisruptionbudgets", "policy", namespaced=True, status=True,
          generation=True, short_names=("pdb",), merge_keys=_META_KEYS),
)
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

