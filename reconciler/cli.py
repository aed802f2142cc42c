"""The `portside` command line: one program, one subcommand per job.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when chosen, so `portside validate` does not pay for the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reconciler import __version__

# Nothing else at module level: `portside --help` imports only argparse (logging, dataclasses
# and the error tree are imported once a command runs).

# name -> (module, one-line help). The order is the order of `portside --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("reconciler.commands.validate", "check the desired-state YAML; exit 0 valid, 1 invalid"),
    "diff": ("reconciler.commands.diff", "show the plan: what apply would change"),
    "apply": ("reconciler.commands.apply", "apply exactly the plan it prints"),
    "run": ("reconciler.commands.run", "the GitOps controller: follow a git repo and keep applying it"),
    "speaker": ("reconciler.speaker.cli", "answer ARP/NDP for the IPs this node is elected for"),
    "schema": ("reconciler.commands.schema", "write the JSON Schema of every document kind"),
    "snapshot": ("reconciler.commands.snapshot", "save the live state to a file for offline diffs"),
    "import": ("reconciler.commands.importer", "write the live world (MetalLB, Services' IPs, tunnels) as a repo"),
}

EPILOG = """\
examples:
  portside validate example-repo
  portside diff example-repo                 # against .portside/ when no cluster is configured
  portside apply example-repo
  portside diff . --format markdown --exit-code --snapshot live.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portside",
        description="Expose bare-metal Kubernetes services on your network and the Internet, "
        "declaratively, from Git: LoadBalancer IPs, ARP announcements and Cloudflare tunnel routes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"portside {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(sys.argv[1:])
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subcommands.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported; the rest show their one-line help.
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    saved, sys.argv = sys.argv, [sys.argv[0], *args_list]
    try:
        parser = build_parser()
    finally:
        sys.argv = saved
    args = parser.parse_args(args_list)
    import logging

    from reconciler.common.errors import PortsideError

    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return int(args.handler(args))
    except PortsideError as exc:
        print(f"portside {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
