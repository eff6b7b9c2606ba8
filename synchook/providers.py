"""The calendar providers Synchook syncs: one enum that the API, the filters, the CLI and the docs all read."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Strict


class Provider(StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    CALDAV = "caldav"  # CONTRACT §8: iCloud, Fastmail, Nextcloud, any RFC 4791 server


# In strict bodies too, a provider arrives as its name: the enum is what the code holds, the name what JSON carries.
ProviderName = Annotated[Provider, Strict(False)]
