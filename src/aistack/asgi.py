"""ASGI entry point: Django, with warm summary reads answered ahead of it."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aistack.settings")

django_application = get_asgi_application()

from aistack.fastpath import WarmReads  # noqa: E402  (needs Django set up)

application = WarmReads(django_application)
