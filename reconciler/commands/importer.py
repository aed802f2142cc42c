"""`portside import`: the live world written as a desired-state repo, then planned against it.

The proof of a faithful import is the plan that follows it: against the same backend, it moves
no Service and changes no DNS record (an adopted record only gains portside's marker).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from reconciler.backends import add_backend_arguments, select_backend
from reconciler.backends.base import Backend
from reconciler.commands.planning import load_desired
from reconciler.common.atomic import write_atomic
from reconciler.common.errors import UsageError
from reconciler.desired.state import DesiredState
from reconciler.importing import ImportedWorld, LiveMetalLB, LiveRemoteTunnel, import_world
from reconciler.planning.engine import ApplyPolicy, plan_against
from reconciler.planning.live import LiveState
from reconciler.planning.plan import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="where to write the repo (refused when it is not empty, unless --force)")
    parser.add_argument("--dry-run", action="store_true", help="print the files instead of writing them")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR (files of the same name are replaced)")
    parser.add_argument("--account", action="append", default=[], metavar="ID",
                        help="a Cloudflare account whose remote tunnels to import (needs CLOUDFLARE_API_TOKEN; "
                        "repeatable)")
    parser.add_argument("--tunnel", action="append", default=[], metavar="NAME",
                        help="import only these tunnels (default: every tunnel configured through the API)")
    add_backend_arguments(parser, snapshot=False)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not args.dry_run and out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise UsageError(f"--out {out}: not an empty directory (give --force to write into it anyway)")
    backend = select_backend(args)
    print(f"Importing from {backend.description}.", file=sys.stderr)
    live = backend.read(DesiredState())
    read_metallb = getattr(backend, "read_metallb", None)
    metallb = read_metallb() if read_metallb is not None else LiveMetalLB()
    tunnels = _remote_tunnels(args, live)
    world = import_world(metallb, live, tunnels, source=backend.description, owner_id=args.owner_id)
    for note in world.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        for path, text in sorted(world.files.items()):
            sys.stdout.write(f"# ===== {path}\n{text}")
    else:
        _write(world, out)
        print(f"Wrote {len(world.files)} file(s) to {out}: {_counts(world)}.", file=sys.stderr)
    if read_metallb is None:
        # A state directory keeps each Service's IPs and pool name, not the pools' addresses.
        print("A local state directory holds no pools: add your IPAddressPools to the imported repo, "
              "then `portside diff` shows what would move.", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="portside-import-") as scratch:
        root = out
        if args.dry_run:
            root = Path(scratch)
            _write(world, root)
        print(_plan_summary(_plan(root, backend, args.owner_id)), file=sys.stderr)
    return 0


def _remote_tunnels(args: argparse.Namespace, live: LiveState) -> list[LiveRemoteTunnel]:
    if not args.account:
        if args.tunnel:
            raise UsageError("--tunnel needs --account (the Cloudflare account that holds it)")
        return []
    if not os.environ.get("CLOUDFLARE_API_TOKEN", "").strip():
        raise UsageError("--account needs CLOUDFLARE_API_TOKEN (a token that can read tunnels and DNS)")
    from reconciler.providers.cloudflare import CloudflareProvider

    provider = CloudflareProvider.from_env()
    assert provider is not None
    try:
        zones = provider.read_all_zones()
        records = tuple(r for z in zones.values() for r in z.records)
        wanted = set(args.tunnel)
        out: list[LiveRemoteTunnel] = []
        for account in sorted(set(args.account)):
            for name, tunnel in provider.read_account_tunnels(account):
                if wanted and name not in wanted:
                    continue
                if tunnel.ingress is None or tunnel.tunnel_id is None:
                    print(f"note: tunnel {name} is configured by its local cloudflared config, not through "
                          "the API: not imported (declare it as a `local` Tunnel)", file=sys.stderr)
                    continue
                out.append(LiveRemoteTunnel(
                    account_id=account, tunnel_id=tunnel.tunnel_id, name=name, ingress=tunnel.ingress,
                    origin_request=dict(tunnel.origin_request), zones=tuple(sorted(zones)), records=records))
        missing = wanted - {t.name for t in out}
        if missing:
            raise UsageError(f"--tunnel {', '.join(sorted(missing))}: no such tunnel configured through the API "
                             f"in account(s) {', '.join(sorted(set(args.account)))}")
        return out
    finally:
        provider.close()


def _write(world: ImportedWorld, root: Path) -> None:
    for path, text in world.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text)


def _counts(world: ImportedWorld) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(world.kinds.items())) or "nothing to import"


def _plan(root: Path, backend: Backend, owner_id: str) -> Plan:
    desired = load_desired(root)
    _, plan = plan_against(desired, backend, ApplyPolicy(dry_run=True, owner_id=owner_id))
    return plan


def _plan_summary(plan: Plan) -> str:
    """The plan against the imported repo, by kind: for a faithful import, no Service moves."""
    kinds: Counter[str] = Counter(c.target.kind for c in plan.changes
                                  if c.action != "no-op" and c.target.kind != "Service")
    # A Service that holds an IP and would be changed is churn; a pending one getting an IP is not.
    moved = sum(1 for c in plan.changes if c.target.kind == "Service" and c.action in ("update", "delete"))
    assigned = sum(1 for c in plan.changes if c.target.kind == "Service" and c.action == "create")
    pending = sum(1 for c in plan.changes if c.target.kind == "Service" and c.action == "conflict")
    parts = [f"{moved} Service change(s)"]
    if assigned:
        parts.append(f"{assigned} pending Service(s) get an IP")
    if pending:
        parts.append(f"{pending} Service(s) stay pending")
    parts.extend(f"{n} {kind} change(s)" for kind, n in sorted(kinds.items()))
    verdict = "no IP moves" if not moved else "review these before switching"
    return f"Plan against the imported repo: {', '.join(parts)} ({verdict}; `portside diff` shows them)."
