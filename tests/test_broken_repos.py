"""Broken repos, one fault each: `portside validate` refuses every one, at the right file:line:col,
with a message that says what to fix, and writes nothing.

Each case is a tiny repo written to tmp_path: ``base.yaml`` holds valid supporting documents (a
pool, a tunnel) when the fault needs them, ``broken.yaml`` holds the fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.cli import main

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lan
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


def route(hostname: str = "blog.example.dev", extra: str = "", target: str = "url: http://192.168.1.10:80",
          tunnel: str = "home", name: str = "blog") -> str:
    return f"""\
apiVersion: portside.io/v1alpha1
kind: TunnelRoute
metadata:
  name: {name}
spec:
  tunnel: {tunnel}
  hostname: {hostname}
  {target}
{extra}"""


def exposure(name: str, addresses: str = "", pool: str = "lan", extra: str = "") -> str:
    return f"""\
apiVersion: portside.io/v1alpha1
kind: ServiceExposure
metadata:
  name: {name}
spec:
  service:
    name: {name}
  pool: {pool}
  addresses: [{addresses}]
{extra}"""


@dataclass
class Case:
    id: str
    bad: str | bytes
    where: str  # expected file:line:col
    phrase: str  # part of the message that says what to fix
    base: str = ""
    setup: Callable[[Path], None] | None = field(default=None, repr=False)


def _symlink_out(repo: Path) -> None:
    outside = repo.parent / "outside.yaml"
    outside.write_text(POOL)
    (repo / "linked.yaml").symlink_to(outside)


def _big_file(repo: Path) -> None:
    (repo / "huge.yaml").write_text(POOL + "# " + "x" * (1024 * 1024) + "\n")


CASES = [
    # --- hostile or malformed input ------------------------------------------------------------
    Case("yaml-syntax", "apiVersion: portside.io/v1alpha1\nkind: Tunnel\nmetadata: {name: home\n",
         "broken.yaml:4:1", "YAML syntax error"),
    Case("duplicate-key", POOL.replace("  name: lan\n", "  name: lan\n  name: lan2\n"),
         "broken.yaml:5:3", 'duplicate key "name" (first defined at line 4, column 3)'),
    Case("wrong-type", POOL.replace("  addresses:\n  - 192.168.1.0/24\n", "  addresses: 192.168.1.0/24\n"),
         "broken.yaml:7:14", 'spec.addresses: expected a list of strings, got a string ("192.168.1.0/24")'),
    Case("wrong-type-bool", POOL + "  autoAssign: \"no\"\n", "broken.yaml:9:15",
         "spec.autoAssign: expected true or false"),
    Case("unknown-kind", POOL.replace("kind: IPAddressPool", "kind: IPPool"), "broken.yaml:2:7",
         'unknown kind "IPPool" (known: IPAddressPool, L2Advertisement'),
    Case("unknown-apiversion", POOL.replace("metallb.io/v1beta1", "metallb.io/v1alpha9"), "broken.yaml:1:13",
         'apiVersion "metallb.io/v1alpha9" is not valid for kind IPAddressPool (use metallb.io/v1beta1 or '
         "portside.io/v1alpha1)"),
    Case("portside-only-kind-with-metallb-api", TUNNEL.replace("portside.io/v1alpha1", "metallb.io/v1beta1"),
         "broken.yaml:1:13", "is not valid for kind Tunnel (use portside.io/v1alpha1)"),
    Case("unknown-field", POOL.replace("  addresses:", "  adresses:"), "broken.yaml:7:3",
         'unknown field "adresses" (allowed: addresses, autoAssign, avoidBuggyIPs, serviceAllocation); '
         'did you mean "addresses"?'),
    Case("missing-field", POOL.replace("  name: lan\n", ""), "broken.yaml:3:1",
         'metadata.name: missing required field "name"'),
    Case("billion-laughs",
         "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
         + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
         "broken.yaml:5:8", "aliases expand to more than 10000 nodes"),
    Case("python-object-tag", "apiVersion: !!python/object/apply:os.system [echo pwned]\n", "broken.yaml:1:13",
         "tag !!python/object/apply:os.system is not allowed"),
    Case("custom-tag", POOL.replace("  - 192.168.1.0/24", "  - !cidr 192.168.1.0/24"), "broken.yaml:8:5",
         "tag !cidr is not allowed"),
    Case("deep-nesting", POOL + "  serviceAllocation: " + "[" * 100 + "]" * 100 + "\n", "broken.yaml:9:84",
         "nest deeper than 64 levels"),
    Case("tab-indentation", POOL.replace("  name: lan\n", "\tname: lan\n"), "broken.yaml:4:1",
         "a tab in the indentation: YAML indents with spaces only"),
    Case("tab-after-dash", POOL.replace("  - 192.168.1.0/24", "  -\t192.168.1.0/24"), "broken.yaml:8:4",
         "a tab where YAML needs a space"),
    # --- headers: near-misses of portside's and MetalLB's groups and kinds are errors -------------
    Case("group-typo", TUNNEL.replace("portside.io/v1alpha1", "portsde.io/v1alpha1"), "broken.yaml:1:13",
         'unknown API group "portsde.io"; did you mean "portside.io/v1alpha1"?'),
    Case("metallb-group-typo", POOL.replace("metallb.io/v1beta1", "metalb.io/v1beta1"), "broken.yaml:1:13",
         'did you mean "metallb.io/v1beta1"?'),
    Case("version-typo", TUNNEL.replace("portside.io/v1alpha1", "portside.io/v1alpa1"), "broken.yaml:1:13",
         'apiVersion "portside.io/v1alpa1" is not valid for kind Tunnel (use portside.io/v1alpha1); '
         'did you mean "portside.io/v1alpha1"?'),
    Case("kind-typo-in-our-group", POOL.replace("kind: IPAddressPool", "kind: IPAdressPool"), "broken.yaml:2:7",
         'unknown kind "IPAdressPool" (known: IPAddressPool, L2Advertisement); did you mean "IPAddressPool"?'),
    Case("our-kind-without-apiversion", POOL.replace("apiVersion: metallb.io/v1beta1\n", ""), "broken.yaml:1:1",
         "missing apiVersion for kind IPAddressPool (use metallb.io/v1beta1 or portside.io/v1alpha1)"),
    Case("our-kind-with-core-apiversion", POOL.replace("metallb.io/v1beta1", "v1"), "broken.yaml:1:13",
         'apiVersion "v1" is not valid for kind IPAddressPool'),
    Case("our-group-without-kind", TUNNEL.replace("kind: Tunnel\n", ""), "broken.yaml:1:1", "missing kind (one of:"),
    Case("manifest-without-header", TUNNEL.replace("apiVersion: portside.io/v1alpha1\nkind: Tunnel\n", ""),
         "broken.yaml:1:1", "missing apiVersion and kind: every manifest needs both"),
    Case("not-a-mapping", "- apiVersion: portside.io/v1alpha1\n  kind: Tunnel\n", "broken.yaml:1:1",
         "a document must be a mapping with apiVersion and kind, got a list"),
    Case("file-too-big", "", "huge.yaml:1:1", "over the limit of 1 MiB", setup=_big_file),
    Case("not-utf8", POOL.replace("name: lan", "name: lan").encode() + b"# caf\xe9\n", "broken.yaml:9:6",
         "not UTF-8 text (byte 0xe9)"),
    Case("utf16", "\ufeffapiVersion: v1\n".encode("utf-16"), "broken.yaml:1:1", "not UTF-8 text"),
    Case("symlink-leaves-repo", "", "linked.yaml:1:1", "symlink leaves the repo", setup=_symlink_out),
    # --- pools and advertisements --------------------------------------------------------------
    Case("duplicate-pool-name", POOL.replace("192.168.1.0/24", "10.0.0.0/24"), "broken.yaml:4:9",
         'duplicate IPAddressPool "lan" (first declared at {repo}/base.yaml:4:9)', base=POOL),
    Case("overlapping-pools", POOL.replace("name: lan", "name: lan2").replace("192.168.1.0/24", "192.168.1.128/25"),
         "broken.yaml:8:5",
         'overlaps 192.168.1.0/24 of pool "lan" ({repo}/base.yaml:8:5); MetalLB refuses overlapping pools', base=POOL),
    Case("host-bits-set", POOL.replace("192.168.1.0/24", "192.168.1.7/24"), "broken.yaml:8:5",
         "has host bits set; did you mean 192.168.1.0/24?"),
    Case("range-reversed", POOL.replace("192.168.1.0/24", "192.168.1.200-192.168.1.100"), "broken.yaml:8:5",
         "starts after it ends"),
    Case("range-mixed-family", POOL.replace("192.168.1.0/24", "192.168.1.1-fd00::1"), "broken.yaml:8:5",
         "mixes IPv4 and IPv6"),
    Case("not-an-address", POOL.replace("192.168.1.0/24", "home"), "broken.yaml:8:5",
         "neither a CIDR (a.b.c.d/n) nor a range (first-last)"),
    Case("advertisement-unknown-pool",
         "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: home\nspec:\n"
         "  ipAddressPools:\n  - lan\n  - home-pool\n",
         "broken.yaml:8:5", 'unknown IPAddressPool "home-pool" (declared: lan)', base=POOL),
    # --- exposures -----------------------------------------------------------------------------
    Case("exposure-null-pool", exposure("blog", pool=""), "broken.yaml:8:8",
         "spec.pool: pool is empty (null): name an IPAddressPool, or leave the field out", base=POOL),
    Case("exposure-unknown-pool", exposure("blog", pool="wan"), "broken.yaml:8:9",
         'unknown IPAddressPool "wan" (declared: lan)', base=POOL),
    Case("ip-outside-pool", exposure("blog", "192.168.2.10"), "broken.yaml:9:15",
         '192.168.2.10 is outside pool "lan" (192.168.1.0-192.168.1.255)', base=POOL),
    Case("ip-claimed-twice", exposure("blog", "192.168.1.10") + "---\n" + exposure("wiki", "192.168.1.10"),
         "broken.yaml:19:15", '192.168.1.10 is already requested by ServiceExposure "blog" ({repo}/broken.yaml:9:15); '
         "give both the same sharingKey", base=POOL),
    Case("ip-not-an-address", exposure("blog", "192.168.1.300"), "broken.yaml:9:15",
         "'192.168.1.300' is not an IPv4 or IPv6 address", base=POOL),
    # --- tunnels and routes --------------------------------------------------------------------
    Case("route-unknown-tunnel", route(tunnel="office"), "broken.yaml:6:11",
         'unknown Tunnel "office" (declared: home)', base=TUNNEL),
    Case("duplicate-hostname-path", route(extra="  path: ^/api/\n") + "---\n"
         + route(name="blog-api", extra="  path: ^/api/\n"),
         "broken.yaml:17:13", 'is already routed by TunnelRoute "blog" ({repo}/broken.yaml:7:13)', base=TUNNEL),
    Case("hostname-invalid", route(hostname="my_blog.example.dev"), "broken.yaml:7:13",
         'label "my_blog" must be 1-63 letters, digits or \'-\'', base=TUNNEL),
    Case("hostname-wildcard-not-leftmost", route(hostname="blog.*.example.dev"), "broken.yaml:7:13",
         "a wildcard is allowed only as the whole leftmost label", base=TUNNEL),
    Case("hostname-with-port", route(hostname='"blog.example.dev:8443"'), "broken.yaml:7:13",
         "a hostname cannot carry a port", base=TUNNEL),
    Case("path-regex-syntax", route(extra="  path: ^/api/(v1\n"), "broken.yaml:9:9",
         "is not a valid regular expression: missing ), unterminated subpattern", base=TUNNEL),
    Case("path-regex-lookahead", route(extra="  path: ^/(?!admin)\n"), "broken.yaml:9:9",
         "uses a negative lookahead, which Go regular expressions (cloudflared) do not support", base=TUNNEL),
    Case("origin-with-path", route(target="url: http://192.168.1.10:80/blog"), "broken.yaml:8:8",
         "cloudflared cannot proxy to a different path on the origin", base=TUNNEL),
    Case("origin-bad-scheme", route(target="url: ftp://192.168.1.10"), "broken.yaml:8:8",
         'scheme "ftp" is not one cloudflared supports', base=TUNNEL),
    Case("origin-no-host", route(target='url: "http://:80"'), "broken.yaml:8:8", "has no host", base=TUNNEL),
    Case("origin-status-out-of-range", route(target="url: http_status:99"), "broken.yaml:8:8",
         "http_status needs a status code from 100 to 999", base=TUNNEL),
    Case("catch-all-invalid", TUNNEL + "  catchAll: http_status:4040\n", "broken.yaml:10:13",
         "http_status needs a status code from 100 to 999"),
    Case("route-outside-zone", route(hostname="blog.example.com"), "broken.yaml:7:13",
         'blog.example.com is outside the zones of tunnel "home" (example.dev)', base=TUNNEL),
    Case("remote-tunnel-without-zones",
         "apiVersion: portside.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: cloud\nspec:\n"
         "  mode: remote\n  accountId: 0123456789abcdef\n  tunnelName: home\n",
         "broken.yaml:6:3", "a remote tunnel that manages DNS must list dns.zones"),
    Case("tunnel-id-not-uuid", TUNNEL.replace("6ff42ae2-765d-4adf-8112-31c55c1551ef", "my-tunnel"),
         "broken.yaml:7:13", "is not a tunnel id: write the tunnel's UUID"),
    Case("route-two-targets", route(extra="  service: {name: blog, port: 80}\n"), "broken.yaml:5:1",
         "give exactly one of service (an in-cluster Service) or url", base=TUNNEL),
    Case("bad-duration", route(extra="  originRequest:\n    connectTimeout: 10 seconds\n"), "broken.yaml:10:21",
         '"10 seconds" is not a duration', base=TUNNEL),
    Case("negative-duration", route(extra="  originRequest:\n    connectTimeout: -5\n"), "broken.yaml:10:21",
         "spec.originRequest.connectTimeout: -5 seconds is negative", base=TUNNEL),
    Case("negative-go-duration", route(extra="  originRequest:\n    tcpKeepAlive: -1m30s\n"), "broken.yaml:10:19",
         'spec.originRequest.tcpKeepAlive: "-1m30s" is negative', base=TUNNEL),
    Case("zero-duration", TUNNEL + "  originRequest:\n    keepAliveTimeout: 0s\n", "broken.yaml:11:23",
         'spec.originRequest.keepAliveTimeout: "0s" is zero, which cloudflared reads as no timeout'),
    Case("duration-beyond-go", route(extra="  originRequest:\n    tlsTimeout: 99999999999999999999999\n"),
         "broken.yaml:10:17", "is longer than the longest duration cloudflared can hold", base=TUNNEL),
    Case("go-duration-overflow", route(extra="  originRequest:\n    tlsTimeout: 2562048h\n"),
         "broken.yaml:10:17", '"2562048h" is longer than the longest duration', base=TUNNEL),
]


def _tree(repo: Path) -> dict[str, bytes]:
    """Everything in and beside the repo (a symlink case keeps its target beside it)."""
    top = repo.parent
    return {p.relative_to(top).as_posix(): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(top.rglob("*")) if not p.is_relative_to(top / "cwd")}


def _write_case(tmp_path: Path, case: Case) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    if case.base:
        (repo / "base.yaml").write_text(case.base)
    if case.bad:
        target = repo / "broken.yaml"
        target.write_bytes(case.bad) if isinstance(case.bad, bytes) else target.write_text(case.bad)
    if case.setup is not None:
        case.setup(repo)
    return repo


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_repo_is_refused_at_the_fault(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _write_case(tmp_path, case)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = _tree(repo)

    code = main(["validate", str(repo)])

    out = capsys.readouterr().out
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 1, f"expected exactly one error (one fault per repo), got:\n{out}"
    # Files are named as the user reaches them: below the PATH they gave.
    assert lines[0].startswith(f"{repo}/{case.where}: "), lines[0]
    assert case.phrase.replace("{repo}", str(repo)) in lines[0], lines[0]
    assert _tree(repo) == before, "validate must not write anything"
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("duplicate-key", "ip-claimed-twice")],
                         ids=lambda c: c.id)
def test_json_output_carries_the_same_error(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _write_case(tmp_path, case)
    assert main(["validate", str(repo), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    [error] = report["errors"]
    assert f"{error['file']}:{error['line']}:{error['col']}" == f"{repo}/{case.where}"
    assert case.phrase.replace("{repo}", str(repo)).split(": ")[-1] in error["message"]
    assert report["documents"] >= 1


def test_all_faults_of_a_repo_are_reported_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several broken files in one repo: every fault is listed, sorted by file and line."""
    repo = tmp_path / "repo"
    (repo / "a").mkdir(parents=True)
    (repo / "a" / "pool.yaml").write_text(POOL.replace("  addresses:", "  adresses:"))
    (repo / "b.yaml").write_text(TUNNEL + "---\n" + route(hostname="blog.example.com"))
    (repo / "c.yml").write_text("kind: [\n")
    (repo / "d.yaml").write_text(route(tunnel="nope", name="x", hostname="x.example.dev"))
    assert main(["validate", str(repo)]) == 1
    lines = capsys.readouterr().out.splitlines()
    wheres = [line.split(": ")[0] for line in lines]
    assert wheres == [f"{repo}/{w}" for w in ("a/pool.yaml:7:3", "b.yaml:17:13", "c.yml:2:1", "d.yaml:6:11")]


