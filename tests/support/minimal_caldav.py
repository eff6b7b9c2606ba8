"""A tiny hand-rolled CalDAV server, only for what Radicale cannot show:

- a server WITHOUT sync-collection (no DAV:sync-token, or one shown but the report refused; clients
  compare getctag/getetag),
- RFC 6578 truncation: a sync-collection answer cut after `page` members, marked by a 507 response for
  the collection itself, to be continued with the new token;
- throttling: 429 with `Retry-After` for the next `throttle` requests.

One calendar at /cal/, no auth, no time-range filtering (the client's expansion applies the window).

    async with MinimalCalDAV(sync=False) as server:
        server.put("a", ics)
        url = server.calendar_url
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import TracebackType

from aiohttp import web

_DAV = "DAV:"
_HEAD = '<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"'
_HEAD += ' xmlns:cs="http://calendarserver.org/ns/">'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class MinimalCalDAV:
    def __init__(self, *, sync: bool = True, page: int | None = None, advertise_token: bool | None = None) -> None:
        self.sync = sync
        # A sync-token shown in PROPFIND although the sync-collection report is refused (some servers do).
        self.advertise_token = sync if advertise_token is None else advertise_token
        self.page = page  # sync-collection members per answer (None: all)
        self.throttle = 0
        self.requests: list[str] = []
        self._members: dict[str, tuple[str, str]] = {}  # name → (etag, ics)
        self._log: list[str] = []  # member names in change order; a token is a position in it
        self._runner: web.AppRunner | None = None
        self.calendar_url = ""

    async def __aenter__(self) -> MinimalCalDAV:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.calendar_url = f"http://127.0.0.1:{port}/cal/"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def put(self, name: str, ics: str) -> None:
        etag = f'"{name}-{len(self._log)}"'
        self._members[name] = (etag, ics)
        self._log.append(name)

    def delete(self, name: str) -> None:
        del self._members[name]
        self._log.append(name)

    @property
    def ctag(self) -> str:
        return f"ctag-{len(self._log)}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(f"{request.method} {body[:60]!r}")
        if self.throttle:
            self.throttle -= 1
            return web.Response(status=429, headers={"Retry-After": "2"})
        if request.method == "PROPFIND":
            return self._propfind(request.headers.get("Depth", "0"))
        if request.method == "REPORT":
            root = ET.fromstring(body)
            kind = root.tag.rsplit("}", 1)[-1]
            if kind == "sync-collection":
                return self._sync_collection(root)
            if kind == "calendar-multiget":
                names = [(h.text or "").rsplit("/", 1)[-1] for h in root.iter(f"{{{_DAV}}}href")]
                return _multistatus("".join(self._member_xml(n) for n in names))
            if kind == "calendar-query":
                return _multistatus("".join(self._member_xml(n) for n in self._members))
        return web.Response(status=405)

    def _propfind(self, depth: str) -> web.Response:
        props = f"<cs:getctag>{self.ctag}</cs:getctag>"
        if self.advertise_token:
            props += f"<d:sync-token>tok-{len(self._log)}</d:sync-token>"
        out = f"<d:response><d:href>/cal/</d:href><d:propstat><d:prop>{props}</d:prop>"
        out += "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        if depth == "1":
            for name, (etag, _ics) in self._members.items():
                out += f"<d:response><d:href>/cal/{name}.ics</d:href><d:propstat><d:prop><d:getetag>{etag}</d:getetag>"
                out += "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        return _multistatus(out)

    def _sync_collection(self, root: ET.Element) -> web.Response:
        if not self.sync:
            return web.Response(status=403, body=b'<d:error xmlns:d="DAV:"><d:supported-report/></d:error>')
        token = (root.findtext(f"{{{_DAV}}}sync-token") or "").strip()
        if token and not token.startswith("tok-"):
            return web.Response(status=403, body=b'<d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>')
        start = int(token[4:]) if token else 0
        end = len(self._log) if self.page is None else min(len(self._log), start + self.page)
        names = list(dict.fromkeys(self._log[start:end]))
        out = ""
        for name in names:
            if name in self._members:
                out += f"<d:response><d:href>/cal/{name}.ics</d:href><d:propstat><d:prop><d:getetag>"
                out += f"{self._members[name][0]}</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status>"
                out += "</d:propstat></d:response>"
            else:
                out += f"<d:response><d:href>/cal/{name}.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status>"
                out += "</d:response>"
        if end < len(self._log):
            out += "<d:response><d:href>/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status>"
            out += "</d:response>"
        return _multistatus(out + f"<d:sync-token>tok-{end}</d:sync-token>")

    def _member_xml(self, name: str) -> str:
        name = name.removesuffix(".ics")
        if name not in self._members:
            return (
                f"<d:response><d:href>/cal/{name}.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
            )
        etag, ics = self._members[name]
        out = f"<d:response><d:href>/cal/{name}.ics</d:href><d:propstat><d:prop><d:getetag>{etag}</d:getetag>"
        out += f"<c:calendar-data>{_escape(ics)}</c:calendar-data></d:prop>"
        return out + "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"


def _multistatus(inner: str) -> web.Response:
    return web.Response(status=207, body=(_HEAD + inner + "</d:multistatus>").encode(), content_type="application/xml")
