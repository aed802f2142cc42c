"""Public hostnames and paths of tunnel routes, checked as Cloudflare and cloudflared check them.

A route hostname is an ASCII (punycode) DNS name, compared case-insensitively, with an optional
``*`` as its whole leftmost label (cloudflared matches ``*.example.com`` against any subdomain)
and no port. A route path is a Go RE2 regular expression: it is compiled with Python's ``re`` to
catch syntax errors, and the Python-only constructs RE2 rejects (lookarounds, backreferences,
atomic groups, conditionals) are refused here instead of by cloudflared at run time.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Constructs Python's re accepts and RE2 does not; found outside escapes and character classes.
_PYTHON_ONLY_GROUPS = {"(?=": "lookahead", "(?!": "negative lookahead", "(?<=": "lookbehind",
                       "(?<!": "negative lookbehind", "(?P=": "named backreference",
                       "(?>": "atomic group", "(?(": "conditional"}


def hostname_problem(hostname: str) -> str | None:
    """Why ``hostname`` cannot be a route hostname, or None when it can."""
    if len(hostname) > 253:
        return f'"{hostname[:40]}..." is longer than 253 characters'
    if "://" in hostname:
        return f'"{hostname}" is a URL; write only the hostname (e.g. "blog.example.dev")'
    if ":" in hostname:
        return f'"{hostname}" has a port; a hostname cannot carry a port (set it on the service)'
    if "/" in hostname:
        return f'"{hostname}" contains "/"; put the path in spec.path'
    if not hostname.isascii():
        try:
            suggestion = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            return f'"{hostname}" is not a valid DNS name'
        return f'"{hostname}" is not ASCII; write its punycode form "{suggestion}"'
    if hostname.endswith("."):
        return f'"{hostname}" ends with a dot; write it without the trailing dot'
    labels = hostname.lower().split(".")
    if "*" in hostname:
        if labels[0] != "*" or "*" in hostname[1:]:
            return (f'"{hostname}": a wildcard is allowed only as the whole leftmost label, '
                    'e.g. "*.example.dev"')
        labels = labels[1:]
    return _dns_name_problem(hostname, labels)


def zone_problem(zone: str) -> str | None:
    """Why ``zone`` cannot be a DNS zone name (``example.dev``), or None."""
    if "*" in zone or ":" in zone or "/" in zone or not zone.isascii() or zone.endswith("."):
        return f'"{zone}" is not a zone name; write a domain such as "example.dev"'
    return _dns_name_problem(zone, zone.lower().split("."))


def _dns_name_problem(name: str, labels: list[str]) -> str | None:
    if len(name) > 253:
        return f'"{name[:40]}..." is longer than 253 characters'
    if len(labels) < 2:
        return f'"{name}" is not a fully qualified name; write e.g. "blog.example.dev"'
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (f'"{name}" is not a valid DNS name: label "{label}" must be 1-63 letters, '
                    "digits or '-', not starting or ending with '-'")
    return None


def in_zone(hostname: str, zone: str) -> bool:
    """True when ``hostname`` (or every name its wildcard matches) lies inside ``zone``."""
    host, zone = hostname.lower(), zone.lower()
    return host == zone or host.endswith("." + zone)


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a regular expression cloudflared (Go RE2) accepts, or None."""
    if len(path) > 1024:
        return f'"{path[:40]}..." is longer than 1024 characters'
    try:
        re.compile(path)
    except re.error as exc:
        return f'"{path}" is not a valid regular expression: {exc}'
    construct = _python_only_construct(path)
    if construct is not None:
        return f'"{path}" uses a {construct}, which Go regular expressions (cloudflared) do not support'
    return None


def _python_only_construct(pattern: str) -> str | None:
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            following = pattern[i + 1:i + 2]
            if not in_class and following.isdigit() and following != "0":
                return "backreference"
            if not in_class and following == "g" and pattern[i + 2:i + 3] == "<":
                return "backreference"
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]" or pattern[i + 1:i + 3] == "^]":
                i += 2 if pattern[i + 1] == "]" else 3  # a leading ']' is a literal
                continue
        elif char == "(":
            for opener, name in _PYTHON_ONLY_GROUPS.items():
                if pattern.startswith(opener, i):
                    return name
        i += 1
    return None
