"""`make bench` = `python -m bench`: see bench/harness.py."""

from __future__ import annotations

from bench.harness import main
from bench.stack import exit_when_done

exit_when_done(main)
