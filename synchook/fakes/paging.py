"""Opaque page tokens and sync tokens / deltaLinks, and the listing quirks the tests inject.

A page token points into a snapshot of a listing; a sync token / deltaLink (a cursor) points at a
position in a calendar's change log. Both remember the calendar's epoch, so bumping it answers 410.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from synchook.fakes._common import new_token
from synchook.fakes.models import FakeCalendar

Owner = tuple[str, str, str]  # provider, account, calendar id ("" for calendar lists)
Window = tuple[datetime, datetime]


@dataclass
class Snapshot:
    """A listing computed at its first request; page tokens point into it."""

    owner: Owner
    epoch: int
    items: list[dict[str, Any]]
    final: dict[str, Any]  # what the last page carries: nextSyncToken / @odata.deltaLink
    fingerprint: tuple[tuple[str, str], ...] = ()


@dataclass
class Cursor:
    owner: Owner
    epoch: int
    seq: int
    window: Window | None  # Graph deltaLinks stay within their window; Google sync tokens have none


class Pager:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[Snapshot, int]] = {}
        self.cursors: dict[str, Cursor] = {}
        self.empty_pages: Counter[str] = Counter()
        self.duplicates = 0  # the next Graph delta round repeats this many of its changes

    def page(self, snap: Snapshot, offset: int, size: int) -> tuple[list[dict[str, Any]], str | None]:
        """The items from `offset` and the next page's token; None on the last page, which carries `snap.final`."""
        provider = snap.owner[0]
        if self.empty_pages[provider] > 0:
            # Providers may answer an empty page that still points onward; clients must follow it.
            self.empty_pages[provider] -= 1
            return [], self._page_token(snap, offset)
        end = offset + size
        return snap.items[offset:end], self._page_token(snap, end) if end < len(snap.items) else None

    def new_cursor(self, owner: Owner, cal: FakeCalendar, window: Window | None) -> str:
        token = new_token()
        self.cursors[token] = Cursor(owner, cal.epoch, cal.seq, window)
        return token

    def _page_token(self, snap: Snapshot, offset: int) -> str:
        token = new_token()
        self.pages[token] = (snap, offset)
        return token
