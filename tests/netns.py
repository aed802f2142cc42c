"""Network-namespace topologies for speaker tests and the bench: real kernels, no host traffic.

One "lan" namespace holds a bridge; every member (node or client) is a namespace whose ``eth0``
is a veth whose other end is a bridge port. Addresses are in 10.77.0.0/24 and fd77::/64, only
inside the namespaces. Names carry a random run id, so parallel runs never collide, and
``Topology`` always deletes what it created (namespaces and the processes started in them).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.speaker.packets import (
    ARP_OP_REQUEST,
    BROADCAST_MAC,
    ETH_P_ARP,
    ArpPacket,
    encode_arp,
    ethernet,
    mac_to_bytes,
)

REPO = Path(__file__).resolve().parent.parent
SUBNET = "10.77.0"
SUBNET6 = "fd77:"
CLONE_NEWNET = 0x40000000

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Member:
    """A namespace on the LAN: a node or a client."""

    def __init__(self, topology: Topology, name: str, index: int) -> None:
        self.topology = topology
        self.name = name
        self.netns = f"{topology.prefix}-{name}"
        self.index = index
        self.ip = f"{SUBNET}.{10 + index}"
        self.ip6 = f"{SUBNET6}:{10 + index:x}"
        self.mac = f"02:77:00:00:00:{10 + index:02x}"

    def exec(self, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def ip_cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _ip("-n", self.netns, *args, check=check)

    def spawn(self, *argv: str, log_path: Path | None = None, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        """Start a process in this namespace (``ip netns exec`` execs it: the pid is the process's)."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *prefix, *argv], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
        self.topology.processes.append(proc)
        return proc

    def socket(self, family: int, kind: int) -> socket.socket:
        """A socket created inside this namespace (usable from any thread afterwards)."""
        return self.topology.socket_in(self.netns, family, kind)

    def neighbour(self, ip: str) -> tuple[str, str] | None:
        """(MAC, state) of this member's neighbour entry for ``ip``, if it has one with a MAC."""
        out = self.ip_cmd("-j", "neigh", "show", "to", ip, "dev", "eth0").stdout
        for entry in json.loads(out or "[]"):
            if entry.get("lladdr"):
                return entry["lladdr"], ",".join(entry.get("state", []))
        return None

    def poke(self, ip: str, port: int = 9) -> None:
        """Send one UDP datagram to ``ip``: the kernel resolves its neighbour entry as for real traffic."""
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with self.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            # EAGAIN while resolution is pending is fine: the resolution is what we want.
            with contextlib.suppress(OSError):
                sock.sendto(b"portside test", (ip, port))

    def arping(self, ip: str, count: int = 3, interval: float = 0.05) -> list[str]:
        """MACs that answered ``count`` who-has for ``ip`` (one line per reply), via arping."""
        result = self.exec("arping", "-i", "eth0", "-c", str(count), "-W", str(interval), "-w", "1", "-r",
                           ip, check=False)
        return [line.strip().lower() for line in result.stdout.splitlines() if line.strip()]

    def http_get(self, path: str, port: int) -> str:
        with self.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise AssertionError(f"GET {path} in {self.netns}: {head.splitlines()[0]!r}")
        return body.decode()


class Topology:
    """A bridge and the named members (nodes first, then clients), created on ``__enter__``."""

    def __init__(self, members: list[str]) -> None:
        self.prefix = f"pst{secrets.token_hex(3)}"
        self.lan = f"{self.prefix}-lan"
        self.members = {name: Member(self, name, i) for i, name in enumerate(members)}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []

    def __getitem__(self, name: str) -> Member:
        return self.members[name]

    def __enter__(self) -> Topology:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _create(self) -> None:
        self._add_netns(self.lan)
        # No STP, no forward delay, no multicast snooping: a plain switch, forwarding at once.
        _ip("-n", self.lan, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0",
            "mcast_snooping", "0")
        _ip("-n", self.lan, "link", "set", "br0", "up")
        for member in self.members.values():
            self._add_netns(member.netns)
            port = f"p{member.index}"
            _ip("-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", member.netns)
            _ip("-n", self.lan, "link", "set", port, "master", "br0", "up")
            member.ip_cmd("link", "set", "eth0", "address", member.mac)
            member.ip_cmd("addr", "add", f"{member.ip}/24", "dev", "eth0")
            member.ip_cmd("addr", "add", f"{member.ip6}/64", "dev", "eth0", "nodad")
            member.ip_cmd("link", "set", "eth0", "up")

    def serve_on_lo(self, member: Member, ip: str) -> None:
        """Put ``ip`` on the member's ``lo`` so traffic to it is served, with ``arp_ignore=1`` so the
        kernel does not answer ARP for it (only the speaker does)."""
        member.exec("sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.eth0.arp_ignore=1")
        prefix = "128" if ":" in ip else "32"
        member.ip_cmd("addr", "add", f"{ip}/{prefix}", "dev", "lo")

    def socket_in(self, netns: str, family: int, kind: int) -> socket.socket:
        return self.run_in(netns, lambda: socket.socket(family, kind))

    def run_in(self, netns: str, create: Callable[[], T]) -> T:
        """Call ``create`` in a thread that has entered ``netns``: sockets it opens (a server's
        listening socket included) belong to that namespace for their whole life."""
        result: list[T | BaseException] = []

        def enter_and_create() -> None:
            # setns changes only this thread's namespace.
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{netns}") as handle:
                    if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {netns}")
                result.append(create())
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=enter_and_create)
        thread.start()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)
        self._created.clear()


def speaker_command(node: str, table: Path, key_file: Path | None, listen_port: int = 7473,
                    extra: tuple[str, ...] = ()) -> list[str]:
    argv = [sys.executable, "-m", "reconciler.speaker", "-v", "--node", node, "--announcements", str(table),
            "--listen", f"127.0.0.1:{listen_port}"]
    if key_file is not None:
        argv += ["--heartbeat-key-file", str(key_file)]
    return [*argv, *extra]


def status(member: Member, port: int = 7473) -> dict[str, Any] | None:
    """The speaker's /status in ``member``, or None while it is not serving yet."""
    try:
        result: dict[str, Any] = json.loads(member.http_get("/status", port))
        return result
    except (OSError, AssertionError):
        return None


def who_has(member: Member, sender_ip: str, target: str) -> bytes:
    """A broadcast ARP request from ``member`` for ``target``, as ``sender_ip`` (any sender may ask)."""
    mac = mac_to_bytes(member.mac)
    packet = ArpPacket(ARP_OP_REQUEST, mac, ipaddress.IPv4Address(sender_ip), bytes(6),
                       ipaddress.IPv4Address(target))
    return ethernet(BROADCAST_MAC, mac, ETH_P_ARP, encode_arp(packet))
