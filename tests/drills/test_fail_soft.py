"""What the drills found, pinned down in fast tests: soft cache, safe hooks, shared backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from aistack.ai import chat_models
from aistack.cache import FailSoftRedisCache, event_loop_cache
from aistack.documents.models import Document
from aistack.documents.services import document_create
from aistack.jobs.services import job_status_changed


def test_cache_misses_and_drops_writes_while_redis_is_unreachable(tmp_path: Path) -> None:
    down = FailSoftRedisCache(f"unix://{tmp_path / 'no-redis.sock'}", {})
    assert down.get("key", "default") == "default"
    assert down.get_many(["a", "b"]) == {}
    assert down.has_key("key") is False
    down.set("key", 1)
    assert down.add("key", 1) is False
    assert down.set_many({"a": 1, "b": 2}) == ["a", "b"]
    assert down.delete("key") is False
    # A counter's caller must know its count was not kept.
    with pytest.raises(RedisConnectionError):
        down.incr("key")


def test_the_same_cache_works_normally_when_redis_is_up(clean_redis: None) -> None:
    up = FailSoftRedisCache(settings.REDIS_URL, {"KEY_PREFIX": "fail-soft-test"})
    up.set("key", {"kept": True})
    assert up.get("key") == {"kept": True}
    assert up.add("key", 2) is False
    up.set("n", 1)
    assert up.incr("n") == 2


def test_shared_reads_unpickle_equal_bytes_once_and_see_every_change(clean_redis: None) -> None:
    up = FailSoftRedisCache(settings.REDIS_URL, {"KEY_PREFIX": "fail-soft-test"})
    up.set("roles", {1: "owner"})

    async def read() -> Any:
        return (await up.aget_many_shared(["roles", "missing"])).get("roles")

    first, again = asyncio.run(read()), asyncio.run(read())
    assert first == {1: "owner"} and again is first
    up.set("roles", {1: "viewer"})
    assert asyncio.run(read()) == {1: "viewer"}, "a changed entry must be read anew"
    # The unshared read gives every caller its own copy.
    copies = [asyncio.run(up.aget_many(["roles"]))["roles"] for _ in range(2)]
    assert copies[0] == copies[1] and copies[0] is not copies[1]


def test_the_event_loop_cache_is_one_object_that_follows_the_settings(
        clean_redis: None) -> None:
    assert event_loop_cache() is event_loop_cache()
    assert event_loop_cache().key_prefix == "aistack"
    with override_settings(CACHES={"default": {**settings.CACHES["default"],
                                               "KEY_PREFIX": "elsewhere"}}):
        assert event_loop_cache().key_prefix == "elsewhere"
    assert event_loop_cache().key_prefix == "aistack"


@pytest.mark.django_db(transaction=True)
def test_a_failing_after_commit_hook_does_not_fail_the_write(alice: User,
                                                              clean_redis: None) -> None:
    # A listener that fails like a broker that is down, after the document is committed.
    def broker_down(**_: Any) -> None:
        raise ConnectionError("broker down")

    job_status_changed.connect(broker_down)
    try:
        document = document_create(workspace=alice.personal_workspace, title="Kept",
                                   content="Written while the broker was down.", author=alice)
    finally:
        job_status_changed.disconnect(broker_down)
    assert Document.objects.get(pk=document.pk).title == "Kept"


def test_a_model_backend_is_built_once_for_every_thread(
    scripted_chat: Callable[..., None],
) -> None:
    # Under ASGI each request runs in a new thread: a backend per thread would rebuild
    # its SDK client on every request.
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(chat_models["default"]))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4
    assert all(backend is chat_models["default"] for backend in seen)
