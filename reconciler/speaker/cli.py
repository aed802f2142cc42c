"""`portside speaker`: answer ARP/NDP for the IPs this node is elected for."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from reconciler.common.errors import UsageError
from reconciler.common.secrets import read_secret_file
from reconciler.planning.announcement_table import CONFIGMAP_NAME
from reconciler.speaker.heartbeat import MIN_KEY_LEN
from reconciler.speaker.sources import DEFAULT_NAMESPACE, ConfigMapSource, FileSource, TableSource

log = logging.getLogger(__name__)

KEY_ENV = "PORTSIDE_HEARTBEAT_KEY"
DEFAULT_LISTEN = ":7473"

EPILOG = f"""\
The table of IPs to announce comes from --announcements FILE (local mode, followed as it changes)
or from the ConfigMap {DEFAULT_NAMESPACE}/{CONFIGMAP_NAME} (--kubeconfig FILE, or the in-cluster
configuration when run in a pod).

Speakers of one cluster sign their heartbeats with a shared key: --heartbeat-key-file FILE or the
environment variable {KEY_ENV} (at least {MIN_KEY_LEN} bytes, e.g. `openssl rand -hex 32`).

The speaker needs CAP_NET_RAW (raw sockets) and nothing else; it never adds IPs to interfaces.
With CAP_SYS_NICE as well, it answers and sends heartbeats at real-time priority (the lowest
levels, 1 and 2), so replies stay fast on a node whose cores are busy; without it, it asks the
kernel for short time slices instead (the log says which it got at start).

examples:
  portside speaker --node node-a --announcements .portside/announcements.json \\
      --heartbeat-key-file /etc/portside/heartbeat.key
  PORTSIDE_HEARTBEAT_KEY=... portside speaker --node "$NODE_NAME"     # in a pod
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--node", default=os.environ.get("NODE_NAME"),
                        help="this node's name, as in the table (default: $NODE_NAME)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--announcements", metavar="FILE", type=Path,
                        help="read the announcement table from this file and follow its changes")
    source.add_argument("--kubeconfig", metavar="FILE",
                        help="read the table from the ConfigMap through this kubeconfig")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"namespace of the ConfigMap {CONFIGMAP_NAME} (default: %(default)s)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                        help="serve /healthz, /metrics and /status here; empty to disable "
                        "(default: %(default)s)")
    parser.add_argument("--heartbeat-key-file", metavar="FILE", type=Path,
                        help=f"the shared heartbeat key (or set {KEY_ENV})")
    parser.add_argument("--insecure-no-heartbeat-auth", action="store_true",
                        help="run without a heartbeat key: anyone on the network can then forge "
                        "heartbeats and stop failover (tests and experiments only)")


def load_key(key_file: Path | None, environ: Mapping[str, str], insecure: bool) -> bytes:
    """The heartbeat key from the file or the environment; the key itself is never in a message."""
    from_env = environ.get(KEY_ENV)
    if key_file is not None and from_env:
        raise UsageError(f"the heartbeat key is given twice (--heartbeat-key-file and {KEY_ENV}); "
                         "give it once")
    if key_file is not None:
        key = read_secret_file("--heartbeat-key-file", key_file)
        where = f"the heartbeat key file {key_file}"
    elif from_env:
        key, where = from_env.strip().encode(), f"{KEY_ENV}"
    elif insecure:
        log.warning("heartbeats are NOT authenticated (--insecure-no-heartbeat-auth)")
        return b""
    else:
        raise UsageError(f"no heartbeat key: give --heartbeat-key-file FILE or set {KEY_ENV} "
                         f"(or --insecure-no-heartbeat-auth for a test setup)")
    if len(key) < MIN_KEY_LEN:
        raise UsageError(f"{where} holds {len(key)} bytes; use at least {MIN_KEY_LEN}")
    return key


def _source(args: argparse.Namespace) -> TableSource:
    if args.announcements is not None:
        return FileSource(args.announcements)
    if args.kubeconfig is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise UsageError("no announcement table: give --announcements FILE or --kubeconfig FILE "
                         "(or run in a pod, for the in-cluster configuration)")
    source = ConfigMapSource(args.kubeconfig, args.namespace)
    source.check()
    return source


def run(args: argparse.Namespace) -> int:
    from reconciler.speaker.daemon import Speaker

    if not args.node:
        raise UsageError("--node NAME is required (or set NODE_NAME)")
    key = load_key(args.heartbeat_key_file, os.environ, args.insecure_no_heartbeat_auth)
    speaker = Speaker(args.node, key, _source(args), listen=args.listen or None)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        speaker.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    return speaker.run()
