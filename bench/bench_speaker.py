"""The speaker on real kernels (network namespaces; needs root): failover and ARP latency, as JSON.

    sudo python bench/bench_speaker.py [--trials 10] [--rate 2000] [--load-seconds 5] [--only arp-flood]
    sudo python bench/bench_speaker.py --only arp-latency|arp-flood|failover --compare DIR [--repeats 4]

With ``--compare DIR`` (another checkout, e.g. ``git archive main | tar -x -C DIR``) the speakers
of DIR ("before") and of this checkout ("this") run in turn in the same namespaces, in ABBA
order over ``--repeats`` turns, so both see the same machine; every figure is reported for both,
with the 1-minute load average of each turn (the machine may be shared).

Topology: a bridge, three node namespaces (a, b, c) running ``portside speaker`` with the default
heartbeat settings, and a client namespace whose kernel is the client. The VIP's candidates are
a, b, c. Client sysctls are left at their defaults (``locktime`` 1 s included).

- failover_kill9_ms: from ``kill -9`` of the elected speaker (a) to the client's kernel neighbour
  entry for the VIP pointing at b's MAC, as reported by ``ip monitor neigh`` in the client
  namespace. Before each trial the client's entry is left alone for more than ``locktime``, and
  the kill comes at a random moment of a's heartbeat interval, as a crash does (b declares a
  dead ``dead_after`` after its last heartbeat: 150-200 ms after the kill with the defaults).
- failover_graceful_ms: the same for SIGTERM (the speaker sends a "leaving" heartbeat).
- arp_reply_latency_us: who-has for the VIP at ``--rate`` per second from a raw socket in the
  client namespace, and in the same run who-has for node a's own address (answered by a's
  kernel); latency from just before ``send`` to the kernel's receive timestamp of the reply.
- speaker: RSS and CPU of a's speaker, idle (heartbeats only) and under the who-has load, with
  the 3-IP table and with a 10,000-IP table.
- arp_flood: who-has at ``--arp-flood-rate`` per second for ``--arp-flood-vips`` IPs (all
  answered by a; b and c are candidates, elected for none), ``--arp-flood-runs`` times, a new
  table generation applied mid-run: CPU of a, b and c, and the runs in which any /status sample
  showed a flap (a live peer dead, b or c announcing, a not announcing everything).
- arp_reply_one_core_busy: arp_reply again with the flood's table while another process keeps
  one core busy.
- arp_latency (``--only arp-latency``): arp_reply with the flood's table, idle and with one core
  busy, ``--repeats`` times per speaker tree; per tree the percentiles of every reply pooled.
- under_forged_flood: while the client namespace floods b with well-formed heartbeats of a signed
  without the key (``--flood-rate`` per second): how many of b's /status samples showed the live
  a as dead (the goal: none), b's CPU, and failover_kill9_ms again, with the flood going on.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from netns import Member, Topology, speaker_command, status, wait_for, who_has  # noqa: E402
from udp_flood import write_datagrams  # noqa: E402

from reconciler.planning.announcement_table import (  # noqa: E402
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    NodeInfo,
    encode_table,
    rank_candidates,
)
from reconciler.speaker.daemon import GARP_REPEATS_S  # noqa: E402
from reconciler.speaker.heartbeat import Heartbeat, encode_heartbeat  # noqa: E402
from reconciler.speaker.packets import (  # noqa: E402
    ARP_OP_REPLY,
    ETH_P_ARP,
    ArpPacket,
    decode_arp,
    mac_to_bytes,
)

VIP = "10.77.0.100"
KEY = b"bench-heartbeat-key-0123456789abcdef"
SO_TIMESTAMPNS = 35
LOCKTIME_S = 1.0  # the client's default neighbour locktime


class NeighMonitor:
    """``ip monitor neigh`` in the client namespace; every line with the monotonic time it arrived."""

    def __init__(self, client: Member) -> None:
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.proc = subprocess.Popen(["ip", "-n", client.netns, "monitor", "neigh"], stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        client.topology.processes.append(self.proc)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def clear(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()

    def wait(self, ip: str, mac: str, timeout: float) -> float:
        """The time the client's entry for ``ip`` got ``mac``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the client's entry for {ip} did not move to {mac}")
            try:
                at, line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.startswith(f"{ip} ") and f"lladdr {mac}" in line:
                return at


