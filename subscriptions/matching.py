"""Which subscriptions want an event, and the secrets to sign it with: the delivery engine's view of subscriptions.

Matching is one query on the ``ix_subscription_filters_match`` index (workspace, pattern, provider): the
event type expands to the few patterns that select it (itself, each ``prefix.*`` group, ``*``), so the
cost depends on how many subscriptions match, not on how many exist.

On PostgreSQL each match is planned for the workspaces it names (``plan_for_values``). A cached generic plan
knows only a workspace's average share of the table, from the statistics of when it was made: one made while the
tables were small, or before a workspace grew to 100,000 subscriptions, walked the whole primary key (or the
filters' subscription index) filtering by workspace: 80-330 ms a match at 100,000-200,000 subscriptions against
0.3-2 ms, until autovacuum next analyzed the tables ((i)'s 100 and 10,000 workspaces ran at 0.12-0.45 x raw when
it did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from subscriptions.catalogue import patterns_for
from subscriptions.models import ANY, SignatureType, Subscription, SubscriptionFilter
from synchook.crypto import SecretBox
from synchook.db import among_bound, plan_for_values

CHANGE_PREFIX = "calendar.event."
SYNC_PREFIX = "calendar.sync."

__all__ = [
    "Matched",
    "Scoped",
    "Sealed",
    "in_scope",
    "match_page",
    "match_subscriptions",
    "match_workspaces",
    "signing_secrets",
]


class Scoped(Protocol):
    """What the fan-out reads of a matched subscription: an ORM ``Subscription`` or a row of ``SCOPE_COLUMNS``."""

    @property
    def id(self) -> str: ...
    @property
    def workspace_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def disabled_reason(self) -> str | None: ...
    @property
    def connection_ids(self) -> list[str] | None: ...
    @property
    def calendar_ids(self) -> list[str] | None: ...
    @property
    def scope_providers(self) -> list[str] | None: ...


class Sealed(Protocol):
    """What signing reads of a subscription: an ORM ``Subscription`` or the delivery path's row of it."""

    @property
    def id(self) -> str: ...
    @property
    def signature_type(self) -> str: ...
    @property
    def secret_sealed(self) -> str: ...
    @property
    def previous_secret_sealed(self) -> str | None: ...
    @property
    def previous_secret_expires_at(self) -> datetime | None: ...


class Matched(Scoped, Sealed, Protocol):
    """A row of ``match_subscriptions``: what the fan-out reads, and what sending to it needs (sent inline)."""

    @property
    def url(self) -> str: ...
    @property
    def deleted_at(self) -> datetime | None: ...
    @property
    def rate_limit_per_second(self) -> int | None: ...


def _columns(*names: str) -> tuple[sa.Column[Any], ...]:
    return tuple(Subscription.__table__.c[name] for name in names)  # type: ignore[attr-defined]


_SCOPE_NAMES = ("id", "workspace_id", "status", "disabled_reason", "connection_ids", "calendar_ids", "scope_providers")
_SCOPE_COLUMNS = _columns(*_SCOPE_NAMES)
_SENDING_NAMES = (
    "url",
    "deleted_at",
    "rate_limit_per_second",
    "signature_type",
    "secret_sealed",
    "previous_secret_sealed",
    "previous_secret_expires_at",
)
# Rows, not ORM objects: a relay batch of 20 events in 20 workspaces matches 20 times, and building the ORM
# objects of each match cost more than the statement ((i)'s 10,000 workspaces).
_MATCH_COLUMNS = _columns(*_SCOPE_NAMES, *_SENDING_NAMES)


