"""The API tokens page: make tokens, limited if need be, see them, revoke them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from aistack.accounts.permissions import readable_workspaces
from aistack.accounts.selectors import api_token_list
from aistack.accounts.services import api_token_create, api_token_revoke
from aistack.accounts.sessions import signed_in_user
from aistack.web.forms import TokenForm
from aistack.web.htmx import form_status


def _page(request: HttpRequest, form: TokenForm, *, raw: str = "") -> HttpResponse:
    return render(request, "web/tokens.html", {
        "form": form, "tokens": api_token_list(user=signed_in_user(request)), "raw": raw,
    }, status=form_status(form))


# A new token's secret waits here for the page the browser is sent to next, which takes it
# out: shown once, and a reload neither shows it again nor makes another token.
_NEW_TOKEN = "tokens:new"  # noqa: S105 - a session key


@never_cache
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """List the user's API tokens; make a new one, shown once."""
    user = signed_in_user(request)
    workspaces = readable_workspaces(user=user).order_by("name")
    form = TokenForm(request.POST or None, workspaces=workspaces)
    if request.method != "POST":
        return _page(request, form, raw=request.session.pop(_NEW_TOKEN, ""))
    if not form.is_valid():
        return _page(request, form)
    token, raw = api_token_create(user=user, name=form.cleaned_data["name"],
                                  workspace=form.cleaned_data["workspace"],
                                  read_only=form.cleaned_data["read_only"])
    request.session[_NEW_TOKEN] = raw
    messages.success(request, f"Made the token {token.name}. Copy it now: it is not shown again.")
    return redirect("tokens")


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of the user's tokens."""
    token = api_token_revoke(user=signed_in_user(request), token_id=token_id)
    messages.success(request, f"Revoked the token {token.name} ({token.prefix}…).")
    return redirect("tokens")
