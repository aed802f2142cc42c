"""The git source against real repositories: a bare remote on disk, pushes from a work clone."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from reconciler.common.errors import ConfigError, SignatureError, SourceError, UsageError
from reconciler.source.archive import extract_tree
from reconciler.source.git import (
    GitAuth,
    GitRef,
    GitSource,
    SignaturePolicy,
    load_auth,
    parse_ref,
    redact,
    split_credentials,
)


def sh(*args: str, cwd: Path, input: str | None = None, input_bytes: bytes | None = None) -> str:
    data = input.encode() if input is not None else input_bytes
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, input=data).stdout.decode().strip()


class Remote:
    """A bare repository and a clone to push from."""

    def __init__(self, tmp: Path) -> None:
        self.bare = tmp / "remote.git"
        self.work = tmp / "work"
        sh("git", "init", "-q", "--bare", "-b", "main", str(self.bare), cwd=tmp)
        sh("git", "init", "-q", "-b", "main", str(self.work), cwd=tmp)
        for key, value in (("user.email", "dev@example.org"), ("user.name", "dev"),
                           ("commit.gpgsign", "false")):
            sh("git", "config", key, value, cwd=self.work)
        sh("git", "remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def push(self, files: dict[str, str], *, message: str = "change", branch: str = "main",
             sign_key: Path | None = None, symlinks: dict[str, str] | None = None) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for name, target in (symlinks or {}).items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        sh("git", "add", "-A", cwd=self.work)
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign_key}"] if sign_key else []
        sh("git", *sign, "commit", "-q", "--allow-empty", *(["-S"] if sign_key else []), "-m", message,
           cwd=self.work)
        sh("git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return sh("git", "rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def test_follows_a_branch_and_hands_out_immutable_checkouts(remote: Remote, tmp_path: Path) -> None:
    first = remote.push({"pools.yaml": "one\n"})
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    checkout = source.sync()
    assert checkout.revision == first
    assert (checkout.root / "pools.yaml").read_text() == "one\n"

    second = remote.push({"pools.yaml": "two\n"})
    newer = source.sync()
    assert newer.revision == second
    assert (newer.root / "pools.yaml").read_text() == "two\n"
    assert (checkout.root / "pools.yaml").read_text() == "one\n"  # the old checkout did not change
    assert source.sync() == newer  # nothing new: the same checkout


def test_the_fetch_is_shallow(remote: Remote, tmp_path: Path) -> None:
    for n in range(3):
        remote.push({"a.yaml": f"{n}\n"})
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    source.sync()
    repo = source.home / "repo.git"
    assert (repo / "shallow").exists()
    assert sh("git", "rev-list", "--count", "refs/portside/head", cwd=repo) == "1"


def test_branch_tag_commit_and_subpath(remote: Remote, tmp_path: Path) -> None:
    first = remote.push({"env/prod/a.yaml": "v1\n", "other.yaml": "x\n"})
    sh("git", "tag", "v1", cwd=remote.work)
    sh("git", "push", "-q", "origin", "v1", cwd=remote.work)
    dev = remote.push({"env/prod/a.yaml": "dev\n"}, branch="dev")
    remote.push({"env/prod/a.yaml": "v2\n"})

    tagged = GitSource(remote.url, ref="v1", path="env/prod", cache_dir=tmp_path / "c1").sync()
    assert tagged.revision == first
    assert sorted(p.name for p in tagged.root.iterdir()) == ["a.yaml"]
    assert (tagged.root / "a.yaml").read_text() == "v1\n"

    assert GitSource(remote.url, ref="dev", cache_dir=tmp_path / "c2").sync().revision == dev
    assert GitSource(remote.url, ref="refs/heads/dev", cache_dir=tmp_path / "c3").sync().revision == dev
    pinned = GitSource(remote.url, ref=first, path="env/prod/", cache_dir=tmp_path / "c4")
    assert pinned.sync().revision == first
    shutil.rmtree(remote.bare)  # a pinned commit already in the cache needs no remote
    assert pinned.sync().revision == first


def test_missing_ref_and_missing_subpath_say_what(remote: Remote, tmp_path: Path) -> None:
    sha = remote.push({"a.yaml": "x\n"})
    with pytest.raises(SourceError, match="no branch or tag named 'nope'"):
        GitSource(remote.url, ref="nope", cache_dir=tmp_path / "c1").sync()
    with pytest.raises(ConfigError, match=f"'deploy' is not a directory in revision {sha}"):
        GitSource(remote.url, path="deploy", cache_dir=tmp_path / "c2").sync()
    with pytest.raises(UsageError, match="relative path"):
        GitSource(remote.url, path="../etc", cache_dir=tmp_path / "c3")


def test_a_dead_remote_is_temporary_and_old_revisions_stay_available(remote: Remote, tmp_path: Path) -> None:
    first = remote.push({"a.yaml": "1\n"})
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    source.sync()
    remote.push({"a.yaml": "2\n"})
    source.sync()
    shutil.rmtree(remote.bare)
    with pytest.raises(SourceError) as caught:
        source.sync()
    assert caught.value.temporary
    assert "git fetch failed" in str(caught.value)
    shutil.rmtree(source.home / "trees")  # the last good revision is exported again from the cache
    assert (source.checkout(first).root / "a.yaml").read_text() == "1\n"


def test_credentials_never_reach_disk_or_messages(tmp_path: Path) -> None:
    token = "ghp_s3cr3tT0kenValue"
    url = f"https://user:{token}@127.0.0.1:9/org/repo.git"  # port 9: nothing listens, fails at once
    source = GitSource(url, cache_dir=tmp_path / "cache", fetch_timeout=10)
    with pytest.raises(SourceError) as caught:
        source.sync()
    message = str(caught.value)
    assert token not in message and "127.0.0.1:9/org/repo.git" in message
    config = (source.home / "repo.git" / "config").read_text()
    assert token not in config and "user:" not in config
    assert token not in repr(source.auth)
    assert source.auth.token == token
    header_env = source.auth.env()["GIT_CONFIG_VALUE_0"]
    assert header_env.startswith("Authorization: Basic ") and token not in header_env


@pytest.mark.parametrize(("url", "clean", "token"), [
    ("https://u:tok@host/r.git", "https://host/r.git", "tok"),
    ("https://tok@host:8443/r.git", "https://host:8443/r.git", "tok"),
    ("https://host/r.git", "https://host/r.git", None),
    ("ssh://git@host/r.git", "ssh://git@host/r.git", None),
    ("file:///srv/r.git", "file:///srv/r.git", None),
])
def test_split_credentials(url: str, clean: str, token: str | None) -> None:
    assert split_credentials(url)[:2] == (clean, token)


def test_redact() -> None:
    auth = GitAuth(token="abc123")
    text = f"fatal: https://x:abc123@h/r and header {auth.secrets()[1]} and https://other:pw@h2/"
    out = redact(text, auth.secrets())
    assert "abc123" not in out and auth.secrets()[1] not in out and "pw@" not in out
    assert "https://***@h2/" in out


def test_load_auth(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_auth(token_file, environ={"PORTSIDE_GIT_TOKEN": "env"}).token == "from-file"
    assert load_auth(environ={"PORTSIDE_GIT_TOKEN": "env"}).token == "env"
    assert load_auth(environ={}).token is None
    with pytest.raises(UsageError, match="cannot read"):
        load_auth(tmp_path / "missing", environ={})
    key = tmp_path / "id"
    key.write_text("k")
    env = load_auth(ssh_key_file=key, environ={}).env()
    assert f"-i {key}" in env["GIT_SSH_COMMAND"] and "BatchMode=yes" in env["GIT_SSH_COMMAND"]
    from_env = load_auth(environ={"PORTSIDE_GIT_SSH_KEY": "-----BEGIN KEY-----"}, key_dir=tmp_path / "c")
    assert from_env.ssh_key_file is not None
    assert from_env.ssh_key_file.read_text() == "-----BEGIN KEY-----\n"
    assert from_env.ssh_key_file.stat().st_mode & 0o077 == 0, "only we may read the key"
    assert "BEGIN KEY" not in from_env.env()["GIT_SSH_COMMAND"]


@pytest.mark.parametrize(("text", "ref"), [
    (None, GitRef("head")),
    ("main", GitRef("name", "main")),
    ("refs/heads/x", GitRef("branch", "x")),
    ("refs/tags/v1", GitRef("tag", "v1")),
    ("a" * 40, GitRef("commit", "a" * 40)),
])
def test_parse_ref(text: str | None, ref: GitRef) -> None:
    assert parse_ref(text) == ref


def test_parse_ref_refuses_options() -> None:
    with pytest.raises(UsageError):
        parse_ref("--upload-pack=evil")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (apt openssh-client)")
def test_signature_verification_refuses_unverified_commits(remote: Remote, tmp_path: Path) -> None:
    key = tmp_path / "signing"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"dev@example.org {(tmp_path / 'signing.pub').read_text()}")
    policy = SignaturePolicy(allowed_signers=allowed)
    source = GitSource(remote.url, cache_dir=tmp_path / "cache", verify=policy)

    good = remote.push({"a.yaml": "1\n"}, sign_key=key)
    assert source.sync().revision == good

    unsigned = remote.push({"a.yaml": "2\n"})
    with pytest.raises(SignatureError, match=f"commit {unsigned} is not signed by an allowed key"):
        source.sync()
    foreign = remote.push({"a.yaml": "3\n"}, sign_key=stranger)
    with pytest.raises(SignatureError) as caught:
        source.sync()
    assert not caught.value.temporary
    assert foreign in str(caught.value)

    again = remote.push({"a.yaml": "4\n"}, sign_key=key)
    assert source.sync().revision == again


class _GitHTTP(http.server.BaseHTTPRequestHandler):
    """Smart HTTP through `git http-backend` (CGI), behind HTTP Basic auth with one token."""

    project_root: Path
    expected: str
    seen_auth: list[str]

    def _serve(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen_auth.append(auth)
        if auth != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.project_root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ["PATH"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
        self.send_response(int(headers.pop("Status", "200").split()[0]))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_https_token_reaches_the_server_only_as_a_header(remote: Remote, tmp_path: Path) -> None:
    sha = remote.push({"a.yaml": "1\n"})
    token = "tok-3f9a7c1e2b"
    seen: list[str] = []
    auth = GitAuth(token=token)
    handler = type("Handler", (_GitHTTP,), {"project_root": remote.bare.parent, "seen_auth": seen,
                                            "expected": f"Basic {auth.secrets()[1]}"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/remote.git"
        source = GitSource(url, cache_dir=tmp_path / "cache", auth=auth)
        assert source.sync().revision == sha
        assert seen and all(s == f"Basic {auth.secrets()[1]}" for s in seen), "every request carried it"
        stored = (source.home / "repo.git" / "config").read_text()
        assert token not in stored and auth.secrets()[1] not in stored

        wrong = GitSource(url, cache_dir=tmp_path / "other", auth=GitAuth(token="wrong-token-value"))
        with pytest.raises(SourceError) as caught:
            wrong.sync()
        assert "wrong-token-value" not in str(caught.value)
        assert GitAuth(token="wrong-token-value").secrets()[1] not in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()


# -- unpacking a revision: nothing may write or point outside the tree ------------------------------


def test_symlinks_inside_the_repository_are_kept(remote: Remote, tmp_path: Path) -> None:
    remote.push({"shared/pools.yaml": "pools\n", "env/prod/a.yaml": "a\n"},
                symlinks={"env/prod/pools.yaml": "../../shared/pools.yaml", "env/staging": "prod",
                          "dangling.yaml": "nowhere.yaml"})
    checkout = GitSource(remote.url, cache_dir=tmp_path / "cache").sync()
    assert (checkout.root / "env/prod/pools.yaml").read_text() == "pools\n"
    assert (checkout.root / "env/staging/a.yaml").read_text() == "a\n"
    assert (checkout.root / "dangling.yaml").is_symlink()


@pytest.mark.parametrize(("links", "member", "why"), [
    ({"pools.yaml": "/etc/passwd"}, "pools.yaml", "symbolic link to the absolute path '/etc/passwd'"),
    ({"env/pools.yaml": "../../secret.yaml"}, "env/pools.yaml", "leads outside the repository"),
    # Each link stays inside on its own; together, here -> . and up -> here/.. lead to the parent.
    ({"here": ".", "up": "here/.."}, "up", "symbolic link to 'here/..', which leads outside"),
])
def test_a_symlink_leading_outside_refuses_the_revision(remote: Remote, tmp_path: Path,
                                                       links: dict[str, str], member: str, why: str) -> None:
    (tmp_path / "secret.yaml").write_text("outside\n")
    good = remote.push({"a.yaml": "good\n"})
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    assert source.sync().revision == good
    bad = remote.push({}, symlinks=links)
    with pytest.raises(ConfigError) as caught:
        source.sync()
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.file == member and why in diagnostic.message, diagnostic
    assert "the revision is not used" in diagnostic.message
    assert not (source.home / "trees" / bad).exists()
    assert [p.name for p in (source.home / "trees").iterdir()] == [good], "no half-made tree is left"
    assert (source.checkout(good).root / "a.yaml").read_text() == "good\n"


def test_a_tree_naming_a_path_git_refuses_is_a_bad_revision(remote: Remote, tmp_path: Path) -> None:
    """A hostile remote can store a tree entry named ``..``: git archive refuses it, and so do we."""
    good = remote.push({"a.yaml": "good\n"})
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    source.sync()
    blob = sh("git", "hash-object", "-w", "--stdin", cwd=remote.work, input="evil\n")
    entries = (b"100644 a.yaml\0" + bytes.fromhex(sh("git", "rev-parse", "HEAD:a.yaml", cwd=remote.work))
               + b"100644 ..\0" + bytes.fromhex(blob))
    tree = sh("git", "hash-object", "--literally", "-t", "tree", "-w", "--stdin", cwd=remote.work,
              input_bytes=entries)
    commit = sh("git", "commit-tree", tree, "-p", good, "-m", "hostile", cwd=remote.work)
    sh("git", "push", "-q", "origin", f"{commit}:refs/heads/main", cwd=remote.work)
    with pytest.raises(ConfigError) as caught:
        source.sync()
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.file == ".." and "git refuses this path" in diagnostic.message, diagnostic
    assert not (tmp_path / "evil").exists()


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_extract_tree_unpacks_files_directories_and_links(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    extract_tree(_tar((_member("d", tarfile.DIRTYPE, mode=0o777), b""),
                      (_member("d/a.yaml"), b"a\n"),
                      (_member("./run.sh", mode=0o4755), b"#!/bin/sh\n"),
                      (_member("d/copy.yaml", tarfile.LNKTYPE, link="d/a.yaml"), b""),
                      (_member("link.yaml", tarfile.SYMTYPE, link="d/a.yaml"), b"")), out)
    assert (out / "d/a.yaml").read_text() == (out / "d/copy.yaml").read_text() == "a\n"
    assert (out / "link.yaml").read_text() == "a\n"
    assert (out / "run.sh").stat().st_mode & 0o7777 == 0o755 & ~_umask(), "no setuid from an archive"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("members", "where", "why"), [
    ([(_member("../evil.yaml"), b"x")], "../evil.yaml", "'..' in its path"),
    ([(_member("d/../../evil.yaml"), b"x")], "d/../../evil.yaml", "'..' in its path"),
    ([(_member("/tmp/evil.yaml"), b"x")], "/tmp/evil.yaml", "absolute path"),
    ([(_member("ln", tarfile.LNKTYPE, link="../evil.yaml"), b"")], "ln", "'..' in its path"),
    ([(_member("ln", tarfile.LNKTYPE, link="/etc/passwd"), b"")], "ln", "absolute path"),
    ([(_member("ln", tarfile.LNKTYPE, link="missing.yaml"), b"")], "ln", "not a file of this revision"),
    ([(_member("s", tarfile.SYMTYPE, link="/etc"), b"")], "s", "absolute path '/etc'"),
    ([(_member("s", tarfile.SYMTYPE, link="a/../.."), b"")], "s", "leads outside"),
    ([(_member("s", tarfile.SYMTYPE, link="."), b""), (_member("s/t", tarfile.SYMTYPE, link=".."), b"")],
     "s/t", "below a symbolic link"),
    ([(_member("dev", tarfile.CHRTYPE), b"")], "dev", "character device"),
    ([(_member("dev", tarfile.BLKTYPE), b"")], "dev", "block device"),
    ([(_member("fifo", tarfile.FIFOTYPE), b"")], "fifo", "FIFO"),
    ([(_member("a.yaml"), b"1"), (_member("a.yaml"), b"2")], "a.yaml", "appears twice"),
])
def test_extract_tree_refuses_what_could_escape(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]],
                                                where: str, why: str) -> None:
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        extract_tree(_tar(*members), out)
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.file == where and why in diagnostic.message, diagnostic
    outside = [p for p in tmp_path.rglob("*") if p not in (out, out.parent) and out not in p.parents]
    assert outside == [], "nothing is written outside"


def test_without_git_installed_run_says_so_and_a_directory_still_works(tmp_path: Path) -> None:
    """A fresh machine may lack git: GitPython must not take `portside run` down at import."""
    no_git = tmp_path / "bin"
    no_git.mkdir()
    repo = Path(__file__).resolve().parent.parent
    env = {"PATH": str(no_git), "HOME": str(tmp_path), "PYTHONPATH": str(repo)}

    def run(source: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", "run", "--once", "--source", source,
                               "--state", str(tmp_path / "state")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    git_run = run("file:///nowhere/repo.git")
    assert git_run.returncode == 1, git_run.stderr
    assert "needs the git program, which is not installed" in git_run.stderr
    assert "Traceback" not in git_run.stderr
    directory_run = run(str(repo / "example-repo"))
    assert directory_run.returncode == 0, directory_run.stderr
    assert (tmp_path / "state" / "state.json").exists()
