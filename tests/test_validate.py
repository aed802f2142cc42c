"""Cross-document rules and the DesiredState they produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.common.errors import ConfigError
from reconciler.desired.hostnames import hostname_problem, in_zone, path_problem, zone_problem
from reconciler.desired.loader import load_documents
from reconciler.desired.origins import origin_problem
from reconciler.desired.state import Origin
from reconciler.desired.validate import load_desired_state, validate_documents


def pool(name: str, *addresses: str, extra: str = "") -> str:
    lines = "".join(f"  - {a}\n" for a in addresses)
    return (f"apiVersion: portside.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n"
            f"spec:\n  addresses:\n{lines}{extra}")


def exposure(name: str, *addresses: str, pool: str | None = None, extra: str = "") -> str:
    pool_line = f"  pool: {pool}\n" if pool else ""
    return (f"apiVersion: portside.io/v1alpha1\nkind: ServiceExposure\nmetadata:\n  name: {name}\n"
            f"spec:\n  service: {{name: {name}}}\n{pool_line}  addresses: [{', '.join(addresses)}]\n{extra}")


def tunnel(name: str = "home", zones: str = "[example.dev]", extra: str = "") -> str:
    return (f"apiVersion: portside.io/v1alpha1\nkind: Tunnel\nmetadata:\n  name: {name}\nspec:\n"
            f"  mode: local\n  tunnelName: {name}\n  dns:\n    zones: {zones}\n{extra}")


def route(name: str, hostname: str, tunnel: str = "home", extra: str = "") -> str:
    return (f"apiVersion: portside.io/v1alpha1\nkind: TunnelRoute\nmetadata:\n  name: {name}\nspec:\n"
            f"  tunnel: {tunnel}\n  hostname: '{hostname}'\n  service: {{name: {name}, port: 80}}\n{extra}")


def repo(tmp_path: Path, *documents: str) -> Path:
    (tmp_path / "repo.yaml").write_text("---\n".join(documents))
    return tmp_path


def problems(tmp_path: Path, *documents: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_desired_state(repo(tmp_path, *documents))
    return [f"{d.line}:{d.col} {d.path}: {d.message}" for d in caught.value.diagnostics]


def test_desired_state_is_sorted_by_name_with_origins(tmp_path: Path) -> None:
    state = load_desired_state(repo(tmp_path, pool("zeta", "10.1.0.0/24"), pool("alpha", "10.0.0.0/24"),
                                    tunnel(), route("www", "www.example.dev"), route("api", "api.example.dev")),
                               revision="abc123")
    assert [p.metadata.name for p in state.pools] == ["alpha", "zeta"]
    assert [r.metadata.name for r in state.routes] == ["api", "www"]
    assert state.revision == "abc123"
    assert state.origins[("IPAddressPool", "zeta")] == Origin("repo.yaml", 1, 1)
    assert state.origins[("TunnelRoute", "api")] == Origin("repo.yaml", 36, 1)


def test_all_problems_of_all_kinds_come_in_one_error(tmp_path: Path) -> None:
    found = problems(tmp_path, pool("a", "10.0.0.0/24"), pool("a", "10.0.0.128/25"),
                     exposure("blog", "10.9.9.9", pool="a"), tunnel(), route("r", "r.example.org"))
    assert [f.split(" ")[0] for f in found] == ["12:9", "15:5", "24:15", "42:13"]
    assert "duplicate IPAddressPool" in found[0] and "overlaps" in found[1]
    assert "outside pool" in found[2] and "outside the zones" in found[3]
    with pytest.raises(ConfigError, match=r"4 error\(s\) in the desired state"):
        load_desired_state(tmp_path)


def test_ranges_overlapping_within_one_pool_are_refused(tmp_path: Path) -> None:
    [found] = problems(tmp_path, pool("a", "10.0.0.0/24", "10.0.0.200-10.0.1.10"))
    assert found.startswith("8:5 spec.addresses[1]: 10.0.0.200-10.0.1.10 overlaps 10.0.0.0/24")


def test_v4_and_v6_pools_never_overlap(tmp_path: Path) -> None:
    load_desired_state(repo(tmp_path, pool("v4", "0.0.0.0/8"), pool("v6", "::/104"),
                            pool("later", "11.0.0.0/8", "fd00::1-fd00::ff")))


def test_a_long_range_shadowing_later_ranges_is_caught(tmp_path: Path) -> None:
    """Sorted sweep: 10.0.0.0/8 covers 10.5/16 even after a small range in between."""
    found = problems(tmp_path, pool("big", "10.0.0.0/8"), pool("small", "10.1.0.0/24", "10.5.0.0/16"))
    assert len(found) == 2 and all('of pool "big"' in f for f in found)


def test_shared_ip_needs_the_same_sharing_key(tmp_path: Path) -> None:
    base = pool("lan", "10.0.0.0/24")
    shared = [exposure(n, "10.0.0.5", extra="  sharingKey: dns\n") for n in ("dns-tcp", "dns-udp")]
    load_desired_state(repo(tmp_path, base, *shared))
    mismatch = [shared[0], exposure("dns-udp", "10.0.0.5", extra="  sharingKey: other\n")]
    [found] = problems(tmp_path, base, *mismatch)
    assert "is already requested by ServiceExposure \"dns-tcp\"" in found


def test_address_without_a_named_pool_must_be_in_some_pool(tmp_path: Path) -> None:
    load_desired_state(repo(tmp_path, pool("a", "10.0.0.0/24"), pool("b", "10.1.0.0/24"),
                            exposure("blog", "10.1.0.7")))
    [found] = problems(tmp_path, pool("a", "10.0.0.0/24"), exposure("blog", "10.2.0.7"))
    assert "10.2.0.7 is inside no declared pool" in found


def test_buggy_ip_in_a_pool_that_avoids_them(tmp_path: Path) -> None:
    [found] = problems(tmp_path, pool("a", "10.0.0.0/23", extra="  avoidBuggyIPs: true\n"),
                       exposure("blog", "10.0.0.255", pool="a"))
    assert "avoidBuggyIPs" in found


def test_dual_stack_addresses(tmp_path: Path) -> None:
    base = pool("a", "10.0.0.0/24", "fd00::/120")
    load_desired_state(repo(tmp_path, base, exposure("blog", "10.0.0.1", "'fd00::1'", pool="a",
                                                     extra="  ipFamilyPolicy: RequireDualStack\n")))
    found = problems(tmp_path, base, exposure("blog", "10.0.0.1", "10.0.0.2", pool="a"))
    assert any("ipFamilyPolicy" in f for f in found)
    assert any("two addresses of the same family" in f for f in found)


def test_a_service_is_exposed_once(tmp_path: Path) -> None:
    [found] = problems(tmp_path, pool("a", "10.0.0.0/24"), exposure("blog"),
                       exposure("blog2").replace("{name: blog2}", "{name: blog}"))
    assert "Service default/blog is already exposed by ServiceExposure \"blog\"" in found


def test_a_hostname_belongs_to_one_tunnel(tmp_path: Path) -> None:
    [found] = problems(tmp_path, tunnel("home"), tunnel("office"), route("a", "app.example.dev"),
                       route("b", "app.example.dev", tunnel="office", extra="  path: ^/admin\n"))
    assert 'already routed through tunnel "home"' in found


def test_same_hostname_different_paths_is_fine(tmp_path: Path) -> None:
    load_desired_state(repo(tmp_path, tunnel(), route("a", "App.Example.dev"),
                            route("b", "app.example.dev", extra="  path: ^/api/\n"),
                            route("c", "*.example.dev"), route("apex", "example.dev")))


def test_duplicate_hostname_is_case_insensitive(tmp_path: Path) -> None:
    [found] = problems(tmp_path, tunnel(), route("a", "app.example.dev"), route("b", "APP.example.dev"))
    assert "is already routed by TunnelRoute \"a\"" in found


def test_tunnel_needs_an_identity_and_remote_zones(tmp_path: Path) -> None:
    nameless = tunnel().replace("  tunnelName: home\n", "")
    [found] = problems(tmp_path, nameless)
    assert "needs tunnelId" in found
    remote = (tunnel(zones="[]").replace("mode: local", "mode: remote\n  accountId: abc"))
    [found] = problems(tmp_path, remote)
    assert "must list dns.zones" in found
    load_desired_state(repo(tmp_path, remote.replace("zones: []", "zones: []\n    manage: false")))


def test_zone_names_are_checked(tmp_path: Path) -> None:
    [found] = problems(tmp_path, tunnel(zones="['*.example.dev']"))
    assert found.startswith("9:13 spec.dns.zones[0]:") and "is not a zone name" in found


def test_local_tunnel_without_zones_accepts_any_hostname(tmp_path: Path) -> None:
    load_desired_state(repo(tmp_path, tunnel(zones="[]"), route("a", "anything.example.org")))


def test_route_to_a_service_needs_no_exposure(tmp_path: Path) -> None:
    """In a cluster the Service may get its IP without a ServiceExposure (like MetalLB)."""
    state = load_desired_state(repo(tmp_path, tunnel(), route("grafana", "grafana.example.dev")))
    assert state.exposures == ()


def test_validate_documents_is_usable_on_its_own(tmp_path: Path) -> None:
    result = load_documents(repo(tmp_path, pool("a", "10.0.0.0/24"), exposure("x", pool="b")))
    assert result.diagnostics == []
    [found] = validate_documents(result.documents)
    assert (found.file, found.line, found.col, found.path) == ("repo.yaml", 15, 9, "spec.pool")


# --- the rule tables ---------------------------------------------------------------------------


@pytest.mark.parametrize("hostname", ["blog.example.dev", "*.example.dev", "a-b.c.example.dev",
                                      "xn--bcher-kva.example", "BLOG.Example.DEV", "1.example.dev"])
def test_valid_hostnames(hostname: str) -> None:
    assert hostname_problem(hostname) is None


@pytest.mark.parametrize(("hostname", "phrase"), [
    ("blog", "not a fully qualified name"),
    ("blog.example.dev.", "trailing dot"),
    ("*.*.example.dev", "wildcard is allowed only"),
    ("b*.example.dev", "wildcard is allowed only"),
    ("*", "not a fully qualified name"),
    ("blog.example.dev:443", "cannot carry a port"),
    ("https://blog.example.dev", "write only the hostname"),
    ("blog.example.dev/api", "put the path in spec.path"),
    ("bücher.example", 'punycode form "xn--bcher-kva.example"'),
    ("-x.example.dev", 'label "-x"'),
    ("a" * 64 + ".example.dev", "must be 1-63"),
    ("a." * 127 + "dev", "longer than 253"),
    ("a" * 100_000, "longer than 253"),
])
def test_invalid_hostnames(hostname: str, phrase: str) -> None:
    problem = hostname_problem(hostname)
    assert problem is not None and phrase in problem


def test_zone_membership() -> None:
    assert in_zone("blog.example.dev", "example.dev")
    assert in_zone("*.example.dev", "Example.Dev")
    assert in_zone("example.dev", "example.dev")
    assert not in_zone("notexample.dev", "example.dev")
    assert zone_problem("example.dev") is None
    assert zone_problem("dev") is not None


@pytest.mark.parametrize(("path", "phrase"), [
    ("^/api/.*$", None), (r"\.(jpg|png)$", None), ("(?i)^/admin", None), ("[(?=]", None), (r"\(?=x", None),
    ("(?P<v>v[0-9])/", None),
    ("^/(?=x)", "lookahead"), ("(?<=a)b", "lookbehind"), ("(?<!a)b", "negative lookbehind"),
    (r"(a)\1", "backreference"), ("(?P<x>a)(?P=x)", "named backreference"), ("(?>a)", "atomic group"),
    ("(a", "not a valid regular expression"), ("*a", "not a valid regular expression"),
])
def test_route_paths(path: str, phrase: str | None) -> None:
    problem = path_problem(path)
    if phrase is None:
        assert problem is None
    else:
        assert problem is not None and phrase in problem


@pytest.mark.parametrize("service", [
    "http://192.168.1.10", "https://blog.lan:8443", "ws://h:1", "wss://h", "tcp://h:22", "ssh://h:22",
    "rdp://h:3389", "smb://h:445", "unix:/run/app.sock", "unix+tls:/run/app.sock", "http_status:404",
    "http_status:100", "http_status:999", "hello_world", "bastion", "socks-proxy", "http://[fd00::1]:80",
])
def test_origins_cloudflared_accepts(service: str) -> None:
    assert origin_problem(service) is None


@pytest.mark.parametrize(("service", "phrase"), [
    ("http://h/", "has a path"), ("http://h/app", "has a path"), ("gopher://h", 'scheme "gopher"'),
    ("localhost:8080", "no scheme"), ("192.168.1.10", "no scheme"), ("http://", "no host"),
    ("http_status:1000", "100 to 999"), ("http_status:", "100 to 999"), ("unix:", "needs a socket path"),
    ("http://h:70000", "not a valid URL"), ("hello-world", "no scheme"),
])
def test_origins_cloudflared_rejects(service: str, phrase: str) -> None:
    problem = origin_problem(service)
    assert problem is not None and phrase in problem
