"""Channel secrets at rest (CONTRACT §7): resealed by `synchook secrets rotate`, never in a repr."""

from __future__ import annotations

from pydantic import SecretStr

from sync_trigger.models import Connection
from sync_trigger.push.lifecycle import Action, Leased, new_secret
from sync_trigger.push.models import PushChannel
from sync_trigger.push.service import StopOrder
from synchook.context import AppContext
from synchook.crypto import SecretBox, generate_master_key
from synchook.root.reseal import reseal_everything
from synchook.settings import parse_secret_keys
from tests.factories import make_tenant
from tests.factories.push import add_calendar, add_channel
from tests.sync_trigger.test_push_status import connect


async def test_secrets_rotate_reseals_channel_secrets_under_the_new_key(app_ctx: AppContext) -> None:
    tenant = await make_tenant(app_ctx)
    connection = await connect(app_ctx, tenant)
    calendar = await add_calendar(app_ctx, connection, "cal")
    await add_channel(app_ctx, calendar, secret="the-channel-token")
    new_key = generate_master_key()
    old_keys = app_ctx.settings.secret_key.get_secret_value() if app_ctx.settings.secret_key else ""
    rotated = app_ctx.settings.model_copy(update={"secret_key": SecretStr(f"{new_key},{old_keys}")})
    counts = await reseal_everything(rotated)
    assert counts["push channel secrets"].changed == 1
    async with app_ctx.db.session() as session:
        row = await session.get(PushChannel, calendar.id, populate_existing=True)
    assert row is not None and row.secret_sealed is not None
    new_only = SecretBox(parse_secret_keys(new_key))
    assert new_only.open(row.secret_sealed, context=calendar.id) == "the-channel-token"
    # Done once: a second run finds nothing to do.
    assert (await reseal_everything(rotated))["push channel secrets"].changed == 0


def test_reprs_never_show_a_secret() -> None:
    secret = new_secret()
    connection = Connection(
        id="conn_1", workspace_id="ws", provider="google", account="a", access_token_sealed="SEALED-ACCESS",
        refresh_token_sealed="SEALED-REFRESH",
    )  # fmt: skip
    lease = Leased(
        calendar_id="cal_1", provider_calendar_id="a", connection=connection, action=Action.CREATE, failures=0,
        old_channel_id=None, old_resource_id=None, new_channel_id="pch_1", secret=secret,
    )  # fmt: skip
    assert secret.reveal() not in repr(lease) and "SEALED" not in repr(lease)
    order = StopOrder("conn_1", "google", "SEALED-ACCESS", "SEALED-REFRESH", None, (("pch_1", "res"),))
    assert "SEALED" not in repr(order)
    channel = PushChannel(calendar_id="cal_1", secret_sealed="SEALED-SECRET")  # type: ignore[call-arg]
    assert "SEALED" not in repr(channel)
