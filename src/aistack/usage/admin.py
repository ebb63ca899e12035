from django.contrib import admin

from aistack.usage.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin[UsageRecord]):
    list_display = ["created_at", "feature", "model", "outcome", "input_tokens", "output_tokens",
                    "cost_usd", "latency_ms", "user", "workspace"]
    list_filter = ["feature", "provider", "outcome", "cache_hit"]
    search_fields = ["model", "request_id", "error_class"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "workspace"]
    # The ledger records what happened; editing it would falsify cost reports.
    readonly_fields = [f.name for f in UsageRecord._meta.get_fields()]
