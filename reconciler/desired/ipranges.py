"""Address ranges of a pool: ``192.168.1.0/24``, ``192.168.1.100-192.168.2.200``, IPv4 and IPv6.

Pure parsing and arithmetic shared by validation and allocation. Addresses are handled as
integers inside a family so that 10,000-address pools cost nothing to scan.
"""

from __future__ import annotations

import ipaddress

# socket's C core: the socket module wraps its constants in enums at import (about 2 ms), and
# these two functions are all this module needs.
from _socket import AF_INET, inet_ntop, inet_pton
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RangeSyntaxError(ValueError):
    """An address range that cannot be parsed; the message says what to fix."""


@dataclass(frozen=True, order=True)
class IPRange:
    """An inclusive range of addresses of one family."""

    version: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def first(self) -> IPAddress:
        return ip_from_int(self.version, self.start)

    def last(self) -> IPAddress:
        return ip_from_int(self.version, self.end)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.version and self.start <= int(ip) <= self.end

    def overlaps(self, other: IPRange) -> bool:
        return self.version == other.version and self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return f"{self.first()}-{self.last()}"


def ip_from_int(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


@lru_cache(maxsize=1 << 16)
def parse_ip(text: str) -> IPAddress:
    """Parse one address. Cached: planning parses the same 10,000 IPs in several places, and
    ipaddress objects are immutable, so sharing them is safe."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise RangeSyntaxError(f"{text!r} is not an IPv4 or IPv6 address") from None


@lru_cache(maxsize=1 << 16)
def canonical_ip(text: str) -> str:
    """The canonical text of an address (``fd00::0001`` -> ``fd00::1``); RangeSyntaxError if none."""
    if ":" not in text:
        try:  # the C path for IPv4: inet_pton takes exactly the dotted quads ipaddress does
            return inet_ntop(AF_INET, inet_pton(AF_INET, text.strip()))
        except OSError:
            raise RangeSyntaxError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return str(parse_ip(text))


def parse_range(text: str) -> IPRange:
    """Parse one pool entry; host bits set in a CIDR, a reversed range or mixed families are errors."""
    text = text.strip()
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            if "host bits set" in str(exc):
                fixed = ipaddress.ip_network(text, strict=False)
                raise RangeSyntaxError(f"{text!r} has host bits set; did you mean {fixed}?") from None
            raise RangeSyntaxError(f"{text!r} is not a valid CIDR ({exc})") from None
        return IPRange(net.version, int(net.network_address), int(net.broadcast_address))
    if "-" in text:
        start_text, _, end_text = text.partition("-")
        start, end = parse_ip(start_text), parse_ip(end_text)
        if start.version != end.version:
            raise RangeSyntaxError(f"{text!r} mixes IPv{start.version} and IPv{end.version}")
        if int(start) > int(end):
            raise RangeSyntaxError(f"{text!r} starts after it ends")
        return IPRange(start.version, int(start), int(end))
    raise RangeSyntaxError(f"{text!r} is neither a CIDR (a.b.c.d/n) nor a range (first-last)")


def is_buggy(ip: IPAddress) -> bool:
    """MetalLB's avoidBuggyIPs: .0 and .255 addresses break some old consumer routers."""
    return ip.version == 4 and int(ip) & 0xFF in (0, 255)
