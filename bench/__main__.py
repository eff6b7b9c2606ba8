"""`make bench` = `python -m bench`: see bench/harness.py."""

from __future__ import annotations

import sys

from bench.harness import main

try:
    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C or SIGTERM: main's cleanup has run
    print("bench: interrupted; its stack stopped and its database dropped", file=sys.stderr, flush=True)
    sys.exit(130)
