"""`python -m synchook.cli …`, as the `synchook` console script."""

from __future__ import annotations

import sys

from synchook.cli import main

sys.exit(main())
