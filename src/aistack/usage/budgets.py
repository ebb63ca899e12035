"""Monthly budgets: reserve an estimate before each model call, settle the real cost after.

Every workspace and user with a limit (an override in the admin, or the default from
``AI_WORKSPACE_MONTHLY_BUDGET_USD`` / ``AI_USER_MONTHLY_BUDGET_USD``) has a running
total for the month in Redis: what was spent and what calls in flight hold reserved.
A call reserves its estimate on its user's total and on its workspace's (or an equal
share on each workspace's, when it reads several: an ask over all of a user's
workspaces) in one Lua script, which admits it only if every part fits under its
limit; Redis runs one script at a time, so concurrent calls are admitted one by one
against the latest totals. The settle then swaps the estimate for the real cost. An
estimate counts the prompt generously and the answer at its maximum length, so real
costs rarely exceed it, and a crowd of concurrent calls overspends by at most what one
call's real cost exceeds its estimate. Calls to models with no price (the built-in
model, Ollama) reserve nothing and are never refused.

The usage ledger in PostgreSQL is the truth: a total missing from Redis (the first
call of the month, or after a flush) is rebuilt from it; the periodic job rebuilds
idle totals from it too, which also frees estimates left by a process that died
mid-call; and while Redis is unreachable, calls are checked against the ledger alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from redis.commands.core import Script
from redis.exceptions import RedisError

from aistack.redis.connections import redis_client
from aistack.usage.models import Budget, BudgetScope, UsageRecord
from aistack.usage.pricing import cost_estimate_usd
from aistack.usage.types import Attribution

logger = logging.getLogger(__name__)


class OverBudget(Exception):
    """A call would cross a monthly budget: ``scope`` ("workspace" or "user") ran out."""

    def __init__(self, *, scope: str, renews_on: date) -> None:
        super().__init__(f"the {scope} budget is spent until {renews_on}")
        self.scope = scope
        self.renews_on = renews_on


# Deliberately generous (English averages about four): an estimate errs on the high side.
CHARS_PER_TOKEN = 3
# Budgets edited in the admin reach this process at once, and other processes within this
# many seconds: reading them before every call would cost more than the check itself.
OVERRIDES_REFRESH_SECONDS = 10.0
# Totals are kept in whole nano-dollars: Redis adds integers exactly.
_NANO = Decimal(10) ** 9
_KEY = "aistack:budget:{scope}:{owner_id}:{month:%Y-%m}"
# A total outlives its month long enough for the month's last calls to settle.
_KEY_TTL_SECONDS = 40 * 24 * 3600
_MISSING, _ADMITTED = -1, 1

_RESERVE_LUA = """
-- KEYS: the call's budget totals; ARGV: the estimate's share of each key, then each
-- key's limit, then now.
local n = #KEYS
for i, key in ipairs(KEYS) do
    local spent, reserved = unpack(redis.call('HMGET', key, 'spent', 'reserved'))
    if not spent then
        return {-1, i}
    end
    if tonumber(spent) + tonumber(reserved or 0) + tonumber(ARGV[i]) > tonumber(ARGV[n + i]) then
        return {0, i}
    end
