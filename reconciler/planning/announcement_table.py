"""The announcement table: the contract between the reconciler and the speakers.

The reconciler decides which IPs are announced, on which interfaces, and by which nodes in
which order; each node's speaker only runs the election over that list. The table is one JSON
document (DESIGN.md, "The announcement table"), published as the ConfigMap
``portside-announcements`` or, in local mode, as a file. Everything here is pure.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.common.errors import StateError
from reconciler.desired.ipranges import RangeSyntaxError, canonical_ip

CONFIGMAP_NAME = "portside-announcements"
CONFIGMAP_KEY = "announcements.json"
CONFIGMAP_GZIP_KEY = "announcements.json.gz"
# A ConfigMap holds at most 1 MiB (data + binaryData + metadata); past this the table is
# gzipped, which keeps 10,000 IPs far below the limit.
CONFIGMAP_PLAIN_LIMIT = 900 * 1024
CONFIGMAP_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HeartbeatSettings:
    """How speakers tell each other they are alive.

    A peer is dead to a speaker when no authenticated heartbeat came from it within
    ``dead_after_ms``; failover from a crash therefore takes about ``dead_after_ms``.
    """

    port: int
    interval_ms: int
    dead_after_ms: int


# 50 ms / 200 ms: a crashed node's IPs move within ~0.2 s, while four heartbeats in a row must
# be lost (or one process stall for 0.2 s) before a live node is wrongly taken over from.
DEFAULT_HEARTBEAT = HeartbeatSettings(port=7947, interval_ms=50, dead_after_ms=200)


@dataclass(frozen=True)
class NodeInfo:
    """Where a node's speaker listens for heartbeats."""

    address: str


@dataclass(frozen=True)
class Announcement:
    """One IP, and the nodes that may answer for it, best first.

    An empty ``interfaces`` means every usable interface of the node.
    """

    ip: str
    service: str
    interfaces: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnnouncementTable:
    """The whole table; ``generation`` only grows, ``revision`` is the git commit it came from."""

    generation: int
    revision: str
    heartbeat: HeartbeatSettings = DEFAULT_HEARTBEAT
    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)
    announcements: tuple[Announcement, ...] = ()


def rank_candidates(nodes: Iterable[str], ip: str) -> tuple[str, ...]:
    """Order ``nodes`` for ``ip`` as MetalLB does: ascending hex sha256 of ``node#ip``.

    Every IP gets its own pseudo-random order, so the IPs of a cluster spread over its nodes,
    and every speaker computes the same order from the same inputs.
    """
    return _ranked(_hash_prefixes(nodes), ip)


class CandidateRanking:
    """:func:`rank_candidates` for many IPs over the same few sets of nodes (one per pool, as a
    rule): each set's names are encoded once, not once per IP of a 10,000-IP table."""

    def __init__(self) -> None:
        self._prefixes: dict[frozenset[str], tuple[tuple[bytes, str], ...]] = {}

    def rank(self, nodes: frozenset[str], ip: str) -> tuple[str, ...]:
        prefixes = self._prefixes.get(nodes)
        if prefixes is None:
            prefixes = self._prefixes[nodes] = _hash_prefixes(nodes)
        return _ranked(prefixes, ip)


def _hash_prefixes(nodes: Iterable[str]) -> tuple[tuple[bytes, str], ...]:
    """Each distinct node with the start of what is hashed for it (``node#``), in name order."""
    return tuple((f"{node}#".encode(), node) for node in sorted(set(nodes)))


def _ranked(prefixes: tuple[tuple[bytes, str], ...], ip: str) -> tuple[str, ...]:
    if len(prefixes) < 2:
        return tuple([node for _, node in prefixes])
    suffix = ip.encode()
    # Raw digests sort exactly as their hex spellings do, without formatting them; equal digests
    # (never seen) fall back to the name.
    return tuple([node for _, node in sorted([(hashlib.sha256(prefix + suffix).digest(), node)
                                              for prefix, node in prefixes])])


def table_to_json(table: AnnouncementTable) -> dict[str, Any]:
    """The table as plain JSON values (the documented format)."""
    return {
        "generation": table.generation,
        "revision": table.revision,
        "heartbeat": {
            "port": table.heartbeat.port,
            "interval_ms": table.heartbeat.interval_ms,
            "dead_after_ms": table.heartbeat.dead_after_ms,
        },
        "nodes": {name: {"address": table.nodes[name].address} for name in sorted(table.nodes)},
        "announcements": [
            {"ip": a.ip, "service": a.service, "interfaces": list(a.interfaces),
             "candidates": list(a.candidates)}
            for a in table.announcements
        ],
    }


