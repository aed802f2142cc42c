"""Cloudflare beside the cluster in one plan, through the CLI: apply, converge, snapshot, diff."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.fakes.cloudflare_api import FakeCloudflare

EXAMPLE = Path(__file__).resolve().parent.parent / "example-repo"
TUNNEL_ID = "6ff42ae2-765d-4adf-8112-31c55c1551ef"


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as cf:
        cf.add_zone("example.dev")
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf.token)
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
        yield cf


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "example-repo"))


def test_apply_creates_the_proxied_cname_with_the_ownership_comment(
        cloudflare: FakeCloudflare, example: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    result = run_cli("apply", str(example), "--state", state)
    assert result.code == 0, result.err
    assert "+ DNSRecord blog.example.dev" in result.out
    assert cloudflare.token not in result.out + result.err
    batches = cloudflare.calls("POST", r"/dns_records/batch$")
    assert len(batches) == 1
    posted = batches[0].body["posts"]
    assert [(r["name"], r["type"], r["content"], r["proxied"]) for r in posted] == [
        ("blog.example.dev", "CNAME", f"{TUNNEL_ID}.cfargotunnel.com", True)]
    assert posted[0]["comment"].startswith("managed by portside")

    cloudflare.clear_log()
    again = run_cli("apply", str(example), "--state", state)
    assert again.code == 0 and "No changes" in again.out
    assert cloudflare.writes() == []


def test_snapshot_covers_cloudflare_so_ci_diffs_without_a_token(
        cloudflare: FakeCloudflare, example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = str(tmp_path / "state")
    assert run_cli("apply", str(example), "--state", state).code == 0
    routes = example / "tunnel" / "routes.yaml"
    routes.write_text(routes.read_text() + """---
apiVersion: portside.io/v1alpha1
kind: TunnelRoute
metadata: {name: wiki}
spec:
  tunnel: home
  hostname: wiki.example.dev
  url: http://10.0.0.5:8080
""")
    snapshot = tmp_path / "live.json"
    assert run_cli("snapshot", str(example), "--state", state, "--out", str(snapshot)).code == 0
    assert cloudflare.token not in snapshot.read_text()
    online = json.loads(run_cli("diff", str(example), "--state", state, "--format", "json").out)

    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    offline = run_cli("diff", str(example), "--snapshot", str(snapshot), "--format", "json", "--exit-code")
    assert offline.code == 2
    offline_plan = json.loads(offline.out)
    assert offline_plan["changes"] == online["changes"]
    assert {"kind": "DNSRecord", "id": "wiki.example.dev"} in [c["target"] for c in offline_plan["changes"]]
