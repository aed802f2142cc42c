"""The layer contract in pyproject.toml holds, and it would catch a core module importing the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import-linter has no `python -m` entry; this is what its `lint-imports` script runs.
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_core_imports_no_network_library() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_the_contract_breaks_when_the_core_reaches_the_network(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "reconciler", tmp_path / "reconciler")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    validate = tmp_path / "reconciler" / "desired" / "validate.py"
    # An indirect path counts too: the validator reaching the Kubernetes backend.
    validate.write_text(validate.read_text() + "\nimport reconciler.backends.kube  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "reconciler.desired.validate" in result.stdout
