"""The usage ledger, the budgets and the staff's usage dashboard in the admin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from aistack.admin_records import RecordAdmin
from aistack.usage.budgets import ledger_spent_usd, month_of
from aistack.usage.models import Budget, BudgetScope, UsageDashboard, UsageRecord
from aistack.usage.views import dashboard_context


@admin.register(UsageRecord)
class UsageRecordAdmin(RecordAdmin[UsageRecord]):
    list_display = ["created_at", "feature", "model", "outcome", "input_tokens", "output_tokens",
                    "cost_usd", "latency_ms", "user", "workspace"]
    list_filter = ["feature", "provider", "outcome", "cache_hit"]
    search_fields = ["model", "request_id", "error_class"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "workspace"]


@admin.register(UsageDashboard)
class UsageDashboardAdmin(RecordAdmin[UsageDashboard]):
    """The dashboard over every workspace, listed on the admin index like a model."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_staff

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Show the dashboard instead of a list of rows."""
        return TemplateResponse(request, "admin/usage/dashboard.html", {
            **self.admin_site.each_context(request),
            "title": "Usage dashboard",
            "opts": self.model._meta,
            **dashboard_context(request, workspaces=None),
        })


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin[Budget]):
    list_display = ["__str__", "workspace", "user", "monthly_limit_usd", "spent_this_month"]
    list_select_related = ["workspace", "user"]
    autocomplete_fields = ["workspace", "user"]
    search_fields = ["workspace__name", "user__username"]

    @admin.display(description="spent this month (USD)")
    def spent_this_month(self, budget: Budget) -> Decimal:
        """Return what the ledger says the workspace or user spent this month."""
        scope, owner_id = ((BudgetScope.WORKSPACE, budget.workspace_id)
                           if budget.workspace_id is not None
                           else (BudgetScope.USER, budget.user_id))
        assert owner_id is not None
        return ledger_spent_usd(scope=scope, owner_id=owner_id, month=month_of(timezone.now()))
