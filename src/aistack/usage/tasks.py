"""Periodic upkeep of usage: the dashboard's rollups and the budgets' spending state."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from aistack.usage.budgets import budgets_reconcile
from aistack.usage.rollups import usage_rollup

logger = logging.getLogger(__name__)


@shared_task(name="aistack.usage.tasks.rollup")
def rollup() -> None:
    """Bring the daily rollups up to date and rebuild idle budgets from the ledger."""
    run = usage_rollup()
    rebuilt = budgets_reconcile(idle_seconds=settings.AI_BUDGET_IDLE_SECONDS)
    if run.days or rebuilt:
        logger.info("usage rolled up for %d day(s); %d idle budget(s) rebuilt from the ledger",
                    len(run.days), rebuilt)
