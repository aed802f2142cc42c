"""git_head reads HEAD from the files git keeps, and agrees with `git rev-parse HEAD` on real repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.commands.revision import git_head


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.dev", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def repo_with_commits(root: Path, commits: int = 2) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "apps").mkdir()
    for i in range(commits):
        (root / "apps" / "a.yaml").write_text(f"# {i}\n")
        git(root, "add", "-A")
        git(root, "commit", "-qm", f"c{i}")
    return root


def test_a_branch_a_subdirectory_and_a_file_inside_the_work_tree(tmp_path: Path) -> None:
    repo = repo_with_commits(tmp_path / "repo")
    head = git(repo, "rev-parse", "HEAD")
    assert git_head(repo) == head
    assert git_head(repo / "apps") == head
    assert git_head(repo / "apps" / "a.yaml") == head


def test_packed_refs_and_a_detached_head(tmp_path: Path) -> None:
    repo = repo_with_commits(tmp_path / "repo")
    git(repo, "pack-refs", "--all", "--prune")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_head(repo) == git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert git_head(repo) == git(repo, "rev-parse", "HEAD~0")


def test_a_linked_worktree_reads_its_own_head(tmp_path: Path) -> None:
    repo = repo_with_commits(tmp_path / "repo")
    git(repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "wt"), "HEAD~1")
    (tmp_path / "wt" / "apps" / "a.yaml").write_text("# other\n")
    git(tmp_path / "wt", "commit", "-qam", "on other")
    assert git_head(tmp_path / "wt") == git(tmp_path / "wt", "rev-parse", "HEAD")
    assert git_head(tmp_path / "wt") != git_head(repo)


def test_no_repo_and_no_commits_give_no_revision(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert git_head(tmp_path / "plain") is None
    (tmp_path / "unborn").mkdir()
    git(tmp_path / "unborn", "init", "-q")
    assert git_head(tmp_path / "unborn") is None
