"""`python -m synchook.fakes --port 8555 --seed`: the fakes for manual runs; prints the URLs and tokens."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from datetime import UTC, datetime, timedelta

from synchook.fakes.models import GOOGLE, MICROSOFT
from synchook.fakes.server import FakeProviders


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Google Calendar + Microsoft Graph for manual runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", action="store_true", help="add alice@example.com on both with 20 events each")
    args = parser.parse_args()
    fakes = FakeProviders(args.host, args.port).start()
    # Every line is shell (comments and `export`s): the whole output pastes into the shell that starts synchook.
    print(f"# Fake Google Calendar + Microsoft Graph on {fakes.base_url}", flush=True)
    print("# Paste these lines into the shell that starts synchook (make run, or .venv/bin/synchook dev):")
    for key, value in fakes.settings_env().items():
        print(f"export {key}={shlex.quote(value)}", flush=True)
    if args.seed:
        print("# Demo accounts: 20 plain events each from tomorrow, plus an all-day event, a weekly series,")
        print("# a meeting with attendees and a conference link, and a Europe/Zurich event.")
        print(f"# Edit one: curl -X POST {fakes.base_url}/_ctl/google/calendars/alice%40example.com/events/ID \\")
        print("#   -H 'content-type: application/json' -d '{\"summary\": \"New\"}'")
        print("# Connect one with POST /v1/calendar/connections and:")
        for provider in (GOOGLE, MICROSOFT):
            acc = fakes.add_account(provider, access_token=f"{provider}-access", refresh_token=f"{provider}-refresh")
            # Inside the default sync window (now-90 d .. now+180 d), so a first sync finds them.
            tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
            fakes.add_events(provider, acc.account, acc.account, 20, first=tomorrow)
            fakes.seed_demo(provider, acc.account, acc.account, first=tomorrow)
            body = {
                "provider": provider,
                "account": acc.account,
                "access_token": acc.access_token,
                "refresh_token": acc.refresh_token,
            }
            print(f"#   {json.dumps(body)}")
    print("# Serving; Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fakes.stop()
