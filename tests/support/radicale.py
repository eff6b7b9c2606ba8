"""A real CalDAV server for tests: Radicale on a free loopback port, htpasswd (plain) auth, a temp storage folder.

    with RadicaleServer(tmp_path) as server:
        dav = server.account("bob")                   # a fresh htpasswd user (Radicale rereads the file)
        dav.make_calendar("work")
        dav.put_event("work", "standup", ICS_TEXT)    # what any CalDAV client does: PUT iCalendar text
        dav.delete_event("work", "standup")
        dav.url, dav.username, dav.password           # what a connection gives

Events are added with plain HTTP (MKCALENDAR, PUT, DELETE), never through Radicale's internals.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:set><d:prop>
    <d:displayname>{name}</d:displayname>
    <c:supported-calendar-component-set><c:comp name="{component}"/></c:supported-calendar-component-set>
  </d:prop></d:set>
</c:mkcalendar>"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RadicaleServer:
    """`python -m radicale` as a child process; started on enter, stopped (and waited for) on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._accounts: list[CalDAVAccount] = []

    def account(self, username: str, password: str | None = None) -> CalDAVAccount:
        """A new htpasswd user (appended to the file, read again on each login) and a client for it."""
        password = password or f"{username}-pw"
        with open(self.folder / "users", "a") as users:
            users.write(f"{username}:{password}\n")
        account = CalDAVAccount(self.url, username, password)
        self._accounts.append(account)
        return account

    def __enter__(self) -> RadicaleServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        users = self.folder / "users"
        users.write_text("")
        self._log = open(self.folder / "radicale.log", "wb")  # closed in __exit__
        self._process = subprocess.Popen(
            [
                sys.executable, "-m", "radicale", "--config", "",
                "--server-hosts", f"127.0.0.1:{self.port}",
                "--storage-filesystem-folder", str(self.folder / "collections"),
                "--auth-type", "htpasswd",
                "--auth-htpasswd-filename", str(users),
                "--auth-htpasswd-encryption", "plain",
                "--logging-level", "warning",
            ],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_until_answering()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for account in self._accounts:
            account.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"radicale exited: {(self.folder / 'radicale.log').read_text()[-2000:]}")
            try:
                httpx.get(self.url + "/.web/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("radicale did not answer within 30 s")


class CalDAVAccount:
    """One user's calendars, written the way any CalDAV client writes them: plain HTTP with Basic auth."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url, self.username, self.password = url, username, password
        self._client = httpx.Client(auth=(username, password), timeout=30)

    def close(self) -> None:
        self._client.close()

    def calendar_path(self, calendar: str) -> str:
        return f"/{self.username}/{calendar}/"

    def make_calendar(self, calendar: str, *, name: str | None = None, component: str = "VEVENT") -> str:
        """MKCALENDAR /user/calendar/ (the user's principal collection is created on first access)."""
        self._client.request("PROPFIND", f"{self.url}/{self.username}/", headers={"Depth": "0"})
        body = _MKCALENDAR.format(name=name or calendar, component=component)
        path = self.calendar_path(calendar)
        response = self._client.request("MKCALENDAR", self.url + path, content=body.encode())
        assert response.status_code == 201, (response.status_code, response.text)
        return path

    def put_event(self, calendar: str, name: str, ics: str) -> str:
        """PUT the iCalendar text as /user/calendar/name.ics; returns the new etag."""
        response = self._client.put(
            f"{self.url}{self.calendar_path(calendar)}{name}.ics",
            content=ics.encode(),
            headers={"Content-Type": "text/calendar; charset=utf-8"},
        )
        assert response.status_code in (201, 204), (response.status_code, response.text)
        return response.headers.get("ETag", "")

    def put_calendar(self, calendar: str, events: list[str]) -> str:
        """PUT a whole VCALENDAR (one VEVENT block per entry) to the collection URL: Radicale stores one member
        per UID. One request instead of 1,000 (each single PUT is an fsync'd write, about 0.1 s)."""
        head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//synchook tests//EN\r\n"
        body = head + "".join(events) + "END:VCALENDAR\r\n"
        path = self.calendar_path(calendar)
        self._client.request("PROPFIND", f"{self.url}/{self.username}/", headers={"Depth": "0"})
        response = self._client.put(
            self.url + path, content=body.encode(), headers={"Content-Type": "text/calendar; charset=utf-8"}
        )
        assert response.status_code in (201, 204), (response.status_code, response.text)
        return path

    def delete_event(self, calendar: str, name: str) -> None:
        response = self._client.delete(f"{self.url}{self.calendar_path(calendar)}{name}.ics")
        assert response.status_code in (200, 204), (response.status_code, response.text)


def vevent_block(uid: str, summary: str, start: str, end: str) -> str:
    """One bare VEVENT (for put_calendar)."""
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:{start}\r\n"
        f"DTEND:{end}\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\n"
    )


def vevent(
    uid: str,
    summary: str,
    start: str,
    end: str,
    *,
    extra: str = "",
    tzid: str | None = None,
    timezone_block: str = "",
    more: str = "",
) -> str:
    """One VCALENDAR with one VEVENT; `start`/`end` as iCalendar values (20261204T090000Z, or local with tzid)."""
    zone = f";TZID={tzid}" if tzid else ""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//synchook tests//EN",
        timezone_block.strip(),
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20261201T000000Z",
        f"DTSTART{zone}:{start}",
        f"DTEND{zone}:{end}",
        f"SUMMARY:{summary}",
        extra.strip(),
        "END:VEVENT",
        more.strip(),
        "END:VCALENDAR",
    ]
    return "\r\n".join(line for line in lines if line) + "\r\n"
