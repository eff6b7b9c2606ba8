"""WebDAV/CalDAV XML: the request bodies of PROVIDERS.md §6 and a safe reader of 207 multistatus answers.

Servers are arbitrary hosts a user named: their XML is parsed with defusedxml (no entity expansion,
no external entities or DTDs), so a "billion laughs" answer is an error, not a memory blow-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import unquote
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

__all__ = [
    "Member",
    "Multistatus",
    "XMLError",
    "calendar_multiget",
    "calendar_query",
    "parse_error_conditions",
    "parse_multistatus",
    "propfind",
    "sync_collection",
]

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CS = "http://calendarserver.org/ns/"
_NS = f'xmlns:d="{DAV}" xmlns:c="{CALDAV}" xmlns:cs="{CS}"'


class XMLError(ValueError):
    """The server answered XML we cannot (or will not) read."""


def propfind(*props: str) -> bytes:
    """`props` as prefixed names (d:, c:, cs:)."""
    inner = "".join(f"<{p}/>" for p in props)
    return f'<?xml version="1.0" encoding="utf-8"?><d:propfind {_NS}><d:prop>{inner}</d:prop></d:propfind>'.encode()


def sync_collection(token: str | None) -> bytes:
    sync_token = f"<d:sync-token>{escape(token)}</d:sync-token>" if token else "<d:sync-token/>"
    return (
        f'<?xml version="1.0" encoding="utf-8"?><d:sync-collection {_NS}>{sync_token}'
        "<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
    ).encode()


def calendar_multiget(hrefs: list[str]) -> bytes:
    refs = "".join(f"<d:href>{escape(href)}</d:href>" for href in hrefs)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><c:calendar-multiget {_NS}>'
        f"<d:prop><d:getetag/><c:calendar-data/></d:prop>{refs}</c:calendar-multiget>"
    ).encode()


def calendar_query(window: tuple[datetime, datetime]) -> bytes:
    start, end = (moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") for moment in window)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><c:calendar-query {_NS}>'
        "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
        '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
        f'<c:time-range start="{start}" end="{end}"/>'
        "</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>"
    ).encode()


@dataclass
class Member:
    """One `<d:response>`: its href, the status of the found props (or of the response), and those props."""

    href: str
    status: int
    etag: str | None = None
    calendar_data: str | None = None
    sync_token: str | None = None
    ctag: str | None = None
    displayname: str | None = None
    is_calendar: bool = False
    components: set[str] = field(default_factory=set)
    hrefs: dict[str, list[str]] = field(default_factory=dict)  # href-valued props by local name


@dataclass
class Multistatus:
    members: list[Member]
    sync_token: str | None = None


def _root(body: bytes) -> Element:
    try:
        return SafeET.fromstring(body)
    except (SafeET.ParseError, DefusedXmlException, ValueError) as exc:
        raise XMLError(f"unreadable XML ({type(exc).__name__})") from None


def parse_multistatus(body: bytes) -> Multistatus:
    root = _root(body)
    if root.tag != f"{{{DAV}}}multistatus":
        raise XMLError("expected a DAV:multistatus answer")
    members = [_member(response) for response in root.findall(f"{{{DAV}}}response")]
    token = root.findtext(f"{{{DAV}}}sync-token")
    return Multistatus(members=members, sync_token=token.strip() if token else None)


def parse_error_conditions(body: bytes) -> set[str]:
    """The local names of the preconditions in a DAV:error body (e.g. {"valid-sync-token"}); empty if none."""
    try:
        root = _root(body)
    except XMLError:
        return set()
    if root.tag != f"{{{DAV}}}error":
        return set()
    return {child.tag.rsplit("}", 1)[-1] for child in root}


def _status(text: str | None) -> int:
    # "HTTP/1.1 404 Not Found"
    parts = (text or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _member(response: Element) -> Member:
    href = unquote((response.findtext(f"{{{DAV}}}href") or "").strip())
    member = Member(href=href, status=_status(response.findtext(f"{{{DAV}}}status")))
    for propstat in response.findall(f"{{{DAV}}}propstat"):
        status = _status(propstat.findtext(f"{{{DAV}}}status"))
        if status != 200:
            continue
        member.status = member.status or 200
        prop = propstat.find(f"{{{DAV}}}prop")
        if prop is not None:
            _read_props(member, prop)
    return member


def _read_props(member: Member, prop: Element) -> None:
    for child in prop:
        tag = child.tag
        text = (child.text or "").strip() or None
        if tag == f"{{{DAV}}}getetag":
            member.etag = text
        elif tag == f"{{{CALDAV}}}calendar-data":
            member.calendar_data = child.text
        elif tag == f"{{{DAV}}}sync-token":
            member.sync_token = text
        elif tag == f"{{{CS}}}getctag":
            member.ctag = text
        elif tag == f"{{{DAV}}}displayname":
            member.displayname = text
        elif tag == f"{{{DAV}}}resourcetype":
            member.is_calendar = child.find(f"{{{CALDAV}}}calendar") is not None
        elif tag == f"{{{CALDAV}}}supported-calendar-component-set":
            member.components = {str(comp.get("name", "")).upper() for comp in child.findall(f"{{{CALDAV}}}comp")}
        else:
            hrefs = [unquote((h.text or "").strip()) for h in child.findall(f"{{{DAV}}}href")]
            if hrefs:
                member.hrefs[tag.rsplit("}", 1)[-1]] = hrefs
