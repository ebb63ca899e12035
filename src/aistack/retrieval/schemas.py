"""Shapes of search results on the wire."""

from __future__ import annotations

from ninja import Schema
from pydantic import Field


class SearchResultOut(Schema):
    document_id: int
    chunk_id: int
    score: float
    snippet: str
    document_title: str


class SearchOut(Schema):
    results: list[SearchResultOut]
    mode: str = Field(description="The mode used: `text` when a hybrid query could not be "
                                  "embedded (its model unreachable).")
