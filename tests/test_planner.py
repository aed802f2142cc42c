"""The planner and the renderers, as pure functions over plain values."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from reconciler.common.errors import PlanRefused
from reconciler.desired.models import IPAddressPool, L2Advertisement
from reconciler.desired.state import DesiredState
from reconciler.planning.announcement_table import decode_table, encode_table
from reconciler.planning.engine import ApplyPolicy, check_safety
from reconciler.planning.live import ANNOTATION_POOL, LiveNode, LiveService, LiveState, ServicePort
from reconciler.planning.plan import Change, Plan, Target, ordered
from reconciler.planning.planner import ANNOUNCEMENTS_ARTIFACT, make_plan
from reconciler.planning.render import render, render_json, render_markdown, render_text


def pool(name: str, *addresses: str) -> IPAddressPool:
    return IPAddressPool.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": {"addresses": list(addresses)}})


def advertisement(name: str = "all") -> L2Advertisement:
    return L2Advertisement.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": name}})


def service(name: str, *ingress: str, pool_name: str | None = None) -> LiveService:
    annotations = {ANNOTATION_POOL: pool_name} if pool_name else {}
    return LiveService("default", name, (ServicePort(80),), annotations=annotations, ingress=tuple(ingress))


NODES = (LiveNode("node-a", address="10.0.0.1"), LiveNode("node-b", address="10.0.0.2"))
DESIRED = DesiredState(pools=(pool("lan", "192.168.1.10-192.168.1.12"),), advertisements=(advertisement(),))


def converge(live: LiveState, plan: Plan) -> LiveState:
    """What a faithful backend leaves behind after applying ``plan`` (the idempotency check)."""
    services = {s.key: s for s in live.services}
    for change in plan.actionable:
        if change.target.kind == "Service" and change.target.id in services:
            after = change.after or {"ingress": [], "pool": None}
            old = services[change.target.id]
            annotations = {ANNOTATION_POOL: after["pool"]} if after["pool"] else {}
            services[change.target.id] = replace(old, ingress=tuple(after["ingress"]), annotations=annotations)
    table = plan.artifacts.get(ANNOUNCEMENTS_ARTIFACT, live.announcements)
    return replace(live, services=tuple(services.values()), announcements=table)


def test_first_plan_assigns_lowest_free_ips_and_announces_them() -> None:
    live = LiveState(services=(service("b"), service("a")), nodes=NODES)
    plan = make_plan(DESIRED, live)
    creates = [(c.target.kind, c.target.id) for c in plan.visible]
    assert creates == [("Service", "default/a"), ("Service", "default/b"),
                       ("Announcement", "192.168.1.10"), ("Announcement", "192.168.1.11"),
                       ("Announcement", "(nodes)")]
    assert plan.changes[0].after == {"ingress": ["192.168.1.10"], "pool": "lan"}
    table = decode_table(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT]))
    assert table.generation == 1 and set(table.nodes) == {"node-a", "node-b"}


def test_applied_plan_read_back_plans_nothing() -> None:
    live = LiveState(services=(service("a"), service("b")), nodes=NODES)
    plan = make_plan(DESIRED, live)
    again = make_plan(DESIRED, converge(live, plan))
    assert not again.has_changes and again.actionable == () and ANNOUNCEMENTS_ARTIFACT not in again.artifacts


def test_exhaustion_is_a_visible_conflict_and_a_warning() -> None:
    live = LiveState(services=tuple(service(n) for n in "abcd"), nodes=NODES)
    plan = make_plan(DESIRED, live)
    conflict = next(c for c in plan.changes if c.action == "conflict")
    assert conflict.target == Target("Service", "default/d")
    assert any("default/d stays pending" in w for w in plan.warnings)


def test_a_new_generation_only_when_the_table_changes() -> None:
    live = LiveState(services=(service("a"),), nodes=NODES)
    first = converge(live, make_plan(DESIRED, live))
    grown = replace(first, services=(*first.services, service("b")))
    plan = make_plan(DESIRED, grown)
    assert decode_table(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT])).generation == 2


@pytest.mark.parametrize("spelling", ["as written", "another header", "other whitespace", "keys unsorted"])
def test_a_published_table_equal_but_for_its_header_plans_nothing(spelling: str) -> None:
    # Portside's own bytes are compared as bytes; any other spelling of the same values as values.
    live = LiveState(services=(service("a"), service("b")), nodes=NODES)
    applied = converge(live, make_plan(DESIRED, live))
    table = decode_table(applied.announcements or "")
    text = {
        "as written": encode_table(table),
        "another header": encode_table(replace(table, generation=41, revision="0" * 40)),
        "other whitespace": json.dumps(json.loads(encode_table(table)), indent=2) + "\n",
        "keys unsorted": json.dumps(dict(reversed(json.loads(encode_table(table)).items()))),
    }[spelling]
    plan = make_plan(DESIRED, replace(applied, announcements=text))
    assert not plan.has_changes and ANNOUNCEMENTS_ARTIFACT not in plan.artifacts


def test_a_published_table_one_entry_apart_is_planned() -> None:
    live = LiveState(services=(service("a"), service("b")), nodes=NODES)
    applied = converge(live, make_plan(DESIRED, live))
    text = (applied.announcements or "").replace('"default/b"', '"default/c"')
    plan = make_plan(DESIRED, replace(applied, announcements=text))
    assert [(c.target.id, c.action) for c in plan.visible] == [("192.168.1.11", "update")]
    assert decode_table(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT])).generation == 2


def test_a_node_leaving_updates_candidates() -> None:
    live = LiveState(services=(service("a"),), nodes=NODES)
    applied = converge(live, make_plan(DESIRED, live))
    plan = make_plan(DESIRED, replace(applied, nodes=NODES[:1]))
    actions = {(c.target.id, c.action) for c in plan.visible}
    assert actions == {("192.168.1.10", "update"), ("(nodes)", "update")}


def test_an_unreadable_published_table_is_rewritten() -> None:
    live = LiveState(services=(service("a", "192.168.1.10", pool_name="lan"),), nodes=NODES,
                     announcements="{garbage")
    plan = make_plan(DESIRED, live)
    assert ANNOUNCEMENTS_ARTIFACT in plan.artifacts
    assert decode_table(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT])).announcements[0].ip == "192.168.1.10"


def test_apply_order_puts_deletes_last_in_reverse_kind_order() -> None:
    changes = [Change(Target("DNSRecord", "x"), "delete"), Change(Target("Service", "s"), "delete"),
               Change(Target("DNSRecord", "y"), "create"), Change(Target("Service", "t"), "create")]
    assert [(c.target.id, c.action) for c in ordered(changes)] == [
        ("t", "create"), ("y", "create"), ("x", "delete"), ("s", "delete")]


@pytest.mark.parametrize(("owned_count", "deleted", "refused"), [
    (1, 1, False),   # the one exposure of a small repo may go
    (2, 2, True),    # everything
    (10, 5, False),  # exactly half
    (10, 6, True),   # more than half
])
def test_safety_refuses_mass_deletion(owned_count: int, deleted: int, refused: bool) -> None:
    changes = [Change(Target("Service", f"s{i}"), "delete" if i < deleted else "no-op", before={"ingress": []})
               for i in range(owned_count)]
    plan = Plan(tuple(changes))
    if refused:
        with pytest.raises(PlanRefused, match="--allow-mass-delete"):
            check_safety(plan, ApplyPolicy())
        check_safety(plan, ApplyPolicy(allow_mass_delete=True))
    else:
        check_safety(plan, ApplyPolicy())


PLAN = Plan((
    Change(Target("Service", "default/a"), "create", None, {"ingress": ["10.0.0.1"]}, "assign"),
    Change(Target("Service", "default/b"), "update", {"ingress": ["10.0.0.2"]}, {"ingress": ["10.0.0.3"]}, "move"),
    Change(Target("DNSRecord", "x.example.dev"), "delete", {"type": "CNAME"}, None, "route removed"),
    Change(Target("DNSRecord", "y.example.dev"), "conflict", {"comment": ""}, None, "not ours | foreign"),
    Change(Target("Service", "default/c"), "no-op", {"ingress": []}, {"ingress": []}, "up to date"),
), revision="abc123", warnings=("something to know",))


def test_text_rendering_is_terraform_like() -> None:
    text = render_text(PLAN)
    assert "+ Service default/a  (assign)" in text
    assert '~ Service default/b  (move)\n    ingress: ["10.0.0.2"] -> ["10.0.0.3"]' in text
    assert "- DNSRecord x.example.dev" in text and "! DNSRecord y.example.dev" in text
    assert "default/c" not in text
    assert text.rstrip().endswith("Plan: 1 to create, 1 to update, 1 to delete, 1 conflict(s).")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\033[32m" in render(PLAN, "text", _Tty())
    assert "\033[" not in render(PLAN, "text", io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\033[" not in render(PLAN, "text", _Tty())


def test_json_is_the_documented_contract() -> None:
    data = json.loads(render_json(PLAN))
    assert set(data) == {"changes", "summary", "revision", "warnings"}
    assert data["summary"] == {"create": 1, "update": 1, "delete": 1, "conflict": 1}
    assert [c["action"] for c in data["changes"]] == ["create", "update", "delete", "conflict"]
    assert set(data["changes"][0]) == {"target", "action", "before", "after", "reason"}
    assert data["changes"][0]["target"] == {"kind": "Service", "id": "default/a"}


def test_markdown_escapes_table_cells() -> None:
    markdown = render_markdown(PLAN)
    assert "### portside plan for `abc123`" in markdown
    assert "not ours \\| foreign" in markdown
    assert "- something to know" in markdown


def test_no_changes_renders_a_clear_message() -> None:
    assert "No changes." in render_text(Plan())
    assert json.loads(render_json(Plan())) == {"changes": [], "summary": {
        "create": 0, "update": 0, "delete": 0, "conflict": 0}}


def test_encode_decode_roundtrip_of_planned_table() -> None:
    live = LiveState(services=(service("a"),), nodes=NODES)
    text = str(make_plan(DESIRED, live).artifacts[ANNOUNCEMENTS_ARTIFACT])
    assert encode_table(decode_table(text)) == text


def test_an_unreadable_empty_table_is_rewritten_too() -> None:
    plan = make_plan(DesiredState(), LiveState(nodes=NODES, announcements="not json"))
    assert decode_table(str(plan.artifacts[ANNOUNCEMENTS_ARTIFACT])).announcements == ()


def test_a_new_commit_alone_does_not_republish_the_table() -> None:
    live = LiveState(services=(service("a"),), nodes=NODES)
    applied = converge(live, make_plan(DESIRED, live))
    plan = make_plan(replace(DESIRED, revision="next-commit"), applied)
    assert not plan.has_changes and ANNOUNCEMENTS_ARTIFACT not in plan.artifacts


def test_an_ip_no_node_may_announce_is_a_warning() -> None:
    picky = L2Advertisement.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": "workers"},
        "spec": {"nodeSelectors": [{"matchLabels": {"role": "worker"}}]}})
    plan = make_plan(replace(DESIRED, advertisements=(picky,)),
                     LiveState(services=(service("a"),), nodes=NODES))
    assert any(w.startswith("192.168.1.10 (default/a) has no eligible node") for w in plan.warnings)
