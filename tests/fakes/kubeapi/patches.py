"""PATCH semantics: JSON merge patch, strategic merge patch and JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from tests.fakes.kubeapi.errors import (
    _ApiError,
    _bad_request,
    _rejected,
)

Obj = dict[str, Any]


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _strategic_map(orig: Obj, patch: Obj, path: str, keys: dict[str, str]) -> Obj | None:
    """Strategic merge of `patch` onto the map `orig`; None means `$patch: delete`."""
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        replaced: Obj = _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
        return replaced
    if directive not in (None, "merge"):
        raise _bad_request(f"Unknown patch type: {directive} in map: {patch}")
    result = dict(orig)
    for key, value in patch.items():
        sub = f"{path}.{key}" if path else key
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
        elif key.startswith("$") :  # $setElementOrder/..., $retainKeys: handled below or ordering only
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result[key] if isinstance(result.get(key), dict) else {}
            merged = _strategic_map(base, value, sub, keys)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in keys:
            result[key] = _strategic_list(result.get(key) or [], value, keys[sub], sub, keys)
        else:
            result[key] = _strip_directives(value)
    if "$retainKeys" in patch:
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _strategic_list(orig: list[Any], patch: list[Any], merge_key: str, path: str,
                    keys: dict[str, str]) -> list[Any]:
    if not merge_key:  # a list of scalars with patchStrategy=merge: a set union, order kept
        return list(orig) + [v for v in patch if v not in orig]
    def replaces(e: Any) -> bool:
        return isinstance(e, dict) and e.get("$patch") == "replace"

    if any(replaces(e) for e in patch):
        return [_strip_directives(e) for e in patch if not replaces(e)]
    result = [copy.deepcopy(e) for e in orig]
    for element in patch:
        if not isinstance(element, dict) or merge_key not in element:
            raise _ApiError(500, f"map: {element} does not contain declared merge key: {merge_key}")
        index = next((i for i, e in enumerate(result) if e.get(merge_key) == element[merge_key]), None)
        if element.get("$patch") == "delete":
            result = [e for e in result if e.get(merge_key) != element[merge_key]]
        elif index is None:
            result.append(_strip_directives(element))
        else:
            result[index] = _strategic_map(result[index], element, path, keys) or {}
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad_request(f'JSON pointer must start with "/": {path}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _same(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ==, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch; failures are 422 as the apiserver reports them."""
    if not isinstance(ops, list):
        raise _bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)

    def parent(tokens: list[str], op: str) -> tuple[Any, str]:
        if not tokens:
            raise _rejected(f"{op} operation does not apply: doc is missing path: \"\"")
        node: Any = doc
        for token in tokens[:-1]:
            try:
                node = node[int(token)] if isinstance(node, list) else node[token]
            except (KeyError, IndexError, ValueError, TypeError):
                raise _rejected(f"{op} operation does not apply: doc is missing path: "
                                f"/{'/'.join(tokens)}") from None
        return node, tokens[-1]

    def get(tokens: list[str], op: str) -> Any:
        if not tokens:
            return doc
        node, last = parent(tokens, op)
        try:
            return node[int(last)] if isinstance(node, list) else node[last]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _rejected(f"{op} operation does not apply: doc is missing path: "
                            f"/{'/'.join(tokens)}") from None

    def add(tokens: list[str], value: Any, op: str) -> None:
        node, last = parent(tokens, op)
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= index <= len(node):
                raise _rejected(f"{op} operation does not apply: index out of bounds: {last}")
            node.insert(index, value)
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise _rejected(f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}")

    def remove(tokens: list[str], op: str) -> Any:
        value = get(tokens, op)
        node, last = parent(tokens, op)
        if isinstance(node, list):
            del node[int(last)]
        else:
            del node[last]
        return value

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _bad_request(f"invalid JSON patch operation: {op}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _bad_request(f"missing value for {kind} operation")
        if kind == "add":
            add(tokens, copy.deepcopy(op["value"]), kind)
        elif kind == "remove":
            remove(tokens, kind)
        elif kind == "replace":
            remove(tokens, kind)
            add(tokens, copy.deepcopy(op["value"]), kind)
        elif kind == "move":
            add(tokens, remove(_pointer(op.get("from", "")), kind), kind)
        elif kind == "copy":
            add(tokens, copy.deepcopy(get(_pointer(op.get("from", "")), kind)), kind)
        elif kind == "test":
            if not _same(get(tokens, kind), op["value"]):
                raise _rejected(f"testing value {op['path']} failed: test failed")
        else:
            raise _bad_request(f"Unexpected kind: {kind}")
    return doc

