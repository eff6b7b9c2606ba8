"""Prometheus counters and histograms: what *this* process did (deliveries by outcome, attempt latency, HTTP requests).

API and workers are separate processes. ``REGISTRY`` is what the process that serves ``/metrics`` (an API)
did itself: sum those across instances in PromQL. ``ENGINE_REGISTRY`` holds what workers count (deliveries,
attempts): a worker serves no HTTP, so it adds them to cluster-wide totals in Redis
(synchook.metrics_totals) that every API exposes. The domains record into them (``record_attempt``,
``record_delivery_outcome``); the scrape-time gauges that read the domains' tables, and ``GET /metrics``
itself, are the composition root's (synchook.root.metrics).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from synchook.providers import Provider

# Label values are closed sets: anything else is reported as "other", so a caller's typo cannot
# explode the series count.
# A delivery's outcome is any status it moves to from pending. Spelled out: the kernel never imports a domain
# (tests/kernel/test_layering.py); tests/kernel/test_metrics.py holds the set to webhooks' DeliveryStatus.
DELIVERY_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "dead", "cancelled")
ATTEMPT_OUTCOMES: tuple[str, ...] = ("succeeded", "failed", "timeout", "error")
OTHER = "other"

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
ENGINE_REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES_NAME = "synchook_deliveries"
DELIVERIES_DOC = "Deliveries that reached an outcome on any worker (succeeded, failed and rescheduled, dead, cancelled)"
DELIVERIES = Counter(DELIVERIES_NAME, DELIVERIES_DOC, ["outcome"], registry=ENGINE_REGISTRY)
ATTEMPT_SECONDS_NAME = "synchook_delivery_attempt_duration_seconds"
ATTEMPT_SECONDS_DOC = "Duration of each webhook delivery attempt, on every worker, by outcome"
ATTEMPT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
ATTEMPT_SECONDS = Histogram(
    ATTEMPT_SECONDS_NAME, ATTEMPT_SECONDS_DOC, ["outcome"], buckets=ATTEMPT_BUCKETS, registry=ENGINE_REGISTRY
)
HTTP_REQUESTS = Counter(
    "synchook_http_requests",
    "HTTP requests served by this process, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "synchook_http_request_duration_seconds",
    "HTTP request latency in this process, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)

# Provider push notifications (CONTRACT §7), one count per notification (per item of a Graph batch).
PUSH_PROVIDERS: tuple[str, ...] = (Provider.GOOGLE, Provider.MICROSOFT)
PUSH_OUTCOMES: tuple[str, ...] = (
    "scheduled",  # opened a debounce window: a push sync of its calendar will follow
    "coalesced",  # joined an open window or a queued/running sync of its calendar
    "sync",  # Google's "sync" message after a watch: nothing to do
    "validation",  # Graph's validation handshake, echoed
    "renew",  # Graph lifecycle reauthorizationRequired: the subscription is renewed
    "recreate",  # Graph lifecycle subscriptionRemoved: a new subscription is made
    "unknown_channel",  # no channel or subscription of ours has this id
    "wrong_secret",  # the channel token or clientState does not match
    "malformed",  # missing headers, malformed JSON
    "too_large",  # body over 1 MiB
    "rate_limited",  # the source spent its budget of rejected notifications
    "unavailable",  # Redis or the database was unreachable: the provider retries
)
PUSH_NOTIFICATIONS = Counter(
    "synchook_push_notifications",
    "Provider push notifications received by this process, by provider and outcome",
    ["provider", "outcome"],
    registry=REGISTRY,
)

for _outcome in (*DELIVERY_OUTCOMES, OTHER):
    DELIVERIES.labels(outcome=_outcome)
for _outcome in (*ATTEMPT_OUTCOMES, OTHER):
    ATTEMPT_SECONDS.labels(outcome=_outcome)


def _closed(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else OTHER


# Each outcome's child, looked up once: labels() takes a lock and parses its keywords, per attempt (a delivery's).
_ATTEMPT_CHILDREN = {outcome: ATTEMPT_SECONDS.labels(outcome=outcome) for outcome in (*ATTEMPT_OUTCOMES, OTHER)}


def record_attempt(outcome: str, seconds: float) -> None:
    """One delivery attempt finished: outcome is succeeded | failed (non-2xx) | timeout | error (network)."""
    _ATTEMPT_CHILDREN[_closed(outcome, ATTEMPT_OUTCOMES)].observe(max(0.0, seconds))


def record_delivery_outcome(outcome: str, count: int = 1) -> None:
    """``count`` deliveries changed state: succeeded | failed (another attempt is scheduled) | dead | cancelled."""
    DELIVERIES.labels(outcome=_closed(outcome, DELIVERY_OUTCOMES)).inc(count)


def record_push_notification(provider: str, outcome: str, count: int = 1) -> None:
    """``count`` provider notifications (or Graph batch items) reached ``outcome`` (PUSH_OUTCOMES)."""
    if count > 0:
        PUSH_NOTIFICATIONS.labels(
            provider=_closed(provider, PUSH_PROVIDERS), outcome=_closed(outcome, PUSH_OUTCOMES)
        ).inc(count)


def record_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)),
            HTTP_SECONDS.labels(method=method, route=route),
        )
        if len(_REQUEST_CHILDREN) < _MAX_REQUEST_CHILDREN:
            _REQUEST_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(max(0.0, seconds))


# Each (method, route template, status)'s children, looked up once: labels() takes a lock and parses its keywords, per
# request (~1.5 % of a one-row GET's samples). Bounded anyway: the labels are (templates and statuses are few).
_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
_MAX_REQUEST_CHILDREN = 4096


# --- HTTP instrumentation ----------------------------------------------------------------------------

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/calendar/sync/{job_id}``), never the raw path: bounded labels."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    # A Mount left in the scope means no route inside it matched (a 404 under /v1).
    if isinstance(route, Mount) or not isinstance(path, str):
        return UNMATCHED
    # Mounts accumulate their prefixes in root_path; the app's own ASGI root_path is not part of the route.
    prefix = str(scope.get("root_path", ""))
    app_root = str(scope.get("app_root_path", ""))
    if app_root and prefix.startswith(app_root):
        prefix = prefix[len(app_root) :]
    return prefix + path


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and observes its latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            record_request(str(scope.get("method", "")), route_template(scope), status, time.perf_counter() - started)
