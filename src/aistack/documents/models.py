"""Documents: the knowledge a workspace holds."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from aistack.accounts.models import Workspace
from aistack.cache import content_hash
from aistack.jobs.kinds import JobStatus


class Document(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    content = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, editable=False)
    # An uploaded original, parsed to ``content`` by the document's index job.
    source_file = models.FileField(upload_to="uploads/%Y/%m/", blank=True)
    source_name = models.CharField(max_length=255, blank=True)
    source_kind = models.CharField(max_length=8, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="documents",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    embedding_status = models.CharField(
        max_length=12, choices=JobStatus.choices, default=JobStatus.PENDING
    )
    embedding_error = models.TextField(blank=True)
    summary_status = models.CharField(
        max_length=12, choices=JobStatus.choices, default=JobStatus.PENDING
    )
    summary_error = models.TextField(blank=True)
    # The last summary written, kept so that a cold cache never costs a model call, and
    # what it is a summary of (see ``summaries.SummaryVersion``): when that differs
    # from the current version, the summary is stale.
    summary = models.TextField(blank=True)
    summary_version = models.CharField(max_length=200, blank=True, editable=False)
    summary_extractive = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="document_ws_created")]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: object, **kwargs: object) -> None:
        self.content_hash = content_hash(self.content)
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        self.title = (self.title or "").strip()
        errors: dict[str, str] = {}
        if not self.title:
            errors["title"] = "Title is required."
        elif len(self.title) > settings.DOCUMENT_TITLE_MAX_CHARS:
            limit = settings.DOCUMENT_TITLE_MAX_CHARS
            errors["title"] = f"Title is longer than {limit} characters."
        if not (self.content or "").strip() and not self.source_file:
            errors["content"] = "Content is required."
        elif len(self.content) > settings.DOCUMENT_MAX_CHARS:
            errors["content"] = (
                f"Content is longer than {settings.DOCUMENT_MAX_CHARS:,} characters."
            )
        if "\x00" in (self.content or "") or "\x00" in self.title:
            errors["content"] = "Content may not contain NUL characters."
        if errors:
            raise ValidationError(errors)

    @property
    def awaits_parsing(self) -> bool:
        """Return whether this is an upload whose text has not been extracted yet."""
        return bool(self.source_file) and not self.content


class StoredFile(models.Model):
    """An uploaded original, kept in PostgreSQL (``storage.DatabaseStorage``)."""

    name = models.CharField(max_length=255, unique=True)
    content = models.BinaryField()
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

