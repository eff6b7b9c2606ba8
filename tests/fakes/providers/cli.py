"""`python -m tests.fakes.providers --port 8555 --seed`: the fakes for manual runs; prints the URLs and tokens."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from tests.fakes.providers.models import GOOGLE, MICROSOFT
from tests.fakes.providers.server import FakeProviders


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Google Calendar + Microsoft Graph for manual runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="store_true", help="add alice@example.com on both with 20 events each")
    args = parser.parse_args()
    fakes = FakeProviders(args.host, args.port).start()
    print(fakes.base_url, flush=True)
    for key, value in fakes.settings_env().items():
        print(f"{key}={value}", flush=True)
    if args.seed:
        for provider in (GOOGLE, MICROSOFT):
            acc = fakes.add_account(provider, access_token=f"{provider}-access", refresh_token=f"{provider}-refresh")
            # Inside the default sync window (now-90 d .. now+180 d), so a first sync finds them.
            tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
            fakes.add_events(provider, acc.account, acc.account, 20, first=tomorrow)
            print(
                f"{provider}: account={acc.account} access_token={acc.access_token} refresh_token={acc.refresh_token}"
            )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fakes.stop()