class Cluster:
    def __init__(self, topology: Topology, workdir: Path, count: int) -> None:
        self.t = topology
        self.workdir = workdir
        self.speaker_root: Path | None = None  # run the speakers of another checkout (None: this one)
        self.prefix: tuple[str, ...] = ()  # e.g. setpriv, to run the speakers without a capability
        self.table_path = workdir / "table" / "announcements.json"
        self.table_path.parent.mkdir()
        (workdir / "key").write_bytes(KEY)
        self.speakers: dict[str, subprocess.Popen[bytes]] = {}
        self.write_table(count)

    def write_table(self, count: int, generation: int | None = None, all_on_a: bool = False) -> list[str]:
        """VIP and ``count - 1`` filler IPs, spread over the nodes (or all with a first); the IPs."""
        nodes = {n: NodeInfo(self.t[n].ip) for n in "abc"}
        announcements = [Announcement(VIP, "bench/web", (), ("a", "b", "c"))]
        for i in range(count - 1):  # filler IPs in another range (asked for only by the ARP flood)
            ip = f"10.78.{i // 250}.{i % 250 + 1}"
            candidates = ("a", "b", "c") if all_on_a else rank_candidates(nodes, ip)
            announcements.append(Announcement(ip, f"bench/svc-{i}", (), candidates))
        table = AnnouncementTable(generation or count, "bench", DEFAULT_HEARTBEAT, nodes, tuple(announcements))
        temporary = self.table_path.with_suffix(".tmp")
        temporary.write_text(encode_table(table))
        temporary.rename(self.table_path)
        return [a.ip for a in announcements]

    def start(self, node: str) -> None:
        argv = speaker_command(node, self.table_path, self.workdir / "key")
        env = None
        if self.speaker_root is not None:
            # -P: the working directory (this checkout) must not shadow the other one on sys.path.
            argv = [argv[0], "-P", *argv[1:]]
            env = {"PYTHONPATH": str(self.speaker_root)}
        self.speakers[node] = self.t[node].spawn(*argv, log_path=self.workdir / f"speaker-{node}.log", env=env,
                                                 prefix=self.prefix)

    def restart_all(self, root: Path | None) -> None:
        """Stop every speaker and start them again from ``root`` (None: this checkout)."""
        for proc in self.speakers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
        self.speaker_root = root
        for node in "abc":
            self.start(node)

    def all_on_a(self, generation: int, vips: int) -> bool:
        """Every speaker runs ``generation`` and hears every other; a announces all ``vips``, b and c none."""
        states = [status(self.t[n]) for n in "abc"]
        if not all(s is not None and s["generation"] == generation and all(s["peers"].values()) for s in states):
            return False
        a, b, c = states
        assert a is not None and b is not None and c is not None
        return len(a["announcing"]) == vips and not b["announcing"] and not c["announcing"]

    def settled(self) -> bool:
        """a announces the VIP, b and c do not, and everyone hears everyone."""
        states = {n: status(self.t[n]) for n in "abc"}
        if any(s is None for s in states.values()):
            return False
        return (VIP in states["a"]["announcing"] and all(VIP not in states[n]["announcing"] for n in "bc")
                and all(all(s["peers"].values()) and len(s["peers"]) == 2 for s in states.values()))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50": round(statistics.median(ordered), 1), "p90": pick(0.9),
            "p99": pick(0.99), "max": round(ordered[-1], 1), "min": round(ordered[0], 1)}


