"""The /admin page: index.html with its stylesheet and script inlined, served under a strict CSP.

Inlining keeps the console one route (nothing else to mount or document) and lets the CSP allow
exactly these bytes by hash: no other script can run on the page that holds the API key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

from starlette.responses import HTMLResponse

__all__ = ["console_page", "console_response"]


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def console_page() -> tuple[str, str]:
    """(html, content-security-policy), built once per process."""
    folder = resources.files("webhooks.console")
    css = folder.joinpath("console.css").read_text(encoding="utf-8")
    js = folder.joinpath("console.js").read_text(encoding="utf-8")
    html = folder.joinpath("index.html").read_text(encoding="utf-8")
    html = html.replace("{{ css }}", css).replace("{{ js }}", js)
    policy = (
        "default-src 'none'; "
        f"script-src {_sha256(js)}; style-src {_sha256(css)}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


def console_response() -> HTMLResponse:
    html, policy = console_page()
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )
