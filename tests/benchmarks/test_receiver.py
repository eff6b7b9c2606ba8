"""The bench receiver's counts, which the harness polls to know a scenario is done."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from bench.receiver import Recorder, build_app


async def test_stats_count_each_healthy_delivery_once() -> None:
    recorder = Recorder()
    async with TestServer(build_app(recorder), host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        for path, msg_id in [("/a", "m1"), ("/a", "m1"), ("/a", "m2"), ("/b", "m1")]:
            async with http.post(server.make_url(path), data=b"{}", headers={"webhook-id": msg_id}) as response:
                assert response.status == 200
        recorder.record("/hang/0", {"webhook-id": "m3"}, b"{}", 0.0)  # a hanging endpoint's, not healthy

        async with http.get(server.make_url("/_ctl/stats")) as response:
            assert await response.json() == {"requests": 5, "unique": 4, "healthy": 3}

        async with http.post(server.make_url("/_ctl/reset")) as response:
            assert response.status == 200
        async with http.get(server.make_url("/_ctl/stats")) as response:
            assert await response.json() == {"requests": 0, "unique": 0, "healthy": 0}
