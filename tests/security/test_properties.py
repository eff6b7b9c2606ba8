"""Hypothesis properties of the pure security-relevant pieces: signatures, retry delays, idempotency, rate limits."""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from subscriptions.keys import generate_ed25519_keypair, public_key_for
from sync_trigger.errors import WINDOW, SyncQuota
from synchook.errors import RateLimited, ValidationFailed
from synchook.http.ratelimit import HitCounter, RateLimitState, hit_api_limit
from synchook.idempotency import fingerprint, parse_key
from webhooks.retry import next_attempt_delay, parse_retry_after
from webhooks.signing import sign
from webhooks.verify import WebhookVerificationError, verify

NOW = 1_700_000_000
PROPERTY = settings(max_examples=200, deadline=None, database=None)

secrets_st = st.binary(min_size=24, max_size=64).map(lambda raw: "whsec_" + base64.b64encode(raw).decode())
msg_ids = st.text(
    st.characters(codec="ascii", exclude_characters=". \t\r\n,", min_codepoint=33), min_size=1, max_size=40
)
bodies = st.binary(max_size=2048)
json_bodies = st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5).map(
    lambda d: json.dumps(d).encode()
)


def headers_for(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


# --- Signing and verification ----------------------------------------------------------------------


@PROPERTY
@given(msg_id=msg_ids, body=json_bodies, secrets=st.lists(secrets_st, min_size=1, max_size=3, unique=True))
def test_every_active_secret_verifies_what_was_signed(msg_id: str, body: bytes, secrets: list[str]) -> None:
    now = int(time.time())  # the reference library checks the timestamp against the clock
    header = sign(msg_id=msg_id, timestamp=now, body=body, secrets=secrets)
    assert len(header.split()) == len(secrets)
    for secret in secrets:
        assert verify(body, headers_for(msg_id, now, header), secret) == json.loads(body)
        # The Standard Webhooks reference library is the oracle.
        Webhook(secret).verify(body, headers_for(msg_id, now, header))


@PROPERTY
@given(msg_id=msg_ids, body=json_bodies, secret=secrets_st, other=secrets_st, data=st.data())
def test_any_change_breaks_the_signature(
    msg_id: str, body: bytes, secret: str, other: str, data: st.DataObject
) -> None:
    assume(other != secret)
    header = sign(msg_id=msg_id, timestamp=NOW, body=body, secrets=[secret])
    good = headers_for(msg_id, NOW, header)
    position = data.draw(st.integers(0, len(body) - 1))
    tampered = bytearray(body)
    tampered[position] ^= data.draw(st.integers(1, 255))
    attempts: list[tuple[bytes, dict[str, str], str]] = [
        (bytes(tampered), good, secret),
        (body, good, other),
        (body, {**good, "webhook-id": msg_id + "x"}, secret),
        (body, {**good, "webhook-timestamp": str(NOW + 1)}, secret),
    ]
    for payload, headers, key in attempts:
        with pytest.raises(WebhookVerificationError):
            verify(payload, headers, key, now=NOW)


@PROPERTY
@given(msg_id=msg_ids, body=json_bodies, secret=secrets_st, skew=st.integers(-(10**6), 10**6))
def test_timestamps_outside_the_tolerance_are_refused(msg_id: str, body: bytes, secret: str, skew: int) -> None:
    header = sign(msg_id=msg_id, timestamp=NOW + skew, body=body, secrets=[secret])
    headers = headers_for(msg_id, NOW + skew, header)
    if abs(skew) <= 300:
        verify(body, headers, secret, now=NOW)
    else:
        with pytest.raises(WebhookVerificationError):
            verify(body, headers, secret, now=NOW)


@settings(max_examples=50, deadline=None, database=None)
@given(msg_id=msg_ids, body=json_bodies)
def test_ed25519_signatures_verify_with_the_public_key_only(msg_id: str, body: bytes) -> None:
    signing_key, public_key = generate_ed25519_keypair()
    assert public_key_for(signing_key) == public_key
    header = sign(msg_id=msg_id, timestamp=NOW, body=body, secrets=[], signing_keys=[signing_key])
    assert header.startswith("v1a,")
    assert verify(body, headers_for(msg_id, NOW, header), public_key, now=NOW) == json.loads(body)
    _, stranger = generate_ed25519_keypair()
    with pytest.raises(WebhookVerificationError):
        verify(body, headers_for(msg_id, NOW, header), stranger, now=NOW)


@PROPERTY
@given(
    body=bodies,
    secret=secrets_st,
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "x"]),
        st.text(max_size=300),
    ),
)
def test_verify_never_fails_with_anything_but_its_own_error(body: bytes, secret: str, headers: dict[str, str]) -> None:
    # Garbage headers and bodies: a WebhookVerificationError (or, improbably, success), never a crash.
    try:
        verify(body, headers, secret, now=NOW)
    except WebhookVerificationError as exc:
        assert secret not in str(exc)


# --- Retry delays ---------------------------------------------------------------------------------

schedules = st.lists(st.floats(0, 10**6, allow_nan=False), min_size=1, max_size=10)


