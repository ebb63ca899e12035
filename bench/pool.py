"""Benchmark what a connection costs to borrow from the pool, by health check.

Run with ``python bench/pool.py [--checkouts 5000]``. It starts the embedded PostgreSQL
in a scratch AISTACK_HOME and, alternating in rounds so both see the same load, times
borrowing a connection, running one short query on it and giving it back (what the
smallest request does), with:

- Django's check (``CONN_HEALTH_CHECKS`` with Django's backend): a round trip per loan;
- aistack.postgresql's check: the socket's state, and a round trip only when the
  server has said something (a restart, a terminated backend);
- no check at all, the floor.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import bench_arguments, django_on_embedded_services, median

ROUNDS = 5


def timed_loans(pool: Any, checkouts: int) -> list[float]:
    took = []
    for _ in range(checkouts):
        start = time.perf_counter()
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()
        took.append((time.perf_counter() - start) * 1e6)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=int, default=5000)
    args = bench_arguments(parser, checkouts=50)
    home = Path(tempfile.mkdtemp(prefix="aistack-bench-"))
    release = django_on_embedded_services(home)
    try:
        from django.db import connection
        from psycopg_pool import ConnectionPool

        from aistack.postgresql.base import check_without_round_trip

        checks: dict[str, Callable[[Any], None] | None] = {
            "round trip (Django's)": ConnectionPool.check_connection,
            "socket state (aistack)": check_without_round_trip,
            "none": None,
        }
        params = {**connection.get_connection_params(), "autocommit": True}
        pools = {name: ConnectionPool(kwargs=params, min_size=1, max_size=1, check=check,
                                      open=True) for name, check in checks.items()}
        took: dict[str, list[float]] = {name: [] for name in checks}
        per_round = max(1, args.checkouts // ROUNDS)
        for _ in range(ROUNDS):
            for name, pool in pools.items():
                took[name] += timed_loans(pool, per_round)
        for pool in pools.values():
            pool.close()

        floor = median(took["none"])
        print(f"borrow + SELECT 1 + give back, {per_round * ROUNDS} loans each, "
              f"in {ROUNDS} alternating rounds:")
        for name, values in took.items():
            print(f"  check {name:24} median {median(values):7.1f} µs   "
                  f"{median(values) / floor:4.2f}x no check")
        saved = median(took["round trip (Django's)"]) - median(took["socket state (aistack)"])
        print(f"saved per loan against Django's check: {saved:.1f} µs")
    finally:
        release()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
