"""Shared fixtures: fake API servers on loopback and small repos written to tmp dirs."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.cli import main
from tests.fakes.kube_api import FakeKube
from tests.kube import FAKE_ONLY, REAL_CLUSTER, Cluster, open_cluster


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Run `portside ARGS` in-process, as a user would from a shell, capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors and --help
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def write_repo(root: Path, files: dict[str, str]) -> Path:
    """Write a desired-state repo: {relative path: YAML text (dedented)}."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Against a real cluster (PORTSIDE_TEST_KUBECONFIG), tests marked `fake` skip and say why."""
    if not REAL_CLUSTER:
        return
    for item in items:
        if item.get_closest_marker("fake") is not None:
            item.add_marker(pytest.mark.skip(reason=FAKE_ONLY))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The cluster the `kube` tests drive: the fake, or PORTSIDE_TEST_KUBECONFIG's (see tests/kube.py)."""
    with open_cluster(tmp_path, bookmark_interval=0.2) as opened:
        yield opened


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    with FakeKube() as kube:
        yield kube


@pytest.fixture
def kubeconfig(fake_kube: FakeKube, tmp_path: Path) -> Path:
    return fake_kube.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never pick up the developer's kubeconfig or Cloudflare token by accident."""
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDFLARE_BASE_URL", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("NO_COLOR", "1")
