"""What the pages share: htmx requests, redirects and form statuses."""

from __future__ import annotations

from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails


class HtmxRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it."""

    htmx: HtmxDetails


def redirect_to(request: HtmxRequest, url: str) -> HttpResponse:
    """Send the browser to ``url``, whether the request came from htmx or a plain form."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def form_status(form: BaseForm) -> int:
    """Return the status a page with ``form`` answers with."""
    # 422 tells htmx (configured in base.html) to show the form with its errors.
    return 422 if form.errors else 200
