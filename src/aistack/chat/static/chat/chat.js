// The chat page: each reply streams in as the model writes it, then shows rendered, with
// the sources it cites; the server keeps the conversation.
"use strict";

(() => {
  const form = document.getElementById("chat-form");
  const turns = document.getElementById("turns");
  const input = form.message;
  const button = form.querySelector("button[type=submit]");

  function addTurn(role, content) {
    turns.querySelector(".empty")?.remove();
    const item = document.createElement("li");
    item.className = `turn ${role}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = content;
    item.append(who, text);
    turns.append(item);
    item.scrollIntoView({block: "nearest"});
    return item;
  }

  function note(turn, text, className) {
    const line = document.createElement("p");
    line.className = `note ${className}`;
    line.textContent = text;
    turn.append(line);
  }

  // The sources a reply cites, each the target of its [n] links.
  function listSources(turn, done) {
    if (!done.citations.length) return;
    const list = document.createElement("ol");
    list.className = "citations";
    list.setAttribute("aria-label", "Sources");
    for (const citation of done.citations) {
      const item = document.createElement("li");
      item.id = `${done.anchor}${citation.n}`;
      item.value = citation.n;
      const link = document.createElement("a");
      link.href = `/documents/${citation.document_id}/#chunk-${citation.chunk_id}`;
      link.textContent = citation.title || "Document";
      const snippet = document.createElement("blockquote");
      snippet.textContent = citation.snippet;
      item.append(link, snippet);
      list.append(item);
    }
    turn.append(list);
  }

  function finish(turn, done) {
    // Rendered from Markdown and sanitized by the server.
    const text = turn.querySelector(".text");
    text.innerHTML = done.html;
    text.classList.add("rendered");
    listSources(turn, done);
    const described = done.extractive
      ? `${done.model} · built-in extractive model, quoting rather than writing` : done.model;
    note(turn, described, "model");
    if (form.conversation.value !== String(done.conversation)) {
      // The first message started the conversation: give it its own address.
      form.conversation.value = done.conversation;
      history.replaceState(null, "", done.url);
      showConversation(done.url);
    }
  }

  // Show a conversation just started as its own page does: its title, its place among
  // the conversations, and what can be done with it (rename, delete). Taken from that
  // page, so they are the server's own; if it cannot be read, a reload shows them.
  async function showConversation(url) {
    try {
      const response = await fetch(url, {credentials: "same-origin"});
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const selector of [".conversation .page-head", "nav.conversations"]) {
        const fresh = page.querySelector(selector);
        if (fresh) document.querySelector(selector)?.replaceWith(fresh);
      }
      document.title = page.title;
      confirmDeleting();
    } catch (_) {
      // Left as it is: the conversation is saved either way.
    }
  }

  // A message sent while a reply is still streaming goes out when that reply ends.
  let queued = false;

  async function send() {
    const message = input.value.trim();
    if (!message) return;
    if (button.disabled) {
      queued = true;
      return;
    }
    const body = new FormData(form);
    addTurn("user", message);
    const reply = addTurn("assistant", "");
    const text = reply.querySelector(".text");
    input.value = "";
    button.disabled = true;
    turns.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(form.action, {
        method: "POST", credentials: "same-origin", body,
        headers: {"Accept": "text/event-stream", "X-CSRFToken": window.aistack.csrfToken()},
      });
      if (!response.ok) {
        note(reply, await window.aistack.errorMessage(response), "error");
        return;
      }
      await window.aistack.readEvents(response, (name, data) => {
        if (name === "token") text.append(data.text);
        else if (name === "done") finish(reply, data);
        else if (name === "error") note(reply, data.error.message, "error");
      });
    } catch (_) {
      note(reply, "The reply was cut off: the connection to the server failed.", "error");
    } finally {
      button.disabled = false;
      turns.setAttribute("aria-busy", "false");
      input.focus();
    }
    if (queued) {
      queued = false;
      send();
    }
  }

  // Deleting cannot be undone: ask first (without scripts, the button deletes at once).
  function confirmDeleting() {
    document.getElementById("conversation-delete")?.addEventListener("submit", (submitted) => {
      if (!window.confirm(submitted.currentTarget.dataset.confirm)) submitted.preventDefault();
    });
  }
  confirmDeleting();

  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    send();
  });
  input.addEventListener("keydown", (pressed) => {
    if (pressed.key === "Enter" && !pressed.shiftKey && !pressed.isComposing) {
      pressed.preventDefault();
      send();
    }
  });
})();
