"""The calendar providers Synchook syncs: one enum that the API, the filters, the CLI and the docs all read."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"
