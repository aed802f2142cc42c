"""same_routing: a live ingress list in another order is rewritten only when the order matters."""

from __future__ import annotations

import pytest

from reconciler.planning.live import IngressRule
from reconciler.tunnels.rules import same_routing


def rule(hostname: str | None, service: str = "http://10.0.0.1:80", path: str | None = None) -> IngressRule:
    return IngressRule(service=service, hostname=hostname, path=path)


CATCH_ALL = rule(None, "http_status:404")


@pytest.mark.parametrize(("live", "wanted", "same"), [
    # Different exact hostnames: no request matches both, any order routes alike.
    ([rule("b.example.dev"), rule("a.example.dev")], [rule("a.example.dev"), rule("b.example.dev")], True),
    # A wildcard after a hostname it covers is not the same as before it.
    ([rule("*.example.dev"), rule("a.example.dev")], [rule("a.example.dev"), rule("*.example.dev")], False),
    # A wildcard and a hostname it does not cover: order is free.
    ([rule("*.other.dev"), rule("a.example.dev")], [rule("a.example.dev"), rule("*.other.dev")], True),
    # Nested wildcards overlap.
    ([rule("*.example.dev"), rule("*.a.example.dev")], [rule("*.a.example.dev"), rule("*.example.dev")], False),
    # One hostname, two paths: paths are regexes, their order always matters.
    ([rule("a.example.dev", path="^/"), rule("a.example.dev", path="^/api")],
     [rule("a.example.dev", path="^/api"), rule("a.example.dev", path="^/")], False),
    # Not the same rules at all.
    ([rule("a.example.dev", "http://10.0.0.2:80")], [rule("a.example.dev")], False),
    ([rule("a.example.dev")], [rule("a.example.dev"), rule("b.example.dev")], False),
])
def test_order_matters_only_between_rules_that_can_match_one_request(
        live: list[IngressRule], wanted: list[IngressRule], same: bool) -> None:
    assert same_routing((*live, CATCH_ALL), (*wanted, CATCH_ALL)) is same


def test_the_catch_all_is_never_free_to_move() -> None:
    assert not same_routing((CATCH_ALL, rule("a.example.dev")), (rule("a.example.dev"), CATCH_ALL))
