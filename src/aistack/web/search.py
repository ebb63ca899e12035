"""Search and ask pages."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from aistack.accounts.sessions import current_place
from aistack.retrieval.selectors import GOOD_MATCH_SIMILARITY, SearchHit, SearchMode
from aistack.retrieval.services import SEARCH_RESULTS, search
from aistack.usage.ratelimits import ai_rate_limit_hit
from aistack.usage.types import Attribution
from aistack.web.forms import SearchForm
from aistack.web.htmx import form_status


@login_required
def search_page(request: HttpRequest) -> HttpResponse:
    """Search the current workspace's passages and link each hit to its place."""
    place = current_place(request)
    data = request.GET.copy() if request.GET else None
    if data is not None:
        data.setdefault("mode", SearchMode.HYBRID.value)
    form = SearchForm(data)
    results: list[SearchHit] = []
    query = ""
    mode = SearchMode.HYBRID
    if form.is_valid() and form.cleaned_data["q"].strip():
        query = form.cleaned_data["q"].strip()
        mode = SearchMode(form.cleaned_data["mode"])
        # A text search asks no model.
        if mode != SearchMode.TEXT:
            ai_rate_limit_hit(user=request.user)
        results = search(workspace_ids=[place.workspace.pk], query=query, k=SEARCH_RESULTS,
                         mode=mode, attribution=Attribution(feature="search",
                                                            user_id=request.user.pk,
                                                            workspace_id=place.workspace.pk))
    return render(request, "web/search.html", {
        "place": place, "form": form, "query": query, "results": results,
        "matched_well": any(hit.good_match for hit in results),
        "words_searched": mode != SearchMode.VECTOR,
        "good_match_similarity": GOOD_MATCH_SIMILARITY,
    }, status=form_status(form))


@login_required
def ask_page(request: HttpRequest) -> HttpResponse:
    """Ask a question; the answer streams in from the answers API, with its sources."""
    return render(request, "web/ask.html", {"place": current_place(request)})
