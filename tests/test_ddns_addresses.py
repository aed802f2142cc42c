"""Judging address sources: formats, refusals that name the reason, and agreement rules."""

from __future__ import annotations

import pytest

from reconciler.ddns.addresses import AddressProblem, SourceAnswer, agree, parse_answer, public_address
from reconciler.planning.live import PublicAddress

TRACE = b"fl=123f45\nh=www.cloudflare.com\nip=93.184.216.34\nts=1764580000.1\nvisit_scheme=https\nuag=portside\n"


@pytest.mark.parametrize(("body", "fmt", "field", "text"), [
    (b"93.184.216.34\n", "auto", None, "93.184.216.34"),
    (b"93.184.216.34", "text", None, "93.184.216.34"),
    (b'{"ip": "2a00:1450:4001:82b::200e"}', "auto", None, "2a00:1450:4001:82b::200e"),
    (b'{"address": "93.184.216.34", "country": "NL"}', "json", "address", "93.184.216.34"),
    (TRACE, "auto", None, "93.184.216.34"),
    (TRACE, "trace", None, "93.184.216.34"),
])
def test_answers_in_the_common_formats(body: bytes, fmt: str, field: str | None, text: str) -> None:
    assert parse_answer(body, fmt, field) == text


@pytest.mark.parametrize(("body", "fmt", "reason"), [
    (b"<html>rate limited</html>" * 200, "auto", "too long"),
    (b"\xff\xfe\x00", "text", "not text"),
    (b"{not json", "json", "not JSON"),
    (b'{"origin": "93.184.216.34"}', "json", 'no string field "ip"'),
    (b"fl=1\nh=x\n", "trace", 'no "ip=" line'),
])
def test_unusable_answers_say_why(body: bytes, fmt: str, reason: str) -> None:
    with pytest.raises(AddressProblem, match=reason):
        parse_answer(body, fmt)


@pytest.mark.parametrize(("text", "family", "reason"), [
    ("hello", 4, "not an IP address"),
    ("192.168.1.20", 4, "private or reserved"),
    ("10.0.0.1", 4, "private or reserved"),
    ("100.64.1.1", 4, "private or reserved"),  # carrier-grade NAT: not reachable from the Internet
    ("127.0.0.1", 4, "private or reserved"),
    ("203.0.113.9", 4, "private or reserved"),  # documentation range
    ("fe80::1", 6, "private or reserved"),
    ("fd00::1", 6, "private or reserved"),
    ("93.184.216.34", 6, "is an IPv4 address, not IPv6"),
    ("2a00:1450:4001:82b::200e", 4, "is an IPv6 address, not IPv4"),
])
def test_only_public_addresses_of_the_family_are_taken(text: str, family: int, reason: str) -> None:
    with pytest.raises(AddressProblem, match=reason):
        public_address(text, family)


def test_public_addresses_come_back_canonical() -> None:
    assert public_address("2A00:1450:4001:082b:0:0:0:200E", 6) == "2a00:1450:4001:82b::200e"


A, B = "93.184.216.34", "93.184.216.35"


def answers(*ips: str | None) -> list[SourceAnswer]:
    return [SourceAnswer(f"s{i}", ip=ip, problem=None if ip else "HTTP 503") for i, ip in enumerate(ips)]


@pytest.mark.parametrize(("rule", "ips", "expected"), [
    ("first", (None, A, B), A),
    ("first", (None, None), None),
    ("majority", (A, A, B), A),
    ("majority", (A, B), None),  # a tie is not a majority
    ("majority", (A, None, None), A),  # of those that answered
    ("majority", (A, B, None, B), B),
    ("all", (A, A), A),
    ("all", (A, B), None),
    ("all", (A, None), None),  # every source must answer
])
def test_agreement_rules(rule: str, ips: tuple[str | None, ...], expected: str | None) -> None:
    result = agree(answers(*ips), rule, 4)
    assert result.ip == expected
    if expected is None:
        assert result.problems  # never undecided without saying why


def test_failed_sources_are_named_even_when_another_answered() -> None:
    assert agree(answers(None, A), "first", 4) == PublicAddress(A, ("s0: HTTP 503",))
