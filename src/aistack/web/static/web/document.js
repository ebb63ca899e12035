// The document page: the summary and the passages arrive as their jobs finish.
"use strict";

(() => {
  const section = document.getElementById("summary");
  const documentId = Number(section.dataset.document);
  const part = (name) => document.getElementById(`summary-${name}`);
  const url = `/api/v1/documents/${documentId}/summary`;

  function render(state) {
    section.dataset.status = state.status;
    const inFlight = state.status === "pending" || state.status === "processing";
    part("text").textContent = state.summary || "";
    part("text").hidden = !state.summary;
    part("placeholder").hidden = Boolean(state.summary) || state.status === "failed";
    part("refreshing").hidden = !(inFlight && state.stale);
    part("extractive").hidden = !(state.summary && state.extractive);
    part("error").textContent = `The summary could not be made: ${state.error}`;
    part("failed").hidden = state.status !== "failed";
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
      if (response.ok) render(await response.json());
    });
  }

  const inFlight = (status) => status === "pending" || status === "processing";
  const indexBadge = document.querySelector(`.badge[data-kind="documents.index"]`);
  let indexing = inFlight(indexBadge.dataset.status);

  window.aistack.onJob(section.dataset.since, (event) => {
    if (event.object_id !== documentId) return;
    window.aistack.updateBadges(event);
    if (event.kind === "documents.index") {
      // Passages change only when an index run ends: reload them then, not on replays.
      if (inFlight(event.status)) {
        indexing = true;
      } else if (indexing) {
        indexing = false;
        htmx.ajax("GET", section.dataset.chunksUrl, {target: "#chunks", swap: "outerHTML"});
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
