"""RBAC as the API server applies it, to hold the manifests in deploy/ against what the code does.

Two halves, both after the real server's code (k8s.io/apiserver, plugin/pkg/auth/authorizer/rbac):

- :func:`request_attributes` turns a logged HTTP request (method, path, query) into the
  attributes RBAC decides on — verb, API group, resource, subresource, namespace, name — like
  ``RequestInfoFactory.NewRequestInfo``: GET on a collection is ``list``, with ``watch=true``
  ``watch``, ``/watch/`` paths ``watch``, PUT ``update``, DELETE on a collection
  ``deletecollection``, and a list or watch with ``fieldSelector=metadata.name=X`` is about the
  object X (which is what lets ``resourceNames`` cover it).
- :class:`Policy` reads Roles, ClusterRoles and their bindings from manifests and answers, for a
  ServiceAccount, whether a request is allowed and by which rule; :meth:`Policy.check` also lists
  every granted permission that no request used (least privilege: nothing granted "just in case").

:func:`kustomize_build` reads a kustomization the way ``kubectl kustomize`` does for the subset
deploy/ uses (``resources``: files and directories with their own kustomization), so the tests
need no kustomize binary.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

Obj = dict[str, Any]

# k8s.io/apiserver/pkg/endpoints/request/requestinfo.go
_API_PREFIXES = {"api", "apis"}
_GROUPLESS_PREFIXES = {"api"}
_SPECIAL_VERBS = {"proxy", "watch"}
_SPECIAL_VERBS_NO_SUBRESOURCES = {"proxy"}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}

# The default policy every authenticated client has (ClusterRoles system:discovery and
# system:public-info-viewer, bound to system:authenticated): discovery and version endpoints.
_DISCOVERY_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version",
                   "/version/", "/openapi", "/openapi/*")


class LoggedRequest(Protocol):
    """What a fake API server logs per request (tests/fakes/kube_api.py's LoggedRequest fits)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class RequestAttributes:
    """What RBAC decides on, as the API server's RequestInfo resolves it."""

    verb: str
    resource_request: bool = True
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        group = f".{self.api_group}" if self.api_group else ""
        text = f"{self.verb} {self.combined_resource}{group}"
        if self.name:
            text += f" {self.name!r}"
        return text + (f" in {self.namespace}" if self.namespace else " (cluster scope)")


def request_attributes(method: str, path: str, query: Mapping[str, str] | str = "") -> RequestAttributes:
    """The RBAC attributes of one request, exactly as the API server would resolve them."""
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) if isinstance(query, str) else dict(query)
    parts = [p for p in path.strip("/").split("/") if p]
    non_resource = RequestAttributes(verb=method.lower(), resource_request=False, path=path)
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    parts = parts[1:]  # the version
    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            raise ValueError(f"{method} {path}: unable to determine kind and namespace from the URL")
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES else ""
    if not name and verb == "get":
        verb = "watch" if _query_bool(params.get("watch")) else "list"
        selected = _exact_name(params.get("fieldSelector", ""))
        if selected is not None and _valid_path_segment(selected):
            name = selected
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestAttributes(verb=verb, api_group=group, resource=resource, subresource=subresource,
                             namespace=namespace, name=name)


def _query_bool(value: str | None) -> bool:
    # runtime.Convert_Slice_string_To_bool: present and not "0"/"false" is true, even "".
    return value is not None and value != "0" and value.lower() != "false"


def _exact_name(selector: str) -> str | None:
    """fields.Selector.RequiresExactMatch("metadata.name") for a selector string."""
    for term in _split_selector(selector):
        for operator in ("==", "="):
            key, found, value = term.partition(operator)
            if found and "!" not in key:
                if key.strip() == "metadata.name":
                    return value.strip()
                break
    return None


def _split_selector(selector: str) -> list[str]:
    # Terms are comma-separated; a backslash escapes a comma inside a value.
    terms, current, escaped = [], "", False
    for char in selector:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(current)
            current = ""
        else:
            current += char
    if current:
        terms.append(current)
    return terms


