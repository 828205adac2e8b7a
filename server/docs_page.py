"""An API reference page that works offline: the OpenAPI document rendered by inline script.

Litestar's bundled renderers load their JavaScript from a CDN and show a blank page without
network; this one embeds the schema and a small renderer in the page itself.
"""

from __future__ import annotations

import html
import json
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header a{color:#9cc2ff}main{max-width:1100px;margin:0 auto;padding:16px 24px}
details{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:8px 0}
summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:center}
.m{font:600 12px monospace;padding:2px 8px;border-radius:4px;color:#fff;min-width:56px;
text-align:center}
.get{background:#2f7d32}.post{background:#1565c0}.put{background:#8d5b00}.delete{background:#b71c1c}
.patch{background:#6a1b9a}.p{font-family:monospace}.s{color:#5b6473}
section.b{padding:4px 16px 12px;border-top:1px solid #eef0f3}
pre{background:#f0f2f5;padding:8px;border-radius:4px;overflow:auto;font-size:12px}
h2{font-size:16px;margin:24px 0 4px}
"""

_SCRIPT = """
const spec = JSON.parse(document.getElementById('spec').textContent);
const root = document.getElementById('ops');
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'};
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ESC[c]);
const deref = (o, seen = new Set()) => {
  if (!o || typeof o !== 'object') return o;
  if (o.$ref) { const name = o.$ref.split('/').pop(); if (seen.has(name)) return {$ref: name};
    const s = new Set(seen); s.add(name); return deref(spec.components.schemas[name], s); }
  if (Array.isArray(o)) return o.map(x => deref(x, seen));
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, deref(v, seen)]));
};
const groups = {};
for (const [path, item] of Object.entries(spec.paths || {})) {
  for (const [method, op] of Object.entries(item)) {
    if (!['get','post','put','delete','patch'].includes(method)) continue;
    const tag = (op.tags || ['other'])[0];
    (groups[tag] = groups[tag] || []).push([path, method, op]);
  }
}
for (const [tag, ops] of Object.entries(groups)) {
  const h = document.createElement('h2'); h.textContent = tag; root.appendChild(h);
  for (const [path, method, op] of ops) {
    const d = document.createElement('details');
    let body = '';
    if (op.description) body += `<p>${esc(op.description)}</p>`;
    if (op.parameters?.length) body += '<p><b>Parameters</b></p><pre>' +
      esc(op.parameters.map(p => `${p.in} ${p.name}${p.required ? ' (required)' : ''}: ` +
      JSON.stringify(deref(p.schema))).join('\\n')) + '</pre>';
    const rb = op.requestBody?.content;
    if (rb) for (const [ct, c] of Object.entries(rb))
      body += `<p><b>Request body</b> ${esc(ct)}</p>` +
        `<pre>${esc(JSON.stringify(deref(c.schema), null, 2))}</pre>`;
    for (const [code, r] of Object.entries(op.responses || {})) {
      const c = r.content && Object.values(r.content)[0];
      body += `<p><b>${esc(code)}</b> ${esc(r.description)}</p>` +
        (c?.schema ? `<pre>${esc(JSON.stringify(deref(c.schema), null, 2))}</pre>` : '');
    }
    d.innerHTML = `<summary><span class="m ${method}">${method.toUpperCase()}</span>` +
      `<span class="p">${esc(path)}</span><span class="s">${esc(op.summary)}</span></summary>` +
      `<section class="b">${body}</section>`;
    root.appendChild(d);
  }
}
"""


class OfflineDocsPlugin(OpenAPIRenderPlugin):
    """Renders ``/schema`` as a self-contained HTML page (no CDN, no fetch)."""

    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path, favicon="", style=f"<style>{_STYLE}</style>")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        info = openapi_schema.get("info", {})
        title = html.escape(f"{info.get('title', 'API')} {info.get('version', '')}")
        spec = json.dumps(openapi_schema, default=str).replace("</", "<\\/")
        json_url = html.escape(f"{request.url.path.rstrip('/')}/openapi.json")
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"{self.style}</head><body><header><h1>{title}</h1>"
            f"<a href='{json_url}'>openapi.json</a> · WebSocket: <code>/ws/&lt;user_id&gt;</code>"
            f" · guide: docs/integration.md</header><main id='ops'></main>"
            f"<script type='application/json' id='spec'>{spec}</script>"
            f"<script>{_SCRIPT}</script></body></html>"
        )
        return page.encode()