def encode_table(table: AnnouncementTable) -> str:
    """Compact, deterministic JSON: the same table always gives the same bytes.

    They are ``json.dumps(table_to_json(table), separators=(",", ":"), sort_keys=True,
    ensure_ascii=False)``; the announcements (the bulk: one per IP) are spelled out here rather
    than built as dicts and sorted key by key, which took 40 % less time for 10,000 IPs (tests
    hold the two spellings equal).
    """
    rest = json.dumps(table_to_json(replace(table, announcements=())), separators=(",", ":"),
                      sort_keys=True, ensure_ascii=False)
    # "announcements" sorts first among the table's keys.
    assert rest.startswith(_NO_ANNOUNCEMENTS)
    # A table's candidate lists are a few orders of a few node sets (and the interface lists
    # fewer still): each distinct one is encoded once.
    lists: dict[tuple[str, ...], str] = {}

    def strings(items: tuple[str, ...]) -> str:
        encoded = lists.get(items)
        if encoded is None:
            encoded = lists[items] = f"[{','.join(map(_json_string, items))}]"
        return encoded

    entries = ",".join([
        f'{{"candidates":{strings(a.candidates)},"interfaces":{strings(a.interfaces)},'
        f'"ip":{_json_string(a.ip)},"service":{_json_string(a.service)}}}'
        for a in table.announcements])
    return f'{{"announcements":[{entries}]{rest[len(_NO_ANNOUNCEMENTS):]}'


_NO_ANNOUNCEMENTS = '{"announcements":[]'
_json_string: Callable[[str], str] = json.encoder.encode_basestring  # what dumps(ensure_ascii=False) does


