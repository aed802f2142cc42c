"""Unpacking one revision's tar archive (``git archive``) into a fresh directory, safely.

A remote decides what a revision contains, so nothing in it may write or point outside the
directory it is unpacked into. The standard library's ``extractall(filter="data")`` exists only from
Python 3.11.4 (and had escapes fixed as late as 3.11.13), while portside supports every 3.11, so the
rules are our own and the same on every version:

- a member name is a non-empty relative path without ``..``, so files and directories are created
  strictly below the destination;
- only directories, regular files, symbolic links and hard links exist in a repository; device
  files, FIFOs and anything else are refused;
- links are made last, after every file: nothing is ever written through a link, and each link,
  once all exist, must resolve (following the links it passes through) to a place inside.

A refused member refuses the whole revision (a :class:`ConfigError` naming the member: the fix is
a new commit); the caller removes the half-made directory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from reconciler.common.errors import ConfigError, Diagnostic

_CHUNK = 1 << 16


def _refuse(name: object, reason: str) -> ConfigError:
    return ConfigError([Diagnostic(str(name), 1, 1, f"{reason}; the revision is not used")])


def extract_tree(fileobj: IO[bytes], destination: Path) -> None:
    """Unpack the tar stream ``fileobj`` into the existing, empty directory ``destination``.

    Raises :class:`ConfigError` for a member that could escape, ``tarfile.TarError`` for a stream
    that is not a tar archive.
    """
    root = Path(os.path.realpath(destination))
    symlinks: list[tuple[PurePosixPath, str]] = []
    hardlinks: list[tuple[PurePosixPath, PurePosixPath]] = []
    files: set[PurePosixPath] = set()
    with tarfile.open(fileobj=fileobj, mode="r|") as archive:  # a stream: one pass, bounded memory
        for member in archive:
            name = _relative(member.name, member.name)
            if member.isdir():
                _make_dirs(root, name)
            elif member.isreg():
                _write_file(root, name, archive.extractfile(member), executable=bool(member.mode & 0o111))
                files.add(name)
            elif member.issym():
                symlinks.append((name, _link_target(name, member.linkname)))
            elif member.islnk():
                hardlinks.append((name, _relative(member.name, member.linkname)))
            else:
                raise _refuse(member.name, f"is a {_kind(member)}, which a repository cannot hold")
    for name, original in hardlinks:
        if original not in files:
            raise _refuse(name, f"is a hard link to {original}, which is not a file of this revision")
        # A copy, not a second name: the tree is handed out read-only either way.
        _make_parent(root, name)
        shutil.copyfile(root / original, root / name, follow_symlinks=False)
        files.add(name)
    for name, target in symlinks:
        _make_parent(root, name)
        try:
            os.symlink(target, root / name)
        except FileExistsError:
            raise _refuse(name, "appears twice in the archive") from None
    for name, target in symlinks:  # only now: a later link can change where an earlier one leads
        resolved = Path(os.path.realpath(root / name))
        if not _inside(resolved, root):
            raise _refuse(name, f"is a symbolic link to {target!r}, which leads outside the repository")


def _relative(member: str, text: str) -> PurePosixPath:
    """``text`` (the name or link target of ``member``) as a path strictly below the destination."""
    if text.startswith("/"):
        raise _refuse(member, f"has the absolute path {text!r}")
    path = PurePosixPath(text)
    parts = [part for part in path.parts if part != "."]
    if ".." in parts:
        raise _refuse(member, f"has '..' in its path {text!r}")
    if not parts:
        raise _refuse(member, f"has an empty path {text!r}")
    if "\0" in text:
        raise _refuse(member, "has a NUL byte in its path")
    return PurePosixPath(*parts)


def _link_target(name: PurePosixPath, target: str) -> str:
    """Early refusal of what is certainly outside; the final check follows links on disk."""
    if not target:
        raise _refuse(name, "is a symbolic link to nothing")
    if target.startswith("/"):
        raise _refuse(name, f"is a symbolic link to the absolute path {target!r}")
    depth = len(name.parts) - 1
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            raise _refuse(name, f"is a symbolic link to {target!r}, which leads outside the repository")
    return target


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _make_dirs(root: Path, name: PurePosixPath) -> None:
    """Create ``root/name`` and its parents as real directories (no link exists yet to follow)."""
    path = root / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise _refuse(name, "is a directory and a file at once")
    path.mkdir(mode=0o755, parents=True, exist_ok=True)


def _make_parent(root: Path, name: PurePosixPath) -> None:
    parent = root / name.parent
    # Every link is made after every file, but a link may sit below another link's name.
    if Path(os.path.realpath(parent)) != parent:
        raise _refuse(name, "lies below a symbolic link")
    if name.parent.parts:
        _make_dirs(root, name.parent)


def _write_file(root: Path, name: PurePosixPath, data: IO[bytes] | None, *, executable: bool) -> None:
    _make_parent(root, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(root / name, flags, 0o755 if executable else 0o644)
    except FileExistsError:
        raise _refuse(name, "appears twice in the archive") from None
    with os.fdopen(fd, "wb") as out:
        if data is not None:
            shutil.copyfileobj(data, out, _CHUNK)


def _kind(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    return f"special member (type {member.type!r})"
