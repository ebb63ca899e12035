"""What every benchmark needs: Django on the embedded services in a scratch home."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path


def django_on_embedded_services(home: Path, **environ: str) -> Callable[[], None]:
    """Start embedded PostgreSQL and Redis in ``home``, set Django up, migrate; return a stop."""
    from aistack.runtime.embedded import EmbeddedStack

    stack = EmbeddedStack(home)
    os.environ.update({
        "AISTACK_HOME": str(home),
        "DATABASE_URL": stack.database_url(),
        "REDIS_URL": stack.redis_url(),
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "aistack.settings",
        **environ,
    })
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    return stack.release


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def bench_arguments(parser: argparse.ArgumentParser, **smoke: object) -> argparse.Namespace:
    """Parse the command line; with ``--smoke``, the sizes default to ``smoke``'s.

    `make test` runs every bench with --smoke (``tests/bench``), in seconds, so a change
    that breaks one fails CI. Figures at that size say nothing of the goals.
    """
    parser.add_argument("--smoke", action="store_true",
                        help="a run of seconds at a small size, to show the bench works")
    args = parser.parse_args()
    if args.smoke:
        parser.set_defaults(**smoke)
        args = parser.parse_args()
    return args
