"""The connector planners (pure): in-cluster objects against what was read, host units against
their files. No I/O: live state is built by hand, the way the backends hand it over."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.desired.models import Tunnel, TunnelConnector
from reconciler.planning.live import LiveConnectors
from reconciler.planning.plan import Plan
from reconciler.tunnels.connector import (
    BUDGET,
    DEPLOYMENT,
    SECRET,
    budget,
    deployment,
    differences,
    digest,
    plan_connectors,
    secret,
)
from reconciler.tunnels.hostunit import HEADER, UNIT, plan_units, portside_units, unit_text

TOKEN = "eyJhIjoiYWNjb3VudCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0="


def tunnel(name: str = "home", **connector: Any) -> Tunnel:
    spec: dict[str, Any] = {"accountId": "a" * 32, "tunnelName": name}
    if connector:
        spec["connector"] = connector
    return Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": name}, "spec": spec})


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What a real API server answers for ``obj``: list items without kind, plus its defaults."""
    served = {k: v for k, v in copy.deepcopy(obj).items() if k not in ("apiVersion", "kind")}
    served["metadata"].update(uid="u", resourceVersion="7", annotations={"deployment.kubernetes.io/revision": "1"})
    if "template" in served["spec"]:
        served["spec"]["strategy"] = {"type": "RollingUpdate"}
        container = served["spec"]["template"]["spec"]["containers"][0]
        container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
        container["readinessProbe"]["timeoutSeconds"] = 1
        pod = served["spec"]["template"]["spec"]
        if not pod["volumes"]:
            del pod["volumes"]  # empty lists are left out
    return served


def cluster(**kw: Any) -> LiveConnectors:
    return LiveConnectors(cluster=True, **kw)


def kinds(changes: list[Any]) -> dict[str, str]:
    return {c.target.kind: c.action for c in changes}


# -- comparing live objects ------------------------------------------------------------------------


@pytest.mark.parametrize(("want", "have", "paths"), [
    ({"a": 1}, {"a": 1, "b": 2}, []),  # the server's extra fields are not ours
    ({"a": []}, {}, []),  # absent and empty are alike
    ({"a": {}}, {"a": None}, []),
    ({"a": [1, 2]}, {"a": [1]}, ["a"]),
    ({"a": {"b": 1}}, {"a": {"b": 2}}, ["a.b"]),
    ({"nodeSelector": {"x": "1"}}, {"nodeSelector": {"x": "1", "y": "2"}}, ["nodeSelector"]),  # owned whole
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": 1}, {"spec": 1}, []),
])
def test_differences(want: Any, have: Any, paths: list[str]) -> None:
    assert differences(want, have) == paths


# -- in the cluster -------------------------------------------------------------------------------


def test_a_new_connector_is_a_secret_a_deployment_and_a_budget() -> None:
    plan = plan_connectors((tunnel(where="cluster"),), cluster(token_digests={"home": digest(TOKEN)}), {})
    assert [(c.target.kind, c.action) for c in plan.changes] == [
        (SECRET, "create"), (DEPLOYMENT, "create"), (BUDGET, "create")]
    assert plan.changes[0].after == {"keys": ["token"]}


def test_what_was_applied_read_back_plans_nothing() -> None:
    t = tunnel(where="cluster", nodeSelector={"kubernetes.io/os": "linux"},
               resources={"requests": {"cpu": "50m", "memory": "64Mi"}},
               tolerations=[{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}])
    token = digest(TOKEN)
    live = cluster(token_digests={"home": token},
                   deployments={"home": as_served(deployment(t, token, None))},
                   budgets={"home": as_served(budget("home"))})
    plan = plan_connectors((t,), live, {})
    assert {c.action for c in plan.changes} == {"no-op"}, [(c.target, c.reason) for c in plan.changes]


def test_a_new_token_replaces_the_secret_and_rolls_the_pods_without_showing_either() -> None:
    t = tunnel(where="cluster", replicas=1)
    old, new = digest("old-token"), digest(TOKEN)
    live = cluster(token_digests={"home": new}, deployments={"home": as_served(deployment(t, old, None))})
    plan = plan_connectors((t,), live, {})
    assert kinds(plan.changes) == {SECRET: "update", DEPLOYMENT: "update"}
    assert plan.changes[0].reason == "token changed"
    assert plan.changes[1].reason == "roll: the tunnel token changed"
    shown = json.dumps(Plan(tuple(plan.changes)).as_dict())
    assert new not in shown and old not in shown and TOKEN not in shown


