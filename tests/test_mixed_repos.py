"""portside in the repos users have: mixed GitOps repos, MetalLB's own manifests, empty documents,
.portsideignore, and the messages that must not lead a user astray. Through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.desired.loader import load_documents

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: home-pool
  namespace: metallb-system
spec:
  addresses:
  - 192.168.1.0/24
"""

TUNNEL = """\
apiVersion: portside.io/v1alpha1
kind: Tunnel
metadata:
  name: home
spec:
  mode: local
  tunnelId: 6ff42ae2-765d-4adf-8112-31c55c1551ef
  dns:
    zones: [example.dev]
"""

EXPOSURE = """\
apiVersion: portside.io/v1alpha1
kind: ServiceExposure
metadata:
  name: blog
spec:
  service: {name: blog}
  pool: home-pool
"""

ROUTE = """\
apiVersion: portside.io/v1alpha1
kind: TunnelRoute
metadata:
  name: {name}
spec:
  tunnel: home
  hostname: {name}.example.dev
  service: {{name: {name}, port: 80}}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: blog
spec:
  replicas: 1
"""

SERVICE_ACCOUNT = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: blog\n"
WORKFLOW = "name: ci\non: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
KUSTOMIZATION = "resources:\n- deployment.yaml\n- pool.yaml\n"
HELM_VALUES = "replicaCount: 2\nimage:\n  repository: nginx\n  tag: stable\n"
# Another project's custom resource that happens to share a kind name with portside's.
INLETS_TUNNEL = "apiVersion: operator.inlets.dev/v1alpha1\nkind: Tunnel\nmetadata:\n  name: t\nspec: {}\n"
BGP_PEER = """\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: router
  namespace: metallb-system
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 10.0.0.1
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def validate(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["validate", str(repo), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- empty documents ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    POOL + "---\n",  # a file ending in ---
    POOL + "---\n---\n" + TUNNEL,  # --- twice in a row
    "---\n" + POOL + "---\n# only a comment\n# and another\n---\n" + TUNNEL,  # a comment-only document
    "# a file of comments only\n",
    "",
])
def test_empty_documents_are_skipped(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"pools.yaml": text})
    code, out, _ = validate(tmp_path, capsys)
    assert code == 0, out
    assert out.strip().endswith("valid")


# --- a mixed GitOps repo --------------------------------------------------------------------------


def mixed_repo(root: Path) -> Path:
    return write(root, {
        "infra/pool.yaml": POOL,
        "infra/tunnel.yaml": TUNNEL + "---\n" + EXPOSURE + "---\n" + ROUTE.format(name="blog"),
        "apps/blog/deployment.yaml": DEPLOYMENT + "---\n" + SERVICE_ACCOUNT + "---\n",
        "apps/blog/kustomization.yaml": KUSTOMIZATION,
        "apps/blog/values.yaml": HELM_VALUES,
        "apps/other-tunnel.yaml": INLETS_TUNNEL,
        "metallb/bgp.yaml": BGP_PEER,
        ".github/workflows/ci.yml": WORKFLOW,
        # A Helm chart: its templates are not YAML until rendered, so the whole chart is left out.
        "charts/blog/Chart.yaml": "apiVersion: v2\nname: blog\nversion: 0.1.0\n",
        "charts/blog/templates/service.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n"
                                             "  name: {{ .Release.Name }}\n{{- if .Values.lb }}\n",
    })


def test_a_mixed_repo_validates_and_counts_what_it_skipped(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    repo = mixed_repo(tmp_path / "repo")
    code, out, _ = validate(repo, capsys)
    assert code == 0, out
    lines = out.splitlines()
    # The MetalLB kind portside does not implement is skipped with a warning at its kind.
    assert lines[0] == (f"{repo}/metallb/bgp.yaml:2:7: warning: kind: MetalLB kind BGPPeer is not supported by "
                        "portside (it announces addresses by ARP, as MetalLB's layer 2 mode does, and has no BGP); "
                        "skipped")
    # Deployment, ServiceAccount, the inlets Tunnel, the kustomization and the Helm values; never the
    # workflow under .github.
    assert lines[-1] == (f"{repo}: 4 document(s) in 7 file(s), valid; 5 documents of other kinds and 1 of "
                         "unsupported MetalLB kinds skipped; 1 Helm chart skipped")

    code = main(["validate", str(repo), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["valid"] is True and report["documents"] == 4
    assert report["skipped"] == {"otherKinds": 3, "notManifests": 2, "unsupportedKinds": 1, "empty": 1,
                                 "ignoredPaths": 0, "helmCharts": 1}
    assert report["skippedSummary"] == ("5 documents of other kinds and 1 of unsupported MetalLB kinds skipped; "
                                        "1 Helm chart skipped")
    assert [w["file"] for w in report["warnings"]] == [f"{repo}/metallb/bgp.yaml"]


def test_diff_reports_what_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = mixed_repo(tmp_path / "repo")
    assert main(["diff", str(repo), "--state", str(tmp_path / "state")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {repo}/metallb/bgp.yaml:2:7: kind: MetalLB kind BGPPeer is not supported" in err
    assert (f"Loaded {repo}: 5 documents of other kinds and 1 of unsupported MetalLB kinds skipped; "
            "1 Helm chart skipped.") in err


@pytest.mark.parametrize(("kind", "warned"), [
    ("BGPAdvertisement", "MetalLB kind BGPAdvertisement is not supported"),
    ("Community", "MetalLB kind Community is not supported"),
    ("BFDProfile", "MetalLB kind BFDProfile is not supported"),
    ("FutureThing", "kind FutureThing of metallb.io is not one portside supports (IPAddressPool, L2Advertisement)"),
])
def test_metallb_kinds_portside_lacks_are_skipped_with_a_warning(kind: str, warned: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"metallb.yaml": POOL + f"---\napiVersion: metallb.io/v1beta1\nkind: {kind}\nmetadata:\n"
                     "  name: x\nspec: {}\n"})
    code, out, _ = validate(tmp_path, capsys)
    assert code == 0, out
    assert f"metallb.yaml:11:7: warning: kind: {warned}" in out
    assert out.splitlines()[-1].endswith("valid; 1 document of unsupported MetalLB kinds skipped")


# --- .portsideignore ------------------------------------------------------------------------------


def test_portsideignore_excludes_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = write(tmp_path / "repo", {
        "pool.yaml": POOL,
        "charts/broken.yaml": "apiVersion: portside.io/v1alpha1\nkind: Tunel\n",
        "drafts/one.yaml": "kind: [\n",
        "drafts/keep.yaml": TUNNEL,
        "nested/deep/scratch.yaml": "apiVersion: portside.io/v1alpha1\nkind: Nope\n",
        "nested/real.yaml": EXPOSURE,
        ".portsideignore": "# not portside's\ncharts/\ndrafts/*\n!drafts/keep.yaml\n**/scratch.yaml\n",
    })
    code, out, _ = validate(repo, capsys)
    assert code == 0, out
    assert out.splitlines()[-1] == f"{repo}: 3 document(s) in 3 file(s), valid; 3 paths ignored (.portsideignore)"
    result = load_documents(repo)
    assert sorted(d.file for d in result.documents) == ["drafts/keep.yaml", "nested/real.yaml", "pool.yaml"]

    (repo / ".portsideignore").unlink()
    code, out, _ = validate(repo, capsys)
    assert code == 1
    assert {line.split(":")[0] for line in out.splitlines()} == {
        f"{repo}/charts/broken.yaml", f"{repo}/drafts/one.yaml", f"{repo}/nested/deep/scratch.yaml"}


# --- messages that must not lead astray -------------------------------------------------------------


@pytest.mark.parametrize(("broken", "phrase"), [
    (POOL.replace("kind: IPAddressPool", "kind: IPAdressPool"), 'did you mean "IPAddressPool"?'),
    (POOL.replace("metallb.io/v1beta1", "metalb.io/v1beta1"), 'did you mean "metallb.io/v1beta1"?'),
    (POOL.replace("metallb.io/v1beta1", "metallb.io/v1beta9"), "is not valid for kind IPAddressPool"),
    (POOL.replace("metallb.io/v1beta1", "portside.io/v1alpha1").replace("kind: IPAddressPool", "kind: Whatever"),
     'unknown kind "Whatever"'),
    (POOL.replace("apiVersion: metallb.io/v1beta1\n", ""), "missing apiVersion for kind IPAddressPool"),
])
def test_a_header_typo_is_one_error_without_follow_ons(broken: str, phrase: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The pool's typo is the only error: the exposure and advertisement naming it say nothing."""
    repo = write(tmp_path / "repo", {
        "pool.yaml": broken,
        "exposure.yaml": EXPOSURE,
        "l2.yaml": "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: l2\nspec:\n"
                   "  ipAddressPools: [home-pool]\n",
    })
    code, out, _ = validate(repo, capsys)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"{repo}/pool.yaml:") and phrase in lines[0]