async def match_subscriptions(
    session: AsyncSession,
    *,
    workspace_id: str,
    event_type: str,
    provider: str | None,
    target_subscription_id: str | None = None,
    limit: int | None = None,
) -> list[Matched]:
    """Every live subscription of the workspace that wants the event, enabled or disabled, ordered by id.

    ``provider`` None puts no condition on providers. With ``target_subscription_id`` only that
    subscription is returned (if it is the workspace's and not deleted), whatever its filters.
    ``limit``: only the first ones.
    """
    statement = _statement(False, provider is not None, target_subscription_id is not None, False, limit is not None)
    params = _params(workspace_id, event_type, provider, target_subscription_id, None, limit)
    await plan_for_values(session)
    rows = await session.execute(statement, params)
    return cast(list[Matched], rows.all())


async def match_workspaces(
    session: AsyncSession, *, workspace_ids: Sequence[str], event_type: str, provider: str | None, limit: int
) -> dict[str, list[Matched]] | None:
    """``match_subscriptions`` for several workspaces in one statement: each one's matches, in id order (a
    workspace with none is absent). None when more than ``limit`` match in all: the caller then matches workspace
    by workspace, each with a limit of its own, so a workspace with 100,000 subscriptions never loads whole.

    A relay batch of 20 events names up to 20 workspaces: one statement instead of 20 ((i)'s 10,000 workspaces).
    """
    postgres = (await session.connection()).dialect.name == "postgresql"
    statement = _statement(False, provider is not None, False, False, True, many=True, postgres=postgres)
    params = _params("", event_type, provider, None, None, limit + 1)
    params["workspace_ids"] = list(workspace_ids)
    await plan_for_values(session)
    rows = (await session.execute(statement, params)).all()
    if len(rows) > limit:
        return None
    matched: dict[str, list[Matched]] = {}
    for row in rows:
        matched.setdefault(row.workspace_id, []).append(cast(Matched, row))
    return matched


async def match_page(
    session: AsyncSession,
    *,
    workspace_id: str,
    event_type: str,
    provider: str | None,
    target_subscription_id: str | None,
    after: str | None,
    limit: int,
) -> list[Scoped]:
    """One page of what ``match_subscriptions`` returns (the first ``limit`` with an id greater than ``after``),
    as rows of the columns the fan-out reads: building ORM objects was 9 % of a worker fanning out 100,000."""
    statement = _statement(True, provider is not None, target_subscription_id is not None, after is not None, True)
    params = _params(workspace_id, event_type, provider, target_subscription_id, after, limit)
    await plan_for_values(session)
    rows = await session.execute(statement, params)
    return cast(list[Scoped], rows.all())


def _params(
    workspace_id: str,
    event_type: str,
    provider: str | None,
    target_subscription_id: str | None,
    after: str | None,
    limit: int | None,
) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "patterns": patterns_for(event_type),
        "provider": provider,
        "target": target_subscription_id,
        "after": after,
        "limit": limit,
    }


