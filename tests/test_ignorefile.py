""".portsideignore matching: a table of gitignore rules, checked against the table and against git.

Every row is also put to ``git check-ignore`` in a real repository, so the table cannot drift
from what git (and so the user's habit) does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.desired.ignorefile import IgnoreRules

# (ignore file, path, is a directory, ignored?)
TABLE: list[tuple[str, str, bool, bool]] = [
    # plain names match at any depth, files and directories alike
    ("charts", "charts", True, True),
    ("charts", "apps/charts", True, True),
    ("values.yaml", "apps/blog/values.yaml", False, True),
    ("values.yaml", "apps/blog/values.yml", False, False),
    # globs
    ("*.yml", "ci.yml", False, True),
    ("*.yml", "deep/er/ci.yml", False, True),
    ("*.yml", "ci.yaml", False, False),
    ("values-?.yaml", "values-a.yaml", False, True),
    ("values-?.yaml", "values-ab.yaml", False, False),
    ("values-[0-9].yaml", "values-7.yaml", False, True),
    ("values-[0-9].yaml", "values-x.yaml", False, False),
    ("values-[!0-9].yaml", "values-x.yaml", False, True),
    ("values-[!0-9].yaml", "values-7.yaml", False, False),
    ("a*b.yaml", "a/b.yaml", False, False),  # * never crosses a /
    # a trailing / matches directories only
    ("build/", "build", True, True),
    ("build/", "build", False, False),
    ("build/", "sub/build", True, True),
    # a / at the start or in the middle anchors to the repo top
    ("/top.yaml", "top.yaml", False, True),
    ("/top.yaml", "sub/top.yaml", False, False),
    ("apps/blog.yaml", "apps/blog.yaml", False, True),
    ("apps/blog.yaml", "x/apps/blog.yaml", False, False),
    ("apps/*.yaml", "apps/a.yaml", False, True),
    ("apps/*.yaml", "apps/sub/a.yaml", False, False),
    # **
    ("**/values.yaml", "values.yaml", False, True),
    ("**/values.yaml", "a/b/values.yaml", False, True),
    ("**/helm/values.yaml", "x/helm/values.yaml", False, True),
    ("charts/**", "charts/a.yaml", False, True),
    ("charts/**", "charts/x/y/a.yaml", False, True),
    ("apps/**/values.yaml", "apps/values.yaml", False, True),
    ("apps/**/values.yaml", "apps/a/b/values.yaml", False, True),
    ("apps/**/values.yaml", "other/values.yaml", False, False),
    # negation: the last matching line wins
    ("*.yaml\n!keep.yaml", "keep.yaml", False, False),
    ("*.yaml\n!keep.yaml", "drop.yaml", False, True),
    ("!keep.yaml\n*.yaml", "keep.yaml", False, True),
    ("charts/**\n!charts/portside.yaml", "charts/portside.yaml", False, False),
    # comments, blanks, escapes, trailing spaces
    ("# a comment\n\nfoo.yaml", "foo.yaml", False, True),
    ("# foo.yaml", "# foo.yaml", False, False),
    ("\\#foo.yaml", "#foo.yaml", False, True),
    ("\\!important.yaml", "!important.yaml", False, True),
    ("foo.yaml   ", "foo.yaml", False, True),
    ("foo.yaml\\ ", "foo.yaml ", False, True),
    ("a\\*b.yaml", "a*b.yaml", False, True),
    ("a\\*b.yaml", "axb.yaml", False, False),
    # regex characters in names are literal
    ("v1.0+(x).yaml", "v1.0+(x).yaml", False, True),
    ("v1.0+(x).yaml", "v1x0+(x).yaml", False, False),
]


@pytest.mark.parametrize(("rules", "path", "is_dir", "ignored"), TABLE)
def test_rules_table(rules: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules.parse(rules).ignores(path, is_dir) is ignored


def test_a_path_inside_an_excluded_directory_cannot_be_re_included() -> None:
    rules = IgnoreRules.parse("charts/\n!charts/portside.yaml\n")
    assert rules.ignores("charts/portside.yaml", False) is False  # the line alone would re-include it
    assert rules.ignores_path("charts/portside.yaml") is True  # but its directory is excluded


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize(("rules", "path", "is_dir", "ignored"), TABLE)
def test_git_agrees_with_the_table(rules: str, path: str, is_dir: bool, ignored: bool, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(rules + "\n")
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if is_dir else target.write_text("")
    asked = path + "/" if is_dir else path
    found = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "-q", "--no-index", asked],
                           capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    assert (found.returncode == 0) is ignored
