"""The pages' one stylesheet, and the Content-Security-Policy that allows exactly it.

The stylesheet is inlined (no external asset, works offline) and allowed by its SHA-256 hash,
so the policy needs neither ``'unsafe-inline'`` nor any source at all for scripts: an injected
``<script>``, ``style`` attribute or ``<img>`` would be refused by the browser even if escaping
ever failed. No element carries a ``style`` attribute; bars are SVG shapes sized by attributes.
"""

from __future__ import annotations

import base64
import hashlib

STYLESHEET = """
:root{--ink:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#f4f6f9;--card:#fff;--accent:#2f6fde;
--ok:#1f8a4c;--warn:#b7791f;--bad:#c53030;--create:#1f8a4c;--update:#b7791f;--delete:#c53030;
--conflict:#8e44ad}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;align-items:baseline;gap:18px;
flex-wrap:wrap}
header h1{font-size:20px;margin:0;font-weight:650;letter-spacing:.2px}
header .sub{color:#b8c0d0;font-size:13px}
main{padding:18px 24px 40px;max-width:1400px;margin:0 auto}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 18px;
margin:0 0 16px}
h2{font-size:16px;margin:0 0 10px;font-weight:650}
h3{font-size:14px;margin:14px 0 6px;font-weight:650}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:10px 18px}
.fact .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.4px}
.fact .v{font-size:15px;overflow-wrap:anywhere}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top;
overflow-wrap:break-word}
th{white-space:nowrap;font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.3px}
tbody tr:nth-child(even){background:#fafbfd}
tr.pending,tr.conflict{background:#fff6e5}
tr.conflict{background:#fbeefe}
tr.pending td:first-child,tr.conflict td:first-child{box-shadow:inset 3px 0 0 var(--warn)}
tr.conflict td:first-child{box-shadow:inset 3px 0 0 var(--conflict)}
.reason{color:var(--muted);font-size:12.5px}
tr.pending .reason,tr.conflict .reason{color:#7a4d00}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.b-create,.b-ok{color:var(--create)}.b-update,.b-warn{color:var(--update)}
.b-delete,.b-bad{color:var(--delete)}.b-conflict{color:var(--conflict)}.b-no-op,.b-muted{color:var(--muted)}
.errors li{color:var(--bad);margin:2px 0}
.errors a{color:var(--bad)}
.warnings li{color:#7a4d00;margin:2px 0}
ul.plain{margin:0;padding-left:18px}
.muted{color:var(--muted)}
.next{color:var(--muted)}
a{color:var(--accent)}
.bar .track{fill:#e6eaf1}.bar .used{fill:var(--accent)}.bar .full{fill:var(--bad)}
.pools{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px}
.pool{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.pool .name{font-weight:650}
.family{display:flex;align-items:center;gap:10px;margin:4px 0}
.family .label{width:38px;color:var(--muted);font-size:12px}
.family .count{font-size:12.5px;color:var(--muted)}
.diagram{overflow-x:auto}
.diagram svg{display:block}
.d-col{font:600 12px system-ui,sans-serif;fill:var(--muted);text-transform:uppercase}
.d-box{fill:#fff;stroke:#9aa6bb;stroke-width:1}
.d-host{fill:#eef4ff;stroke:var(--accent)}.d-tunnel{fill:#f3ecfb;stroke:var(--conflict)}
.d-ip{fill:#edf8f1;stroke:var(--ok)}.d-node{fill:#f6f6f6;stroke:#6b7587}
.d-text{font:12px ui-monospace,"DejaVu Sans Mono",monospace;fill:var(--ink)}
.d-edge{fill:none;stroke:#8a96ab;stroke-width:1.2}
.d-standby{fill:none;stroke:#a9b3c3;stroke-width:1;stroke-dasharray:4 3}
.d-more{font:italic 12px system-ui,sans-serif;fill:var(--muted)}
.changes td.act{white-space:nowrap}
.changes .field{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;color:var(--muted)}
footer{color:var(--muted);font-size:12px;text-align:center;padding:8px}
"""

STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode("ascii")

# No script, no fetch, no frame, no form, no plugin: the stylesheet by hash and data: images.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# The response headers of a page: the policy, no MIME sniffing, never cached (it is live state).
PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
