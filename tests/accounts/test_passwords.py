"""A password is checked by Django's validators wherever one is set."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from aistack.accounts.services import user_create

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("password", ["a", "password", "12345678"])
def test_a_weak_password_is_refused_with_the_validators_reasons(password: str) -> None:
    with pytest.raises(ValidationError) as refused:
        user_create(username="dave", password=password)
    assert refused.value.messages
    assert not User.objects.filter(username="dave").exists()


def test_a_strong_password_and_no_password_are_both_accepted() -> None:
    strong = user_create(username="erin", password="correct horse battery staple")
    assert strong.has_usable_password()
    assert not user_create(username="frank", password=None).has_usable_password()
