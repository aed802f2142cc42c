"""The fake Cloudflare API, driven only through the official ``cloudflare`` SDK over HTTP.

These tests pin what the provider will rely on: the SDK's paths and query encoding reach the fake,
and the fake answers with the real API's envelopes, codes and pagination.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import cloudflare
import pytest

from tests.fakes.cloudflare_api import PERMISSIONS, FakeCloudflare

TUNNEL_TARGET = "6ff42ae2-765d-4adf-8112-31c55c1551ef.cfargotunnel.com"


@pytest.fixture
def cf() -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as fake:
        yield fake


@pytest.fixture
def client(cf: FakeCloudflare) -> cloudflare.Cloudflare:
    return cf.client()


@pytest.fixture
def zone(cf: FakeCloudflare) -> str:
    return cf.add_zone("example.com")


def error_codes(err: cloudflare.APIStatusError) -> list[int]:
    body: Any = err.body
    assert isinstance(body, dict) and body["success"] is False and body["result"] is None
    return [e["code"] for e in body["errors"]]


# ---------------------------------------------------------------------- zones


def test_zones_list_filters_by_name_and_account(cf: FakeCloudflare, client: cloudflare.Cloudflare) -> None:
    wanted = cf.add_zone("example.com")
    cf.add_zone("example.org")
    other_account = cf.add_account("Someone else")
    cf.add_zone("elsewhere.net", account_id=other_account)

    by_name = list(client.zones.list(name="example.com"))
    assert [(z.id, z.name, z.status) for z in by_name] == [(wanted, "example.com", "active")]
    assert by_name[0].account.id == cf.account_id

    mine = sorted(z.name for z in client.zones.list(account={"id": cf.account_id}))
    assert mine == ["example.com", "example.org"]
    assert cf.calls("GET", r"^/zones$")[-2].query["account.id"] == cf.account_id

    assert client.zones.get(zone_id=wanted).name == "example.com"  # type: ignore[union-attr]
    with pytest.raises(cloudflare.BadRequestError) as caught:
        client.zones.get(zone_id="0" * 32)
    assert error_codes(caught.value) == [7003, 7000]


# ---------------------------------------------------------------------- DNS records


def test_record_crud_round_trip(cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str) -> None:
    created = client.dns.records.create(
        zone_id=zone, name="www", type="CNAME", content=TUNNEL_TARGET, ttl=1, proxied=True,
        comment="managed by portside, owner=test", tags=["owner:test"],
    )
    assert created is not None
    assert len(created.id) == 32 and all(c in "0123456789abcdef" for c in created.id)
    # Relative names are expanded against the zone, as the real API does.
    assert (created.name, created.type, created.content, created.ttl, created.proxied) == (
        "www.example.com", "CNAME", TUNNEL_TARGET, 1, True)
    stored = cf.records(zone)
    assert len(stored) == 1
    assert stored[0]["zone_id"] == zone and stored[0]["zone_name"] == "example.com"
    assert stored[0]["comment"] == "managed by portside, owner=test" and stored[0]["tags"] == ["owner:test"]

    fetched = client.dns.records.get(created.id, zone_id=zone)
    assert fetched is not None and fetched.content == TUNNEL_TARGET

    # PUT overwrites: what is not sent is reset (comment, tags, proxied).
    put = client.dns.records.update(created.id, zone_id=zone, name="www.example.com", type="A",
                                    content="192.0.2.10", ttl=300)
    assert put is not None
    assert (put.type, put.content, put.ttl, put.proxied) == ("A", "192.0.2.10", 300, False)
    assert cf.records(zone)[0]["comment"] is None and cf.records(zone)[0]["tags"] == []

    # PATCH merges: only the sent fields change.
    patched = client.dns.records.edit(created.id, zone_id=zone, name="www.example.com", type="A",
                                      content="192.0.2.10", ttl=300, comment="hello")
    assert patched is not None and patched.comment == "hello" and patched.content == "192.0.2.10"
    assert cf.records(zone)[0]["modified_on"] >= cf.records(zone)[0]["created_on"]

    deleted = client.dns.records.delete(created.id, zone_id=zone)
    assert deleted is not None and deleted.id == created.id
    assert cf.records(zone) == []
    with pytest.raises(cloudflare.NotFoundError) as caught:
        client.dns.records.get(created.id, zone_id=zone)
    assert error_codes(caught.value) == [81044]


def test_auto_pagination_walks_every_page_and_stops_on_the_empty_one(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    for i in range(23):
        cf.add_record(zone, f"host{i:02d}", "A", f"192.0.2.{i + 1}")

    names = [r.name for r in client.dns.records.list(zone_id=zone, per_page=5)]
    assert names == [f"host{i:02d}.example.com" for i in range(23)]
    pages = [r.query.get("page", "1") for r in cf.calls("GET", "/dns_records$")]
    # Five pages with records, then the empty sixth page that ends the SDK's iteration.
    assert pages == ["1", "2", "3", "4", "5", "6"]

    raw = client.dns.records.with_raw_response.list(zone_id=zone, per_page=5, page=5).http_response.json()
    assert raw["result_info"] == {"page": 5, "per_page": 5, "count": 3, "total_count": 23, "total_pages": 5}


def test_list_filters_name_type_and_comment(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    cf.add_record(zone, "app", "A", "192.0.2.1", comment="managed by portside, owner=a")
    cf.add_record(zone, "app", "AAAA", "2001:db8::1")
    cf.add_record(zone, "api", "CNAME", TUNNEL_TARGET, comment="hand made")
    cf.add_record(zone, "app", "TXT", "v=spf1 -all")

    def names(**filters: Any) -> list[tuple[str, str]]:
        return [(r.name, r.type) for r in client.dns.records.list(zone_id=zone, **filters)]

    assert names(name={"exact": "app.example.com"}) == [
        ("app.example.com", "A"), ("app.example.com", "AAAA"), ("app.example.com", "TXT")]
    assert names(name="api.example.com") == [("api.example.com", "CNAME")]
    assert names(name={"exact": "app.example.com"}, type="AAAA") == [("app.example.com", "AAAA")]
    assert names(comment={"startswith": "managed by portside"}) == [("app.example.com", "A")]
    assert names(name={"endswith": ".example.com"}, type="CNAME") == [("api.example.com", "CNAME")]
    # The SDK encodes nested filters with dots, as the real API expects.
    assert "name.exact" in cf.calls("GET", "dns_records")[0].query


def test_conflicting_and_duplicate_records_are_refused(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    cf.add_record(zone, "app", "A", "192.0.2.1")
    cf.add_record(zone, "alias", "CNAME", TUNNEL_TARGET)

    with pytest.raises(cloudflare.BadRequestError) as cname_on_a:
        client.dns.records.create(zone_id=zone, name="app", type="CNAME", content=TUNNEL_TARGET, ttl=1)
    assert error_codes(cname_on_a.value) == [81053]
    assert "already exists" in str(cname_on_a.value)

    with pytest.raises(cloudflare.BadRequestError) as a_on_cname:
        client.dns.records.create(zone_id=zone, name="alias", type="A", content="192.0.2.2", ttl=1)
    assert error_codes(a_on_cname.value) == [81054]

    with pytest.raises(cloudflare.BadRequestError) as duplicate:
        client.dns.records.create(zone_id=zone, name="app.example.com", type="A", content="192.0.2.1", ttl=1)
    assert error_codes(duplicate.value) == [81057]

    with pytest.raises(cloudflare.BadRequestError) as bad_ip:
        client.dns.records.create(zone_id=zone, name="x", type="A", content="not-an-ip", ttl=1)
    assert error_codes(bad_ip.value) == [9005]
    assert len(cf.records(zone)) == 2


def test_batch_runs_deletes_patches_puts_posts_in_that_order(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    old_a = cf.add_record(zone, "app", "A", "192.0.2.1")
    keep = cf.add_record(zone, "keep", "A", "192.0.2.2")
    swap = cf.add_record(zone, "swap", "A", "192.0.2.3")

    # Posting a CNAME where an A still exists only works because deletes run before posts.
    # (A patch needs only the fields it changes; the SDK's TypedDicts demand more, hence Any.)
    patch: Any = {"id": keep["id"], "comment": "patched"}
    result = client.dns.records.batch(
        zone_id=zone,
        posts=[{"name": "app", "type": "CNAME", "content": TUNNEL_TARGET, "ttl": 1, "proxied": True}],
        puts=[{"id": swap["id"], "name": "swap", "type": "A", "content": "192.0.2.30", "ttl": 1}],
        patches=[patch],
        deletes=[{"id": old_a["id"]}],
    )
    assert result is not None
    assert [r.id for r in result.deletes or []] == [old_a["id"]]
    assert [(r.id, r.comment) for r in result.patches or []] == [(keep["id"], "patched")]
    assert [(r.id, r.content) for r in result.puts or []] == [(swap["id"], "192.0.2.30")]
    assert [(r.name, r.type) for r in result.posts or []] == [("app.example.com", "CNAME")]
    assert sorted((r["name"], r["type"]) for r in cf.records(zone)) == [
        ("app.example.com", "CNAME"), ("keep.example.com", "A"), ("swap.example.com", "A")]


def test_batch_is_all_or_nothing(cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str) -> None:
    victim = cf.add_record(zone, "victim", "A", "192.0.2.1")
    cf.add_record(zone, "taken", "A", "192.0.2.2")
    before = cf.records(zone)

    with pytest.raises(cloudflare.BadRequestError) as caught:
        client.dns.records.batch(
            zone_id=zone,
            deletes=[{"id": victim["id"]}],
            posts=[{"name": "fresh", "type": "A", "content": "192.0.2.9", "ttl": 1},
                   {"name": "taken", "type": "CNAME", "content": TUNNEL_TARGET, "ttl": 1}],
        )
    assert error_codes(caught.value) == [81053]
    assert cf.records(zone) == before

    with pytest.raises(cloudflare.NotFoundError):
        client.dns.records.batch(zone_id=zone, deletes=[{"id": victim["id"]}, {"id": "f" * 32}])
    assert cf.records(zone) == before


# ---------------------------------------------------------------------- tunnels


def test_tunnel_create_list_get_and_soft_delete(cf: FakeCloudflare, client: cloudflare.Cloudflare) -> None:
    tunnels = client.zero_trust.tunnels.cloudflared
    created = tunnels.create(account_id=cf.account_id, name="home", config_src="cloudflare")
    assert created.id and len(created.id) == 36 and created.name == "home"
    assert (created.config_src, created.status, created.deleted_at) == ("cloudflare", "inactive", None)
    cf.add_tunnel(None, "other")

    with pytest.raises(cloudflare.ConflictError) as duplicate:
        tunnels.create(account_id=cf.account_id, name="home", config_src="cloudflare")
    assert error_codes(duplicate.value) == [1013]

    found = list(tunnels.list(account_id=cf.account_id, name="home", is_deleted=False))
    assert [t.id for t in found] == [created.id]
    got = tunnels.get(created.id, account_id=cf.account_id)
    assert got.name == "home"

    gone = tunnels.delete(created.id, account_id=cf.account_id)
    assert gone.deleted_at is not None
    assert list(tunnels.list(account_id=cf.account_id, name="home", is_deleted=False)) == []
    assert [t.id for t in tunnels.list(account_id=cf.account_id, is_deleted=True)] == [created.id]
    # The name is free again once the old tunnel is deleted.
    assert tunnels.create(account_id=cf.account_id, name="home").id != created.id

    with pytest.raises(cloudflare.NotFoundError) as missing:
        tunnels.get("00000000-0000-4000-8000-000000000000", account_id=cf.account_id)
    assert error_codes(missing.value) == [1003]


def test_configuration_replaces_whole_config_and_counts_versions(
    cf: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    tunnel = cf.add_tunnel(None, "home")
    configs = client.zero_trust.tunnels.cloudflared.configurations
    fresh = configs.get(tunnel["id"], account_id=cf.account_id)
    assert fresh is not None and fresh.version == 0 and fresh.config is None

    # The SDK's TypedDict makes "hostname" required, yet the catch-all rule has none: hence Any.
    config: Any = {
        "ingress": [
            {"hostname": "blog.example.com", "service": "http://192.0.2.10:80",
             "origin_request": {"http_host_header": "blog.example.com"}},
            {"hostname": "api.example.com", "path": "^/v1/", "service": "https://192.0.2.11:443"},
            {"service": "http_status:404"},
        ],
        "origin_request": {"connect_timeout": 10},
    }
    first = configs.update(tunnel["id"], account_id=cf.account_id, config=config)
    assert first is not None and first.version == 1 and first.source == "cloudflare"
    stored = cf.tunnel_config(None, tunnel["id"])
    # The SDK sends cloudflared's camelCase keys; the API echoes defaults for what was not sent.
    assert stored["config"]["ingress"][0]["originRequest"] == {"httpHostHeader": "blog.example.com"}
    assert stored["config"]["originRequest"] == {"connectTimeout": 10}
    assert stored["config"]["warp-routing"] == {"enabled": False}

    only_catch_all: Any = {"ingress": [{"service": "http_status:503"}]}
    second = configs.update(tunnel["id"], account_id=cf.account_id, config=only_catch_all)
    assert second is not None and second.version == 2
    got = configs.get(tunnel["id"], account_id=cf.account_id)
    assert got is not None and got.config is not None
    rules: list[tuple[str | None, str]] = [(r.hostname, r.service) for r in got.config.ingress or []]
    assert rules == [(None, "http_status:503")]
    assert got.config.origin_request is not None and got.config.origin_request.connect_timeout is None


@pytest.mark.parametrize(
    ("ingress", "fragment"),
    [
        ([{"hostname": "a.example.com", "service": "http://192.0.2.1"}],
         "The last ingress rule must match all URLs"),
        ([{"service": "http_status:404"}, {"hostname": "a.example.com", "service": "http://192.0.2.1"},
          {"service": "http_status:404"}],
         "Rule #1 is matching the hostname '', but this will match every hostname"),
        ([{"hostname": "a.example.com", "path": "/x", "service": "http://192.0.2.1"},
          {"path": "/y", "service": "http_status:404"}],
         "The last ingress rule must match all URLs"),
        ([{"hostname": "a.example.com"}, {"service": "http_status:404"}], "service is required"),
        ([{"hostname": "a.example.com:8443", "service": "http://192.0.2.1"}, {"service": "http_status:404"}],
         "Hostname cannot contain a port"),
        ([{"hostname": "a.example.com", "service": "192.0.2.1"}, {"service": "http_status:404"}],
         "please make sure it has a scheme and a hostname"),
        ([], "doesn't contain any ingress rules"),
    ],
)
def test_configuration_is_validated_like_cloudflared(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, ingress: list[dict[str, str]], fragment: str
) -> None:
    tunnel = cf.add_tunnel(None, "home", config={"ingress": [{"service": "http_status:404"}]})
    config: Any = {"ingress": ingress}
    with pytest.raises(cloudflare.BadRequestError) as caught:
        client.zero_trust.tunnels.cloudflared.configurations.update(
            tunnel["id"], account_id=cf.account_id, config=config)
    assert error_codes(caught.value) == [1056]
    assert fragment in str(caught.value)
    assert cf.tunnel_config(None, tunnel["id"])["version"] == 1  # nothing was stored


# ---------------------------------------------------------------------- auth and permissions


def test_wrong_token_is_an_authentication_error(cf: FakeCloudflare, zone: str) -> None:
    with pytest.raises(cloudflare.PermissionDeniedError) as caught:
        list(cf.client(api_token="not-the-token").dns.records.list(zone_id=zone))
    assert caught.value.status_code == 403
    assert error_codes(caught.value) == [10000]
    assert "not-the-token" not in str(caught.value)


def test_denied_permission_blocks_only_what_needs_it(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    cf.deny("dns_records:edit")
    assert list(client.dns.records.list(zone_id=zone)) == []
    with pytest.raises(cloudflare.PermissionDeniedError) as caught:
        client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1)
    assert error_codes(caught.value) == [10000]
    assert cf.records(zone) == []

    cf.deny("cfd_tunnel:read", code=9109)
    with pytest.raises(cloudflare.PermissionDeniedError) as tunnels:
        list(client.zero_trust.tunnels.cloudflared.list(account_id=cf.account_id))
    assert error_codes(tunnels.value) == [9109]
    assert "Unauthorized to access requested resource" in str(tunnels.value)

    cf.allow()
    assert client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1) is not None
    with pytest.raises(ValueError, match="unknown permission"):
        cf.deny("dns:write")
    assert "dns_records:edit" in PERMISSIONS


# ---------------------------------------------------------------------- faults


def test_rate_limit_answers_429_with_retry_after(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    fault = cf.rate_limit(retry_after=7, method="POST", path="/dns_records$")
    assert list(client.dns.records.list(zone_id=zone)) == []  # GETs do not match the fault
    with pytest.raises(cloudflare.RateLimitError) as caught:
        client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1)
    assert caught.value.response.headers["retry-after"] == "7"
    assert error_codes(caught.value) == [971]
    assert fault.hits == 1 and cf.records(zone) == []
    # times=1: the next attempt goes through.
    assert client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1) is not None


def test_success_false_with_200_reaches_the_caller_as_none(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    record = cf.add_record(zone, "x", "A", "192.0.2.1")
    cf.fail_success_false(method="GET", times=2)
    # The SDK only unwraps "result": a 200 with success false is None, or an empty page.
    assert client.dns.records.get(record["id"], zone_id=zone) is None
    raw = client.dns.records.with_raw_response.list(zone_id=zone).http_response
    assert raw.status_code == 200 and raw.json()["success"] is False and raw.json()["errors"]
    assert client.dns.records.get(record["id"], zone_id=zone) is not None


def test_fault_after_apply_keeps_the_write(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    cf.fail(503, method="POST", after_apply=True)
    with pytest.raises(cloudflare.InternalServerError) as caught:
        client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1)
    assert caught.value.status_code == 503 and error_codes(caught.value) == [7010]
    assert [r["name"] for r in cf.records(zone)] == ["x.example.com"]
    assert cf.writes()[-1].status == 503


def test_delayed_answer_lets_the_client_time_out(cf: FakeCloudflare, zone: str) -> None:
    client = cf.client(timeout=0.3)
    cf.fail(504, delay=5, method="GET")
    with pytest.raises(cloudflare.APITimeoutError):
        list(client.dns.records.list(zone_id=zone))

    # A write that times out after it was applied: the change is there when the client gives up.
    cf.fail(504, delay=5, method="POST", after_apply=True)
    with pytest.raises(cloudflare.APITimeoutError):
        client.dns.records.create(zone_id=zone, name="slow", type="A", content="192.0.2.1", ttl=1)
    assert [r["name"] for r in cf.records(zone)] == ["slow.example.com"]


def test_html_error_page_from_the_edge(cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str) -> None:
    cf.fail(502, raw_body="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(cloudflare.InternalServerError) as caught:
        list(client.dns.records.list(zone_id=zone))
    assert caught.value.status_code == 502
    assert caught.value.response.headers["content-type"].startswith("text/html")


# ---------------------------------------------------------------------- log and concurrency


def test_request_log_records_method_path_query_body_status(
    cf: FakeCloudflare, client: cloudflare.Cloudflare, zone: str
) -> None:
    list(client.dns.records.list(zone_id=zone, name={"exact": "x.example.com"}, type="A"))
    client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1)
    with pytest.raises(cloudflare.BadRequestError):
        client.dns.records.create(zone_id=zone, name="x", type="A", content="192.0.2.1", ttl=1)

    first = cf.log[0]
    assert (first.method, first.path, first.status) == ("GET", f"/zones/{zone}/dns_records", 200)
    assert first.query == {"name.exact": "x.example.com", "type": "A"}
    writes = cf.writes()
    assert [(w.method, w.status) for w in writes] == [("POST", 200), ("POST", 400)]
    assert writes[0].body == {"name": "x", "type": "A", "content": "192.0.2.1", "ttl": 1}
    assert len(cf.calls("POST", r"/dns_records$")) == 2 and cf.calls("DELETE") == []

    cf.clear_log()
    assert cf.log == [] and cf.writes() == []


def test_concurrent_writers_are_serialised(cf: FakeCloudflare, zone: str) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            client = cf.client()
            for i in range(10):
                client.dns.records.create(zone_id=zone, name=f"w{n}-{i}", type="A", content="192.0.2.1",
                                          ttl=1)
        except BaseException as err:  # collected and re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    records = cf.records(zone)
    assert len(records) == 60 and len({r["id"] for r in records}) == 60