def _valid_path_segment(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


@dataclass(frozen=True)
class Subject:
    """A ServiceAccount as RBAC sees it: its user name and groups."""

    namespace: str
    name: str

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> frozenset[str]:
        return frozenset({"system:serviceaccounts", f"system:serviceaccounts:{self.namespace}",
                          "system:authenticated"})

    def named_by(self, subject: Mapping[str, Any], binding_namespace: str) -> bool:
        """rbac.appliesTo: does a binding's subject entry name this ServiceAccount?"""
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            # A RoleBinding may leave the namespace out: it then means the binding's own.
            namespace = subject.get("namespace") or binding_namespace
            return subject.get("name") == self.name and namespace == self.namespace
        if kind == "User":
            return subject.get("name") == self.user
        if kind == "Group":
            return subject.get("name") in self.groups
        return False

    def __str__(self) -> str:
        return f"ServiceAccount {self.namespace}/{self.name}"


def service_account(namespace: str, name: str) -> Subject:
    return Subject(namespace, name)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, rule: Mapping[str, Any]) -> Rule:
        def strings(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in rule.get(key) or ())

        return cls(strings("verbs"), strings("apiGroups"), strings("resources"), strings("resourceNames"),
                   strings("nonResourceURLs"))

    def allows(self, request: RequestAttributes) -> bool:
        """rbac.RuleAllows."""
        if not _matches(self.verbs, request.verb):
            return False
        if not request.resource_request:
            return any(url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
                       for url in self.non_resource_urls)
        return (_matches(self.api_groups, request.api_group)
                and self._resource_matches(request)
                and (not self.resource_names or request.name in self.resource_names))

    def _resource_matches(self, request: RequestAttributes) -> bool:
        for resource in self.resources:
            if resource in ("*", request.combined_resource):
                return True
            # "*/status" matches the status subresource of every resource.
            if request.subresource and resource == f"*/{request.subresource}":
                return True
        return False


def _matches(values: tuple[str, ...], wanted: str) -> bool:
    return "*" in values or wanted in values


