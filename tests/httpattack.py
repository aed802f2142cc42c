"""Raw-socket HTTP clients for the attack tests and bench/bench_http_attacks.py.

Each one does what a hostile or broken client does to a port: framing a library client would
refuse to send, bodies streamed without end, requests that never finish. Loopback (or a test
network namespace) only; every loop is bounded in bytes and time.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

Connect = Callable[[], socket.socket]  # a connected socket to the server under test


def tcp(host: str, port: int, timeout: float = 5.0) -> Connect:
    def connect() -> socket.socket:
        return socket.create_connection((host, port), timeout=timeout)

    return connect


def exchange(connect: Connect, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes or ``timeout`` passes; what came back."""
    with connect() as sock:
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            sock.sendall(data)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:  # reset after the answer: the server refused to read the rest
                break
            if not chunk:
                break
            chunks.append(chunk)
            if _complete(b"".join(chunks)):
                break
        return b"".join(chunks)


def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(reply: bytes) -> int:
    """The status code of a raw reply (0 when there was none)."""
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and reply.startswith(b"HTTP/1.") else 0


def get(connect: Connect, path: str, timeout: float = 5.0) -> tuple[int, float]:
    """(status, seconds) of one ``GET path`` on a new connection."""
    started = time.monotonic()
    reply = exchange(connect, f"GET {path} HTTP/1.1\r\nHost: portside\r\nConnection: close\r\n\r\n".encode(),
                     timeout)
    return status_of(reply), time.monotonic() - started


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every few milliseconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stream_body(connect: Connect, head: bytes, total: int, chunked: bool = False,
                chunk_size: int = 1 << 16, timeout: float = 60.0) -> tuple[int, bytes]:
    """Send ``head`` then up to ``total`` body bytes as fast as the server takes them, stopping
    when it answers or hangs up. (bytes the server accepted, its reply)."""
    payload = b"x" * chunk_size
    frame = f"{chunk_size:x}\r\n".encode() + payload + b"\r\n" if chunked else payload
    sent = 0
    reply = b""
    deadline = time.monotonic() + timeout
    with connect() as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while sent < total and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
                if _complete(reply):
                    break
            try:
                sent += sock.send(frame)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # the server closed: it will not read more
                break
        sock.settimeout(2.0)
        with contextlib.suppress(OSError):
            while not _complete(reply) and (data := sock.recv(65536)):
                reply += data
    return sent, reply


class Slowloris:
    """``count`` connections that each send the start of a request and never finish it.

    ``trickle`` sends one more header byte on each open connection every ``trickle`` seconds
    (an idle timeout alone does not close those); ``open_count()`` is how many the server has not
    closed yet (a closed one reads as EOF or a reset)."""

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: portside\r\nX-Slow: "

    def __init__(self, connect: Connect, count: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = connect()
            sock.sendall(self.HEAD)
            sock.setblocking(False)
            self.sockets.append(sock)
        self._closed: set[int] = set()

    def trickle(self) -> None:
        for i, sock in enumerate(self.sockets):
            if i not in self._closed:
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    def open_count(self) -> int:
        for i, sock in enumerate(self.sockets):
            if i in self._closed:
                continue
            try:
                if sock.recv(4096) == b"":
                    self._closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                self._closed.add(i)
        return len(self.sockets) - len(self._closed)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def __enter__(self) -> Slowloris:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the servers under attack, as separate processes --------------------------------------------

FD_LIMIT = 1024  # the descriptor limit the attacks were run against


def limit_descriptors() -> None:
    """preexec_fn: the child gets the common soft and hard limit of 1024 descriptors."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class Process:
    """A server process whose output lines are collected (to find its port and any traceback)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, prefix: tuple[str, ...] = ()) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen([*prefix, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env, cwd=cwd, preexec_fn=limit_descriptors)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._reader.join(timeout=5)


def start_portside_run(workdir: Path, env: dict[str, str], secret: bytes) -> tuple[Process, int]:
    """`portside run` on a small directory source and a local state dir, on an ephemeral port."""
    source = workdir / "repo"
    source.mkdir(parents=True, exist_ok=True)
    (source / "pool.yaml").write_text(
        "apiVersion: portside.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: lan}\n"
        "spec: {addresses: [192.0.2.0/28]}\n")
    (workdir / "secret").write_bytes(secret + b"\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("KUBECONFIG", "CLOUDFLARE_API_TOKEN", "KUBERNETES_SERVICE_HOST")}
    argv = [sys.executable, "-m", "reconciler", "run", "--source", str(source), "--state", str(workdir / "state"),
            "--listen", "127.0.0.1:0", "--webhook-secret-file", str(workdir / "secret"),
            "--cache-dir", str(workdir / "cache")]
    process = Process(argv, {**clean, "HOME": str(workdir), **env}, REPO)
    port = int(process.wait_for_line(r"on port (\d+)").group(1))
    return process, port



def start_speaker(member: Any, workdir: Path, env: dict[str, str]) -> tuple[Process, Connect]:
    """`portside speaker` for node ``member`` (a tests.netns Member) alone on its LAN, serving
    HTTP on the namespace's loopback; the Connect opens sockets inside that namespace."""
    from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, AnnouncementTable, NodeInfo, encode_table

    (workdir / "key").write_bytes(b"http-attack-heartbeat-key-0123456789\n")
    table = workdir / "announcements.json"
    table.write_text(encode_table(AnnouncementTable(1, "rev1", DEFAULT_HEARTBEAT,
                                                    {member.name: NodeInfo(member.ip)}, ())))
    argv = [sys.executable, "-m", "reconciler.speaker", "-v", "--node", member.name, "--announcements", str(table),
            "--listen", "127.0.0.1:7473", "--heartbeat-key-file", str(workdir / "key")]
    process = Process(argv, {**os.environ, **env}, REPO, prefix=("ip", "netns", "exec", member.netns))
    port = int(process.wait_for_line(r"\(port (\d+)\)").group(1))

    def connect() -> socket.socket:
        sock: socket.socket = member.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        sock.connect(("127.0.0.1", port))
        return sock

    return process, connect
