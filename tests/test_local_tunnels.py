"""Local tunnels: the cloudflared config file, written atomically, read back, accepted by cloudflared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler.common.errors import StateError
from reconciler.desired.models import Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.live import IngressRule
from reconciler.tunnels.local import read_local_tunnels, write_local_tunnel
from reconciler.tunnels.plan import plan_tunnels
from tests.fakes.cloudflare_api import validate_ingress

TID = "6ff42ae2-765d-4adf-8112-31c55c1551ef"


def tunnel(**spec: Any) -> Tunnel:
    spec = {"mode": "local", "tunnelId": TID, "credentialsFile": f"/etc/cloudflared/{TID}.json", **spec}
    return Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": "home"}, "spec": spec})


def route(name: str, hostname: str, **spec: Any) -> TunnelRoute:
    return TunnelRoute.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute",
                                       "metadata": {"name": name},
                                       "spec": {"tunnel": "home", "hostname": hostname, **spec}})


def example() -> DesiredState:
    return DesiredState(
        tunnels=(tunnel(originRequest={"connectTimeout": "30s", "tlsTimeout": 10}),),
        routes=(
            route("blog", "blog.example.dev", service={"name": "blog", "port": 80}),
            route("api", "blog.example.dev", path="^/api/", url="http://10.0.0.4:8080",
                  originRequest={"connectTimeout": "1m30s", "noTLSVerify": True, "httpHostHeader": "api"}),
            route("apps", "*.apps.example.dev", url="https://10.0.0.5:443",
                  originRequest={"originServerName": "apps.lan", "keepAliveTimeout": "1m"}),
        ),
    )


IPS = {"default/blog": ("192.168.1.100",)}


def apply_local(state: Path, ds: DesiredState, ips: Mapping[str, tuple[str, ...]]) -> list[str]:
    plan = plan_tunnels(ds, read_local_tunnels(state, ds), {}, ips, "test")
    written = []
    for change in plan.changes:
        if change.action in ("create", "update"):
            path = change.detail["path"]
            write_local_tunnel(state, change.target.id, plan.artifacts[path])
            written.append(path)
    return written


def test_written_file_is_a_complete_cloudflared_config(tmp_path: Path) -> None:
    assert apply_local(tmp_path, example(), IPS) == ["cloudflared/home.yml"]
    path = tmp_path / "cloudflared" / "home.yml"
    data = YAML(typ="safe").load(path.read_text())
    assert data == {
        "tunnel": TID,
        "credentials-file": f"/etc/cloudflared/{TID}.json",
        "originRequest": {"connectTimeout": "30s", "tlsTimeout": "10s"},
        "ingress": [
            {"hostname": "blog.example.dev", "path": "^/api/", "service": "http://10.0.0.4:8080",
             "originRequest": {"connectTimeout": "1m30s", "httpHostHeader": "api", "noTLSVerify": True}},
            {"hostname": "blog.example.dev", "service": "http://192.168.1.100:80"},
            {"hostname": "*.apps.example.dev", "service": "https://10.0.0.5:443",
             "originRequest": {"keepAliveTimeout": "1m0s", "originServerName": "apps.lan"}},
            {"service": "http_status:404"},
        ],
    }
    assert validate_ingress(data["ingress"]) is None  # cloudflared's own ingress rules
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_read_back_plans_nothing_and_ip_change_rewrites(tmp_path: Path) -> None:
    apply_local(tmp_path, example(), IPS)
    assert apply_local(tmp_path, example(), IPS) == []
    live = read_local_tunnels(tmp_path, example())["home"]
    assert live.tunnel_id == TID
    assert live.origin_request == {"connectTimeout": 30, "tlsTimeout": 10}
    assert live.ingress is not None and live.ingress[1] == IngressRule("http://192.168.1.100:80",
                                                                       "blog.example.dev")
    # The Service moved pool: the route follows in the same plan.
    plan = plan_tunnels(example(), read_local_tunnels(tmp_path, example()), {},
                        {"default/blog": ("10.9.0.7",)}, "test")
    [change] = [c for c in plan.changes if c.action != "no-op"]
    assert (change.action, change.reason) == ("update", "change blog.example.dev")
    assert apply_local(tmp_path, example(), {"default/blog": ("10.9.0.7",)}) == ["cloudflared/home.yml"]
    assert "http://10.9.0.7:80" in (tmp_path / "cloudflared" / "home.yml").read_text()


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    assert read_local_tunnels(tmp_path, example())["home"].ingress is None
    (tmp_path / "cloudflared").mkdir()
    (tmp_path / "cloudflared" / "home.yml").write_text("ingress: [unclosed\n")
    live = read_local_tunnels(tmp_path, example())["home"]
    assert live.error is not None and "not valid YAML" in live.error
    (tmp_path / "cloudflared" / "home.yml").write_text("tunnel: x\n")
    assert "no ingress list" in str(read_local_tunnels(tmp_path, example())["home"].error)
    assert apply_local(tmp_path, example(), IPS) == ["cloudflared/home.yml"]
    assert apply_local(tmp_path, example(), IPS) == []


def test_a_corrupt_file_is_named_with_its_line_and_nothing_is_written(tmp_path: Path) -> None:
    config = tmp_path / "cloudflared" / "home.yml"
    config.parent.mkdir()
    for text, line in (("tunnel: x\ningress:\n- service: a\n  service: b\n", 4),  # a duplicate key
                       ("tunnel: x\ningress:\n- hostname: [a\n", 4),
                       ("tunnel: x\ningress: !!python/object:os.system []\n", 2)):
        config.write_text(text)
        error = read_local_tunnels(tmp_path, example())["home"].error
        assert error is not None and error.startswith(f"{config}:{line}:") and "not valid YAML" in error, error
        assert config.read_text() == text and sorted(p.name for p in config.parent.iterdir()) == ["home.yml"]
    config.write_text("tunnel: x\ningress: []\n---\ntunnel: y\ningress: []\n")
    assert "2 documents" in str(read_local_tunnels(tmp_path, example())["home"].error)


@pytest.mark.parametrize("text", [".5e3", ".iNf", "0x 1F", "0x0x1", "12", "1_000", "true", "null", "1:30"])
def test_number_like_texts_read_back_as_written(tmp_path: Path, text: str) -> None:
    """ruamel.yaml writes some of these plain (for it they are text) where YAML 1.2's core schema
    reads a number: the reader must still see the text, or the plan would never converge."""
    ds = DesiredState(
        tunnels=(tunnel(originRequest={"httpHostHeader": text, "keepAliveConnections": 7}),),
        routes=(route("r", "blog.example.dev", path=text, url="http://10.0.0.4:8080"),),
    )
    assert apply_local(tmp_path, ds, {}) == ["cloudflared/home.yml"]
    live = read_local_tunnels(tmp_path, ds)["home"]
    assert live.error is None and live.ingress is not None
    assert live.ingress[0].path == text and live.origin_request["httpHostHeader"] == text
    assert live.origin_request["keepAliveConnections"] == 7
    assert apply_local(tmp_path, ds, {}) == []


def test_reading_needs_no_ruamel(tmp_path: Path) -> None:
    """A diff reads configs without importing ruamel.yaml (30 ms of every run); writing uses it."""
    apply_local(tmp_path, example(), IPS)
    declared = tunnel().model_dump(mode="json")
    script = ("import sys; from pathlib import Path; from reconciler.desired.models import Tunnel;"
              "from reconciler.desired.state import DesiredState;"
              "from reconciler.tunnels.local import read_local_tunnels;"
              f"desired = DesiredState(tunnels=(Tunnel.model_validate({declared!r}),));"
              f"live = read_local_tunnels(Path({str(tmp_path)!r}), desired);"
              "print(live['home'].error, len(live['home'].ingress), 'ruamel' in ' '.join(sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent.parent)
    assert done.stdout.split() == ["None", "4", "False"], done.stderr


def test_remote_tunnels_are_not_read_from_files(tmp_path: Path) -> None:
    remote = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                    "metadata": {"name": "r"}, "spec": {"accountId": "a" * 32}})
    assert read_local_tunnels(tmp_path, DesiredState(tunnels=(remote,))) == {}


def test_failed_rename_keeps_the_old_file_and_no_temporary(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    apply_local(tmp_path, example(), IPS)
    path = tmp_path / "cloudflared" / "home.yml"
    before = path.read_text()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(StateError, match=r"cannot write .*home.yml: No space left on device"):
        write_local_tunnel(tmp_path, "home", {"tunnel": "x", "ingress": [{"service": "http_status:404"}]})
    assert path.read_text() == before
    assert list(path.parent.iterdir()) == [path]


def test_unserialisable_config_leaves_no_partial_file(tmp_path: Path) -> None:
    apply_local(tmp_path, example(), IPS)
    path = tmp_path / "cloudflared" / "home.yml"
    before = path.read_text()
    with pytest.raises(Exception):  # noqa: B017 - whatever the YAML library raises
        write_local_tunnel(tmp_path, "home", {"tunnel": object(), "ingress": []})
    assert path.read_text() == before
    assert list(path.parent.iterdir()) == [path]


@pytest.mark.skipif(shutil.which("cloudflared") is None, reason="needs the cloudflared binary on PATH")
def test_cloudflared_accepts_the_file(tmp_path: Path) -> None:
    apply_local(tmp_path, example(), IPS)
    result = subprocess.run(
        ["cloudflared", "tunnel", "--config", str(tmp_path / "cloudflared" / "home.yml"),
         "ingress", "validate"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
