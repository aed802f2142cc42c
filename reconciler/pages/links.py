"""Links from an error's ``file:line`` to that file at the revision, on the git host's web UI.

Only sources with a web UI get links: an ``https://`` URL (GitHub, GitLab, Gitea, Forgejo and
most hosts serve the repository page at the clone URL without ``.git``), or an SSH URL of a
well-known host. The link never carries credentials: user info in the URL is dropped.
"""

from __future__ import annotations

import re
import urllib.parse

# SSH remotes whose web UI is known to live at https://<host>/<path>.
_WEB_HOSTS = ("github.com", "gitlab.com", "codeberg.org", "bitbucket.org")
_SCP_LIKE = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>[^/].*)$")
# file:line:col: message, as a Diagnostic prints itself.
_LOCATED = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+):(?P<rest>.*)$", re.DOTALL)
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def repository_web_url(source: str) -> str | None:
    """The web page of the repository a clone URL names, or None when there is none to link to."""
    text = source.strip()
    scp = _SCP_LIKE.match(text)
    if scp:
        host, path = scp.group("host").lower(), scp.group("path")
    else:
        parts = urllib.parse.urlsplit(text)
        host, path = (parts.hostname or "").lower(), parts.path.lstrip("/")
        if parts.scheme == "https":
            port = f":{parts.port}" if parts.port else ""
            return _web(host + port, path)
        if parts.scheme not in ("ssh", "git+ssh"):
            return None
    return _web(host, path) if host in _WEB_HOSTS else None


def _web(host: str, path: str) -> str | None:
    path = path.rstrip("/").removesuffix(".git")
    if not host or not path or not re.fullmatch(r"[\w.~/-]+", path) or ".." in path.split("/"):
        return None
    return f"https://{host}/{path}"


def file_url(repository: str, revision: str, file: str, line: int) -> str | None:
    """The file at the commit, at the line: ``<repository>/blob/<sha>/<file>#L<line>`` as GitHub
    serves it (GitLab's ``/-/blob/``, Gitea's and Forgejo's ``/src/commit/`` on their hosts).

    None for a revision that is not a commit SHA (a directory source's content hash) or a file
    outside the repository.
    """
    if not _SHA.match(revision) or file.startswith("/") or ".." in file.split("/"):
        return None
    host = urllib.parse.urlsplit(repository).hostname or ""
    if "gitlab" in host:
        marker = "/-/blob/"
    elif host == "codeberg.org" or "gitea" in host or "forgejo" in host:
        marker = "/src/commit/"
    else:
        marker = "/blob/"
    quoted = urllib.parse.quote(file.removeprefix("./"), safe="/")
    return f"{repository}{marker}{revision}/{quoted}#L{line}"


def split_location(line: str) -> tuple[str, int, str] | None:
    """``("file", line, "the rest")`` of an error line that starts with ``file:line:col:``."""
    found = _LOCATED.match(line)
    if not found:
        return None
    return found.group("file"), int(found.group("line")), line[found.end("file"):]
