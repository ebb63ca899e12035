"""The usage ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"
    # A stream the caller stopped reading (say, a closed browser tab).
    CANCELLED = "cancelled", "Cancelled"


class UsageRecord(models.Model):
    """One model call (or one answer served from cache), with what it cost."""

    feature = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    workspace = models.ForeignKey(
        "accounts.Workspace", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.BigIntegerField(null=True, blank=True,
                                       help_text="The object the call was about, if any.")
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200, help_text="provider:model that served or failed.")
    prompt_version = models.CharField(max_length=64, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error_class = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    cache_hit = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], name="usage_created"),
            models.Index(fields=["feature", "created_at"], name="usage_feature_created"),
            models.Index(fields=["workspace", "created_at"], name="usage_workspace_created"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} {self.model} {self.outcome} ({self.created_at:%Y-%m-%d %H:%M})"
