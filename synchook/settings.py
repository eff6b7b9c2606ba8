"""One typed settings object, read from `SYNCHOOK_*` environment variables and passed in explicitly."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

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
    # Provider push (CONTRACT §7): unset public_url turns push off; every calendar is then polled.
    public_url: str | None = None
    push_debounce: float = Field(default=1.0, ge=0)
    push_fallback_interval: int = Field(default=3600, ge=0)
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
    metrics_cache_seconds: float = Field(default=5.0, ge=0)  # /metrics reads the database at most this often
    # DNS for webhook targets, at subscription create and at delivery: "ip" or "ip:port" entries, comma-separated
    # in the environment; empty means the system's resolv.conf. dns_timeout bounds one name's whole resolution.
    dns_nameservers: Annotated[tuple[str, ...], NoDecode] = ()
    dns_timeout: float = Field(default=5.0, gt=0)
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

    @field_validator("dns_nameservers", mode="before")
    @classmethod
    def _parse_nameservers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("retry_schedule entries must be >= 0 seconds, at least one")
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _check_public_url(cls, value: object) -> object:
        # Blank means unset (push off); otherwise an absolute http(s) base without query or fragment.
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            return value
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("public_url must be an absolute http(s) URL without query or fragment")
        return value.strip().rstrip("/")

    @property
    def push_enabled(self) -> bool:
        return self.public_url is not None

    @field_validator("metrics_token")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # SYNCHOOK_METRICS_TOKEN= (as in .env.example) must leave /metrics open, not demand an empty token.
        return value if value is not None and value.get_secret_value() else None

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

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() end up in logs and tracebacks: the URLs' passwords never do.
        for name, value in super().__repr_args__():
            if name in _URLS_WITH_PASSWORDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value


_URLS_WITH_PASSWORDS = frozenset({"database_url", "redis_url"})
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo (and any ``password=`` query parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "***"  # unparseable: print nothing of it
    if has_password:  # otherwise the URL is printed as given (urlunsplit would drop sqlite:///'s empty host)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        url = urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))
    return _QUERY_PASSWORD.sub(r"\1***", url)


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
