"""Authentication for the API: bearer tokens or the browser's session."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from aistack.accounts.selectors import user_for_token


class BearerTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        user = user_for_token(raw=token)
        if user is not None:
            request.user = user
        return user


API_AUTH = [BearerTokenAuth(), SessionAuth()]
