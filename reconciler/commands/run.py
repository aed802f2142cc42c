"""`portside run`: the GitOps controller. Follow a git repo (or a directory) and keep applying it.

Wiring only: the source, the backend and the engine go into the controller loop; the webhook,
cluster watches, timers and leader election feed it triggers; the HTTP server shows its status.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from reconciler.backends import Backend, add_backend_arguments, select_backend
from reconciler.backends.local import DEFAULT_LOCK_TIMEOUT_S, holding
from reconciler.common.errors import ConfigError, UsageError, shown_under
from reconciler.common.httpserve import HTTPService, Request
from reconciler.controller.logs import configure_logging
from reconciler.controller.loop import Backoff, Controller, Timing, Trigger
from reconciler.controller.server import controller_routes
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.controller.webhook import forward_push, is_forwarded, load_secret
from reconciler.desired.models import build_all
from reconciler.planning.engine import ApplyPolicy, ReconcileResult, reconcile
from reconciler.source import Checkout, Source, default_cache_dir
from reconciler.source.directory import DirectorySource
from reconciler.source.git import GitSource, SignaturePolicy, load_auth

log = logging.getLogger("reconciler.run")

DEFAULT_LISTEN = ":8080"  # the speaker has :7473, so both run on one machine
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@github.com:org/repo.git

EPILOG = """\
examples:
  portside run --source https://github.com/me/homelab.git --path portside --webhook-secret-file /secrets/hook
  portside run --source git@github.com:me/homelab.git --ssh-key-file /secrets/id_ed25519 --ref v1.4.0
  portside run --source ./example-repo --state .portside        # re-plans on every save, no cluster

endpoints on --listen: GET / (the status page) /healthz /readyz /metrics /status, POST /hooks/git (GitHub
X-Hub-Signature-256 or X-Portside-Signature-256: sha256=<HMAC-SHA256 of the body>; with
X-Portside-Timestamp: <unix seconds>, X-Portside-Signature-256 signs "<timestamp>.<body>" and a
replay is refused). Each delivery is acted on once; bursts are coalesced into one fetch.
"""


def parse_duration(text: str) -> float:
    """``60``, ``30s``, ``1m``, ``1m30s``, ``500ms`` -> seconds (argparse type)."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    elif value and _DURATION.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
    else:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (examples: 30s, 1m, 1m30s, 500ms)")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be positive")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    src = parser.add_argument_group("source")
    src.add_argument("--source", required=True, metavar="GIT_URL|DIR",
                     help="a git URL (https://, ssh://, git@host:, file://) or a local directory")
    src.add_argument("--ref", default=None,
                     help="branch to follow, or tag or full commit SHA to pin (default: the remote's HEAD)")
    src.add_argument("--path", default="", metavar="SUBDIR", help="the directory inside the repo to read")
    src.add_argument("--interval", type=parse_duration, default=60.0, metavar="DURATION",
                     help="how often to poll the source (default 60s)")
    src.add_argument("--resync", type=parse_duration, default=600.0, metavar="DURATION",
                     help="how often to reconcile in full, repairing drift (default 10m)")
    src.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                     help="where clones and checkouts are kept (default $XDG_CACHE_HOME/portside)")
    src.add_argument("--git-token-file", type=Path, default=None, metavar="FILE",
                     help="HTTPS token for the remote (or env PORTSIDE_GIT_TOKEN)")
    src.add_argument("--git-username", default=None,
                     help="user name sent with the token (default x-access-token)")
    src.add_argument("--ssh-key-file", type=Path, default=None, metavar="FILE",
                     help="SSH private key (or the key itself in env PORTSIDE_GIT_SSH_KEY)")
    src.add_argument("--ssh-known-hosts", type=Path, default=None, metavar="FILE",
                     help="known_hosts for SSH remotes (default: trust on first use)")
    src.add_argument("--verify-signatures", action="store_true",
                     help="apply only commits signed by an allowed key (--allowed-signers or --gpg-home)")
    src.add_argument("--allowed-signers", type=Path, default=None, metavar="FILE",
                     help="SSH allowed signers file (git's gpg.ssh.allowedSignersFile)")
    src.add_argument("--gpg-home", type=Path, default=None, metavar="DIR",
                     help="GnuPG home holding the trusted public keys")
    ctl = parser.add_argument_group("controller")
    ctl.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                     help=f"address of the HTTP endpoints (default {DEFAULT_LISTEN})")
    ctl.add_argument("--webhook-secret-file", type=Path, default=None, metavar="FILE",
                     help="HMAC secret for POST /hooks/git (or env PORTSIDE_WEBHOOK_SECRET)")
    ctl.add_argument("--allow-mass-delete", action="store_true",
                     help="apply plans deleting more than --max-delete-fraction of what portside owns")
    ctl.add_argument("--max-delete-fraction", type=float, default=0.5, metavar="F",
                     help="refuse plans deleting more than this share of what portside owns (default 0.5)")
    ctl.add_argument("--no-leader-election", action="store_true",
                     help="do not take the Lease (a single replica; Kubernetes backend only)")
    ctl.add_argument("--lease-duration", type=parse_duration, default=15.0, metavar="DURATION",
                     help="how long a dead leader keeps the Lease (default 15s)")
    ctl.add_argument("--identity", default=None,
                     help="this replica's name in the Lease (default: $POD_NAME or host name + random)")
    ctl.add_argument("--once", action="store_true",
                     help="sync and reconcile once, then exit (0 applied, 1 error)")
    ctl.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    ctl.add_argument("--lock-timeout", type=parse_duration, default=DEFAULT_LOCK_TIMEOUT_S, metavar="DURATION",
                     help="with a local state directory, how long a reconcile waits while another portside "
                     f"process applies to it (default {DEFAULT_LOCK_TIMEOUT_S:g}s)")
    add_backend_arguments(parser, snapshot=False)


