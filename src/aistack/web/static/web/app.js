// Shared by every page: job events, status badges and titles, reading streamed answers.
"use strict";

window.aistack = (() => {
  let source = null;
  const listeners = [];

  // One event stream per page, however many parts of it listen.
  function onJob(since, listener) {
    listeners.push(listener);
    if (source) return;
    source = new EventSource(`/api/v1/events?since=${encodeURIComponent(since)}`);
    source.addEventListener("job", (message) => {
      const event = JSON.parse(message.data);
      for (const each of listeners) each(event);
    });
  }

  function statusLabel(status) {
    return status.charAt(0).toUpperCase() + status.slice(1);
  }

  function updateBadges(event) {
    const selector = `.badge[data-document="${event.object_id}"][data-kind="${event.kind}"]`;
    for (const badge of document.querySelectorAll(selector)) {
      badge.dataset.status = event.status;
      badge.textContent = statusLabel(event.status);
      badge.title = event.error || "";
    }
  }

  // Names follow the events too: an upload takes its title once its text is read.
  function updateTitles(event) {
    if (!event.title) return;
    for (const element of document.querySelectorAll(`[data-title-of="${event.object_id}"]`)) {
      element.textContent = event.title;
    }
  }

  function csrfToken() {
    const field = document.querySelector("[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function parseBlock(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? {name, data: JSON.parse(data.join("\n"))} : null;
  }

  // EventSource only sends GET requests: answers are POSTed, so their stream is read here.
  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) onEvent(event.name, event.data);
      }
    }
  }

  // What a failed request tells the reader, whatever shape its body has.
  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) { /* not JSON: fall through to the status */ }
    return `The request failed (${response.status}). Please try again.`;
  }

  function flash(text, kind) {
    const region = document.getElementById("flashes");
    if (!region) return;
    const line = document.createElement("p");
    line.className = `flash ${kind}`;
    line.textContent = text;
    region.replaceChildren(line);
  }

  document.addEventListener("htmx:responseError", (event) => {
    const status = event.detail.xhr.status;
    const messages = {403: "You don't have permission to do that.",
                      404: "That is no longer there; reload the page.",
                      413: "That file is larger than the upload limit."};
    flash(messages[status] || `That did not work (error ${status}). Please try again.`, "error");
  });
  document.addEventListener("htmx:sendError", () => {
    flash("The server could not be reached. Check your connection and try again.", "error");
  });

  return {onJob, updateBadges, updateTitles, statusLabel, csrfToken, readEvents, errorMessage};
})();
