"""Asking the address sources (the shell): HTTP endpoints with a timeout and a bounded answer,
local interfaces through netlink. What the answers mean is decided in ``addresses``.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from reconciler.ddns.addresses import (
    MAX_ANSWER_BYTES,
    AddressProblem,
    SourceAnswer,
    agree,
    parse_answer,
    public_address,
)
from reconciler.desired.models import AddressFamily, AddressSource, DynamicDNS, duration_seconds
from reconciler.planning.live import PublicAddress

FAMILIES = {"ipv4": 4, "ipv6": 6}
USER_AGENT = "portside-ddns"

Ask = Callable[[AddressSource, int], str]


def lookup_addresses(documents: tuple[DynamicDNS, ...], ask: Ask | None = None) -> dict[str, PublicAddress]:
    """What the sources of every DynamicDNS say, keyed "<name>/ipv4" and "<name>/ipv6".

    Sources shared by several documents are asked once per lookup.
    """
    asked: dict[tuple[str, int], SourceAnswer] = {}
    out: dict[str, PublicAddress] = {}
    for doc in documents:
        for family_name, family in FAMILIES.items():
            policy: AddressFamily | None = getattr(doc.spec, family_name)
            if policy is not None:
                out[f"{doc.metadata.name}/{family_name}"] = _lookup(policy, family, asked, ask or ask_source)
    return out


def _lookup(policy: AddressFamily, family: int, asked: dict[tuple[str, int], SourceAnswer], ask: Ask) -> PublicAddress:
    answers = []
    for source in policy.sources:
        key = (source.model_dump_json(), family)
        if key not in asked:
            asked[key] = _answer(source, family, ask)
        answers.append(asked[key])
        if policy.agreement == "first" and answers[-1].ip is not None:
            break  # the first usable answer decides: the later sources are not asked
    return agree(answers, policy.agreement, family)


def _answer(source: AddressSource, family: int, ask: Ask) -> SourceAnswer:
    name = source.url or f"interface {source.interface}"
    try:
        return SourceAnswer(name, ip=public_address(ask(source, family), family))
    except AddressProblem as exc:
        return SourceAnswer(name, problem=str(exc))


def ask_source(source: AddressSource, family: int) -> str:
    """The raw address text a source gives; AddressProblem when it cannot be asked."""
    if source.interface is not None:
        return interface_address(source.interface, family)
    assert source.url is not None
    return parse_answer(fetch(source.url, duration_seconds(source.timeout)), source.format, source.field)


def fetch(url: str, timeout: float) -> bytes:
    """GET ``url``: the body of a 200 answer, at most MAX_ANSWER_BYTES + 1 bytes of it."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "text/plain, */*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                raise AddressProblem(f"HTTP {response.status}")
            body: bytes = response.read(MAX_ANSWER_BYTES + 1)
            return body
    except urllib.error.HTTPError as exc:
        raise AddressProblem(f"HTTP {exc.code}") from None
    except TimeoutError:
        raise AddressProblem(f"no answer within {timeout:g}s") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise AddressProblem(f"no answer within {timeout:g}s") from None
        raise AddressProblem(f"cannot reach it ({reason})") from None


def interface_address(name: str, family: int) -> str:
    """The first global address of a local interface (IPv6: not a temporary privacy address)."""
    from pyroute2 import IPRoute  # netlink: imported only when an interface source is used

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise AddressProblem("no such interface")
        addresses = ipr.get_addr(index=found[0], family=socket.AF_INET if family == 4 else socket.AF_INET6)
    candidates = []
    for message in addresses:
        attrs: Mapping[str, object] = dict(message.get("attrs", []))
        text = attrs.get("IFA_ADDRESS")
        raw_flags = attrs.get("IFA_FLAGS", message.get("flags", 0))
        flags = raw_flags if isinstance(raw_flags, int) else 0
        if isinstance(text, str) and not flags & 0x01:  # IFA_F_TEMPORARY (RFC 4941 privacy address)
            candidates.append(text)
    for text in candidates:
        try:
            return public_address(text, family)
        except AddressProblem:
            continue
    if candidates:
        return candidates[0]  # judged (and refused) by the caller, which says why
    raise AddressProblem(f"no {'IPv4' if family == 4 else 'IPv6'} address on it")