end
for i, key in ipairs(KEYS) do
    redis.call('HINCRBY', key, 'reserved', ARGV[i])
    redis.call('HSET', key, 'touched', ARGV[#ARGV])
end
return {1, 0}
"""
_SETTLE_LUA = """
-- KEYS: the budget totals a call reserved on; ARGV: what it reserved on each key, then
-- its real cost's share of each key, then now.
local n = #KEYS
for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then
        local reserved = tonumber(redis.call('HGET', key, 'reserved') or 0)
        redis.call('HSET', key, 'reserved', math.max(reserved - tonumber(ARGV[i]), 0),
                   'touched', ARGV[#ARGV])
        redis.call('HINCRBY', key, 'spent', ARGV[n + i])
    end
end
"""
_REBUILD_IDLE_LUA = """
-- KEYS[1]: a total; ARGV: idle since, what the ledger says was spent, now.
if tonumber(redis.call('HGET', KEYS[1], 'touched') or 0) < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'spent', ARGV[2], 'reserved', 0, 'touched', ARGV[3])
    return 1
end
return 0
"""


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """An estimate held on budget totals until the call's real cost is known: on each
    key, ``amounts`` in nano-dollars (a workspace's share, or the user's whole)."""

    keys: tuple[str, ...]
    amounts: tuple[int, ...]
    # Which keys are workspaces', each charged 1/workspaces of the cost.
    shared: tuple[bool, ...]
    workspaces: int


@dataclass(frozen=True, kw_only=True)
class _Limit:
    scope: BudgetScope
    owner_id: int
    limit_usd: Decimal


@cache
def _script(source: str) -> Script:
    return redis_client().register_script(source)


def _nano(amount: Decimal, *, rounding: str = ROUND_CEILING) -> int:
    return int((amount * _NANO).to_integral_value(rounding=rounding))


def month_of(moment: datetime) -> date:
    """Return the first day of the (UTC) month of ``moment``."""
    return timezone.localtime(moment, UTC).date().replace(day=1)


def _next_month(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _key(scope: str, owner_id: int, month: date) -> str:
    return _KEY.format(scope=scope, owner_id=owner_id, month=month)


def call_estimate_usd(*, served_by: Sequence[tuple[str, str]], input_chars: int,
                      output_tokens: int) -> Decimal:
    """Return the most a call of this size may cost on whichever of ``served_by``'s
    (provider, model) pairs serves it."""
    input_tokens = math.ceil(input_chars / CHARS_PER_TOKEN)
    return max((cost_estimate_usd(provider=provider, model=model,
                                  input_tokens=input_tokens, output_tokens=output_tokens)
                for provider, model in served_by), default=Decimal(0))


@dataclass(frozen=True, kw_only=True)
class _Overrides:
    """Every budget set in the admin, as this process last read them."""

    read_at: float
    limits: dict[tuple[BudgetScope, int], Decimal | None]


_overrides: _Overrides | None = None


def _overrides_now() -> _Overrides:
    global _overrides
    current = _overrides
    if current is None or time.monotonic() - current.read_at > OVERRIDES_REFRESH_SECONDS:
        limits: dict[tuple[BudgetScope, int], Decimal | None] = {}
        for workspace_id, user_id, limit in Budget.objects.values_list(
                "workspace_id", "user_id", "monthly_limit_usd"):
            if workspace_id is not None:
                limits[(BudgetScope.WORKSPACE, workspace_id)] = limit
            else:
                limits[(BudgetScope.USER, user_id)] = limit
        current = _overrides = _Overrides(read_at=time.monotonic(), limits=limits)
    return current


@receiver([post_save, post_delete], sender=Budget)
def _forget_overrides(**_: Any) -> None:
    global _overrides
    _overrides = None


def even_shares(total: int, n: int) -> list[int]:
    """Split ``total`` into ``n`` whole numbers that add up to it, the remainder on the first."""
    share, remainder = divmod(total, n)
    return [share + remainder, *([share] * (n - 1))]


def _limits(attribution: Attribution) -> list[_Limit]:
    defaults = {BudgetScope.WORKSPACE: settings.AI_WORKSPACE_MONTHLY_BUDGET_USD,
                BudgetScope.USER: settings.AI_USER_MONTHLY_BUDGET_USD}
    overrides = _overrides_now().limits
    limits = []
    owners = [*((BudgetScope.WORKSPACE, workspace_id)
                for workspace_id in attribution.charged_workspace_ids),
              (BudgetScope.USER, attribution.user_id)]
    for scope, owner_id in owners:
        if owner_id is None:
            continue
        # An override of None lifts the default: no limit for this one.
        limit = overrides.get((scope, owner_id), defaults[scope])
        if limit is not None:
            limits.append(_Limit(scope=scope, owner_id=owner_id, limit_usd=limit))
    return limits


def ledger_spent_usd(*, scope: str, owner_id: int, month: date) -> Decimal:
    """Return what the ledger says a workspace or user spent in the month."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime.combine(_next_month(month), datetime.min.time(), tzinfo=UTC)
    owner = {"workspace_id" if scope == BudgetScope.WORKSPACE else "user_id": owner_id}
    spent: Decimal = UsageRecord.objects.filter(
        created_at__gte=start, created_at__lt=end, **owner,
    ).aggregate(total=Sum("cost_usd", default=Decimal(0)))["total"]
    return spent


def _rebuild(limit: _Limit, month: date) -> None:
    key = _key(limit.scope, limit.owner_id, month)
    spent = ledger_spent_usd(scope=limit.scope, owner_id=limit.owner_id, month=month)
    with redis_client().pipeline() as pipe:
        # Whoever rebuilt it first wins: every rebuild reads the same ledger.
        pipe.hsetnx(key, "spent", _nano(spent, rounding=ROUND_HALF_EVEN))
        pipe.expire(key, _KEY_TTL_SECONDS)
        pipe.execute()


def _refused(limit: _Limit, month: date) -> OverBudget:
    return OverBudget(scope=limit.scope.value, renews_on=_next_month(month))


def _ledger_check(limits: Sequence[_Limit], amounts: Sequence[Decimal], month: date) -> None:
    for limit, amount in zip(limits, amounts, strict=True):
        spent = ledger_spent_usd(scope=limit.scope, owner_id=limit.owner_id, month=month)
        if spent + amount > limit.limit_usd:
            raise _refused(limit, month)


def _parts(total: int, shared: Sequence[bool], workspaces: int) -> list[int]:
    """Return each key's part of ``total``: a workspace's share, or all of it for the user."""
    shares = iter(even_shares(total, workspaces) if workspaces else [])
    return [next(shares) if is_shared else total for is_shared in shared]


def budget_reserve(*, attribution: Attribution, estimate: Decimal) -> Reservation | None:
    """Hold ``estimate`` on the call's user budget and its share on the budget of each
    workspace it is charged to, or raise OverBudget.

    Returns None when nothing is held: a free call, no budget applies, or Redis is down.
    """
    if estimate <= 0:
        return None
    limits = _limits(attribution)
    if not limits:
        return None
    month = month_of(timezone.now())
    keys = [_key(limit.scope, limit.owner_id, month) for limit in limits]
    workspaces = len(attribution.charged_workspace_ids)
    shared = [limit.scope == BudgetScope.WORKSPACE for limit in limits]
    amounts = _parts(_nano(estimate), shared, workspaces)
    args = [*amounts, *(_nano(limit.limit_usd, rounding=ROUND_FLOOR) for limit in limits),
            int(time.time())]
    try:
        for _ in range(len(limits) + 1):  # each missing total is rebuilt once
            verdict, index = _script(_RESERVE_LUA)(keys=keys, args=args)
            if verdict != _MISSING:
                break
            _rebuild(limits[index - 1], month)
    except RedisError as exc:
        logger.warning("budget totals unreachable (%s): checking against the ledger", exc)
        _ledger_check(limits, [Decimal(amount) / _NANO for amount in amounts], month)
        return None
    if verdict == _ADMITTED:
        return Reservation(keys=tuple(keys), amounts=tuple(amounts), shared=tuple(shared),
                           workspaces=workspaces)
    # Over a limit (or a total that keeps vanishing): refuse rather than risk overspending.
    raise _refused(limits[index - 1], month)


def budget_settle(*, reservation: Reservation, cost: Decimal) -> None:
    """Replace a call's reserved estimate with what it really cost."""
    costs = _parts(_nano(cost, rounding=ROUND_HALF_EVEN), reservation.shared,
                   reservation.workspaces)
    try:
        _script(_SETTLE_LUA)(keys=list(reservation.keys), args=[
            *reservation.amounts, *costs, int(time.time())])
    except RedisError as exc:
        # The ledger row holds the cost; the idle rebuild puts it in the total.
        logger.warning("budget not settled (%s); the ledger has the cost", exc)


def budgets_reconcile(*, idle_seconds: float) -> int:
    """Rebuild this month's totals untouched for ``idle_seconds`` from the ledger."""
    month = month_of(timezone.now())
    now = int(time.time())
    rebuilt = 0
    for key in redis_client().scan_iter(match=_KEY.format(scope="*", owner_id="*", month=month)):
        _, _, scope, owner_id, _ = key.decode().split(":")
        spent = ledger_spent_usd(scope=scope, owner_id=int(owner_id), month=month)
        rebuilt += _script(_REBUILD_IDLE_LUA)(keys=[key], args=[
            now - idle_seconds, _nano(spent, rounding=ROUND_HALF_EVEN), now])
    return rebuilt
