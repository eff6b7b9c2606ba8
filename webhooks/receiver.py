"""A tiny webhook receiver for trying Synchook out: prints each delivery and whether its signature verifies.

python -m webhooks.receiver --port 9000 [--secret whsec_…]   (or WEBHOOK_SECRET in the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TextIO

from aiohttp import web

from webhooks.verify import WebhookVerificationError, verify


def build_app(secret: str | None, *, out: TextIO = sys.stdout) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        verdict = "not checked (no --secret)"
        if secret:
            try:
                verify(body, dict(request.headers), secret)
                verdict = "signature OK"
            except WebhookVerificationError as exc:
                verdict = f"signature REJECTED: {exc}"
        try:
            event = json.loads(body)
            summary = f"{event.get('type')} {event.get('id')} data={json.dumps(event.get('data'))}"
        except ValueError:
            summary = f"(not JSON, {len(body)} bytes)"
        print(f"{request.method} {request.path} webhook-id={request.headers.get('webhook-id')} {verdict}", file=out)
        print(f"  {summary}", file=out, flush=True)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receive)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webhooks.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"), help="whsec_… or whpk_…")
    args = parser.parse_args(argv)
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    web.run_app(build_app(args.secret), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
