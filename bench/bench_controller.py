"""`portside run` latencies, end to end, as JSON: push -> applied (webhook, poll) and new Service -> IP.

    python bench/bench_controller.py [--pushes 20] [--services 20] [--interval 1]

A real `portside run` process follows a real git repository (a bare remote on disk) and writes to
the fake Kubernetes API server and the fake Cloudflare API on loopback. Each push adds a
TunnelRoute; "applied" is when /status reports the pushed commit as lastAppliedRevision (after the
cluster and Cloudflare writes). A new LoadBalancer Service counts from its creation in the API
server to the moment its status carries an IP. Goals (issue 6): webhook p50 < 1 s, poll p50 <
interval + 1 s, new Service p50 < 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.controller.webhook import sign  # noqa: E402
from tests.fakes.cloudflare_api import FakeCloudflare  # noqa: E402
from tests.fakes.kube_api import FakeKube  # noqa: E402

SECRET = b"bench-webhook-secret"
CF_TOKEN = "bench-cloudflare-token"
POOL = """apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec:
  addresses: [10.9.0.0/24]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
"""


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, step: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not met")


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_s": round(statistics.median(ordered), 4),
            "p90_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 4),
            "max_s": round(ordered[-1], 4), "min_s": round(ordered[0], 4)}


class Repo:
    def __init__(self, tmp: Path, tunnel: str, account: str) -> None:
        self.bare, self.work = tmp / "remote.git", tmp / "work"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=tmp)
        git("init", "-q", "-b", "main", str(self.work), cwd=tmp)
        for key, value in (("user.email", "bench@example.org"), ("user.name", "bench"),
                           ("commit.gpgsign", "false")):
            git("config", key, value, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        (self.work / "pool.yaml").write_text(POOL)
        (self.work / "tunnel.yaml").write_text(
            "apiVersion: portside.io/v1alpha1\nkind: Tunnel\nmetadata: {name: home}\n"
            f"spec: {{mode: remote, accountId: {account}, tunnelId: {tunnel}, dns: {{zones: [example.dev]}}}}\n")
        self.routes = 0

    def push_route(self) -> str:
        name = f"r{self.routes:03d}"
        self.routes += 1
        (self.work / f"{name}.yaml").write_text(
            f"apiVersion: portside.io/v1alpha1\nkind: TunnelRoute\nmetadata: {{name: {name}}}\n"
            f"spec: {{tunnel: home, hostname: {name}.example.dev, url: 'http://10.1.0.{self.routes}:80'}}\n")
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", name, cwd=self.work)
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


class Run:
    def __init__(self, tmp: Path, kube: FakeKube, cf: FakeCloudflare, repo: Repo, interval: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "secret").write_bytes(SECRET)
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env.update(CLOUDFLARE_API_TOKEN=CF_TOKEN, CLOUDFLARE_BASE_URL=cf.base_url, HOME=str(tmp))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--source", f"file://{repo.bare}",
             "--kubeconfig", str(kube.write_kubeconfig(tmp / "kubeconfig")), "--namespace", "portside-system",
             "--listen", "127.0.0.1:0", "--webhook-secret-file", str(tmp / "secret"),
             "--cache-dir", str(tmp / "cache"), "--interval", interval, "--no-leader-election"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        match = wait_for(lambda: next((m for line in list(self.lines)
                                       if (m := re.search(r"on port (\d+)", line))), None), step=0.02)
        self.port = int(match.group(1))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def applied(self) -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as response:
            return json.loads(response.read()).get("lastAppliedRevision")  # type: ignore[no-any-return]

    def webhook(self) -> None:
        body = b'{"ref": "refs/heads/main"}'
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks/git", data=body, method="POST",
                                         headers={"X-Hub-Signature-256": sign(SECRET, body)})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)


def ingress(kube: FakeKube, name: str) -> bool:
    service = kube.get_object("Service", name, "default")
    return bool(service and ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress"))


def bench(pushes: int, services: int, interval: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-controller."))
    try:
        with FakeKube() as kube, FakeCloudflare(token=CF_TOKEN) as cf:
            kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "portside-system"}})
            kube.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
                             "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                                        "conditions": [{"type": "Ready", "status": "True"}]}})
            cf.add_zone("example.dev")
            tunnel = str(cf.add_tunnel(None, "home")["id"])
            repo = Repo(tmp, tunnel, cf.account_id)
            first = repo.push_route()
            # The webhook phase polls once an hour, so every apply is the webhook's doing.
            run = Run(tmp / "webhook", kube, cf, repo, "1h")
            try:
                wait_for(lambda: run.applied() == first, step=0.02)
                webhook: list[float] = []
                for _ in range(pushes):
                    revision = repo.push_route()
                    started = time.perf_counter()
                    run.webhook()
                    wait_for(lambda r=revision: run.applied() == r)
                    webhook.append(time.perf_counter() - started)
            finally:
                run.stop()
            run = Run(tmp / "poll", kube, cf, repo, f"{interval}s")
            try:
                wait_for(lambda r=revision: run.applied() == r, step=0.02)
                poll: list[float] = []
                for _ in range(pushes):
                    revision = repo.push_route()
                    started = time.perf_counter()
                    wait_for(lambda r=revision: run.applied() == r, timeout=interval + 30)
                    poll.append(time.perf_counter() - started)
                new_service: list[float] = []
                for i in range(services):
                    name = f"svc-{i:03d}"
                    started = time.perf_counter()
                    kube.put_object({"apiVersion": "v1", "kind": "Service",
                                     "metadata": {"name": name, "namespace": "default"},
                                     "spec": {"type": "LoadBalancer", "selector": {"app": name},
                                              "ports": [{"port": 80, "protocol": "TCP"}]}})
                    wait_for(lambda n=name: ingress(kube, n))
                    new_service.append(time.perf_counter() - started)
            finally:
                run.stop()
        return {
            "bench": "controller",
            "pushes": pushes,
            "poll_interval_s": interval,
            "webhook_push_to_applied": {**summary(webhook), "goal_p50_s": 1.0},
            "poll_push_to_applied": {**summary(poll), "goal_p50_s": interval + 1.0},
            "new_service_to_ip": {**summary(new_service), "goal_p50_s": 0.5},
            "routes_at_end": repo.routes,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds")
    args = parser.parse_args()
    print(json.dumps(bench(args.pushes, args.services, args.interval), indent=2))


if __name__ == "__main__":
    main()
