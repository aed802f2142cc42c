"""Origin services, checked as cloudflared checks an ingress rule's ``service``.

cloudflared accepts a URL with scheme http, https, ws, wss, tcp, ssh, rdp or smb that has a host
and no path (it forwards the visitor's path, it cannot rewrite it); ``unix:`` and ``unix+tls:``
socket paths; ``http_status:NNN``; and the built-in services ``hello_world``, ``bastion`` and
``socks-proxy``. Anything else makes cloudflared refuse the whole configuration, so it is
refused here, before any tunnel is touched.
"""

from __future__ import annotations

from urllib.parse import urlsplit

URL_SCHEMES = ("http", "https", "ws", "wss", "tcp", "ssh", "rdp", "smb")
BUILT_IN = ("hello_world", "bastion", "socks-proxy")
_EXAMPLE = 'e.g. "http://192.168.1.100:80", "http_status:404" or "unix:/run/app.sock"'


def origin_problem(service: str) -> str | None:
    """Why cloudflared would reject ``service`` as an origin, or None when it accepts it."""
    if service in BUILT_IN:
        return None
    if len(service) > 2048:
        return f'"{service[:40]}..." is longer than 2048 characters'

    if service.startswith("http_status:"):
        code = service.removeprefix("http_status:")
        if not code.isdigit() or not 100 <= int(code) <= 999:
            return f'"{service}": http_status needs a status code from 100 to 999, e.g. "http_status:404"'
        return None
    for prefix in ("unix:", "unix+tls:"):
        if service.startswith(prefix):
            if not service.removeprefix(prefix):
                return f'"{service}" needs a socket path after "{prefix}"'
            return None
    try:
        parts = urlsplit(service)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError as exc:
        return f'"{service}" is not a valid URL ({exc})'
    if not parts.scheme or "://" not in service:
        return f'"{service}" has no scheme; {_EXAMPLE}'
    if parts.scheme not in URL_SCHEMES:
        return (f'"{service}": scheme "{parts.scheme}" is not one cloudflared supports '
                f"({', '.join(URL_SCHEMES)}, unix, unix+tls, http_status, {', '.join(BUILT_IN)})")
    if not parts.hostname:
        return f'"{service}" has no host; {_EXAMPLE}'
    if parts.path:
        return (f'"{service}" has a path ("{parts.path}"); cloudflared cannot proxy to a different '
                "path on the origin: remove it (the visitor's path is forwarded as it is)")
    return None
