"""``local`` tunnels: cloudflared config files (the shell around them), in the state directory or,
with a cluster backend, in ConfigMaps.

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
from typing import Any, Protocol

from reconciler.common.atomic import write_atomic
from reconciler.common.errors import StateError
from reconciler.desired.state import DesiredState
from reconciler.desired.yamlsource import parse_yaml
from reconciler.planning.live import LiveTunnel
from reconciler.planning.plan import JSON
from reconciler.tunnels.plan import local_config_path
from reconciler.tunnels.rules import origin_request_api, origin_request_yaml, rule_from_json

HEADER = "# Written by portside from the Tunnel and TunnelRoute documents; edits are overwritten.\n"


class ConfigStore(Protocol):
    """Where the config files of ``local`` tunnels live: a directory, or ConfigMaps in a cluster
    (a cloudflared Deployment mounts one, as Cloudflare's Kubernetes guide sets it up)."""

    def where(self, name: str) -> str:
        """Where ``name``'s config lives, for messages."""
        ...

    def read(self, name: str) -> str | None:
        """The config text, None when there is none; OSError when it cannot be read."""
        ...

    def names(self) -> list[str]:
        """Every tunnel name with a stored config (portside's or not: the header tells)."""
        ...

    def write(self, name: str, text: str) -> None: ...

    def delete(self, name: str) -> None: ...


class DirectoryStore:
    """``cloudflared/<name>.yml`` below the state directory, each written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def path(self, name: str) -> Path:
        return self.state_dir / local_config_path(name)

    def where(self, name: str) -> str:
        return str(self.path(name))

    def read(self, name: str) -> str | None:
        try:
            return self.path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        directory = self.path("x").parent
        if not directory.is_dir():
            return []
        return [p.name.removesuffix(".yml") for p in sorted(directory.glob("*.yml")) if not p.is_symlink()]

    def write(self, name: str, text: str) -> None:
        write_atomic(self.path(name), text)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # already gone: the plan is converged
            self.path(name).unlink()


def _store(where: Path | ConfigStore) -> ConfigStore:
    return DirectoryStore(where) if isinstance(where, Path) else where


def read_local_tunnels(where: Path | ConfigStore, desired: DesiredState) -> dict[str, LiveTunnel]:
    """The config of every ``local`` Tunnel document, as LiveTunnels, plus portside's configs of
    tunnels no longer declared (the planner deletes those, so a removed Tunnel stops being
    served). A missing config is a tunnel with no configuration (``ingress=None``); an
    unreadable or malformed one carries ``error`` (the planner rewrites it and says why).
    Configs without portside's header are someone else's and never touched.
    """
    store = _store(where)
    declared = [t.metadata.name for t in desired.tunnels if t.spec.mode == "local"]
    out: dict[str, LiveTunnel] = {}
    for name in declared:
        try:
            text = store.read(name)
        except (OSError, UnicodeDecodeError) as exc:
            out[name] = LiveTunnel(name=name, tunnel_id=None, ingress=None,
                                   error=f"{store.where(name)}: cannot read ({exc})")
            continue
        out[name] = (LiveTunnel(name=name, tunnel_id=None, ingress=None) if text is None
                     else parse_config(name, text, store.where(name)))
    for name in store.names():
        if name in declared:
            continue
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = store.read(name)
            if text is not None and text.startswith(HEADER):
                out[name] = parse_config(name, text, store.where(name))
    return out


def delete_local_tunnel(where: Path | ConfigStore, name: str) -> None:
    """Remove the config of a tunnel that is no longer declared."""
    _store(where).delete(name)


def parse_config(name: str, text: str, where: str) -> LiveTunnel:
    """A cloudflared config file's text as a LiveTunnel (durations normalised to seconds).

    Read as YAML 1.2 (core schema) by the loader of the desired state: libyaml, and every
    problem at its file:line:col. The file was written by ruamel.yaml, whose YAML 1.2 leaves a
    few number-like texts plain (``.5e3``, ``.iNf``, ``0x 1F``) that the core schema reads as
    numbers. portside writes no numbers there but one integer option, so where one turns up
    the file is read again by ruamel (the reading it was written for); ruamel is imported only
    then, or to write, never on the common path (reading with ruamel was 0.08 s of a converged
    10,000-Service diff, and importing it 0.03 s; libyaml reads the same file in 0.02 s).
    """
    documents, problems = parse_yaml(text.encode("utf-8"), where)
    if problems:
        first = problems[0]
        return LiveTunnel(name=name, tunnel_id=None, ingress=None,
                          error=f"{first.file}:{first.line}:{first.col}: not valid YAML ({first.message})")
    if len(documents) > 1:
        return LiveTunnel(name=name, tunnel_id=None, ingress=None,
                          error=f"{where}: not valid YAML (it holds {len(documents)} documents, "
                                "a cloudflared config one)")
    data: Any = documents[0].value if documents else None
    if _numbers_where_portside_writes_text(data):
        data = _ruamel_reading(text)
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


# The only option portside writes as a number (durations are written as Go durations, text).
_NUMBER_OPTIONS = frozenset({"keepAliveConnections"})


def _numbers_where_portside_writes_text(data: object) -> bool:
    """Whether a value the reader uses is a number where portside writes text: a plain scalar
    the two YAML 1.2 readings may disagree on (or a hand edit, which ruamel reads as before)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("ingress"), list):
        return False

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def odd_options(options: object) -> bool:
        return isinstance(options, Mapping) and any(
            number(value) and (key not in _NUMBER_OPTIONS or isinstance(value, float))
            for key, value in options.items())

    if number(data.get("tunnel")) or odd_options(data.get("originRequest")):
        return True
    return any(isinstance(rule, Mapping) and (
        number(rule.get("hostname")) or number(rule.get("path")) or number(rule.get("service"))
        or odd_options(rule.get("originRequest"))) for rule in data["ingress"])


def _ruamel_reading(text: str) -> Any:
    """The file as ruamel.yaml reads it (only reached when libyaml's reading is in doubt, so the
    file parsed already: a failure here would be ruamel's own limits, reported as the file's)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe").load(text)
    except YAMLError:
        return None


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
    from ruamel.yaml import YAML  # 30 ms to import: only a write needs it

    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return HEADER + buf.getvalue()


def write_local_tunnel(where: Path | ConfigStore, name: str, config: JSON) -> str:
    """Write a local tunnel's config (atomically, whole); returns where it went."""
    store = _store(where)
    text = render_config(config)
    try:
        store.write(name, text)
    except OSError as exc:
        raise StateError(f"cannot write {store.where(name)}: {exc.strerror or exc}") from exc
    return store.where(name)
