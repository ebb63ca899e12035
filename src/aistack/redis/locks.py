"""Single flight: of many processes that want the same slow thing, one makes it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import LockError

from aistack.redis.connections import redis_client

logger = logging.getLogger(__name__)

# Short, and renewed while the holder lives: if it dies, the next caller gets the lock
# within this many seconds instead of waiting out the slowest possible model call.
LOCK_TTL_SECONDS = 10.0


@contextmanager
def single_flight(name: str) -> Iterator[bool]:
    """Yield True to the one caller that holds lock ``name``; False to everyone else."""
    # redis-py's lock stores a random owner token and releases or renews it only if it
    # still holds that token, so a holder whose lock expired cannot free someone else's.
    lock = redis_client().lock(f"aistack:lock:{name}", timeout=LOCK_TTL_SECONDS,
                               blocking=False, thread_local=False)
    if not lock.acquire():
        yield False
        return
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LOCK_TTL_SECONDS / 3):
            try:
                lock.reacquire()
            except LockError:
                logger.warning("lost lock %s while holding it", name)
                return

    renewer = threading.Thread(target=renew, name=f"renew {name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        done.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            logger.warning("lock %s expired before it was released", name)
