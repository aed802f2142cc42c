"""The node's network interfaces, found and followed through netlink (pyroute2).

The speaker must notice interfaces that appear, go down, come up or change MAC without a
restart. Netlink link events only say "something changed"; after each burst the watcher takes a
fresh dump and the caller reconciles against it, so a missed or reordered event cannot leave a
stale view behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from reconciler.speaker.packets import mac_to_bytes

log = logging.getLogger(__name__)

IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
ARPHRD_ETHER = 1


@dataclass(frozen=True)
class Link:
    """One interface as the responder needs it."""

    index: int
    name: str
    mac: bytes
    up: bool
    default_usable: bool


def usable_by_default(flags: int, link_type: int, enslaved: bool) -> bool:
    """An interface answers for IPs announced on "every interface" when it is up, broadcast-capable
    Ethernet, not loopback, not NOARP and not a bridge/bond port (its master answers instead)."""
    return (bool(flags & IFF_UP) and bool(flags & IFF_BROADCAST) and not flags & IFF_LOOPBACK
            and not flags & IFF_NOARP and link_type == ARPHRD_ETHER and not enslaved)


def link_from_message(message: Any) -> Link | None:
    """A :class:`Link` from an RTM_NEWLINK message; None for interfaces without an Ethernet MAC."""
    name = message.get("ifname")
    address = message.get("address")
    if not name or not address or message["ifi_type"] != ARPHRD_ETHER:
        return None
    try:
        mac = mac_to_bytes(address)
    except ValueError:
        return None
    flags = int(message["flags"])
    enslaved = message.get("master") is not None
    return Link(int(message["index"]), str(name), mac, bool(flags & IFF_UP),
                usable_by_default(flags, int(message["ifi_type"]), enslaved))


class LinkWatcher:
    """A netlink socket subscribed to link events, plus dumps on demand."""

    def __init__(self) -> None:
        self._events = IPRoute()
        self._events.bind(groups=RTMGRP_LINK)
        self._query = IPRoute()

    def fileno(self) -> int:
        return int(self._events.fileno())

    def drain(self) -> None:
        """Consume the pending events (their content is not needed: a dump follows)."""
        self._events.get()

    def links(self) -> Mapping[int, Link]:
        """Every Ethernet interface now, by index."""
        found: dict[int, Link] = {}
        for message in self._query.get_links():
            link = link_from_message(message)
            if link is not None:
                found[link.index] = link
        return found

    def close(self) -> None:
        self._events.close()
        self._query.close()
