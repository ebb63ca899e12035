"""The Models page (staff): the chat and embedding models every process uses, each
tried before it is saved."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from aistack.accounts.sessions import signed_in_user
from aistack.ai import PAGE_MODEL_PREFIX, chat_models, embedding_models, model_spec
from aistack.ai.backends.local import EMBEDDING_MODELS
from aistack.ai.backends.openai import EMBEDDING_DIMENSIONS
from aistack.ai.models import ModelSetup, Provider
from aistack.ai.setup import (
    OLLAMA_DEFAULT,
    TestOutcome,
    model_setup_clear,
    model_setup_embedding_save,
    model_setup_get,
    model_setup_key_state,
    model_setup_save,
    model_setup_test,
    ollama_models,
)
from aistack.errors import Invalid
from aistack.retrieval.reindex import embedding_switch_soon, reembed_failures_retry
from aistack.retrieval.selectors import active_space, spaces_building, spaces_live_models
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.web.forms import EmbeddingModelForm, ModelSetupForm, add_service_errors
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


def _embedding_initial(setup: ModelSetup | None) -> dict[str, str]:
    name = setup.embedding_model if setup is not None else ""
    if name.startswith(PAGE_MODEL_PREFIX):
        name = name.removeprefix(PAGE_MODEL_PREFIX).partition(":")[2]
    return {"embedding_model": name}


def _embedding_choices(setup: ModelSetup | None, ollama: list[str]) -> list[str]:
    """Return the names offered in the embedding model's field."""
    offered = [f"local:{name}" for name in EMBEDDING_MODELS]
    provider = setup.provider if setup is not None else ""
    if provider == Provider.OLLAMA:
        offered += ollama
    elif provider == Provider.OPENAI:
        offered += sorted(name for name in EMBEDDING_DIMENSIONS if name.startswith("text-"))
    return offered


def _page(request: HttpRequest, form: ModelSetupForm | None = None, *,
          embedding_form: EmbeddingModelForm | None = None,
          outcome: TestOutcome | None = None) -> HttpResponse:
    setup = model_setup_get()
    form = form or ModelSetupForm(initial=_initial())
    embedding_form = embedding_form or EmbeddingModelForm(initial=_embedding_initial(setup))
    chain = chat_models.chain()
    ollama_address = settings.AI_PROVIDER_OPTIONS["ollama"].get("BASE_URL") or OLLAMA_DEFAULT
    ollama = ollama_models(ollama_address)
    status = form_status(form) if form.is_bound else form_status(embedding_form)
    return render(request, "web/models.html", {
        "form": form, "embedding_form": embedding_form, "setup": setup, "outcome": outcome,
        "key_state": model_setup_key_state(setup),
        "chat_model": chain[0].id, "fallbacks": [model.id for model in chain[1:]],
        "environment_model": model_spec(settings.AI_CHAT_MODELS["default"]),
        "environment_embedding": model_spec(settings.AI_EMBEDDING_MODELS["default"]),
        "embedding_model": embedding_models["default"].id,
        "embedding_choices": _embedding_choices(setup, ollama),
        "searching": active_space(), "building": spaces_building(),
        "ollama_address": ollama_address, "ollama_models": ollama,
    }, status=status)


@never_cache
@login_required
@sensitive_post_parameters("api_key")
def models_page(request: HttpRequest) -> HttpResponse:
    """Show the models in use; try a model (Test) or save it for every process (Save)."""
    _staff(request)
    user = signed_in_user(request)
    if request.method != "POST":
        return _page(request)
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
        setup = model_setup_save(**fields, fallbacks=form.cleaned_data["fallbacks"], user=user,
                                 connection_used_by=spaces_live_models())
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
    try:
        model_setup_clear(user=signed_in_user(request), connection_used_by=spaces_live_models())
    except Invalid as exc:
        messages.error(request, exc.message)
        return redirect("models")
    messages.success(request, "The chat models set in the environment apply again.")
    return redirect("models")


@never_cache
@login_required
@require_POST
def models_embedding(request: HttpRequest) -> HttpResponse:
    """Choose the embedding model: tried once, then every document is re-embedded by the
    workers, and search switches to it when they are done."""
    _staff(request)
    user = signed_in_user(request)
    form = EmbeddingModelForm(request.POST)
    if not form.is_valid():
        return _page(request, embedding_form=form)
    try:
        # A real call, which may cost: counted like any other.
        ai_rate_limit_hit(user=user)
        chosen = model_setup_embedding_save(
            embedding_model=form.cleaned_data["embedding_model"], user=user)
    except Invalid as exc:
        add_service_errors(form, exc)
        return _page(request, embedding_form=form)
    embedding_switch_soon()
    named = chosen or model_spec(settings.AI_EMBEDDING_MODELS["default"])
    searching = active_space()
    if searching is not None and searching.model == named:
        messages.success(request, f"Search uses {named}: nothing to re-embed.")
    else:
        messages.success(request, f"Search moves to {named} once every document has its "
                                  "vectors; until then it uses the current ones. Progress "
                                  "shows below.")
    return redirect("models")


@login_required
@require_POST
def models_embedding_retry(request: HttpRequest) -> HttpResponse:
    """Queue again the documents whose re-embedding failed."""
    _staff(request)
    retried = reembed_failures_retry()
    messages.success(request, f"{retried} document{pluralize(retried)} queued again.")
    return redirect("models")

