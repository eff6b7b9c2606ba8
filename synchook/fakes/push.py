"""Provider push (PROVIDERS.md §1.5, §2.5): Google channels and Graph subscriptions, and the requests they send.

Every outbound request (Google messages, the Graph validation handshake, notifications, lifecycle
notifications) goes through `Sender`: one asyncio loop with one aiohttp session in a daemon thread of
its own. An event change only schedules its messages, so it never waits on a receiver, and the fake
HTTP server's loop never blocks on one either: a Graph create awaits its handshake as a future of the
sender loop while that loop keeps serving everything else.

A change to an event notifies every live channel / subscription of its calendar: Google one
`exists` message per channel (changes made before the queued message goes out join it, as Google
coalesces), Graph one notification per subscription whose `changeType` names the change (twice
with `duplicate`). `drop` loses change notifications (not the `sync` message, the handshake or
lifecycle events) so tests can prove the fallback poll. Channels past their expiry stop notifying.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from synchook.fakes._common import utc_millis
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeEvent

T = TypeVar("T")

GOOGLE_MAX_TTL = timedelta(days=7)  # also the default lifetime of a channel
GRAPH_MAX_AHEAD = timedelta(minutes=4230)  # Outlook events (PROVIDERS.md §2.5)
GRAPH_CLOCK_SLACK = timedelta(seconds=5)  # a client asking for exactly now + 4230 min must not fail on its own latency
VALIDATION_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
GOOGLE_STATES = ("sync", "exists", "not_exists")
TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://synchook.invalid/fake-tenant"))
APPLICATION_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://synchook.invalid/fake-application"))


def user_id(account: str) -> str:
    """The Graph user id (a GUID) behind a mailbox: notifications name resources by it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{account}"))


def google_resource_id(account: str, calendar_id: str) -> str:
    """Google's opaque id of the watched resource: the same for every channel on one calendar."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"google:{account}/{calendar_id}").hex[:27]


def parse_graph_time(value: object) -> datetime:
    """`2026-12-07T11:00:00.000Z`, `...00.0000000Z` (Graph writes 7 digits) or with an offset; ValueError else."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class PushChannel:
    """A Google channel (`events.watch`) or a Graph subscription.

    `token` is the Google channel token / the Graph clientState; `address` the Google address / the
    Graph notificationUrl. `state` is live, stopped (channels/stop, DELETE) or removed
    (subscriptionRemoved); a live channel past `expiration` reads as expired and sends nothing.
    """

    provider: str
    id: str
    account: str
    calendar_id: str
    address: str
    expiration: datetime
    token: str | None = None
    resource_id: str = ""  # Google resourceId
    resource: str = ""  # Google resourceUri / Graph resource
    lifecycle_url: str | None = None  # Graph only
    change_types: tuple[str, ...] = ()  # Graph only
    state: str = "live"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    message_number: int = 0  # Google: the last X-Goog-Message-Number sent
    pending: bool = False  # Google: an `exists` message is queued; later changes join it

    def live(self) -> bool:
        return self.state == "live" and self.expiration > datetime.now(UTC)

    @property
    def status(self) -> str:
        return "expired" if self.state == "live" and not self.live() else self.state

    def describe(self) -> dict[str, Any]:
        """What `GET /_ctl/push/channels` lists (the token too: the fake stands in for the provider, who knows it)."""
        return {
            "provider": self.provider,
            "id": self.id,
            "account": self.account,
            "calendar_id": self.calendar_id,
            "address": self.address,
            "lifecycle_url": self.lifecycle_url,
            "resource_id": self.resource_id,
            "resource": self.resource,
            "change_types": list(self.change_types),
            "token": self.token,
            "expiration": utc_millis(self.expiration),
            "created": utc_millis(self.created),
            "status": self.status,
            "message_number": self.message_number,
        }


@dataclass(frozen=True)
class PushDelivery:
    """One outbound request (or one dropped on purpose): kind is sync | exists | not_exists (Google),
    validation | notification | lifecycle (Graph)."""

    provider: str
    channel_id: str
    kind: str
    url: str
    status: int | None  # None: dropped, refused, timed out
    dropped: bool = False
    error: str = ""
    at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "channel_id": self.channel_id,
            "kind": self.kind,
            "url": self.url,
            "status": self.status,
            "dropped": self.dropped,
            "error": self.error,
            "at": self.at,
        }