def build_source(args: argparse.Namespace) -> Source:
    cache_dir: Path = args.cache_dir or default_cache_dir()
    text: str = args.source
    if "://" not in text and not _SCP_LIKE.match(text):
        if args.ref or args.verify_signatures:
            raise UsageError(f"--source {text}: --ref and --verify-signatures need a git URL, not a directory")
        path = Path(text) / args.path if args.path else Path(text)
        return DirectorySource(path, cache_dir=cache_dir)
    verify = None
    if args.verify_signatures:
        if args.allowed_signers is None and args.gpg_home is None:
            raise UsageError("--verify-signatures needs --allowed-signers FILE or --gpg-home DIR")
        for flag, path in (("--allowed-signers", args.allowed_signers), ("--gpg-home", args.gpg_home)):
            if path is not None and not path.exists():
                raise UsageError(f"{flag} {path}: no such file or directory")
        verify = SignaturePolicy(allowed_signers=args.allowed_signers, gpg_home=args.gpg_home)
    auth = load_auth(args.git_token_file, args.ssh_key_file, args.ssh_known_hosts, args.git_username,
                     key_dir=cache_dir)
    return GitSource(text, ref=args.ref, path=args.path, cache_dir=cache_dir, auth=auth, verify=verify)


def kube_api(backend: Backend) -> Any | None:
    """The Kubernetes API client of a cluster backend (None in local mode)."""
    from kubernetes import client

    api = getattr(backend, "api", None)
    return api if isinstance(api, client.ApiClient) else None


# Modules the Cloudflare SDK imports lazily on first use, taking seconds; importing them while
# starting (or standing by) keeps that out of the first reconcile and out of a leader takeover.
_LAZY_SDK_MODULES = ("cloudflare.resources.zero_trust", "cloudflare.resources.dns", "cloudflare.resources.zones")


def _warm_imports() -> None:
    import importlib

    for name in _LAZY_SDK_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # another SDK layout: the first reconcile imports what it needs
            log.debug("cannot pre-import %s", name)


