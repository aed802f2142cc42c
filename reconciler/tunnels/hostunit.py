"""Connectors on the host (pure): a systemd unit per Tunnel, written beside its cloudflared config.

The guide's advice is to run the connector outside the cluster, so the way in survives a broken
cluster. In local mode portside writes ``cloudflared/<tunnel>.service``: ``Type=notify`` (cloudflared
tells systemd once it is connected), restarted on failure, and sandboxed as far as cloudflared
still works (it only reads its config and credentials and opens outbound connections).
Installing it stays the user's act (copy, daemon-reload, enable), as the README shows.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.desired.models import Tunnel
from reconciler.planning.live import LiveConnectors
from reconciler.planning.plan import JSON, Change, Target

UNIT = "ConnectorUnit"
HEADER = "# Written by portside from the Tunnel document; edits are overwritten.\n"

# Options cloudflared runs under: it needs outbound sockets, to read its files and (for ICMP
# proxying) nothing more privileged than an unprivileged ping socket.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "CapabilityBoundingSet=",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
)


def unit_path(name: str) -> str:
    """Where a tunnel's unit lives, relative to the state directory."""
    return f"cloudflared/{name}.service"


def token_file(tunnel: Tunnel) -> str | None:
    """The token file cloudflared reads: the connector's, else (remote tunnels) the default."""
    connector = tunnel.spec.connector
    assert connector is not None
    if connector.tokenFile:
        return connector.tokenFile
    return f"/etc/cloudflared/{tunnel.metadata.name}.token" if tunnel.spec.mode == "remote" else None


def unit_text(tunnel: Tunnel, config_path: str) -> str:
    """The unit file of ``tunnel``'s host connector; ``config_path``: its config's absolute path."""
    connector = tunnel.spec.connector
    assert connector is not None and connector.where == "host"
    name = tunnel.metadata.name
    command = [connector.cloudflaredPath, "--no-autoupdate"]
    if tunnel.spec.mode == "local":
        command += ["--config", config_path]
    command += ["tunnel", "--metrics", f"127.0.0.1:{connector.metricsPort}", "run"]
    token = token_file(tunnel)
    if token is not None:
        command += ["--token-file", token]
    lines = [
        "[Unit]",
        f"Description=cloudflared connector of tunnel {name} (portside)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "ExecStart=" + " ".join(_argument(a) for a in command),
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStartSec=0",
        *HARDENING,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return HEADER + "\n".join(lines) + "\n"


def _argument(text: str) -> str:
    """One ExecStart argument as systemd reads it: ``%`` starts a specifier, so it is doubled, and
    an argument with spaces, quotes or backslashes is double-quoted with C-style escapes."""
    text = text.replace("%", "%%")
    if not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _view(name: str, text: str) -> JSON:
    """What the plan shows of a unit: where it is and the command it runs."""
    command = next((line.removeprefix("ExecStart=") for line in text.splitlines()
                    if line.startswith("ExecStart=")), None)
    return {"path": unit_path(name), "command": command}


def plan_units(tunnels: tuple[Tunnel, ...], live: LiveConnectors | None) -> tuple[list[Change], list[str]]:
    """Unit file changes for host connectors, and warnings where they cannot be written."""
    wanted = [t for t in tunnels if t.spec.connector is not None and t.spec.connector.where == "host"]
    changes: list[Change] = []
    if live is None or live.host_dir is None:
        warnings = [f"connector of tunnel {t.metadata.name} runs on the host: its systemd unit is written in "
                    "local mode (--state DIR) only" for t in wanted]
        return changes, warnings
    declared = set()
    for tunnel in wanted:
        name = tunnel.metadata.name
        declared.add(name)
        text = unit_text(tunnel, f"{live.host_dir}/{name}.yml")
        after = _view(name, text)
        detail: dict[str, JSON] = {"text": text}
        current = live.units.get(name)
        if current is None:
            changes.append(Change(Target(UNIT, name), "create", None, after, f"write {unit_path(name)}", detail))
        elif current != text:
            before = _view(name, current)
            what = "its command" if before != after else "its settings"
            changes.append(Change(Target(UNIT, name), "update", before, after,
                                  f"rewrite {unit_path(name)}: {what} changed", detail))
        else:
            changes.append(Change(Target(UNIT, name), "no-op", after, after, "up to date", detail))
    for name in sorted(set(live.units) - declared):
        changes.append(Change(Target(UNIT, name), "delete", {"path": unit_path(name)}, None,
                              f"remove {unit_path(name)}: no Tunnel runs its connector on the host"))
    return changes, []


def portside_units(found: Mapping[str, str]) -> dict[str, str]:
    """The unit files among ``found`` that portside wrote (its header): only those are its own."""
    return {name: text for name, text in found.items() if text.startswith(HEADER)}