def test_cli_as_a_subprocess_exit_codes_and_text(tmp_path: Path) -> None:
    repo = _write_case(tmp_path, next(c for c in CASES if c.id == "overlapping-pools"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    bad = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(repo)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"{repo}/broken.yaml:8:5: spec.addresses[0]: 192.168.1.128/25 overlaps")
    assert "1 error(s)" in bad.stderr
    (repo / "broken.yaml").unlink()
    good = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(repo), "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout) == {
        "valid": True, "errors": [], "warnings": [], "documents": 1, "skippedSummary": None,
        "skipped": {"otherKinds": 0, "notManifests": 0, "unsupportedKinds": 0, "empty": 0, "ignoredPaths": 0,
                    "helmCharts": 0}}


def test_missing_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nowhere")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


def test_a_broken_document_is_not_reported_again_as_unknown(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in a Tunnel or pool is one error: documents naming it do not add "unknown" errors."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pool.yaml").write_text(POOL.replace("  addresses:", "  adresses:"))
    (repo / "tunnel.yaml").write_text(TUNNEL.replace("mode: remote", "mode: remoet")
                                      .replace("mode: local", "mode: locall") + "---\n" + route())
    (repo / "exposure.yaml").write_text(exposure("blog", addresses="192.168.1.10"))
    assert main(["validate", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "unknown" not in out.replace('unknown field "adresses"', ""), out
    assert len(out.splitlines()) == 2, out
