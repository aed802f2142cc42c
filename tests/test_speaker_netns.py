"""The speaker against real kernels: a bridge, node namespaces and a client namespace.

The clients are the kernel's own neighbour table (``ip neigh``, filled by sending real traffic)
and ``arping``. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Member, Topology, needs_root, speaker_command, status, wait_for

from reconciler.planning.announcement_table import (
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    NodeInfo,
    encode_table,
    table_to_configmap_data,
)
from reconciler.speaker.heartbeat import Heartbeat, encode_heartbeat
from tests.fakes.kube_api import FakeKube

pytestmark = [pytest.mark.netns, needs_root, pytest.mark.timeout(60)]

KEY = b"netns-test-heartbeat-key-0123456789"
VIP = "10.77.0.100"


NOBODY = 65534  # the speaker's user and group in least_privilege_prefix()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The speakers' files, in a directory of their own that the unprivileged speaker can read.

    Not in ``tmp_path``: pytest keeps its temporary tree root-only (0700), where a speaker running
    as nobody could not reach its table or heartbeat key. The key is readable by its owner (root,
    for speakers running as root without CAP_DAC_OVERRIDE) and by nobody's group, as a Secret
    mounted for the speaker's group would be, and by no one else. The logs are kept in
    ``tmp_path`` afterwards, for a failure to be read.
    """
    work = Path(tempfile.mkdtemp(prefix="portside-netns-"))
    try:
        os.chown(work, 0, NOBODY)
        work.chmod(0o750)
        (work / "table").mkdir(mode=0o755)
        key = work / "key"
        key.touch(mode=0o600)
        os.chown(key, 0, NOBODY)
        key.chmod(0o440)
        key.write_bytes(KEY + b"\n")
        yield work
    finally:
        for log in work.glob("*.log"):
            shutil.copy(log, tmp_path / log.name)
        shutil.rmtree(work, ignore_errors=True)


