"""The Cloudflare provider: remote tunnels, their configurations and DNS records, over the official SDK.

A thin shell: it reads live state into the planner's plain values and applies the planner's
changes; every decision is in :mod:`reconciler.tunnels.plan`. Every call goes through
:meth:`CloudflareProvider._call`, which

- checks the v4 envelope itself: an HTTP 200 with ``success: false`` is an error (the SDK would
  hand back ``None``);
- waits out a 429 for its ``Retry-After``, within one bounded budget per provider (the SDK's own
  retries are off, so the budget is ours); 5xx answers to reads are retried the same way, writes
  never (a write the server may have done is re-read and re-planned next run, not repeated);
- turns 401/403 into a :class:`ProviderError` naming the token permission that is missing;
- never lets the API token into a message.

Failures are per tunnel and per zone: ``read`` records them in ``LiveTunnel.error`` /
``LiveZone.error`` and ``apply`` reports them in :class:`ApplyOutcome`, so one bad zone does not
stop the others, and the next run retries it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import cloudflare
import httpx

from reconciler.common.errors import ProviderError
from reconciler.desired.models import Tunnel
from reconciler.desired.state import DesiredState
from reconciler.planning.live import DNSRecord, LiveTunnel, LiveZone
from reconciler.planning.plan import JSON, Change
from reconciler.tunnels.dns import PENDING_TUNNEL_ID, record_name, tunnel_target
from reconciler.tunnels.rules import rule_from_json

# Token permissions, as the dashboard names them (what the user has to grant).
ZONE_READ = "Zone:Zone:Read"
DNS_READ = "Zone:DNS:Read"
DNS_EDIT = "Zone:DNS:Edit"
TUNNEL_READ = "Account:Cloudflare Tunnel:Read"
TUNNEL_EDIT = "Account:Cloudflare Tunnel:Edit"

ZONES_PER_PAGE = 50  # the API's maximum for /zones
TUNNELS_PER_PAGE = 100
RECORDS_PER_PAGE = 5000
# Changes per batch call: the batch endpoint's limit on the Free plan (paid plans allow more).
MAX_BATCH = 200


@dataclass
class ApplyOutcome:
    applied: int = 0
    errors: list[str] = field(default_factory=list)


class CloudflareProvider:
    """Reads and writes the Cloudflare side of the plan through the official ``cloudflare`` SDK."""

    def __init__(self, api_token: str, *, base_url: str | None = None, retry_budget_s: float = 30.0) -> None:
        self._token = api_token
        self._client = cloudflare.Cloudflare(api_token=api_token, base_url=base_url, max_retries=0,
                                             timeout=httpx.Timeout(30.0, connect=10.0))
        self._retry_budget = retry_budget_s
        self._budget_left = retry_budget_s
        self.max_batch = MAX_BATCH
        self.api_calls = 0  # requests sent, retries included (for bench/ and metrics)
        # Live configurations by tunnel id, as read: a PUT replaces the whole config, so the keys
        # portside does not manage (warp-routing) are carried over from what was read.
        self._configs: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(cls) -> CloudflareProvider | None:
        """From ``CLOUDFLARE_API_TOKEN`` (and ``CLOUDFLARE_BASE_URL``); None without a token."""
        token = os.environ.get("CLOUDFLARE_API_TOKEN", "").strip()
        if not token:
            return None
        return cls(token, base_url=os.environ.get("CLOUDFLARE_BASE_URL") or None)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ reading

    def read(self, desired: DesiredState) -> tuple[dict[str, LiveTunnel], dict[str, LiveZone]]:
        """Remote tunnels (with their configuration) and the zones their DNS may live in.

        A read starts a run: the retry budget is the run's (read and apply together), so a
        long-lived provider in ``portside run`` gets a fresh one every reconcile.
        """
        self._budget_left = self._retry_budget
        self._configs.clear()
        tunnels: dict[str, LiveTunnel] = {}
        for tunnel in desired.tunnels:
            if tunnel.spec.mode != "remote":
                continue
            name = tunnel.metadata.name
            try:
                tunnels[name] = self._read_tunnel(tunnel)
            except ProviderError as exc:
                tunnels[name] = LiveTunnel(name=name, tunnel_id=None, ingress=None, error=str(exc))
        return tunnels, self._read_zones(desired)

    def _read_tunnel(self, tunnel: Tunnel) -> LiveTunnel:
        spec, name = tunnel.spec, tunnel.metadata.name
        account = str(spec.accountId)
        api = self._client.zero_trust.tunnels.cloudflared.with_raw_response
        found: dict[str, Any] | None = None
        if spec.tunnelId:
            try:
                found = self._call(f"read tunnel {spec.tunnelId}", TUNNEL_READ,
                                   lambda: api.get(str(spec.tunnelId), account_id=account))
            except ProviderError as exc:
                if exc.status != 404:
                    raise
            if found is not None and found.get("deleted_at"):
                found = None
        # By name when no id is given, or when the id is gone but a name is (a tunnel portside
        # created is then found again, not created a second time).
        if found is None and (not spec.tunnelId or spec.tunnelName):
            wanted = spec.tunnelName or name
            listed = self._call(f"find tunnel {wanted}", TUNNEL_READ,
                                lambda: api.list(account_id=account, name=wanted, is_deleted=False))
            found = next((t for t in listed or [] if t.get("name") == wanted), None)
        if found is None:
            return LiveTunnel(name=name, tunnel_id=None, ingress=None)
        tunnel_id = str(found["id"])
        result = self._call(f"read configuration of tunnel {tunnel_id}", TUNNEL_READ,
                            lambda: api.configurations.get(tunnel_id, account_id=account))
        config = (result or {}).get("config")
        if not isinstance(config, dict) or not isinstance(config.get("ingress"), list):
            return LiveTunnel(name=name, tunnel_id=tunnel_id, ingress=None)
        self._configs[tunnel_id] = config
        top = config.get("originRequest")
        return LiveTunnel(
            name=name,
            tunnel_id=tunnel_id,
            ingress=tuple(rule_from_json(r) for r in config["ingress"] if isinstance(r, dict)),
            origin_request=dict(rule_from_json({"originRequest": top}).origin_request)
            if isinstance(top, dict) else {},
        )

    def read_tunnel_token(self, account_id: str, tunnel_id: str) -> str:
        """The token cloudflared runs the tunnel with (``tunnel run --token``): a secret, so it is
        returned to the caller only, never logged or put in a message. The endpoint wants
        Cloudflare Tunnel:Edit, not Read."""
        api = self._client.zero_trust.tunnels.cloudflared.token.with_raw_response
        result = self._call(f"read the token of tunnel {tunnel_id}", TUNNEL_EDIT,
                            lambda: api.get(tunnel_id, account_id=account_id))
        if not isinstance(result, str) or not result:
            raise ProviderError(f"Cloudflare read the token of tunnel {tunnel_id}: the answer holds no token",
                                temporary=True)
        return result

    def read_account_tunnels(self, account_id: str) -> list[tuple[str, LiveTunnel]]:
        """Every active tunnel of an account as (its name at Cloudflare, what it holds).

        A tunnel configured by its local cloudflared config (not through the API) has no
        configuration here: its ``ingress`` is None.
        """
        self._budget_left = self._retry_budget
        api = self._client.zero_trust.tunnels.cloudflared.with_raw_response
        listed = self._paged(f"list tunnels of account {account_id}", TUNNEL_READ, TUNNELS_PER_PAGE,
                             lambda page: api.list(account_id=account_id, is_deleted=False, page=page,
                                                   per_page=TUNNELS_PER_PAGE))
        out: list[tuple[str, LiveTunnel]] = []
        for item in sorted(listed, key=lambda t: (str(t.get("name")), str(t.get("id")))):
            if item.get("deleted_at"):
                continue
            name = str(item.get("name"))
            document = Tunnel.model_validate({
                "apiVersion": "portside.io/v1alpha1", "kind": "Tunnel", "metadata": {"name": "imported"},
                "spec": {"mode": "remote", "accountId": account_id, "tunnelId": str(item["id"])}})
            out.append((name, self._read_tunnel(document)))
        return out

    def read_all_zones(self) -> dict[str, LiveZone]:
        """Every zone the token can read, with all its records."""
        return self._read_zones(DesiredState())

    def _read_zones(self, desired: DesiredState) -> dict[str, LiveZone]:
        """Every zone the DNS-managing tunnels may use, with all its records.

        All records of a zone are read, not only ours: a record of the same name that is not
        ours is a conflict the plan must show. When every DNS-managing tunnel names its zones,
        only those are read; with no such tunnel at all, every zone is, so the records of a
        Tunnel removed from Git are still found and deleted.
        """
        managing = [t for t in desired.tunnels if t.spec.dns.manage
                    and (t.spec.mode == "remote" or t.spec.tunnelId)]
        scope = None
        dynamic = desired.dynamic_dns
        if managing and all(t.spec.dns.zones for t in managing) and all(d.spec.zone for d in dynamic):
            scope = {z.lower() for t in managing for z in t.spec.dns.zones}
            scope.update(str(d.spec.zone).lower() for d in dynamic)
        try:
            listed = self._paged("list zones", ZONE_READ, ZONES_PER_PAGE,
                                 lambda page: self._client.zones.with_raw_response.list(
                                     page=page, per_page=ZONES_PER_PAGE))
        except ProviderError as exc:
            return {"(all zones)": LiveZone(name="(all zones)", zone_id=None, error=str(exc))}
        zones: dict[str, LiveZone] = {}
        for item in sorted(listed, key=lambda z: str(z.get("name"))):
            zone_name, zone_id = str(item["name"]).lower(), str(item["id"])
            if scope is not None and zone_name not in scope:
                continue
            try:
                records = self._paged(
                    f"list DNS records of zone {zone_name}", DNS_READ, RECORDS_PER_PAGE,
                    lambda page, zid=zone_id: self._client.dns.records.with_raw_response.list(  # type: ignore[misc]
                        zone_id=zid, page=page, per_page=RECORDS_PER_PAGE))
            except ProviderError as exc:
                zones[zone_name] = LiveZone(name=zone_name, zone_id=zone_id, error=str(exc))
                continue
            zones[zone_name] = LiveZone(name=zone_name, zone_id=zone_id, records=tuple(
                DNSRecord(zone=zone_name, name=str(r["name"]).lower(), type=str(r["type"]),
                          content=str(r.get("content") or ""), proxied=bool(r.get("proxied")),
                          comment=str(r.get("comment") or ""), record_id=str(r["id"]),
                          ttl=int(r.get("ttl") or 1))
                for r in records))
        return zones

    # ------------------------------------------------------------------ applying

    def apply(self, changes: Sequence[Change]) -> ApplyOutcome:
        """Tunnel creates, then configuration PUTs, then one DNS batch per zone.

        Only remote-tunnel and DNS changes are acted on (local configuration files are the state
        backend's); conflicts and no-ops are skipped. A failure is recorded and the rest goes on.
        """
        outcome = ApplyOutcome()
        created: dict[str, str] = {}
        for change in changes:
            if change.target.kind == "Tunnel" and change.action == "create":
                self._create_tunnel(change, created, outcome)
        for change in changes:
            if (change.target.kind == "TunnelConfiguration" and change.action in ("create", "update")
                    and change.detail.get("mode") == "remote"):
                self._put_configuration(change, created, outcome)
        by_zone: dict[str, list[Change]] = {}
        for change in changes:
            if change.target.kind == "DNSRecord" and change.action in ("create", "update", "delete"):
                by_zone.setdefault(str(change.detail["zone_id"]), []).append(change)
        for zone_id, zone_changes in by_zone.items():
            self._batch_zone(zone_id, zone_changes, created, outcome)
        return outcome

    def _create_tunnel(self, change: Change, created: dict[str, str], outcome: ApplyOutcome) -> None:
        account, name = str(change.detail["account_id"]), str(change.after["name"])
        api = self._client.zero_trust.tunnels.cloudflared.with_raw_response
        try:
            result = self._call(f"create tunnel {name}", TUNNEL_EDIT,
                                lambda: api.create(account_id=account, name=name, config_src="cloudflare"),
                                write=True)
        except ProviderError as exc:
            outcome.errors.append(f"tunnel {change.target.id}: {exc}")
            return
        created[change.target.id] = str(result["id"])
        outcome.applied += 1

    def _put_configuration(self, change: Change, created: dict[str, str], outcome: ApplyOutcome) -> None:
        name = change.target.id
        tunnel_id = change.detail.get("tunnel_id") or created.get(name)
        if not tunnel_id:
            outcome.errors.append(f"tunnel {name}: configuration not written: the tunnel was not created")
            return
        account = str(change.detail["account_id"])
        api = self._client.zero_trust.tunnels.cloudflared.configurations.with_raw_response
        kept = {k: v for k, v in self._configs.get(str(tunnel_id), {}).items()
                if k not in ("ingress", "originRequest")}
        # Tunnel-wide originRequest defaults are folded into every rule by the planner, so the
        # top-level one is emptied: what each rule says is then exactly what it gets.
        config: dict[str, Any] = {**kept, "ingress": change.after}
        try:
            self._call(f"write configuration of tunnel {name}", TUNNEL_EDIT,
                       lambda: api.update(str(tunnel_id), account_id=account, config=config),  # type: ignore[arg-type]
                       write=True)
        except ProviderError as exc:
            outcome.errors.append(f"tunnel {name}: {exc}")
            return
        outcome.applied += 1

    def _batch_zone(self, zone_id: str, changes: list[Change], created: dict[str, str],
                    outcome: ApplyOutcome) -> None:
        zone = str(changes[0].detail["zone"])
        ready: list[Change] = []
        for change in changes:
            content = (change.after or {}).get("content", "")
            if PENDING_TUNNEL_ID in str(content) and str(change.detail.get("tunnel")) not in created:
                outcome.errors.append(f"DNS {change.target.id}: not written: tunnel "
                                      f"{change.detail.get('tunnel')} was not created")
                continue
            ready.append(change)
        for start in range(0, len(ready), self.max_batch):
            chunk = ready[start:start + self.max_batch]
            body = _batch_body(chunk, created)
            try:
                self._call(f"write {len(chunk)} DNS records in zone {zone}", DNS_EDIT,
                           lambda body=body: self._client.dns.records.with_raw_response.batch(  # type: ignore[misc]
                               zone_id=zone_id, **body),
                           write=True)
            except ProviderError as exc:
                outcome.errors.append(f"zone {zone}: {exc}")
                return
            outcome.applied += len(chunk)

    # ------------------------------------------------------------------ the one call path

    def _call(self, what: str, permission: str, send: Callable[[], Any], *, write: bool = False) -> Any:
        """Send one request; the ``result`` of its envelope, or ProviderError."""
        return self._request(what, permission, send, write=write).get("result")

    def _request(self, what: str, permission: str, send: Callable[[], Any], *,
                 write: bool = False) -> dict[str, Any]:
        """Send one request (retrying what may be retried); its whole envelope, or ProviderError."""
        backoff = 0.5
        while True:
            self.api_calls += 1
            try:
                raw = send()
            except cloudflare.RateLimitError as exc:
                self._wait(what, _retry_after(exc.response), 429)
                continue
            except cloudflare.InternalServerError as exc:
                if write:
                    raise self._error(what, permission, exc) from None
                self._wait(what, backoff, exc.status_code)
                backoff *= 2
                continue
            except cloudflare.APIStatusError as exc:
                raise self._error(what, permission, exc) from None
            except cloudflare.APIConnectionError as exc:
                kind = "timed out" if isinstance(exc, cloudflare.APITimeoutError) else "could not connect"
                raise ProviderError(self._scrub(f"Cloudflare {what}: {kind}"), temporary=True) from None
            try:
                body = raw.json()
            except ValueError:
                raise ProviderError(f"Cloudflare {what}: HTTP {raw.status_code}, the answer was not JSON",
                                    temporary=True, status=raw.status_code) from None
            if not isinstance(body, dict) or body.get("success") is not True:
                errors = _errors(body)
                raise ProviderError(self._scrub(f"Cloudflare {what}: HTTP {raw.status_code} with success: "
                                                f"false{errors}"), temporary=True, status=raw.status_code)
            return body

    def _paged(self, what: str, permission: str, per_page: int,
               send: Callable[[int], Any]) -> list[dict[str, Any]]:
        """Every item of a page-numbered list (the envelope's ``result_info`` says when to stop)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._request(what, permission, lambda page=page: send(page))  # type: ignore[misc]
            batch = [r for r in body.get("result") or [] if isinstance(r, dict)]
            items.extend(batch)
            info = body.get("result_info")
            if isinstance(info, dict) and info.get("total_pages") is not None:
                done = page >= int(info["total_pages"])
            else:
                done = len(batch) < per_page
            if done or not batch:
                return items
            page += 1

    def _wait(self, what: str, seconds: float, status: int) -> None:
        if seconds > self._budget_left:
            raise ProviderError(f"Cloudflare {what}: HTTP {status}, and waiting {seconds:g}s more is past "
                                "the retry budget; retried next run", temporary=True, status=status)
        self._budget_left -= seconds
        time.sleep(seconds)  # the server asked for this pause (Retry-After); nothing to poll

    def _error(self, what: str, permission: str, exc: cloudflare.APIStatusError) -> ProviderError:
        status = exc.status_code
        errors = _errors(_json_or_none(exc.response))
        if status in (401, 403):
            message = f"Cloudflare token lacks {permission} ({what}: HTTP {status}{errors})"
        else:
            message = f"Cloudflare {what}: HTTP {status}{errors}"
        return ProviderError(self._scrub(message), temporary=status == 429 or status >= 500, status=status)

    def _scrub(self, message: str) -> str:
        return message.replace(self._token, "[token]") if self._token else message


def _batch_body(changes: list[Change], created: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    body: dict[str, list[dict[str, Any]]] = {"deletes": [], "patches": [], "posts": []}
    for change in changes:
        if change.action == "delete":
            body["deletes"].append({"id": change.detail["record_id"]})
            continue
        after: dict[str, JSON] = dict(change.after)
        if PENDING_TUNNEL_ID in str(after["content"]):
            after["content"] = tunnel_target(created[str(change.detail["tunnel"])])
        fields = {"name": record_name(change.target), "type": after["type"], "content": after["content"],
                  "proxied": after["proxied"], "comment": after["comment"], "ttl": after.get("ttl", 1)}
        if change.action == "create":
            body["posts"].append(fields)
        else:
            body["patches"].append({"id": change.detail["record_id"], **fields})
    return {k: v for k, v in body.items() if v}


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait: Retry-After as seconds or an HTTP date; 1s when the server gave none."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 1.0


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _errors(body: Any) -> str:
    """The envelope's errors as ``: code 81053 An A, AAAA, ...`` (empty when there are none)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return ""
    parts = [f"code {e.get('code')} {e.get('message')}" if isinstance(e, dict) else str(e)
             for e in errors[:3]]
    return ": " + "; ".join(parts)
