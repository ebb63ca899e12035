"""Password guessing is throttled per account and per address, on both log-in pages,
before any password is hashed; windows expire, and only failures count."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from aistack.accounts.services import user_create
from aistack.redis import connections

PASSWORD = "correct horse battery staple"
WRONG = "not the password"
ADDRESS = "203.0.113.7"
OTHER_ADDRESS = "198.51.100.9"


class CountingHasher(MD5PasswordHasher):
    """The test settings' MD5 hasher, counting the passwords it hashes."""

    hashed = 0

    def encode(self, password: str, salt: str) -> str:
        # Every check of a password, and the dummy hashing of an unknown user, ends here.
        CountingHasher.hashed += 1
        return super().encode(password, salt)


@pytest.fixture(autouse=True)
def throttle(settings: Any, clean_redis: None) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = "3/minute"
    settings.LOGIN_FAILURES_PER_ADDRESS = "5/minute"
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.hashed = 0


def log_in(path: str = "/login/", *, username: str = "alice", password: str = WRONG,
           address: str = ADDRESS) -> Any:
    """Post the log-in form from ``address`` with a client of its own."""
    return Client().post(path, {"username": username, "password": password},
                         REMOTE_ADDR=address)


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    assert response["Retry-After"].isdigit()
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "Too many failed log-ins" in response.content.decode()
    assert "_auth_user_id" not in response.client.session


def test_past_the_account_limit_even_the_right_password_gets_429(alice: User) -> None:
    failures = [log_in().status_code for _ in range(3)]

    refused = log_in(password=PASSWORD)

    assert failures == [200, 200, 200]
    assert_throttled(refused)
    # The log-in page again, with its form, ready for when the wait is over.
    assert "web/login.html" in [template.name for template in refused.templates]
    assert 'name="password"' in refused.content.decode()


def test_no_password_is_hashed_while_throttled(alice: User) -> None:
    hashed_per_try = []
    for _ in range(6):
        before = CountingHasher.hashed
        log_in()
        hashed_per_try.append(CountingHasher.hashed - before)

    assert hashed_per_try == [1, 1, 1, 0, 0, 0]


def test_another_address_may_try_the_account_only_up_to_the_account_limit(
    alice: User,
) -> None:
    first = [log_in(address=ADDRESS).status_code for _ in range(2)]
    second = log_in(address=OTHER_ADDRESS).status_code

    assert [*first, second] == [200, 200, 200]
    assert_throttled(log_in(address=OTHER_ADDRESS, password=PASSWORD))
    assert_throttled(log_in(address="192.0.2.1", password=PASSWORD))


def test_other_accounts_from_one_address_stop_at_the_address_limit(
    alice: User, bob: User,
) -> None:
    # Two tries each at most: no account reaches its own limit. Unknown names count too.
    usernames = ["alice", "bob", "carol", "alice", "bob"]
    failures = [log_in(username=username).status_code for username in usernames]

    assert failures == [200] * 5
    assert_throttled(log_in(username="bob", password=PASSWORD))
    assert_throttled(log_in(username="nobody"))
    # Bob himself, from his own address, still gets in.
    assert log_in(username="bob", password=PASSWORD, address=OTHER_ADDRESS).status_code == 302


def test_an_ipv6_client_is_counted_by_its_64_network(alice: User, bob: User) -> None:
    for n in range(5):
        log_in(username=f"user{n}", address=f"2001:db8:0:1::{n + 1}")

    assert_throttled(log_in(username="bob", password=PASSWORD, address="2001:db8:0:1::ff"))
    assert log_in(username="bob", password=PASSWORD, address="2001:db8:0:2::1").status_code == 302


def test_the_admin_login_obeys_the_same_rule(db: None) -> None:
    user_create(username="root", password=PASSWORD, is_staff=True)
    admitted = log_in("/admin/login/", username="root", password=PASSWORD,
                      address=OTHER_ADDRESS)
    failures = [log_in(path, username="root").status_code
                for path in ["/login/", "/admin/login/", "/admin/login/"]]
    hashed = CountingHasher.hashed

    refused = log_in("/admin/login/", username="root", password=PASSWORD)

    assert admitted.status_code == 302
    assert failures == [200, 200, 200]
    assert_throttled(refused)
    assert_throttled(log_in("/login/", username="root", password=PASSWORD))
    assert CountingHasher.hashed == hashed


def test_the_right_password_works_again_once_the_window_has_passed(
    alice: User, settings: Any,
) -> None:
    settings.LOGIN_FAILURES_PER_ACCOUNT = "2/2 seconds"
    log_in()
    log_in()
    refused = log_in(password=PASSWORD)

    time.sleep(int(refused["Retry-After"]) + 0.1)

    assert refused.status_code == 429 and int(refused["Retry-After"]) <= 2
    assert log_in(password=PASSWORD).status_code == 302


def test_successful_log_ins_are_not_counted(alice: User) -> None:
    admitted = [log_in(password=PASSWORD).status_code for _ in range(6)]

    assert admitted == [302] * 6
    assert log_in().status_code == 200


def test_authenticate_refuses_without_hashing_while_throttled(alice: User, bob: User) -> None:
    for _ in range(3):
        log_in()
    hashed = CountingHasher.hashed
    request = RequestFactory().post("/login/", REMOTE_ADDR=OTHER_ADDRESS)

    assert authenticate(request, username="alice", password=PASSWORD) is None
    assert authenticate(None, username="alice", password=PASSWORD) is None
    assert CountingHasher.hashed == hashed
    assert authenticate(request, username="bob", password=PASSWORD) == bob


@pytest.fixture
def redis_down() -> Iterator[None]:
    """Make every Redis client of the process fail at once, as after a lost connection."""
    connections.redis_outage_seen()
    yield
    connections._outage_until = 0.0


def test_while_redis_is_down_log_ins_are_not_throttled(
    alice: User, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
) -> None:
    for _ in range(3):
        log_in()
    assert log_in(password=PASSWORD).status_code == 429

    request.getfixturevalue("redis_down")
    with caplog.at_level(logging.WARNING, logger="aistack.accounts.throttling"):
        admitted = log_in(password=PASSWORD)

    assert admitted.status_code == 302
    assert "log-in throttle not checked" in caplog.text
