"""`make bench` and `make bench-postgres`: every benchmark in turn, then the whole run's length and its verdict.

    python -m bench.suite [--db postgres]

SQLite: the delivery scenarios (bench/harness.py, a million-row backlog), the CalDAV sync (bench/bench_caldav.py)
and push (bench/bench_push.py). PostgreSQL: the delivery scenarios with a 200,000-row backlog, and push; the
CalDAV bench measures the protocol side and runs on SQLite only. Each runs as its own process, as from a shell;
a failing one does not stop the rest, and the suite's exit status is the first failure's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.harness import WHOLE_RUN_SECONDS

__all__ = ["main", "steps"]

POSTGRES_BACKLOG = "200000"


def steps(db: str) -> list[list[str]]:
    """The commands, in order, for ``db``."""
    python = [sys.executable, "-m"]
    if db == "postgres":
        return [
            [*python, "bench", "--db", "postgres", "--backlog", POSTGRES_BACKLOG],
            [*python, "bench.bench_push", "--db", "postgres"],
        ]
    return [[*python, "bench"], [*python, "bench.bench_caldav"], [*python, "bench.bench_push"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    status = 0
    for command in steps(args.db):
        print("$ " + " ".join(["python", *command[1:]]), flush=True)
        code = subprocess.run(command, check=False).returncode
        status = status or code
    took = time.perf_counter() - began
    name = "make bench-postgres" if args.db == "postgres" else "make bench"
    if status:
        # Not "met": a bench that could not run (no PostgreSQL at its URL, say) finishes in seconds.
        print(f"{name}: a benchmark FAILED (exit status {status}, see above) after {took:.0f} s", flush=True)
        return status
    verdict = "met" if took < WHOLE_RUN_SECONDS else "MISSED"
    print(f"{name}: every benchmark in {took:.0f} s (target < {WHOLE_RUN_SECONDS} s): {verdict}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
