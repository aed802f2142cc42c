"""Peer liveness on real kernels, against the accidents and attacks heartbeats must survive.

A clock stepped back between two runs of a node, replays of a dead node's captured heartbeats,
a flood of forged heartbeats, and clocks that disagree: in network namespaces, with real
speakers, the kernel's sockets and arping. Wall clocks are shifted per process (the speaker is
started through a wrapper that moves ``time.time``), the one thing a namespace cannot do.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Topology, needs_root, speaker_command, status, wait_for
from test_speaker_netns import KEY, VIP, announcing, wait_announcing, wait_heard, write_table
from udp_flood import write_datagrams

from reconciler.planning.announcement_table import DEFAULT_HEARTBEAT, Announcement
from reconciler.speaker.heartbeat import Heartbeat, encode_heartbeat

pytestmark = [pytest.mark.netns, needs_root, pytest.mark.timeout(90)]

DEAD_AFTER_S = DEFAULT_HEARTBEAT.dead_after_ms / 1000
PORT = DEFAULT_HEARTBEAT.port
# Time for a status poll through a namespace and a loop turn on a busy 2-core machine.
SLACK_S = 1.0

# Runs a module with the process's wall clock moved by argv[1] seconds (monotonic time untouched):
# what a node whose clock was stepped, or is simply wrong, looks like.
SHIFTED_CLOCK = """
import runpy, sys, time
offset_ns = int(float(sys.argv.pop(1)) * 1e9)
real_ns = time.time_ns
time.time_ns = lambda: real_ns() + offset_ns
time.time = lambda: (real_ns() + offset_ns) / 1e9
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "table").mkdir()
    key = tmp_path / "key"
    key.write_bytes(KEY + b"\n")
    key.chmod(0o600)
    return tmp_path


@pytest.fixture
def two_nodes() -> Iterator[Topology]:
    with Topology(["a", "b", "client"]) as topology:
        yield topology


def start(topology: Topology, node: str, workdir: Path, clock_offset_s: float = 0.0) -> subprocess.Popen[bytes]:
    argv = speaker_command(node, workdir / "table" / "announcements.json", workdir / "key")
    if clock_offset_s:
        assert argv[1:3] == ["-m", "reconciler.speaker"]
        argv = [argv[0], "-c", SHIFTED_CLOCK, str(clock_offset_s), "reconciler.speaker", *argv[3:]]
    return topology[node].spawn(*argv, log_path=workdir / f"speaker-{node}.log")


def has_table(topology: Topology, node: str) -> bool:
    current = status(topology[node])
    return current is not None and current["generation"] is not None


def settled_pair(t: Topology, workdir: Path) -> dict[str, subprocess.Popen[bytes]]:
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b"))], nodes=("a", "b"))
    speakers = {node: start(t, node, workdir) for node in "ab"}
    wait_announcing(t["a"], [VIP])
    wait_heard(t["a"], ["b"])
    wait_heard(t["b"], ["a"])
    return speakers


