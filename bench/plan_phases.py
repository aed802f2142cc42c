"""Where one `portside diff` spends its time, in process: load+validate, live read, plan, render.

    PYTHONPATH=TREE python bench/plan_phases.py REPO STATE [--repeat 3]

Prints JSON. It uses only the long-standing entry points (load_desired_state, LocalBackend,
make_plan, render_text, render_json), so bench_scale.py runs it against other revisions too,
each with PYTHONPATH pointing at its own tree. Plan and render figures are medians of
``--repeat`` runs; load and read run once (they dominate at 40,000 Services).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _timed(work: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median wall seconds, median CPU seconds, last result)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = work()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path)
    parser.add_argument("state", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    from reconciler.backends.local import LocalBackend
    from reconciler.desired.validate import load_desired_state
    from reconciler.planning.planner import make_plan
    from reconciler.planning.render import render_json, render_text
    imports_s = time.perf_counter() - start

    load_s, load_cpu, desired = _timed(lambda: load_desired_state(args.repo), 1)
    backend = LocalBackend(args.state)
    read_s, read_cpu, live = _timed(lambda: backend.read(desired), 1)
    plan_s, plan_cpu, plan = _timed(lambda: make_plan(desired, live), args.repeat)
    text_s, text_cpu, text = _timed(lambda: render_text(plan), args.repeat)
    json_s, json_cpu, as_json = _timed(lambda: render_json(plan), args.repeat)
    json.dump({
        "module": sys.modules["reconciler"].__file__,
        "exposures": len(desired.exposures),
        "changes": len(plan.visible),
        "imports_s": round(imports_s, 4),
        "load_validate_s": round(load_s, 4), "load_validate_cpu_s": round(load_cpu, 4),
        "live_read_s": round(read_s, 4), "live_read_cpu_s": round(read_cpu, 4),
        "plan_s": round(plan_s, 4), "plan_cpu_s": round(plan_cpu, 4),
        "render_text_s": round(text_s, 4), "render_text_cpu_s": round(text_cpu, 4),
        "render_json_s": round(json_s, 4), "render_json_cpu_s": round(json_cpu, 4),
        "text_bytes": len(text), "json_bytes": len(as_json),
        "gc_collections": [s["collections"] for s in gc.get_stats()],
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
