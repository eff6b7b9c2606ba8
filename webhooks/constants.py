"""Names shared by the delivery engine, the admin side and the composition root."""

from __future__ import annotations

DELIVER_TASK = "deliver"  # arq function: deliver(ctx, delivery_ids: list[str])
BULK_REPLAY_TASK = "run_bulk_replay"  # arq function: run_bulk_replay(ctx, replay_id: str)
RESPONSE_BODY_LIMIT = 4096
