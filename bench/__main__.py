"""``python -m bench [--quick] [--only W1,W3] [--db auto|sqlite|postgres]``.

Starts the servers, runs the workloads, prints the tables and writes
``bench/results/latest.json`` and ``latest.md``. Servers are stopped at the
end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from bench import report, workloads
from bench.servers import Servers, postgres_available

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs: a smoke test"
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run, e.g. W1,W3")
    parser.add_argument(
        "--db",
        choices=("auto", "sqlite", "postgres"),
        default="auto",
        help="the site's database; auto: PostgreSQL on 127.0.0.1:5432 if it answers, else SQLite",
    )
    args = parser.parse_args(argv)
    args.only = {name.strip().upper() for name in args.only.split(",") if name.strip()}
    unknown = args.only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return args


def _stop_on_sigterm(signum: int, frame: object) -> NoReturn:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so the servers stop.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every measurement succeeded."""
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    database = args.db
    if database == "auto":
        database = "postgres" if postgres_available() else "sqlite"
    plan = workloads.QUICK if args.quick else workloads.FULL
    started = time.monotonic()
    print(
        f"servicewire bench: {'quick' if args.quick else 'full'} run, database {database}",
        file=sys.stderr,
    )
    try:
        with Servers(database=database) as servers:
            rows = workloads.run(servers, plan, args.only)
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    facts = {
        **workloads.machine(),
        "database": database,
        "mode": "quick" if args.quick else "full",
        "duration_s": round(time.monotonic() - started, 1),
    }
    print()
    print(report.text(report.tables(rows)))
    print()
    if report.notes(rows):
        print(report.text_notes(rows))
        print()
    print("Machine and run: " + ", ".join(f"{key}: {value}" for key, value in facts.items()))
    json_path, md_path = report.save(RESULTS, rows, facts)
    print(f"wrote {json_path} and {md_path}")
    return 1 if any("failed" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
