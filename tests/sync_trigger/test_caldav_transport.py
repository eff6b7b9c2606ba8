"""The CalDAV transport reads a whole answer, however the server's bytes arrive."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from sync_trigger.connectors.caldav_http import DavTransport


async def _same(url: str) -> str:
    return url


async def test_an_answer_sent_in_pieces_is_read_whole() -> None:
    pieces = [b"<?xml version='1.0'?>\n<multistatus xmlns=\"DAV:\">"] + [b"<response/>" * 500] * 8 + [b"</multistatus>"]

    async def report(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=207)
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.02)  # each piece its own packet: the client sees part of the body first
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("REPORT", "/cal/", report)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        transport = DavTransport(session, "user", "pass", _same)
        reply = await transport.request("REPORT", str(server.make_url("/cal/")), b"<query/>", depth="1")
    assert reply.status == 207
    assert reply.body == b"".join(pieces)