@dataclass(frozen=True)
class Grant:
    """A rule a ServiceAccount holds through a binding: cluster-wide, or in one namespace."""

    role: str  # "ClusterRole/name" or "Role/namespace/name"
    binding: str
    namespace: str | None  # None: every namespace and cluster-scoped resources
    rule: Rule
    builtin: bool = False

    def allows(self, request: RequestAttributes) -> bool:
        if self.namespace is not None and request.namespace != self.namespace:
            return False
        return self.rule.allows(request)

    def where(self) -> str:
        return "cluster-wide" if self.namespace is None else f"in {self.namespace}"


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (or URL) of one grant: the unit of "granted but never used"."""

    grant: Grant
    verb: str
    api_group: str = ""
    resource: str = ""
    url: str = ""

    def used_by(self, request: RequestAttributes) -> bool:
        single = Rule(verbs=(self.verb,), api_groups=(self.api_group,),
                      resources=(self.resource,) if self.resource else (),
                      resource_names=self.grant.rule.resource_names,
                      non_resource_urls=(self.url,) if self.url else ())
        return (self.grant.namespace is None or request.namespace == self.grant.namespace) and single.allows(
            request)

    def __str__(self) -> str:
        if self.url:
            return f"{self.grant.role} ({self.grant.where()}): {self.verb} {self.url}"
        group = f".{self.api_group}" if self.api_group else ""
        names = f" {list(self.grant.rule.resource_names)}" if self.grant.rule.resource_names else ""
        return f"{self.grant.role} ({self.grant.where()}): {self.verb} {self.resource}{group}{names}"


@dataclass(frozen=True)
class Denied:
    method: str
    path: str
    attributes: RequestAttributes

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.attributes}"


@dataclass
class Verdict:
    """The outcome of :meth:`Policy.check`: requests RBAC would refuse, and permissions never used."""

    subject: Subject
    denied: list[Denied] = field(default_factory=list)
    unused: list[Permission] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.denied and not self.unused

    def explain(self) -> str:
        lines = [f"RBAC for {self.subject}:"]
        lines += [f"  denied:  {d}" for d in self.denied]
        lines += [f"  unused:  {p}" for p in self.unused]
        return "\n".join(lines)


class Policy:
    """The RBAC objects of a set of manifests (plus the default discovery policy)."""

    def __init__(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.roles: dict[str, list[Rule]] = {}
        self.bindings: list[Mapping[str, Any]] = []
        for obj in objects:
            if obj.get("apiVersion") != "rbac.authorization.k8s.io/v1":
                continue
            kind, meta = obj.get("kind"), obj.get("metadata") or {}
            if kind in ("Role", "ClusterRole"):
                self.roles[_role_key(kind, meta.get("namespace"), meta["name"])] = [
                    Rule.from_manifest(r) for r in obj.get("rules") or ()]
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                self.bindings.append(obj)
        for binding in self.bindings:
            self._role_of(binding)  # a binding to a role that is not there is a manifest bug

    def _role_of(self, binding: Mapping[str, Any]) -> str:
        meta, ref = binding["metadata"], binding["roleRef"]
        if binding["kind"] == "ClusterRoleBinding" and ref.get("kind") != "ClusterRole":
            raise ValueError(f"ClusterRoleBinding {meta['name']}: roleRef must be a ClusterRole")
        key = _role_key(ref["kind"], meta.get("namespace"), ref["name"])
        if key not in self.roles:
            raise ValueError(f"{binding['kind']} {meta['name']}: roleRef {key} is not in the manifests")
        return key

    def grants(self, subject: Subject) -> list[Grant]:
        """Every rule the subject holds, through which binding and where."""
        held = [Grant("ClusterRole/system:discovery", "system:discovery", None,
                      Rule(verbs=("get",), non_resource_urls=_DISCOVERY_URLS), builtin=True)]
        for binding in self.bindings:
            meta = binding["metadata"]
            namespace = meta.get("namespace") or ""
            if not any(subject.named_by(s, namespace) for s in binding.get("subjects") or ()):
                continue
            role = self._role_of(binding)
            scope = None if binding["kind"] == "ClusterRoleBinding" else namespace
            name = f"{binding['kind']}/{namespace + '/' if namespace else ''}{meta['name']}"
            held += [Grant(role, name, scope, rule) for rule in self.roles[role]]
        return held

    def authorize(self, subject: Subject, request: RequestAttributes) -> Grant | None:
        """The first grant that allows the request, or None: RBAC denies it."""
        return next((g for g in self.grants(subject) if g.allows(request)), None)

    def check(self, subject: Subject, requests: Iterable[LoggedRequest]) -> Verdict:
        """Every request must be allowed, and every permission granted must have been used."""
        verdict = Verdict(subject)
        seen: list[RequestAttributes] = []
        for request in requests:
            attributes = request_attributes(request.method, request.path, request.query)
            if self.authorize(subject, attributes) is None:
                verdict.denied.append(Denied(request.method, request.path, attributes))
            seen.append(attributes)
        for grant in self.grants(subject):
            if grant.builtin:
                continue
            verdict.unused += [p for p in _permissions(grant) if not any(p.used_by(a) for a in seen)]
        return verdict


def _role_key(kind: str, namespace: str | None, name: str) -> str:
    return f"ClusterRole/{name}" if kind == "ClusterRole" else f"Role/{namespace}/{name}"


def _permissions(grant: Grant) -> list[Permission]:
    rule = grant.rule
    permissions = [Permission(grant, verb, url=url) for verb in rule.verbs for url in rule.non_resource_urls]
    permissions += [Permission(grant, verb, group, resource)
                    for verb in rule.verbs for group in rule.api_groups for resource in rule.resources]
    return permissions


def kustomize_build(directory: Path) -> list[Obj]:
    """The objects of a kustomization that only lists ``resources`` (files or kustomization dirs)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources"}
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unsupported)}; this reader knows "
                         "only `resources` (keep deploy/ that simple, or teach kustomize_build)")
    objects: list[Obj] = []
    for entry in kustomization.get("resources") or ():
        target = directory / entry
        if target.is_dir():
            objects += kustomize_build(target)
        else:
            objects += [doc for doc in yaml.safe_load_all(target.read_text()) if doc]
    return objects