def test_an_address_is_not_called_outside_every_pool_when_a_pool_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = write(tmp_path / "repo", {
        "pool.yaml": POOL.replace("kind: IPAddressPool", "kind: IPAdressPool"),
        "exposure.yaml": EXPOSURE.replace("  pool: home-pool\n", "  addresses: [192.168.1.10]\n"),
    })
    code, out, _ = validate(repo, capsys)
    assert code == 1
    assert len(out.splitlines()) == 1 and 'did you mean "IPAddressPool"?' in out, out


def test_a_failed_exposure_silences_the_route_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = write(tmp_path / "repo", {
        "pool.yaml": POOL, "tunnel.yaml": TUNNEL, "route.yaml": ROUTE.format(name="blog"),
        "exposure.yaml": EXPOSURE.replace("  pool: home-pool\n", "  pool: home-pool\n  colour: blue\n"),
    })
    code, out, _ = validate(repo, capsys)
    assert code == 1
    assert len(out.splitlines()) == 1 and 'unknown field "colour"' in out, out


def test_a_route_to_an_unexposed_service_warns_with_its_place(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo = write(tmp_path / "repo", {
        "pool.yaml": POOL, "tunnel.yaml": TUNNEL, "exposure.yaml": EXPOSURE,
        "routes.yaml": ROUTE.format(name="blog") + "---\n" + ROUTE.format(name="wiki"),
    })
    code, out, _ = validate(repo, capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == (f"{repo}/routes.yaml:17:12: warning: spec.service: Service default/wiki is not exposed by "
                        "any ServiceExposure in the repo: the route waits (and is left out of tunnel home's config) "
                        "until the Service has a LoadBalancer IP in the cluster; add a ServiceExposure if portside "
                        "should give it one")
    assert len(lines) == 2 and lines[1].endswith("valid")

    # At plan time, with no such Service live either, the route shows as waiting in the plan.
    code = main(["diff", str(repo), "--state", str(tmp_path / "state"), "--format", "json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0
    [waiting] = [c for c in plan["changes"] if c["target"] == {"kind": "TunnelRoute", "id": "wiki"}]
    assert waiting["action"] == "conflict"
    assert waiting["reason"].startswith("route wiki (wiki.example.dev) waits for Service default/wiki to get an IP")
    [config] = [c for c in plan["changes"] if c["target"]["kind"] == "TunnelConfiguration"]
    assert [r.get("hostname") for r in config["after"]] == ["blog.example.dev", None]

    code = main(["diff", str(repo), "--state", str(tmp_path / "state")])
    text = capsys.readouterr().out
    assert "! TunnelRoute wiki" in text and "waits for Service default/wiki to get an IP" in text


def test_locations_in_one_message_share_the_base(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "repo", {"a/pool.yaml": POOL, "b/pool.yaml": POOL.replace("192.168.1.0/24", "10.0.0.0/8")})
    monkeypatch.chdir(tmp_path)
    code, out, _ = validate(Path("repo"), capsys)
    assert code == 1
    assert out.strip() == ('repo/b/pool.yaml:4:9: metadata.name: duplicate IPAddressPool "home-pool" (first declared '
                           "at repo/a/pool.yaml:4:9); names must be unique per kind")
    # diff names both places the same way
    assert main(["diff", "repo", "--state", str(tmp_path / "state")]) == 1
    assert "(first declared at repo/a/pool.yaml:4:9)" in capsys.readouterr().err


def test_an_unreadable_ignore_file_is_an_error_not_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = write(tmp_path / "repo", {"pool.yaml": POOL})
    (repo / ".portsideignore").write_bytes(b"charts/\n\xff\n")
    code, out, _ = validate(repo, capsys)
    assert code == 1
    assert out.startswith(f"{repo}/.portsideignore:2:1: not UTF-8 text"), out
    (repo / ".portsideignore").unlink()
    (tmp_path / "elsewhere").write_text("*.yaml\n")
    (repo / ".portsideignore").symlink_to(tmp_path / "elsewhere")
    code, out, _ = validate(repo, capsys)
    assert code == 1 and "symlink leaves the repo" in out
