""".portsideignore: paths the loader leaves out, in gitignore syntax (pure; no file access).

The rules are git's (gitignore(5)), so a user can copy lines from a .gitignore:

- blank lines and lines starting with ``#`` are skipped; ``\\#`` and ``\\!`` start a pattern
  with a literal ``#`` or ``!``; trailing spaces are dropped unless escaped with ``\\``;
- ``!pattern`` re-includes what an earlier pattern excluded; the last matching line wins;
- a trailing ``/`` matches directories only;
- a pattern with a ``/`` at its start or in its middle is anchored at the directory holding the
  ignore file; one without matches a name at any depth;
- ``*`` matches anything but ``/``, ``?`` one character but ``/``, ``[a-z]`` / ``[!a-z]`` a class;
  ``**/`` at the start, ``/**/`` in the middle and ``/**`` at the end match any number of
  directories (zero or more, anywhere; everything inside, at the end).

As in git, a path inside an excluded directory cannot be re-included: the walk never enters an
excluded directory (:meth:`IgnoreRules.ignores_path` applies the same rule to a single path).
Each pattern becomes one compiled regular expression, matched against the path relative to the
ignore file's directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IGNORE_FILE = ".portsideignore"


@dataclass(frozen=True)
class IgnorePattern:
    """One line of an ignore file."""

    text: str  # the line as written, for messages
    regex: re.Pattern[str]
    negated: bool
    directories_only: bool

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.directories_only and not is_dir:
            return False
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class IgnoreRules:
    """The patterns of one ignore file, in order."""

    patterns: tuple[IgnorePattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        found = (_compile(line) for line in text.splitlines())
        return cls(tuple(p for p in found if p is not None))

    def ignores(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` itself (``a/b.yaml``, relative, ``/``-separated) is excluded.

        The caller walks top-down and does not enter an excluded directory, as git does.
        """
        ignored = False
        for pattern in self.patterns:
            if pattern.negated == ignored and pattern.matches(path, is_dir):
                ignored = not pattern.negated
        return ignored

    def ignores_path(self, path: str, is_dir: bool = False) -> bool:
        """Whether ``path`` is excluded, itself or through an excluded parent directory."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self.ignores("/".join(parts[:depth]), True):
                return True
        return self.ignores(path, is_dir)


def _compile(line: str) -> IgnorePattern | None:
    text = _strip_trailing_spaces(line)
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated or text.startswith(("\\#", "\\!")):
        text = text[1:]  # the "!" of a negation, or the backslash of an escaped "#" or "!"
    directories_only = text.endswith("/") and not text.endswith("\\/")
    text = text.rstrip("/") if directories_only else text
    if not text:
        return None
    # A slash at the start or in the middle anchors the pattern to the ignore file's directory.
    anchored = "/" in text
    text = text.removeprefix("/")
    body = _translate(text.split("/"))
    prefix = "" if anchored else "(?:.*/)?"
    return IgnorePattern(line, re.compile(prefix + body, re.DOTALL), negated, directories_only)


def _strip_trailing_spaces(line: str) -> str:
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        return stripped[:-1] + " "  # "\ " keeps one escaped space
    return stripped


def _translate(segments: list[str]) -> str:
    out = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            # At the end: everything inside; elsewhere: zero or more whole directories.
            out.append(".+" if index == last else "(?:[^/]*/)*")
            continue
        out.append(_glob(segment))
        if index != last:
            out.append("/")
    return "".join(out)


def _glob(segment: str) -> str:
    """One path segment's glob as a regular expression that never crosses a ``/``."""
    out = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "\\" and i + 1 < len(segment):
            out.append(re.escape(segment[i + 1]))
            i += 2
            continue
        if char == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1  # "a**b" inside a segment is a plain star
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end, klass = _char_class(segment, i)
            if klass is not None:
                out.append(klass)
                i = end
                continue
            out.append(re.escape(char))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _char_class(segment: str, start: int) -> tuple[int, str | None]:
    """``[...]`` at ``start``: (index after it, its regex), or (start, None) when unclosed."""
    i = start + 1
    negated = i < len(segment) and segment[i] in "!^"
    if negated:
        i += 1
    members: list[str] = []
    first = True
    while i < len(segment) and (segment[i] != "]" or first):
        char = segment[i]
        escaped = char == "\\" and i + 1 < len(segment)
        if escaped:
            i += 1
            char = segment[i]
        if char == "-" and not escaped and members and i + 1 < len(segment) and segment[i + 1] != "]":
            members.append("-")  # a range, as in [a-z]
        else:
            members.append(re.escape(char) if char != "-" else "\\-")
        first = False
        i += 1
    if i >= len(segment):
        return start, None
    body = "".join(members)
    return i + 1, (f"[^/{body}]" if negated else f"(?!/)[{body}]")
