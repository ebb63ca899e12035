"""Secrets kept in the database (provider API keys), encrypted with a key from SECRET_KEY.

Fernet (AES-128-CBC with an HMAC-SHA256, from ``cryptography``) under a key derived from
SECRET_KEY by HKDF-SHA256. To rotate SECRET_KEY, move the old one to SECRET_KEY_FALLBACKS:
stored secrets still decrypt with it, and each is encrypted again with the new key the
next time it is read (``secret_decrypt`` returns the renewed token).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_PURPOSE = b"aistack.ai.secrets: provider API keys"


class SecretUnreadable(Exception):
    """A stored secret was encrypted with a key that is neither SECRET_KEY nor a fallback."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=_PURPOSE).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _keys() -> MultiFernet:
    # The first encrypts; any decrypts.
    return MultiFernet([_fernet(settings.SECRET_KEY),
                        *(_fernet(key) for key in settings.SECRET_KEY_FALLBACKS)])


def secret_encrypt(plain: str) -> str:
    """Return ``plain`` encrypted under the current SECRET_KEY."""
    return _keys().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> tuple[str, str]:
    """Return the secret, and its token encrypted under the current SECRET_KEY.

    The token is new when the secret was made under a fallback key: store it.
    """
    keys = _keys()
    try:
        plain = keys.decrypt(token.encode()).decode()
        renewed = token if _decrypts_with_current(token) else keys.rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored API key was encrypted with another SECRET_KEY: put that key in "
            "SECRET_KEY_FALLBACKS, or enter the API key again on the Models page"
        ) from None
    return plain, renewed


def _decrypts_with_current(token: str) -> bool:
    try:
        _fernet(settings.SECRET_KEY).decrypt(token.encode())
    except InvalidToken:
        return False
    return True
