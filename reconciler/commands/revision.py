"""The commit a local path is at, for the plan's revision, read from the files git keeps.

`diff` and `apply` record HEAD of PATH's repo. Importing gitpython for that one read cost
30-50 ms of every run; HEAD, a loose ref or packed-refs are small text files. Anything this
reader does not know (a reftable repo, a ref pointing at another symbolic ref chain too deep)
falls back to gitpython, so the answer never depends on which path found it.
"""

from __future__ import annotations

from pathlib import Path

_SHA_LENGTHS = (40, 64)  # SHA-1 and SHA-256 repositories
_MAX_SYMREF_DEPTH = 5


class _Unknown(Exception):
    """A repository layout this reader does not handle: ask gitpython."""


def git_head(path: Path) -> str | None:
    """The commit PATH is at, when it is inside a git work tree (None otherwise, never an error)."""
    try:
        return _read_head(path)
    except _Unknown:
        return _git_head_with_gitpython(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _read_head(path: Path) -> str | None:
    git_dir = _find_git_dir(path.resolve())
    if git_dir is None:
        return None
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():  # a linked worktree: refs live in the main repository
        common = (git_dir / commondir.read_text().strip()).resolve()
    if (common / "reftable").exists():
        raise _Unknown
    head: str | None = (git_dir / "HEAD").read_text().strip()
    for _ in range(_MAX_SYMREF_DEPTH):
        if head is None:
            return None  # an unborn branch: no commits yet
        if not head.startswith("ref:"):
            return head if _is_sha(head) else None
        head = _resolve_ref(git_dir, common, head[4:].strip())
    raise _Unknown


def _find_git_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = candidate.read_text().strip()
            if not text.startswith("gitdir:"):
                raise _Unknown
            return (directory / text[len("gitdir:"):].strip()).resolve()
    return None


def _resolve_ref(git_dir: Path, common: Path, name: str) -> str | None:
    """The contents of ref ``name``: a SHA, another ``ref: ...``, or None when it does not exist."""
    if ".." in Path(name).parts:
        raise _Unknown
    # Per-worktree refs (HEAD-like, refs/bisect, refs/worktree) live in the worktree's own dir.
    for base in (git_dir, common) if git_dir != common else (common,):
        loose = base / name
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.startswith(("#", "^")):
                continue
            sha, _, ref = line.partition(" ")
            if ref == name:
                return sha
    return None


def _is_sha(text: str) -> bool:
    return len(text) in _SHA_LENGTHS and all(c in "0123456789abcdef" for c in text)


def _git_head_with_gitpython(path: Path) -> str | None:
    try:
        import git

        repo = git.Repo(path, search_parent_directories=True)
        return str(repo.head.commit.hexsha)
    except Exception:  # not a repo, no commits yet, no git binary: no revision, not an error
        return None
