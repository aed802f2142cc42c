"""The Cloudflare side of every backend: local tunnels as files, remote ones through the API.

Both the local and the Kubernetes backend hold one of these, so tunnels and DNS plan and apply
the same way whatever runs the cluster side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.backends.base import ApplyReport
from reconciler.common.errors import ProviderError
from reconciler.desired.state import DesiredState
from reconciler.planning.live import LiveTunnel, LiveZone, PublicAddress
from reconciler.planning.plan import Change, Plan
from reconciler.tunnels.local import ConfigStore, delete_local_tunnel, read_local_tunnels, write_local_tunnel
from reconciler.tunnels.plan import local_config_path

if TYPE_CHECKING:  # the SDK takes 0.35 s to import; only a token needs it
    from reconciler.providers.cloudflare import CloudflareProvider

TUNNEL_KINDS = ("Tunnel", "TunnelConfiguration", "DNSRecord")


class TunnelSide:
    def __init__(self, store: ConfigStore, cloudflare: CloudflareProvider | None) -> None:
        self.store = store
        self.cloudflare = cloudflare

    def read(self, desired: DesiredState) -> tuple[dict[str, LiveTunnel], dict[str, LiveZone]]:
        tunnels = read_local_tunnels(self.store, desired)
        zones: dict[str, LiveZone] = {}
        if self.cloudflare is not None:
            remote, zones = self.cloudflare.read(desired)
            tunnels.update(remote)
        return tunnels, zones

    def connector_tokens(self, desired: DesiredState,
                         tunnels: dict[str, LiveTunnel]) -> tuple[dict[str, str], dict[str, str]]:
        """The tokens of the tunnels whose connector runs in the cluster (read, never written,
        so a converged run stays write-free), and why a tunnel has none."""
        tokens: dict[str, str] = {}
        problems: dict[str, str] = {}
        for tunnel in desired.tunnels:
            name, spec = tunnel.metadata.name, tunnel.spec
            if spec.connector is None or spec.connector.where != "cluster":
                continue
            live = tunnels.get(name)
            tunnel_id = spec.tunnelId if spec.mode == "local" else (live.tunnel_id if live else None)
            if self.cloudflare is None:
                problems[name] = ("its token comes from the Cloudflare API: set CLOUDFLARE_API_TOKEN "
                                  "(a token with Cloudflare Tunnel:Edit)")
            elif tunnel_id is None or spec.accountId is None:
                problems[name] = "the tunnel does not exist yet; its connector follows on the run after it is created"
            else:
                try:
                    tokens[name] = self.cloudflare.read_tunnel_token(spec.accountId, tunnel_id)
                except ProviderError as exc:
                    problems[name] = str(exc)
        return tokens, problems

    def addresses(self, desired: DesiredState) -> dict[str, PublicAddress]:
        """The public addresses the DynamicDNS documents follow, asked of their sources now.

        Not asked without a Cloudflare token: the records could not be read or written anyway.
        """
        if not desired.dynamic_dns or self.cloudflare is None:
            return {}
        from reconciler.ddns.lookup import lookup_addresses

        return lookup_addresses(desired.dynamic_dns)

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        remote: list[Change] = []
        for change in plan.actionable:
            if change.target.kind not in TUNNEL_KINDS:
                continue
            if change.target.kind == "TunnelConfiguration" and change.detail.get("mode") == "local":
                if change.action == "delete":
                    delete_local_tunnel(self.store, change.target.id)
                else:
                    config = plan.artifacts[local_config_path(change.target.id)]
                    write_local_tunnel(self.store, change.target.id, config)
                report.applied += 1
            else:
                remote.append(change)
        if remote and self.cloudflare is None:
            report.errors.append(f"{len(remote)} Cloudflare change(s) not applied: set CLOUDFLARE_API_TOKEN "
                                 "(a token with Cloudflare Tunnel:Edit and DNS:Edit)")
        elif remote and self.cloudflare is not None:
            outcome = self.cloudflare.apply(remote)
            report.merge(ApplyReport(outcome.applied, list(outcome.errors)))
        return report