@needs_root
def test_a_node_restarted_with_its_clock_stepped_back_is_heard_again(two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    speakers = settled_pair(t, workdir)
    speakers["a"].send_signal(signal.SIGKILL)
    speakers["a"].wait(timeout=5)
    wait_announcing(t["b"], [VIP])

    # A power cut, and a's clock comes back an hour behind (fake-hwclock, no RTC).
    start(t, "a", workdir, clock_offset_s=-3600)
    wait_for(lambda: has_table(t, "a"), 15, "a to start again")
    started = time.monotonic()
    wait_announcing(t["b"], [], timeout=DEAD_AFTER_S + SLACK_S)
    print(f"b heard the restarted a and stopped announcing {(time.monotonic() - started) * 1000:.0f} ms "
          "after a had its table")
    wait_announcing(t["a"], [VIP])
    assert status(t["b"])["peers"] == {"a": True}
    assert set(t["client"].arping(VIP, count=5)) == {t["a"].mac}, "one answerer, not two"


@needs_root
def test_a_restarted_lower_ranked_node_hears_the_owner_within_its_grace(two_nodes: Topology, workdir: Path) -> None:
    """The handshake (learn the other's boot, answer it) fits in the startup grace of one dead_after:
    a restarted b never grabs the IP a still owns."""
    t = two_nodes
    speakers = settled_pair(t, workdir)
    log = workdir / "speaker-b.log"
    before = len(log.read_text())  # b may have announced at first, if it started before a
    for _ in range(3):
        speakers["b"].send_signal(signal.SIGKILL)
        speakers["b"].wait(timeout=5)
        speakers["b"] = start(t, "b", workdir)
        wait_heard(t["b"], ["a"])
    assert "announcing 10.77.0.100" not in log.read_text()[before:]
    assert status(t["a"])["announcing"] == [VIP]


def capture_heartbeats(t: Topology, sender: str, receiver: str, seconds: float) -> list[tuple[float, bytes]]:
    """The heartbeat datagrams ``sender`` sends ``receiver`` for ``seconds``, as a sniffer on the
    receiver's link sees them: (offset from the first, UDP payload)."""
    eth_p_ip = 0x0800
    sniffer = t.run_in(t[receiver].netns,
                       lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_ip)))
    captured: list[tuple[float, bytes]] = []
    with sniffer:
        sniffer.bind(("eth0", eth_p_ip))
        sniffer.settimeout(0.1)
        source = socket.inet_aton(t[sender].ip)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                frame = sniffer.recv(2048)
            except TimeoutError:
                continue
            ip = frame[14:]
            header_len = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_UDP or ip[12:16] != source:
                continue
            _, destination_port = struct.unpack("!HH", ip[header_len:header_len + 4])
            if destination_port == PORT:
                captured.append((time.monotonic(), ip[header_len + 8:]))
    first = captured[0][0] if captured else 0.0
    return [(at - first, payload) for at, payload in captured]


class Replayer:
    """Sends captured datagrams again at their original pace, over and over, from ``sender``'s own
    address and port (the dead node's), until stopped."""

    def __init__(self, t: Topology, sender: str, receiver: str, captured: list[tuple[float, bytes]]) -> None:
        self.sock = t[sender].socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((t[sender].ip, PORT))
        self.target = (t[receiver].ip, PORT)
        self.captured = captured
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Replayer:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            for offset, payload in self.captured:
                # Pacing the replay like the original is the point: wait until its moment comes.
                if self.done.wait(max(0.0, began + offset - time.monotonic())):
                    return
                self.sock.sendto(payload, self.target)
                self.sent += 1

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


