"""`portside schema [--out DIR]`: the JSON Schema of every document kind, one file per kind.

The schemas are generated from the pydantic models (the single source of truth) and committed
under ``schemas/``; a test fails when they drift. Point an editor's YAML plugin at them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reconciler.common.atomic import write_atomic
from reconciler.desired.models import KIND_MODELS

DEFAULT_OUT = "schemas"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"directory to write <kind>.schema.json files into (default: {DEFAULT_OUT}/)")


def render_schemas() -> dict[str, str]:
    """File name -> JSON text of each kind's schema, formatted stably (sorted keys, 2 spaces)."""
    out = {}
    for kind, model in sorted(KIND_MODELS.items()):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://portside.io/schemas/{kind}.schema.json"
        out[f"{kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_schemas().items():
        write_atomic(out / name, text)
        print(out / name)
    return 0
