"""DNS cannot starve anyone: names whose nameserver never answers delay no other tenant (issue 16, item 6).

A real DNS server on loopback (``SYNCHOOK_DNS_NAMESERVERS``) answers the names in its table, says NXDOMAIN
for ``*.nowhere.example`` and reads and ignores every other query: a black hole. Before the fix, names were
resolved by getaddrinfo in the loop's default executor (a handful of threads), so a burst of black-holed
names held every thread and queued every other lookup behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from synchook.context import AppContext
from synchook.settings import Settings
from tests.factories import make_tenant
from tests.factories.webhooks import attempts, deliveries, make_events, make_subscription
from tests.support.receiver import Receiver
from tests.support.workers import running, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

BASE = "/v1/webhooks/subscriptions"
BURST = 20


@dataclass
class LoopbackDNS(asyncio.DatagramProtocol):
    table: dict[str, str] = field(default_factory=dict)
    asked: set[str] = field(default_factory=set)  # every name a query arrived for, answered or not
    transport: Any = None
    port: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        request = DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".").lower()
        self.asked.add(name)
        reply = request.reply()
        if name in self.table:
            if request.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(self.table[name]), ttl=60))
        elif name.endswith(".nowhere.example"):
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            return  # the black hole: read, never answered
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[LoopbackDNS]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        LoopbackDNS, local_addr=("127.0.0.1", 0)
    )
    protocol.port = transport.get_extra_info("sockname")[1]
    yield protocol
    transport.close()


@pytest.fixture
def settings_overrides(dns_server: LoopbackDNS) -> dict[str, Any]:
    # dns_timeout is what orders the test: the healthy tenant must be served well within it.
    return {
        "allow_private_targets": False,
        "dns_nameservers": (f"127.0.0.1:{dns_server.port}",),
        "dns_timeout": 15.0,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def _create(client: httpx.AsyncClient, headers: dict[str, str], url: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.post(BASE, json={"url": url, "event_types": ["*"]}, headers=headers))


async def test_names_resolve_through_the_configured_nameserver(
    app_ctx: AppContext, client: httpx.AsyncClient, dns_server: LoopbackDNS
) -> None:
    dns_server.table.update({"hooks.public.example": "93.184.216.34", "hooks.sneaky.example": "10.1.2.3"})
    tenant = await make_tenant(app_ctx)

    created = await client.post(
        BASE, json={"event_types": ["*"], "url": "https://hooks.public.example/in"}, headers=tenant.headers
    )
    private = await client.post(
        BASE, json={"event_types": ["*"], "url": "https://hooks.sneaky.example/in"}, headers=tenant.headers
    )
    unknown = await client.post(
        BASE, json={"event_types": ["*"], "url": "https://hooks.nowhere.example/in"}, headers=tenant.headers
    )

    assert created.status_code == 201, created.text
    assert private.status_code == 422 and private.json()["error"]["code"] == "invalid_url"
    assert "10.1.2.3" in private.json()["error"]["message"]
    assert unknown.status_code == 422 and "could not be resolved" in unknown.json()["error"]["message"]
    assert {"hooks.public.example", "hooks.sneaky.example", "hooks.nowhere.example"} <= dns_server.asked


async def test_a_burst_of_black_holed_names_delays_no_other_tenant(
    app_ctx: AppContext,
    settings: Settings,
    client: httpx.AsyncClient,
    dns_server: LoopbackDNS,
    receiver: Receiver,
    make_worker: Any,
) -> None:
    attacker = await make_tenant(app_ctx)
    healthy = await make_tenant(app_ctx)
    names = [f"hook{i}.black-hole.example" for i in range(BURST)]
    creates = [_create(client, attacker.headers, f"https://{name}/in") for name in names]
    # Every create is now waiting on the black hole (on main, on threads of the default executor).
    await wait_until(lambda: set(names) <= dns_server.asked, timeout=30)

    # Deliveries meanwhile: the attacker's own to a black-holed name, the healthy tenant's to `localhost`
    # (from /etc/hosts, through the same resolver). The worker may call loopback; the API may not.
    stuck = await make_subscription(app_ctx, attacker.workspace_id, url="https://stuck.black-hole.example/in")
    await make_subscription(
        app_ctx, healthy.workspace_id, url=receiver.url("/healthy").replace("127.0.0.1", "localhost")
    )
    await make_events(app_ctx, attacker.workspace_id)
    await make_events(app_ctx, healthy.workspace_id)
    worker_settings = settings.model_copy(update={"allow_private_targets": True})
    worker: Worker = make_worker(burst=False, settings=worker_settings)
    async with running(worker):
        await receiver.wait_for(1, path="/healthy", timeout=60)
        listed = await client.get(BASE, headers=healthy.headers)
        assert listed.status_code == 200
        # The ordering that matters: the other tenant was delivered to and answered while every black-holed
        # create was still waiting for its name.
        assert not any(task.done() for task in creates)

        responses = await asyncio.gather(*creates)
        (delivery,) = await deliveries(app_ctx, subscription_id=stuck.id)

        async def stuck_attempted() -> bool:
            return bool(await attempts(app_ctx, delivery.id))

        async with asyncio.timeout(60):
            while not await stuck_attempted():
                await asyncio.sleep(0.1)

    for response in responses:
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_url" and "did not resolve in time" in error["message"]
    (attempt,) = (await attempts(app_ctx, delivery.id))[:1]
    assert attempt.status_code is None and attempt.error  # a failed attempt, retried as usual
    assert "stuck.black-hole.example" in dns_server.asked
