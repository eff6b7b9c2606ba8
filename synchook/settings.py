"""One typed settings object, read from `SYNCHOOK_*` environment variables and passed in explicitly."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".synchook")
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNCHOOK_", extra="ignore", validate_default=True)

    database_url: str = f"sqlite+aiosqlite:///./{DEFAULT_DATA_DIR}/synchook.db"
    redis_url: str | None = None
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    root_path: str = ""

    google_api_url: str = "https://www.googleapis.com"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    microsoft_graph_url: str = "https://graph.microsoft.com/v1.0"
    microsoft_token_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretStr | None = None

    allow_private_targets: bool = False
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    delivery_timeout: float = Field(default=15.0, gt=0)
    background_sync_interval: int = Field(default=300, ge=0)
    disable_after: int = Field(default=432_000, ge=0)
    retention_days: int = Field(default=30, ge=1)
    replay_max: int = Field(default=100_000, ge=1)
    metrics_token: SecretStr | None = None
    log_format: Literal["json", "text"] = "json"

    # Beyond the contract's table: operational knobs with safe defaults.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    on_demand_syncs_per_hour: int = Field(default=6, ge=1)
    api_requests_per_minute: int = Field(default=1200, ge=1)
    sync_job_timeout: int = Field(default=1800, ge=10)
    max_throttle_wait: float = Field(default=120.0, ge=0)
    delivery_batch_size: int = Field(default=200, ge=1)
    delivery_concurrency: int = Field(default=64, ge=1)
    per_subscription_concurrency: int = Field(default=16, ge=1)
    delivery_lease_seconds: int = Field(default=60, ge=5)
    max_retry_after: float = Field(default=3600.0, ge=0)
    relay_grace_seconds: float = Field(default=5.0, ge=0)
    worker_poll_delay: float = Field(default=0.005, gt=0)
    dev: bool = False

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                raise ValueError("retry_schedule needs at least one entry")
            return tuple(float(p) for p in parts)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("retry_schedule entries must be >= 0 seconds, at least one")
        return value

    @field_validator("root_path")
    @classmethod
    def _normalise_root_path(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("/"):
            value = "/" + value
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_secret_keys(value.get_secret_value())
        return value

    def secret_keys(self) -> list[bytes]:
        """The master keys, first one encrypts; raises if none is configured."""
        if self.secret_key is None:
            raise RuntimeError("SYNCHOOK_SECRET_KEY is not set (run `synchook secrets generate`)")
        return parse_secret_keys(self.secret_key.get_secret_value())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def parse_secret_keys(raw: str) -> list[bytes]:
    keys: list[bytes] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            key = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (ValueError, TypeError):
            key = b""
        if len(key) != 32:
            # Never echo the value: it is a secret even when malformed.
            raise ValueError("each SYNCHOOK_SECRET_KEY entry must be url-safe base64 of 32 bytes")
        keys.append(key)
    if not keys:
        raise ValueError("SYNCHOOK_SECRET_KEY is empty")
    return keys
