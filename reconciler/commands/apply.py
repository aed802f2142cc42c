"""`portside apply`: print the plan, then carry out exactly that plan."""

from __future__ import annotations

import argparse
import sys

from reconciler.backends import Backend, select_backend
from reconciler.backends.local import holding
from reconciler.commands.planning import add_plan_arguments, load_reported, plan_for, policy_from, show
from reconciler.common.errors import ConflictError, UsageError
from reconciler.desired.state import DesiredState
from reconciler.planning.engine import CONFLICT_RETRIES, ApplyPolicy, check_safety, plan_against


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser, snapshot=False)
    parser.add_argument("--allow-mass-delete", action="store_true",
                        help="apply even when the plan deletes more than --max-delete-fraction of "
                        "what portside owns")
    parser.add_argument("--max-delete-fraction", type=float, default=0.5, metavar="F",
                        help="refuse plans deleting more than this share of what portside owns (default 0.5)")


def run(args: argparse.Namespace) -> int:
    policy = policy_from(args, dry_run=False)
    desired = load_reported(args)  # a broken repo writes nothing
    backend = select_backend(args)
    if backend.read_only:
        raise UsageError(f"cannot apply to {backend.description}")
    # Read, plan and write under one lock: another apply in between would plan against a world
    # that is about to change.
    with holding(backend, args.lock_timeout):
        return _plan_and_apply(args, policy, desired, backend)


def _plan_and_apply(args: argparse.Namespace, policy: ApplyPolicy, desired: DesiredState, backend: Backend) -> int:
    plan = plan_for(desired, backend, policy)
    for attempt in range(1, CONFLICT_RETRIES + 1):
        show(plan, args.format)
        check_safety(plan, policy)
        if not plan.actionable:
            return 0
        try:
            report = backend.apply(plan)
        except ConflictError as exc:
            if attempt == CONFLICT_RETRIES:
                raise
            print(f"conflict: {exc}; the live state changed, planning again", file=sys.stderr)
            _, plan = plan_against(desired, backend, policy)
            continue
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"Applied {report.applied} change(s) to {backend.description}."
              + (f" {len(report.errors)} failed; run again to retry." if report.errors else ""),
              file=sys.stderr)
        return 1 if report.errors else 0
    return 1
