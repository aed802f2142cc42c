"""The git source: a shallow, cached clone that follows a branch or pins a tag or a commit.

The cache holds a bare repository per remote URL and one exported tree per revision
(``trees/<sha>``), so a checkout never changes after it is handed out. Credentials reach git only
through the child's environment (``http.extraHeader`` via ``GIT_CONFIG_*``, ``GIT_SSH_COMMAND``):
never in a URL on disk, in a command line or in a message.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, cast
from urllib.parse import urlsplit, urlunsplit

# Without a git executable GitPython fails at import, which would take `portside run --source DIR`
# down with it; GitSource says what is missing instead.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import git

from reconciler.common.errors import ConfigError, Diagnostic, SignatureError, SourceError, UsageError
from reconciler.common.secrets import read_secret_file, redact
from reconciler.source import Checkout
from reconciler.source.archive import extract_tree

log = logging.getLogger(__name__)

TOKEN_ENV = "PORTSIDE_GIT_TOKEN"
SSH_KEY_ENV = "PORTSIDE_GIT_SSH_KEY"
LOCAL_REF = "refs/portside/head"
FETCH_TIMEOUT = 120.0  # seconds; a hung remote must not hang the controller forever
KEEP_TREES = 4
ARCHIVE_IN_MEMORY = 8 << 20  # bytes of a revision's tar kept in memory before it spills to disk
_HEX_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_INVALID_PATH = re.compile(r"invalid path '(.*?)'?$")

RefKind = Literal["head", "branch", "tag", "commit", "name"]


@dataclass(frozen=True)
class GitRef:
    """What ``--ref`` asks for. ``name`` kinds are resolved against the remote (branch first)."""

    kind: RefKind
    name: str = ""

    @property
    def follows(self) -> bool:
        """True when the ref moves (a branch or the remote HEAD); tags and commits are pins."""
        return self.kind in ("head", "branch")

    def refspec(self) -> str:
        """The source side of a fetch refspec."""
        if self.kind == "head":
            return "HEAD"
        if self.kind == "branch":
            return f"refs/heads/{self.name}"
        if self.kind == "tag":
            return f"refs/tags/{self.name}"
        return self.name


def parse_ref(text: str | None) -> GitRef:
    """``None`` -> remote HEAD; ``refs/heads/x``/``refs/tags/x``; a full hex SHA -> commit."""
    if not text or text == "HEAD":
        return GitRef("head")
    if text.startswith("refs/heads/"):
        return GitRef("branch", text.removeprefix("refs/heads/"))
    if text.startswith("refs/tags/"):
        return GitRef("tag", text.removeprefix("refs/tags/"))
    if _HEX_SHA.match(text):
        return GitRef("commit", text)
    if text.startswith("-") or ".." in text or any(c in text for c in " ~^:?*[\\"):
        raise UsageError(f"--ref {text!r} is not a valid branch, tag or commit name")
    return GitRef("name", text)


@dataclass(frozen=True)
class GitAuth:
    """Credentials for the remote. ``repr`` never shows the token."""

    token: str | None = field(default=None, repr=False)
    username: str = "x-access-token"
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None

    def secrets(self) -> list[str]:
        """Every string that must never appear in output (the token and its header form)."""
        if not self.token:
            return []
        return [self.token, self._basic()]

    def _basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def env(self) -> dict[str, str]:
        """Environment for a git child process: the token as an HTTP header, the SSH key."""
        env: dict[str, str] = {}
        if self.token:
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {self._basic()}"})
        if self.ssh_key_file is not None:
            command = ["ssh", "-i", str(self.ssh_key_file), "-o", "IdentitiesOnly=yes",
                       "-o", "BatchMode=yes"]
            if self.known_hosts_file is not None:
                command += ["-o", f"UserKnownHostsFile={self.known_hosts_file}",
                            "-o", "StrictHostKeyChecking=yes"]
            else:
                command += ["-o", "StrictHostKeyChecking=accept-new"]
            env["GIT_SSH_COMMAND"] = shlex.join(command)
        return env


def load_auth(token_file: Path | None = None, ssh_key_file: Path | None = None,
              known_hosts_file: Path | None = None, username: str | None = None,
              environ: Mapping[str, str] | None = None, key_dir: Path | None = None) -> GitAuth:
    """Credentials: ``--git-token-file`` or ``$PORTSIDE_GIT_TOKEN``; ``--ssh-key-file`` or the key
    itself in ``$PORTSIDE_GIT_SSH_KEY`` (ssh needs a file: it goes to ``key_dir``, mode 0600)."""
    environ = os.environ if environ is None else environ
    token: str | None = None
    if token_file is not None:
        token = read_secret_file("--git-token-file", token_file).decode()
    elif environ.get(TOKEN_ENV, "").strip():
        token = environ[TOKEN_ENV].strip()
    for flag, path in (("--ssh-key-file", ssh_key_file), ("--ssh-known-hosts", known_hosts_file)):
        if path is not None and not path.is_file():
            raise UsageError(f"{flag} {path}: no such file")
    key_text = environ.get(SSH_KEY_ENV, "").strip()
    if ssh_key_file is None and key_text:
        if key_dir is None:
            raise UsageError(f"${SSH_KEY_ENV} is set but there is no directory to put the key in")
        ssh_key_file = _private_file(key_dir / "ssh" / "id", key_text + "\n")
    return GitAuth(token=token, username=username or "x-access-token",
                   ssh_key_file=ssh_key_file, known_hosts_file=known_hosts_file)


def _private_file(path: Path, text: str) -> Path:
    """Write ``text`` readable by us alone (ssh refuses a key others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return path


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:tok@host/r`` -> (``https://host/r``, ``tok``, ``user``).

    A password in the URL is taken out and used as a token, so the URL that is stored on disk and
    logged carries no secret. ``ssh://git@host`` keeps its user (it is not a secret).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.password is None and parts.username is None):
        return url, None, None
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if parts.password is None:  # https://TOKEN@host: GitHub's token-as-user form
        return clean, parts.username, None
    return clean, parts.password, parts.username


@dataclass(frozen=True)
class SignaturePolicy:
    """Commit signature verification: SSH (allowed signers file) and/or GPG (a GNUPGHOME)."""

    allowed_signers: Path | None = None
    gpg_home: Path | None = None

    def git_config(self) -> list[str]:
        args: list[str] = []
        if self.allowed_signers is not None:
            args += ["-c", f"gpg.ssh.allowedSignersFile={self.allowed_signers}"]
        return args

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.gpg_home)} if self.gpg_home is not None else {}


