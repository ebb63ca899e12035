"""Usage API: tokens and cost over a period, grouped, limited to what the caller may see."""

from __future__ import annotations

from datetime import date

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from aistack.accounts.permissions import usage_workspace_ids
from aistack.usage.selectors import GroupBy, day_parse, usage_period, usage_report

router = Router(tags=["usage"])


_DAY_FORMS = "an ISO date (2026-12-01), today, yesterday, or how far back (7d, 2w, 24h)"


class UsageParams(Schema):
    since: str | None = Field(default=None, max_length=40,
                              description=f"First day (UTC): {_DAY_FORMS}; default 30 days ago.")
    until: str | None = Field(default=None, max_length=40,
                              description=f"Last day (UTC): {_DAY_FORMS}; default today.")
    group_by: GroupBy = GroupBy.FEATURE


class UsageRowOut(Schema):
    key: str = Field(description="The feature, username, workspace slug, model or day.")
    label: str = Field(description="What the pages show for it: a workspace's name, else the key.")
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageOut(Schema):
    rows: list[UsageRowOut]
    since: date
    until: date


@router.get("", response=UsageOut)
def usage(request: HttpRequest, params: Query[UsageParams]) -> dict[str, object]:
    """Report usage from the daily rollups: staff see everything, others their own workspaces."""
    workspace_ids = usage_workspace_ids(user=request.user)
    period = usage_period(since=day_parse(params.since) if params.since else None,
                          until=day_parse(params.until) if params.until else None)
    rows = usage_report(period=period, group_by=params.group_by, workspace_ids=workspace_ids)
    return {"rows": rows, "since": period.since, "until": period.until}
