"""`portside speaker` command line: key handling, sources, help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.common.errors import UsageError
from reconciler.speaker.cli import KEY_ENV, load_key

SECRET = "s3cr3t-heartbeat-key-value-0123456789"
REPO = Path(__file__).resolve().parent.parent


def test_key_from_file_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    assert load_key(path, {}, insecure=False) == SECRET.encode()


def test_key_from_environment() -> None:
    assert load_key(None, {KEY_ENV: SECRET}, insecure=False) == SECRET.encode()


def test_insecure_mode_has_an_empty_key() -> None:
    assert load_key(None, {}, insecure=True) == b""


@pytest.mark.parametrize(("setup", "message"), [
    ("none", "no heartbeat key: give --heartbeat-key-file FILE or set PORTSIDE_HEARTBEAT_KEY"),
    ("missing", "--heartbeat-key-file"),
    ("short", "holds 5 bytes; use at least 16"),
    ("short-env", "PORTSIDE_HEARTBEAT_KEY holds 5 bytes; use at least 16"),
    ("both", "the heartbeat key is given twice"),
])
def test_key_errors_never_show_the_key(tmp_path: Path, setup: str, message: str) -> None:
    path: Path | None = tmp_path / "key"
    env: dict[str, str] = {}
    assert path is not None
    if setup == "none":
        path = None
    elif setup == "short":
        path.write_text("short\n")
    elif setup == "short-env":
        path, env = None, {KEY_ENV: "short"}
    elif setup == "both":
        path.write_text(SECRET)
        env = {KEY_ENV: SECRET}
    with pytest.raises(UsageError) as info:
        load_key(path, env, insecure=False)
    assert message in str(info.value)
    assert SECRET not in str(info.value) and "short" not in str(info.value).replace("too short", "")


def _speaker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "speaker", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=30)


def test_help_explains_sources_and_key() -> None:
    result = _speaker("--help")
    assert result.returncode == 0
    for text in ["--node", "--announcements FILE", "--kubeconfig FILE", "--heartbeat-key-file",
                 "PORTSIDE_HEARTBEAT_KEY", "CAP_NET_RAW", "portside-announcements"]:
        assert text in result.stdout, text


def test_refuses_to_start_without_a_key_or_a_source(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "KUBERNETES_SERVICE_HOST", "NODE_NAME")}
    no_key = _speaker("--node", "a", "--announcements", str(tmp_path / "t.json"), env=env)
    assert no_key.returncode == 1 and "no heartbeat key" in no_key.stderr
    no_source = _speaker("--node", "a", env={**env, KEY_ENV: SECRET})
    assert no_source.returncode == 1 and "no announcement table" in no_source.stderr
    assert SECRET not in no_source.stderr + no_source.stdout
    no_node = _speaker("--announcements", str(tmp_path / "t.json"), env={**env, KEY_ENV: SECRET})
    assert no_node.returncode == 1 and "--node NAME is required" in no_node.stderr
