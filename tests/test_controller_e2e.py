"""`portside run` end to end: a real git repository, real processes, the fake Kubernetes API server
and the fake Cloudflare API. Everything is observed from outside: /status, /metrics, the fakes'
stored objects, the local state directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_git_source import Remote

from reconciler.controller.webhook import sign
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.kube import Cluster, Objects

SECRET = b"webhook-secret-for-tests"
CF_TOKEN = "cf-token-e2e-0123456789abcdef"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")


class Portside:
    """One `portside run` process; its log lines are collected, its port read from them."""

    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        secret = tmp / "webhook-secret"
        secret.write_bytes(SECRET + b"\n")
        command = [sys.executable, "-m", "reconciler", "run", "--listen", "127.0.0.1:0",
                   "--webhook-secret-file", str(secret), "--cache-dir", str(tmp / f"cache-{name}"),
                   "--identity", name, *args]
        clean = {k: v for k, v in os.environ.items()
                 if k not in ("KUBECONFIG", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_BASE_URL")}
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        env={**clean, "HOME": str(tmp), **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        found = wait_for(lambda: next((m for line in list(self.lines)
                                       if (m := re.search(r"on port (\d+)", line))), None)
                         or self.process.poll() is not None, timeout=20, what=f"{name} listening")
        if self.process.poll() is not None:
            raise AssertionError(f"{name} exited:\n" + "\n".join(self.lines))
        self.port = int(found.group(1))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/status")[1]))

    def metric(self, name: str) -> float:
        text = self.get("/metrics")[1].decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def webhook(self, body: bytes = b'{"ref": "refs/heads/main"}', signature: str | None = None) -> int:
        headers = {"X-Hub-Signature-256": signature or sign(SECRET, body), "X-GitHub-Event": "push"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks/git", data=body, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def applied(self, revision: str) -> bool:
        return bool(self.status()["lastAppliedRevision"] == revision)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Portside]]:
    started: list[Portside] = []
    yield started
    for process in started:
        if process.process.poll() is None:
            process.kill()


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip()


POOL = yaml("""
    apiVersion: metallb.io/v1beta1
    kind: IPAddressPool
    metadata: {name: lan, namespace: metallb-system}
    spec:
      addresses: [10.9.0.10-10.9.0.60]
    ---
    apiVersion: metallb.io/v1beta1
    kind: L2Advertisement
    metadata: {name: lan, namespace: metallb-system}
    """)


def exposure(name: str) -> str:
    return yaml(f"""
        apiVersion: portside.io/v1alpha1
        kind: ServiceExposure
        metadata: {{name: {name}}}
        spec:
          service: {{namespace: default, name: {name}}}
          pool: lan
          ports: [{{port: 80}}]
        """)


def local_services(state: Path) -> dict[str, Any]:
    path = state / "state.json"
    return dict(json.loads(path.read_text())["services"]) if path.exists() else {}


# -- local state directory: git, webhook, poll, a broken commit ------------------------------------


def test_push_webhook_poll_and_a_broken_commit(tmp_path: Path, processes: list[Portside]) -> None:
    remote = Remote(tmp_path)
    first = remote.push({"pool.yaml": POOL, "svc/blog.yaml": exposure("blog")})
    state = tmp_path / "state"
    run = Portside(tmp_path, "local", ["--source", remote.url, "--state", str(state), "--interval", "1m",
                                       "--log-format", "json"])
    processes.append(run)
    wait_for(lambda: run.applied(first), what="the first revision applied")
    assert "default/blog" in local_services(state)
    assert run.get("/readyz")[0] == 200 and run.get("/healthz")[0] == 200

    # A push plus a webhook is applied at once (the poll interval is a minute).
    second = remote.push({"svc/wiki.yaml": exposure("wiki")})
    assert run.webhook(signature="sha256=" + "0" * 64) == 401
    assert run.webhook() == 202
    wait_for(lambda: run.applied(second), timeout=5, what="the webhook push applied")
    assert "default/wiki" in local_services(state)
    assert run.metric('portside_webhook_requests_total{result="bad_signature"}') == 1

    # A broken commit is not applied; the error says where; the last good revision stays.
    broken = remote.push({"svc/shop.yaml": exposure("shop").replace("pool: lan", "pool: lan\n  colour: red")})
    assert run.webhook() == 202
    # lastAttemptedRevision is set when the reconcile starts, its errors when it ends: wait for those.
    def refused() -> dict[str, Any] | None:
        status = run.status()
        said = any(re.match(r"svc/shop\.yaml:\d+:\d+: ", line) and "colour" in line for line in status["errors"])
        return status if status["lastAttemptedRevision"] == broken and said else None

    status = wait_for(refused, what="the broken revision attempted and refused with its file:line")
    assert status["lastAppliedRevision"] == second
    assert "default/shop" not in local_services(state)
    assert run.metric('portside_errors_total{kind="config"}') == 1

    # The next good commit applies and clears the error.
    fixed = remote.push({"svc/shop.yaml": exposure("shop")})
    assert run.webhook() == 202
    wait_for(lambda: run.applied(fixed), what="the fixed revision applied")
    assert run.status()["errors"] == []
    assert set(local_services(state)) == {"default/blog", "default/wiki", "default/shop"}
    assert run.metric("portside_reconciles_total") >= 3

    # Deleting everything portside owns is refused without --allow-mass-delete.
    for name in ("blog", "wiki", "shop"):
        (remote.work / "svc" / f"{name}.yaml").unlink()
    emptied = remote.push({}, message="remove every exposure")
    assert run.webhook() == 202
    wait_for(lambda: run.status()["lastAttemptedRevision"] == emptied, what="the mass deletion attempted")
    # lastAttemptedRevision is set when the attempt starts, the errors when it ends.
    wait_for(lambda: any("allow it explicitly" in line for line in run.status()["errors"]),
             what="the mass deletion refused")
    assert run.status()["lastAppliedRevision"] == fixed
    assert set(local_services(state)) == {"default/blog", "default/wiki", "default/shop"}
    assert run.metric('portside_errors_total{kind="refused"}') == 1

    assert run.stop() == 0
    logs = [json.loads(line) for line in run.lines if line.startswith("{")]
    assert logs and all({"time", "level", "logger", "message"} <= set(entry) for entry in logs)
    assert not [line for line in run.lines if not line.startswith("{")], "every log line is JSON"


def test_a_push_without_webhook_is_applied_on_the_next_poll(tmp_path: Path, processes: list[Portside]) -> None:
    remote = Remote(tmp_path)
    first = remote.push({"pool.yaml": POOL, "svc/blog.yaml": exposure("blog")})
    state = tmp_path / "state"
    run = Portside(tmp_path, "poll", ["--source", remote.url, "--state", str(state), "--interval", "1s"])
    processes.append(run)
    wait_for(lambda: run.applied(first))
    second = remote.push({"svc/wiki.yaml": exposure("wiki")})
    pushed = time.monotonic()
    wait_for(lambda: run.applied(second), timeout=5, what="the poll")
    assert time.monotonic() - pushed < 1.0 + 1.0
    assert "default/wiki" in local_services(state)


def test_a_directory_source_replans_on_every_save(tmp_path: Path, processes: list[Portside]) -> None:
    repo = tmp_path / "repo"
    (repo / "svc").mkdir(parents=True)
    (repo / "pool.yaml").write_text(POOL)
    (repo / "svc" / "blog.yaml").write_text(exposure("blog"))
    state = tmp_path / "state"
    run = Portside(tmp_path, "dir", ["--source", str(repo), "--state", str(state), "--interval", "1h"])
    processes.append(run)
    wait_for(lambda: "default/blog" in local_services(state), what="the first apply")
    (repo / "svc" / "wiki.yaml").write_text(exposure("wiki"))
    saved = time.monotonic()
    wait_for(lambda: "default/wiki" in local_services(state), timeout=5, what="the save applied")
    assert time.monotonic() - saved < 2.0, "a save is applied at once, not on the hourly poll"
    assert run.status()["lastAppliedRevision"].startswith("dir-")


# -- a cluster and Cloudflare ----------------------------------------------------------------------


def lb_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}}


def ingress(kube: Objects, name: str) -> list[str]:
    service = kube.get_object("Service", name, "default")
    assert service is not None
    return [i["ip"] for i in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


class World:
    def __init__(self, tmp: Path, cluster: Cluster, cf: FakeCloudflare) -> None:
        # The fake or a real cluster (tests/kube.py): "portside-system" and "default" are the
        # test's namespaces, set up and read through the official client.
        self.tmp, self.cluster, self.cf = tmp, cluster, cf
        self.kube = Objects(cluster, {"portside-system": cluster.namespace,
                                      "default": cluster.make_namespace("default")})
        cluster.add_node("node-a", "10.0.0.1")
        cluster.add_node("node-b", "10.0.0.2")
        self.zone = cf.add_zone("example.dev")
        self.tunnel = str(cf.add_tunnel(None, "home")["id"])
        self.kubeconfig = cluster.kubeconfig
        self.remote = Remote(tmp)

    def files(self, routes: list[str]) -> dict[str, str]:
        tunnel = yaml(f"""
            apiVersion: portside.io/v1alpha1
            kind: Tunnel
            metadata: {{name: home}}
            spec:
              mode: remote
              accountId: {self.cf.account_id}
              tunnelId: {self.tunnel}
              dns: {{zones: [example.dev]}}
            """)
        files = {"pool.yaml": POOL, "tunnel.yaml": tunnel}
        for name in routes:
            files[f"routes/{name}.yaml"] = yaml(f"""
                apiVersion: portside.io/v1alpha1
                kind: TunnelRoute
                metadata: {{name: {name}}}
                spec:
                  tunnel: home
                  hostname: {name}.example.dev
                  service: {{namespace: {self.kube.namespace("default")}, name: {name}, port: 80}}
                """)
        return files

    def start(self, processes: list[Portside], name: str, *extra: str) -> Portside:
        run = Portside(self.tmp, name, ["--source", self.remote.url, "--kubeconfig", str(self.kubeconfig),
                                        "--namespace", self.cluster.namespace, "--lease-duration", "2s", *extra],
                       env={"CLOUDFLARE_API_TOKEN": CF_TOKEN, "CLOUDFLARE_BASE_URL": self.cf.base_url,
                            "POD_IP": "127.0.0.1"})
        processes.append(run)
        return run

    def dns(self) -> list[tuple[str, str]]:
        return sorted((r["name"], r["type"]) for r in self.cf.records(self.zone))

    def hostnames(self) -> list[str]:
        config = self.cf.tunnel_config(None, self.tunnel)["config"] or {}
        return sorted(r["hostname"] for r in config.get("ingress", []) if r.get("hostname"))


@pytest.fixture
def world(tmp_path: Path, cluster: Cluster) -> Iterator[World]:
    with FakeCloudflare(token=CF_TOKEN) as cf:
        yield World(tmp_path, cluster, cf)


@pytest.mark.kube
def test_cluster_services_drift_and_events(world: World, processes: list[Portside]) -> None:
    kube = world.kube
    kube.put_object(lb_service("blog"))
    first = world.remote.push(world.files(["blog"]))
    run = world.start(processes, "solo", "--resync", "1s")
    wait_for(lambda: run.applied(first), what="the first revision applied")
    assert run.status()["leader"] is True
    blog_ip = ingress(kube, "blog")
    assert len(blog_ip) == 1
    assert world.dns() == [("blog.example.dev", "CNAME")]
    assert world.hostnames() == ["blog.example.dev"]

    # A new LoadBalancer Service gets its IP from the watch, not from a timer.
    created = time.monotonic()
    kube.put_object(lb_service("shop"))
    wait_for(lambda: ingress(kube, "shop"), timeout=5, what="an IP for the new Service")
    assert time.monotonic() - created < 2.0  # generous for a loaded CI box; the bench measures it

    # Drift behind portside's back is repaired: a wiped Service status, a deleted DNS record.
    service = kube.get_object("Service", "blog", "default")
    assert service is not None
    service["status"] = {"loadBalancer": {}}
    kube.put_object(service)
    record = next(r for r in world.cf.records(world.zone) if r["name"] == "blog.example.dev")
    world.cf.client(api_token=CF_TOKEN).dns.records.delete(record["id"], zone_id=world.zone)
    wait_for(lambda: ingress(kube, "blog") == blog_ip, what="the Service status repaired")
    wait_for(lambda: world.dns() == [("blog.example.dev", "CNAME")], what="the DNS record repaired")

    # A broken commit: nothing applied, an Event and the status say where.
    broken = world.remote.push({"routes/blog.yaml": "apiVersion: portside.io/v1alpha1\nkind: TunnelRoute\n"
                                                    "metadata: {name: blog}\nspec: {tunnel: home, port: x}\n"})
    run.webhook()
    wait_for(lambda: run.status()["lastAttemptedRevision"] == broken)
    # The attempt is recorded when it starts, its errors when it ends.
    wait_for(lambda: any(line.startswith("routes/blog.yaml:4:") for line in run.status()["errors"]),
             what="the broken revision refused with its file:line")
    assert run.status()["lastAppliedRevision"] == first
    events = wait_for(lambda: [e for e in kube.list_objects("Event", "portside-system")
                               if e["reason"] == "InvalidRevision"], what="an Event")
    assert broken in events[0]["message"] and "routes/blog.yaml:4:" in events[0]["message"]
    assert world.dns() == [("blog.example.dev", "CNAME")], "the last good revision stays in force"
    assert run.stop() == 0


@pytest.mark.kube
def test_two_replicas_never_both_write(world: World, processes: list[Portside]) -> None:
    world.kube.put_object(lb_service("blog"))
    first = world.remote.push(world.files(["blog"]))
    a = world.start(processes, "replica-a")
    wait_for(lambda: a.applied(first), what="a leads and applies")
    b = world.start(processes, "replica-b")
    wait_for(lambda: b.get("/readyz")[0] == 200, what="b ready as a standby")
    assert b.status()["leader"] is False and a.status()["leader"] is True

    world.kube.put_object(lb_service("wiki"))
    second = world.remote.push(world.files(["blog", "wiki"]))
    # The webhook lands on the standby (a Service spreads them): it hands it to the leader, which
    # applies it at once — the poll interval is a minute.
    assert b.webhook() == 202
    wait_for(lambda: a.applied(second), timeout=10, what="the leader applies a push sent to the standby")
    wait_for(lambda: world.hostnames() == ["blog.example.dev", "wiki.example.dev"])
    assert b.metric("portside_reconciles_total") == 0 and b.status()["lastAttemptedRevision"] is None

    a.kill()  # no release: b takes over when the lease (2 s) runs out
    killed = time.monotonic()

    def holder() -> str | None:
        lease = world.kube.get_object("Lease", "portside-reconciler", "portside-system")
        return None if lease is None else lease["spec"]["holderIdentity"]

    wait_for(lambda: holder() == "replica-b", what="b takes the lease")
    # The lease time, plus up to two retry periods (0.4 s) to notice, plus scheduling slack.
    assert time.monotonic() - killed < 2.0 + 2 * 0.4 + 0.8
    world.kube.put_object(lb_service("shop"))
    third = world.remote.push(world.files(["blog", "wiki", "shop"]))
    assert b.webhook() == 202
    wait_for(lambda: b.applied(third), timeout=10, what="b applies as the new leader")
    assert world.hostnames() == ["blog.example.dev", "shop.example.dev", "wiki.example.dev"]
    lease = world.kube.get_object("Lease", "portside-reconciler", "portside-system")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-b"


@pytest.mark.kube
def test_killed_mid_apply_converges_on_restart(world: World, processes: list[Portside]) -> None:
    names = [f"s{i}" for i in range(6)]
    for name in names:
        world.kube.put_object(lb_service(name))
    revision = world.remote.push(world.files(names))
    # The tunnel configuration is written, then its answer is held back: the process dies inside
    # the apply, after the cluster writes and before the DNS records.
    world.cf.fail(503, method="PUT", path="configurations", after_apply=True, delay=30)
    first = world.start(processes, "first", "--no-leader-election")
    wait_for(world.hostnames, what="the tunnel configuration write")
    first.kill()
    assert world.dns() == [], "killed in the middle of the apply"
    assert all(ingress(world.kube, n) for n in names), "the cluster part was written before"
    before = {n: ingress(world.kube, n) for n in names}
    world.cf.clear_faults()

    second = world.start(processes, "second", "--no-leader-election", "--resync", "1s")
    wait_for(lambda: second.applied(revision), what="the restart converges")
    assert world.dns() == sorted((f"{n}.example.dev", "CNAME") for n in names), "nothing lost or duplicated"
    assert world.hostnames() == sorted(f"{n}.example.dev" for n in names)
    ips = [ingress(world.kube, n) for n in names]
    assert all(len(ip) == 1 for ip in ips) and len({ip[0] for ip in ips}) == len(names)
    assert {n: ingress(world.kube, n) for n in names} == before, "IPs are sticky across the restart"
    # Converged: the next full resync plans nothing and writes nothing.
    applied = second.metric("portside_changes_applied_total")
    reconciles = second.metric('portside_reconciles_total{result="success"}')
    wait_for(lambda: second.metric('portside_reconciles_total{result="success"}') > reconciles,
             what="another full resync")
    assert second.metric("portside_changes_applied_total") == applied
    assert second.status()["errors"] == []
