"""Issue 11's HTTP attacks on `portside run` and `portside speaker`, measured; prints JSON.

    sudo python bench/bench_http_attacks.py [--stream-mib 128] [--slowloris 300[,1000]] [--hold-seconds 60]

Both programs run as separate processes with the default HTTP limits and a descriptor limit of
1024 (the speaker alone in a network namespace, so it needs root); traffic stays on loopback.

- stream: for each attack, ``--stream-mib`` MiB sent at the program (as fast as it takes them,
  reconnecting whenever it hangs up, for at most 60 s), with its RSS sampled from /proc every 5 ms:
  baseline and peak.
  ``length_minus_1`` (GET /healthz, Content-Length: -1, the issue's case), ``chunked_unbounded``
  (a chunked body that never ends, to the body route), and for `run` ``bodies_1mib`` (the same
  volume as 1 MiB bodies within the limit, 16 connections at once, to POST /hooks/git).
- slowloris: ``--slowloris`` connections (per run; above the connection limit, 512 here, the
  oldest waiting ones are closed to make room) each send half a request, then one more header byte
  every 5 s (which an idle timeout alone never closes). GET /healthz on a new connection once a
  second: ``healthz_ms_beside_them`` over the probes made while (nearly) all of them were open;
  when the program had closed them all; ``held_after_s`` how many it still holds after
  ``--hold-seconds``, and its open descriptors then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.common.httpserve import MAX_BODY  # noqa: E402
from tests.httpattack import (  # noqa: E402
    FD_LIMIT,
    Connect,
    Process,
    RssSampler,
    Slowloris,
    get,
    rss_bytes,
    start_portside_run,
    start_speaker,
    status_of,
    stream_body,
    tcp,
)
from tests.netns import Topology  # noqa: E402

MiB = 1 << 20


def default_connection_limit_at(fd_limit: int) -> int:
    """What reconciler.common.httpserve.default_connection_limit gives under ``fd_limit``."""
    return max(16, min(1000, fd_limit // 2))


def mib(n: int) -> float:
    return round(n / MiB, 1)


def stream_attacks(process: Process, connect: Connect, body_path: str | None, total: int) -> dict[str, Any]:
    path = body_path or "/healthz"
    attacks: list[tuple[str, bytes, bool]] = [
        ("length_minus_1", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", False),
        ("chunked_unbounded", f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode(), True),
    ]
    results: dict[str, Any] = {}
    for name, head, chunked in attacks:
        with RssSampler(process.pid) as rss:
            # A refusing server closes the connection; the attacker reconnects and goes on until
            # ``total`` bytes went out (the kernel's buffers take some of each before the close).
            sent_total = connections = 0
            statuses: set[int] = set()
            started = time.monotonic()
            while sent_total < total and time.monotonic() - started < 60 and connections < 20000:
                sent, reply = stream_body(connect, head, total - sent_total, chunked=chunked, timeout=60)
                sent_total += sent
                connections += 1
                statuses.add(status_of(reply))
        results[name] = {"sent_mib": mib(sent_total), "connections": connections, "statuses": sorted(statuses),
                         "rss_baseline_mib": mib(rss.baseline), "rss_peak_mib": mib(rss.peak),
                         "seconds": round(time.monotonic() - started, 2)}
    if body_path is not None:
        head = f"POST {body_path} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode()
        count = total // MAX_BODY
        codes: list[int] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            for _ in range(n):
                _sent, reply = stream_body(connect, head, MAX_BODY)
                with lock:
                    codes.append(status_of(reply))

        started = time.monotonic()
        with RssSampler(process.pid) as rss:
            threads = [threading.Thread(target=worker, args=(count // 16,)) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        results["bodies_1mib"] = {"sent_mib": mib(len(codes) * MAX_BODY), "requests": len(codes),
                                  "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
                                  "rss_baseline_mib": mib(rss.baseline), "rss_peak_mib": mib(rss.peak),
                                  "seconds": round(time.monotonic() - started, 2)}
    results["healthz_after"] = get(connect, "/healthz")[0]
    return results


def slowloris(targets: dict[str, tuple[Process, Connect]], count: int, hold: float) -> dict[str, Any]:
    attacks = {name: Slowloris(connect, count) for name, (_process, connect) in targets.items()}
    opened = time.monotonic()
    # (ms, connections of the attack still open then) per /healthz probe; failures counted apart.
    probes: dict[str, list[tuple[float, int]]] = {name: [] for name in targets}
    failures: dict[str, int] = dict.fromkeys(targets, 0)
    all_cut: dict[str, float | None] = dict.fromkeys(targets)
    next_trickle = opened + 5
    try:
        while time.monotonic() - opened < hold:
            for name, (_process, connect) in targets.items():
                still_open = attacks[name].open_count()
                if still_open == 0 and all_cut[name] is None:
                    all_cut[name] = round(time.monotonic() - opened, 1)
                status, seconds = get(connect, "/healthz", timeout=5)
                if status == 200:
                    probes[name].append((seconds * 1000, still_open))
                else:
                    failures[name] += 1
            if time.monotonic() >= next_trickle:
                for attack in attacks.values():
                    attack.trickle()
                next_trickle += 5
            time.sleep(max(0.0, 1.0 - (time.monotonic() - opened) % 1.0))
        result: dict[str, Any] = {}
        for name, (process, _connect) in targets.items():
            # "Beside them": while the program held (nearly) all it would hold of them.
            held = min(count, default_connection_limit_at(FD_LIMIT))
            beside = sorted(ms for ms, still_open in probes[name] if still_open >= held * 0.9)
            result[name] = {
                "connections": count,
                "held_after_s": {str(int(hold)): attacks[name].open_count()},
                "all_closed_after_s": all_cut[name],
                "open_fds_then": len(os.listdir(f"/proc/{process.pid}/fd")),
                "healthz_ms_beside_them": {"p50": round(statistics.median(beside), 2) if beside else None,
                                           "max": round(beside[-1], 2) if beside else None,
                                           "probes": len(beside)},
                "healthz_failed": failures[name],
                "rss_mib": mib(rss_bytes(process.pid)),
            }
        return result
    finally:
        for attack in attacks.values():
            attack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-mib", type=int, default=128)
    parser.add_argument("--slowloris", default="300", metavar="N[,N...]",
                        help="connections per slowloris run (one run of --hold-seconds each)")
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the speaker runs in a network namespace")
    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    (workdir / "run").mkdir()
    (workdir / "speaker").mkdir()
    report: dict[str, Any] = {"fd_limit": 1024, "stream_mib": args.stream_mib}
    with Topology(["a"]) as topology:
        run, port = start_portside_run(workdir / "run", {}, b"bench-webhook-secret-0123456789")
        speaker, speaker_connect = start_speaker(topology["a"], workdir / "speaker", {})
        targets = {"run": (run, tcp("127.0.0.1", port)), "speaker": (speaker, speaker_connect)}
        try:
            report["stream"] = {
                "run": stream_attacks(run, targets["run"][1], "/hooks/git", args.stream_mib * MiB),
                "speaker": stream_attacks(speaker, speaker_connect, None, args.stream_mib * MiB),
            }
            report["slowloris"] = {n: slowloris(targets, int(n), args.hold_seconds)
                                   for n in args.slowloris.split(",")}
            report["tracebacks"] = {name: "Traceback" in process.output() for name, (process, _c) in targets.items()}
        finally:
            run.stop()
            speaker.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
