"""The fake providers speak the wire format of PROVIDERS.md: checked with raw HTTP, no connector involved."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from synchook.fakes import CLIENTS, FakeProviders

ALICE = "alice@example.com"


def call(fake: FakeProviders, path: str, token: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        fake.base_url + path, headers={"Authorization": f"Bearer {token}"} | (headers or {})
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_form(fake: FakeProviders, path: str, form: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(fake.base_url + path, data=urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


EVENTS = "/google/calendar/v3/calendars/alice%40example.com/events"
DELTA = "/graph/v1.0/me/calendars/alice%40example.com/calendarView/delta"


def test_google_next_sync_token_only_on_last_page(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    fake.add_events("google", ALICE, ALICE, 3)
    status, first = call(fake, f"{EVENTS}?maxResults=2", acc.access_token)
    status2, last = call(fake, f"{EVENTS}?maxResults=2&pageToken={first['nextPageToken']}", acc.access_token)
    assert (status, status2) == (200, 200)
    assert "nextSyncToken" not in first and len(first["items"]) == 2
    assert "nextPageToken" not in last and last["nextSyncToken"] and len(last["items"]) == 1


def test_google_page_token_with_a_different_query_is_rejected(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    fake.add_events("google", ALICE, ALICE, 3)
    _, first = call(fake, f"{EVENTS}?maxResults=2", acc.access_token)
    status, body = call(fake, f"{EVENTS}?maxResults=2&q=x&pageToken={first['nextPageToken']}", acc.access_token)
    assert status == 400 and body["error"]["code"] == 400


@pytest.mark.parametrize("param", ["timeMin=2024-01-01T00:00:00Z", "q=standup", "updatedMin=2024-01-01T00:00:00Z"])
def test_google_sync_token_with_incompatible_parameter_is_400(fake: FakeProviders, param: str) -> None:
    acc = fake.add_account("google")
    _, body = call(fake, EVENTS, acc.access_token)
    status, error = call(fake, f"{EVENTS}?syncToken={body['nextSyncToken']}&{param}", acc.access_token)
    assert status == 400 and error["error"]["errors"][0]["reason"] == "invalid"


def test_google_gone_sync_token_answers_the_documented_410(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    _, body = call(fake, EVENTS, acc.access_token)
    fake.invalidate_sync_tokens("google", ALICE, ALICE)
    status, error = call(fake, f"{EVENTS}?syncToken={body['nextSyncToken']}", acc.access_token)
    message = "Sync token is no longer valid, a full sync is required."
    assert status == 410
    assert error == {
        "error": {
            "errors": [
                {
                    "domain": "calendar",
                    "reason": "fullSyncRequired",
                    "message": message,
                    "locationType": "parameter",
                    "location": "syncToken",
                }
            ],
            "code": 410,
            "message": message,
        }
    }


def test_google_time_window_bounds_are_exclusive(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    # Ends exactly at timeMin, starts exactly at timeMax: both out. Straddling timeMin: in.
    fake.put_event(
        "google",
        ALICE,
        ALICE,
        summary="ends-at-min",
        start=datetime(2024, 5, 1, 8, tzinfo=UTC),
        end=datetime(2024, 5, 1, 9, tzinfo=UTC),
    )
    fake.put_event(
        "google",
        ALICE,
        ALICE,
        summary="starts-at-max",
        start=datetime(2024, 5, 1, 10, tzinfo=UTC),
        end=datetime(2024, 5, 1, 11, tzinfo=UTC),
    )
    fake.put_event(
        "google",
        ALICE,
        ALICE,
        summary="straddles",
        start=datetime(2024, 5, 1, 8, 30, tzinfo=UTC),
        end=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    )
    _, body = call(fake, f"{EVENTS}?timeMin=2024-05-01T09:00:00Z&timeMax=2024-05-01T10:00:00Z", acc.access_token)
    assert [e["summary"] for e in body["items"]] == ["straddles"]


def test_google_deleted_event_is_only_id_and_status(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    event = fake.put_event("google", ALICE, ALICE)
    _, body = call(fake, EVENTS, acc.access_token)
    fake.delete_event("google", ALICE, ALICE, event)
    _, changes = call(fake, f"{EVENTS}?syncToken={body['nextSyncToken']}", acc.access_token)
    assert [{k: v for k, v in e.items() if k != "etag"} for e in changes["items"]] == [
        {"kind": "calendar#event", "id": event, "status": "cancelled"}
    ]


def test_expired_access_token_answers_401_envelopes(fake: FakeProviders) -> None:
    google, graph = fake.add_account("google"), fake.add_account("microsoft")
    fake.expire_access_tokens("google")
    fake.expire_access_tokens("microsoft")
    status, error = call(fake, EVENTS, google.access_token)
    assert status == 401 and error["error"]["errors"][0]["reason"] == "authError"
    assert error["error"]["message"] == "Invalid Credentials"
    status, error = call(fake, "/graph/v1.0/me/calendars", graph.access_token)
    assert status == 401 and error["error"]["code"] == "InvalidAuthenticationToken"
    assert set(error["error"]["innerError"]) == {"request-id", "date"}


def test_rate_limits_carry_retry_after_and_reason(fake: FakeProviders) -> None:
    google, graph = fake.add_account("google"), fake.add_account("microsoft")
    fake.fail_next("google", 1, status=403)
    fake.fail_next("microsoft", 1, status=429, retry_after=2.128)
    status, error = call(fake, EVENTS, google.access_token)
    assert status == 403 and error["error"]["errors"][0]["reason"] == "userRateLimitExceeded"
    request = urllib.request.Request(
        fake.base_url + "/graph/v1.0/me/calendars", headers={"Authorization": f"Bearer {graph.access_token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 429 and caught.value.headers["Retry-After"] == "2.128"
    assert call(fake, "/graph/v1.0/me/calendars", graph.access_token)[0] == 200


def test_graph_delta_needs_a_window_and_gone_links_answer_410(fake: FakeProviders) -> None:
    acc = fake.add_account("microsoft")
    assert call(fake, DELTA, acc.access_token)[0] == 400
    status, body = call(
        fake, f"{DELTA}?startDateTime=2024-01-01T00:00:00Z&endDateTime=2025-01-01T00:00:00Z", acc.access_token
    )
    assert status == 200 and body["@odata.deltaLink"].startswith(fake.base_url + DELTA + "?$deltatoken=")
    fake.invalidate_sync_tokens("microsoft", ALICE, ALICE, graph_code="resyncRequired")
    path = body["@odata.deltaLink"].removeprefix(fake.base_url)
    status, error = call(fake, path, acc.access_token)
    assert status == 410 and error["error"]["code"] == "resyncRequired"


def test_graph_removed_items_and_seven_fractional_digits(fake: FakeProviders) -> None:
    acc = fake.add_account("microsoft")
    event = fake.put_event("microsoft", ALICE, ALICE, start=datetime(2016, 12, 9, 20, 30, tzinfo=UTC))
    _, body = call(
        fake, f"{DELTA}?startDateTime=2016-01-01T00:00:00Z&endDateTime=2017-01-01T00:00:00Z", acc.access_token
    )
    assert body["value"][0]["start"] == {"dateTime": "2016-12-09T20:30:00.0000000", "timeZone": "UTC"}
    fake.delete_event("microsoft", ALICE, ALICE, event)
    _, changes = call(fake, body["@odata.deltaLink"].removeprefix(fake.base_url), acc.access_token)
    assert changes["value"] == [
        {"@odata.type": "#microsoft.graph.event", "id": event, "@removed": {"reason": "deleted"}}
    ]


def test_token_endpoints_refresh_rotate_and_refuse(fake: FakeProviders) -> None:
    google, graph = fake.add_account("google"), fake.add_account("microsoft")
    g_id, g_secret = CLIENTS["google"]
    google_form = {"grant_type": "refresh_token", "client_id": g_id, "client_secret": g_secret}
    google_form["refresh_token"] = google.refresh_token
    status, body = post_form(fake, "/google/token", google_form)
    assert status == 200 and body["expires_in"] == 3600 and "refresh_token" not in body
    m_id, m_secret = CLIENTS["microsoft"]
    form = {
        "grant_type": "refresh_token",
        "client_id": m_id,
        "client_secret": m_secret,
        "refresh_token": graph.refresh_token,
    }
    status, body = post_form(fake, "/microsoft/token", form)
    assert status == 200 and body["refresh_token"] != form["refresh_token"]
    status, error = post_form(fake, "/microsoft/token", form)  # the rotated-out token
    assert status == 400 and error["error"] == "invalid_grant" and error["error_codes"] == [700082]
    fake.revoke_refresh_token("google")
    status, error = post_form(fake, "/google/token", google_form)
    assert (status, error) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


def test_runs_as_a_separate_process_and_prints_lines_a_shell_can_run() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "synchook.fakes", "--port", "0", "--seed"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("# Serving"):
            lines.append(process.stdout.readline().rstrip("\n"))
            assert lines[-1] or process.poll() is None, lines
        # The README says: paste the output into a shell. Every line must be shell, and export the settings.
        shell = subprocess.run(
            ["bash", "-c", "\n".join([*lines, "env"])], capture_output=True, text=True, check=True, env={}
        )
        assert shell.stderr == ""
        exported = dict(line.split("=", 1) for line in shell.stdout.splitlines() if line.startswith("SYNCHOOK_"))
        base_url = exported["SYNCHOOK_GOOGLE_API_URL"].removesuffix("/google")
        assert base_url.startswith("http://127.0.0.1:")
        assert exported == {
            "SYNCHOOK_GOOGLE_API_URL": f"{base_url}/google",
            "SYNCHOOK_GOOGLE_TOKEN_URL": f"{base_url}/google/token",
            "SYNCHOOK_MICROSOFT_GRAPH_URL": f"{base_url}/graph/v1.0",
            "SYNCHOOK_MICROSOFT_TOKEN_URL": f"{base_url}/microsoft/token",
            "SYNCHOOK_GOOGLE_CLIENT_ID": CLIENTS["google"][0],
            "SYNCHOOK_GOOGLE_CLIENT_SECRET": CLIENTS["google"][1],
            "SYNCHOOK_MICROSOFT_CLIENT_ID": CLIENTS["microsoft"][0],
            "SYNCHOOK_MICROSOFT_CLIENT_SECRET": CLIENTS["microsoft"][1],
        }
        demo = [json.loads(line.removeprefix("#   ")) for line in lines if line.startswith("#   {")]
        assert [(body["provider"], body["account"]) for body in demo] == [
            ("google", "alice@example.com"),
            ("microsoft", "alice@example.com"),
        ]
        request = urllib.request.Request(
            f"{base_url}/google/calendar/v3/users/me/calendarList",
            headers={"Authorization": f"Bearer {demo[0]['access_token']}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- the §5 fields and the edit control (issue 19) -------------------------------------------------

ZURICH_START = datetime(2024, 5, 2, 9, tzinfo=UTC)  # 11:00 in Zurich (CEST)
GRAPH_WINDOW = "startDateTime=2024-01-01T00:00:00Z&endDateTime=2025-01-01T00:00:00Z"


def control(fake: FakeProviders, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        fake.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def meeting(fake: FakeProviders, provider: str, **extra: Any) -> str:
    return fake.put_event(
        provider,
        ALICE,
        ALICE,
        summary="Design review",
        start=ZURICH_START,
        end=ZURICH_START + timedelta(hours=1),
        time_zone="Europe/Zurich",
        description="Agenda",
        location="Room 4.01",
        organizer=(ALICE, "Alice"),
        conference_url="https://meet.example.com/abc-defg-hij",
        attendees=[
            {"email": "bob@example.com", "name": "Bob", "response": "accepted"},
            {"email": "carol@example.com", "name": "Carol", "response": "tentative", "optional": True},
        ],
        **extra,
    )


def test_google_events_carry_the_fields_of_providers_5(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    event = meeting(fake, "google", busy=False)
    _, body = call(fake, EVENTS, acc.access_token)
    [item] = body["items"]
    assert item["start"] == {"dateTime": "2024-05-02T11:00:00+02:00", "timeZone": "Europe/Zurich"}
    assert item["end"] == {"dateTime": "2024-05-02T12:00:00+02:00", "timeZone": "Europe/Zurich"}
    assert item["organizer"] == {"email": ALICE, "displayName": "Alice"}
    assert item["attendees"] == [
        {"email": "bob@example.com", "displayName": "Bob", "responseStatus": "accepted"},
        {"email": "carol@example.com", "displayName": "Carol", "responseStatus": "tentative", "optional": True},
    ]
    assert (item["summary"], item["description"], item["location"]) == ("Design review", "Agenda", "Room 4.01")
    assert item["hangoutLink"] == "https://meet.example.com/abc-defg-hij"
    assert item["conferenceData"]["entryPoints"][0] == {
        "entryPointType": "video",
        "uri": "https://meet.example.com/abc-defg-hij",
        "label": "meet.example.com/abc-defg-hij",
    }
    assert item["iCalUID"] == f"{event}@google.com" and item["htmlLink"].endswith(f"eid={event}")
    assert (item["status"], item["transparency"]) == ("confirmed", "transparent")


def test_google_all_day_and_recurring_instances(fake: FakeProviders) -> None:
    acc = fake.add_account("google")
    fake.put_event("google", ALICE, ALICE, summary="Offsite", start=date(2024, 5, 3), end=date(2024, 5, 4))
    series, ids = fake.add_series("google", ALICE, ALICE, 2, first=datetime(2024, 5, 6, 8, tzinfo=UTC))
    _, body = call(fake, EVENTS, acc.access_token)
    offsite, first, second = body["items"]
    assert (offsite["start"], offsite["end"]) == ({"date": "2024-05-03"}, {"date": "2024-05-04"})
    assert [first["id"], second["id"]] == ids == [f"{series}_20240506T080000Z", f"{series}_20240513T080000Z"]
    assert first["recurringEventId"] == series
    assert first["originalStartTime"] == {"dateTime": "2024-05-06T08:00:00Z"}


def test_graph_events_carry_the_fields_of_providers_5(fake: FakeProviders) -> None:
    acc = fake.add_account("microsoft")
    meeting(fake, "microsoft", status="tentative")
    # Without Prefer: outlook.timezone, Graph writes times in the event's own zone, without offset.
    _, body = call(fake, f"{DELTA}?{GRAPH_WINDOW}", acc.access_token)
    [item] = body["value"]
    assert item["start"] == {"dateTime": "2024-05-02T11:00:00.0000000", "timeZone": "Europe/Zurich"}
    assert item["originalStartTimeZone"] == "Europe/Zurich" and item["isAllDay"] is False
    assert item["subject"] == "Design review" and item["bodyPreview"] == "Agenda"
    assert item["body"] == {"contentType": "html", "content": "<html><body><p>Agenda</p></body></html>"}
    assert item["location"]["displayName"] == "Room 4.01"
    assert item["organizer"] == {"emailAddress": {"name": "Alice", "address": ALICE}}
    assert [(a["type"], a["status"]["response"], a["emailAddress"]) for a in item["attendees"]] == [
        ("required", "accepted", {"name": "Bob", "address": "bob@example.com"}),
        ("optional", "tentativelyAccepted", {"name": "Carol", "address": "carol@example.com"}),
    ]
    assert item["onlineMeeting"] == {"joinUrl": "https://meet.example.com/abc-defg-hij"}
    assert (item["showAs"], item["isCancelled"]) == ("tentative", False)
    assert item["iCalUId"] and item["webLink"].startswith("https://outlook.office365.com/")
    # With it, every time is written in the zone asked for.
    _, body = call(fake, f"{DELTA}?{GRAPH_WINDOW}", acc.access_token, {"Prefer": 'outlook.timezone="UTC"'})
    assert body["value"][0]["start"] == {"dateTime": "2024-05-02T09:00:00.0000000", "timeZone": "UTC"}


def test_graph_all_day_and_occurrences(fake: FakeProviders) -> None:
    acc = fake.add_account("microsoft")
    fake.put_event("microsoft", ALICE, ALICE, summary="Offsite", start=date(2024, 5, 3), end=date(2024, 5, 4))
    series, _ = fake.add_series("microsoft", ALICE, ALICE, 2, first=datetime(2024, 5, 6, 8, tzinfo=UTC))
    _, body = call(fake, f"{DELTA}?{GRAPH_WINDOW}", acc.access_token)
    offsite, first, _second = body["value"]
    assert offsite["isAllDay"] is True
    assert offsite["start"] == {"dateTime": "2024-05-03T00:00:00.0000000", "timeZone": "UTC"}
    assert (first["type"], first["seriesMasterId"], first["originalStart"]) == (
        "occurrence",
        series,
        "2024-05-06T08:00:00Z",
    )


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_edit_control_changes_one_field_and_the_next_incremental_round_reports_it(
    fake: FakeProviders, provider: str
) -> None:
    acc = fake.add_account(provider)
    event = meeting(fake, provider)
    other = fake.put_event(provider, ALICE, ALICE, summary="Untouched")
    first_path = EVENTS if provider == "google" else f"{DELTA}?{GRAPH_WINDOW}"
    _, body = call(fake, first_path, acc.access_token)
    before = {item["id"]: item for item in body["items" if provider == "google" else "value"]}[event]
    title = "summary" if provider == "google" else "subject"
    status, edited = control(fake, "POST", f"/_ctl/{provider}/calendars/{ALICE}/events/{event}", {title: "New"})
    assert status == 200 and edited[title] == "New"
    if provider == "google":
        _, changes = call(fake, f"{EVENTS}?syncToken={body['nextSyncToken']}", acc.access_token)
        [item] = changes["items"]
        stamp = "updated"
    else:
        _, changes = call(fake, body["@odata.deltaLink"].removeprefix(fake.base_url), acc.access_token)
        [item] = changes["value"]
        stamp = "lastModifiedDateTime"
    assert item["id"] == event != other
    assert item[title] == "New" and item[stamp] >= before[stamp]
    # Only the edited field moved; the rest is the event as it was.
    assert {k: v for k, v in item.items() if k not in (title, stamp, "etag", "@odata.etag")} == {
        k: v for k, v in before.items() if k not in (title, stamp, "etag", "@odata.etag")
    }


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_attendee_response_control_changes_only_that_attendee(fake: FakeProviders, provider: str) -> None:
    acc = fake.add_account(provider)
    event = meeting(fake, provider)
    first_path = EVENTS if provider == "google" else f"{DELTA}?{GRAPH_WINDOW}"
    _, body = call(fake, first_path, acc.access_token)
    path = f"/_ctl/{provider}/calendars/{ALICE}/events/{event}/attendees/bob@example.com"
    status, _ = control(fake, "POST", path, {"response": "declined"})
    assert status == 200
    if provider == "google":
        _, changes = call(fake, f"{EVENTS}?syncToken={body['nextSyncToken']}", acc.access_token)
        attendees = changes["items"][0]["attendees"]
        assert [a["responseStatus"] for a in attendees] == ["declined", "tentative"]
    else:
        _, changes = call(fake, body["@odata.deltaLink"].removeprefix(fake.base_url), acc.access_token)
        attendees = changes["value"][0]["attendees"]
        assert [a["status"]["response"] for a in attendees] == ["declined", "tentativelyAccepted"]


def test_edit_control_moves_an_event_and_keeps_create_and_delete(fake: FakeProviders) -> None:
    acc = fake.add_account("microsoft")
    _, body = call(fake, f"{DELTA}?{GRAPH_WINDOW}", acc.access_token)
    status, created = control(
        fake, "POST", f"/_ctl/microsoft/calendars/{ALICE}/events",
        {"summary": "Made by hand", "start": "2024-06-01T10:00:00+00:00", "end": "2024-06-01T11:00:00+00:00",
         "location": "Here"},
    )  # fmt: skip
    assert status == 201 and created["location"]["displayName"] == "Here"
    moved = {"start": {"dateTime": "2024-06-02T10:00:00.0000000", "timeZone": "Pacific Standard Time"}}
    status, edited = control(fake, "POST", f"/_ctl/microsoft/calendars/{ALICE}/events/{created['id']}", moved)
    # Rendered in its new zone; 10:00 in Los Angeles is 17:00 UTC.
    assert status == 200 and edited["start"] == moved["start"]
    _, changes = call(
        fake, body["@odata.deltaLink"].removeprefix(fake.base_url), acc.access_token,
        {"Prefer": 'outlook.timezone="UTC"'},
    )  # fmt: skip
    assert [item["start"]["dateTime"] for item in changes["value"]] == ["2024-06-02T17:00:00.0000000"]
    assert control(fake, "DELETE", f"/_ctl/microsoft/calendars/{ALICE}/events/{created['id']}")[0] == 204
    _, gone = call(fake, changes["@odata.deltaLink"].removeprefix(fake.base_url), acc.access_token)
    assert gone["value"] == [
        {"@odata.type": "#microsoft.graph.event", "id": created["id"], "@removed": {"reason": "deleted"}}
    ]


def test_edit_control_refuses_bad_edits(fake: FakeProviders) -> None:
    fake.add_account("google")
    event = fake.put_event("google", ALICE, ALICE)
    base = f"/_ctl/google/calendars/{ALICE}/events"
    assert control(fake, "POST", f"{base}/nope", {"summary": "x"})[0] == 404
    assert control(fake, "POST", f"{base}/{event}", {"updated": "2020-01-01T00:00:00Z"})[0] == 400
    assert control(fake, "POST", f"{base}/{event}", ["summary"])[0] == 400
    assert control(fake, "POST", f"{base}/{event}/attendees/nobody@example.com", {"response": "accepted"})[0] == 404
    assert control(fake, "POST", f"/_ctl/google/calendars/other@example.com/events/{event}", {"summary": "x"})[0] == 404
    fake.delete_event("google", ALICE, ALICE, event)
    assert control(fake, "POST", f"{base}/{event}", {"summary": "x"})[0] == 404


def test_seeded_demo_data_has_the_mix() -> None:
    with FakeProviders() as fake:
        for provider in ("google", "microsoft"):
            fake.add_account(provider)
            ids = fake.seed_demo(provider, ALICE, ALICE, first=datetime(2024, 5, 1, 9, tzinfo=UTC))
            events = fake.account(provider).calendars[ALICE].events
            assert events[ids["all_day"]].all_day
            assert events[ids["zoned"]].time_zone == "Europe/Zurich"
            assert len(events[ids["meeting"]].body["attendees"]) == 3
            assert sum(1 for key in ids if key.startswith("instance_")) == 4
