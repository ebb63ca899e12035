"""Shapes of search results on the wire."""

from __future__ import annotations

from ninja import Schema
from pydantic import Field


class SearchResultOut(Schema):
    document_id: int
    chunk_id: int
    score: float = Field(description="What results are ranked by. In hybrid mode a fused rank: "
                                     "it compares the results of one search, nothing more.")
    similarity: float | None = Field(description="Cosine similarity to the query; null when "
                                                 "vectors were not searched, or the passage "
                                                 "was not among the nearest.")
    keyword_score: float | None = Field(description="BM25 of the query's words in the "
                                                    "passage; null when it holds none of them.")
    good_match: bool = Field(description="True when the passage holds a word of the query or "
                                         "is close to its meaning. When no result is, nothing "
                                         "matched well.")
    snippet: str
    document_title: str


class SearchOut(Schema):
    results: list[SearchResultOut]
    mode: str = Field(description="The mode used: `text` when a hybrid query could not be "
                                  "embedded (its model unreachable).")
