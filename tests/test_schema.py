"""The committed JSON Schemas are exactly what the models generate, and they validate real YAML."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from reconciler.cli import main
from reconciler.commands.schema import render_schemas
from reconciler.desired.loader import load_documents
from reconciler.desired.models import KIND_MODELS

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"


def test_committed_schemas_match_the_models() -> None:
    expected = render_schemas()
    committed = {p.name: p.read_text() for p in SCHEMAS.glob("*.schema.json")}
    assert sorted(committed) == sorted(expected), "run: portside schema --out schemas"
    for name, text in expected.items():
        assert committed[name] == text, f"schemas/{name} is stale; run: portside schema --out schemas"


def test_schema_command_writes_one_file_per_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["schema", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{kind}.schema.json" for kind in KIND_MODELS)
    assert {(out / name).read_text() for name in written} == set(render_schemas().values())
    assert capsys.readouterr().out.splitlines() == [str(out / name) for name in written]


def test_schemas_accept_the_example_repo_and_refuse_unknown_fields() -> None:
    result = load_documents(ROOT / "example-repo")
    assert result.documents
    for doc in result.documents:
        schema = json.loads((SCHEMAS / f"{doc.kind}.schema.json").read_text())
        jsonschema.validate(doc.source.value, schema)
        typo = {**doc.source.value, "spec": {**doc.source.value["spec"], "adress": "x"}}
        with pytest.raises(jsonschema.ValidationError, match="adress"):
            jsonschema.validate(typo, schema)
