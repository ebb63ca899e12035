"""The Models page (staff): the chat model every process uses, tried before it is saved."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from aistack.accounts.sessions import signed_in_user
from aistack.ai import chat_models, embedding_models, model_spec
from aistack.ai.setup import (
    OLLAMA_DEFAULT,
    TestOutcome,
    model_setup_clear,
    model_setup_get,
    model_setup_key_state,
    model_setup_save,
    model_setup_test,
    ollama_models,
)
from aistack.errors import Invalid
from aistack.retrieval.selectors import spaces_building
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.web.forms import ModelSetupForm, add_service_errors
from aistack.web.htmx import form_status


def _staff(request: HttpRequest) -> None:
    if not signed_in_user(request).is_staff:
        raise PermissionDenied("Only administrators choose the models.")


def _initial() -> dict[str, str]:
    setup = model_setup_get()
    if setup is None or not setup.chat_model:
        return {"provider": "openai", "fallbacks": "local:extractive"}
    return {"provider": setup.provider, "base_url": setup.base_url,
            "chat_model": setup.chat_model, "fallbacks": setup.fallbacks}


def _page(request: HttpRequest, form: ModelSetupForm, *,
          outcome: TestOutcome | None = None) -> HttpResponse:
    setup = model_setup_get()
    chain = chat_models.chain()
    ollama_address = settings.AI_PROVIDER_OPTIONS["ollama"].get("BASE_URL") or OLLAMA_DEFAULT
    return render(request, "web/models.html", {
        "form": form, "setup": setup, "outcome": outcome,
        "key_state": model_setup_key_state(setup),
        "chat_model": chain[0].id, "fallbacks": [model.id for model in chain[1:]],
        "environment_model": model_spec(settings.AI_CHAT_MODELS["default"]),
        "embedding_model": embedding_models["default"].id,
        "building": spaces_building(),
        "ollama_address": ollama_address, "ollama_models": ollama_models(ollama_address),
    }, status=form_status(form))


@never_cache
@login_required
@sensitive_post_parameters("api_key")
def models_page(request: HttpRequest) -> HttpResponse:
    """Show the models in use; try a model (Test) or save it for every process (Save)."""
    _staff(request)
    user = signed_in_user(request)
    if request.method != "POST":
        return _page(request, ModelSetupForm(initial=_initial()))
    form = ModelSetupForm(request.POST)
    if not form.is_valid():
        return _page(request, form)
    fields = {name: form.cleaned_data[name]
              for name in ("provider", "base_url", "api_key", "chat_model")}
    try:
        if request.POST.get("action") == "test":
            # A real call, which may cost: counted like any other.
            ai_rate_limit_hit(user=user)
            return _page(request, form, outcome=model_setup_test(**fields, user=user))
        setup = model_setup_save(**fields, fallbacks=form.cleaned_data["fallbacks"], user=user)
    except Invalid as exc:
        add_service_errors(form, exc)
        return _page(request, form)
    messages.success(request, f"Every process now uses {setup.chat_model} "
                              f"({setup.get_provider_display()}) for chat, answers and "
                              "summaries (within a few seconds).")
    return redirect("models")


@login_required
@require_POST
def models_clear(request: HttpRequest) -> HttpResponse:
    """Forget the page's models: the environment's apply again."""
    _staff(request)
    model_setup_clear(user=signed_in_user(request))
    messages.success(request, "The models set in the environment apply again.")
    return redirect("models")
