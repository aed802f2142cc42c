"""Cloudflare tunnels: routes -> ingress rules, the tunnel/DNS planner, local config files.

``rules`` and ``plan``/``dns`` are pure; ``local`` reads and writes cloudflared config files in the
state directory; the Cloudflare API itself is :mod:`reconciler.providers.cloudflare`.
"""

from reconciler.tunnels.snapshot import tunnels_from_json, tunnels_to_json, zones_from_json, zones_to_json

__all__ = ["tunnels_from_json", "tunnels_to_json", "zones_from_json", "zones_to_json"]