@needs_root
def test_replayed_heartbeats_of_a_dead_node_do_not_hold_off_a_restarted_peer(
        two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    speakers = settled_pair(t, workdir)
    captured = capture_heartbeats(t, "a", "b", 8.0)
    assert len(captured) > 8.0 / (DEFAULT_HEARTBEAT.interval_ms / 1000) / 2, "the capture holds a's heartbeats"
    for node in "ab":  # a dies; b restarts, knowing nothing of a
        speakers[node].send_signal(signal.SIGKILL)
        speakers[node].wait(timeout=5)

    replayer = Replayer(t, "a", "b", captured).start()
    try:
        start(t, "b", workdir)
        wait_for(lambda: has_table(t, "b"), 15, "b to start again")
        started = time.monotonic()
        # b's startup grace (one dead_after), then at most one more dead_after of delay.
        wait_announcing(t["b"], [VIP], timeout=2 * DEAD_AFTER_S + SLACK_S)
        took = time.monotonic() - started
        taken_over_at = replayer.sent
        # Until every captured heartbeat has been replayed once more, b keeps announcing.
        deadline = time.monotonic() + 30
        samples = 0
        while replayer.sent < taken_over_at + len(captured) and time.monotonic() < deadline:
            assert announcing(t["b"]) == [VIP], "a replay made b believe a alive again"
            samples += 1
        assert replayer.sent >= taken_over_at + len(captured) and samples > 10
        print(f"b took over {took * 1000:.0f} ms after it had its table, with a's captured heartbeats "
              f"replayed to it from its start ({replayer.sent} sent)")
    finally:
        replayer.stop()
    metrics = t["b"].http_get("/metrics", 7473)
    refused = re.search(r'portside_speaker_heartbeats_dropped_total\{reason="other_boot"\} (\d+)', metrics)
    assert refused and int(refused.group(1)) > 10, "the replays reached b and were refused"
    assert 'portside_speaker_heartbeats_received_total{node="a"}' not in metrics


FLOOD_RATE = 200_000  # datagrams per second, as in the report that made this test
FLOOD_SECONDS = 8.0


def forged_flood(impersonated: str, count: int = 256) -> list[bytes]:
    """Well-formed heartbeats of ``impersonated`` signed without the key, every one with a new boot
    and counter (so none can be refused as a replay without checking its signature)."""
    key = b"the forger does not have the key"
    return [encode_heartbeat(Heartbeat(impersonated, os.urandom(8), 10**6 + i, os.urandom(8), i + 1, 1, 0), key)
            for i in range(count)]


@needs_root
def test_a_flood_of_forged_heartbeats_never_makes_a_live_peer_look_dead(
        two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    settled_pair(t, workdir)
    flood_file = workdir / "flood"
    write_datagrams(flood_file, forged_flood("a"))
    # Paced, and sent 256 datagrams per system call, so the flooder leaves the speakers CPU on a
    # 2-core machine (a real flood comes from another machine's CPU).
    flooder = t["client"].spawn(sys.executable, str(Path(__file__).parent / "udp_flood.py"), t["b"].ip, str(PORT),
                                str(FLOOD_SECONDS), str(FLOOD_RATE), str(flood_file),
                                log_path=workdir / "flood.log")
    samples: list[tuple[bool, list[str], list[str]]] = []
    answerers: set[str] = set()
    while flooder.poll() is None:
        b, a = status(t["b"]), status(t["a"])
        if b is not None and a is not None:
            samples.append((b["peers"]["a"], b["announcing"], a["announcing"]))
        if len(samples) % 10 == 0:
            answerers |= set(t["client"].arping(VIP, count=2, interval=0.02))
    sent = re.search(r"sent (\d+)", (workdir / "flood.log").read_text())
    per_second = int(sent.group(1)) / FLOOD_SECONDS if sent else 0
    metrics = t["b"].http_get("/metrics", 7473)
    checked = re.search(r'portside_speaker_heartbeats_dropped_total\{reason="bad_signature"\} (\d+)', metrics)
    print(f"flood: {per_second:.0f} forged heartbeats/s at b; b checked {checked.group(1) if checked else 0} "
          f"signatures; {len(samples)} status samples")
    assert per_second > FLOOD_RATE / 4, "the flood was too weak to test anything"
    assert checked, "the forgeries reached b"
    assert len(samples) > 20
    dead = [s for s in samples if not s[0]]
    assert not dead, f"b thought a dead in {len(dead)} of {len(samples)} samples"
    assert all(s[1] == [] and s[2] == [VIP] for s in samples), "exactly one node announced throughout"
    assert answerers == {t["a"].mac}


@needs_root
def test_clock_offsets_show_in_status_by_node_and_change_nothing(two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b"))], nodes=("a", "b"))
    start(t, "a", workdir, clock_offset_s=45)  # a's clock is 45 s ahead
    start(t, "b", workdir)
    wait_heard(t["b"], ["a"])
    wait_heard(t["a"], ["b"])
    wait_announcing(t["a"], [VIP])
    wait_announcing(t["b"], [])

    seen_by_b = status(t["b"])["heartbeats"]["a"]
    seen_by_a = status(t["a"])["heartbeats"]["b"]
    assert seen_by_b["alive"] and seen_by_a["alive"]
    assert abs(seen_by_b["clockOffsetMs"] - 45_000) < 1000, seen_by_b
    assert abs(seen_by_a["clockOffsetMs"] + 45_000) < 1000, seen_by_a
    wait_for(lambda: "the clock of peer a is +45" in (workdir / "speaker-b.log").read_text(), 5,
             "b to log a's clock offset")
    assert "the clock of peer b is -45" in (workdir / "speaker-a.log").read_text()
    metrics = t["b"].http_get("/metrics", 7473)
    gauge = re.search(r'portside_speaker_peer_clock_offset_seconds\{node="a"\} (\S+)', metrics)
    assert gauge and abs(float(gauge.group(1)) - 45) < 1
