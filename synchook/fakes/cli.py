"""`python -m synchook.fakes --port 8555 --seed`: the fakes for manual runs; prints the URLs and tokens."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from datetime import UTC, datetime, timedelta

from synchook.fakes.models import GOOGLE, MICROSOFT
from synchook.fakes.server import FakeProviders

_CONTROL = """control calls (no auth, loopback; {provider} is google or microsoft):
  POST   /_ctl/{provider}/calendars/{calendar_id}/events               create an event
  POST   /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}    edit: {"summary": "New"}
  DELETE /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}    delete
  POST   /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}/attendees/{email}  {"response": "declined"}
push (every change notifies the calendar's live channels / subscriptions):
  GET    /_ctl/push/channels[?provider=&calendar_id=&all=1]   live channels (all: stopped/expired too)
  POST   /_ctl/push  {"drop": true}                           lose change notifications (test the fallback poll)
  POST   /_ctl/push  {"duplicate": true}                      Graph sends each notification twice
  GET    /_ctl/push/deliveries[?provider=&kind=]              what was sent, and answered
  POST   /_ctl/google/channels/{id}/expire                    expire a channel now
  POST   /_ctl/google/channels/{id}/notify  {"state": "exists"|"not_exists"}
  POST   /_ctl/microsoft/subscriptions/{id}/expire            expire a subscription now
  POST   /_ctl/microsoft/subscriptions/{id}/lifecycle
         {"event": "reauthorizationRequired"|"subscriptionRemoved"|"missed"}  a lifecycle notification
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Fake Google Calendar + Microsoft Graph for manual runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_CONTROL,
    )
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