@PROPERTY
@given(
    schedule=schedules,
    attempt=st.integers(1, 15),
    jitter=st.floats(0, 0.99),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    max_retry_after=st.floats(0, 10**6),
    seed=st.integers(),
)
def test_retry_delay_follows_the_schedule_within_jitter_and_bounds_retry_after(
    schedule: list[float],
    attempt: int,
    jitter: float,
    retry_after: float | None,
    max_retry_after: float,
    seed: int,
) -> None:
    delay = next_attempt_delay(
        attempt,
        schedule,
        retry_after=retry_after,
        jitter=jitter,
        max_retry_after=max_retry_after,
        rng=random.Random(seed),
    )
    if attempt >= len(schedule):
        assert delay is None
        return
    assert delay is not None and delay >= 0
    base = schedule[attempt]
    low, high = base * (1 - jitter), base * (1 + jitter)
    honoured = retry_after is not None and retry_after == retry_after and 0 < retry_after < float("inf")
    if honoured:
        assert retry_after is not None
        assert delay <= max(high, min(retry_after, max_retry_after)) + 1e-6
        assert delay >= min(retry_after, max_retry_after) - 1e-6
    else:
        assert low - 1e-6 <= delay <= high + 1e-6


@PROPERTY
@given(value=st.none() | st.text(max_size=100))
def test_parse_retry_after_never_raises_and_is_never_negative(value: str | None) -> None:
    parsed = parse_retry_after(value, datetime(2024, 1, 1, tzinfo=UTC))
    assert parsed is None or parsed >= 0


@PROPERTY
@given(seconds=st.integers(0, 10**9))
def test_parse_retry_after_reads_delta_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), datetime(2024, 1, 1, tzinfo=UTC)) == float(seconds)


# --- Idempotency ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(payload=st.dictionaries(st.text(max_size=8), json_values, max_size=6), seed=st.integers())
def test_fingerprint_ignores_key_order(payload: dict[str, Any], seed: int) -> None:
    items = list(payload.items())
    random.Random(seed).shuffle(items)
    assert fingerprint(dict(items)) == fingerprint(payload)


@PROPERTY
@given(a=json_values, b=json_values)
def test_fingerprint_differs_exactly_when_the_canonical_json_differs(a: Any, b: Any) -> None:
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (fingerprint(a) == fingerprint(b)) == same


@PROPERTY
@given(value=st.uuids(), upper=st.booleans(), braces=st.booleans())
def test_any_spelling_of_a_uuid_is_one_idempotency_key(value: uuid.UUID, upper: bool, braces: bool) -> None:
    text = str(value).upper() if upper else str(value)
    text = "{" + text + "}" if braces else text
    assert parse_key(text) == str(value)


@PROPERTY
@given(raw=st.text(max_size=200))
def test_idempotency_keys_are_uuids_or_422(raw: str) -> None:
    try:
        parsed = parse_key(raw)
    except ValidationFailed as exc:
        assert exc.field == "Idempotency-Key"
    else:
        assert parsed is not None and str(uuid.UUID(parsed)) == parsed


# --- Rate limits --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_minute=st.integers(1, 30), requests=st.integers(0, 60))
async def test_api_limit_admits_exactly_the_limit_per_window(redis: ArqRedis, per_minute: int, requests: int) -> None:
    key_id = f"key_{uuid.uuid4().hex}"  # one fresh counter per example: the redis fixture is not reset between them
    admitted: list[RateLimitState] = []
    refused: list[RateLimited] = []
    hits = HitCounter(redis)
    for _ in range(requests):
        try:
            admitted.append(await hit_api_limit(hits, key_id=key_id, per_minute=per_minute))
        except RateLimited as exc:
            refused.append(exc)
    await hits.close()
    if len({int(s.reset_at) for s in admitted}) > 1:
        return  # the run straddled a minute boundary: two windows, the count below does not apply
    assert len(admitted) == min(requests, per_minute)
    assert [s.remaining for s in admitted] == list(range(per_minute - 1, per_minute - 1 - len(admitted), -1))
    assert len(refused) == requests - len(admitted)
    for exc in refused:
        assert exc.status == 429 and int(exc.headers["Retry-After"]) >= 1
        assert exc.headers["X-RateLimit-Remaining"] == "0"


@PROPERTY
@given(
    cap=st.integers(1, 20),
    ages=st.lists(st.integers(0, 2 * 3600), max_size=30),
)
def test_on_demand_cap_counts_only_the_rolling_hour(cap: int, ages: list[int]) -> None:
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    inside = [now - timedelta(seconds=age) for age in ages if timedelta(seconds=age) < WINDOW]
    quota = SyncQuota(limit=cap, used=len(inside), oldest_queued_at=min(inside, default=None), now=now)
    assert quota.remaining == max(0, cap - len(inside))
    if inside:
        assert quota.frees_at == min(inside) + WINDOW
        assert now < quota.frees_at <= now + WINDOW
        assert 1 <= quota.retry_after <= 3600
    else:
        assert quota.frees_at == now and quota.retry_after == 1
