"""Tunnel connectors through the CLI: an in-cluster cloudflared Deployment + token Secret + budget
against the fake Cloudflare API and the cluster (fake or real), and a host systemd unit in local
mode that `systemd-analyze verify` accepts.

The tunnel token is the secret here: every test checks that it appears in no output."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reconciler.common.errors import ProviderError
from reconciler.providers.cloudflare import CloudflareProvider
from tests.conftest import CliResult, run_cli, write_repo
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.kube import Cluster

ACCOUNT = "0123456789abcdef0123456789abcdef"
NAME = "portside-cloudflared-home"

REMOTE = """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: home}
    spec:
      accountId: %(account)s
      tunnelName: home
      dns: {manage: false}
      connector:
        where: cluster
        %(extra)s
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: wiki}
    spec: {tunnel: home, hostname: wiki.example.dev, url: "http://10.0.0.5:8080"}
"""

LOCAL = """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: home}
    spec:
      mode: local
      accountId: %(account)s
      tunnelId: %(tunnel_id)s
      connector: {where: cluster, replicas: 1}
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: wiki}
    spec: {tunnel: home, hostname: wiki.example.dev, url: "%(url)s"}
"""


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudflare]:
    with FakeCloudflare(account_id=ACCOUNT) as cf:
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf.token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
        yield cf


def cli(cluster: Cluster, command: str, repo: Path, *extra: str) -> CliResult:
    return run_cli(command, str(repo), "--kubeconfig", str(cluster.kubeconfig), "--namespace",
                   cluster.namespace, *extra)


def plan_json(cluster: Cluster, repo: Path) -> tuple[dict[str, Any], CliResult]:
    result = cli(cluster, "diff", repo, "--format", "json")
    assert result.code == 0, result.err
    return json.loads(result.out), result


def changes(plan: dict[str, Any], prefix: str = "Connector") -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["target"]["kind"], c["action"]): c for c in plan["changes"]
            if c["target"]["kind"].startswith(prefix)}


def no_token(token: str, *results: CliResult) -> None:
    encoded = base64.b64encode(token.encode()).decode()
    for result in results:
        for text in (result.out, result.err):
            assert token not in text and encoded not in text


def apps(cluster: Cluster) -> Any:
    return client.AppsV1Api(cluster.api)


def policy(cluster: Cluster) -> Any:
    return client.PolicyV1Api(cluster.api)


def read(cluster: Cluster, kind: str) -> dict[str, Any] | None:
    call = {"Deployment": (apps(cluster), "read_namespaced_deployment"),
            "Secret": (cluster.core, "read_namespaced_secret"),
            "PodDisruptionBudget": (policy(cluster), "read_namespaced_pod_disruption_budget")}[kind]
    try:
        response = getattr(*call)(NAME, cluster.namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(json.loads(response.data))


def secret_token(cluster: Cluster) -> str:
    found = read(cluster, "Secret")
    assert found is not None
    return base64.b64decode(found["data"]["token"]).decode()


def remote_repo(root: Path, extra: str = "replicas: 2") -> Path:
    return write_repo(root, {"tunnel.yaml": REMOTE % {"account": ACCOUNT, "extra": extra}})


@pytest.mark.kube
def test_in_cluster_connector_applies_converges_rolls_and_prunes(
        cluster: Cluster, cloudflare: FakeCloudflare, tmp_path: Path) -> None:
    tunnel_id = cloudflare.add_tunnel(ACCOUNT, "home")["id"]
    token = cloudflare.tunnel_token(tunnel_id)
    repo = remote_repo(tmp_path / "repo", "replicas: 2\n        nodeSelector: {kubernetes.io/os: linux}")

    plan, diff = plan_json(cluster, repo)
    found = changes(plan)
    assert set(found) == {("ConnectorSecret", "create"), ("ConnectorDeployment", "create"),
                          ("ConnectorBudget", "create")}
    assert found[("ConnectorSecret", "create")]["after"] == {"keys": ["token"]}
    assert found[("ConnectorDeployment", "create")]["after"]["replicas"] == 2
    assert not cluster.proxy.writes()

    applied = cli(cluster, "apply", repo)
    assert applied.code == 0, applied.err
    no_token(token, diff, applied)
    deployment = read(cluster, "Deployment")
    assert deployment is not None
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "portside" and labels["portside.io/tunnel"] == "home"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["tunnel", "--no-autoupdate", "--metrics", "0.0.0.0:2000", "run"]
    assert container["env"] == [{"name": "TUNNEL_TOKEN",
                                 "valueFrom": {"secretKeyRef": {"name": NAME, "key": "token"}}}]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/ready", "metrics")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert deployment["spec"]["replicas"] == 2
    assert secret_token(cluster) == token
    budget = read(cluster, "PodDisruptionBudget")
    assert budget is not None and budget["spec"]["minAvailable"] == 1

    # Converged: a second run reads (the token too) and writes nothing, here or at Cloudflare.
    cluster.proxy.clear_log()
    cloudflare.clear_log()
    again = cli(cluster, "apply", repo)
    assert again.code == 0, again.err
    assert not cluster.proxy.writes(), [(r.method, r.path) for r in cluster.proxy.writes()]
    assert not cloudflare.writes()
    assert cloudflare.calls("GET", f"/cfd_tunnel/{tunnel_id}/token$")

    # A snapshot for offline diffs holds nothing of the connector, its token's digest least of all.
    saved = cli(cluster, "snapshot", repo, "--out", str(tmp_path / "live.json"))
    assert saved.code == 0, saved.err
    snapshot = (tmp_path / "live.json").read_text()
    deployment = read(cluster, "Deployment")
    assert deployment is not None
    recorded = deployment["spec"]["template"]["metadata"]["annotations"]["portside.io/token-digest"]
    assert recorded not in snapshot and token not in snapshot and NAME not in snapshot
    offline = run_cli("diff", str(repo), "--snapshot", str(tmp_path / "live.json"), "--format", "json")
    assert not changes(json.loads(offline.out)), offline.out

    # A new tunnel secret: the Secret changes (shown without its value) and the pods roll.
    cloudflare.set_tunnel_secret(tunnel_id)
    new_token = cloudflare.tunnel_token(tunnel_id)
    plan, diff = plan_json(cluster, repo)
    found = changes(plan)
    assert found[("ConnectorSecret", "update")]["reason"] == "token changed"
    assert found[("ConnectorSecret", "update")]["before"] == {"keys": ["token"]}
    assert "the tunnel token changed" in found[("ConnectorDeployment", "update")]["reason"]
    rolled = cli(cluster, "apply", repo)
    assert rolled.code == 0, rolled.err
    no_token(token, diff, rolled)
    no_token(new_token, diff, rolled)
    assert secret_token(cluster) == new_token

    # One replica: no budget (it would block every node drain); the nodeSelector key goes too.
    one = remote_repo(tmp_path / "repo", "replicas: 1")
    plan, _ = plan_json(cluster, one)
    found = changes(plan)
    assert set(found) == {("ConnectorDeployment", "update"), ("ConnectorBudget", "delete")}
    assert cli(cluster, "apply", one).code == 0
    assert read(cluster, "PodDisruptionBudget") is None
    deployment = read(cluster, "Deployment")
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert not deployment["spec"]["template"]["spec"].get("nodeSelector")

    # The Tunnel goes: so do its connector objects.
    (repo / "tunnel.yaml").unlink()
    plan, _ = plan_json(cluster, repo)
    assert set(changes(plan)) == {("ConnectorDeployment", "delete"), ("ConnectorSecret", "delete")}
    pruned = cli(cluster, "apply", repo, "--allow-mass-delete")  # all portside owns here
    assert pruned.code == 0, pruned.err
    assert read(cluster, "Deployment") is None and read(cluster, "Secret") is None
    assert cli(cluster, "diff", repo, "--exit-code").code == 0


@pytest.mark.kube
def test_drift_is_put_back_and_the_secret_is_never_read(
        cluster: Cluster, cloudflare: FakeCloudflare, tmp_path: Path) -> None:
    cloudflare.add_tunnel(ACCOUNT, "home")
    repo = remote_repo(tmp_path / "repo")
    assert cli(cluster, "apply", repo).code == 0
    apps(cluster).patch_namespaced_deployment(NAME, cluster.namespace, {"spec": {"replicas": 5}})
    policy(cluster).patch_namespaced_pod_disruption_budget(NAME, cluster.namespace, {"spec": {"minAvailable": 3}})
    plan, _ = plan_json(cluster, repo)
    found = changes(plan)
    assert set(found) == {("ConnectorDeployment", "update"), ("ConnectorBudget", "update")}
    assert found[("ConnectorDeployment", "update")]["reason"] == "change spec.replicas"
    cluster.proxy.clear_log()
    assert cli(cluster, "apply", repo).code == 0
    deployment, budget = read(cluster, "Deployment"), read(cluster, "PodDisruptionBudget")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert budget is not None and budget["spec"]["minAvailable"] == 1
    assert not cluster.proxy.requests("GET", "/secrets")


@pytest.mark.kube
def test_a_local_tunnels_connector_mounts_its_config_and_rolls_when_it_changes(
        cluster: Cluster, cloudflare: FakeCloudflare, tmp_path: Path) -> None:
    tunnel_id = cloudflare.add_tunnel(ACCOUNT, "home", config_src="local")["id"]
    values = {"account": ACCOUNT, "tunnel_id": tunnel_id, "url": "http://10.0.0.5:8080"}
    repo = write_repo(tmp_path / "repo", {"tunnel.yaml": LOCAL % values})
    assert cli(cluster, "apply", repo).code == 0
    deployment = read(cluster, "Deployment")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert "--config" in pod["containers"][0]["args"]
    assert pod["volumes"][0]["configMap"]["name"] == NAME  # the ConfigMap portside writes the config to
    assert cluster.config_map(NAME) is not None
    digest = deployment["spec"]["template"]["metadata"]["annotations"]["portside.io/config-digest"]
    assert read(cluster, "PodDisruptionBudget") is None  # one replica

    write_repo(repo, {"tunnel.yaml": LOCAL % {**values, "url": "http://10.0.0.6:8080"}})
    plan, _ = plan_json(cluster, repo)
    found = changes(plan)
    assert found[("ConnectorDeployment", "update")]["reason"] == "roll: the tunnel's config changed"
    assert ("ConnectorSecret", "update") not in found
    assert cli(cluster, "apply", repo).code == 0
    deployment = read(cluster, "Deployment")
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"]["portside.io/config-digest"] != digest


@pytest.mark.kube
def test_without_a_cloudflare_token_the_connector_waits_and_says_why(cluster: Cluster, tmp_path: Path) -> None:
    repo = remote_repo(tmp_path / "repo")
    result = cli(cluster, "diff", repo, "--format", "json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert not changes(plan)
    assert any("connector of tunnel home not planned" in w and "CLOUDFLARE_API_TOKEN" in w
               for w in plan.get("warnings", []))


# -- on the host: a systemd unit in local mode ---------------------------------------------------

HOST = """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: %(name)s}
    spec:
      %(spec)s
      connector: {where: host, cloudflaredPath: %(binary)s%(extra)s}
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: %(name)s-wiki}
    spec: {tunnel: %(name)s, hostname: %(name)s.example.dev, url: "http://10.0.0.5:8080"}
