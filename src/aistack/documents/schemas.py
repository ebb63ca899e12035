"""Shapes of documents on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ninja import Schema
from pydantic import Field, field_validator

from aistack.jobs.kinds import JobStatus
from aistack.rendering import markdown_html
from aistack.validation import Text

if TYPE_CHECKING:
    from aistack.documents.summaries import SummaryState


class DocumentIn(Schema):
    title: Text
    content: Text
    workspace: int | None = Field(default=None, description="Defaults to your personal workspace.")


class DocumentPatch(Schema):
    title: Text | None = Field(default=None, description="Left out: unchanged. Never null.")
    content: Text | None = Field(default=None, description="Left out: unchanged. Never null.")

    # Runs only on fields sent: a null would otherwise read as "left out", ignored in silence.
    @field_validator("title", "content", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep it as it is")
        return value


class DocumentOut(Schema):
    id: int
    workspace: int = Field(validation_alias="workspace_id")
    title: str
    content: str
    content_hash: str
    source_name: str = Field(description="File name of an uploaded original, if any.")
    source_kind: str = Field(description="txt, md, html, pdf or docx for uploads.")
    embedding_status: JobStatus
    embedding_error: str
    summary_status: JobStatus
    summary_error: str
    created_at: datetime
    updated_at: datetime


class DocumentPage(Schema):
    items: list[DocumentOut]
    count: int
    next: str | None


class SummaryOut(Schema):
    status: JobStatus
    summary: str | None
    summary_html: str | None = Field(description="`summary` rendered from Markdown to "
                                                 "sanitized HTML, as the document page shows it.")
    error: str
    stale: bool = Field(description="True when `summary` is of an older version of the "
                                    "document, shown while the current one is made.")
    extractive: bool = Field(description="True when the summary quotes the document "
                                         "instead of being written by a language model.")
    retryable: bool = Field(description="False when asking again cannot succeed (an upload "
                                        "whose text could not be extracted): `error` says "
                                        "what to do instead.")

    @staticmethod
    def resolve_summary_html(state: SummaryState) -> str | None:
        return markdown_html(state.summary) if state.summary is not None else None
