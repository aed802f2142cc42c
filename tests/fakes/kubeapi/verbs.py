"""The REST verbs: get, create, replace, patch, delete, deletecollection."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.kubeapi.errors import (
    _STALE,
    _ApiError,
    _bad_request,
    _conflict,
    _details,
    _FieldError,
    _GoValue,
    _invalid,
    _kind_details,
    _not_found,
)
from tests.fakes.kubeapi.kinds import (
    _NAMESPACE,
    Obj,
    _Kind,
)
from tests.fakes.kubeapi.patches import _json_patch, _merge_patch, _strategic_map
from tests.fakes.kubeapi.store import _key, _typed
from tests.fakes.kubeapi.validation import _check_decodes, _decode_error


@dataclass
class _Response:
    status: int
    body: Obj
    headers: dict[str, str] = field(default_factory=dict)


class _Verbs:
    """Create, update, patch and delete as the real registry does them."""

    def _get(self, kind: _Kind, namespace: str | None, name: str) -> Obj:
        found = self._objects[kind].get(f"{namespace}/{name}" if kind.namespaced else name)
        if found is None:
            raise _not_found(kind, name)
        return found

    def _prepare_body(self, kind: _Kind, namespace: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format - accepted media types "
                               "include: application/json, application/yaml")
        api_version, kind_name = body.get("apiVersion"), body.get("kind")
        if api_version not in (None, "", kind.api_version):
            raise _bad_request(f"the API version in the data ({api_version}) does not match the expected "
                               f"API version ({kind.api_version})")
        if kind_name not in (None, "", kind.kind):
            raise _bad_request(f"the kind in the data ({kind_name}) does not match the expected kind "
                               f"({kind.kind})")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if kind.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise _bad_request("the namespace of the provided object does not match the namespace sent "
                                   "on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def _create(self, kind: _Kind, namespace: str | None, body: Any, dry_run: bool) -> Obj:
        obj = self._prepare_body(kind, namespace, body)
        _check_decodes(kind, obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise _ApiError(500, "resourceVersion should not be set on objects to be created")
        if kind.namespaced and namespace not in self._objects[_NAMESPACE]:
            raise _not_found(_NAMESPACE, str(namespace))
        if meta.get("name") and _key(obj) in self._objects[kind]:
            raise _ApiError(409, f'{kind.resource} "{meta["name"]}" already exists', reason="AlreadyExists",
                            details=_details(kind, meta["name"]))
        return _typed(kind, copy.deepcopy(self._write(kind, obj, None, dry_run=dry_run)))

    def _update(self, kind: _Kind, name: str, obj: Obj, old: Obj, sub: str | None, dry_run: bool) -> Obj:
        """Shared by PUT and PATCH: preconditions, then the status-subresource split, then the write."""
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise _conflict(kind, name, _STALE)
        if sub == "status" and kind.custom:
            # A custom resource's status strategy keeps everything of the old object but status.
            status = obj.get("status")
            obj = copy.deepcopy(_typed(kind, old))
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
        elif sub == "status":
            # The status strategies of Services, Nodes and Namespaces reset only spec: metadata
            # (labels, annotations) written through /status is kept, as on a real server.
            if "spec" in old:
                obj["spec"] = copy.deepcopy(old["spec"])
            else:
                obj.pop("spec", None)
        elif kind.status:
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            else:
                obj.pop("status", None)
        return _typed(kind, copy.deepcopy(self._write(kind, obj, old, dry_run=dry_run)))

    def _replace(self, kind: _Kind, namespace: str | None, name: str, body: Any, sub: str | None,
                 dry_run: bool) -> _Response:
        obj = self._prepare_body(kind, namespace, body)
        _check_decodes(kind, obj)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise _bad_request(f"the name of the object ({meta.get('name', '')}) does not match the name on "
                               f"the URL ({name})")
        old = self._objects[kind].get(_key(obj))
        if old is None:
            if kind.create_on_update and sub is None:
                meta.pop("resourceVersion", None)
                return _Response(201, self._create(kind, namespace, obj, dry_run))
            raise _not_found(kind, name)
        if not meta.get("resourceVersion") and not kind.unconditional_update:
            # Leases: AllowUnconditionalUpdate is false. The store names the qualified kind
            # (Lease.coordination.k8s.io) and shows the uint64 zero as Go's %#v does.
            error = _FieldError("Invalid", "metadata.resourceVersion", _GoValue("0x0"),
                                "must be specified for an update")
            raise _invalid(kind.qualified_kind, name, [error], _kind_details(kind, name))
        return _Response(200, self._update(kind, name, obj, old, sub, dry_run))

    def _patch(self, kind: _Kind, namespace: str | None, name: str, patch: Any, content_type: str,
               sub: str | None, dry_run: bool) -> Obj:
        old = self._get(kind, namespace, name)
        current = _typed(kind, copy.deepcopy(old))
        media = content_type.split(";")[0].strip()
        if media == "application/json-patch+json":
            patched = _json_patch(current, patch)
        elif not isinstance(patch, dict) and media.endswith("merge-patch+json"):
            raise _bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
        elif media == "application/merge-patch+json":
            patched = _merge_patch(current, patch)
        elif media == "application/strategic-merge-patch+json" and kind.custom:
            raise _ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                 "include: application/json-patch+json, application/merge-patch+json, "
                                 "application/apply-patch+yaml")
        elif media == "application/strategic-merge-patch+json":
            patched = _strategic_map(current, patch, "", dict(kind.merge_keys)) or {}
        else:
            raise _ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                 "include: application/json-patch+json, application/merge-patch+json, "
                                 "application/strategic-merge-patch+json")
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise _invalid(kind.kind, name, [_FieldError("Required", "metadata")])
        obj = self._prepare_body(kind, namespace, patched)
        problem = _decode_error(kind, obj)
        if problem:  # the patched object does not decode: the patch handler reports the patch invalid
            raise _invalid("", "", [_FieldError("Invalid", "patch", json.dumps(patched), problem)], {})
        if obj["metadata"].get("name") != name:
            raise _bad_request(f"the name of the object ({obj['metadata'].get('name', '')}) does not match "
                               f"the name on the URL ({name})")
        return self._update(kind, name, obj, old, sub, dry_run)

    def _delete(self, kind: _Kind, namespace: str | None, name: str, options: Any, dry_run: bool) -> Obj:
        old = self._get(kind, namespace, name)
        pre = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise _conflict(kind, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                        f"object meta: {old['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise _conflict(kind, name, f"Precondition failed: ResourceVersion in precondition: "
                                        f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                        f"{old['metadata']['resourceVersion']}")
        if not dry_run:
            old = self._remove(kind, _key(old))
        if kind.returns_deleted:
            return _typed(kind, copy.deepcopy(old))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(kind, name, uid=old["metadata"]["uid"])}

    def _delete_collection(self, kind: _Kind, namespace: str | None, query: dict[str, str],
                           dry_run: bool) -> Obj:
        selectors = {k: v for k, v in query.items() if k in ("labelSelector", "fieldSelector")}
        listed = self._list(kind, namespace, selectors)
        if not dry_run:
            for item in listed["items"]:
                self._remove(kind, _key(item))
        listed["items"] = [_typed(kind, i) for i in listed["items"]]
        return listed