"""


def fake_cloudflared(tmp_path: Path) -> Path:
    """An executable where the unit says cloudflared is (systemd-analyze checks that it exists)."""
    binary = tmp_path / "bin" / "cloudflared"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed "
                    "(apt-get install systemd)")
def test_host_connector_writes_a_unit_systemd_accepts(tmp_path: Path, cloudflare: FakeCloudflare) -> None:
    binary = fake_cloudflared(tmp_path)
    cloudflare.add_tunnel(ACCOUNT, "away")
    state = tmp_path / "state 100%"  # ExecStart quotes the space and escapes the specifier
    local_spec = ("mode: local\n      tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef\n"
                  "      credentialsFile: /etc/cloudflared/home.json")
    remote_spec = f"accountId: {ACCOUNT}\n      tunnelName: away\n      dns: {{manage: false}}"
    repo = write_repo(tmp_path / "repo", {
        "home.yaml": HOST % {"name": "home", "spec": local_spec, "binary": binary, "extra": ""},
        "away.yaml": HOST % {"name": "away", "spec": remote_spec, "binary": binary, "extra": ", metricsPort: 2001"},
    })
    result = run_cli("apply", str(repo), "--state", str(state))
    assert result.code == 0, result.err
    home, away = state / "cloudflared" / "home.service", state / "cloudflared" / "away.service"
    config = (state / "cloudflared" / "home.yml").resolve()
    text = home.read_text()
    assert (f'ExecStart={binary} --no-autoupdate --config "{str(config).replace("%", "%%")}" '
            "tunnel --metrics 127.0.0.1:2000 run\n") in text
    assert "Type=notify" in text and "Restart=on-failure" in text
    assert "--metrics 127.0.0.1:2001 run --token-file /etc/cloudflared/away.token\n" in away.read_text()
    for unit in (home, away):
        checked = verify(unit)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert unit.name not in checked.stderr, checked.stderr  # no warning about the unit itself

    again = run_cli("diff", str(repo), "--state", str(state), "--exit-code")
    assert again.code == 0, again.out
    (repo / "away.yaml").unlink()
    removed = run_cli("apply", str(repo), "--state", str(state))
    assert removed.code == 0, removed.err
    assert "ConnectorUnit away" in removed.out
    assert not away.exists() and home.exists()


def test_host_connector_fields_are_checked_with_their_place(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"tunnel.yaml": """
        apiVersion: portside.io/v1alpha1
        kind: Tunnel
        metadata: {name: home}
        spec:
          mode: local
          tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef
          connector: {where: host}
        ---
        apiVersion: portside.io/v1alpha1
        kind: Tunnel
        metadata: {name: lab}
        spec:
          mode: local
          tunnelId: 7ff42ae2-765d-4adf-8112-31c55c1551ef
          connector:
            where: host
            replicas: 3
        ---
        apiVersion: portside.io/v1alpha1
        kind: Tunnel
        metadata: {name: edge}
        spec:
          mode: local
          tunnelId: 8ff42ae2-765d-4adf-8112-31c55c1551ef
          connector:
            where: cluster
            nodeSelector: {"bad key!": x}
    """})
    result = run_cli("validate", str(repo))
    assert result.code == 1
    assert "tunnel.yaml:7" in result.out + result.err  # the local tunnel without credentials
    assert "replicas: only for where: cluster" in result.out + result.err
    assert "set tunnelId and accountId" in result.out + result.err
    assert "is not a label key" in result.out + result.err


def test_the_token_endpoint_wants_tunnel_edit_and_errors_never_carry_a_token(cloudflare: FakeCloudflare) -> None:
    tunnel_id = cloudflare.add_tunnel(ACCOUNT, "home")["id"]
    provider = CloudflareProvider(cloudflare.token, base_url=cloudflare.base_url)
    try:
        token = provider.read_tunnel_token(ACCOUNT, tunnel_id)
        decoded = json.loads(base64.b64decode(token))
        assert decoded["a"] == ACCOUNT and decoded["t"] == tunnel_id and len(base64.b64decode(decoded["s"])) == 32
        cloudflare.deny("cfd_tunnel:edit")
        with pytest.raises(ProviderError, match="lacks Account:Cloudflare Tunnel:Edit") as caught:
            provider.read_tunnel_token(ACCOUNT, tunnel_id)
        assert token not in str(caught.value)
    finally:
        provider.close()


@pytest.mark.kube
def test_a_failed_secret_write_holds_the_deployment_back_and_the_next_run_converges(
        cluster: Cluster, cloudflare: FakeCloudflare, tmp_path: Path) -> None:
    tunnel_id = cloudflare.add_tunnel(ACCOUNT, "home")["id"]
    token = cloudflare.tunnel_token(tunnel_id)
    encoded = base64.b64encode(token.encode()).decode()
    repo = remote_repo(tmp_path / "repo")
    # A server that echoes the value it refuses, as validation messages do.
    cluster.proxy.fail_next("POST", r"/secrets$", 422, message=f"Secret is invalid: data[token]: {encoded}")
    failed = cli(cluster, "apply", repo)
    assert failed.code != 0
    assert "ConnectorSecret home" in failed.err and "[token]" in failed.err, failed.err
    no_token(token, failed)
    assert "ConnectorDeployment home: not written: its token Secret was not" in failed.err
    assert read(cluster, "Deployment") is None and read(cluster, "Secret") is None

    healed = cli(cluster, "apply", repo)
    assert healed.code == 0, healed.err
    assert secret_token(cluster) == token and read(cluster, "Deployment") is not None
    assert cli(cluster, "diff", repo, "--exit-code").code == 0


def test_two_host_connectors_cannot_share_a_metrics_port(tmp_path: Path) -> None:
    one = """
        apiVersion: portside.io/v1alpha1
        kind: Tunnel
        metadata: {name: %s}
        spec:
          mode: local
          tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef
          credentialsFile: /etc/cloudflared/x.json
          connector: {where: host}
    """
    repo = write_repo(tmp_path / "repo", {"a.yaml": one % "a", "b.yaml": one % "b"})
    result = run_cli("validate", str(repo))
    assert result.code == 1
    assert 'b.yaml:8:' in result.out + result.err and 'metrics port of tunnel "a"' in result.out + result.err
