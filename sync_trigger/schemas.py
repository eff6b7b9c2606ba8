"""Request bodies of the sync API: strict, unknown fields refused, each error naming its field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StrictStr, ValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy import Row

from sync_trigger.models import Connection, JobStatus, NewJob, SyncJob, SyncMode, SyncTrigger
from sync_trigger.push.views import PushView
from synchook.http.fields import IsoDateTime
from synchook.http.wire import Timestamp, Wire
from synchook.providers import Provider

TOKEN_MAX_BYTES = 4096


def _check_token(value: str) -> str:
    # Bytes, not characters: 4096 emoji are 16 KiB, which sealed no longer fits its column (a 500 on PostgreSQL).
    if len(value.encode("utf-8")) > TOKEN_MAX_BYTES:
        raise ValueError(f"must be at most {TOKEN_MAX_BYTES} bytes of UTF-8")
    # A token becomes an Authorization header on every provider call: CR/LF would split it (or fail every sync).
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters such as CR or LF")
    return value


ProviderToken = Annotated[StrictStr, Field(min_length=1, max_length=TOKEN_MAX_BYTES), AfterValidator(_check_token)]


class TriggerSyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: SyncMode = SyncMode.INCREMENTAL
    provider: Provider | None = None
    from_date: IsoDateTime | None = None
    to_date: IsoDateTime | None = None


def _check_username(value: str) -> str:
    # It goes into the Basic Authorization header: no control characters, and no ':' (RFC 7617 §2).
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ValueError("must not contain control characters such as CR or LF")
    if ":" in value:
        raise ValueError("must not contain ':'")
    return value


class OAuthConnectionBody(BaseModel):
    """Google and Microsoft: OAuth tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    provider: Literal[Provider.GOOGLE, Provider.MICROSOFT]
    account: StrictStr = Field(min_length=1, max_length=320)
    access_token: ProviderToken
    refresh_token: ProviderToken
    expires_at: IsoDateTime | None = None


class CalDAVConnectionBody(BaseModel):
    """CalDAV (CONTRACT §8): the server, a username and an app-specific password (HTTP Basic)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    provider: Literal[Provider.CALDAV]
    account: StrictStr = Field(min_length=1, max_length=320)
    server_url: StrictStr = Field(min_length=1, max_length=2048, description="e.g. https://caldav.icloud.com")
    username: Annotated[StrictStr, Field(min_length=1, max_length=320), AfterValidator(_check_username)]
    password: ProviderToken  # bounded and free of control characters like a token; sealed at rest


class ConnectionCreateBody(
    RootModel[Annotated[OAuthConnectionBody | CalDAVConnectionBody, Field(discriminator="provider")]]
):
    """POST /v1/calendar/connections: one body per kind of provider, told apart by `provider`."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> ConnectionCreateBody:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            # Name the field as the caller wrote it ("password"), not pydantic's "caldav.password".
            errors: list[Any] = []
            for error in exc.errors(include_url=False):
                detail: dict[str, Any] = dict(error)
                loc = tuple(error["loc"])
                if loc and loc[0] in tuple(Provider):
                    loc = loc[1:]
                elif error["type"] in ("union_tag_not_found", "union_tag_invalid"):
                    names = ", ".join(f"'{p.value}'" for p in Provider)
                    detail["type"] = PydanticCustomError("enum", f"Input should be one of {names}")
                    loc = ("provider",)
                errors.append({**detail, "loc": loc})
            raise ValidationError.from_exception_data(exc.title, errors) from None


# --- Response shapes ---------------------------------------------------------------------------------


class SyncAccepted(Wire):
    """The 202 body's `data`: exactly the seed's four fields."""

    job_id: str = Field(pattern=r"^cal_sync_[0-9A-HJKMNP-TV-Z]{26}$")
    status: JobStatus
    mode: SyncMode
    queued_at: Timestamp

    @classmethod
    def of(cls, job: SyncJob | NewJob) -> SyncAccepted:
        return cls(job_id=job.id, status=JobStatus(job.status), mode=SyncMode(job.mode), queued_at=job.queued_at)


class SyncStats(Wire):
    calendars: int
    events_created: int
    events_updated: int
    events_deleted: int


class JobError(Wire):
    code: str
    message: str


class SyncRetry(Wire):
    """While a provider request is retried (unreachable, throttling, 5xx); the retries give up after
    SYNCHOOK_MAX_THROTTLE_WAIT seconds of waiting."""

    attempt: int = Field(ge=2, description="the try that goes out next")
    next_attempt_at: Timestamp
    last_error: JobError | None

    @classmethod
    def of(cls, job: SyncJob | Row[Any]) -> SyncRetry | None:
        if job.status != JobStatus.RUNNING or job.retry_attempt is None or job.retry_at is None:
            return None
        error = JobError.model_validate(job.retry_error) if job.retry_error is not None else None
        return cls(attempt=job.retry_attempt, next_attempt_at=job.retry_at, last_error=error)


class SyncJobView(Wire):
    """GET /v1/calendar/sync/{job_id}."""

    job_id: str
    status: JobStatus
    mode: SyncMode
    trigger: SyncTrigger = Field(
        description="api: POST /v1/calendar/sync; background: the poll; push: a provider notification"
    )
    provider: Provider | None
    from_date: Timestamp | None
    to_date: Timestamp | None
    queued_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    stats: SyncStats | None
    error: JobError | None
    retry: SyncRetry | None = Field(description="null unless a provider request is being retried")

    @classmethod
    def of(cls, job: SyncJob | Row[Any]) -> SyncJobView:
        """From the job, or its row (GET reads one row, no ORM object)."""
        return cls(
            job_id=job.id,
            status=JobStatus(job.status),
            mode=SyncMode(job.mode),
            trigger=SyncTrigger(job.trigger),
            provider=Provider(job.provider) if job.provider is not None else None,
            from_date=job.from_date,
            to_date=job.to_date,
            queued_at=job.queued_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            stats=SyncStats.model_validate(job.stats) if job.stats is not None else None,
            error=JobError.model_validate(job.error) if job.error is not None else None,
            retry=SyncRetry.of(job),
        )


class ConnectionView(Wire):
    id: str = Field(pattern="^conn_")
    provider: Provider
    account: str
    status: str
    push: PushView = Field(description="Over its calendars' channels (§7): failed if any failed, active if all are")
    created_at: Timestamp
    last_synced_at: Timestamp | None

    @classmethod
    def of(cls, connection: Connection, push: PushView | None = None) -> ConnectionView:
        return cls(
            id=connection.id,
            provider=Provider(connection.provider),
            account=connection.account,
            status=connection.status,
            push=push or PushView.off(),
            created_at=connection.created_at,
            last_synced_at=connection.last_synced_at,
        )