class Sender:
    """One asyncio loop in a daemon thread with one aiohttp session; started on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="fake-push", daemon=True)
                self._thread.start()
            return self._loop

    def spawn(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `make()` on the sender loop. Returns at once, from any thread (also with the state lock held)."""
        loop = self._running_loop()
        loop.call_soon_threadsafe(self._start, loop, make)

    def _start(self, loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = loop.create_task(make())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """`coro` on the sender loop; await it elsewhere with `asyncio.wrap_future`."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop())

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A fresh connection per request: a receiver closing an idle keep-alive connection must not
            # turn into a lost notification (aiohttp does not retry a POST on a stale connection).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, force_close=True),
                timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT),
            )
        return self._session

    async def idle(self) -> None:
        """Until every spawned request (including those spawned meanwhile) has finished."""
        while tasks := [t for t in self._tasks if t is not asyncio.current_task()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._session is not None:
                await self._session.close()
                self._session = None

        # A stuck receiver must not keep the fakes from stopping.
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


class PushHub:
    """Channels and subscriptions, the drop / duplicate switches and the log of outbound requests.

    Shares the state's lock: a change to an event schedules its notifications inside that lock.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.sender = Sender()
        self._generation = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._generation += 1  # requests still in flight from before no longer reach the log
            self.channels: dict[tuple[str, str], PushChannel] = {}
            self.deliveries: list[PushDelivery] = []
            self.drop = False  # lose change notifications
            self.duplicate = False  # Graph: every notification twice
            self.retries = 2  # more attempts after a 5xx answer
            self.retry_backoff = 0.2  # seconds before the first retry, doubling
            self.validation_timeout = VALIDATION_TIMEOUT  # Graph's 10 s; tests of a slow endpoint may lower it

    # ---- channels ------------------------------------------------------------------------

    def get(self, provider: str, channel_id: str) -> PushChannel | None:
        with self._lock:
            return self.channels.get((provider, channel_id))

    def add(self, channel: PushChannel) -> None:
        with self._lock:
            self.channels[(channel.provider, channel.id)] = channel

    def live(self, provider: str, channel_id: str) -> PushChannel:
        """A live channel / subscription; KeyError if unknown, ended or expired."""
        with self._lock:
            channel = self.channels.get((provider, channel_id))
            if channel is None or not channel.live():
                raise KeyError(channel_id)
            return channel

    def list(
        self, provider: str | None = None, *, calendar_id: str | None = None, include_ended: bool = False
    ) -> list[PushChannel]:
        """Copies, oldest first; live ones only unless `include_ended`."""
        with self._lock:
            return [
                replace(c)
                for c in sorted(self.channels.values(), key=lambda c: c.created)
                if (provider is None or c.provider == provider)
                and (calendar_id is None or c.calendar_id == calendar_id)
                and (include_ended or c.live())
            ]

    def expire(self, provider: str, channel_id: str) -> None:
        """The channel / subscription is past its expiry from now on (KeyError if unknown)."""
        with self._lock:
            channel = self.channels[(provider, channel_id)]
            channel.expiration = datetime.now(UTC) - timedelta(milliseconds=1)

    # ---- Google --------------------------------------------------------------------------

    def google_message(self, channel_id: str, state: str) -> None:
        """Send a message of `state` now (sync | exists | not_exists); KeyError unless the channel is live."""
        if state not in GOOGLE_STATES:
            raise ValueError(f"state must be one of {', '.join(GOOGLE_STATES)}")
        with self._lock:
            channel = self.live(GOOGLE, channel_id)
            generation = self._generation
        self.sender.spawn(partial(self._send_google, channel, state, generation))

    async def after_watch(self, channel_id: str) -> None:
        """The `sync` message, sent once the watch answer has gone out (a BackgroundTask of that answer)."""
        with contextlib.suppress(KeyError):  # stopped or expired already
            self.google_message(channel_id, "sync")

    async def _send_google(self, channel: PushChannel, state: str, generation: int) -> None:
        with self._lock:
            if state == "exists":
                channel.pending = False
            if state != "sync" and not channel.live():
                return
            # Google numbers messages per channel, rising but not by one; the first (the sync message) is 1.
            channel.message_number = 1 if not channel.message_number else channel.message_number + random.randint(2, 9)
            headers = {
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Channel-Expiration": format_datetime(channel.expiration, usegmt=True),
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-URI": channel.resource,
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(channel.message_number),
            }
            if channel.token is not None:
                headers["X-Goog-Channel-Token"] = channel.token
        await self._post(GOOGLE, channel.id, state, channel.address, headers, b"", generation)

    # ---- Graph ---------------------------------------------------------------------------

    async def validate(self, url: str) -> str | None:
        """The handshake of `POST /subscriptions`; runs on the sender loop. None when the endpoint passed."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        # Encoded as Graph does (spaces as '+', ':' as %3a): the receiver must decode the query string.
        encoded = "".join(c if c.isalnum() or c in "-_.~" else "+" if c == " " else f"%{ord(c):02x}" for c in token)
        target = URL(f"{url}{'&' if '?' in url else '?'}validationToken={encoded}", encoded=True)
        session = await self.sender.session()
        status, problem = None, ""
        try:
            async with session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=aiohttp.ClientTimeout(total=self.validation_timeout),
            ) as answer:
                status = answer.status
                body = (await answer.read()).decode("utf-8", "replace")
                if status != 200:
                    problem = f"answered {status}, not 200"
                elif answer.content_type != "text/plain":
                    problem = f"answered Content-Type {answer.content_type}, not text/plain"
                elif body != token:
                    problem = "did not answer the decoded validationToken as its body"
        except TimeoutError:
            problem = f"did not answer within {self.validation_timeout:g} s"
        except aiohttp.ClientError as exc:
            problem = f"could not be reached ({type(exc).__name__})"
        with self._lock:
            self.deliveries.append(PushDelivery(MICROSOFT, "", "validation", url, status, error=problem))
        return f"Subscription validation request failed. {url} {problem}." if problem else None

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle notification; `subscriptionRemoved` also ends the subscription.

        KeyError unless the subscription is live; ValueError for another event or without a lifecycleNotificationUrl.
        """
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}")
        with self._lock:
            sub = self.live(MICROSOFT, subscription_id)
            if not sub.lifecycle_url:
                raise ValueError("the subscription has no lifecycleNotificationUrl")
            item = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": utc_millis(sub.expiration),
                "tenantId": TENANT_ID,
                "lifecycleEvent": event,
            } | _client_state(sub)
            if event == "subscriptionRemoved":
                sub.state = "removed"
            url, generation = sub.lifecycle_url, self._generation
        body = json.dumps({"value": [item]}).encode()
        self.sender.spawn(partial(self._post, MICROSOFT, sub.id, "lifecycle", url, _JSON, body, generation))

    def _graph_notification(self, sub: PushChannel, event: FakeEvent, change: str) -> bytes:
        resource = f"Users/{user_id(sub.account)}/Events/{event.id}"
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": utc_millis(sub.expiration),
            "changeType": change,
            "resource": resource,
            **_client_state(sub),
            "tenantId": TENANT_ID,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": resource,
                "@odata.etag": f'W/"{event.seq}"',
                "id": event.id,
            },
        }
        return json.dumps({"value": [item]}).encode()

    # ---- changes -------------------------------------------------------------------------

    def event_changed(self, provider: str, account: str, calendar_id: str, event: FakeEvent, change: str) -> None:
        """Called (state lock held) for every change: change is created | updated | deleted. Never blocks."""
        with self._lock:
            targets = [
                c
                for c in self.channels.values()
                if (c.provider, c.account, c.calendar_id) == (provider, account, calendar_id) and c.live()
            ]
            generation = self._generation
            for channel in targets:
                kind = "exists" if provider == GOOGLE else "notification"
                if provider == MICROSOFT and change not in channel.change_types:
                    continue
                if self.drop:
                    self.deliveries.append(PushDelivery(provider, channel.id, kind, channel.address, None, True))
                    continue
                if provider == GOOGLE:
                    if not channel.pending:  # a queued message covers this change too
                        channel.pending = True
                        self.sender.spawn(partial(self._send_google, channel, "exists", generation))
                    continue
                body = self._graph_notification(channel, event, change)
                for _ in range(2 if self.duplicate else 1):
                    send = partial(self._post, MICROSOFT, channel.id, "notification", channel.address, _JSON, body)
                    self.sender.spawn(partial(send, generation))

    # ---- sending -------------------------------------------------------------------------

    async def _post(
        self, provider: str, channel_id: str, kind: str, url: str, headers: dict[str, str], body: bytes, generation: int
    ) -> None:
        """One message; a 500/502/503/504 answer is retried `retries` times with backoff, as both providers do.
        Every attempt is logged. Nothing goes out for a channel of the state before the last reset."""
        session = await self.sender.session()
        for attempt in range(self.retries + 1):
            if generation != self._generation:
                return
            status, problem = None, ""
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    status = answer.status
            except TimeoutError:
                problem = "timeout"
            except aiohttp.ClientError as exc:
                problem = type(exc).__name__
            with self._lock:
                if generation == self._generation:
                    self.deliveries.append(PushDelivery(provider, channel_id, kind, url, status, error=problem))
            if status not in _RETRIED or attempt == self.retries:
                return
            await asyncio.sleep(self.retry_backoff * 2**attempt)


_JSON = {"Content-Type": "application/json; charset=utf-8"}
_RETRIED = frozenset({500, 502, 503, 504})


def _client_state(sub: PushChannel) -> dict[str, str]:
    """Graph sends clientState only for a subscription created with one."""
    return {"clientState": sub.token} if sub.token is not None else {}
