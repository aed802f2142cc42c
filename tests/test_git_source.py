"""The git source against real repositories: a bare remote on disk, pushes from a work clone."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from reconciler.common.errors import ConfigError, SignatureError, SourceError, UsageError
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


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


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
             sign_key: Path | None = None) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
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
