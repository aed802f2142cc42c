"""`python -m reconciler.speaker ...`: the same as `portside speaker ...`."""

import argparse
import logging
import os
import sys

from reconciler.common.errors import PortsideError
from reconciler.speaker import cli


def main() -> int:
    parser = argparse.ArgumentParser(prog="portside speaker", description="answer ARP/NDP for the IPs "
                                     "this node is elected for")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    cli.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return cli.run(args)
    except PortsideError as exc:
        print(f"portside speaker: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
