"""Where one `portside diff` spends its time, in process: load+validate, live read, plan, render.

    PYTHONPATH=TREE python bench/plan_phases.py REPO STATE [--repeat 3] [--no-converged]

Prints JSON. It uses only the long-standing entry points (load_desired_state, LocalBackend,
make_plan, render_text, render_json, LocalBackend.apply), so bench_scale.py runs it against
other revisions too, each with PYTHONPATH pointing at its own tree. Plan and render figures are
medians of ``--repeat`` runs; ``plan_first_s`` is the first plan of the process alone, as a
`portside diff` makes it (cold caches); load and read run once (they dominate at 40,000 Services).

STATE is the live world of the first plan (bench_scale.py passes a fresh one). Then, unless
``--no-converged``, the plan is applied to a copy of STATE (what `portside apply` writes) and
everything is measured again against it by a fresh process, under ``converged``: the steady
state of a GitOps loop, where nothing changes but everything is read and compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def _read_plan_render(desired: Any, state: Path, repeat: int) -> tuple[dict[str, object], Any]:
    """The figures of one live world: read once, the first plan, then medians of ``repeat``."""
    from reconciler.backends.local import LocalBackend
    from reconciler.planning.planner import make_plan
    from reconciler.planning.render import render_json, render_text

    backend = LocalBackend(state)
    read_s, read_cpu, live = _timed(lambda: backend.read(desired), 1)
    first_s, first_cpu, plan = _timed(lambda: make_plan(desired, live), 1)
    plan_s, plan_cpu, plan = _timed(lambda: make_plan(desired, live), repeat)
    text_s, text_cpu, text = _timed(lambda: render_text(plan), repeat)
    json_s, json_cpu, as_json = _timed(lambda: render_json(plan), repeat)
    figures: dict[str, object] = {
        "changes": len(plan.visible),
        "live_read_s": round(read_s, 4), "live_read_cpu_s": round(read_cpu, 4),
        "plan_first_s": round(first_s, 4), "plan_first_cpu_s": round(first_cpu, 4),
        "plan_s": round(plan_s, 4), "plan_cpu_s": round(plan_cpu, 4),
        "render_text_s": round(text_s, 4), "render_text_cpu_s": round(text_cpu, 4),
        "render_json_s": round(json_s, 4), "render_json_cpu_s": round(json_cpu, 4),
        "text_bytes": len(text), "json_bytes": len(as_json),
    }
    return figures, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path)
    parser.add_argument("state", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-converged", dest="converged", action="store_false",
                        help="skip applying the plan and measuring the converged world")
    args = parser.parse_args()
    start = time.perf_counter()
    from reconciler.backends.local import LocalBackend
    from reconciler.desired.validate import load_desired_state
    from reconciler.planning.planner import make_plan  # noqa: F401  (counted in imports_s)
    from reconciler.planning.render import render_json, render_text  # noqa: F401
    imports_s = time.perf_counter() - start

    load_s, load_cpu, desired = _timed(lambda: load_desired_state(args.repo), 1)
    first, plan = _read_plan_render(desired, args.state, args.repeat)
    report: dict[str, object] = {
        "module": sys.modules["reconciler"].__file__,
        "exposures": len(desired.exposures),
        "imports_s": round(imports_s, 4),
        "load_validate_s": round(load_s, 4), "load_validate_cpu_s": round(load_cpu, 4),
        **first,
    }
    if args.converged:
        with tempfile.TemporaryDirectory(prefix="plan-phases-") as tmp:
            state = Path(tmp) / "state"
            shutil.copytree(args.state, state)
            LocalBackend(state).apply(plan)
            # Measured by a fresh process, as a `portside diff` would run: this one's heap and
            # collector state (after a load, an apply and several plans) are not a diff's.
            again = subprocess.run([sys.executable, __file__, str(args.repo), str(state), "--repeat",
                                    str(args.repeat), "--no-converged"], capture_output=True, text=True, check=True)
        report["converged"] = json.loads(again.stdout)
    report["gc_collections"] = [s["collections"] for s in gc.get_stats()]
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
