"""Addresses as ``(family, integer)`` pairs: parsed once on the way in, formatted once on the way out.

The hot paths (10,000 Services per plan) avoid :mod:`ipaddress` for IPv4, which is an order of
magnitude slower than ``inet_pton`` and integer formatting; both give the same canonical text.
"""

from __future__ import annotations

import socket

from reconciler.desired.ipranges import RangeSyntaxError, ip_from_int, parse_ip

Address = tuple[int, int]  # (4 or 6, integer value)


def parse_address(text: str) -> Address | None:
    """The address, or None if ``text`` is not an IPv4 or IPv6 address."""
    if ":" not in text:
        try:
            # inet_pton takes exactly the dotted quads ipaddress does (no leading zeros), in C.
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text.strip()), "big")
        except OSError:
            return None
    try:
        address = parse_ip(text)
    except RangeSyntaxError:
        return None
    return address.version, int(address)


def format_address(address: Address) -> str:
    """Canonical text, as ``str(ipaddress.ip_address(...))`` gives it."""
    version, value = address
    if version == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    return str(ip_from_int(version, value))


def canonical_text(text: str, address: Address) -> str:
    """The canonical text of ``text``, which :func:`parse_address` read as ``address``.

    For IPv4 that is the text itself, stripped: ``inet_pton`` accepts only canonical dotted quads
    (no leading zeros, four parts), so nothing needs formatting or looking up.
    """
    return text.strip() if address[0] == 4 else format_address(address)


def address_order(text: str) -> Address:
    """Sort key: numeric, IPv4 before IPv6; text that is no address sorts last."""
    return parse_address(text) or (7, 0)
