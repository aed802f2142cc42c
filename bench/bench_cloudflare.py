"""Cloudflare reconcile runs against the fake v4 API: API calls and wall time of each run, as JSON.

    python bench/bench_cloudflare.py [--routes 500]

Each run is what ``portside apply`` does for Cloudflare: read (tunnel, configuration, zones,
records), plan (pure), apply (tunnel creates, configuration PUT, one DNS batch per zone). Calls
are counted from the fake's request log, so retries and failed calls are included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.desired.models import Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.planning.plan import ordered
from reconciler.providers.cloudflare import CloudflareProvider
from reconciler.tunnels.plan import plan_tunnels
from tests.fakes.cloudflare_api import FakeCloudflare

TOKEN = "bench-token"
ZONES = ("example.dev", "example.org", "example.net")


def desired(account: str, tunnel_id: str, hostnames: list[str]) -> DesiredState:
    tunnel = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                    "metadata": {"name": "home"},
                                    "spec": {"accountId": account, "tunnelId": tunnel_id}})
    routes = tuple(
        TunnelRoute.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute",
                                    "metadata": {"name": f"r{i:04d}"},
                                    "spec": {"tunnel": "home", "hostname": host,
                                             "url": f"http://10.0.{i // 250}.{i % 250 + 1}:80"}})
        for i, host in enumerate(hostnames))
    return DesiredState(tunnels=(tunnel,), routes=routes)


def run(cf: FakeCloudflare, name: str, ds: DesiredState) -> dict[str, Any]:
    cf.clear_log()
    started = time.perf_counter()
    provider = CloudflareProvider(TOKEN, base_url=cf.base_url, retry_budget_s=10.0)
    tunnels, zones = provider.read(ds)
    read_s = time.perf_counter() - started
    plan = plan_tunnels(ds, tunnels, zones, {}, "bench")
    outcome = provider.apply(ordered(plan.changes))
    wall = time.perf_counter() - started
    provider.close()
    log = cf.log
    return {
        "run": name,
        "wall_s": round(wall, 3),
        "read_s": round(read_s, 3),
        "api_calls": len(log),
        "reads": sum(1 for r in log if r.method == "GET"),
        "writes": sum(1 for r in log if r.method != "GET"),
        "config_puts": sum(1 for r in log if r.method == "PUT" and r.path.endswith("/configurations")),
        "dns_batches": sum(1 for r in log if r.path.endswith("/dns_records/batch")),
        "failed_calls": sum(1 for r in log if r.status >= 400),
        "changes": {k: v for k, v in _summary(plan.changes).items() if v},
        "applied": outcome.applied,
        "errors": outcome.errors,
    }


def _summary(changes: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        out[c.action] = out.get(c.action, 0) + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=500)
    args = parser.parse_args()
    results = []
    with FakeCloudflare(token=TOKEN) as cf:
        zone_ids = {z: cf.add_zone(z) for z in ZONES}
        tunnel_id = str(cf.add_tunnel(None, "home")["id"])
        hosts = [f"h{i:04d}.{ZONES[i % 3]}" for i in range(args.routes)]
        ds = desired(cf.account_id, tunnel_id, hosts)
        results.append(run(cf, f"first apply, {args.routes} routes over 3 zones", ds))
        hosts[7] = "renamed.example.org"
        ds = desired(cf.account_id, tunnel_id, hosts)
        results.append(run(cf, "one route changed", ds))
        results.append(run(cf, "converged", ds))
        cf.add_record(zone_ids["example.dev"], "foreign.example.dev", "A", "203.0.113.7", comment="hand-made")
        ds = desired(cf.account_id, tunnel_id, [*hosts, "foreign.example.dev"])
        results.append(run(cf, "foreign record (conflict, untouched)", ds))
        hosts.append("ratelimited.example.net")
        ds = desired(cf.account_id, tunnel_id, hosts)
        cf.rate_limit(retry_after=1, times=1, method="POST", path=r"/dns_records/batch$")
        results.append(run(cf, "429 with Retry-After: 1 on the DNS batch", ds))
        hosts += ["five-hundred.example.dev", "five-hundred.example.org"]
        ds = desired(cf.account_id, tunnel_id, hosts)
        cf.fail(502, method="POST", path=rf"/zones/{zone_ids['example.dev']}/dns_records/batch$")
        results.append(run(cf, "502 on one zone's batch mid-apply", ds))
        results.append(run(cf, "next run after the 502", ds))
        results.append(run(cf, "converged again", ds))
        total = sum(len(cf.records(z)) for z in zone_ids.values())
        names = [r["name"] for z in zone_ids.values() for r in cf.records(z)]
    print(json.dumps({"bench": "cloudflare", "routes": args.routes, "runs": results,
                      "records_at_end": total, "duplicate_names": len(names) - len(set(names))}, indent=2))


if __name__ == "__main__":
    main()
