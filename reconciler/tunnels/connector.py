"""In-cluster connectors (pure): a Tunnel's cloudflared Deployment, token Secret and budget.

A Tunnel with ``connector: {where: cluster}`` gets, in portside's namespace, a Deployment
``portside-cloudflared-<tunnel>`` that runs ``cloudflared tunnel run`` with the tunnel token from
the Secret of the same name (and, for a ``local`` tunnel, the config ConfigMap portside already
writes, mounted), and a PodDisruptionBudget when it has more than one replica. All of them carry
portside's labels, which is how they are found again and pruned when the Tunnel goes.

The token never enters a plan: the Secret's change shows only that its key changes. What tells
a changed token is a one-way digest the pod template carries as an annotation (so a new token
also rolls the pods, which read it once at start) against the digest of the token the API gives
now; portside never reads a Secret back. A local tunnel's config digest rides on the pod template
the same way, since cloudflared does not reload its config.

Live objects are compared to the desired ones as a subset (the API server adds defaults: pull
policy, probe timeouts, strategy), except maps portside owns whole, which must match exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.desired.models import Tunnel, TunnelConnector
from reconciler.planning.live import LiveConnectors
from reconciler.planning.plan import JSON, Action, Change, Target

MANAGED_BY = "app.kubernetes.io/managed-by"
APP = "app.kubernetes.io/name"
TUNNEL_LABEL = "portside.io/tunnel"
CONFIG_DIGEST = "portside.io/config-digest"
TOKEN_DIGEST = "portside.io/token-digest"
TOKEN_KEY = "token"
PREFIX = "portside-cloudflared-"
CONFIG_MOUNT = "/etc/cloudflared"
CONFIG_KEY = "config.yml"  # the key of the ConfigMap a local tunnel's config is written to
# The official image's user (distroless nonroot); runAsNonRoot needs it numeric.
NONROOT = 65532
# Maps portside owns whole: a key removed from the Tunnel must go from the live object too.
EXACT = frozenset({"nodeSelector", "requests", "limits"})

DEPLOYMENT, SECRET, BUDGET = "ConnectorDeployment", "ConnectorSecret", "ConnectorBudget"


def object_name(tunnel: str) -> str:
    """The name of every connector object of ``tunnel`` (Deployment, Secret, budget)."""
    return PREFIX + tunnel


def labels(tunnel: str) -> dict[str, str]:
    return {MANAGED_BY: "portside", APP: "cloudflared", TUNNEL_LABEL: tunnel}


def selector(tunnel: str) -> dict[str, str]:
    return {APP: "cloudflared", TUNNEL_LABEL: tunnel}


def digest(text: str) -> str:
    """A short one-way digest (of a token or a config): tells a change, reveals nothing."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_digest(config: JSON) -> str:
    return digest(json.dumps(config, sort_keys=True, separators=(",", ":")))


