"""Calendar connections: create (tokens sealed at rest), list, read, delete. Tokens never leave this module."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from sync_trigger import service
from sync_trigger.errors import ConnectionExists
from sync_trigger.models import Connection, ConnectionStatus
from sync_trigger.schemas import CalDAVConnectionBody, OAuthConnectionBody
from synchook.auth.models import Workspace
from synchook.crypto import SecretBox
from synchook.errors import NotFound
from synchook.ids import looks_like_id, new_id
from synchook.timeutil import utcnow


async def create_connection(
    session: AsyncSession,
    *,
    box: SecretBox,
    workspace_id: str,
    body: OAuthConnectionBody | CalDAVConnectionBody,
    server_url: str | None = None,
) -> Connection:
    """Store a connected calendar account; one connection per (provider, account) in a workspace.

    CalDAV: `server_url` is body.server_url as the URL-safety check normalized it (checked before the
    unit of work: no DNS lookup may wait inside one); the password is sealed like a token.
    """
    # Serialise the workspace's writers so two concurrent requests cannot both pass the duplicate check.
    await session.execute(select(col(Workspace.id)).where(col(Workspace.id) == workspace_id).with_for_update())
    duplicate = await session.execute(
        select(col(Connection.id)).where(
            col(Connection.workspace_id) == workspace_id,
            col(Connection.provider) == body.provider,
            col(Connection.account) == body.account,
        )
    )
    if duplicate.first() is not None:
        raise ConnectionExists()
    connection_id = new_id("conn")
    connection = Connection(
        id=connection_id,
        workspace_id=workspace_id,
        provider=body.provider,
        account=body.account,
        status=ConnectionStatus.ACTIVE,
        access_token_sealed="",
        refresh_token_sealed="",
        created_at=utcnow(),
    )
    # Sealed bound to the row id, so a sealed secret copied to another row does not open.
    if isinstance(body, CalDAVConnectionBody):
        connection.access_token_sealed = box.seal(body.password, context=connection_id)
        connection.refresh_token_sealed = box.seal("", context=connection_id)  # Basic auth has nothing to refresh
        connection.server_url = server_url or body.server_url
        connection.username = body.username
    else:
        connection.access_token_sealed = box.seal(body.access_token, context=connection_id)
        connection.refresh_token_sealed = box.seal(body.refresh_token, context=connection_id)
        connection.token_expires_at = body.expires_at
    session.add(connection)
    return connection


async def list_connections(
    session: AsyncSession, *, workspace_id: str, limit: int, after_id: str | None = None
) -> list[Connection]:
    """Newest first; returns up to limit+1 rows so the caller can tell whether a next page exists."""
    query = select(Connection).where(col(Connection.workspace_id) == workspace_id)
    if after_id is not None:
        query = query.where(col(Connection.id) < after_id)
    rows = await session.execute(query.order_by(col(Connection.id).desc()).limit(limit + 1))
    return list(rows.scalars())


async def get_connection(session: AsyncSession, *, workspace_id: str, connection_id: str) -> Connection:
    connection = None
    if looks_like_id(connection_id, "conn"):
        connection = (
            await session.execute(
                select(Connection).where(
                    col(Connection.id) == connection_id,
                    col(Connection.workspace_id) == workspace_id,
                )
            )
        ).scalar_one_or_none()
    if connection is None:
        raise NotFound("Connection")
    return connection


async def delete_connection(session: AsyncSession, *, workspace_id: str, connection_id: str) -> list[str]:
    """Delete it and, in the same transaction, fail the jobs syncing it; returns their failed events' ids."""
    connection = await get_connection(session, workspace_id=workspace_id, connection_id=connection_id)
    event_ids = await service.fail_jobs_of_deleted_connection(session, connection=connection)
    await session.delete(connection)
    return event_ids
