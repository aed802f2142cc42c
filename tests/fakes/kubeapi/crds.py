"""Custom resources: kinds from CustomResourceDefinitions, served as the apiextensions server does.

What a real server does with a custom resource, for the storage version of a CRD:
- the body is pruned to the structural schema (unknown fields dropped, silently without
  fieldValidation=Strict), then `default`s are filled in, then it is validated against the
  openAPIV3Schema (types, required fields, enums, formats jsonschema knows) as 422 Invalid with the
  server's field paths and messages (`spec.addresses: Required value`, `spec.autoAssign: Invalid
  value: "string": spec.autoAssign in body must be of type boolean: "string"`);
- with a status subresource, create drops `status`, main writes keep the old status, and only
  changes outside metadata and status move `metadata.generation`;
- updates need a resourceVersion (the custom resource strategy refuses unconditional updates), a
  PUT never creates, strategic merge patch is 415 (CRs have no patch strategies);
- list items carry kind and apiVersion (they are unstructured).
Not reproduced: several versions and conversion, CEL rules (x-kubernetes-validations), scale.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.fakes.kubeapi.errors import _FieldError
from tests.fakes.kubeapi.kinds import Obj, _Kind

_GO_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array",
             type(None): "null"}


def load_crds(directory: Path) -> list[Obj]:
    """The CustomResourceDefinitions in the YAML files of `directory`, in file name order."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text())
                  if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
    return found


def kind_from_crd(crd: Obj) -> _Kind:
    """The served kind of `crd`: its storage version (one version only: no conversion here)."""
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    names = spec["names"]
    return _Kind(names["kind"], names["plural"], spec["group"], namespaced=spec["scope"] == "Namespaced",
                 status="status" in (version.get("subresources") or {}), unconditional_update=False,
                 generation=True, version=version["name"], custom=True, singular=names.get("singular", ""),
                 short_names=tuple(names.get("shortNames") or ()), list_kind=names.get("listKind", ""),
                 schema=(version.get("schema") or {}).get("openAPIV3Schema") or {})


def _prune(schema: Obj, value: Any) -> Any:
    """Drop what the structural schema does not declare (metadata is the server's own business)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if properties is None and isinstance(extra, dict):
            return {k: _prune(extra, v) for k, v in value.items()}
        if properties is None:
            return value if extra is True else {}
        return {k: _prune(properties[k], v) for k, v in value.items() if k in properties}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(schema["items"], v) for v in value]
    return value


def _default(schema: Obj, value: Any) -> Any:
    """Fill in `default`s for absent properties of objects that are present, depth first."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(schema["items"], v) for v in value]
    return value


def prepare_custom(kind: _Kind, obj: Obj) -> None:
    """Prune to the schema, then default, in place (metadata, kind and apiVersion untouched)."""
    schema = kind.schema or {}
    for key in [k for k in obj if k not in ("metadata", "kind", "apiVersion")]:
        properties = schema.get("properties") or {}
        if key not in properties and not schema.get("x-kubernetes-preserve-unknown-fields"):
            del obj[key]
        elif key in properties:
            obj[key] = _default(properties[key], _prune(properties[key], obj[key]))


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validate_custom(kind: _Kind, obj: Obj) -> list[_FieldError]:
    """Field errors for `obj` against the CRD's openAPIV3Schema, as the server words them."""
    schema = copy.deepcopy(kind.schema or {})
    schema.get("properties", {}).pop("metadata", None)  # validated by the generic metadata rules
    body = {k: v for k, v in obj.items() if k != "metadata"}
    errors: list[_FieldError] = []
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(body), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        where = _path(error.absolute_path)
        if error.validator == "required":
            missing = next(m for m in error.validator_value if m not in error.instance)
            errors.append(_FieldError("Required", f"{where}.{missing}" if where else missing))
        elif error.validator == "type":
            got = _GO_TYPES.get(type(error.instance), "object")
            wanted = error.validator_value
            errors.append(_FieldError("Invalid", where, got,
                                      f'{where} in body must be of type {wanted}: "{got}"'))
        elif error.validator == "enum":
            errors.append(_FieldError("NotSupported", where, error.instance, "supported values: "
                                      + ", ".join(f'"{v}"' for v in error.validator_value)))
        else:
            errors.append(_FieldError("Invalid", where, error.instance, f"{where} in body {error.message}"))
    return errors