def failover_trials(cluster: Cluster, monitor: NeighMonitor, how: signal.Signals, trials: int,
                    age_s: float = LOCKTIME_S + 0.1) -> list[float]:
    """Stop a (``how``) ``age_s`` after the client's entry last moved to a; ms until it points at b."""
    t = cluster.t
    client = t["client"]
    results = []
    for _ in range(trials):
        if cluster.speakers["a"].poll() is not None:
            monitor.clear()
            cluster.start("a")
            # a takes its IP back with a gratuitous ARP when it starts.
            monitor.wait(VIP, t["a"].mac, timeout=10)
        moved_at = time.monotonic()
        wait_for(cluster.settled, 10, "a to own the VIP and every speaker to hear every other")
        if (client.neighbour(VIP) or ("",))[0] != t["a"].mac:
            client.poke(VIP)
            wait_for(lambda: (client.neighbour(VIP) or ("",))[0] == t["a"].mac, 5, "the client to resolve a")
            moved_at = time.monotonic()
        # A real crash usually comes long after the client last updated its entry (age_s past
        # locktime); the within-locktime series checks that gratuitous ARP is heeded even then.
        wait_for(lambda since=moved_at: time.monotonic() - since > age_s, 5, "the entry to age", interval=0.01)
        # a (re)started and sent its first heartbeat when it took the VIP (moved_at), and sends
        # one every interval since: without this pause every kill would come a fixed time after
        # a heartbeat (b's last heard, so the failover time, would hardly vary). A crash comes
        # at any moment of the interval: the pause is the random phase, not a wait for a condition.
        time.sleep(random.uniform(0, DEFAULT_HEARTBEAT.interval_ms / 1000))
        monitor.clear()
        started = time.monotonic()
        cluster.speakers["a"].send_signal(how)
        arrived = monitor.wait(VIP, t["b"].mac, timeout=10)
        results.append((arrived - started) * 1000)
        cluster.speakers["a"].wait(timeout=10)
    return results