def test_a_changed_local_config_rolls_the_connector() -> None:
    t = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel", "metadata": {"name": "home"},
                               "spec": {"mode": "local", "tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef",
                                        "accountId": "a" * 32, "connector": {"where": "cluster", "replicas": 1}}})
    token = digest(TOKEN)
    before = {"tunnel": "x", "ingress": [{"service": "http_status:404"}]}
    after = {"tunnel": "x", "ingress": [{"hostname": "a.example.dev", "service": "http://10.0.0.1"},
                                        {"service": "http_status:404"}]}
    live = cluster(token_digests={"home": token}, deployments={"home": as_served(deployment(t, token, before))})
    same = plan_connectors((t,), live, {"home": before})
    assert {c.action for c in same.changes} == {"no-op"}
    rolled = plan_connectors((t,), live, {"home": after})
    assert [c.reason for c in rolled.changes if c.action == "update"] == ["roll: the tunnel's config changed"]


def test_one_replica_has_no_budget() -> None:
    t = tunnel(where="cluster", replicas=1)
    token = digest(TOKEN)
    live = cluster(token_digests={"home": token}, deployments={"home": as_served(deployment(t, token, None))},
                   budgets={"home": as_served(budget("home"))})
    assert kinds(plan_connectors((t,), live, {}).changes) == {SECRET: "no-op", DEPLOYMENT: "no-op",
                                                               BUDGET: "delete"}


def test_connectors_no_tunnel_asks_for_are_pruned() -> None:
    t = tunnel(where="cluster")
    token = digest(TOKEN)
    live = cluster(deployments={"home": as_served(deployment(t, token, None)),
                                "lab": as_served(deployment(tunnel("lab", where="cluster"), token, None))},
                   budgets={"lab": as_served(budget("lab"))})
    host = tunnel("home", where="host")
    plan = plan_connectors((host,), live, {})
    assert sorted((c.target.kind, c.target.id, c.action) for c in plan.changes) == [
        (BUDGET, "lab", "delete"), (DEPLOYMENT, "home", "delete"), (DEPLOYMENT, "lab", "delete"),
        (SECRET, "home", "delete"), (SECRET, "lab", "delete")]
    reasons = {c.target.id: c.reason for c in plan.changes}
    assert reasons["home"] == "remove: the Tunnel's connector no longer runs in the cluster"
    assert reasons["lab"] == "remove: the Tunnel is no longer declared"


def test_without_a_token_what_runs_is_kept_and_the_plan_says_why() -> None:
    t = tunnel(where="cluster")
    live = cluster(deployments={"home": as_served(deployment(t, "d", None))},
                   token_problems={"home": "Cloudflare token lacks Account:Cloudflare Tunnel:Edit"})
    plan = plan_connectors((t,), live, {})
    assert plan.changes == []
    assert plan.warnings == ["connector of tunnel home not planned: Cloudflare token lacks "
                             "Account:Cloudflare Tunnel:Edit"]


def test_a_backend_without_a_cluster_plans_no_in_cluster_connector() -> None:
    for live in (None, LiveConnectors(host_dir="/state/cloudflared")):
        plan = plan_connectors((tunnel(where="cluster"),), live, {})
        assert plan.changes == [] and "need a Kubernetes backend" in plan.warnings[0]


def test_the_secret_holds_the_token_base64_and_is_labelled() -> None:
    body = secret("home", TOKEN)
    assert body["metadata"]["labels"]["portside.io/tunnel"] == "home"
    assert TOKEN not in json.dumps(body)  # only its base64 form


# -- on the host ----------------------------------------------------------------------------------


def test_host_units_are_written_kept_and_removed() -> None:
    t = tunnel(where="host")
    text = unit_text(t, "/state/cloudflared/home.yml")
    assert "--token-file /etc/cloudflared/home.token" in text and "--config" not in text  # remote
    live = LiveConnectors(host_dir="/state/cloudflared")
    changes, _ = plan_units((t,), live)
    assert [(c.target.kind, c.action) for c in changes] == [(UNIT, "create")]
    assert changes[0].after == {"path": "cloudflared/home.service", "command": (
        "/usr/bin/cloudflared --no-autoupdate tunnel --metrics 127.0.0.1:2000 run "
        "--token-file /etc/cloudflared/home.token")}
    written = LiveConnectors(host_dir="/state/cloudflared", units={"home": text, "old": HEADER + "[Unit]\n"})
    changes, _ = plan_units((t,), written)
    assert [(c.target.id, c.action) for c in changes] == [("home", "no-op"), ("old", "delete")]
    changes, warnings = plan_units((t,), cluster())
    assert changes == [] and "local mode" in warnings[0]


def test_only_units_with_portsides_header_are_its_own() -> None:
    assert portside_units({"a": HEADER + "x", "b": "[Unit]\n"}) == {"a": HEADER + "x"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"where": "host", "replicas": 3}, "replicas: only for where: cluster"),
    ({"where": "cluster", "tokenFile": "/x"}, "tokenFile: only for where: host"),
    ({"where": "cluster", "resources": {"requests": {"cpu": "lots"}}}, "should match pattern"),
    ({"where": "cluster", "tolerations": [{"operator": "Exists", "value": "x"}]}, "takes no value"),
    ({"where": "host", "cloudflaredPath": "cloudflared"}, "should match pattern"),
])
def test_connector_fields_that_make_no_sense_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TunnelConnector.model_validate(fields)
