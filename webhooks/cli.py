"""`synchook deliveries list …` and `synchook replay …`: the admin side from a terminal, straight on the database.

Replays started here are audited with requested_by "cli". A bulk replay runs on the workers (enqueued on
SYNCHOOK_REDIS_URL, or on the embedded Redis of a `synchook dev` running in this directory); `--wait` (the
default) follows its progress until it finishes. Without a Redis the CLI runs the replay itself, in this
process, or with `--no-wait` leaves it queued for a worker's resume cron.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TextIO

from synchook.context import AppContext
from synchook.errors import ValidationFailed
from synchook.settings import Settings
from synchook.timeutil import isoformat

CLI_REQUESTER = "cli"
_BAR_WIDTH = 30
# A bulk replay left queued is enqueued again by the resume cron (each minute, at second 30) once untouched
# for 60 s (replays.resume_stalled_replays): within two minutes.
RESUME_WITHIN = "2 minutes"
_NO_REDIS = "no Redis to hand it to (SYNCHOOK_REDIS_URL is unset and no `synchook dev` runs in this directory)"


def _run(settings: Settings, work: Callable[[AppContext], Awaitable[None]], *, redis: bool = False) -> None:
    async def main() -> None:
        app = await AppContext.open(settings, connect_redis=redis)
        try:
            await work(app)
        finally:
            await app.close()

    asyncio.run(main())


async def _workspace_id(app: AppContext, name_or_id: str) -> str:
    from synchook.auth import service as auth

    async with app.db.session() as session:
        workspace = await auth.find_workspace(session, name_or_id=name_or_id)
    return workspace.id


# --- deliveries list ---------------------------------------------------------------------------------


def cmd_deliveries_list(args: argparse.Namespace, settings: Settings) -> None:
    from pydantic import ValidationError

    from synchook.http.bodies import validation_failed
    from webhooks.admin import queries
    from webhooks.admin.schemas import DeliveriesQuery

    if not 1 <= args.limit <= 1000:
        raise ValidationFailed("--limit must be from 1 to 1000")
    given = {"status": args.status, "event_type": args.event_type, "since": args.since, "until": args.until}
    try:
        # The API's own query model: the CLI's filters are checked exactly as `GET /v1/webhooks/deliveries`'s.
        query = DeliveriesQuery.model_validate({name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        raise validation_failed(exc) from None
    filters = replace(query.filters(), subscription_id=args.subscription)

    async def work(app: AppContext) -> None:
        workspace_id = await _workspace_id(app, args.workspace)
        async with app.db.session() as session:
            rows = await queries.list_deliveries(
                session, workspace_id=workspace_id, filters=filters, limit=args.limit, before_id=None
            )
        table = [
            [
                r.id,
                r.status,
                r.event_type,
                r.subscription_id,
                str(r.attempt_count),
                str(r.last_status_code or r.last_error or "-")[:40],
                isoformat(r.created_at) or "",
            ]
            for r in rows
        ]
        _print_table(["id", "status", "event_type", "subscription", "attempts", "last", "created_at"], table)
        print(
            f"{len(rows)} deliveries" + (" (more: raise --limit or narrow --since)" if len(rows) == args.limit else "")
        )

    _run(settings, work)


def _print_table(headers: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out or sys.stdout,
        )


# --- replay ------------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    if args.delivery_id:
        if args.since or args.workspace:
            raise ValidationFailed("give either a DELIVERY_ID or --workspace/--since, not both")
        _run(settings, lambda app: _replay_one(app, args.delivery_id), redis=True)
        return
    if not (args.workspace and args.since):
        raise ValidationFailed("a bulk replay needs --workspace and --since (or give a DELIVERY_ID)")
    _run(settings, lambda app: _replay_bulk(app, args), redis=True)


async def _replay_one(app: AppContext, delivery_id: str) -> None:
    import sqlalchemy as sa
    from sqlmodel import col

    from synchook.errors import NotFound
    from webhooks.admin import replays
    from webhooks.models import Delivery
    from webhooks.tasks import SWEEP_EVERY_S

    async with app.db.session() as session:
        workspace_id = await session.scalar(
            sa.select(col(Delivery.workspace_id)).where(col(Delivery.id) == delivery_id)
        )
    if workspace_id is None:
        raise NotFound("Delivery")
    replay, delivery = await replays.replay_delivery(
        app, workspace_id=workspace_id, delivery_id=delivery_id, requested_by=CLI_REQUESTER
    )
    print(f"replaying {delivery.id} (event {delivery.event_id}, same webhook-id): {delivery.status}; audit {replay.id}")
    if app.redis is None:
        print(f"queued; a running worker picks it up within {SWEEP_EVERY_S} s ({_NO_REDIS})")


async def _replay_bulk(app: AppContext, args: argparse.Namespace) -> None:
    from synchook.http.bodies import validate
    from webhooks.admin import replays
    from webhooks.admin.schemas import BulkReplayBody

    body = validate(
        BulkReplayBody,
        {
            "since": args.since,
            "until": args.until,
            "subscription_id": args.subscription,
            "event_types": args.event_type or None,
            "status": args.status or None,
            "confirm_count": args.confirm_count,
        },
    )
    workspace_id = await _workspace_id(app, args.workspace)
    try:
        async with app.db.session() as session:
            replay, match = await replays.create_bulk_replay(
                session,
                workspace_id=workspace_id,
                body=body,
                requested_by=CLI_REQUESTER,
                replay_max=app.settings.replay_max,
                dry_run=args.dry_run,
            )
    except replays.ReplayTooLarge as exc:
        raise ValidationFailed(
            f"{exc.count} deliveries match, more than SYNCHOOK_REPLAY_MAX ({exc.limit}); "
            f"run it again with --confirm-count {exc.count} to replay them all"
        ) from None
    detail = f"{match.deliveries} deliveries to replay"
    if body.subscription_id:
        detail += f", {match.undelivered_events} past events never sent to {body.subscription_id}"
    if args.dry_run:
        print(f"{match.total} would be sent ({detail}); nothing was changed")
        return
    print(f"{replay.id}: {match.total} matched ({detail})")
    if app.redis is None and not args.wait:
        print(f"queued; a running worker starts it within {RESUME_WITHIN} ({_NO_REDIS})")
        return
    if app.redis is None:
        print(f"running the replay in this process: {_NO_REDIS}")
        task = asyncio.create_task(replays.run_bulk_replay(app, replay.id))
        await _follow(app, replay.id, done=task)
        return
    await replays.enqueue_bulk_replay(app, replay.id)
    if args.wait:
        await _follow(app, replay.id)
    else:
        print(f"queued; follow it with GET /v1/webhooks/replays/{replay.id}")


async def _follow(
    app: AppContext, replay_id: str, *, done: asyncio.Task[Any] | None = None, every: float = 0.5
) -> None:
    """Redraw a text progress bar until the replay is no longer queued or running."""
    from webhooks.models import ACTIVE_REPLAY_STATUSES, Replay

    interactive = sys.stdout.isatty()
    last = ""
    while True:
        async with app.db.session() as session:
            replay = await session.get(Replay, replay_id, populate_existing=True)
        assert replay is not None
        line = _bar(replay)
        if line != last:
            print(("\r" + line) if interactive else line, end="" if interactive else "\n", flush=True)
            last = line
        if replay.status not in ACTIVE_REPLAY_STATUSES:
            break
        if done is not None and done.done():
            done.result()  # raises what the in-process run raised
        await asyncio.sleep(every)
    if interactive:
        print()
    if done is not None:
        await done
    if replay.status != "completed":
        raise ValidationFailed(f"replay {replay.id} ended {replay.status}")


def _bar(replay: Any) -> str:
    total = max(replay.matched, 1)
    done = replay.matched if replay.status == "completed" else min(replay.replayed + replay.skipped, total)
    filled = round(_BAR_WIDTH * done / total)
    return (
        f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{replay.matched} "
        f"({replay.replayed} replayed, {replay.skipped} skipped) {replay.status}"
    )


def register(subparsers: Any) -> None:
    """Add this domain's commands to the `synchook` parser (synchook.cli), which loads their settings."""
    from webhooks.models import DELIVERY_STATUSES, REPLAYABLE_STATUSES

    deliveries = subparsers.add_parser("deliveries", help="inspect webhook deliveries").add_subparsers(
        dest="action", required=True
    )
    listing = deliveries.add_parser("list", help="list a workspace's deliveries, newest first")
    listing.add_argument("--workspace", required=True, help="workspace name or id")
    listing.add_argument("--status", choices=DELIVERY_STATUSES)
    listing.add_argument("--subscription", default=None, metavar="SUB_ID")
    listing.add_argument("--event-type", default=None)
    listing.add_argument("--since", default=None, metavar="ISO8601")
    listing.add_argument("--until", default=None, metavar="ISO8601")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_deliveries_list)

    replay = subparsers.add_parser(
        "replay",
        help="replay one delivery, or every failed/dead delivery of a time range",
        description="`synchook replay DELIVERY_ID` starts a fresh retry sequence for one delivery. "
        "`synchook replay --workspace W --since T …` replays every match in the background (workers) and shows "
        "its progress; with --subscription, past events that never reached that subscription are sent too.",
    )
    replay.add_argument("delivery_id", nargs="?", default=None, metavar="DELIVERY_ID")
    replay.add_argument("--workspace", default=None, help="workspace name or id (bulk)")
    replay.add_argument("--since", default=None, metavar="ISO8601")
    replay.add_argument("--until", default=None, metavar="ISO8601")
    replay.add_argument("--subscription", default=None, metavar="SUB_ID")
    replay.add_argument("--event-type", action="append", default=None, help="repeatable; wildcards allowed")
    replay.add_argument("--status", action="append", choices=REPLAYABLE_STATUSES, default=None, help="repeatable")
    replay.add_argument("--dry-run", action="store_true", help="only count what would be sent")
    replay.add_argument(
        "--confirm-count",
        type=int,
        default=None,
        metavar="N",
        help="the match count, to confirm a replay of more than SYNCHOOK_REPLAY_MAX deliveries",
    )
    replay.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True, help="follow progress until done (default)"
    )
    # A replay is enqueued: on the embedded Redis of a `synchook dev` here when SYNCHOOK_REDIS_URL is unset.
    replay.set_defaults(func=cmd_replay, dev_redis=True)
