// The document page: the title, the summary and the passages arrive as their jobs finish.
"use strict";

(() => {
  const section = document.getElementById("summary");
  const documentId = Number(section.dataset.document);
  const part = (name) => document.getElementById(`summary-${name}`);
  const url = `/api/v1/documents/${documentId}/summary`;

  function render(state) {
    section.dataset.status = state.status;
    const inFlight = state.status === "pending" || state.status === "processing";
    // Rendered and sanitized by the server, like the rest of the page.
    part("text").innerHTML = state.summary_html || "";
    part("text").hidden = !state.summary;
    part("placeholder").hidden = Boolean(state.summary) || state.status === "failed";
    part("refreshing").hidden = !(inFlight && state.stale);
    part("extractive").hidden = !(state.summary && state.extractive);
    part("error").textContent = `The summary could not be made: ${state.error}`;
    part("failed").hidden = state.status !== "failed";
    // Writers only: viewers have neither.
    if (part("retry")) {
      part("retry").hidden = !state.retryable;
      part("instead").hidden = state.retryable;
    }
  }

  async function load() {
    const response = await fetch(url, {credentials: "same-origin"});
    if (response.ok) render(await response.json());
  }

  const retry = part("retry");
  if (retry) {
    retry.addEventListener("click", async () => {
      const response = await fetch(url, {method: "POST", credentials: "same-origin",
                                         headers: {"X-CSRFToken": window.aistack.csrfToken()}});
      // Refused (409): it can no longer succeed, and the state read says why.
      if (response.ok) render(await response.json());
      else load();
    });
  }

  const inFlight = (status) => status === "pending" || status === "processing";
  const indexBadge = document.querySelector(`.badge[data-kind="documents.index"]`);
  let indexing = inFlight(indexBadge.dataset.status);
  // What the page's <title> adds after the document's (see base.html).
  const titleSuffix = document.title.slice(document.title.lastIndexOf(" · "));

  window.aistack.onJob(section.dataset.since, (event) => {
    if (event.object_id !== documentId) return;
    window.aistack.updateBadges(event);
    window.aistack.updateTitles(event);
    if (event.title) document.title = event.title + titleSuffix;
    if (event.kind === "documents.index") {
      // Passages change only when an index run ends: reload them then, not on replays.
      if (inFlight(event.status)) {
        indexing = true;
      } else if (indexing) {
        indexing = false;
        htmx.ajax("GET", section.dataset.chunksUrl, {target: "#chunks", swap: "outerHTML"});
        // An upload whose text could not be read fails its summary too, without an event.
        if (event.status === "failed") load();
      }
      return;
    }
    if (event.kind !== "documents.summary") return;
    if (event.status === "complete" || event.status === "failed") {
      load();
    } else if (section.dataset.status === "complete") {
      // The document changed: keep showing the summary we have, marked as being refreshed.
      section.dataset.status = event.status;
      part("refreshing").hidden = !part("text").textContent;
    }
  });
})();
