"""One reconcile: load and validate, read live, plan, check safety, apply. Shared by diff/apply/run.

A broken repo raises ConfigError before anything is read or written. A 409 from the cluster
means someone changed what we planned against: re-read and re-plan (a few times), never
overwrite blindly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.backends.base import Backend
from reconciler.common.errors import ConflictError, PlanRefused
from reconciler.desired.models import duration_seconds
from reconciler.desired.state import DesiredState
from reconciler.desired.validate import load_desired_state
from reconciler.planning.live import LiveState
from reconciler.planning.plan import Plan
from reconciler.planning.planner import PlanOptions, make_plan

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class ApplyPolicy:
    max_delete_fraction: float = 0.5
    allow_mass_delete: bool = False
    dry_run: bool = False
    owner_id: str = "portside"


@dataclass
class ReconcileResult:
    revision: str | None
    plan: Plan
    changes_applied: int = 0
    errors: list[str] = field(default_factory=list)
    # What the plan was made from, kept for the status page (no second read per page view).
    desired: DesiredState | None = None
    live: LiveState | None = None
    # Seconds until the live world should be looked at again though nothing triggers it: the
    # shortest DynamicDNS interval (a public address changes without any event portside sees).
    recheck_after: float | None = None

    @property
    def summary(self) -> dict[str, int]:
        return self.plan.summary()


# Announcements follow from the Services' IPs: counting them too would count every revoked IP twice.
DERIVED_KINDS = frozenset({"Announcement"})


def removals(plan: Plan) -> int:
    """Changes that take away something portside owns (a deleted record, a revoked IP)."""
    return sum(1 for c in plan.changes if c.action == "delete" and c.target.kind not in DERIVED_KINDS)


def owned(plan: Plan) -> int:
    """Things portside owns now: every change with a live ``before`` (no-ops included)."""
    return sum(1 for c in plan.changes
               if c.before is not None and c.action != "conflict" and c.target.kind not in DERIVED_KINDS)


def check_safety(plan: Plan, policy: ApplyPolicy) -> None:
    """Refuse a plan that deletes more than the allowed share of what portside owns.

    A single deletion is always allowed (removing the one exposure of a small repo is normal);
    beyond that, a plan deleting more than ``max_delete_fraction`` — an emptied repo, a wrong
    path, a pool renamed by mistake — needs ``allow_mass_delete``.
    """
    if policy.allow_mass_delete:
        return
    gone, total = removals(plan), owned(plan)
    if gone > max(1.0, policy.max_delete_fraction * total):
        raise PlanRefused(
            f"the plan deletes {gone} of the {total} things portside owns "
            f"(more than {policy.max_delete_fraction:.0%}); if that is intended, allow it explicitly "
            "(--allow-mass-delete)")


def plan_against(desired: DesiredState, backend: Backend, policy: ApplyPolicy) -> tuple[LiveState, Plan]:
    live = backend.read(desired)
    return live, make_plan(desired, live, PlanOptions(owner_id=policy.owner_id))


def reconcile(root: Path, backend: Backend, revision: str | None, *, policy: ApplyPolicy) -> ReconcileResult:
    """Make the live world match the repo at ``root``; returns what was planned and done."""
    desired = load_desired_state(root, revision)
    recheck = min((duration_seconds(d.spec.interval) for d in desired.dynamic_dns), default=None)
    for attempt in range(1, CONFLICT_RETRIES + 1):
        live, plan = plan_against(desired, backend, policy)
        check_safety(plan, policy)
        if policy.dry_run or not plan.actionable:
            return ReconcileResult(revision, plan, desired=desired, live=live, recheck_after=recheck)
        try:
            report = backend.apply(plan)
        except ConflictError as exc:
            if attempt == CONFLICT_RETRIES:
                raise
            log.info("conflict while applying (%s); re-reading and re-planning", exc)
            continue
        return ReconcileResult(revision, plan, report.applied, report.errors, desired=desired, live=live,
                               recheck_after=recheck)
    raise AssertionError("unreachable")  # the loop returns or raises
