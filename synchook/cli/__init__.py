"""The `synchook` command line (composition root): one parser, the command's settings loaded once, one command run.

Each command group is a module with a ``register(subparsers)`` that adds its commands; a command is
``func(args, settings)``. ``main`` loads the settings for it: from the environment (and the dev secret
file), plus the embedded Redis of a running `synchook dev` where the command sets ``dev_redis=True``, or
none where it sets ``needs_settings=False`` (`dev` builds its own; `secrets generate` needs none).
The webhooks domain's commands (deliveries, replay) are its own module, given their settings like the rest.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import webhooks.cli
from synchook.cli import keys, processes, secrets, workspaces
from synchook.cli.common import CliError, load_settings
from synchook.errors import DomainError
from synchook.settings import Settings

# In the order `synchook --help` lists them.
COMMAND_GROUPS = (processes, workspaces, keys, secrets, webhooks.cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synchook", description="Calendar sync webhooks, signed and never lost.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _settings_for(args: argparse.Namespace) -> Settings | None:
    if not getattr(args, "needs_settings", True):
        return None
    return load_settings(dev_redis=getattr(args, "dev_redis", False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args, _settings_for(args))
        sys.stdout.flush()  # here, so a reader gone away (`| head`) is a BrokenPipeError below, not at exit
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (CliError, DomainError) as exc:
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        print(f"synchook: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _quiet_broken_pipe() -> int:
    """`synchook deliveries list | head`: the reader has all it wanted. Exit as a SIGPIPE'd tool does, quietly."""
    # Python flushes stdout again at exit and would print "Exception ignored … BrokenPipeError": point it at null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE  # 141, as a shell reports for `yes | head`
