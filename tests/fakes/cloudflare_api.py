"""A faithful fake of the Cloudflare v4 API, for tests that drive the official ``cloudflare`` SDK.

The fake is a real HTTP server on 127.0.0.1 (port 0, so parallel tests never collide).  The official
Stainless-generated SDK talks to it exactly as to ``https://api.cloudflare.com/client/v4``: same paths,
same query encoding (``name.exact=...``, ``account.id=...``), same envelopes, same status codes, so a
provider tested here meets no surprise against the real API.

    with FakeCloudflare() as cf:
        zone = cf.add_zone("example.com")
        client = cf.client()                      # cloudflare.Cloudflare, max_retries=0
        client.dns.records.create(zone_id=zone, name="www", type="CNAME", content="t.cfargotunnel.com",
                                  ttl=1, proxied=True)
        assert cf.records(zone)[0]["name"] == "www.example.com"

Behaviours reproduced (and where the detail comes from):

Envelopes
  ``{"success", "errors": [{"code", "message"}], "messages": [], "result"}``, plus ``result_info``
  ``{page, per_page, count, total_count, total_pages}`` on lists.  Page-number pagination answers a
  page past the end with an empty ``result`` - the SDK's ``V4PagePaginationArray`` stops on it, so it
  always fetches one extra page, as against the real API.

Authentication and permissions
  ``Authorization: Bearer <token>`` is required.  No credentials at all: 400, code 9106 "Missing
  X-Auth-Key, X-Auth-Email or Authorization headers".  A wrong token: 403, code 10000
  "Authentication error" (the status and code the real API answers, per public bug reports).
  ``deny("dns_records:edit")`` withdraws a permission from the token: requests needing it get 403,
  code 10000 "Authentication error" (what the real API answers for a token missing a permission;
  ``deny(..., code=9109)`` gives "Unauthorized to access requested resource" instead).
  Permission names: see ``PERMISSIONS``.

Zones
  ``GET /zones`` with filters ``name`` (exact), ``account.id``, ``account.name``, ``status``;
  ``per_page`` 5..50 (default 20, clamped), ``GET /zones/{id}``.  An unknown or malformed zone id:
  400 with codes 7003 "Could not route to /zones/..., perhaps your object identifier is invalid?"
  and 7000 "No route for that URI" (the real API's answer for zone-scoped paths).

DNS records (``/zones/{zone}/dns_records``)
  list / get / create (POST) / overwrite (PUT) / edit (PATCH) / delete (result ``{"id"}``) / batch.
  Names are stored fully qualified and lower-case: ``www`` and ``@`` are expanded against the zone,
  as the real API does.  List filters: ``name``, ``name.exact|contains|startswith|endswith``,
  ``type``, ``content`` (+ the same operators), ``comment`` (+ operators and ``comment.present`` /
  ``comment.absent``), ``tag`` (``name:value`` or ``name``), ``proxied``, ``match=any|all``,
  ``order``/``direction``; ``per_page`` 5..5000000, default 100.  Records carry id (32 hex),
  zone_id, zone_name, name, type, content, proxiable, proxied, ttl (1 = automatic), comment, tags,
  settings, meta, created_on, modified_on.
  Errors: a CNAME whose name already holds an A, AAAA or CNAME -> 400 / 81053 "An A, AAAA, or CNAME
  record with that host already exists."; an A/AAAA whose name holds a CNAME -> 400 / 81054 "A
  CNAME record with that host already exists."; an identical record (type, name, content) -> 400 /
  81057 "The record already exists."; unknown record -> 404 / 81044 "Record does not exist."
  (codes and texts as reported against the real API).  Content/TTL/proxied validation uses 9005
  (bad content), 9021 (TTL not 1 or 60..86400) and 9004 (type cannot be proxied) - plausible codes
  from the 9000 DNS-validation range, not verified one by one.
  Batch (``POST .../dns_records/batch``) runs deletes, patches, puts, posts in that order, each
  against the state the previous ones left (so delete-A-then-post-CNAME works in one batch), and is
  all or nothing: the first failure answers its error envelope and no change is kept.  Result
  ``{"deletes": [...], "patches": [...], "puts": [...], "posts": [...]}`` of full records.

Cloudflare Tunnels (``/accounts/{acct}/cfd_tunnel``)
  list (filters ``name``, ``uuid``, ``is_deleted``, ``status``; per_page 1..1000, default 20),
  create (``name``, ``config_src`` "local" (default) | "cloudflare", ``tunnel_secret`` base64 of at
  least 32 bytes), get, delete (soft: ``deleted_at`` is set, the tunnel stays listable with
  ``is_deleted=true``).  A name already used by a live tunnel: 409 / 1013 "You already have a tunnel
  with this name. Delete the existing tunnel, or choose a different name for your new tunnel" (code
  and text as reported; the 409 status is an assumption).  Unknown tunnel: 404 / 1003 "Tunnel not
  found" (assumed code).  Unknown account: 403 / 10000 "Authentication error" (a token sees only its
  accounts).

Tunnel configurations (``.../cfd_tunnel/{id}/configurations``)
  GET -> ``{tunnel_id, account_id, version, config, source, created_at}``; ``config`` is null and
  version 0 until the first PUT.  PUT ``{"config": {...}}`` replaces the whole config and increments
  ``version``; ``originRequest`` defaults to ``{}`` and ``warp-routing`` to ``{"enabled": false}`` as
  the real API echoes them.  Validation follows cloudflared's ``ingress`` package, with its texts
  prefixed "Bad Configuration: Validation failed: " as the API returns them: no rules; the last rule
  not a catch-all (hostname empty or ``*`` and no path); a catch-all before the last rule ("Rule #N
  is matching the hostname '...', but this will match every hostname, ..."); a hostname with a port;
  a misplaced wildcard; an invalid path regex; a missing or invalid ``service``.  Status 400, code
  1056 (the code is an assumption: not found in public sources).

Fault injection
  ``fail(status, method=, path=, times=, ...)`` makes the next matching requests fail; ``path`` is a
  regex searched in the API path (``/zones/<id>/dns_records``).  ``after_apply=True`` performs the
  request first and then answers the fault (a write that happened although the client saw an
  error); ``delay`` holds the answer back (for client-timeout tests) - with ``after_apply`` the
  change is already made while the client waits, so a timed-out write can be checked at once.
  Envelope code 7010 "Service unavailable" by default (what the API answers when a backend is down).
  ``rate_limit(retry_after=)`` answers 429 with a ``Retry-After`` header and code 971 "Please wait
  and consider throttling your request speed".  ``fail_success_false()`` answers 200 with
  ``success: false`` - the real API sometimes does this, and the SDK then returns ``None``.

Request log
  ``log`` (every request, in order), ``calls(method=, path_regex=)``, ``writes()`` (non-GET),
  ``clear_log()``; entries are ``LoggedRequest(method, path, query, body, status)``.

Everything is guarded by one lock, so tests may call the helpers while the server is serving.
"""

# The implementation lives in tests/fakes/cfapi/, one module per concern: envelopes (envelopes,
# errors, pagination, fault answers), zones (accounts and zones), dns (records), tunnels (tunnels,
# configurations, ingress validation), server (HTTP, routes, permissions, faults, request log).
from tests.fakes.cfapi.envelopes import PERMISSIONS, ApiError, Fault, LoggedRequest
from tests.fakes.cfapi.server import FakeCloudflare
from tests.fakes.cfapi.tunnels import validate_ingress

__all__ = ["PERMISSIONS", "ApiError", "FakeCloudflare", "Fault", "LoggedRequest", "validate_ingress"]
