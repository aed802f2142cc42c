"""Watches on Services, Nodes and EndpointSlices: react to the cluster at once, not on a timer.

Each kind is listed, then watched from the list's resourceVersion (with bookmarks, so a quiet
watch can resume without replaying history); a 410 Gone means the history we would resume from is
compacted: list again. Each object is reduced to its *essence* — the fields the planner reads — so
a Node's heartbeat or a status write that changes nothing portside cares about triggers nothing.
Only a changed essence asks the controller for a reconcile.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from reconciler.controller.loop import Backoff

log = logging.getLogger(__name__)

Essence = tuple[Any, ...] | None  # None: the object does not matter to portside
Obj = dict[str, Any]


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def service_essence(obj: Obj) -> Essence:
    """A LoadBalancer Service: what allocation and routing read (its ingress too, to repair it)."""
    spec = obj.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return None
    meta = obj.get("metadata") or {}
    ports = sorted((p.get("port"), p.get("protocol", "TCP"), p.get("name") or "") for p in spec.get("ports") or [])
    ingress = sorted(i.get("ip") or i.get("hostname") or ""
                     for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
    return (spec.get("loadBalancerClass"), spec.get("loadBalancerIP"), spec.get("externalTrafficPolicy"),
            spec.get("ipFamilyPolicy"), tuple(spec.get("ipFamilies") or ()), tuple(ports),
            _frozen(spec.get("selector") or {}), _frozen(meta.get("labels") or {}),
            _frozen(meta.get("annotations") or {}), tuple(ingress))


def node_essence(obj: Obj) -> Essence:
    """A Node: labels (advertisement selectors), addresses (heartbeats) and readiness."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    addresses = sorted((a.get("type", ""), a.get("address", "")) for a in status.get("addresses") or [])
    return (_frozen(meta.get("labels") or {}), tuple(addresses), ready,
            bool((obj.get("spec") or {}).get("unschedulable")))


def endpointslice_essence(obj: Obj) -> Essence:
    """An EndpointSlice: which nodes have a ready endpoint (externalTrafficPolicy: Local)."""
    service = ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
    if not service:
        return None
    nodes = sorted({(e.get("nodeName") or "", (e.get("conditions") or {}).get("ready") is not False)
                    for e in obj.get("endpoints") or []})
    return (service, tuple(nodes))


@dataclass(frozen=True)
class WatchedKind:
    kind: str
    list_call: Callable[..., Any]
    essence: Callable[[Obj], Essence]


def watched_kinds(api: client.ApiClient) -> list[WatchedKind]:
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    return [WatchedKind("Service", core.list_service_for_all_namespaces, service_essence),
            WatchedKind("Node", core.list_node, node_essence),
            WatchedKind("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces, endpointslice_essence)]


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class ClusterWatcher:
    """One thread per kind; ``on_change(description)`` when an essence changes."""

    def __init__(self, kinds: list[WatchedKind], on_change: Callable[[str], None], *,
                 timeout_seconds: int = 300, backoff: Backoff | None = None) -> None:
        self.kinds = kinds
        self.on_change = on_change
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff or Backoff(0.5, 30.0)
        self._stop = threading.Event()
        self._responses: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,), name=f"watch-{k.kind}", daemon=True)
                         for k in kinds]
        self.synced = {k.kind: threading.Event() for k in kinds}  # set after each kind's first list

    def start(self) -> ClusterWatcher:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for response in responses:  # unblock a read waiting for the next event
            try:
                response.shutdown() if hasattr(response, "shutdown") else response.close()
            except Exception:  # already closed by its own thread
                log.debug("closing a watch response failed", exc_info=True)
        for thread in self._threads:
            thread.join(timeout=5)

    # -- one kind ------------------------------------------------------------------------------------

    def _run(self, kind: WatchedKind) -> None:
        essences: dict[str, Essence] | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                version, fresh = self._list(kind)
                if essences is not None and fresh != essences:
                    self.on_change(f"{kind.kind} list changed")  # something happened while we were away
                essences = fresh
                self.synced[kind.kind].set()
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(kind, version, essences)
            except _Gone:
                log.debug("%s watch expired; listing again", kind.kind)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, KeyError) as exc:
                if self._stop.is_set():
                    return
                failures += 1
                delay = self.backoff.delay(failures)
                log.warning("watching %ss failed (%s); retrying in %.1fs", kind.kind, _brief(exc), delay)
                self._stop.wait(delay)

    def _list(self, kind: WatchedKind) -> tuple[str, dict[str, Essence]]:
        essences: dict[str, Essence] = {}
        token: str | None = None
        while True:
            response = kind.list_call(limit=500, _continue=token, _preload_content=False)
            body = json.loads(response.data)
            for item in body.get("items") or []:
                essence = kind.essence(item)
                if essence is not None:
                    essences[_key(item)] = essence
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return str(meta.get("resourceVersion") or ""), essences

    def _watch(self, kind: WatchedKind, version: str, essences: dict[str, Essence]) -> str:
        """Follow one watch request until it ends; returns the resourceVersion to resume from."""
        response = kind.list_call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                                  timeout_seconds=self.timeout_seconds, _preload_content=False,
                                  _request_timeout=(10, self.timeout_seconds + 30))
        with self._lock:
            self._responses[kind.kind] = response
        try:
            for event in _events(response):
                kind_of_event, obj = event.get("type"), event.get("object") or {}
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind_of_event == "BOOKMARK":
                    continue
                key = _key(obj)
                new = None if kind_of_event == "DELETED" else kind.essence(obj)
                old = essences.get(key)
                if new == old:
                    continue
                if new is None:
                    essences.pop(key, None)
                else:
                    essences[key] = new
                self.on_change(f"{kind.kind} {key} {str(kind_of_event).lower()}")
        finally:
            with self._lock:
                self._responses.pop(kind.kind, None)
            response.release_conn()
        return version


# The client's own line splitter for chunked watch responses (it is untyped).
_resp_lines: Callable[[Any], Iterator[str | bytes]] = iter_resp_lines


def _events(response: Any) -> Iterator[Obj]:
    for line in _resp_lines(response):
        if line.strip():
            event = json.loads(line)
            if isinstance(event, dict):
                yield event


def _brief(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
