"""The usage dashboard: workspace owners' part of it in the app (staff see it in the admin)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from aistack.accounts.models import Workspace
from aistack.accounts.permissions import managed_workspaces
from aistack.errors import Invalid
from aistack.usage.forms import PeriodForm
from aistack.usage.selectors import Dashboard, usage_dashboard, usage_period

PRESET_DAYS = (7, 30, 90)


def _chart_data(dashboard: Dashboard) -> dict[str, Any]:
    def label(feature: str, model: str) -> str:
        return f"{feature} · {model}"

    return {
        "days": [day.isoformat() for day in dashboard.period.days],
        "costByFeature": dashboard.by_feature.cost_usd,
        "tokensByFeature": dashboard.by_feature.tokens,
        "costByModel": dashboard.by_model.cost_usd,
        "tokensByModel": dashboard.by_model.tokens,
        "latency": [{"label": label(row.feature, row.model), "p50": row.p50_ms,
                     "p95": row.p95_ms, "ttftP50": row.ttft_p50_ms, "ttftP95": row.ttft_p95_ms}
                    for row in dashboard.latency],
        "cache": [{"label": f"{row.feature} ({row.cache.replace('_', ' ')})",
                   "ratio": round(row.ratio * 100, 1)} for row in dashboard.cache],
    }


def _presets() -> list[dict[str, Any]]:
    today = timezone.now().date()
    return [{"days": days, "since": today - timedelta(days=days - 1), "until": today}
            for days in PRESET_DAYS]


def dashboard_context(request: HttpRequest, *, workspaces: Sequence[Workspace] | None
                      ) -> dict[str, Any]:
    """Return the dashboard's template context for ``workspaces`` (None: every workspace)."""
    form = PeriodForm(request.GET or None, workspaces=workspaces or ())
    since = until = workspace = None
    if form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        workspace = form.cleaned_data.get("workspace")
    try:
        period = usage_period(since=since, until=until)
    except Invalid as exc:
        form.add_error(None, exc.message)
        period = usage_period()
    form.initial.update(since=period.since, until=period.until)
    if workspaces is None:
        workspace_ids = None
    else:
        owned = [w.pk for w in workspaces]
        workspace_ids = [workspace] if workspace in owned else owned
    dashboard = usage_dashboard(period=period, workspace_ids=workspace_ids)
    return {"form": form, "dashboard": dashboard, "chart_data": _chart_data(dashboard),
            "presets": _presets()}


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    """Show AI usage, cost, latency and failures of the workspaces the user owns."""
    workspaces = list(managed_workspaces(user=request.user).order_by("name"))
    context = dashboard_context(request, workspaces=workspaces) if workspaces else {}
    return render(request, "usage/page.html", context)
