"""What `diff` and `apply` share: the PATH argument, the backend, the plan and its rendering."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.backends import Backend, add_backend_arguments, select_backend
from reconciler.backends.local import DEFAULT_LOCK_TIMEOUT_S, holding
from reconciler.commands.revision import git_head
from reconciler.common.errors import ConfigError, shown_under
from reconciler.desired.loader import repo_directory
from reconciler.desired.state import DesiredState
from reconciler.desired.validate import load_desired_state
from reconciler.planning.engine import ApplyPolicy, plan_against
from reconciler.planning.plan import Plan
from reconciler.planning.render import FORMATS, render_chunks


def add_plan_arguments(parser: argparse.ArgumentParser, *, snapshot: bool,
                       formats: tuple[str, ...] = FORMATS, format_help: str = "") -> None:
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), metavar="PATH",
                        help="the repo (or directory) of desired-state YAML (default: .)")
    parser.add_argument("--format", choices=formats, default="text",
                        help="text (terraform-like), json (stable, for tools), markdown (for a PR comment)"
                        + format_help)
    parser.add_argument("--revision", default=None,
                        help="the git commit the YAML came from, recorded in the plan and the "
                        "announcement table (default: HEAD of PATH's repo, if it is one)")
    add_backend_arguments(parser, snapshot=snapshot)
    add_lock_timeout(parser)


def add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT_S, metavar="SECONDS",
                        help="with a local state directory, how long to wait while another portside process "
                        f"applies to it (default {DEFAULT_LOCK_TIMEOUT_S:g})")


def policy_from(args: argparse.Namespace, *, dry_run: bool) -> ApplyPolicy:
    return ApplyPolicy(
        max_delete_fraction=getattr(args, "max_delete_fraction", 0.5),
        allow_mass_delete=getattr(args, "allow_mass_delete", False),
        dry_run=dry_run,
        owner_id=args.owner_id,
    )


def load_desired(path: Path, revision: str | None = None) -> DesiredState:
    """The repo at ``path``; errors name files as the user reaches them (below ``path``)."""
    try:
        return load_desired_state(path, revision)
    except ConfigError as exc:
        raise shown_under(exc, str(repo_directory(path))) from None



def load_reported(args: argparse.Namespace) -> DesiredState:
    """The repo at PATH for diff and apply, its warnings and what it skipped said on stderr."""
    desired = load_desired(args.path, args.revision or git_head(args.path))
    directory = str(repo_directory(args.path))
    for warning in desired.warnings:
        print(f"warning: {warning.under(directory)}", file=sys.stderr)
    if desired.skipped:
        print(f"Loaded {args.path}: {desired.skipped}.", file=sys.stderr)
    return desired


def load_and_plan(args: argparse.Namespace, policy: ApplyPolicy) -> tuple[DesiredState, Backend, Plan]:
    desired = load_reported(args)
    backend = select_backend(args)
    with holding(backend, args.lock_timeout, shared=True):  # never half of an apply's writes
        return desired, backend, plan_for(desired, backend, policy)


def plan_for(desired: DesiredState, backend: Backend, policy: ApplyPolicy) -> Plan:
    """Read the live world and plan against it, saying which world that is."""
    # On stderr, so JSON and Markdown on stdout stay clean: which world is being planned against
    # matters (a kubeconfig in ~/.kube makes the default a cluster, not .portside/).
    print(f"Planning against {backend.description}.", file=sys.stderr)
    _, plan = plan_against(desired, backend, policy)
    return plan


def show(plan: Plan, fmt: str) -> None:
    sys.stdout.writelines(render_chunks(plan, fmt, sys.stdout))
    sys.stdout.flush()
