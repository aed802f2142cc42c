"""Shared fixtures: fake API servers on loopback and small repos written to tmp dirs."""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main
from tests.fakes.kube_api import FakeKube
from tests.kube import FAKE_ONLY, REAL_CLUSTER, RUNNER_RBAC, SESSION_REQUESTS, Cluster, open_cluster
from tests.rbac import Policy, service_account


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
        marker = item.get_closest_marker("fake")
        if marker is not None:  # @pytest.mark.fake("why") may say more
            item.add_marker(pytest.mark.skip(reason=marker.args[0] if marker.args else FAKE_ONLY))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The kube tests need no more than the RBAC they document: every request they made (the
    tests' own and the code's) must be allowed by tests/kube-test-runner-rbac.yaml."""
    if not SESSION_REQUESTS:
        return
    policy = Policy(yaml.safe_load_all(RUNNER_RBAC.read_text()))
    verdict = policy.check(service_account("portside-test", "portside-test-runner"), SESSION_REQUESTS)
    if verdict.denied:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"  denied: {d}" for d in dict.fromkeys(str(d) for d in verdict.denied)]
        text = f"{RUNNER_RBAC.name} does not allow what the kube tests did:\n" + "\n".join(lines)
        if reporter is not None:
            reporter.write_line(text, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.environ.get("PORTSIDE_TEST_RBAC_UNUSED"):  # when trimming the manifest, after a full run
        print("\n".join(f"unused: {p}" for p in verdict.unused))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The cluster the `kube` tests drive: the fake, or PORTSIDE_TEST_KUBECONFIG's (see tests/kube.py)."""
    with open_cluster(tmp_path, bookmark_interval=0.2) as opened:
        yield opened


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """The fake itself, for tests of its own surface (they are marked `fake`)."""
    with FakeKube() as kube:
        yield kube


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never pick up the developer's kubeconfig or Cloudflare token by accident."""
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDFLARE_BASE_URL", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("NO_COLOR", "1")
