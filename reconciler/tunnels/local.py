"""``local`` tunnels: cloudflared config files in the state directory (the shell around them).

The file is what ``cloudflared tunnel --config FILE run`` reads: ``tunnel``, ``credentials-file``,
a top-level ``originRequest`` and the ``ingress`` list ending with the catch-all. It is written
atomically (temporary file in the same directory, fsync, rename), so cloudflared or a crash
never sees half a file, and read back into the same LiveTunnel shape the API gives.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.atomic import write_atomic
from reconciler.desired import DesiredState
from reconciler.errors import StateError
from reconciler.live import LiveTunnel
from reconciler.plan import JSON
from reconciler.tunnels.plan import local_config_path
from reconciler.tunnels.rules import origin_request_api, origin_request_yaml, rule_from_json

HEADER = "# Written by portside from the Tunnel and TunnelRoute documents; edits are overwritten.\n"


def read_local_tunnels(state_dir: Path, desired: DesiredState) -> dict[str, LiveTunnel]:
    """The config file of every ``local`` Tunnel document, as LiveTunnels.

    A missing file is a tunnel with no configuration (``ingress=None``); an unreadable or
    malformed one carries ``error`` (the planner rewrites it and says why).
    """
    out: dict[str, LiveTunnel] = {}
    for tunnel in desired.tunnels:
        if tunnel.spec.mode != "local":
            continue
        name = tunnel.metadata.name
        path = state_dir / local_config_path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            out[name] = LiveTunnel(name=name, tunnel_id=None, ingress=None)
            continue
        except OSError as exc:
            out[name] = LiveTunnel(name=name, tunnel_id=None, ingress=None,
                                   error=f"{path}: cannot read ({exc.strerror})")
            continue
        out[name] = parse_config(name, text, str(path))
    out.update(_orphans(state_dir, desired))
    return out


def _orphans(state_dir: Path, desired: DesiredState) -> dict[str, LiveTunnel]:
    """Config files portside wrote for local tunnels that are no longer declared: the planner
    deletes them, so a removed Tunnel stops being served by a cloudflared that reads the dir.
    Files without portside's header are someone else's and never touched."""
    declared = {t.metadata.name for t in desired.tunnels if t.spec.mode == "local"}
    directory = state_dir / local_config_path("x").rpartition("/")[0]
    found: dict[str, LiveTunnel] = {}
    for path in sorted(directory.glob("*.yml")) if directory.is_dir() else []:
        name = path.name.removesuffix(".yml")
        if name in declared or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.startswith(HEADER):
            found[name] = parse_config(name, text, str(path))
    return found


def delete_local_tunnel(state_dir: Path, name: str) -> None:
    """Remove an orphaned config file (already gone is fine: the plan is converged)."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / local_config_path(name)).unlink()


def parse_config(name: str, text: str, where: str) -> LiveTunnel:
    """A cloudflared config file's text as a LiveTunnel (durations normalised to seconds)."""
    try:
        data: Any = YAML(typ="safe").load(text)
    except YAMLError as exc:
        return LiveTunnel(name=name, tunnel_id=None, ingress=None, error=f"{where}: not valid YAML ({exc})")
    if not isinstance(data, Mapping) or not isinstance(data.get("ingress"), list):
        return LiveTunnel(name=name, tunnel_id=None, ingress=None,
                          error=f"{where}: not a cloudflared config (no ingress list)")
    rules = data["ingress"]
    if not all(isinstance(r, Mapping) for r in rules):
        return LiveTunnel(name=name, tunnel_id=None, ingress=None,
                          error=f"{where}: an ingress rule is not a mapping")
    top = data.get("originRequest")
    tunnel_ref = data.get("tunnel")
    return LiveTunnel(
        name=name,
        tunnel_id=None if tunnel_ref is None else str(tunnel_ref),
        ingress=tuple(rule_from_json(r) for r in rules),
        origin_request=origin_request_api(top if isinstance(top, Mapping) else None),
    )


def render_config(config: Mapping[str, JSON]) -> str:
    """The YAML text of a config: durations as Go durations, keys in cloudflared's usual order."""
    doc: dict[str, Any] = dict(config)
    if isinstance(doc.get("originRequest"), Mapping):
        doc["originRequest"] = origin_request_yaml(doc["originRequest"])
    ingress = []
    for rule in doc.get("ingress") or []:
        entry = dict(rule)
        if isinstance(entry.get("originRequest"), Mapping):
            entry["originRequest"] = origin_request_yaml(entry["originRequest"])
        ingress.append(entry)
    doc["ingress"] = ingress
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return HEADER + buf.getvalue()


def write_local_tunnel(state_dir: Path, name: str, config: JSON) -> Path:
    """Write a local tunnel's config file atomically; returns its path."""
    path = state_dir / local_config_path(name)
    text = render_config(config)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
