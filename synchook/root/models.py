"""Every table, imported in one place so migrations and `create_all` see the whole schema (composition root)."""

from __future__ import annotations

from sqlmodel import SQLModel

from subscriptions.models import Subscription, SubscriptionFilter
from sync_trigger.calendar_index.models import Calendar, CalendarChange, CalendarEvent, ChangeCounter
from sync_trigger.models import Connection, SyncJob
from sync_trigger.push.models import PushChannel
from synchook.auth.models import ApiKey, Workspace
from synchook.idempotency import IdempotencyRecord
from synchook.outbox import Event
from webhooks.models import Delivery, DeliveryAttempt, Replay

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "Calendar",
    "CalendarChange",
    "CalendarEvent",
    "ChangeCounter",
    "Connection",
    "Delivery",
    "DeliveryAttempt",
    "Event",
    "IdempotencyRecord",
    "PushChannel",
    "Replay",
    "Subscription",
    "SubscriptionFilter",
    "SyncJob",
    "Workspace",
    "metadata",
]
