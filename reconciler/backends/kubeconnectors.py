"""In-cluster connectors at the Kubernetes API: portside's cloudflared Deployments, token Secrets
and PodDisruptionBudgets in its namespace (the shell around :mod:`reconciler.tunnels.connector`).

Reads list Deployments and budgets by portside's labels; Secrets are written and deleted, never
read (RBAC grants no get or list on them). Tunnel tokens live in this object's memory between
read and apply and leave it only as the body of a Secret write; every message that could echo
a request body is scrubbed of them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reconciler.backends.base import ApplyReport
from reconciler.backends.kubeerrors import api_error
from reconciler.common.errors import ConflictError, ProviderError
from reconciler.planning.live import LiveConnectors
from reconciler.planning.plan import Change
from reconciler.tunnels.connector import (
    BUDGET,
    DEPLOYMENT,
    MANAGED_BY,
    SECRET,
    TUNNEL_LABEL,
    digest,
    secret,
)

KINDS = (SECRET, DEPLOYMENT, BUDGET)
SELECTOR = f"{MANAGED_BY}=portside,{TUNNEL_LABEL}"
# System fields dropped from what was read: the planner compares what a user can set.
SYSTEM = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


class KubeConnectors:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core: Any = client.CoreV1Api(api)
        self.apps: Any = client.AppsV1Api(api)
        self.policy: Any = client.PolicyV1Api(api)
        self._versions: dict[tuple[str, str], str] = {}
        self._tokens: dict[str, str] = {}

    def read(self, tokens: dict[str, str], problems: dict[str, str], configmaps: bool) -> LiveConnectors:
        """Portside's connector objects, and the digests of the ``tokens`` the API gave (kept here
        for apply)."""
        self._tokens = dict(tokens)
        self._versions = {}
        deployments = self._read(DEPLOYMENT, self.apps.list_namespaced_deployment, "Deployments")
        budgets = self._read(BUDGET, self.policy.list_namespaced_pod_disruption_budget, "PodDisruptionBudgets")
        return LiveConnectors(cluster=True, deployments=deployments, budgets=budgets,
                              token_digests={name: digest(token) for name, token in tokens.items()},
                              token_problems=dict(problems), configmaps=configmaps)

    def _read(self, kind: str, call: Callable[..., Any], what: str) -> dict[str, dict[str, Any]]:
        try:
            response = call(self.namespace, label_selector=SELECTOR, _preload_content=False)
        except ApiException as exc:
            raise api_error(exc, f"listing connector {what} in {self.namespace}") from exc
        out: dict[str, dict[str, Any]] = {}
        for item in json.loads(response.data).get("items") or []:
            meta = item.get("metadata") or {}
            tunnel = str((meta.get("labels") or {}).get(TUNNEL_LABEL))
            self._versions[(kind, tunnel)] = str(meta.get("resourceVersion") or "")
            item.pop("status", None)
            item["metadata"] = {k: v for k, v in meta.items() if k not in SYSTEM}
            out[tunnel] = item
        return out

    def apply(self, changes: Iterable[Change]) -> ApplyReport:
        """The connector changes among ``changes`` (already in apply order); a failure is
        reported and the others go on (the next run plans what is left)."""
        report = ApplyReport()
        no_secret: set[str] = set()
        for change in changes:
            if change.target.kind not in KINDS:
                continue
            if change.target.kind == DEPLOYMENT and change.action != "delete" and change.target.id in no_secret:
                # The pod template records the token it runs with: written without the Secret, it
                # would claim a token that is not there, and the next run would plan nothing.
                report.errors.append(f"{change.target}: not written: its token Secret was not")
                continue
            try:
                self._apply(change)
            except ProviderError as exc:
                report.errors.append(self._scrub(f"{change.target}: {exc}"))
                if change.target.kind == SECRET:
                    no_secret.add(change.target.id)
                continue
            report.applied += 1
        return report

    def _apply(self, change: Change) -> None:
        kind, tunnel, name = change.target.kind, change.target.id, str(change.detail["name"])
        if kind == SECRET:
            self._write_secret(change, tunnel, name)
            return
        api, noun = (self.apps, "deployment") if kind == DEPLOYMENT else (self.policy, "pod_disruption_budget")
        doing = f"{change.action} {kind} {self.namespace}/{name}"
        try:
            if change.action == "delete":
                self._delete(getattr(api, f"delete_namespaced_{noun}"), name)
                return
            body = json.loads(json.dumps(change.detail["object"]))  # a copy: the plan stays as it was
            body["metadata"]["namespace"] = self.namespace
            if change.action == "create":
                getattr(api, f"create_namespaced_{noun}")(self.namespace, body, _preload_content=False)
            else:  # the whole object is ours; the read's resourceVersion makes a concurrent edit a 409
                body["metadata"]["resourceVersion"] = self._versions.get((kind, tunnel))
                getattr(api, f"replace_namespaced_{noun}")(name, self.namespace, body, _preload_content=False)
        except ApiException as exc:
            raise api_error(exc, doing) from exc

    def _write_secret(self, change: Change, tunnel: str, name: str) -> None:
        doing = f"{change.action} Secret {self.namespace}/{name}"
        try:
            if change.action == "delete":
                self._delete(self.core.delete_namespaced_secret, name)
                return
            token = self._tokens.get(tunnel)
            if token is None:
                raise ProviderError(f"{doing}: the tunnel token was not read in this run")
            body = secret(tunnel, token)
            body["metadata"]["namespace"] = self.namespace
            # Ours whole and never read: a create, or (when one is already there) a replace.
            try:
                if change.action == "create":
                    self.core.create_namespaced_secret(self.namespace, body, _preload_content=False)
                else:
                    self.core.replace_namespaced_secret(name, self.namespace, body, _preload_content=False)
            except ApiException as exc:
                if exc.status == 409 and change.action == "create":
                    self.core.replace_namespaced_secret(name, self.namespace, body, _preload_content=False)
                elif exc.status == 404 and change.action == "update":
                    self.core.create_namespaced_secret(self.namespace, body, _preload_content=False)
                else:
                    raise
        except ApiException as exc:
            error = api_error(exc, doing)
            message = self._scrub(str(error))
            wrapped = ConflictError(message) if isinstance(error, ConflictError) else ProviderError(
                message, temporary=error.temporary, status=error.status)
            raise wrapped from None  # the cause holds the request body: the token

    def _delete(self, call: Callable[..., Any], name: str) -> None:
        try:
            call(name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:  # already gone: what the plan wanted
                raise

    def _scrub(self, message: str) -> str:
        for token in self._tokens.values():
            encoded = base64.b64encode(token.encode()).decode()
            message = message.replace(token, "[token]").replace(encoded, "[token]")
        return message