def deployment(tunnel: Tunnel, token_digest: str, config: JSON | None) -> dict[str, JSON]:
    """The connector Deployment (no namespace: the backend puts it in portside's)."""
    name = tunnel.metadata.name
    connector = tunnel.spec.connector
    assert connector is not None and connector.where == "cluster"
    args = ["tunnel", "--no-autoupdate", "--metrics", f"0.0.0.0:{connector.metricsPort}"]
    annotations = {TOKEN_DIGEST: token_digest}
    volumes: list[JSON] = []
    mounts: list[JSON] = []
    if config is not None:  # a local tunnel: its config (ingress rules) comes from the ConfigMap
        args += ["--config", f"{CONFIG_MOUNT}/{CONFIG_KEY}"]
        annotations[CONFIG_DIGEST] = config_digest(config)
        volumes.append({"name": "config", "configMap": {"name": object_name(name),
                                                         "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}})
        mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
    args.append("run")
    container: dict[str, JSON] = {
        "name": "cloudflared",
        "image": connector.image,
        "command": ["cloudflared"],
        "args": args,
        "env": [{"name": "TUNNEL_TOKEN",
                 "valueFrom": {"secretKeyRef": {"name": object_name(name), "key": TOKEN_KEY}}}],
        "ports": [{"name": "metrics", "containerPort": connector.metricsPort, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "metrics"},
                           "initialDelaySeconds": 2, "periodSeconds": 10, "failureThreshold": 3},
        "resources": _resources(connector),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    pod: dict[str, JSON] = {
        "automountServiceAccountToken": False,
        # The sysctl (a "safe" one, allowed by default) lets the nonroot user open the unprivileged
        # ICMP sockets cloudflared proxies pings with; without it that feature is off.
        "securityContext": {"runAsNonRoot": True, "runAsUser": NONROOT, "runAsGroup": NONROOT,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [{"name": "net.ipv4.ping_group_range",
                                         "value": f"{NONROOT} {NONROOT}"}]},
        # Replicas on different nodes where there are several: a node going down must not take
        # every connector of the tunnel with it (preferred, so one node still runs them all).
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": selector(name)}}}]}},
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": dict(connector.nodeSelector),
        "tolerations": [t.model_dump(exclude_none=True) for t in connector.tolerations],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": object_name(name), "labels": labels(name)},
        "spec": {
            "replicas": connector.replicas,
            "selector": {"matchLabels": selector(name)},
            "template": {"metadata": {"labels": labels(name), "annotations": annotations}, "spec": pod},
        },
    }


def _resources(connector: TunnelConnector) -> dict[str, JSON]:
    if connector.resources is None:
        return {}
    out: dict[str, JSON] = {}
    for key in ("requests", "limits"):
        quantities = getattr(connector.resources, key)
        if quantities is not None:
            out[key] = quantities.model_dump(exclude_none=True)
    return out


def budget(tunnel: str) -> dict[str, JSON]:
    """At least one connector stays up through a node drain."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": object_name(tunnel), "labels": labels(tunnel)},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(tunnel)}}}


def secret(tunnel: str, token: str) -> dict[str, JSON]:
    """The token Secret. Built at apply time only, from a token held in memory: never planned."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": object_name(tunnel), "labels": labels(tunnel)},
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def differences(want: JSON, have: JSON, path: str = "", exact: bool = False) -> list[str]:
    """Paths where ``have`` (live) does not hold what ``want`` says; absent and empty are alike.

    ``apiVersion`` and ``kind`` are left out at the top: list answers leave them out of items."""
    if not path and isinstance(want, Mapping):
        want = {k: v for k, v in want.items() if k not in ("apiVersion", "kind")}
    if want in (None, {}, []) and have in (None, {}, []):
        return []
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [path or "."]
        out = []
        if exact and set(have) - set(want):
            out.append(path)
        for key, value in want.items():
            out += differences(value, have.get(key), f"{path}.{key}" if path else key, key in EXACT)
        return out
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path]
        return [p for i, (w, h) in enumerate(zip(want, have, strict=True))
                for p in differences(w, h, f"{path}[{i}]")]
    return [] if want == have else [path]


def deployment_view(obj: Mapping[str, JSON] | None) -> JSON:
    """What the plan shows of a connector Deployment (both sides read the same way)."""
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    container: Mapping[str, JSON] = next(iter(pod.get("containers") or []), {})
    ports = container.get("ports") or [{}]
    view: dict[str, JSON] = {"replicas": spec.get("replicas"), "image": container.get("image"),
                             "metricsPort": ports[0].get("containerPort")}
    for key in ("nodeSelector", "tolerations"):
        if pod.get(key):
            view[key] = pod[key]
    if container.get("resources"):
        view["resources"] = container["resources"]
    config = ((template.get("metadata") or {}).get("annotations") or {}).get(CONFIG_DIGEST)
    if config:
        view["config"] = config  # a digest of the config file (not a secret): shows that it rolls
    return view


def budget_view(obj: Mapping[str, JSON]) -> JSON:
    return {"minAvailable": (obj.get("spec") or {}).get("minAvailable")}


def _reason(paths: list[str]) -> str:
    token = any(p.endswith(TOKEN_DIGEST) for p in paths)
    config = any(p.endswith(CONFIG_DIGEST) for p in paths)
    rest = [p for p in paths if not p.endswith((TOKEN_DIGEST, CONFIG_DIGEST))]
    parts = []
    if config:
        parts.append("roll: the tunnel's config changed")
    if token:
        parts.append("roll: the tunnel token changed")
    if rest:
        shown = ", ".join(rest[:3]) + (f" and {len(rest) - 3} more" if len(rest) > 3 else "")
        parts.append(f"change {shown}")
    return "; ".join(parts)


@dataclass
class ConnectorPlan:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


SECRET_VIEW: JSON = {"keys": [TOKEN_KEY]}


def plan_connectors(tunnels: tuple[Tunnel, ...], live: LiveConnectors | None,
                    configs: Mapping[str, JSON]) -> ConnectorPlan:
    """Changes to the in-cluster connectors of ``tunnels`` against ``live`` (None: not read).

    ``configs`` maps a local tunnel's name to the config planned for it (its digest rolls the
    connector). A tunnel whose token could not be read keeps what runs (nothing is planned or
    pruned for it) and says why.
    """
    plan = ConnectorPlan()
    wanted = [t for t in tunnels if t.spec.connector is not None and t.spec.connector.where == "cluster"]
    if live is None or not live.cluster:
        if wanted:
            plan.warnings.append(f"in-cluster connectors of tunnel(s) {', '.join(t.metadata.name for t in wanted)} "
                                 "not planned: they need a Kubernetes backend (--kubeconfig or in-cluster)")
        return plan
    kept: set[str] = set()
    for tunnel in wanted:
        name = tunnel.metadata.name
        kept.add(name)
        if tunnel.spec.mode == "local" and not live.configmaps:
            plan.warnings.append(f"connector of tunnel {name} not planned: it mounts the tunnel's config "
                                 "ConfigMap, and --local-tunnels-dir writes the config to a directory instead")
            continue
        token = live.token_digests.get(name)
        if token is None:
            why = live.token_problems.get(name, "its token was not read (set CLOUDFLARE_API_TOKEN)")
            plan.warnings.append(f"connector of tunnel {name} not planned: {why}")
            continue
        _plan_one(tunnel, token, live, configs.get(name) if tunnel.spec.mode == "local" else None, plan)
    for name in sorted((set(live.deployments) | set(live.budgets)) - kept):
        why = "the Tunnel is no longer declared" if name not in {t.metadata.name for t in tunnels} \
            else "the Tunnel's connector no longer runs in the cluster"
        if name in live.budgets:
            plan.changes.append(_change(BUDGET, name, "delete", budget_view(live.budgets[name]), None,
                                        f"remove: {why}"))
        if name in live.deployments:
            plan.changes.append(_change(DEPLOYMENT, name, "delete", deployment_view(live.deployments[name]),
                                        None, f"remove: {why}"))
        plan.changes.append(_change(SECRET, name, "delete", SECRET_VIEW, None, f"remove: {why}"))
    return plan


def _change(kind: str, tunnel: str, action: Action, before: JSON, after: JSON, reason: str,
            obj: JSON = None) -> Change:
    detail: dict[str, JSON] = {"name": object_name(tunnel), "tunnel": tunnel}
    if obj is not None:
        detail["object"] = obj
    return Change(Target(kind, tunnel), action, before, after, reason, detail)


def _plan_one(tunnel: Tunnel, token: str, live: LiveConnectors, config: JSON | None, plan: ConnectorPlan) -> None:
    name = tunnel.metadata.name
    connector = tunnel.spec.connector
    assert connector is not None
    want = deployment(tunnel, token, config)
    have = live.deployments.get(name)
    recorded = None
    if have is not None:
        template = (have.get("spec") or {}).get("template") or {}
        recorded = ((template.get("metadata") or {}).get("annotations") or {}).get(TOKEN_DIGEST)
    # The Secret first (apply order): the pods it rolls then start with the new token.
    if have is None:
        plan.changes.append(_change(SECRET, name, "create", None, SECRET_VIEW, "the connector's tunnel token"))
    elif recorded != token:
        plan.changes.append(_change(SECRET, name, "update", SECRET_VIEW, SECRET_VIEW, "token changed"))
    else:
        plan.changes.append(_change(SECRET, name, "no-op", SECRET_VIEW, SECRET_VIEW, "up to date"))
    after = deployment_view(want)
    if have is None:
        plan.changes.append(_change(DEPLOYMENT, name, "create", None, after,
                                    f"run cloudflared for tunnel {name} ({connector.replicas} replicas)", want))
    else:
        paths = differences(want, have)
        plan.changes.append(_change(DEPLOYMENT, name, "update" if paths else "no-op", deployment_view(have), after,
                                    _reason(paths) if paths else "up to date", want))
    live_budget = live.budgets.get(name)
    if connector.replicas > 1:
        wanted_budget = budget(name)
        view = {"minAvailable": 1}
        if live_budget is None:
            plan.changes.append(_change(BUDGET, name, "create", None, view,
                                        "keep one connector up through node drains", wanted_budget))
        else:
            paths = differences(wanted_budget, live_budget)
            plan.changes.append(_change(BUDGET, name, "update" if paths else "no-op", budget_view(live_budget), view,
                                        _reason(paths) if paths else "up to date", wanted_budget))
    elif live_budget is not None:
        plan.changes.append(_change(BUDGET, name, "delete", budget_view(live_budget), None,
                                    "one replica: a budget would block every node drain"))
