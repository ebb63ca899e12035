"""Work beside a request's own, on a connection of its own (aistack.transactions.alongside)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from aistack.accounts.models import Workspace
from aistack.transactions import alongside
from harness import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def backend() -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0], threading.current_thread().name


def test_it_runs_in_another_thread_on_its_own_connection_and_gives_it_back() -> None:
    mine, _ = backend()
    theirs, thread = alongside(backend).result(timeout=10)
    assert theirs != mine
    assert thread.startswith("alongside")
    # The thread's connection went back to the pool: more calls than the pool holds
    # connections all get one.
    pool = connection.pool
    assert pool is not None
    results = [alongside(backend) for _ in range(3 * pool.max_size)]
    assert all(f.result(timeout=10)[0] > 0 for f in results)

    def lent() -> int:
        stats = pool.get_stats()
        return int(stats["pool_size"] - stats["pool_available"])

    # The pool takes connections back in a thread of its own.
    wait_for(lambda: lent() <= 1, timeout=5, message="connections back in the pool")
    assert alongside(backend).result(timeout=10)[0] > 0


def test_inside_a_transaction_it_runs_here_and_sees_what_the_transaction_wrote() -> None:
    mine, here = backend()
    with transaction.atomic():
        workspace = Workspace.objects.create(name="w", slug="w")
        assert alongside(Workspace.objects.filter(pk=workspace.pk).exists).result()
        assert alongside(backend).result() == (mine, here)


def test_its_error_reaches_the_caller_in_either_case() -> None:
    def fail() -> None:
        raise LookupError("nothing here")

    with pytest.raises(LookupError, match="nothing here"):
        alongside(fail).result(timeout=10)
    with transaction.atomic(), pytest.raises(LookupError, match="nothing here"):
        alongside(fail)  # at once: the transaction must not go on as if it had run
