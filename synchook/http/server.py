"""The HTTP protocol `synchook api` serves with: uvicorn's httptools protocol, each response in one write.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body when it sends
``http.response.body``: two writes, two ``send`` system calls and two segments the client wakes up for, for
every JSON answer (which starlette sends in the same turn of the loop). Here the writes made in one turn of
the loop go to the socket together, at the end of that turn: one write per response. Nothing else changes:
the order of the bytes, keep-alive, flow control, closing (what is held is written before the transport
closes), upgrades.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes of one loop turn reach the real transport as one write."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause/resume_reading, set_protocol, abort…) is the
        # real transport's.
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