# Built once per shape, with bound parameters: building the statement for each call was 5 % of a worker whose relay
# batches name 20 workspaces (one match each).
@lru_cache(maxsize=32)
def _statement(
    page: bool, provider: bool, target: bool, after: bool, limit: bool, *, many: bool = False, postgres: bool = False
) -> sa.Select[Any]:
    def in_workspace(column: Any) -> sa.ColumnElement[bool]:
        if many:  # ``workspace_ids``; ``postgres`` only decides how the list is bound (= ANY(array) or IN)
            return among_bound(column, "workspace_ids", postgres=postgres)
        return cast(sa.ColumnElement[bool], column == sa.bindparam("workspace_id"))

    query = sa.select(*(_SCOPE_COLUMNS if page else _MATCH_COLUMNS))
    query = query.where(in_workspace(col(Subscription.workspace_id)), col(Subscription.deleted_at).is_(None))
    if target:
        query = query.where(col(Subscription.id) == sa.bindparam("target"))
    else:
        matching = [col(SubscriptionFilter.event_pattern).in_(sa.bindparam("patterns", expanding=True))]
        if provider:
            matching.append(col(SubscriptionFilter.provider).in_([sa.bindparam("provider", type_=sa.String()), ANY]))
        if not after:
            # IN (subquery) rather than JOIN + DISTINCT: PostgreSQL cannot DISTINCT over the JSON columns.
            wanted = sa.select(col(SubscriptionFilter.subscription_id)).where(
                in_workspace(col(SubscriptionFilter.workspace_id)), *matching
            )
            query = query.where(col(Subscription.id).in_(wanted.distinct()))
        else:
            # A later page of a large fan-out: walk the workspace's subscriptions from ``after`` in id order and
            # probe each one's filters, instead of listing every match again (SQLite built the whole list of
            # 100,000 for each page of 1,000: 66 ms a page, against 5 ms this way). The probe names the
            # subscription, not the workspace (the subscription's own), so the only index it can use is the
            # filters' subscription_id index; and OFFSET 0 keeps it a probe on PostgreSQL, which turns a plain
            # EXISTS into a semi-join. With statistics from before the workspace grew (a bulk import, autovacuum
            # not yet round) PostgreSQL planned that join as every match hashed, joined and sorted for each page,
            # or probed the (workspace, pattern, provider, subscription) index, reading the whole workspace each
            # time: 260-400 ms a page of 1,000 at 100,000 subscriptions, the fan-out's pages quadratic.
            probe = sa.select(col(SubscriptionFilter.subscription_id)).where(
                col(SubscriptionFilter.subscription_id) == col(Subscription.id), *matching
            )
            query = query.where(probe.offset(0).exists())
    if after:
        query = query.where(col(Subscription.id) > sa.bindparam("after"))
    query = query.order_by(col(Subscription.id))
    return query.limit(sa.bindparam("limit", type_=sa.Integer())) if limit else query


def in_scope(subscription: Scoped, event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether the event passes the subscription's ``connection_ids`` / ``calendar_ids`` filters (§4.2).

    In memory, on the rows ``match_subscriptions`` loaded: no query per event. A change event passes when its
    connection or its calendar is listed; a lifecycle event when its job covered one of them (a job of every
    provider, or of the provider of a listed connection or calendar). Other events are not calendar-bound.
    """
    connections, calendars = subscription.connection_ids, subscription.calendar_ids
    if not connections and not calendars:
        return True
    if event_type.startswith(CHANGE_PREFIX):
        return data.get("connection_id") in (connections or ()) or data.get("calendar_id") in (calendars or ())
    if event_type.startswith(SYNC_PREFIX):
        return _job_in_scope(subscription, data)
    return True


def _job_in_scope(subscription: Scoped, data: Mapping[str, Any]) -> bool:
    """Whether a lifecycle event's job covered a listed connection or calendar.

    A push job names its calendar and connection, so it matches exactly. A poll names its connection: exact for
    a connection filter, while a calendar filter falls back to the provider (which connection a listed calendar
    belongs to is not on the subscription row). A job of a whole provider (or of all) covers every calendar of it.
    """
    connections, calendars = subscription.connection_ids or (), subscription.calendar_ids or ()
    connection, calendar = data.get("connection_id"), data.get("calendar_id")
    if calendar is not None:
        return calendar in calendars or connection in connections
    if connection is not None:
        if connection in connections:
            return True
        if not calendars:
            return False
    provider = data.get("provider")
    return provider is None or provider in (subscription.scope_providers or ())


def signing_secrets(subscription: Sealed, box: SecretBox, *, now: datetime) -> tuple[list[str], list[str]]:
    """``(whsec_ secrets, whsk_ keys)`` active at ``now``: the current one, and the previous until it expires.

    Plaintext for the signer only: never log these or put them in an exception.
    """
    sealed = [subscription.secret_sealed]
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret_sealed is not None and expires is not None and expires > now:
        sealed.append(subscription.previous_secret_sealed)
    secrets = [box.open(value, context=subscription.id) for value in sealed]
    if subscription.signature_type == SignatureType.ED25519:
        return [], secrets
    return secrets, []
