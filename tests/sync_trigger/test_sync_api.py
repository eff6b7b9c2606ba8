"""POST /v1/calendar/sync and GET /v1/calendar/sync/{job_id}, over real HTTP (CONTRACT §4.1, the seed)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from sync_trigger.models import SyncJob
from sync_trigger.schemas import TriggerSyncBody
from sync_trigger.service import IDEMPOTENCY_SCOPE
from synchook import idempotency
from synchook.context import AppContext
from synchook.errors import Conflict
from synchook.idempotency import IdempotencyRecord
from synchook.outbox import Event
from synchook.timeutil import parse_datetime, utcnow
from tests.factories import Tenant, add_key, make_tenant

JOB_ID = re.compile(r"^cal_sync_[0-9A-HJKMNP-TV-Z]{26}$")
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def connect(client: httpx.AsyncClient, tenant: Tenant, provider: str = "google") -> dict[str, Any]:
    response = await client.post(
        "/v1/calendar/connections",
        headers=tenant.headers,
        json={
            "provider": provider,
            "account": f"someone-{uuid.uuid4().hex[:8]}@example.com",
            "access_token": "at-secret",
            "refresh_token": "rt-secret",
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


@pytest.fixture
async def tenant(app_ctx: AppContext, client: httpx.AsyncClient) -> Tenant:
    made = await make_tenant(app_ctx)
    await connect(client, made, "google")
    return made


async def count(ctx: AppContext, model: Any, **where: Any) -> int:
    async with ctx.db.session() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int((await session.execute(query)).scalar_one())


async def test_empty_body_queues_an_incremental_sync_in_the_seed_envelope(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = utcnow()
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"data"}
    data = body["data"]
    assert set(data) == {"job_id", "status", "mode", "queued_at"}
    assert JOB_ID.match(data["job_id"])
    assert data["status"] == "queued"
    assert data["mode"] == "incremental"
    assert ISO_MS.match(data["queued_at"])
    assert parse_datetime(data["queued_at"]) >= before - timedelta(milliseconds=1)
    assert response.headers["x-request-id"]


async def test_the_seed_example_body(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
    assert response.status_code == 202
    assert response.json()["data"]["mode"] == "incremental"


async def test_get_job_shows_every_field(client: httpx.AsyncClient, tenant: Tenant) -> None:
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers, json={"provider": "google"})).json()[
        "data"
    ]["job_id"]
    response = await client.get(f"/v1/calendar/sync/{job_id}", headers=tenant.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data == {
        "job_id": job_id,
        "status": "queued",
        "mode": "incremental",
        "trigger": "api",
        "provider": "google",
        "from_date": None,
        "to_date": None,
        "queued_at": data["queued_at"],
        "started_at": None,
        "completed_at": None,
        "stats": None,
        "error": None,
        "retry": None,
    }


async def test_full_sync_defaults_to_90_days_back_and_180_ahead(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})
    assert response.status_code == 202
    data = response.json()["data"]
    assert data["mode"] == "full"
    job = (await client.get(f"/v1/calendar/sync/{data['job_id']}", headers=tenant.headers)).json()["data"]
    queued = parse_datetime(job["queued_at"])
    assert abs(parse_datetime(job["from_date"]) - (queued - timedelta(days=90))) < timedelta(seconds=5)
    assert abs(parse_datetime(job["to_date"]) - (queued + timedelta(days=180))) < timedelta(seconds=5)


async def test_full_sync_with_an_explicit_window(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/calendar/sync",
        headers=tenant.headers,
        json={"mode": "full", "from_date": "2026-01-01", "to_date": "2026-03-01T12:00:00+02:00"},
    )
    assert response.status_code == 202
    job = (await client.get(f"/v1/calendar/sync/{response.json()['data']['job_id']}", headers=tenant.headers)).json()
    assert job["data"]["from_date"] == "2026-01-01T00:00:00.000Z"
    assert job["data"]["to_date"] == "2026-03-01T10:00:00.000Z"


@pytest.mark.parametrize("field", ["from_date", "to_date"])
async def test_dates_are_refused_for_incremental_syncs(client: httpx.AsyncClient, tenant: Tenant, field: str) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={field: "2026-01-01"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["field"] == field
    assert field in error["message"]


async def test_from_date_must_precede_to_date(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/v1/calendar/sync",
        headers=tenant.headers,
        json={"mode": "full", "from_date": "2026-05-01", "to_date": "2026-05-01"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "from_date"


async def test_unknown_job_other_workspace_and_malformed_ids_are_404(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers)).json()["data"]["job_id"]
    stranger = await make_tenant(app_ctx)
    for path, headers in [
        (f"/v1/calendar/sync/{job_id}", stranger.headers),
        ("/v1/calendar/sync/cal_sync_01HYVTB5QK8ZA1QH82R7Q9N2PD", tenant.headers),
        ("/v1/calendar/sync/..%2F..%2Fetc", tenant.headers),
        ("/v1/calendar/sync/" + "x" * 500, tenant.headers),
    ]:
        response = await client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


async def test_get_needs_read_calendar(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers)).json()["data"]["job_id"]
    writer = await add_key(app_ctx, tenant, scopes=["write:calendar"])
    response = await client.get(f"/v1/calendar/sync/{job_id}", headers=writer.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"


# --- 401 / 403 ---------------------------------------------------------------------------------------


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/calendar/sync")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_key"


async def test_key_without_write_calendar_is_403(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    reader = await add_key(app_ctx, tenant, scopes=["read:calendar", "write:webhooks"])
    response = await client.post("/v1/calendar/sync", headers=reader.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert await count(app_ctx, SyncJob) == 0


async def test_workspace_without_connection_is_403(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    lonely = await make_tenant(app_ctx)
    response = await client.post("/v1/calendar/sync", headers=lonely.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert await count(app_ctx, SyncJob) == 0
    assert await count(app_ctx, Event) == 0


async def test_provider_not_connected_is_403(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"provider": "microsoft"})
    assert response.status_code == 403
    assert "microsoft" in response.json()["error"]["message"]
    assert (
        await client.post("/v1/calendar/sync", headers=tenant.headers, json={"provider": "google"})
    ).status_code == 202


async def test_a_deleted_connection_no_longer_counts(app_ctx: AppContext, client: httpx.AsyncClient) -> None:
    tenant = await make_tenant(app_ctx)
    connection = await connect(client, tenant, "microsoft")
    deleted = await client.delete(f"/v1/calendar/connections/{connection['id']}", headers=tenant.headers)
    assert deleted.status_code == 204
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 403


# --- 409 sync_in_progress ------------------------------------------------------------------------


async def test_full_sync_queued_refuses_an_overlapping_full_sync(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})).status_code == 202
    response = await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "sync_in_progress"
    assert response.headers["x-ratelimit-limit"] == "6"
    assert response.headers["x-ratelimit-remaining"] == "5"
    assert await count(app_ctx, SyncJob) == 1


async def test_full_sync_running_refuses_incremental_of_the_same_provider(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    job_id = (
        await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full", "provider": "google"})
    ).json()["data"]["job_id"]
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).where(SyncJob.id == job_id).values(status="running"))
    for body in ({}, {"provider": "google"}, {"mode": "full"}):
        response = await client.post("/v1/calendar/sync", headers=tenant.headers, json=body)
        assert response.status_code == 409, body
        assert response.json()["error"]["code"] == "sync_in_progress"


async def test_full_sync_of_one_provider_does_not_block_the_other(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await connect(client, tenant, "microsoft")
    full = {"mode": "full", "provider": "google"}
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json=full)).status_code == 202
    other = {"mode": "full", "provider": "microsoft"}
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json=other)).status_code == 202
    # ...but a request for every provider overlaps both.
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json={})).status_code == 409


async def test_finished_full_sync_no_longer_blocks(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    job_id = (await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})).json()["data"][
        "job_id"
    ]
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).where(SyncJob.id == job_id).values(status="failed"))
    assert (await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "full"})).status_code == 202


async def test_incremental_syncs_do_not_block_each_other(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(3):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 202


# --- 429 rate_limited ----------------------------------------------------------------------------


async def test_seventh_sync_in_an_hour_is_rate_limited(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    remaining = []
    for _ in range(6):
        response = await client.post("/v1/calendar/sync", headers=tenant.headers)
        assert response.status_code == 202
        assert response.headers["x-ratelimit-limit"] == "6"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [5, 4, 3, 2, 1, 0]
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 3500 <= retry_after <= 3600
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert abs(int(response.headers["x-ratelimit-reset"]) - (time.time() + retry_after)) <= 2
    assert await count(app_ctx, SyncJob) == 6


async def test_retry_after_counts_down_to_when_the_oldest_sync_leaves_the_window(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(6):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 202
    # Age the jobs: the oldest was queued 50 minutes ago, so a slot frees in 10 minutes.
    async with app_ctx.db.session() as session:
        jobs = (await session.execute(select(SyncJob).order_by(col(SyncJob.queued_at)))).scalars().all()
        for minutes, job in zip([50, 40, 30, 20, 10, 5], jobs, strict=True):
            job.queued_at = utcnow() - timedelta(minutes=minutes)
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 429
    assert 595 <= int(response.headers["retry-after"]) <= 601


async def test_syncs_older_than_an_hour_do_not_count(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for _ in range(6):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 202
    async with app_ctx.db.session() as session:
        await session.execute(update(SyncJob).values(queued_at=datetime.now(UTC) - timedelta(minutes=61)))
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 202
    assert response.headers["x-ratelimit-remaining"] == "5"


async def test_rejected_requests_do_not_count(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(3):
        await client.post("/v1/calendar/sync", headers=tenant.headers, json={"provider": "microsoft"})  # 403
        await client.post("/v1/calendar/sync", headers=tenant.headers, json={"mode": "bogus"})  # 422
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 202
    assert response.headers["x-ratelimit-remaining"] == "5"


async def test_the_cap_is_per_workspace(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    for _ in range(6):
        assert (await client.post("/v1/calendar/sync", headers=tenant.headers)).status_code == 202
    other = await make_tenant(app_ctx)
    await connect(client, other)
    assert (await client.post("/v1/calendar/sync", headers=other.headers)).status_code == 202


async def test_background_jobs_do_not_count(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    async with app_ctx.db.session() as session:
        for i in range(10):
            session.add(
                SyncJob(
                    id=f"cal_sync_01HYVTB5QK8ZA1QH82R7Q9N2{i:02d}",
                    workspace_id=tenant.workspace_id,
                    mode="incremental",
                    trigger="background",
                    status="completed",
                    queued_at=utcnow(),
                )
            )
    response = await client.post("/v1/calendar/sync", headers=tenant.headers)
    assert response.status_code == 202
    assert response.headers["x-ratelimit-remaining"] == "5"


# --- Idempotency-Key -----------------------------------------------------------------------------


async def test_same_key_same_body_replays_the_first_response(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/calendar/sync", headers=headers, json={"mode": "full"})
    again = await client.post("/v1/calendar/sync", headers=headers, json={"mode": "full"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # Replays do not count against the cap, and do not make a second job or event.
    assert again.headers["x-ratelimit-remaining"] == "5"
    assert await count(app_ctx, SyncJob) == 1
    assert await count(app_ctx, Event, type="calendar.sync.queued") == 1


async def test_same_key_other_body_is_422_idempotency_key_reused(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
    assert (await client.post("/v1/calendar/sync", headers=headers, json={})).status_code == 202
    response = await client.post("/v1/calendar/sync", headers=headers, json={"provider": "google"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert await count(app_ctx, SyncJob) == 1


async def test_key_in_flight_is_409_idempotency_in_progress(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    key = str(uuid.uuid4())
    # A claim whose request has not finished yet (another API process holds it).
    fingerprint = idempotency.fingerprint(TriggerSyncBody().model_dump(mode="json"))
    claim = {"workspace_id": tenant.workspace_id, "scope": IDEMPOTENCY_SCOPE, "key": key}
    assert await idempotency.claim(app_ctx.db, request_hash=fingerprint, **claim) is None
    headers = {**tenant.headers, "Idempotency-Key": key}
    response = await client.post("/v1/calendar/sync", headers=headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"
    assert await count(app_ctx, SyncJob) == 0
    await idempotency.release(app_ctx.db, **claim)
    assert (await client.post("/v1/calendar/sync", headers=headers)).status_code == 202


async def test_a_claim_left_by_a_crash_expires_with_its_request(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    key = str(uuid.uuid4())
    # The API process died between the claim and the job's commit: the claim is never completed nor released.
    fingerprint = idempotency.fingerprint(TriggerSyncBody().model_dump(mode="json"))
    claim = {"workspace_id": tenant.workspace_id, "scope": IDEMPOTENCY_SCOPE, "key": key}
    assert await idempotency.claim(app_ctx.db, request_hash=fingerprint, **claim) is None
    headers = {**tenant.headers, "Idempotency-Key": key}
    assert (await client.post("/v1/calendar/sync", headers=headers)).status_code == 409
    async with app_ctx.db.session() as session:
        await session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - idempotency.CLAIM_LEASE - timedelta(seconds=1))
        )
    retried = await client.post("/v1/calendar/sync", headers=headers)
    assert retried.status_code == 202, retried.text
    replayed = await client.post("/v1/calendar/sync", headers=headers)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == retried.json()
    assert await count(app_ctx, SyncJob) == 1


async def test_a_request_that_outlived_its_claim_cannot_commit_a_second_job(app_ctx: AppContext) -> None:
    claim = {"workspace_id": "ws", "scope": IDEMPOTENCY_SCOPE, "key": str(uuid.uuid4()), "request_hash": "h"}
    assert await idempotency.claim(app_ctx.db, **claim) is None  # the slow request
    async with app_ctx.db.session() as session:
        await session.execute(
            update(IdempotencyRecord).values(created_at=utcnow() - idempotency.CLAIM_LEASE - timedelta(seconds=1))
        )
    assert await idempotency.claim(app_ctx.db, **claim) is None  # a retry takes the key over
    async with app_ctx.db.session() as session:
        await idempotency.complete(session, status_code=202, response={"job": "retry"}, **claim)
    with pytest.raises(Conflict):
        async with app_ctx.db.session() as session:
            await idempotency.complete(session, status_code=202, response={"job": "slow"}, **claim)
    replay = await idempotency.claim(app_ctx.db, **claim)
    assert replay is not None and replay.response == {"job": "retry"}


async def test_a_refused_request_releases_its_key(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
    refused = await client.post("/v1/calendar/sync", headers=headers, json={"provider": "microsoft"})
    assert refused.status_code == 403
    assert await count(app_ctx, IdempotencyRecord) == 0
    await connect(client, tenant, "microsoft")
    retried = await client.post("/v1/calendar/sync", headers=headers, json={"provider": "microsoft"})
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers


async def test_keys_are_per_workspace(app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    other = await make_tenant(app_ctx)
    await connect(client, other)
    first = await client.post("/v1/calendar/sync", headers={**tenant.headers, "Idempotency-Key": key})
    second = await client.post("/v1/calendar/sync", headers={**other.headers, "Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["data"]["job_id"] != second.json()["data"]["job_id"]


async def test_bad_idempotency_key_is_422_naming_the_header(
    app_ctx: AppContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post("/v1/calendar/sync", headers={**tenant.headers, "Idempotency-Key": "not-a-uuid"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert await count(app_ctx, SyncJob) == 0


# --- Mount prefix --------------------------------------------------------------------------------


class TestRootPath:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"root_path": "/functions/v1/api-gateway"}

    async def test_the_seed_url_works_under_the_prefix(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        prefix = "/functions/v1/api-gateway"
        response = await client.post(f"{prefix}/v1/calendar/sync", headers=tenant.headers, json={"mode": "incremental"})
        assert response.status_code == 202
        job_id = response.json()["data"]["job_id"]
        assert (await client.get(f"{prefix}/v1/calendar/sync/{job_id}", headers=tenant.headers)).status_code == 200
        assert (await client.get(f"{prefix}/healthz")).status_code == 200
