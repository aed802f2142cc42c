"""Judging what address sources say (pure): parse an answer, refuse what is not a public address,
and decide when several sources agree.

A source that fails or answers garbage must change nothing, so every refusal carries the source
and the reason, and an undecided lookup yields no address at all (the records stay as they are).
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.planning.live import PublicAddress

FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}
MAX_ANSWER_BYTES = 4096  # an address is at most 45 characters; anything longer is not an answer


class AddressProblem(ValueError):
    """Why one source's answer is not usable."""


@dataclass(frozen=True)
class SourceAnswer:
    source: str  # as the user wrote it: the URL or "interface eth0"
    ip: str | None = None
    problem: str | None = None


def parse_answer(body: bytes, fmt: str, field: str | None = None) -> str:
    """The address text in an endpoint's answer: plain text, JSON, or Cloudflare's trace format."""
    if len(body) > MAX_ANSWER_BYTES:
        raise AddressProblem(f"the answer is {len(body)} bytes, too long to be an address")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise AddressProblem("the answer is not text") from None
    if fmt == "auto":
        fmt = "json" if text.startswith("{") else "trace" if "\nip=" in f"\n{text}" else "text"
    if fmt == "json":
        try:
            value = json.loads(text)
        except ValueError:
            raise AddressProblem("the answer is not JSON") from None
        key = field or "ip"
        if not isinstance(value, dict) or not isinstance(value.get(key), str):
            raise AddressProblem(f'the JSON answer has no string field "{key}"')
        return str(value[key]).strip()
    if fmt == "trace":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "ip":
                return value.strip()
        raise AddressProblem('the trace answer has no "ip=" line')
    return text


def public_address(text: str, family: int) -> str:
    """``text`` as the canonical address of ``family``, if it is one that the Internet can reach."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise AddressProblem(f"{shown!r} is not an IP address") from None
    if address.version != family:
        raise AddressProblem(f"{address} is an {FAMILY_NAMES[address.version]} address, not {FAMILY_NAMES[family]}")
    if not address.is_global or address.is_multicast:
        raise AddressProblem(f"{address} is a private or reserved address, not a public one")
    return str(address)


def agree(answers: Sequence[SourceAnswer], rule: str, family: int) -> PublicAddress:
    """The address the sources give under ``rule`` (first | majority | all), or none and why."""
    problems = tuple(f"{a.source}: {a.problem}" for a in answers if a.problem is not None)
    usable = [a for a in answers if a.ip is not None]
    name = FAMILY_NAMES[family]
    if not usable:
        return PublicAddress(None, problems or (f"no source gave an {name} address",))
    if rule == "first":
        return PublicAddress(usable[0].ip, problems)
    votes = Counter(a.ip for a in usable)
    (leader, count), *rest = votes.most_common()
    if rule == "all":
        if problems or rest:
            said = ", ".join(f"{a.source} says {a.ip}" for a in usable)
            return PublicAddress(None, (*problems, f"agreement all: the sources do not all agree ({said})"))
        return PublicAddress(leader, ())
    if count * 2 <= len(usable) or (rest and rest[0][1] == count):
        said = ", ".join(f"{ip} ({n})" for ip, n in votes.most_common())
        return PublicAddress(None, (*problems, f"agreement majority: no address has more than half of "
                                    f"{len(usable)} answers ({said})"))
    return PublicAddress(leader, problems)