def write_table(workdir: Path, topology: Topology, announcements: list[Announcement], generation: int = 1,
                nodes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    path = workdir / "table" / "announcements.json"
    table = AnnouncementTable(generation, f"rev{generation}", DEFAULT_HEARTBEAT,
                              {n: NodeInfo(topology[n].ip) for n in nodes if n in topology.members},
                              tuple(announcements))
    temporary = path.with_suffix(".tmp")
    temporary.write_text(encode_table(table))
    temporary.rename(path)  # atomic, as the reconciler writes it
    return path


def start(topology: Topology, node: str, workdir: Path,
          prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    table = workdir / "table" / "announcements.json"
    return topology[node].spawn(*speaker_command(node, table, workdir / "key"), prefix=prefix,
                                log_path=workdir / f"speaker-{node}.log")


def announcing(member: Member) -> list[str] | None:
    current = status(member)
    return None if current is None else current["announcing"]


def wait_announcing(member: Member, expected: list[str], timeout: float = 10) -> None:
    wait_for(lambda: announcing(member) == sorted(expected), timeout, f"{member.name} to announce {expected}")


def wait_heard(member: Member, peers: list[str]) -> None:
    """Wait until ``member`` has heard a heartbeat from each of ``peers`` and counts them alive (its
    startup grace also counts unheard peers as alive, which is not the same)."""
    def heard() -> bool:
        current = status(member)
        if current is None or not all(current["peers"].get(p) for p in peers):
            return False
        metrics = member.http_get("/metrics", 7473)
        return all(f'portside_speaker_heartbeats_received_total{{node="{p}"}}' in metrics for p in peers)

    wait_for(heard, 10, f"{member.name} to hear {peers}")


def resolved_mac(client: Member, ip: str) -> str | None:
    entry = client.neighbour(ip)
    return None if entry is None else entry[0]


def wait_resolved(client: Member, ip: str, mac: str, timeout: float = 5) -> float:
    """Send traffic until the client's kernel resolves ``ip`` to ``mac``; return how long it took."""
    started = time.monotonic()

    def resolved() -> bool:
        if resolved_mac(client, ip) == mac:
            return True
        client.poke(ip)
        return False

    wait_for(resolved, timeout, f"{client.name} to resolve {ip} to {mac} (now {client.neighbour(ip)})",
             interval=0.02)
    return time.monotonic() - started


def wait_neighbour_moves(client: Member, ip: str, mac: str, timeout: float = 5) -> float:
    """Without sending anything, wait for the client's entry to point at ``mac`` (a gratuitous ARP)."""
    started = time.monotonic()
    wait_for(lambda: resolved_mac(client, ip) == mac, timeout,
             f"{client.name}'s entry for {ip} to move to {mac}", interval=0.005)
    return time.monotonic() - started


def least_privilege_prefix() -> tuple[tuple[str, ...], str]:
    """setpriv arguments to run the speaker with CAP_NET_RAW only: as nobody where the interpreter and
    its packages are readable by nobody, else (a root-only Python install) as uid 0 without any
    other capability."""
    caps = ("--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw", "--bounding-set=-all,+net_raw")
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *caps)
    probe = subprocess.run([*nobody, sys.executable, "-c", "import reconciler.speaker.daemon, watchfiles"],
                           capture_output=True, cwd=Path(__file__).resolve().parent.parent)
    if probe.returncode == 0:
        return nobody, "nobody"
    return ("setpriv", *caps), "root uid without capabilities other than CAP_NET_RAW"


@pytest.fixture
def three_nodes() -> Iterator[Topology]:
    with Topology(["a", "b", "c", "client"]) as topology:
        yield topology


@needs_root
def test_elected_node_answers_and_everyone_else_is_silent(three_nodes: Topology, workdir: Path) -> None:
    t = three_nodes
    a, b = t["a"], t["b"]
    # On a, interfaces that "every usable interface" must leave out: a bridge port (its bridge brx
    # answers instead), a NOARP link, a link that is down.
    a.ip_cmd("link", "add", "brx", "type", "bridge")
    a.ip_cmd("link", "add", "port0", "type", "veth", "peer", "name", "noarp0")
    a.ip_cmd("link", "set", "port0", "master", "brx")
    a.ip_cmd("link", "set", "noarp0", "arp", "off")
    a.ip_cmd("link", "add", "down0", "type", "veth", "peer", "name", "down1")
    for name in ["brx", "port0", "noarp0"]:
        a.ip_cmd("link", "set", name, "up")
    # On b, a second LAN interface side0 that the next announcement is limited to.
    b.ip_cmd("link", "add", "side0", "type", "veth", "peer", "name", "side1")
    b.ip_cmd("link", "set", "side0", "up")
    write_table(workdir, t, [
        Announcement(VIP, "default/web", (), ("a", "b", "c")),
        # b is elected for .101 but only on side0: its LAN interface must stay silent.
        Announcement("10.77.0.101", "default/internal", ("side0",), ("b", "a", "c")),
        Announcement("fd77::100", "default/web6", (), ("c", "a", "b")),
    ])
    t.serve_on_lo(t["a"], VIP)
    prefix, mode = least_privilege_prefix()
    print(f"speaker a runs as {mode}")
    start(t, "a", workdir, prefix=prefix)
    for node in "bc":
        start(t, node, workdir)
    wait_announcing(t["a"], [VIP])
    wait_announcing(t["b"], ["10.77.0.101"])
    wait_announcing(t["c"], ["fd77::100"])
    assert status(a)["interfaces"] == ["brx", "eth0"]
    assert status(b)["interfaces"] == ["eth0", "side0"]  # side1 is down
    client = t["client"]

    assert set(client.arping(VIP)) == {t["a"].mac}, f"only a answers (a runs as {mode})"
    wait_resolved(client, VIP, t["a"].mac)
    # The kernel is not answering for the VIP on a's lo (arp_ignore=1), yet traffic is served.
    listener = t["a"].socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.bind((VIP, 8080))
        listener.listen()
        with client.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
            connection.settimeout(3)
            connection.connect((VIP, 8080))
            accepted, peer = listener.accept()
            accepted.close()
        assert peer[0] == client.ip

    assert client.arping("10.77.0.101") == [], "an interface not selected stays silent"
    assert client.arping("10.77.0.102") == [], "an IP not in the table gets no answer"
    wait_resolved(client, "fd77::100", t["c"].mac)

    metrics = t["a"].http_get("/metrics", 7473)
    assert f'portside_speaker_replies_sent_total{{ip="{VIP}",protocol="arp"}}' in metrics
    assert f'portside_speaker_announced{{ip="{VIP}",service="default/web"}} 1' in metrics
    assert t["a"].http_get("/healthz", 7473) == "ok\n"
    b_metrics = t["b"].http_get("/metrics", 7473)
    # b answers 10.77.0.101 on side0 only, so its eth0 filter lets no request through: the kernel
    # dropped the who-has for it (and every other frame) before the speaker could count any.
    for line in ("requests_received_total{", "frames_ignored_total{", "replies_sent_total{"):
        assert "portside_speaker_" + line not in b_metrics
    # The speakers never put an announced IP on an interface.
    for node in "bc":
        assert "10.77.0.10" not in t[node].ip_cmd("-br", "addr").stdout.replace(t[node].ip, "")


@needs_root
def test_kill_9_then_graceful_stop_move_the_clients_entry(three_nodes: Topology, workdir: Path) -> None:
    t = three_nodes
    vip6 = "fd77::100"
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b", "c")),
                             Announcement(vip6, "default/web", (), ("a", "b", "c"))])
    speakers = {node: start(t, node, workdir) for node in "abc"}
    wait_announcing(t["a"], [VIP, vip6])
    for node, peers in [("a", ["b", "c"]), ("b", ["a", "c"]), ("c", ["a", "b"])]:
        wait_heard(t[node], peers)
    client = t["client"]
    wait_resolved(client, VIP, t["a"].mac)
    wait_resolved(client, vip6, t["a"].mac)

    killed_at = time.monotonic()
    speakers["a"].send_signal(signal.SIGKILL)
    wait_neighbour_moves(client, VIP, t["b"].mac)
    crash_failover = time.monotonic() - killed_at
    # IPv6: b's unsolicited Neighbor Advertisement (Override set) moves the client's entry too.
    wait_neighbour_moves(client, vip6, t["b"].mac)
    wait_announcing(t["c"], [])

    stopped_at = time.monotonic()
    speakers["b"].send_signal(signal.SIGTERM)
    wait_neighbour_moves(client, VIP, t["c"].mac)
    graceful_failover = time.monotonic() - stopped_at
    assert speakers["b"].wait(timeout=5) == 0
    print(f"failover: kill -9 {crash_failover * 1000:.0f} ms, graceful {graceful_failover * 1000:.0f} ms")
    assert crash_failover < 2.0
    assert graceful_failover < crash_failover
    assert set(client.arping(VIP)) == {t["c"].mac}, "the stopped speaker answers no more"


