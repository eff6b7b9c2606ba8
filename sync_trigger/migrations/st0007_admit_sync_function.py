"""sync_trigger: sync_trigger_admit(), POST /v1/calendar/sync's lock, admission and inserts in one call (PostgreSQL)

Revision ID: st0007
Revises: st0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "st0007"
down_revision: str | None = "st0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What sync_trigger.service._admit did in four round trips (BEGIN, the workspace lock, the admission with both
# inserts, COMMIT), as one call: called in autocommit it is its own transaction. Each statement of a VOLATILE
# PL/pgSQL function takes a new snapshot, so the admission, run after the lock was granted, sees every sync the
# previous holder accepted (one statement could not: its snapshot predates the lock wait).
# The literals are sync_trigger.models' values: ConnectionStatus.ACTIVE, the mode "full", ACTIVE_STATUSES and
# SyncTrigger.API; tests/sync_trigger run the same admission cases on SQLite (the Python path) and on PostgreSQL.
_CREATE = """
CREATE FUNCTION sync_trigger_admit(
    p_workspace_id text,
    p_provider text,
    p_since timestamptz,
    p_cap integer,
    p_job_id text,
    p_mode text,
    p_trigger text,
    p_from_date timestamptz,
    p_to_date timestamptz,
    p_status text,
    p_queued_at timestamptz,
    p_attempts integer,
    p_event_id text,
    p_event_type text,
    p_event_data json,
    p_event_created_at timestamptz,
    OUT is_connected boolean,
    OUT full_sync_overlaps boolean,
    OUT used_count bigint,
    OUT oldest_queued_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- FOR NO KEY UPDATE: serialises sync requests (and bulk replays) of the workspace, but not the KEY SHARE lock
    -- that inserts referencing the workspace take for their foreign key.
    PERFORM 1 FROM workspaces WHERE id = p_workspace_id FOR NO KEY UPDATE;
    SELECT
        EXISTS (
            SELECT 1 FROM calendar_connections c
            WHERE c.workspace_id = p_workspace_id AND c.status = 'active'
                AND (p_provider IS NULL OR c.provider = p_provider)
        ),
        -- Any request overlapping a queued or running full sync is refused; provider NULL means every provider.
        EXISTS (
            SELECT 1 FROM sync_jobs j
            WHERE j.workspace_id = p_workspace_id AND j.mode = 'full' AND j.status IN ('queued', 'running')
                AND (p_provider IS NULL OR j.provider IS NULL OR j.provider = p_provider)
        )
    INTO is_connected, full_sync_overlaps;
    SELECT count(j.id), min(j.queued_at) INTO used_count, oldest_queued_at
    FROM sync_jobs j
    WHERE j.workspace_id = p_workspace_id AND j."trigger" = 'api' AND j.queued_at > p_since;
    IF is_connected AND NOT full_sync_overlaps AND used_count < p_cap THEN
        INSERT INTO sync_jobs (id, workspace_id, mode, provider, "trigger", from_date, to_date, status, queued_at,
                               attempts)
        VALUES (p_job_id, p_workspace_id, p_mode, p_provider, p_trigger, p_from_date, p_to_date, p_status,
                p_queued_at, p_attempts);
        INSERT INTO events (id, workspace_id, type, provider, data, created_at)
        VALUES (p_event_id, p_workspace_id, p_event_type, p_provider, p_event_data, p_event_created_at);
    END IF;
END
$$
"""


def upgrade() -> None:
    # SQLite has no functions: its requests keep the Python path (BEGIN IMMEDIATE serialises every writer).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION sync_trigger_admit")
