"""The fakes' push (PROVIDERS.md §1.5, §2.5): Google channels and Graph subscriptions over real loopback HTTP,
delivering to a recording receiver. No connector involved."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

from synchook.fakes import FakeProviders
from tests.support.receiver import Receiver

ALICE = "alice@example.com"
WATCH = "/google/calendar/v3/calendars/alice%40example.com/events/watch"
STOP = "/google/calendar/v3/channels/stop"
SUBSCRIPTIONS = "/graph/v1.0/subscriptions"
RESOURCE = "me/calendars/alice@example.com/events"


class PushReceiver(Receiver):
    """The recording receiver, also answering Graph's validation handshake (kept apart, in `handshakes`):
    the decoded token as text/plain, unless `validation[path]` says otherwise ("wrong-body", "500", "json")."""

    def __init__(self) -> None:
        super().__init__()
        self.validation: dict[str, str] = {}
        self.handshakes: list[tuple[str, web.Request]] = []
        self.on_validation: Callable[[], Awaitable[None]] | None = None  # run before answering a handshake

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("validationToken")
        if token is None:
            return await super()._handle(request)
        await request.read()
        self.handshakes.append((token, request))
        if self.on_validation is not None:
            await self.on_validation()
        mode = self.validation.get(request.path, "echo")
        if mode == "500":
            return web.Response(status=500, text=token, content_type="text/plain")
        if mode == "json":
            return web.json_response({"token": token})
        return web.Response(text=token + ("x" if mode == "wrong-body" else ""), content_type="text/plain")

    def items(self, path: str) -> list[dict[str, Any]]:
        """The items of the JSON notifications received at `path`."""
        return [item for r in self.requests(path) for item in json.loads(r.body)["value"]]


@pytest.fixture
async def receiver() -> AsyncIterator[PushReceiver]:
    async with PushReceiver() as server:
        yield server


@pytest.fixture
async def api(fake: FakeProviders) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def watch(api: httpx.AsyncClient, access_token: str, address: str, **extra: Any) -> httpx.Response:
    body = {"id": "chan-1", "type": "web_hook", "address": address, "token": "secret-token"} | extra
    return await api.post(WATCH, json=body, headers=bearer(access_token))


async def subscribe(api: httpx.AsyncClient, access_token: str, receiver: Receiver, **extra: Any) -> httpx.Response:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": receiver.url("/notify"),
        "lifecycleNotificationUrl": receiver.url("/lifecycle"),
        "resource": RESOURCE,
        "expirationDateTime": (datetime.now(UTC) + timedelta(minutes=4230)).isoformat().replace("+00:00", "Z"),
        "clientState": "client-state-secret",
    } | extra
    return await api.post(SUBSCRIPTIONS, json=body, headers=bearer(access_token))


# ---- Google ----------------------------------------------------------------------------------------


async def test_google_watch_answers_the_channel_then_posts_a_sync_message(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    answer = await watch(api, acc.access_token, receiver.url("/google"), params={"ttl": "3600"})
    assert answer.status_code == 200
    channel = answer.json()
    assert channel["kind"] == "api#channel" and channel["id"] == "chan-1" and channel["token"] == "secret-token"
    assert channel["resourceUri"].endswith("/calendars/alice%40example.com/events?alt=json")
    expires = datetime.fromtimestamp(int(channel["expiration"]) / 1000, UTC)
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    [sync] = await receiver.wait_for(1, path="/google")
    assert sync.method == "POST" and sync.body == b""
    assert sync.headers["X-Goog-Resource-State"] == "sync"
    assert sync.headers["X-Goog-Channel-ID"] == "chan-1"
    assert sync.headers["X-Goog-Channel-Token"] == "secret-token"
    assert sync.headers["X-Goog-Resource-ID"] == channel["resourceId"]
    assert sync.headers["X-Goog-Resource-URI"] == channel["resourceUri"]
    assert sync.headers["X-Goog-Message-Number"] == "1"
    assert parsedate_to_datetime(sync.headers["X-Goog-Channel-Expiration"]) == expires


async def test_google_changes_send_exists_messages_with_rising_numbers(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    event_id = fake.put_event("google", ALICE, ALICE, summary="Before")
    assert (await watch(api, acc.access_token, receiver.url("/google"))).status_code == 200
    await receiver.wait_for(1, path="/google")

    # An edit through the control call, then one through the Python state methods.
    edit = await api.post(f"/_ctl/google/calendars/{ALICE}/events/{event_id}", json={"summary": "After"})
    assert edit.status_code == 200
    await receiver.wait_for(2, path="/google")
    fake.delete_event("google", ALICE, ALICE, event_id)
    messages = await receiver.wait_for(3, path="/google")

    assert [m.headers["X-Goog-Resource-State"] for m in messages] == ["sync", "exists", "exists"]
    numbers = [int(m.headers["X-Goog-Message-Number"]) for m in messages]
    assert numbers == sorted(set(numbers)) and numbers[2] - numbers[1] > 1
    assert all(m.headers["X-Goog-Channel-Token"] == "secret-token" for m in messages)


async def test_google_channel_without_a_token_sends_no_token_header(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    body = {"id": "no-token", "type": "web_hook", "address": receiver.url("/google")}
    answer = await api.post(WATCH, json=body, headers=bearer(acc.access_token))
    assert answer.status_code == 200 and "token" not in answer.json()
    [sync] = await receiver.wait_for(1, path="/google")
    assert "X-Goog-Channel-Token" not in sync.headers


async def test_google_watch_rejects_bad_channels(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    url = receiver.url("/google")
    assert (await watch(api, acc.access_token, url, id="bad id!")).status_code == 400
    assert (await watch(api, acc.access_token, url, id="x" * 65)).status_code == 400
    assert (await watch(api, acc.access_token, url, type="email")).status_code == 400
    ftp = await watch(api, acc.access_token, "ftp://example.com/hook")
    assert ftp.status_code == 400 and ftp.json()["error"]["errors"][0]["reason"] == "push.webhookUrlNotHttps"
    assert (await watch(api, acc.access_token, url, token="t" * 257)).status_code == 400
    assert (await watch(api, "wrong-token", url)).status_code == 401
    missing = await api.post(
        "/google/calendar/v3/calendars/nope/events/watch",
        json={"id": "c", "type": "web_hook", "address": url},
        headers=bearer(acc.access_token),
    )
    assert missing.status_code == 404
    # A ttl beyond 7 days is capped; the id charset takes [A-Za-z0-9-_+/=].
    long = await watch(api, acc.access_token, url, id="a-Z_0+/=", params={"ttl": str(30 * 86400)})
    assert long.status_code == 200
    expires = datetime.fromtimestamp(int(long.json()["expiration"]) / 1000, UTC)
    assert expires - datetime.now(UTC) <= timedelta(days=7)
    again = await watch(api, acc.access_token, url, id="a-Z_0+/=")
    assert again.status_code == 400 and again.json()["error"]["errors"][0]["reason"] == "channelIdNotUnique"
    assert [c.id for c in fake.push_channels("google")] == ["a-Z_0+/="]


async def test_google_stop_ends_the_messages(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    event_id = fake.put_event("google", ALICE, ALICE)
    channel = (await watch(api, acc.access_token, receiver.url("/google"))).json()
    await receiver.wait_for(1, path="/google")
    wrong = await api.post(STOP, json={"id": "chan-1", "resourceId": "other"}, headers=bearer(acc.access_token))
    assert wrong.status_code == 404

    stop = await api.post(
        STOP, json={"id": "chan-1", "resourceId": channel["resourceId"]}, headers=bearer(acc.access_token)
    )
    assert stop.status_code == 204 and stop.content == b""
    fake.edit_event("google", ALICE, ALICE, event_id, {"summary": "Changed"})
    await fake.asettle_push()
    assert receiver.count("/google") == 1
    assert fake.push_channels("google") == []
    assert [c.status for c in fake.push_channels("google", include_ended=True)] == ["stopped"]
    again = await api.post(
        STOP, json={"id": "chan-1", "resourceId": channel["resourceId"]}, headers=bearer(acc.access_token)
    )
    assert again.status_code == 404


async def test_google_expired_channel_stops_notifying(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("google")
    event_id = fake.put_event("google", ALICE, ALICE)
    await watch(api, acc.access_token, receiver.url("/google"))
    await receiver.wait_for(1, path="/google")
    assert (await api.post("/_ctl/google/channels/chan-1/expire")).status_code == 204
    fake.edit_event("google", ALICE, ALICE, event_id, {"summary": "Changed"})
    await fake.asettle_push()
    assert receiver.count("/google") == 1
    listed = (await api.get("/_ctl/push/channels", params={"all": "1"})).json()["channels"]
    assert [(c["id"], c["status"]) for c in listed] == [("chan-1", "expired")]
    assert (await api.get("/_ctl/push/channels")).json()["channels"] == []


async def test_google_message_on_command(fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver) -> None:
    acc = fake.add_account("google")
    await watch(api, acc.access_token, receiver.url("/google"))
    answer = await api.post("/_ctl/google/channels/chan-1/notify", json={"state": "not_exists"})
    assert answer.status_code == 202
    messages = await receiver.wait_for(2, path="/google")
    assert messages[1].headers["X-Goog-Resource-State"] == "not_exists"
    assert (await api.post("/_ctl/google/channels/nope/notify", json={})).status_code == 404


async def test_google_retries_a_5xx_answer(fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver) -> None:
    acc = fake.add_account("google")
    event_id = fake.put_event("google", ALICE, ALICE)
    receiver.program("/google", statuses=[200, 503, 404, 200])
    await watch(api, acc.access_token, receiver.url("/google"))
    await receiver.wait_for(1, path="/google")
    fake.edit_event("google", ALICE, ALICE, event_id, {"summary": "Changed"})
    messages = await receiver.wait_for(3, path="/google")
    # The same message again after the 503; the 404 is a failure Google does not retry.
    assert messages[1].headers["X-Goog-Message-Number"] == messages[2].headers["X-Goog-Message-Number"]
    await fake.asettle_push()
    assert [d.status for d in fake.push_deliveries("google")] == [200, 503, 404]


def test_google_watch_to_an_unreachable_address_is_logged(fake: FakeProviders) -> None:
    """From sync code: settle_push blocks until the sync message has failed."""
    acc = fake.add_account("google")
    answer = httpx.post(
        fake.base_url + WATCH,
        json={"id": "c1", "type": "web_hook", "address": "http://127.0.0.1:9/hook"},
        headers=bearer(acc.access_token),
    )
    assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while not fake.push_deliveries() and time.monotonic() < deadline:
        fake.settle_push()  # the sync message is scheduled once the answer has gone out
    [sync] = fake.push_deliveries("google", "sync")
    assert sync.status is None and sync.error and sync.url == "http://127.0.0.1:9/hook"


# ---- Graph ---------------------------------------------------------------------------------------


async def test_graph_create_validates_both_urls_before_answering(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    answer = await subscribe(api, acc.access_token, receiver)
    assert answer.status_code == 201, answer.text
    sub = answer.json()
    assert sub["resource"] == RESOURCE and sub["changeType"] == "created,updated,deleted"
    assert sub["clientState"] == "client-state-secret"
    assert sub["notificationUrl"] == receiver.url("/notify")
    assert sub["lifecycleNotificationUrl"] == receiver.url("/lifecycle")
    assert sub["applicationId"] and sub["creatorId"] and sub["expirationDateTime"].endswith("Z")
    # Both handshakes were answered before the 201: POST, text/plain, a token that needs decoding.
    assert sorted(r.path for _, r in receiver.handshakes) == ["/lifecycle", "/notify"]
    for token, request in receiver.handshakes:
        assert request.method == "POST" and request.headers["Content-Type"].startswith("text/plain")
        assert token.startswith("Validation: ") and "Validation%3a+Testing+" in request.raw_path
    assert receiver.count() == 0
    [channel] = fake.push_channels("microsoft")
    assert (channel.id, channel.calendar_id, channel.token) == (sub["id"], ALICE, "client-state-secret")
    assert [d.status for d in fake.push_deliveries("microsoft", "validation")] == [200, 200]


async def test_graph_handshake_does_not_block_the_fake(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    """The receiver calls the fake while its handshake is pending, as a service whose worker
    waits on the create while its API answers the handshake might: a blocked fake would time out."""
    acc = fake.add_account("microsoft")
    seen: list[int] = []

    async def call_the_fake() -> None:
        async with httpx.AsyncClient(base_url=fake.base_url) as other:
            seen.append((await other.get("/graph/v1.0/me/calendars", headers=bearer(acc.access_token))).status_code)

    receiver.on_validation = call_the_fake
    assert (await subscribe(api, acc.access_token, receiver)).status_code == 201
    assert seen == [200, 200]


@pytest.mark.parametrize("mode", ["wrong-body", "500", "json"])
async def test_graph_create_fails_when_a_handshake_is_answered_wrong(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver, mode: str
) -> None:
    acc = fake.add_account("microsoft")
    receiver.validation["/lifecycle"] = mode
    answer = await subscribe(api, acc.access_token, receiver)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ValidationError"
    assert fake.push_channels() == []


async def test_graph_create_fails_when_a_handshake_is_too_slow(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    fake.push.validation_timeout = 0.2  # Graph waits 10 s
    receiver.on_validation = lambda: asyncio.sleep(2)
    answer = await subscribe(api, acc.access_token, receiver)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ValidationError"
    assert "did not answer within" in answer.json()["error"]["message"]


async def test_graph_create_fails_when_the_endpoint_is_unreachable(fake: FakeProviders, api: httpx.AsyncClient) -> None:
    acc = fake.add_account("microsoft")
    body = {
        "changeType": "updated",
        "notificationUrl": "http://127.0.0.1:9/notify",
        "resource": RESOURCE,
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    answer = await api.post(SUBSCRIPTIONS, json=body, headers=bearer(acc.access_token))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "ValidationError"


async def test_graph_create_rejects_bad_subscriptions(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    too_far = (datetime.now(UTC) + timedelta(minutes=4232)).isoformat()
    assert (await subscribe(api, acc.access_token, receiver, expirationDateTime=too_far)).status_code == 400
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert (await subscribe(api, acc.access_token, receiver, expirationDateTime=past)).status_code == 400
    assert (await subscribe(api, acc.access_token, receiver, changeType="moved")).status_code == 400
    assert (await subscribe(api, acc.access_token, receiver, clientState="s" * 129)).status_code == 400
    assert (await subscribe(api, acc.access_token, receiver, resource="me/calendars/nope/events")).status_code == 404
    assert (await subscribe(api, acc.access_token, receiver, resource="me/messages")).status_code == 400
    assert (await subscribe(api, "wrong", receiver)).status_code == 401
    assert receiver.handshakes == []  # nothing is validated for a request refused up front
    # Graph writes 7 fraction digits; a leading slash and an encoded id are fine too.
    seven = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")
    ok = await subscribe(
        api, acc.access_token, receiver, expirationDateTime=seven, resource="/me/calendars/alice%40example.com/events"
    )
    assert ok.status_code == 201, ok.text


async def test_graph_notifications_carry_the_client_state(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    sub = (await subscribe(api, acc.access_token, receiver)).json()
    created = await api.post(
        f"/_ctl/microsoft/calendars/{ALICE}/events",
        json={"summary": "New", "start": "2024-05-02T09:00:00+00:00", "end": "2024-05-02T10:00:00+00:00"},
    )
    event_id = created.json()["id"]
    await receiver.wait_for(1, path="/notify")
    fake.edit_event("microsoft", ALICE, ALICE, event_id, {"subject": "Renamed"})
    await receiver.wait_for(1, path="/notify")
    fake.delete_event("microsoft", ALICE, ALICE, event_id)
    await receiver.wait_for(3, path="/notify")

    items = receiver.items("/notify")
    assert [i["changeType"] for i in items] == ["created", "updated", "deleted"]
    for item in items:
        assert item["subscriptionId"] == sub["id"] and item["clientState"] == "client-state-secret"
        assert item["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
        assert item["tenantId"] and item["resource"].endswith(f"/Events/{event_id}")
        data = item["resourceData"]
        assert data["id"] == event_id and data["@odata.type"] == "#Microsoft.Graph.Event"
        assert data["@odata.id"] == item["resource"] and data["@odata.etag"].startswith('W/"')


async def test_graph_notifies_only_the_change_types_subscribed(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    assert (await subscribe(api, acc.access_token, receiver, changeType="deleted")).status_code == 201
    event_id = fake.put_event("microsoft", ALICE, ALICE)
    fake.edit_event("microsoft", ALICE, ALICE, event_id, {"subject": "Renamed"})
    fake.delete_event("microsoft", ALICE, ALICE, event_id)
    await fake.asettle_push()
    assert [i["changeType"] for i in receiver.items("/notify")] == ["deleted"]


async def test_graph_patch_extends_and_delete_stops(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    event_id = fake.put_event("microsoft", ALICE, ALICE)
    sub = (await subscribe(api, acc.access_token, receiver, expirationDateTime=_ahead(minutes=60))).json()
    path = f"{SUBSCRIPTIONS}/{sub['id']}"

    renewed = await api.patch(path, json={"expirationDateTime": _ahead(minutes=4200)}, headers=bearer(acc.access_token))
    assert renewed.status_code == 200 and renewed.json()["id"] == sub["id"]
    [channel] = fake.push_channels("microsoft")
    assert channel.expiration - datetime.now(UTC) > timedelta(minutes=4100)
    too_far = await api.patch(path, json={"expirationDateTime": _ahead(minutes=5000)}, headers=bearer(acc.access_token))
    assert too_far.status_code == 400
    assert (await api.get(path, headers=bearer(acc.access_token))).status_code == 200

    assert (await api.delete(path, headers=bearer(acc.access_token))).status_code == 204
    fake.edit_event("microsoft", ALICE, ALICE, event_id, {"subject": "Renamed"})
    await fake.asettle_push()
    assert receiver.count("/notify") == 0
    assert (await api.delete(path, headers=bearer(acc.access_token))).status_code == 404
    gone = await api.patch(path, json={"expirationDateTime": _ahead(minutes=60)}, headers=bearer(acc.access_token))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceNotFound"


async def test_graph_expired_subscription_is_gone(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    event_id = fake.put_event("microsoft", ALICE, ALICE)
    sub = (await subscribe(api, acc.access_token, receiver)).json()
    fake.expire_push_channel("microsoft", sub["id"])
    fake.edit_event("microsoft", ALICE, ALICE, event_id, {"subject": "Renamed"})
    await fake.asettle_push()
    assert receiver.count("/notify") == 0
    patch = await api.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}",
        json={"expirationDateTime": _ahead(minutes=60)},
        headers=bearer(acc.access_token),
    )
    assert patch.status_code == 404
    assert (await api.post(f"/_ctl/microsoft/subscriptions/{sub['id']}/expire")).status_code == 204
    assert (await api.post("/_ctl/microsoft/subscriptions/nope/expire")).status_code == 404


async def test_graph_lifecycle_events_on_command(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    sub = (await subscribe(api, acc.access_token, receiver)).json()
    lifecycle = f"/_ctl/microsoft/subscriptions/{sub['id']}/lifecycle"
    assert (await api.post(lifecycle, json={"event": "reauthorizationRequired"})).status_code == 202
    assert (await api.post(lifecycle, json={"event": "bogus"})).status_code == 400
    fake.send_lifecycle(sub["id"], "missed")
    assert (await api.post(lifecycle, json={"event": "subscriptionRemoved"})).status_code == 202
    await receiver.wait_for(3, path="/lifecycle")

    items = receiver.items("/lifecycle")
    assert [i["lifecycleEvent"] for i in items] == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert all(i["subscriptionId"] == sub["id"] and i["clientState"] == "client-state-secret" for i in items)
    # subscriptionRemoved ended it.
    assert fake.push_channels() == []
    assert (await api.get(f"{SUBSCRIPTIONS}/{sub['id']}", headers=bearer(acc.access_token))).status_code == 404
    assert (await api.post(lifecycle, json={"event": "missed"})).status_code == 404
    reauthorize = f"{SUBSCRIPTIONS}/{sub['id']}/reauthorize"
    assert (await api.post(reauthorize, headers=bearer(acc.access_token))).status_code == 404


async def test_graph_subscription_without_lifecycle_url_or_client_state(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    sub = (await subscribe(api, acc.access_token, receiver, lifecycleNotificationUrl=None, clientState=None)).json()
    fake.put_event("microsoft", ALICE, ALICE)
    await receiver.wait_for(1, path="/notify")
    [item] = receiver.items("/notify")
    assert "clientState" not in item  # Graph sends it only when the subscription has one
    answer = await api.post(f"/_ctl/microsoft/subscriptions/{sub['id']}/lifecycle", json={"event": "missed"})
    assert answer.status_code == 400
    assert (
        await api.post(f"{SUBSCRIPTIONS}/{sub['id']}/reauthorize", headers=bearer(acc.access_token))
    ).status_code == 204


async def test_graph_duplicate_switch_sends_each_notification_twice(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    acc = fake.add_account("microsoft")
    await subscribe(api, acc.access_token, receiver)
    assert (await api.post("/_ctl/push", json={"duplicate": True})).json() == {"drop": False, "duplicate": True}
    fake.put_event("microsoft", ALICE, ALICE)
    await fake.asettle_push()
    items = receiver.items("/notify")
    assert len(items) == 2 and items[0] == items[1]


# ---- both ------------------------------------------------------------------------------------------


async def test_drop_switch_loses_change_notifications(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    google = fake.add_account("google")
    microsoft = fake.add_account("microsoft")
    await watch(api, google.access_token, receiver.url("/google"))
    await subscribe(api, microsoft.access_token, receiver)
    await receiver.wait_for(1, path="/google")

    assert (await api.post("/_ctl/push", json={"drop": True})).json()["drop"] is True
    fake.put_event("google", ALICE, ALICE)
    fake.put_event("microsoft", ALICE, ALICE)
    await fake.asettle_push()
    assert receiver.count("/google") == 1 and receiver.count("/notify") == 0
    assert {
        (d.provider, d.dropped) for d in fake.push_deliveries(kind="exists") + fake.push_deliveries(kind="notification")
    } == {
        ("google", True),
        ("microsoft", True),
    }

    fake.drop_notifications(False)
    fake.put_event("google", ALICE, ALICE)
    fake.put_event("microsoft", ALICE, ALICE)
    await receiver.wait_for(2, path="/google")
    await receiver.wait_for(1, path="/notify")


async def test_push_calls_are_in_the_request_log(
    fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver
) -> None:
    google = fake.add_account("google")
    microsoft = fake.add_account("microsoft")
    channel = (await watch(api, google.access_token, receiver.url("/google"))).json()
    await api.post(
        STOP, json={"id": channel["id"], "resourceId": channel["resourceId"]}, headers=bearer(google.access_token)
    )
    sub = (await subscribe(api, microsoft.access_token, receiver)).json()
    await api.patch(
        f"{SUBSCRIPTIONS}/{sub['id']}",
        json={"expirationDateTime": _ahead(minutes=90)},
        headers=bearer(microsoft.access_token),
    )
    await api.delete(f"{SUBSCRIPTIONS}/{sub['id']}", headers=bearer(microsoft.access_token))
    assert [(r.method, r.status) for r in fake.requests("google", "/events/watch")] == [("POST", 200)]
    assert [(r.method, r.status) for r in fake.requests("google", "/channels/stop")] == [("POST", 204)]
    assert [(r.method, r.status, r.account) for r in fake.requests("microsoft", "/subscriptions")] == [
        ("POST", 201, ALICE),
        ("PATCH", 200, ALICE),
        ("DELETE", 204, ALICE),
    ]


async def test_channel_listing_over_http(fake: FakeProviders, api: httpx.AsyncClient, receiver: PushReceiver) -> None:
    google = fake.add_account("google")
    microsoft = fake.add_account("microsoft")
    await watch(api, google.access_token, receiver.url("/google"))
    sub = (await subscribe(api, microsoft.access_token, receiver)).json()
    listed = (await api.get("/_ctl/push/channels")).json()["channels"]
    assert [(c["provider"], c["id"], c["calendar_id"], c["status"]) for c in listed] == [
        ("google", "chan-1", ALICE, "live"),
        ("microsoft", sub["id"], ALICE, "live"),
    ]
    only = (await api.get("/_ctl/push/channels", params={"provider": "microsoft"})).json()["channels"]
    assert [c["token"] for c in only] == ["client-state-secret"]


# ---- helpers ---------------------------------------------------------------------------------------


def _ahead(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()
