"""The status page at scale: 1,000 Services (each with a tunnel route) on 5 nodes, local state directory.

Prints JSON: the page's size, the time to build the view and render it (median of 5), a whole
`GET /` through `portside run`'s route handler, cold (the first view after a reconcile) and warm,
and `diff --format html` rendering of the first plan. Goals: under 1 MiB, well under a second.

    python bench/bench_status_page.py [--services 1000] [--pools 8] [--nodes 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_plan, next to this file

from bench_plan import reference_loop_s, write_repo

from reconciler.backends.local import LocalBackend
from reconciler.common.httpserve import Handler, Request
from reconciler.controller.server import controller_routes
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.pages.network import network_view
from reconciler.pages.plan_html import render_plan_page
from reconciler.pages.status_page import render_status_page
from reconciler.planning.engine import ApplyPolicy, reconcile


def median_s(fn: Callable[[], object], runs: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=5)
    args = parser.parse_args()
    reference_before = reference_loop_s()
    with tempfile.TemporaryDirectory() as tmp:
        repo, state = Path(tmp) / "repo", Path(tmp) / "state"
        repo.mkdir()
        state.mkdir()
        write_repo(repo, args.services, args.pools, args.services)
        (state / "state.json").write_text(json.dumps({"version": 1, "services": {}, "nodes": {
            f"node-{n}": {"address": f"192.168.1.{10 + n}"} for n in range(args.nodes)}}))
        result = reconcile(repo, LocalBackend(state), "0123456789abcdef0123456789abcdef01234567",
                           policy=ApplyPolicy())
        assert result.desired is not None and result.live is not None
        desired, live, plan = result.desired, result.live, result.plan
        plan_page_s, plan_page = median_s(lambda: render_plan_page(plan))

        board = StatusBoard(source="git https://github.com/me/homelab.git ref main", identity="bench")
        board.update(lastAppliedRevision=result.revision, lastAttemptedRevision=result.revision,
                     lastPlanSummary=result.summary, lastReconcileTime=time.time())
        board.keep_outcome(result)
        view_s, view = median_s(lambda: network_view(desired, live, plan))
        status = board.snapshot()
        render_s, page = median_s(lambda: render_status_page(status, view, plan, now=time.time()))  # type: ignore[arg-type]
        def handler() -> Handler:
            return controller_routes(board, ControllerMetrics(), webhook_secret=None, on_push=lambda _: None,
                                     ready=lambda: True)[("GET", "/")]

        request = Request("GET", "/", {}, b"")
        # Cold: the first view after a reconcile builds the network part; warm: later views reuse it.
        cold_s, response = median_s(lambda: handler()(request))
        warm = handler()
        warm_s, _ = median_s(lambda: warm(request))

    page_bytes = len(str(page).encode())
    print(json.dumps({
        "services": args.services, "routes": args.services, "pools": args.pools, "nodes": args.nodes,
        "page_bytes": page_bytes,
        "page_kib": round(page_bytes / 1024, 1),
        "view_s": view_s,
        "render_s": render_s,
        "get_page_cold_s": cold_s,  # the route handler after a reconcile: snapshot + view + render + encode
        "get_page_warm_s": warm_s,  # later views: the network part is kept until the next reconcile
        "get_page_status": getattr(response, "status", None),
        "plan_changes": len(plan.visible),
        "plan_page_bytes": len(str(plan_page).encode()),
        "plan_page_s": plan_page_s,
        "reference_loop_s": [reference_before, reference_loop_s()],
        "goals": {"page_bytes": 1024 * 1024, "get_page_cold_s": 1.0},
    }, indent=2))


if __name__ == "__main__":
    main()