def decode_table(text: str | bytes, source: str = "announcement table") -> AnnouncementTable:
    """Parse and check a table; every problem raises :class:`StateError` naming ``source`` and the field."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{source}: not valid JSON: {exc}") from exc
    return _Decoder(source).table(raw)


class _Decoder:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> StateError:
        return StateError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def obj(self, value: object, where: str, required: Set[str],
            optional: Set[str] = frozenset()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        missing = sorted(required - value.keys())
        if missing:
            raise self.fail(where, f"missing field {missing[0]!r}")
        unknown = sorted(value.keys() - required - optional)
        if unknown:
            raise self.fail(where, f"unknown field {unknown[0]!r}")
        return value

    def integer(self, value: object, where: str, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(where, f"must be {bound}, got {value}")
        return value

    def string(self, value: object, where: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if not value and not allow_empty:
            raise self.fail(where, "must not be empty")
        return value

    def ip(self, value: object, where: str) -> str:
        text = self.string(value, where)
        try:
            return canonical_ip(text)
        except RangeSyntaxError:
            raise self.fail(where, f"{text!r} is not an IPv4 or IPv6 address") from None

    def strings(self, value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        items = tuple(value)
        if not all(isinstance(item, str) and item for item in items):  # the message needs the index
            for i, item in enumerate(items):
                self.string(item, f"{where}[{i}]")
        if len(set(items)) != len(items):
            i = next(i for i, item in enumerate(items) if item in items[:i])
            raise self.fail(f"{where}[{i}]", f"{items[i]!r} is listed twice")
        return items

    def table(self, raw: object) -> AnnouncementTable:
        top = self.obj(raw, "", {"generation", "revision", "heartbeat", "nodes", "announcements"})
        hb_raw = self.obj(top["heartbeat"], "heartbeat", {"port", "interval_ms", "dead_after_ms"})
        heartbeat = HeartbeatSettings(
            port=self.integer(hb_raw["port"], "heartbeat.port", 1, 65535),
            interval_ms=self.integer(hb_raw["interval_ms"], "heartbeat.interval_ms", 1, 60_000),
            dead_after_ms=self.integer(hb_raw["dead_after_ms"], "heartbeat.dead_after_ms", 1, 600_000),
        )
        if heartbeat.dead_after_ms <= heartbeat.interval_ms:
            raise self.fail("heartbeat.dead_after_ms",
                            f"must be longer than interval_ms ({heartbeat.dead_after_ms} <= "
                            f"{heartbeat.interval_ms}), or live peers look dead")
        nodes_raw = top["nodes"]
        if not isinstance(nodes_raw, dict):
            raise self.fail("nodes", f"expected an object, got {_kind(nodes_raw)}")
        nodes: dict[str, NodeInfo] = {}
        for name in sorted(nodes_raw):
            where = f"nodes.{name}"
            self.string(name, where)
            node = self.obj(nodes_raw[name], where, {"address"})
            nodes[name] = NodeInfo(address=self.ip(node["address"], f"{where}.address"))
        announcements_raw = top["announcements"]
        if not isinstance(announcements_raw, list):
            raise self.fail("announcements", f"expected a list, got {_kind(announcements_raw)}")
        seen: dict[str, int] = {}
        announcements = []
        for i, item in enumerate(announcements_raw):
            where = f"announcements[{i}]"
            entry = self.obj(item, where, {"ip", "service", "candidates"}, {"interfaces"})
            ip = self.ip(entry["ip"], f"{where}.ip")
            if ip in seen:
                raise self.fail(f"{where}.ip", f"{ip} is already announced by announcements[{seen[ip]}]")
            seen[ip] = i
            candidates = self.strings(entry["candidates"], f"{where}.candidates")
            for j, candidate in enumerate(candidates):
                if candidate not in nodes:
                    # A speaker needs a candidate's address to hear its heartbeats.
                    raise self.fail(f"{where}.candidates[{j}]", f"node {candidate!r} is not in nodes")
            announcements.append(Announcement(
                ip=ip,
                service=self.string(entry["service"], f"{where}.service", allow_empty=True),
                interfaces=self.strings(entry.get("interfaces", []), f"{where}.interfaces"),
                candidates=candidates,
            ))
        return AnnouncementTable(
            generation=self.integer(top["generation"], "generation", 0),
            revision=self.string(top["revision"], "revision", allow_empty=True),
            heartbeat=heartbeat,
            nodes=nodes,
            announcements=tuple(announcements),
        )


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def table_to_configmap_data(table: AnnouncementTable) -> tuple[dict[str, str], dict[str, str]]:
    """(data, binaryData) for the ConfigMap: plain JSON while it fits, else gzip + base64.

    Write the ConfigMap whole (replace, not merge patch) so the key not used disappears.
    """
    text = encode_table(table)
    if len(text.encode()) < CONFIGMAP_PLAIN_LIMIT:
        return {CONFIGMAP_KEY: text}, {}
    # mtime=0: the same table gives the same bytes, so an unchanged table is not rewritten.
    packed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    encoded = base64.b64encode(packed).decode("ascii")
    if len(encoded) >= CONFIGMAP_MAX_BYTES - 16 * 1024:
        raise StateError(f"the announcement table for {len(table.announcements)} IPs is {len(encoded)} bytes "
                         f"compressed, too large for a ConfigMap (1 MiB)")
    return {}, {CONFIGMAP_GZIP_KEY: encoded}


def table_from_configmap(data: Mapping[str, str] | None, binary_data: Mapping[str, str] | None,
                         source: str = f"ConfigMap {CONFIGMAP_NAME}") -> AnnouncementTable:
    """Read a table back from a ConfigMap's ``data`` and ``binaryData`` (either may be None)."""
    data = data or {}
    binary_data = binary_data or {}
    plain, packed = data.get(CONFIGMAP_KEY), binary_data.get(CONFIGMAP_GZIP_KEY)
    if plain is not None and packed is not None:
        raise StateError(f"{source}: both {CONFIGMAP_KEY!r} and {CONFIGMAP_GZIP_KEY!r} are set; "
                         f"the writer must replace the ConfigMap whole")
    if plain is not None:
        return decode_table(plain, f"{source} key {CONFIGMAP_KEY}")
    if packed is not None:
        where = f"{source} binaryData key {CONFIGMAP_GZIP_KEY}"
        try:
            text = gzip.decompress(base64.b64decode(packed, validate=True))
        except (binascii.Error, OSError, EOFError) as exc:
            raise StateError(f"{where}: not gzip+base64: {exc}") from exc
        return decode_table(text, where)
    raise StateError(f"{source}: has neither data key {CONFIGMAP_KEY!r} "
                     f"nor binaryData key {CONFIGMAP_GZIP_KEY!r}")
