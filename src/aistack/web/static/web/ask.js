// The ask page: the answer streams in as the model writes it, then its sources are listed.
"use strict";

(() => {
  const form = document.getElementById("ask-form");
  const section = document.getElementById("answer");
  const text = document.getElementById("answer-text");
  const unknown = document.getElementById("answer-unknown");
  const failure = document.getElementById("answer-error");
  const model = document.getElementById("answer-model");
  const extractive = document.getElementById("answer-extractive");
  const sources = document.getElementById("sources");
  const citations = document.getElementById("citations");
  const button = form.querySelector("button[type=submit]");

  function reset() {
    section.hidden = false;
    for (const element of [unknown, failure, extractive, sources]) element.hidden = true;
    text.textContent = "";
    text.classList.remove("rendered");
    model.textContent = "";
    citations.replaceChildren();
  }

  function fail(message) {
    failure.textContent = message;
    failure.hidden = false;
  }

  async function titleOf(documentId) {
    const response = await fetch(`/api/v1/documents/${documentId}`, {credentials: "same-origin"});
    return response.ok ? (await response.json()).title : `Document ${documentId}`;
  }

  function listSources(cited) {
    const titles = new Map();
    for (const citation of cited) {
      const item = document.createElement("li");
      item.id = `citation-${citation.n}`;
      item.value = citation.n;
      const link = document.createElement("a");
      link.href = `/documents/${citation.document_id}/#chunk-${citation.chunk_id}`;
      link.textContent = `Document ${citation.document_id}`;
      const snippet = document.createElement("blockquote");
      // Escaped by the server, which only adds <mark> around the matched words.
      snippet.innerHTML = citation.snippet;
      item.append(link, snippet);
      citations.append(item);
      if (!titles.has(citation.document_id)) titles.set(citation.document_id, titleOf(citation.document_id));
      titles.get(citation.document_id).then((title) => { link.textContent = title; });
    }
    sources.hidden = cited.length === 0;
  }

  function finish(done) {
    const cited = done.citations || [];
    // The streamed text, now rendered from Markdown by the server (sanitized there), with
    // each cited [n] a link to its source below.
    text.innerHTML = done.answer_html;
    text.classList.add("rendered");
    listSources(cited);
    unknown.hidden = done.answered;
    if (!done.model) {
      model.textContent = "No model was asked: nothing in your documents is close enough to the question.";
    } else {
      model.textContent = `Answered by ${done.model}.`;
    }
    extractive.hidden = !done.extractive;
  }

  form.addEventListener("submit", async (submitted) => {
    submitted.preventDefault();
    const question = form.question.value.trim();
    if (!question) return;
    reset();
    button.disabled = true;
    text.setAttribute("aria-busy", "true");
    section.dataset.state = "streaming";
    try {
      const response = await fetch(form.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "text/event-stream",
                  "X-CSRFToken": window.aistack.csrfToken()},
        body: JSON.stringify({question, stream: true, workspace: Number(form.dataset.workspace)}),
      });
      if (!response.ok) {
        fail(await window.aistack.errorMessage(response));
        return;
      }
      await window.aistack.readEvents(response, (name, data) => {
        if (name === "token") text.append(data.text);
        else if (name === "done") finish(data);
        else if (name === "error") fail(data.error.message);
      });
    } catch (_) {
      fail("The answer was cut off: the connection to the server failed. Please try again.");
    } finally {
      button.disabled = false;
      text.setAttribute("aria-busy", "false");
      section.dataset.state = "done";
    }
  });
  // Enter asks; Shift+Enter starts a new line, as in chat.
  form.question.addEventListener("keydown", (pressed) => {
    if (pressed.key === "Enter" && !pressed.shiftKey && !pressed.isComposing) {
      pressed.preventDefault();
      if (!button.disabled) form.requestSubmit();
    }
  });
})();
