"""GET /docs: the API reference, rendered in the browser from /openapi.json by a few lines of vanilla JS.

Self-contained on purpose: no CDN (Swagger UI, Redoc) so it works offline and on a laptop behind nothing,
and the CSP allows exactly the inlined script and style by hash. It fetches `openapi.json` by a relative
URL, so under SYNCHOOK_ROOT_PATH it reads the document of the same mount.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from starlette.requests import Request
from starlette.responses import HTMLResponse

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
  background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: 12px 24px; }
header a { color: #9fb3ff; }
main { max-width: 1000px; margin: 0 auto; padding: 16px 24px 48px; }
h2 { margin: 28px 0 8px; text-transform: capitalize; }
details { background: #fff; border: 1px solid #e3e6ec; border-radius: 6px; margin: 6px 0; padding: 6px 12px; }
summary { cursor: pointer; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.method { display: inline-block; min-width: 56px; font-weight: 600; text-transform: uppercase; }
.muted { color: #6b7385; }
pre { background: #f5f6f8; padding: 8px; overflow-x: auto; white-space: pre-wrap; }
"""

_JS = """
"use strict";
const main = document.getElementById("ops");
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : JSON.stringify(schema);
}
fetch("openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  document.getElementById("intro").textContent = spec.info.description;
  const byTag = new Map();
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  main.textContent = "";
  for (const [tag, ops] of byTag) {
    main.appendChild(el("h2", tag));
    for (const [method, path, op] of ops) {
      const box = el("details");
      const head = el("summary");
      head.append(el("span", method, "method"), el("code", path), el("span", "  " + (op.summary || ""), "muted"));
      box.appendChild(head);
      if (op.description) box.appendChild(el("p", op.description));
      for (const p of op.parameters || []) {
        const param = p.$ref ? spec.components.parameters[refName(p)] : p;
        box.appendChild(el("div", param.in + " " + param.name + (param.required ? " (required)" : "") +
          (param.description ? ": " + param.description : ""), "muted"));
      }
      if (op.requestBody) {
        const schema = op.requestBody.content["application/json"].schema;
        const name = refName(schema);
        box.appendChild(el("div", "body: " + name));
        const resolved = spec.components.schemas[name];
        if (resolved) box.appendChild(el("pre", JSON.stringify(resolved, null, 2)));
      }
      box.appendChild(el("div", "responses: " + Object.keys(op.responses).join(", "), "muted"));
      main.appendChild(box);
    }
  }
}).catch(err => { main.textContent = "Could not load openapi.json: " + err; });
"""

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Synchook API reference</title>
<style>{css}</style>
</head>
<body>
<header><strong id="title">Synchook API</strong> · API reference rendered from
  <a href="openapi.json">openapi.json</a></header>
<main>
<p id="intro" class="muted"></p>
<div id="ops">Loading <a href="openapi.json">openapi.json</a>…</div>
<noscript>This page needs JavaScript; the raw document is at <a href="openapi.json">openapi.json</a>.</noscript>
</main>
<script>{js}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def docs_page() -> tuple[str, str]:
    """(html, content-security-policy), built once per process."""
    html = _HTML.format(css=_CSS, js=_JS)
    policy = (
        "default-src 'none'; "
        f"script-src {_sha256(_JS)}; style-src {_sha256(_CSS)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


async def docs(_request: Request) -> HTMLResponse:
    html, policy = docs_page()
    return HTMLResponse(html, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"})