def reply_latency(cluster: Cluster, rate: int, seconds: float,
                  samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """who-has for the VIP at ``rate``/s, plus one for a's own address every tenth slot.

    Each request has its own sender IP (the reply's target IP), so every reply is matched to
    its request exactly, and a lost reply is counted as lost rather than shifting the others.
    VIP requests come from 10.79.0.0/16 (the speaker answers any sender); requests to the
    kernel come from 100 on-link addresses, since a kernel answers only senders it can route to.
    """
    t = cluster.t
    client = t["client"]
    node_ip = t["a"].ip
    sock = client.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("eth0", ETH_P_ARP))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    pending: dict[tuple[str, str], int] = {}  # (target, sender IP) -> send time, ns
    latencies: dict[str, list[float]] = {VIP: [], node_ip: []}
    counts = {VIP: 0, node_ip: 0}
    stop = threading.Event()
    own_mac = mac_to_bytes(client.mac)

    def receive() -> None:
        while not stop.is_set():
            try:
                data, ancillary, _flags, _address = sock.recvmsg(256, 256)
            except TimeoutError:
                continue
            packet = decode_arp(data)
            if not (isinstance(packet, ArpPacket) and packet.op == ARP_OP_REPLY and packet.target_mac == own_mac
                    and ancillary):
                continue
            key = (str(packet.sender_ip), str(packet.target_ip))
            sent_ns = pending.pop(key, None)
            if sent_ns is not None:
                seconds_, nanos = struct.unpack("qq", ancillary[0][2][:16])
                latencies[key[0]].append((seconds_ * 1_000_000_000 + nanos - sent_ns) / 1000)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    cpu_before = _cpu_seconds(cluster.speakers["a"].pid)
    interval = 1 / rate
    begin = time.monotonic()
    next_at = begin
    slot = 0
    while next_at - begin < seconds:
        # Sleep most of the gap and spin the rest: precise pacing without starving the receiver.
        delay = next_at - time.monotonic()
        if delay > 0.0003:
            time.sleep(delay - 0.0002)
        while time.monotonic() < next_at:
            pass
        sends = [(VIP, f"10.79.{(slot >> 8) & 0xFF}.{slot & 0xFF}")]
        if slot % 10 == 0:
            sends.append((node_ip, f"10.77.0.{128 + (slot // 10) % 100}"))
        for target, sender in sends:
            frame = who_has(client, sender, target)
            pending[(target, sender)] = time.time_ns()
            sock.send(frame)
            counts[target] += 1
        slot += 1
        next_at += interval
    elapsed = time.monotonic() - begin
    cpu_used = _cpu_seconds(cluster.speakers["a"].pid) - cpu_before
    # The last replies are in flight; replies that never come are reported as unanswered.
    drain_until = time.monotonic() + 1.0
    while time.monotonic() < drain_until and any(len(latencies[ip]) < counts[ip] for ip in counts):
        time.sleep(0.01)
    stop.set()
    receiver.join()
    sock.close()
    if samples is not None:
        samples.setdefault("speaker", []).extend(latencies[VIP])
        samples.setdefault("kernel", []).extend(latencies[node_ip])
    return {
        "who_has_per_second": round(counts[VIP] / elapsed),
        "speaker_vip_us": percentiles(latencies[VIP]) | {"sent": counts[VIP], "answered": len(latencies[VIP])},
        "kernel_node_address_us": percentiles(latencies[node_ip]) | {"sent": counts[node_ip],
                                                                     "answered": len(latencies[node_ip])},
        "speaker_cpu_percent_under_load": round(100 * cpu_used / elapsed, 1),
        "load_average_1m": os.getloadavg()[0],
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def idle(cluster: Cluster, seconds: float) -> dict[str, float]:
    pid = cluster.speakers["a"].pid
    before, started = _cpu_seconds(pid), time.monotonic()
    # Measuring idle CPU means letting the speaker idle: a timed pause is the measurement itself.
    time.sleep(seconds)
    used = _cpu_seconds(pid) - before
    return {"rss_mib": _rss_mib(pid), "idle_cpu_percent": round(100 * used / (time.monotonic() - started), 2)}


def forged_flood(cluster: Cluster, rate: int, seconds: float) -> subprocess.Popen[bytes]:
    """Start flooding b with heartbeats of a that no key signed, each with a new boot and counter."""
    path = cluster.workdir / "flood"
    write_datagrams(path, [encode_heartbeat(Heartbeat("a", os.urandom(8), 10**6 + i, os.urandom(8), i + 1), b"no key")
                           for i in range(256)])
    return cluster.t["client"].spawn(sys.executable, str(ROOT / "tests" / "udp_flood.py"), cluster.t["b"].ip,
                                     str(DEFAULT_HEARTBEAT.port), str(seconds), str(rate), str(path),
                                     log_path=cluster.workdir / "flood.log")


def under_flood(cluster: Cluster, monitor: NeighMonitor, rate: int, seconds: float, trials: int) -> dict[str, Any]:
    if cluster.speakers["a"].poll() is not None:
        cluster.start("a")
    wait_for(cluster.settled, 15, "the speakers to settle")
    flooder = forged_flood(cluster, rate, seconds + 30)
    b_pid = cluster.speakers["b"].pid
    cpu_before, began = _cpu_seconds(b_pid), time.monotonic()
    samples = dead = 0
    while time.monotonic() - began < seconds:
        current = status(cluster.t["b"])
        if current is not None:
            samples += 1
            dead += not current["peers"]["a"]
        # Sampling at 20 Hz is the measurement; polling faster would mostly measure /status.
        time.sleep(0.05)
    b_cpu = 100 * (_cpu_seconds(b_pid) - cpu_before) / (time.monotonic() - began)
    kill = failover_trials(cluster, monitor, signal.SIGKILL, trials)
    flooder.send_signal(signal.SIGKILL)
    flooder.wait(timeout=10)
    return {"rate_per_second": rate, "status_samples": samples, "samples_with_live_peer_dead": dead,
            "b_cpu_percent": round(b_cpu, 1), "failover_kill9_ms": percentiles(kill)}


class CoreHog:
    """Another process keeping one core busy, as on a loaded node."""

    def __enter__(self) -> CoreHog:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def _loop_stalls_ms(cluster: Cluster) -> list[int]:
    """Every "speaker loop step ... took N ms" the speakers logged so far."""
    stalls = []
    for log in cluster.workdir.glob("speaker-*.log"):
        stalls += [int(m) for m in re.findall(r"speaker loop step \S+ took (\d+) ms", log.read_text())]
    return sorted(stalls)


def _replies_sent(member: Member) -> float:
    """ARP replies a speaker has sent so far, from its /metrics."""
    text = member.http_get("/metrics", 7473)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("portside_speaker_replies_sent_total{"))


