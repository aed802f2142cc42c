"""Plan at scale: 10,000 Services, 64 pools, 2,000 tunnel routes, against a local state directory.

The repo is issue 13's shape (bench/scale_repo.py); bench_scale.py times whole processes at
several sizes, this one the phases of one size in process.

Prints JSON: load+validate, live read, planning (the pure planner alone), and the whole
`portside diff` as a user runs it (a fresh process), with its peak memory; then the same after
an apply, when the world is converged.

    python bench/bench_plan.py [--services 10000] [--pools 64] [--routes 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale_repo import ScaleRepo

from reconciler.backends.local import LocalBackend
from reconciler.desired.validate import load_desired_state
from reconciler.planning.planner import make_plan


def timed_diff(repo: Path, state: Path) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "reconciler", "diff", str(repo), "--state", str(state),
                           "--format", "json"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    summary = json.loads(proc.stdout)["summary"]
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": round(wall, 3), "peak_rss_mib": round(peak_kib / 1024, 1), **summary}


def reference_loop_s() -> float:
    """CPU seconds of a fixed pure-Python loop: this host's speed right now. On shared machines it
    swings by half; divide a figure by it to compare runs."""
    start = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i
    return round(time.process_time() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=64)
    parser.add_argument("--routes", type=int, default=2_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--namespaces", type=int, default=40)
    args = parser.parse_args()
    reference_before = reference_loop_s()
    with tempfile.TemporaryDirectory() as tmp:
        shape = ScaleRepo(services=args.services, pools=args.pools, routes=args.routes,
                          namespaces=args.namespaces, nodes=args.nodes)
        repo = shape.write(Path(tmp) / "repo")

        start = time.perf_counter()
        desired = load_desired_state(repo)
        load_s = time.perf_counter() - start
        # Three nodes, as a small cluster has: every IP ranks them (one sha256 per node per IP).
        state = shape.write_state(Path(tmp) / "state")
        backend = LocalBackend(state)
        start = time.perf_counter()
        live = backend.read(desired)
        read_s = time.perf_counter() - start
        plan_runs, plan_cpu_runs = [], []
        for _ in range(5):
            start, cpu_start = time.perf_counter(), time.process_time()
            plan = make_plan(desired, live)
            plan_runs.append(time.perf_counter() - start)
            plan_cpu_runs.append(time.process_time() - cpu_start)
        plan_s, plan_cpu_s = statistics.median(plan_runs), statistics.median(plan_cpu_runs)

        first_diff = timed_diff(repo, state)
        start = time.perf_counter()
        backend.apply(plan)
        apply_s = time.perf_counter() - start
        live = backend.read(desired)
        converged_runs = []
        for _ in range(5):
            start = time.perf_counter()
            converged = make_plan(desired, live)
            converged_runs.append(time.perf_counter() - start)
        converged_plan_s = statistics.median(converged_runs)
        assert not converged.has_changes, "a converged world must plan nothing"
        converged_diff = timed_diff(repo, state)

    print(json.dumps({
        "services": args.services, "pools": args.pools, "routes": args.routes, "nodes": args.nodes,
        "load_validate_s": round(load_s, 3),
        "live_read_s": round(read_s, 3),
        "plan_s": round(plan_s, 3),  # median of 5
        "plan_s_first": round(plan_runs[0], 3),
        "plan_cpu_s": round(plan_cpu_s, 3),  # robust when other work shares the cores
        "plan_changes": len(plan.visible),
        "apply_local_s": round(apply_s, 3),
        "converged_plan_s": round(converged_plan_s, 3),
        "diff_fresh_process": first_diff,
        "diff_converged_fresh_process": converged_diff,
        "reference_loop_s": [reference_before, reference_loop_s()],
        "goals": {"plan_s": 0.2, "diff_wall_s": 1.0},  # issue 13, on a quiet 2-core machine
    }, indent=2))


if __name__ == "__main__":
    main()
