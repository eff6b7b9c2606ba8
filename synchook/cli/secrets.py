"""`synchook secrets generate | rotate`: master keys."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from synchook.crypto import generate_master_key
from synchook.settings import Settings


def cmd_secrets_generate(args: argparse.Namespace, _settings: None) -> None:
    print(generate_master_key())


def cmd_secrets_rotate(args: argparse.Namespace, settings: Settings) -> None:
    from synchook.root.reseal import reseal_everything

    counts = asyncio.run(reseal_everything(settings))
    for name, count in counts.items():
        # Skipped rows were being written while we tried (a token refresh, a rotation): run the command again.
        skipped = f", skipped {count.skipped} written meanwhile (run again)" if count.skipped else ""
        print(f"{name}: re-encrypted {count.changed}{skipped}")


def register(sub: Any) -> None:
    secrets = sub.add_parser("secrets", help="master keys").add_subparsers(dest="action", required=True)
    # generate needs no settings: it is how a first SYNCHOOK_SECRET_KEY is made.
    secrets.add_parser("generate", help="print a new SYNCHOOK_SECRET_KEY value").set_defaults(
        func=cmd_secrets_generate, needs_settings=False
    )
    secrets.add_parser(
        "rotate", help="re-encrypt every stored secret under the first SYNCHOOK_SECRET_KEY entry"
    ).set_defaults(func=cmd_secrets_rotate)
