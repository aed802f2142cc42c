"""`portside run` arguments: durations, source choice and the mistakes it refuses up front."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from reconciler.commands.run import add_arguments, build_source, parse_duration
from reconciler.common.errors import UsageError
from reconciler.source.directory import DirectorySource
from reconciler.source.git import GitSource


@pytest.mark.parametrize(("text", "seconds"), [
    ("60", 60.0), ("30s", 30.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("0.5", 0.5),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1x", "m", "-5s", "0", "0s", "1m foo"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_source_choice(tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert isinstance(build_source(parse("--source", str(tmp_path), *cache)), DirectorySource)
    for url in ("https://github.com/me/lab.git", "git@github.com:me/lab.git", "file:///srv/lab.git"):
        assert isinstance(build_source(parse("--source", url, *cache)), GitSource)
    git = build_source(parse("--source", "https://github.com/me/lab.git", "--ref", "v1", "--path", "deploy",
                             *cache))
    assert git.describe() == "git https://github.com/me/lab.git ref v1 path deploy"


def test_mistakes_are_refused_with_the_flag_named(tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(UsageError, match="--verify-signatures needs --allowed-signers"):
        build_source(parse("--source", "https://h/r.git", "--verify-signatures", *cache))
    with pytest.raises(UsageError, match=r"--allowed-signers .*no such file"):
        build_source(parse("--source", "https://h/r.git", "--verify-signatures",
                           "--allowed-signers", str(tmp_path / "missing"), *cache))
    with pytest.raises(UsageError, match="need a git URL"):
        build_source(parse("--source", str(tmp_path), "--ref", "main", *cache))
    with pytest.raises(UsageError, match="not a directory"):
        build_source(parse("--source", str(tmp_path / "nowhere"), *cache))
    with pytest.raises(SystemExit):
        parse("--source", "x", "--interval", "soon")