def arp_flood(cluster: Cluster, runs: int, rate: int, seconds: float, vips: int) -> dict[str, Any]:
    """who-has at ``rate``/s for ``vips`` IPs, all answered by a (b and c are candidates for each
    but elected for none), ``runs`` times; mid-run a new table generation is applied (the table
    work that once stalled the loop). A run flaps when any /status sample shows a live peer dead,
    b or c announcing, or a not announcing every IP."""
    t = cluster.t
    generation = 100_000
    ips = cluster.write_table(vips, generation, all_on_a=True)
    for node in "abc":
        if cluster.speakers[node].poll() is not None:
            cluster.start(node)

    def applied(g: int) -> bool:
        return cluster.all_on_a(g, vips)

    wait_for(lambda: applied(generation), 30, f"the {vips}-IP table to be applied")
    frames = [who_has(t["client"], f"10.79.{i // 250}.{i % 250 + 1}", ip) for i, ip in enumerate(ips)]
    path = cluster.workdir / "who-has"
    write_datagrams(path, frames)
    stalls_before = len(_loop_stalls_ms(cluster))
    cpu: dict[str, list[float]] = {n: [] for n in "abc"}
    replies: list[float] = []
    flapped, bad_samples, samples = 0, 0, 0
    for run in range(runs):
        wait_for(lambda g=generation: applied(g), 15, "the speakers to settle between runs")
        pids = {n: cluster.speakers[n].pid for n in "abc"}
        before = {n: _cpu_seconds(pid) for n, pid in pids.items()}
        replies_before = _replies_sent(t["a"])
        flooder = t["client"].spawn(sys.executable, str(ROOT / "tests" / "udp_flood.py"), "packet:eth0", "0",
                                    str(seconds), str(rate), str(path), log_path=cluster.workdir / "arp-flood.log")
        began = time.monotonic()
        rewritten, bad = False, 0
        while flooder.poll() is None:
            if not rewritten and time.monotonic() - began > seconds / 3:
                generation += 1
                cluster.write_table(vips, generation, all_on_a=True)
                rewritten = True
            states = [status(t[n]) for n in "abc"]
            if all(s is not None for s in states):
                samples += 1
                a, b, c = states
                assert a is not None and b is not None and c is not None
                if (not all(a["peers"].values()) or not all(b["peers"].values()) or not all(c["peers"].values())
                        or len(a["announcing"]) != vips or b["announcing"] or c["announcing"]):
                    bad += 1
            # Sampling at 20 Hz is the measurement; polling faster would mostly measure /status.
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        for n, pid in pids.items():
            cpu[n].append(100 * (_cpu_seconds(pid) - before[n]) / elapsed)
        replies.append((_replies_sent(t["a"]) - replies_before) / elapsed)
        flapped += bad > 0
        bad_samples += bad
        print(f"arp flood run {run + 1}/{runs}: {bad} bad samples", file=sys.stderr, flush=True)
    stalls = _loop_stalls_ms(cluster)[stalls_before:]
    return {
        "rate_per_second": rate, "vips": vips, "runs": runs, "seconds_per_run": seconds,
        "answering_a_cpu_percent": percentiles(cpu["a"]),
        "a_replies_per_second": percentiles(replies),
        "non_elected_b_cpu_percent": percentiles(cpu["b"]),
        "non_elected_c_cpu_percent": percentiles(cpu["c"]),
        "status_samples": samples, "samples_with_a_flap": bad_samples, "runs_with_a_flap": flapped,
        "loop_stalls_logged_ms": stalls,
        "raw": {"a_cpu": cpu["a"], "b_cpu": cpu["b"], "c_cpu": cpu["c"], "replies": replies},
    }


