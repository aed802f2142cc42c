"""Startup: a command imports only what it uses, and builds only the validators its repo needs.

`portside --help` and `validate` of a small repo must start fast (issue 13); what makes them slow
is importing libraries the command never touches and building pydantic validators of kinds the
repo does not declare. Timing is left to bench/bench_scale.py; these tests pin the cause
instead: a real `python -m reconciler` process reports, as it exits, which modules it imported
and which document models it built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_repo

ROOT = Path(__file__).resolve().parent.parent

# Runs `portside ARGS` as `python -m reconciler` does, and when the process ends writes what it
# imported and which models (kinds and their parts) it built to the file named first. The report
# itself adds only atexit, json and runpy (standard library) to what the command imports.
_REPORTER = textwrap.dedent("""
    import atexit, json, runpy, sys

    out, args = sys.argv[1], sys.argv[2:]

    def report():
        models = sys.modules.get("reconciler.desired.models")
        built = {} if models is None else {
            model.__name__: bool(model.__pydantic_complete__) for model in models.Strict.__subclasses__()}
        with open(out, "w") as f:
            json.dump({"modules": sorted(sys.modules), "built": built}, f)

    atexit.register(report)
    sys.argv = ["portside", *args]
    runpy.run_module("reconciler", run_name="__main__", alter_sys=True)
""")

# Libraries only some commands or backends need: the Kubernetes and Cloudflare clients, gitpython
# (git sources; `diff` reads HEAD itself), ruamel (local tunnels' cloudflared configs), the
# controller's HTTP server and metrics, netlink, file watching, HTTP clients.
HEAVY = ("kubernetes", "cloudflare", "git", "ruamel", "waitress", "prometheus_client", "pyroute2",
         "watchfiles", "urllib3", "requests", "httpx")

KINDS = ("IPAddressPool", "L2Advertisement", "ServiceExposure", "Tunnel", "TunnelRoute", "DynamicDNS")

ONE_FILE = {"portside.yaml": """
    apiVersion: metallb.io/v1beta1
    kind: IPAddressPool
    metadata: {name: pool-a, namespace: metallb-system}
    spec: {addresses: [10.0.0.0/24]}
    ---
    apiVersion: metallb.io/v1beta1
    kind: L2Advertisement
    metadata: {name: all, namespace: metallb-system}
    ---
    apiVersion: portside.io/v1alpha1
    kind: ServiceExposure
    metadata: {name: blog}
    spec:
      service: {namespace: web, name: blog}
      pool: pool-a
      ports: [{name: http, port: 8080}]
"""}

TUNNEL = {"tunnel.yaml": """
    apiVersion: portside.io/v1alpha1
    kind: Tunnel
    metadata: {name: home}
    spec: {mode: local, tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef}
    ---
    apiVersion: portside.io/v1alpha1
    kind: TunnelRoute
    metadata: {name: blog}
    spec:
      tunnel: home
      hostname: blog.example.com
      service: {namespace: web, name: blog, port: 8080}
