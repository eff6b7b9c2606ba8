"""A delivery row is built in one place, for every caller (fan-out, replay, bench): every column set."""

from __future__ import annotations

from synchook.timeutil import utcnow
from webhooks.delivery.rows import new_delivery
from webhooks.models import Delivery

_COLUMNS = {column.name for column in Delivery.__table__.columns}  # type: ignore[attr-defined]


def test_a_new_delivery_sets_every_column_and_is_due_now() -> None:
    now = utcnow()
    row = new_delivery(
        workspace_id="ws_1", event_id="evt_1", event_type="webhook.test", subscription_id="sub_1", now=now
    )
    assert set(row) == _COLUMNS
    assert row["id"].startswith("dlv_")
    assert (row["status"], row["next_attempt_at"], row["completed_at"]) == ("pending", now, None)
    assert (row["lease_until"], row["lease_owner"], row["cancel_reason"], row["replays"]) == (None, None, None, 0)


def test_a_delivery_to_a_disabled_subscription_starts_cancelled() -> None:
    now = utcnow()
    row = new_delivery(
        workspace_id="ws_1",
        event_id="evt_1",
        event_type="webhook.test",
        subscription_id="sub_1",
        now=now,
        cancel_reason="subscription disabled: paused",
        replays=1,
    )
    assert set(row) == _COLUMNS
    assert (row["status"], row["next_attempt_at"], row["completed_at"]) == ("cancelled", None, now)
    assert (row["cancel_reason"], row["replays"]) == ("subscription disabled: paused", 1)
