"""Protocol-faithful fakes of Google Calendar v3, Microsoft Graph v1.0 and both OAuth token endpoints.

One starlette app served by uvicorn on 127.0.0.1, port 0 by default, in a background thread, so
sync tests, async tests and other OS processes can all reach it. URLs (base = `FakeProviders.base_url`):

    SYNCHOOK_GOOGLE_API_URL       {base}/google          (the API is {base}/google/calendar/v3/...)
    SYNCHOOK_GOOGLE_TOKEN_URL     {base}/google/token
    SYNCHOOK_MICROSOFT_GRAPH_URL  {base}/graph/v1.0
    SYNCHOOK_MICROSOFT_TOKEN_URL  {base}/microsoft/token

`settings_env()` returns exactly these (plus the fake OAuth client ids/secrets).

What it reproduces (PROVIDERS.md §4): opaque page/sync tokens that point at a position in a
per-calendar change log; `nextSyncToken` only on the last page; injectable empty pages that
still carry `nextPageToken` / `@odata.nextLink`; 410 with the exact envelopes for unknown or
invalidated sync tokens / deltaLinks; 400 for `syncToken` next to an incompatible parameter and
for a `pageToken` replayed with a different query; deletions as `{"id","status":"cancelled"}` /
`{"id","@removed":{...}}`; Google 403 `userRateLimitExceeded`, 429, 5xx and Graph 429 with
`Retry-After`; 401 for expired access tokens; `invalid_grant`; Microsoft refresh-token rotation;
duplicated delta changes; per-mailbox in-flight counts and a log of every request.

Events carry the fields of PROVIDERS.md §5 as each provider spells them (attendees, organizer,
location, description/body, conference links, recurring instances, all-day dates, time zones; Graph
writes times in the zone of `Prefer: outlook.timezone`, else the event's own). `put_event` takes them
provider-neutral; `edit_event` / `set_attendee_response` change provider fields like a real edit
(bumping `updated`, so the next syncToken / deltaLink round reports it). The same over HTTP, for the
dev server and other processes (no auth, loopback):

    POST   /_ctl/{provider}/calendars/{calendar_id}/events                           create (put_event's args)
    POST   /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}                edit: {"summary": "New"}
    POST   /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}/attendees/{email}  {"response": "declined"}
    DELETE /_ctl/{provider}/calendars/{calendar_id}/events/{event_id}                delete

Google sync tokens do not filter by the original window (changes outside it come too); Graph
deltaLinks stay within their window and report events that left it as `@removed`.

Push (PROVIDERS.md §1.5, §2.5; module `push`). Google `POST {api}/calendars/{id}/events/watch` and
`POST {api}/channels/stop`; Graph `POST /subscriptions` (the validation handshake on notificationUrl
and lifecycleNotificationUrl before the 201), `GET`/`PATCH`/`DELETE /subscriptions/{id}` and
`POST /subscriptions/{id}/reauthorize`; all authenticated, faulted and logged like the other API
calls. http addresses are accepted (loopback tests). Every event change (`put_event`, `edit_event`,
`set_attendee_response`, `delete_event`, the control calls above) notifies each live channel of its
calendar from a sender thread, never blocking the change: Google an `exists` message (changes made
while one is queued join it), Graph a notification per subscription whose changeType names the change.
5xx answers are retried twice. Expired channels send nothing; expired subscriptions answer 404.
In Python: `push_channels(provider, calendar_id=, include_ended=)`, `drop_notifications(True)`,
`duplicate_notifications(True)`, `expire_push_channel(provider, id)`, `send_lifecycle(id, event)`,
`send_google_message(id, state)`, `push_deliveries(provider, kind)`, `settle_push()` /
`await asettle_push()` (until every scheduled message has been answered). Over HTTP:

    GET    /_ctl/push/channels[?provider=&calendar_id=&all=1]   live channels/subscriptions (all: ended too)
    POST   /_ctl/push                         {"drop": true, "duplicate": true}: lose / double notifications
    GET    /_ctl/push                         the switches
    GET    /_ctl/push/deliveries[?provider=&kind=]             every outbound push request (and dropped ones)
    POST   /_ctl/google/channels/{id}/expire                  the channel expires now
    POST   /_ctl/google/channels/{id}/notify                  {"state": "exists"|"not_exists"|"sync"}
    POST   /_ctl/microsoft/subscriptions/{id}/expire          the subscription expires now (then 404)
    POST   /_ctl/microsoft/subscriptions/{id}/lifecycle       {"event": "reauthorizationRequired"|
                                                               "subscriptionRemoved" (ends it)|"missed"}

Modules: `models` (accounts, calendars, events), `content` (the §5 fields, edits), `state` (what the
tests set and read), `paging` (page tokens, sync cursors), `oauth` (token endpoints), `google` and
`graph` (the APIs), `push` (channels, subscriptions, the sender), `server` (`FakeProviders`: the HTTP
side), `cli` (manual runs: `python -m synchook.fakes --port 8555 --seed` prints the URLs and tokens).
"""

from synchook.fakes.cli import main
from synchook.fakes.google import GOOGLE_SYNC_INCOMPATIBLE
from synchook.fakes.models import GOOGLE, MICROSOFT, FakeAccount, FakeCalendar, FakeEvent, RequestRecord
from synchook.fakes.oauth import CLIENTS
from synchook.fakes.push import PushChannel, PushDelivery
from synchook.fakes.server import FakeProviders

__all__ = [
    "CLIENTS",
    "GOOGLE",
    "GOOGLE_SYNC_INCOMPATIBLE",
    "MICROSOFT",
    "FakeAccount",
    "FakeCalendar",
    "FakeEvent",
    "FakeProviders",
    "PushChannel",
    "PushDelivery",
    "RequestRecord",
    "main",
]