"""}


def _portside(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "startup-report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: the default backend must not be a cluster
    result = subprocess.run([sys.executable, "-c", _REPORTER, str(out), *args], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=60)
    return result, json.loads(out.read_text())


def _imported(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


def _kinds(built: dict[str, bool]) -> dict[str, bool]:
    return {kind: built[kind] for kind in KINDS}


def test_help_imports_neither_pydantic_nor_yaml_nor_any_command(tmp_path: Path) -> None:
    result, report = _portside(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    assert "validate" in result.stdout and "import" in result.stdout
    modules = report["modules"]
    for package in ("pydantic", "yaml", *HEAVY):
        assert not _imported(modules, package), package
    assert _imported(modules, "reconciler") == ["reconciler", "reconciler.cli"]


def test_validate_builds_only_the_kinds_the_repo_declares(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", ONE_FILE)
    result, report = _portside(tmp_path, "validate", str(repo))
    assert result.returncode == 0, result.stderr
    assert "3 document(s) in 1 file(s), valid" in result.stdout
    assert _kinds(report["built"]) == {"IPAddressPool": True, "L2Advertisement": True, "ServiceExposure": True,
                                       "Tunnel": False, "TunnelRoute": False, "DynamicDNS": False}
    # Nor their parts: a tunnel's connector or a dynamic DNS record's address sources.
    assert not any(report["built"][part] for part in ("TunnelSpec", "TunnelConnector", "OriginRequest",
                                                      "DynamicDNSSpec", "AddressSource"))
    modules = report["modules"]
    # Everyday block YAML is read without PyYAML (the fast path); libyaml is for the rest.
    for package in (*HEAVY, "yaml", "reconciler.desired.yamllib", "reconciler.planning", "reconciler.backends",
                    "reconciler.providers", "reconciler.tunnels", "reconciler.allocator", "reconciler.source"):
        assert not _imported(modules, package), package


def test_yaml_outside_the_fast_paths_subset_is_read_by_libyaml(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {"portside.yaml": ONE_FILE["portside.yaml"].replace(
        "{name: blog}", "{name: &name blog}").replace("name: blog}", "name: *name}")})
    result, report = _portside(tmp_path, "validate", str(repo))
    assert result.returncode == 0, result.stderr
    assert "3 document(s) in 1 file(s), valid" in result.stdout
    assert _imported(report["modules"], "reconciler.desired.yamllib")


def test_validate_builds_the_tunnel_kinds_when_the_repo_has_tunnels(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", {**ONE_FILE, **TUNNEL})
    result, report = _portside(tmp_path, "validate", str(repo))
    assert result.returncode == 0, result.stderr
    assert _kinds(report["built"]) == {"IPAddressPool": True, "L2Advertisement": True, "ServiceExposure": True,
                                       "Tunnel": True, "TunnelRoute": True, "DynamicDNS": False}


def test_an_invalid_document_of_an_unbuilt_kind_is_still_explained(tmp_path: Path) -> None:
    # The first document of a kind builds its validator: its errors must be the usual ones.
    repo = write_repo(tmp_path / "repo", {"ddns.yaml": """
        apiVersion: portside.io/v1alpha1
        kind: DynamicDNS
        metadata: {name: home}
        spec: {hostnames: [home.example.com], ttl: 5}
    """})
    result, report = _portside(tmp_path, "validate", str(repo))
    assert result.returncode == 1
    assert "ddns.yaml:4:1: spec: declare ipv4, ipv6 or both" in result.stdout, result.stdout
    assert report["built"]["DynamicDNS"] is True and report["built"]["Tunnel"] is False


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """The one-file repo, committed in a real git repository."""
    repo = write_repo(tmp_path / "repo", ONE_FILE)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one file"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=env, capture_output=True)
    return repo


def test_diff_against_a_state_dir_loads_no_client_nor_gitpython(tmp_path: Path, git_repo: Path) -> None:
    result, report = _portside(tmp_path, "diff", str(git_repo), "--state", str(tmp_path / "state"),
                               "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["create"] > 0
    modules = report["modules"]
    for package in (*HEAVY, "reconciler.providers", "reconciler.backends.kube", "reconciler.source",
                    "reconciler.controller", "reconciler.speaker"):
        assert not _imported(modules, package), package
    assert report["built"]["DynamicDNS"] is False and report["built"]["Tunnel"] is False


def test_apply_with_a_local_tunnel_writes_its_config_with_ruamel(tmp_path: Path) -> None:
    # The other side of the lazy ruamel import: a local tunnel's config is still written, then read.
    repo = write_repo(tmp_path / "repo", {**ONE_FILE, **TUNNEL})
    state = tmp_path / "state"
    applied, report = _portside(tmp_path, "apply", str(repo), "--state", str(state))
    assert applied.returncode == 0, applied.stderr
    assert _imported(report["modules"], "ruamel")
    assert "blog.example.com" in (state / "cloudflared" / "home.yml").read_text()
    again, _ = _portside(tmp_path, "diff", str(repo), "--state", str(state), "--exit-code")
    assert again.returncode == 0, again.stdout + again.stderr


def test_run_builds_every_model_before_it_starts_threads(tmp_path: Path) -> None:
    # The controller is long-running and threaded: it must not leave a first use to chance.
    repo = write_repo(tmp_path / "repo", ONE_FILE)
    result, report = _portside(tmp_path, "run", "--source", str(repo), "--state", str(tmp_path / "state"),
                               "--once", "--listen", "127.0.0.1:0")
    assert result.returncode == 0, result.stderr
    assert report["built"] and all(report["built"].values()), report["built"]
