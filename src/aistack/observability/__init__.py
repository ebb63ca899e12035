"""Metrics, structured logs and request ids for every aistack process.

prometheus_client decides where metric values live when it is first imported, from
the ``PROMETHEUS_MULTIPROC_DIR`` variable: set here, before any module of this package
imports it, so every process (web workers, Celery workers and their forks) writes its
values to files in one directory that ``/metrics`` sums up.
"""

from __future__ import annotations

import os

from django.conf import settings

settings.PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.PROMETHEUS_MULTIPROC_DIR)
