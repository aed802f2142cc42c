"""`portside snapshot`: save the live state to a file, for diffs in CI without credentials."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.backends import add_backend_arguments, select_backend
from reconciler.backends.local import holding
from reconciler.commands.planning import add_lock_timeout, load_desired
from reconciler.planning.snapshot import save_snapshot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), metavar="PATH",
                        help="the repo of desired-state YAML: says which tunnels and zones to read "
                        "(default: .)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the snapshot")
    add_backend_arguments(parser, snapshot=False)
    add_lock_timeout(parser)


def run(args: argparse.Namespace) -> int:
    desired = load_desired(args.path)
    backend = select_backend(args)
    with holding(backend, args.lock_timeout, shared=True):
        live = backend.read(desired)
    save_snapshot(live, args.out)
    print(f"Saved the live state of {backend.description} to {args.out} "
          f"({len(live.services)} services, {len(live.nodes)} nodes, {len(live.tunnels)} tunnels).",
          file=sys.stderr)
    return 0