def run(args: argparse.Namespace) -> int:
    verbose = int(getattr(args, "verbose", 0))
    configure_logging(args.log_format, logging.DEBUG if verbose >= 2 else logging.INFO)
    build_all()  # validators built here, before any thread could be the first to use one
    if os.environ.get("CLOUDFLARE_API_TOKEN"):
        threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
    source = build_source(args)
    backend = select_backend(args)
    if backend.read_only:
        raise UsageError(f"cannot run against {backend.description}")
    policy = ApplyPolicy(max_delete_fraction=args.max_delete_fraction, allow_mass_delete=args.allow_mass_delete,
                         owner_id=args.owner_id)
    secret = load_secret(args.webhook_secret_file)
    identity = args.identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    status = StatusBoard(source=source.describe(), identity=identity)
    metrics = ControllerMetrics()
    api = kube_api(backend)

    def reconcile_checkout(checkout: Checkout) -> ReconcileResult:
        try:
            with holding(backend, args.lock_timeout):  # one read-plan-write at a time per state dir
                return reconcile(checkout.root, backend, checkout.revision, policy=policy)
        except ConfigError as exc:  # name files from the repo's top, as a git host shows them
            raise shown_under(exc, args.path) if args.path else exc from None

    events = None
    if api is not None:
        from reconciler.controller.events import kube_event_sink

        events = kube_event_sink(api, args.namespace)
    timing = Timing(interval=args.interval, resync=args.resync, backoff=Backoff(1.0, 300.0))
    elector = None
    if api is not None and not args.no_leader_election and not args.once:
        from kubernetes import client

        from reconciler.controller.leader import LeaderElector

        elector = LeaderElector(client.ApiClient(api.configuration), args.namespace, identity,
                                lease_duration=args.lease_duration, retry_period=min(2.0, args.lease_duration / 5))
    secrets = source.secrets() if isinstance(source, GitSource) else []
    if secret is not None:
        secrets.append(secret.decode(errors="replace"))
    controller = Controller(source, reconcile_checkout, timing=timing, status=status, metrics=metrics,
                            is_leader=elector.is_leader if elector else lambda: True, events=events,
                            secrets=secrets)
    log.info("portside run: %s -> %s (identity %s)", source.describe(), backend.description, identity)
    if args.once:
        controller.step(frozenset({Trigger.STARTUP}))
        errors = status.snapshot()["errors"]
        for line in errors:
            log.error("%s", line)
        return 1 if errors else 0
    return _serve(args, controller, source, api, elector, secret)


def webhook_address(port: int) -> str | None:
    """host:port where this replica takes webhooks, from the downward API's POD_IP (in a cluster)."""
    pod_ip = os.environ.get("POD_IP")
    if not pod_ip:
        return None
    return f"[{pod_ip}]:{port}" if ":" in pod_ip else f"{pod_ip}:{port}"


def _serve(args: argparse.Namespace, controller: Controller, source: Source, api: Any | None,
           elector: Any | None, secret: bytes | None) -> int:
    stop = threading.Event()
    def on_push(request: Request) -> None:
        # A Service spreads webhooks over both replicas: a standby hands its share to the leader.
        if elector is not None and not elector.is_leader() and not is_forwarded(request):
            leader = elector.leader_address()
            if leader is not None:
                threading.Thread(target=forward_push, args=(leader, request), daemon=True).start()
                return
        controller.trigger(Trigger.WEBHOOK)

    routes = controller_routes(controller.status, controller.metrics, webhook_secret=secret,
                               on_push=on_push, ready=controller.first_step.is_set)
    server = HTTPService(args.listen, routes).start()
    log.info("serving / /healthz /readyz /metrics /status /hooks/git on port %d", server.port)
    stoppers: list[Any] = [server.stop]
    if elector is not None:
        elector.address = webhook_address(server.port)  # before the campaign starts, so the Lease says it

    def on_leadership(leading: bool) -> None:
        controller.status.update(leader=leading)
        controller.metrics.leader.set(1 if leading else 0)
        if leading:
            controller.trigger(Trigger.LEADER)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()
        threading.Thread(target=controller.stop_waiting, daemon=True).start()

    try:
        if elector is not None:
            elector.on_change = on_leadership
            stoppers.insert(0, elector.start().stop)
        else:
            on_leadership(True)
        if api is not None:
            from kubernetes import client

            from reconciler.controller.watch import ClusterWatcher, watched_kinds

            def on_cluster_change(why: str) -> None:
                log.debug("watch: %s", why)
                controller.trigger(Trigger.WATCH)

            watcher = ClusterWatcher(watched_kinds(client.ApiClient(api.configuration)), on_cluster_change)
            stoppers.insert(0, watcher.start().stop)
        if isinstance(source, DirectorySource):
            watching = threading.Thread(target=source.watch, name="watch-source", daemon=True,
                                        args=(stop, lambda: controller.trigger(Trigger.SOURCE)))
            watching.start()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        controller.run(stop)
    finally:
        stop.set()
        for stopper in stoppers:  # watches and the Lease first, so the next leader starts at once
            stopper()
    return 0