@pytest.fixture
def two_nodes() -> Iterator[Topology]:
    with Topology(["a", "b", "client"]) as topology:
        yield topology


@needs_root
def test_partition_then_heal_ends_with_one_answerer(two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b"))], nodes=("a", "b"))
    for node in "ab":
        start(t, node, workdir)
    wait_announcing(t["a"], [VIP])
    wait_heard(t["b"], ["a"])
    client = t["client"]
    wait_resolved(client, VIP, t["a"].mac)

    # Cut the heartbeats (a and b cannot reach each other), not the client's link.
    t["a"].ip_cmd("route", "add", "blackhole", f"{t['b'].ip}/32")
    t["b"].ip_cmd("route", "add", "blackhole", f"{t['a'].ip}/32")
    wait_announcing(t["b"], [VIP])
    assert set(client.arping(VIP, count=5)) == {t["a"].mac, t["b"].mac}, "both sides answer in a partition"

    t["a"].ip_cmd("route", "del", "blackhole", f"{t['b'].ip}/32")
    t["b"].ip_cmd("route", "del", "blackhole", f"{t['a'].ip}/32")
    healed_at = time.monotonic()
    wait_announcing(t["b"], [], timeout=DEFAULT_HEARTBEAT.dead_after_ms / 1000 + 2)
    one_answerer = time.monotonic() - healed_at
    assert status(t["a"])["announcing"] == [VIP]
    # a announces again when it hears b back, so a client that followed b comes back to a.
    wait_neighbour_moves(client, VIP, t["a"].mac, timeout=5)
    assert set(client.arping(VIP, count=5)) == {t["a"].mac}
    print(f"one answerer {one_answerer * 1000:.0f} ms after the partition healed (status polling included)")


@needs_root
def test_new_table_moves_an_ip_and_a_bad_one_changes_nothing(two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    other = "10.77.0.101"
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b")),
                             Announcement(other, "default/api", (), ("a", "b"))], nodes=("a", "b"))
    for node in "ab":
        start(t, node, workdir)
    wait_announcing(t["a"], [VIP, other])
    client = t["client"]
    wait_resolved(client, VIP, t["a"].mac)

    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("b", "a")),
                             Announcement(other, "default/api", (), ("a", "b"))],
                generation=2, nodes=("a", "b"))
    wait_neighbour_moves(client, VIP, t["b"].mac)
    wait_announcing(t["a"], [other])
    wait_announcing(t["b"], [VIP])
    assert set(client.arping(VIP)) == {t["b"].mac}
    assert set(client.arping(other)) == {t["a"].mac}, "an IP that did not change is still answered"
    metrics = t["a"].http_get("/metrics", 7473)
    assert f'portside_speaker_gratuitous_sent_total{{ip="{other}",protocol="arp"}}' in metrics

    table = workdir / "table" / "announcements.json"
    table.write_text('{"generation": 3, "revision": "broken"')
    wait_for(lambda: "portside_speaker_table_errors_total 1" in t["a"].http_get("/metrics", 7473), 5,
             "a to reject the broken table")
    assert status(t["a"])["generation"] == 2
    assert set(client.arping(other)) == {t["a"].mac}, "the last good table keeps running"


