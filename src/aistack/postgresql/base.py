"""Django's PostgreSQL backend, with a pool whose health check costs no round trip.

Django's pool runs ``SELECT`` on every connection before lending it when
``CONN_HEALTH_CHECKS`` is on: one more round trip for every request. A connection that
the server closed (a restart, an idle timeout, a terminated backend) has something
waiting on its socket: the server's last message, or the end of the stream. So a
connection whose socket has nothing to read is lent as it is, and only one with
something waiting pays the full check, which reads what waits and fails if the
connection is gone. (A host that vanished without closing its connections is not seen
this way, nor by a round trip until TCP gives up: the pool's own lifetime limits that.)
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg import Connection, OperationalError
from psycopg_pool import ConnectionPool


def check_without_round_trip(conn: Connection[Any]) -> None:
    """Return quietly if ``conn`` can be lent; raise if it is closed or broken."""
    if conn.closed or conn.broken:
        raise OperationalError("the connection is closed")
    waiting = select.poll()
    waiting.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if waiting.poll(0):
        ConnectionPool.check_connection(conn)


def _sweeping_check(pool: Callable[[], ConnectionPool[Any]]) -> Callable[[Connection[Any]], None]:
    """Return the pool's check: ``check_without_round_trip``, and on a failure, a sweep.

    A connection the server closed means it most likely closed every other one too (a
    restart). The pool would find them one at a time, pausing longer after each
    (1, 2, 4 s...) and time out; the sweep drops them all at once instead, so the
    next connection tried is a new one.
    """
    def check(conn: Connection[Any]) -> None:
        try:
            check_without_round_trip(conn)
        except Exception:
            pool().check()
            raise

    return check


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        """Return Django's connection parameters; refuse server-side binding.

        Search sends a statement's settings with it, in one message of two statements
        (``retrieval.selectors.vector_ranking``), which a server-side prepared statement
        cannot hold: every vector search would fail.
        """
        if self.settings_dict["OPTIONS"].get("server_side_binding"):
            raise ImproperlyConfigured(
                f"Database {self.alias!r}: server_side_binding is not supported (search "
                "sends some statements together); remove it from the database URL.")
        return super().get_connection_params()

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """Return this alias's pool (as Django makes it), checked by socket state."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        # Django's own, which its stubs do not declare.
        pools: dict[str, ConnectionPool[Any]] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            if pool_options is True:
                pool_options = {}
            # Autocommit while in the pool; Django sets what it needs on checkout.
            connect_kwargs = {**self.get_connection_params(), "autocommit": True}
            pool = ConnectionPool(kwargs=connect_kwargs, open=False,
                                  configure=self._configure_connection,  # type: ignore[attr-defined]
                                  check=(_sweeping_check(lambda: pool)
                                         if self.settings_dict["CONN_HEALTH_CHECKS"] else None),
                                  **pool_options)
            # As in Django: threads racing here at startup keep the first pool made.
            pools.setdefault(self.alias, pool)
        return pools[self.alias]
