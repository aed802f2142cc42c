"""`portside diff`: the plan, without changing anything."""

from __future__ import annotations

import argparse
import sys

from reconciler.commands.planning import add_plan_arguments, load_and_plan, policy_from, show
from reconciler.planning.render import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_plan_arguments(parser, snapshot=True, formats=(*FORMATS, "html"),
                       format_help=", html (a page in the status page's look, for a CI artifact)")
    parser.add_argument("--exit-code", action="store_true",
                        help="exit 2 when there are changes (0 none, 1 error), for CI")


def run(args: argparse.Namespace) -> int:
    _, _, plan = load_and_plan(args, policy_from(args, dry_run=True))
    if args.format == "html":
        from reconciler.pages.plan_html import render_plan_page

        sys.stdout.write(render_plan_page(plan))
        sys.stdout.flush()
    else:
        show(plan, args.format)
    return 2 if args.exit_code and plan.has_changes else 0