def _forged_heartbeats() -> list[bytes]:
    beat = Heartbeat("a", boot=b"\x07" * 8, counter=10**9, sent_at_ms=time.time_ns() // 1_000_000, generation=1)
    signed_with_wrong_key = encode_heartbeat(beat, b"not-the-shared-key-at-all")
    unsigned = signed_with_wrong_key[:-32]
    # Signed with the real key but from an earlier run of a, made for an earlier run of b:
    # what a replay of a captured heartbeat looks like.
    replayed = encode_heartbeat(Heartbeat("a", b"\x01" * 8, 5, b"old b ti", 3, 1), KEY)
    stranger = encode_heartbeat(Heartbeat("mallory", b"\x01" * 8, 1), KEY)
    tampered = bytearray(encode_heartbeat(beat, KEY))
    tampered[-40] ^= 0xFF
    return [signed_with_wrong_key, unsigned, replayed, stranger, bytes(tampered)]


@needs_root
def test_forged_heartbeats_change_nothing(two_nodes: Topology, workdir: Path) -> None:
    t = two_nodes
    write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a", "b"))], nodes=("a", "b"))
    speakers = {node: start(t, node, workdir) for node in "ab"}
    wait_announcing(t["a"], [VIP])
    wait_heard(t["b"], ["a"])
    speakers["a"].send_signal(signal.SIGKILL)
    wait_announcing(t["b"], [VIP])
    client = t["client"]
    wait_resolved(client, VIP, t["b"].mac)

    # The attacker (on the client) tries to make dead a look alive, so b would stop answering.
    forged = _forged_heartbeats()
    with client.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        deadline = time.monotonic() + 3 * DEFAULT_HEARTBEAT.dead_after_ms / 1000
        sent = 0
        while time.monotonic() < deadline:
            for datagram in forged:
                sock.sendto(datagram, (t["b"].ip, DEFAULT_HEARTBEAT.port))
                sent += 1
            assert announcing(t["b"]) == [VIP]
    assert sent >= 10
    assert status(t["b"])["peers"] == {"a": False}
    assert resolved_mac(client, VIP) == t["b"].mac
    metrics = t["b"].http_get("/metrics", 7473)
    for reason in ["bad_signature", "unsigned", "other_boot", "unknown_node"]:
        assert f'portside_speaker_heartbeats_dropped_total{{reason="{reason}"}}' in metrics, reason


@needs_root
def test_links_are_followed_without_a_restart(workdir: Path) -> None:
    with Topology(["a", "client"]) as t:
        a, client = t["a"], t["client"]
        write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a",))], nodes=("a",))
        start(t, "a", workdir)
        wait_announcing(a, [VIP])
        wait_resolved(client, VIP, a.mac)

        # A new interface appears and comes up: answered on at once.
        a.ip_cmd("link", "add", "new0", "type", "veth", "peer", "name", "new1")
        a.ip_cmd("link", "set", "new0", "up")
        wait_for(lambda: (status(a) or {}).get("interfaces") == ["eth0", "new0"], 5, "a to open new0")

        # The LAN interface goes down and up: the speaker closes and reopens its sockets.
        a.ip_cmd("link", "set", "eth0", "down")
        wait_for(lambda: (status(a) or {}).get("interfaces") == ["new0"], 5, "a to drop eth0")
        a.ip_cmd("link", "set", "eth0", "up")
        wait_for(lambda: (status(a) or {}).get("interfaces") == ["eth0", "new0"], 5, "a to reopen eth0")
        assert set(client.arping(VIP)) == {a.mac}

        # A new MAC: the speaker announces it, and the client follows without asking.
        new_mac = "02:77:00:00:00:99"
        a.ip_cmd("link", "set", "eth0", "address", new_mac)
        wait_neighbour_moves(client, VIP, new_mac)
        assert set(client.arping(VIP)) == {new_mac}


@needs_root
@pytest.mark.kube
@pytest.mark.fake("the API server must listen inside a network namespace: only the fake can")
def test_table_from_the_configmap_end_to_end(workdir: Path) -> None:
    with Topology(["a", "client"]) as t:
        a, client = t["a"], t["client"]
        # The fake API server listens on a's own loopback (its socket is created inside a's
        # namespace), where the speaker's official client reaches it.
        kube = t.run_in(a.netns, lambda: FakeKube().start())
        try:
            kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")

            def publish(generation: int, ips: list[str]) -> None:
                table = AnnouncementTable(generation, f"rev{generation}", DEFAULT_HEARTBEAT,
                                          {"a": NodeInfo(a.ip)},
                                          tuple(Announcement(ip, "default/web", (), ("a",)) for ip in ips))
                data, binary = table_to_configmap_data(table)
                kube.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "portside-announcements", "namespace": "portside-system"},
                                 "data": data, "binaryData": binary})

            publish(1, [VIP])
            argv = [sys.executable, "-m", "reconciler", "-v", "speaker", "--node", "a", "--kubeconfig",
                    str(kubeconfig), "--listen", "127.0.0.1:7473", "--heartbeat-key-file", str(workdir / "key")]
            a.spawn(*argv, log_path=workdir / "speaker-a.log")
            wait_announcing(a, [VIP], timeout=20)
            assert set(client.arping(VIP)) == {a.mac}
            publish(2, ["10.77.0.101"])
            wait_announcing(a, ["10.77.0.101"])
            assert client.arping(VIP) == []
            assert set(client.arping("10.77.0.101")) == {a.mac}
        finally:
            kube.stop()


@needs_root
def test_without_cap_net_raw_the_speaker_says_so_and_exits(workdir: Path) -> None:
    with Topology(["a"]) as t:
        write_table(workdir, t, [Announcement(VIP, "default/web", (), ("a",))], nodes=("a",))
        no_caps = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")
        table = workdir / "table" / "announcements.json"
        result = t["a"].exec(*no_caps, *speaker_command("a", table, workdir / "key"), check=False)
        assert result.returncode == 1, result.stderr
        assert "the speaker needs CAP_NET_RAW" in result.stderr
        assert KEY.decode() not in result.stderr + result.stdout
