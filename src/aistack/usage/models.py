"""The usage ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class CurrentTransaction(models.Func):
    """The id of the transaction writing the row (PostgreSQL's ``pg_current_xact_id()``)."""

    template = "(pg_current_xact_id()::text::bigint)"
    output_field = models.BigIntegerField()


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
    # A call that read several workspaces is one row per workspace, each with an equal
    # share of its tokens and cost; the call is counted once, at share 0. Rows written
    # without it (by a process of the previous release, mid-deploy) are whole calls.
    share_index = models.PositiveSmallIntegerField(default=0, db_default=0)
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
    # The writing transaction's id, set by PostgreSQL: the rollups store the snapshot they
    # summed, and rows whose transaction that snapshot cannot see are the ones still to add.
    created_xact = models.BigIntegerField(db_default=CurrentTransaction(), editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["created_xact"], name="usage_created_xact"),
            # By time; and the slowest calls of a recent window, found in the index alone.
            models.Index(fields=["created_at", "latency_ms"], include=["id"],
                         name="usage_created_latency"),
            models.Index(fields=["feature", "created_at"], name="usage_feature_created"),
            models.Index(fields=["workspace", "created_at"], name="usage_workspace_created"),
            # A user's spending this month, read when their budget is first checked.
            models.Index(fields=["user", "created_at"], name="usage_user_created"),
        ]

    def __str__(self) -> str:
        return f"{self.feature} {self.model} {self.outcome} ({self.created_at:%Y-%m-%d %H:%M})"


class UsageDashboard(UsageRecord):
    """The usage dashboard's entry in the admin (a page, not a list of rows)."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "usage dashboard"


class DailyFigures(models.Model):
    """Calls of one feature on one model on one day, summed (kept by :mod:`.rollups`).

    Latencies are kept as sparse histograms (``{bucket: calls}``, buckets from
    :data:`aistack.usage.rollups.LATENCY_BOUNDS_MS`) that add up across rows, so
    percentiles over any date range come from the rollup, never from the ledger.
    """

    day = models.DateField()
    feature = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    calls = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cached_tokens = models.BigIntegerField()
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8)
    latency_ms_total = models.BigIntegerField()
    latency_histogram = models.JSONField()
    ttft_calls = models.PositiveIntegerField()
    ttft_histogram = models.JSONField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.day} {self.feature} {self.model}"


class DailyUsage(DailyFigures):
    """Every workspace's calls together: what staff see, in few rows however many workspaces."""

    class Meta:
        indexes = [models.Index(fields=["day"], name="dailyusage_day")]


class DailyWorkspaceUsage(DailyFigures):
    """One workspace's calls: what its owners see."""

    # Plain ids, not foreign keys: a rollup outlives the workspaces and users it counts.
    workspace_id = models.BigIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["workspace_id", "day"],
                                name="dailywsusage_workspace_day")]


class DailyUserUsage(models.Model):
    """The ledger summed per day, user and workspace: who spends, without the detail."""

    day = models.DateField()
    user_id = models.BigIntegerField(null=True)
    workspace_id = models.BigIntegerField(null=True)
    calls = models.PositiveIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cost_usd = models.DecimalField(max_digits=18, decimal_places=8)

    class Meta:
        indexes = [
            models.Index(fields=["day"], name="dailyuserusage_day"),
            models.Index(fields=["workspace_id", "day"], name="dailyuserusage_workspace_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} user #{self.user_id}"


class DailyCacheUsage(models.Model):
    """Hits and misses of one cache for one feature (and workspace) on one day."""

    day = models.DateField()
    cache = models.CharField(max_length=32)
    feature = models.CharField(max_length=64)
    workspace_id = models.BigIntegerField(null=True)
    hits = models.BigIntegerField(default=0)
    misses = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "cache", "feature", "workspace_id"],
                                    name="one_cache_count_per_day", nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.cache}/{self.feature}: {self.hits} hits, {self.misses} misses"


class RollupState(models.Model):
    """How far the daily rollups have read the ledger (a single row)."""

    # The PostgreSQL snapshot (pg_snapshot text) the rollups were summed in; empty: none yet.
    snapshot = models.TextField(blank=True)
    rolled_up_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"rolled up at {self.rolled_up_at}"


class BudgetScope(models.TextChoices):
    WORKSPACE = "workspace", "Workspace"
    USER = "user", "User"


class Budget(models.Model):
    """A monthly spending limit for one workspace or one user, overriding the default."""

    workspace = models.OneToOneField(
        "accounts.Workspace", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="+")
    monthly_limit_usd = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True,
        help_text="Leave empty for no limit, whatever the default.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(workspace__isnull=False, user__isnull=True)
                | models.Q(workspace__isnull=True, user__isnull=False),
                name="budget_for_workspace_or_user",
                violation_error_message="A budget is for one workspace or one user.",
            ),
        ]

    def __str__(self) -> str:
        limit = "no limit" if self.monthly_limit_usd is None else f"${self.monthly_limit_usd}"
        return f"{self.workspace or self.user}: {limit} a month"
