"""Watches: chunked event streams, bookmarks, resumption from the retained history, 410s."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.fakes.kubeapi.errors import (
    _ApiError,
    _bad_request,
    _FieldError,
    _invalid,
)
from tests.fakes.kubeapi.kinds import (
    _TRUE,
    Obj,
    _Kind,
)
from tests.fakes.kubeapi.selectors import _field_selector, _FieldSelector, _label_selector, _LabelSelector
from tests.fakes.kubeapi.store import _Change, _typed


@dataclass
class _Watch:
    kind: _Kind
    namespace: str | None
    labels: _LabelSelector
    fields: _FieldSelector
    since: int | None  # None: send the current objects first
    bookmarks: bool
    initial_end_bookmark: bool
    timeout: float | None




class _Watching:
    """The watch verbs of FakeKube."""

    def _watch_plan(self, kind: _Kind, namespace: str | None, query: dict[str, str]) -> _Watch:
        rv = query.get("resourceVersion", "")
        initial = query.get("sendInitialEvents") in _TRUE
        if initial:
            errors = []
            if query.get("resourceVersionMatch") != "NotOlderThan":
                errors.append(_FieldError("Forbidden", "resourceVersionMatch", detail="sendInitialEvents "
                                          "requires setting resourceVersionMatch to NotOlderThan"))
            if query.get("allowWatchBookmarks") not in _TRUE:
                errors.append(_FieldError("Required", "allowWatchBookmarks", detail="allowWatchBookmarks "
                                          "must be true if sendInitialEvents = true"))
            if errors:
                raise _invalid("ListOptions", "", errors, {"kind": "ListOptions"})
        since = None if rv in ("", "0") or initial else int(rv) if rv.isdigit() else -1
        if since == -1:
            raise _bad_request(f"resourceVersion: Invalid value: {rv!r}: must be a number")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        return _Watch(kind, namespace, _label_selector(query.get("labelSelector", "")),
                      _field_selector(kind, query.get("fieldSelector", "")), since,
                      query.get("allowWatchBookmarks") in _TRUE, initial, timeout)

    def _selected(self, watch: _Watch, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if watch.namespace is not None and obj["metadata"].get("namespace") != watch.namespace:
            return False
        return watch.labels(obj["metadata"].get("labels") or {}) and watch.fields(obj)

    def _events(self, watch: _Watch, changes: list[_Change]) -> Iterator[Obj]:
        for change in changes:
            if change.kind is not watch.kind:
                continue
            now, before = self._selected(watch, change.obj), self._selected(watch, change.prev)
            if change.type == "MODIFIED" and now != before:  # entered or left the selection
                yield {"type": "ADDED" if now else "DELETED", "object": _typed(watch.kind, change.obj)}
            elif (now if change.type != "DELETED" else before):
                yield {"type": change.type, "object": _typed(watch.kind, change.obj)}

    def _bookmark(self, kind: _Kind, rv: int, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK",
                "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}}

    def _stream(self, handler: Any, watch: _Watch) -> None:
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def send(event: Obj) -> None:
            data = json.dumps(event).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        start = time.monotonic()
        deadline = start + watch.timeout if watch.timeout is not None else None
        next_bookmark = start + self.bookmark_interval
        with self._lock:
            if watch.since is None:
                cursor = self._rv
                pending = [{"type": "ADDED", "object": _typed(watch.kind, copy.deepcopy(o))}
                           for _, o in sorted(self._objects[watch.kind].items()) if self._selected(watch, o)]
                if watch.initial_end_bookmark:
                    pending.append(self._bookmark(watch.kind, cursor, initial_end=True))
            else:
                cursor, pending = watch.since, []
        try:
            while True:
                for event in pending:
                    send(event)
                now = time.monotonic()
                if watch.bookmarks and now >= next_bookmark:
                    send(self._bookmark(watch.kind, cursor))
                    next_bookmark = now + self.bookmark_interval
                with self._changed:
                    while not self._closed and self._rv <= cursor and cursor >= self._compacted:
                        due = (deadline, next_bookmark if watch.bookmarks else None)
                        waits = [d - time.monotonic() for d in due if d is not None]
                        if waits and min(waits) <= 0:
                            break
                        self._changed.wait(min(waits) if waits else None)
                    if self._closed or (deadline is not None and time.monotonic() >= deadline):
                        break
                    if cursor < self._compacted:  # asked for, or fell behind, a compacted revision
                        pending = [{"type": "ERROR", "object": _ApiError(
                            410, f"too old resource version: {cursor} ({self._compacted})").status}]
                        cursor = -1
                    else:
                        changes = [c for c in self._history if c.rv > cursor]
                        pending = list(self._events(watch, changes))
                        cursor = self._rv
                if cursor == -1:
                    for event in pending:
                        send(event)
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:  # the client went away
            pass