def arp_flood_compare(cluster: Cluster, trees: dict[str, Path | None], repeats: int, runs: int, rate: int,
                      seconds: float, vips: int) -> dict[str, Any]:
    """:func:`arp_flood` for each speaker tree, ``runs`` runs each, in ``repeats`` interleaved turns."""
    parts: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    labels = list(trees)
    for repeat in range(repeats):
        for label in labels if repeat % 2 == 0 else labels[::-1]:
            cluster.restart_all(trees[label])
            share = runs // repeats + (1 if repeat < runs % repeats else 0)
            print(f"arp flood: {label}, turn {repeat + 1}/{repeats}", file=sys.stderr, flush=True)
            parts[label].append(arp_flood(cluster, share, rate, seconds, vips) | {
                "load_average_1m": os.getloadavg()[0]})
    cluster.restart_all(None)
    merged: dict[str, Any] = {}
    for label, results in parts.items():
        raw = {key: [v for r in results for v in r["raw"][key]] for key in results[0]["raw"]}
        merged[label] = {
            "tree": str(trees[label] or ROOT), "rate_per_second": rate, "vips": vips,
            "runs": sum(r["runs"] for r in results), "seconds_per_run": seconds,
            "answering_a_cpu_percent": percentiles(raw["a_cpu"]),
            "a_replies_per_second": percentiles(raw["replies"]),
            "non_elected_b_cpu_percent": percentiles(raw["b_cpu"]),
            "non_elected_c_cpu_percent": percentiles(raw["c_cpu"]),
            "status_samples": sum(r["status_samples"] for r in results),
            "samples_with_a_flap": sum(r["samples_with_a_flap"] for r in results),
            "runs_with_a_flap": sum(r["runs_with_a_flap"] for r in results),
            "loop_stalls_logged_ms": sorted(v for r in results for v in r["loop_stalls_logged_ms"]),
            "load_average_1m": [r["load_average_1m"] for r in results],
        }
    return merged


