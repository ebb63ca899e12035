"""Limit/offset pages rendered as ``{items, count, next}``."""

from __future__ import annotations

from typing import Any, TypeVar

from django.conf import settings
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from aistack.errors import Invalid

M = TypeVar("M", bound=Model)
# Far beyond any real list, and well inside PostgreSQL's bigint.
MAX_OFFSET = 10**9


def paginate(request: HttpRequest, queryset: QuerySet[M], *, limit: int | None,
             offset: int) -> dict[str, Any]:
    """Return one page of ``queryset`` with the URL of the next page."""
    limit = settings.API_PAGE_SIZE if limit is None else limit
    if not 1 <= limit <= settings.API_MAX_PAGE_SIZE:
        raise Invalid(f"limit must be between 1 and {settings.API_MAX_PAGE_SIZE}.")
    if not 0 <= offset <= MAX_OFFSET:
        raise Invalid(f"offset must be between 0 and {MAX_OFFSET}.")
    count = queryset.count()
    items = list(queryset[offset : offset + limit])
    next_url = None
    if offset + limit < count:
        query = request.GET.copy()
        query["limit"] = str(limit)
        query["offset"] = str(offset + limit)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": items, "count": count, "next": next_url}
