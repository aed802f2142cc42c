"""Benchmark: load and validate a repo of 5,000 documents; prints JSON.

The repo is generated in a temporary directory by bench/scale_repo.py: one pool (a /16), one L2
advertisement, one tunnel, and ServiceExposures and TunnelRoutes in equal numbers (each exposure
requests an address, each route sends a hostname of the tunnel's zone to its Service).
Usage: python bench/bench_validate.py [--documents N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scale_repo import ScaleRepo

from reconciler.desired.validate import load_desired_state
from reconciler.desired.yamllib import USING_LIBYAML


def validate_repo(documents: int) -> ScaleRepo:
    """One /16 pool, an advertisement, a tunnel; exposures requesting an address and routes to them."""
    routes = (documents - 3) // 2
    return ScaleRepo(services=documents - 3 - routes, pools=1, routes=routes, namespaces=1, ports=1,
                     pool_prefix=16, requested_addresses=True, origin_request=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = validate_repo(args.documents).write(Path(tmp))
        timings, cpu = [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            state = load_desired_state(root)
            timings.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        count = (len(state.pools) + len(state.advertisements) + len(state.exposures) + len(state.tunnels)
                 + len(state.routes))
    json.dump({"benchmark": "validate", "documents": count, "repeat": args.repeat,
               "seconds_min": round(min(timings), 4), "seconds_median": round(statistics.median(timings), 4),
               # CPU time is what the budget is about; wall time also shows other load on the machine.
               "cpu_seconds_min": round(min(cpu), 4),
               "budget_seconds": 1.5, "within_budget": min(timings) < 1.5,
               "load_average": round(os.getloadavg()[0], 2),
               "yaml_parser": "libyaml (PyYAML)" if USING_LIBYAML else "pure Python"},
              sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