def arp_latency(cluster: Cluster, trees: dict[str, Path | None], repeats: int, rate: int, seconds: float,
                vips: int) -> dict[str, Any]:
    """ARP reply latency with the flood's table (``vips`` IPs on a), idle and with one core busy,
    for each speaker tree in turn (ABBA order, so a drift of the machine's load hits both alike).
    Per tree: each measurement, and the percentiles of all its replies pooled."""
    generation = 200_000
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {label: {"idle": [], "one_core_busy": []} for label in trees}
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {
        label: {"idle": {}, "one_core_busy": {}} for label in trees}
    labels = list(trees)
    for repeat in range(repeats):
        for label in labels if repeat % 2 == 0 else labels[::-1]:
            generation += 1
            cluster.write_table(vips, generation, all_on_a=True)
            cluster.restart_all(trees[label])
            wait_for(lambda g=generation: cluster.all_on_a(g, vips), 30, f"{label}: the {vips}-IP table applied")
            # Measure the steady state: the takeover's repeated gratuitous ARP is over first.
            settled_at = time.monotonic()
            wait_for(lambda since=settled_at: time.monotonic() - since > max(GARP_REPEATS_S) + 0.5, 10,
                     "the gratuitous ARP repeats to end", interval=0.1)
            runs[label]["idle"].append(reply_latency(cluster, rate, seconds, pooled[label]["idle"]))
            with CoreHog():
                runs[label]["one_core_busy"].append(
                    reply_latency(cluster, rate, seconds, pooled[label]["one_core_busy"]))
            print(f"arp latency {label} {repeat + 1}/{repeats}: p99 idle "
                  f"{runs[label]['idle'][-1]['speaker_vip_us']['p99']} us, one core busy "
                  f"{runs[label]['one_core_busy'][-1]['speaker_vip_us']['p99']} us", file=sys.stderr, flush=True)
    cluster.restart_all(None)
    return {label: {"tree": str(trees[label] or ROOT), "rate_per_second": rate, "seconds": seconds, "vips": vips,
                    **{case: {"pooled_speaker_vip_us": percentiles(pooled[label][case]["speaker"]),
                              "pooled_kernel_node_address_us": percentiles(pooled[label][case]["kernel"]),
                              "runs": runs[label][case]}
                       for case in ("idle", "one_core_busy")}}
            for label in trees}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--load-seconds", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--flood-rate", type=int, default=200_000, help="forged heartbeats per second (0: skip)")
    parser.add_argument("--flood-seconds", type=float, default=8.0)
    parser.add_argument("--arp-flood-runs", type=int, default=20)
    parser.add_argument("--arp-flood-rate", type=int, default=20_000, help="who-has per second")
    parser.add_argument("--arp-flood-seconds", type=float, default=3.0)
    parser.add_argument("--arp-flood-vips", type=int, default=1000)
    parser.add_argument("--only", choices=["failover", "arp-flood", "arp-latency"],
                        help="run one part: kill -9 failover, the ARP flood and the loaded reply latency, or "
                             "the reply latency alone (idle and one core busy, --repeats times)")
    parser.add_argument("--repeats", type=int, default=4, help="arp-latency: measurements per tree")
    parser.add_argument("--without-sys-nice", action="store_true",
                        help="run the speakers without CAP_SYS_NICE (as the DaemonSet with NET_RAW alone): "
                             "no real-time priority, short slices only")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="another checkout (e.g. `git archive main` unpacked) whose speakers run in turn "
                             "with this one's: failover and arp-latency report both, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_speaker needs root for network namespaces", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"heartbeat": {"interval_ms": DEFAULT_HEARTBEAT.interval_ms,
                                             "dead_after_ms": DEFAULT_HEARTBEAT.dead_after_ms},
                               "kernel": os.uname().release, "cpus": os.cpu_count()}
    with Topology(["a", "b", "c", "client"]) as topology, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(topology, Path(tmp), count=3)
        if args.without_sys_nice:
            cluster.prefix = ("setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice")
            results["speakers_without_cap_sys_nice"] = True
        monitor = NeighMonitor(topology["client"])
        for node in "abc":
            cluster.start(node)
        wait_for(cluster.settled, 15, "the speakers to settle")
        topology["client"].poke(VIP)
        wait_for(lambda: topology["client"].neighbour(VIP), 5, "the client to resolve the VIP")

        trees: dict[str, Path | None] = {"this": None}
        if args.compare is not None:
            trees = {"before": args.compare.resolve(), "this": None}
        results["load_average_at_start"] = os.getloadavg()
        if args.only == "failover":
            kills: dict[str, list[float]] = {label: [] for label in trees}
            for repeat in range(args.repeats):
                for label in list(trees) if repeat % 2 == 0 else list(trees)[::-1]:
                    cluster.restart_all(trees[label])
                    kills[label] += failover_trials(cluster, monitor, signal.SIGKILL,
                                                    max(1, args.trials // args.repeats))
            results["failover_kill9_ms"] = {label: percentiles(values) for label, values in kills.items()}
            results["load_average_at_end"] = os.getloadavg()
            print(json.dumps(results, indent=2))
            return 0
        if args.only == "arp-latency":
            results["arp_latency"] = arp_latency(cluster, trees, args.repeats, args.rate, args.load_seconds,
                                                 args.arp_flood_vips)
            results["load_average_at_end"] = os.getloadavg()
            print(json.dumps(results, indent=2))
            return 0
        if args.only == "arp-flood" and args.compare is not None:
            results["arp_flood"] = arp_flood_compare(cluster, trees, args.repeats, args.arp_flood_runs,
                                                     args.arp_flood_rate, args.arp_flood_seconds,
                                                     args.arp_flood_vips)
            results["arp_latency"] = arp_latency(cluster, trees, args.repeats, args.rate, args.load_seconds,
                                                 args.arp_flood_vips)
            results["load_average_at_end"] = os.getloadavg()
            results["goals"] = {label: {
                "no_flap_under_arp_flood": results["arp_flood"][label]["runs_with_a_flap"] == 0,
                "arp_p99_under_1ms_one_core_busy":
                    results["arp_latency"][label]["one_core_busy"]["pooled_speaker_vip_us"]["p99"] < 1000}
                for label in trees}
            print(json.dumps(results, indent=2))
            return 0
        if args.only == "arp-flood":
            results["arp_flood"] = arp_flood(cluster, args.arp_flood_runs, args.arp_flood_rate,
                                             args.arp_flood_seconds, args.arp_flood_vips)
            results["arp_flood"].pop("raw")
            with CoreHog():
                results["arp_reply_one_core_busy"] = reply_latency(cluster, args.rate, args.load_seconds)
            results["goals"] = {
                "no_flap_under_arp_flood": results["arp_flood"]["runs_with_a_flap"] == 0,
                "arp_p99_under_1ms_one_core_busy":
                    results["arp_reply_one_core_busy"]["speaker_vip_us"]["p99"] < 1000,
            }
            print(json.dumps(results, indent=2))
            return 0
        results["speaker_3_ips"] = idle(cluster, args.idle_seconds)
        results["arp_reply"] = reply_latency(cluster, args.rate, args.load_seconds)
        kill = failover_trials(cluster, monitor, signal.SIGKILL, args.trials)
        results["failover_kill9_ms"] = percentiles(kill)
        graceful = failover_trials(cluster, monitor, signal.SIGTERM, args.trials)
        results["failover_graceful_ms"] = percentiles(graceful)
        soon = failover_trials(cluster, monitor, signal.SIGKILL, max(3, args.trials // 2), age_s=0.2)
        results["failover_kill9_0.2s_after_the_entry_changed_ms"] = percentiles(soon)
        if args.flood_rate:
            results["under_forged_flood"] = under_flood(cluster, monitor, args.flood_rate, args.flood_seconds,
                                                        max(3, args.trials // 2))

        results["arp_flood"] = arp_flood(cluster, args.arp_flood_runs, args.arp_flood_rate,
                                         args.arp_flood_seconds, args.arp_flood_vips)
        results["arp_flood"].pop("raw")
        with CoreHog():
            results["arp_reply_one_core_busy"] = reply_latency(cluster, args.rate, args.load_seconds)

        # The same speaker with a 10,000-IP table (a still owns the VIP).
        if cluster.speakers["a"].poll() is not None:
            cluster.start("a")
        cluster.write_table(10_000)
        wait_for(lambda: (status(topology["a"]) or {}).get("generation") == 10_000 and cluster.settled(), 30,
                 "the 10,000-IP table to be applied")
        # Measure the steady state, not the takeover of 3,000 IPs: let the repeated gratuitous
        # ARP of the new table end first.
        applied_at = time.monotonic()
        wait_for(lambda: time.monotonic() - applied_at > max(GARP_REPEATS_S) + 1, 10,
                 "the gratuitous ARP repeats to end", interval=0.1)
        results["speaker_10000_ips"] = idle(cluster, args.idle_seconds) | {
            "announcing": len((status(topology["a"]) or {}).get("announcing", []))}
        results["arp_reply_10000_ips"] = reply_latency(cluster, args.rate, args.load_seconds / 2)
    # Issue 13's floors (with the default heartbeat: 50 ms interval, dead after 200 ms).
    results["goals"] = {
        "failover_kill9_p50_at_most_200ms": results["failover_kill9_ms"]["p50"] <= 200,
        "failover_kill9_max_under_200ms": results["failover_kill9_ms"]["max"] < 200,
        "failover_graceful_under_50ms": results["failover_graceful_ms"]["max"] < 50,
        "non_elected_cpu_under_5_percent_in_arp_flood": max(
            results["arp_flood"]["non_elected_b_cpu_percent"]["p50"],
            results["arp_flood"]["non_elected_c_cpu_percent"]["p50"]) < 5,
    }
    results["load_average_at_end"] = os.getloadavg()
    results["goals"]["no_flap_under_arp_flood"] = results["arp_flood"]["runs_with_a_flap"] == 0
    results["goals"]["arp_p99_under_1ms_one_core_busy"] = \
        results["arp_reply_one_core_busy"]["speaker_vip_us"]["p99"] < 1000
    if "under_forged_flood" in results:
        results["goals"]["no_live_peer_dead_under_flood"] = results["under_forged_flood"][
            "samples_with_live_peer_dead"] == 0
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