class GitSource:
    """A remote repository, fetched shallowly into ``cache_dir``; see :class:`Source`."""

    def __init__(self, url: str, *, ref: str | None = None, path: str = "", cache_dir: Path,
                 auth: GitAuth | None = None, verify: SignaturePolicy | None = None,
                 depth: int = 1, fetch_timeout: float = FETCH_TIMEOUT) -> None:
        if shutil.which("git") is None:
            raise UsageError("a git source needs the git program, which is not installed "
                             "(on Debian: apt-get install git)")
        clean_url, url_token, url_user = split_credentials(url)
        auth = auth or GitAuth()
        if url_token and not auth.token:
            auth = GitAuth(url_token, url_user or auth.username, auth.ssh_key_file, auth.known_hosts_file)
        self.url = clean_url
        self.ref = parse_ref(ref)
        self.subpath = _clean_subpath(path)
        self.auth = auth
        self.verify = verify
        self.depth = depth
        self.fetch_timeout = fetch_timeout
        self._secrets = auth.secrets() + ([url_token] if url_token else [])
        key = hashlib.sha256(clean_url.encode()).hexdigest()[:16]
        self.home = cache_dir / "git" / key
        self._repo_dir = self.home / "repo.git"
        self._trees = self.home / "trees"
        self._repo: git.Repo | None = None
        self._verified: set[str] = set()

    def secrets(self) -> list[str]:
        """What must never appear in output: the token, in every form it is sent."""
        return list(self._secrets)

    def describe(self) -> str:
        ref = self.ref.name or "HEAD"
        sub = f" path {self.subpath}" if self.subpath else ""
        return f"git {self.url} ref {ref}{sub}"

    # -- public API ---------------------------------------------------------------------------------

    def sync(self) -> Checkout:
        with self._locked():
            repo = self._open()
            sha = self._fetch(repo)
            self._check_signature(repo, sha)
            return self._materialize(repo, sha)

    def checkout(self, revision: str) -> Checkout:
        with self._locked():
            repo = self._open()
            return self._materialize(repo, revision)

    # -- steps ----------------------------------------------------------------------------------------

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        self.home.mkdir(parents=True, exist_ok=True)
        if (self._repo_dir / "HEAD").exists():
            repo = git.Repo(self._repo_dir)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="repo.", dir=self.home))
            repo = git.Repo.init(tmp, bare=True)
            repo.git.remote("add", "origin", self.url)
            tmp.rename(self._repo_dir)
            repo = git.Repo(self._repo_dir)
        if repo.git.remote("get-url", "origin") != self.url:
            repo.git.remote("set-url", "origin", self.url)
        self._repo = repo
        return repo

    def _fetch(self, repo: git.Repo) -> str:
        if self.ref.kind == "commit" and self._has_commit(repo, self.ref.name):
            return self.ref.name  # a pinned commit never changes; no need to ask the remote
        if self.ref.kind == "name":
            self.ref = self._resolve_name(repo, self.ref.name)
        depth = [f"--depth={self.depth}"] if self.depth > 0 else []
        target = self.ref.refspec() if self.ref.kind == "commit" else f"+{self.ref.refspec()}:{LOCAL_REF}"
        self._git(repo, "fetch", "--no-tags", *depth, "origin", target)
        if self.ref.kind == "commit":
            if not self._has_commit(repo, self.ref.name):
                raise SourceError(f"{self.describe()}: the remote did not send commit {self.ref.name}")
            return self.ref.name
        return self._git(repo, "rev-parse", f"{LOCAL_REF}^{{commit}}").strip()

    def _resolve_name(self, repo: git.Repo, name: str) -> GitRef:
        out = self._git(repo, "ls-remote", "origin", f"refs/heads/{name}", f"refs/tags/{name}")
        refs = {line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line}
        if f"refs/heads/{name}" in refs:
            return GitRef("branch", name)
        if f"refs/tags/{name}" in refs:
            return GitRef("tag", name)
        raise SourceError(f"{self.describe()}: the remote has no branch or tag named {name!r}")

    def _has_commit(self, repo: git.Repo, sha: str) -> bool:
        try:
            repo.git.cat_file("-e", f"{sha}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def _check_signature(self, repo: git.Repo, sha: str) -> None:
        if self.verify is None or sha in self._verified:
            return
        try:
            repo.git.execute(["git", *self.verify.git_config(), "verify-commit", sha],
                             env={**self._base_env(), **self.verify.env()},
                             kill_after_timeout=self.fetch_timeout)
        except git.GitCommandError as exc:
            detail = _last_line(redact(str(exc.stderr or ""), self._secrets)) or "no valid signature"
            raise SignatureError(f"commit {sha} is not signed by an allowed key ({detail}); "
                                 "refusing to apply it") from None
        self._verified.add(sha)

    def _materialize(self, repo: git.Repo, sha: str) -> Checkout:
        tree = self._trees / sha
        if not tree.is_dir():
            if not self._has_commit(repo, sha):
                raise SourceError(f"{self.describe()}: revision {sha} is no longer in the cache")
            self._trees.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.", dir=self._trees))
            try:
                self._export(repo, sha, tmp)
                tmp.rename(tree)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._prune(keep=tree)
        root = tree / self.subpath if self.subpath else tree
        if not root.is_dir():
            raise ConfigError([Diagnostic(self.subpath, 1, 1,
                                          f"--path {self.subpath!r} is not a directory in revision {sha}")])
        return Checkout(sha, root)

    def _export(self, repo: git.Repo, sha: str, destination: Path) -> None:
        """Unpack revision ``sha`` into ``destination``; nothing in it may lead outside."""
        # Spooled: a small repository stays in memory, a big one goes to disk, never all in RAM.
        with tempfile.SpooledTemporaryFile(max_size=ARCHIVE_IN_MEMORY, dir=str(self.home)) as archive:
            try:
                repo.archive(cast(BinaryIO, archive), sha, format="tar")
            except git.GitCommandError as exc:
                detail = _last_line(redact(str(exc.stderr or ""), self._secrets)) or "no output"
                invalid = _INVALID_PATH.search(detail)
                if invalid:  # git itself refuses to export a tree naming ../x or /x: the commit is bad
                    raise ConfigError([Diagnostic(invalid.group(1), 1, 1,
                                                  f"git refuses this path in revision {sha} ({detail}); "
                                                  "the revision is not used")]) from None
                raise SourceError(f"{self.describe()}: cannot export revision {sha}: {detail}") from None
            archive.seek(0)
            try:
                extract_tree(archive, destination)
            except tarfile.TarError as exc:
                raise SourceError(f"{self.describe()}: revision {sha} did not unpack: {exc}") from None

    def _prune(self, keep: Path) -> None:
        """Keep the newest few trees: old ones are re-exported on demand from the object store."""
        trees = sorted((p for p in self._trees.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in trees[KEEP_TREES:]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    # -- plumbing -------------------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}

    def _git(self, repo: git.Repo, *args: str) -> str:
        env = {**self._base_env(), **self.auth.env()}
        try:
            out = repo.git.execute(["git", *args], env=env, kill_after_timeout=self.fetch_timeout)
        except git.GitCommandError as exc:
            detail = _last_line(redact(str(exc.stderr or exc.stdout or ""), self._secrets))
            raise SourceError(f"{self.describe()}: git {args[0]} failed: {detail or 'no output'}") from None
        return str(out)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two processes sharing a cache directory must not fetch into one repo at once."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _clean_subpath(path: str) -> str:
    if not path or path in (".", "/"):
        return ""
    pure = PurePosixPath(path.strip("/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise UsageError(f"--path {path!r} must be a relative path inside the repository")
    return str(pure)


def _last_line(text: str) -> str:
    """The line of git's stderr that says what went wrong (gitpython wraps it in ``stderr: '...'``)."""
    text = text.strip()
    if text.startswith("stderr:"):
        text = text.removeprefix("stderr:").strip().strip("'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or [""])[-1]
