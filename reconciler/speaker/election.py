"""Who announces what: peer liveness and the per-IP election. Pure (time is passed in).

A speaker announces an IP while every candidate ranked before it is dead to it. Each speaker
decides alone from the heartbeats it hears; when they agree on who is alive, exactly one of them
announces each IP. A partition makes both sides announce; when it heals, the lower-ranked side
hears the higher one again within one heartbeat interval and stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from reconciler.planning.announcement_table import Announcement, AnnouncementTable


def elect(table: AnnouncementTable, node: str, is_alive: Callable[[str], bool]) -> dict[str, Announcement]:
    """The announcements ``node`` must answer for now, by IP."""
    elected: dict[str, Announcement] = {}
    for announcement in table.announcements:
        candidates = announcement.candidates
        if node not in candidates:
            continue
        better = candidates[:candidates.index(node)]
        if not any(is_alive(peer) for peer in better):
            elected[announcement.ip] = announcement
    return elected


@dataclass(frozen=True)
class Change:
    """What changed between two elections: IPs to take over (send gratuitous ARP) and to drop."""

    taken: frozenset[str]
    released: frozenset[str]


def compare(before: Mapping[str, Announcement], after: Mapping[str, Announcement]) -> Change:
    """IPs newly announced, and IPs no longer announced.

    An IP whose interfaces changed counts as taken, so it is announced on its new interfaces.
    """
    taken = {ip for ip, a in after.items() if ip not in before or before[ip].interfaces != a.interfaces}
    return Change(frozenset(taken), frozenset(before.keys() - after.keys()))


class Liveness:
    """When each peer was last heard from, and so which peers are alive (monotonic seconds).

    A peer never heard from counts as alive during the first ``dead_after`` after start: a
    speaker that just started must not grab every IP (and send gratuitous ARP for it) before it
    has had the chance to hear the live owners. After that, a peer never heard from is dead.
    """

    def __init__(self, dead_after_s: float, started_at: float) -> None:
        self.dead_after_s = dead_after_s
        self.started_at = started_at
        self._last_heard: dict[str, float] = {}

    def heard(self, node: str, now: float, leaving: bool = False, proof_at: float | None = None) -> bool:
        """Record a heartbeat; True when it brings back a peer that was dead to us.

        ``proof_at`` (default ``now``) is the moment the heartbeat proves its sender was alive,
        when that is earlier than its arrival: the peer stays alive ``dead_after`` from then.
        """
        was_alive = self.is_alive(node, now)
        if leaving:
            self._last_heard[node] = float("-inf")
            return False
        at = now if proof_at is None else min(now, proof_at)
        self._last_heard[node] = max(at, self._last_heard.get(node, at))
        return not was_alive and self.is_alive(node, now)

    def is_alive(self, node: str, now: float) -> bool:
        last = self._last_heard.get(node)
        if last is None:
            return now < self.started_at + self.dead_after_s
        return now < last + self.dead_after_s

    def heard_at(self, node: str) -> float | None:
        """When ``node`` was last heard (-inf after it said it was leaving), if ever."""
        return self._last_heard.get(node)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop peers that left the table."""
        wanted = set(keep)
        for node in list(self._last_heard):
            if node not in wanted:
                del self._last_heard[node]

    def next_expiry(self, nodes: Iterable[str], now: float) -> float | None:
        """The next moment one of ``nodes`` that is alive now would turn dead, if none is heard."""
        times = []
        for node in nodes:
            last = self._last_heard.get(node, self.started_at)
            expiry = last + self.dead_after_s
            if expiry > now:
                times.append(expiry)
        return min(times, default=None)
