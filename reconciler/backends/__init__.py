"""Choosing the live world a command works against: a state dir, a cluster, or a snapshot.

With no flag: Kubernetes when a kubeconfig or in-cluster config exists, else the local state
directory `.portside/` — so `portside apply example-repo` works on a fresh machine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from reconciler.backends.base import ApplyReport, Backend
from reconciler.common.errors import UsageError

DEFAULT_STATE_DIR = Path(".portside")
DEFAULT_NAMESPACE = "portside-system"
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

__all__ = ["ApplyReport", "Backend", "add_backend_arguments", "select_backend"]


def add_backend_arguments(parser: argparse.ArgumentParser, *, snapshot: bool = True) -> None:
    group = parser.add_argument_group(
        "backend (the live world; default: a cluster if a kubeconfig or in-cluster config exists, "
        "else the local state directory .portside/)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--state", metavar="DIR", type=Path,
                        help="use a local state directory (no cluster needed)")
    choice.add_argument("--kubeconfig", metavar="FILE", type=Path,
                        help="use the cluster of this kubeconfig (env KUBECONFIG works too)")
    choice.add_argument("--in-cluster", action="store_true",
                        help="use the in-cluster service account (the default inside a Pod)")
    if snapshot:
        choice.add_argument("--snapshot", metavar="FILE", type=Path,
                            help="read-only live state saved by `portside snapshot` (diff only)")
    group.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                       help=f"where portside keeps its ConfigMap, Lease and Events (default {DEFAULT_NAMESPACE})")
    group.add_argument("--owner-id", default="portside",
                       help="ownership marker for DNS records (several portsides may share a zone)")
    group.add_argument("--local-tunnels-dir", metavar="DIR", type=Path, default=None,
                       help="with a cluster backend, write the cloudflared configs of `local` tunnels "
                       "here instead of ConfigMaps portside-cloudflared-<tunnel> (key config.yml)")


def _default_kubeconfig() -> Path | None:
    env = os.environ.get("KUBECONFIG")
    if env:
        first = Path(env.split(os.pathsep)[0])
        return first if first.exists() else None
    home = Path.home() / ".kube" / "config"
    return home if home.exists() else None


def select_backend(args: argparse.Namespace) -> Backend:
    """The backend the arguments ask for (Cloudflare credentials come from the environment)."""
    snapshot_path: Path | None = getattr(args, "snapshot", None)
    if snapshot_path is not None:
        from reconciler.planning.snapshot import SnapshotBackend

        return SnapshotBackend(snapshot_path)
    cloudflare = None
    if os.environ.get("CLOUDFLARE_API_TOKEN"):  # the SDK is imported only when it will be used
        from reconciler.providers.cloudflare import CloudflareProvider

        cloudflare = CloudflareProvider.from_env()
    state_dir: Path | None = args.state
    kubeconfig: Path | None = args.kubeconfig
    in_cluster = bool(args.in_cluster)
    if state_dir is None and kubeconfig is None and not in_cluster:
        if IN_CLUSTER_TOKEN.exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            in_cluster = True
        else:
            kubeconfig = _default_kubeconfig()
            if kubeconfig is None:
                state_dir = DEFAULT_STATE_DIR
    if state_dir is not None:
        from reconciler.backends.local import LocalBackend

        return LocalBackend(state_dir, cloudflare)
    if kubeconfig is not None and not kubeconfig.exists():
        raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
    from reconciler.backends.kube import KubeBackend

    return KubeBackend.connect(kubeconfig=kubeconfig, namespace=args.namespace, cloudflare=cloudflare,
                               local_tunnels_dir=args.local_tunnels_dir)
