// The upload page: many files and whole folders, chosen or dropped, each sent to the API on
// its own (a few at a time) with its own progress bar and its own result.
"use strict";

(() => {
  // Uploads in flight at once. The browser opens six connections to a server and the
  // event stream holds one; more uploads in parallel would not finish sooner, only hold
  // more of the server's workers.
  const PARALLEL = 3;
  // How long to wait after a 429 that does not say (one from a proxy, say).
  const DEFAULT_WAIT_SECONDS = 5;

  const form = document.getElementById("upload-form");
  const filesInput = form.querySelector("input[type=file][name=file]");
  const folderInput = document.getElementById("folder-input");
  const zone = document.getElementById("drop-zone");
  const section = document.getElementById("uploads");
  const list = document.getElementById("upload-list");
  const summary = document.getElementById("uploads-summary");
  const template = document.getElementById("upload-item");
  const maxBytes = Number(form.dataset.maxBytes);
  const extensions = new Set(form.dataset.extensions.split(","));
  const mimeTypes = new Set(form.dataset.mimeTypes.split(","));

  const items = [];
  const byDocument = new Map();
  const tally = {waiting: 0, sending: 0, failed: 0, uploaded: 0};
  const queue = [];
  let sending = 0;
  // After a 429 nothing is sent before this time (ms), and one timer wakes the queue.
  let resumeAt = 0;
  let timer = null;
  let listening = false;

  // Without this script the form sends one file; with it, any number and whole folders.
  filesInput.multiple = true;
  document.getElementById("files-label").textContent = "Choose files";
  document.getElementById("folder-picker").hidden = false;
  document.getElementById("drop-hint").hidden = false;
  document.getElementById("upload-submit").hidden = true;
  form.addEventListener("submit", (event) => event.preventDefault());

  function size(bytes) {
    if (bytes < 1024) return `${bytes} bytes`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // Inside a chosen folder, dot files and folders (.git, .DS_Store) are not documents.
  const dotted = (name) => name.startsWith(".");
  const hiddenInside = (path) => path.split("/").slice(1).some(dotted);

  function show(item, state, text) {
    const counted = (s) => (s === "ready" || s === "unreadable" ? "uploaded" : s);
    if (item.state) tally[counted(item.state)] -= 1;
    tally[counted(state)] += 1;
    item.state = state;
    item.row.dataset.state = state;
    item.status.textContent = text;
    item.retry.hidden = true;
    const left = tally.waiting + tally.sending;
    summary.textContent = `${tally.uploaded} of ${items.length} files uploaded`
      + (tally.failed ? `, ${tally.failed} not uploaded` : "")
      + (left ? `, ${left} to go.` : ".");
  }

  function track(path, file) {
    const row = template.content.firstElementChild.cloneNode(true);
    const item = {file, path, row, state: null, bar: row.querySelector("progress"),
                  status: row.querySelector(".upload-status"),
                  retry: row.querySelector(".upload-retry")};
    row.querySelector(".upload-name").textContent = path;
    if (file) row.querySelector(".upload-size").textContent = size(file.size);
    item.bar.setAttribute("aria-label", `Upload of ${path}`);
    item.retry.setAttribute("aria-label", `Try uploading ${path} again`);
    item.retry.addEventListener("click", () => enqueue(item));
    items.push(item);
    list.append(row);
    section.hidden = false;
    return item;
  }

  function add(file, path) {
    const item = track(path, file);
    const refusal = refused(file);
    if (refusal) fail(item, refusal, false);
    else enqueue(item);
  }

  // What the server would refuse anyway, refused before a byte is sent.
  function refused(file) {
    const dot = file.name.lastIndexOf(".");
    const extension = dot > 0 ? file.name.slice(dot).toLowerCase() : "";
    // The server takes a file by its extension or by the type the browser gives it.
    if (extension && !extensions.has(extension) && !mimeTypes.has(file.type)) {
      return `${extension} files are not supported. `
        + "Upload text, Markdown, HTML, PDF or Word (.docx) files.";
    }
    if (file.size > maxBytes) {
      return `The file is larger than the ${form.dataset.maxSize} limit. `
        + "Split it into smaller files and upload those.";
    }
    return null;
  }

  function fail(item, message, retryable) {
    show(item, "failed", `Not uploaded: ${message}`);
    // Offered only when another attempt may succeed: a refusal would be repeated.
    item.retry.hidden = !retryable;
  }

  function enqueue(item) {
    item.bar.value = 0;
    show(item, "waiting", "Waiting");
    queue.push(item);
    pump();
  }

  function pump() {
    const wait = resumeAt - Date.now();
    if (wait > 0) {
      if (timer === null) timer = setTimeout(() => { timer = null; pump(); }, wait);
      return;
    }
    while (sending < PARALLEL && queue.length) {
      const item = queue.shift();
      sending += 1;
      send(item).then(() => {
        sending -= 1;
        pump();
      });
    }
  }

  // XMLHttpRequest rather than fetch: only it reports an upload's progress.
  function send(item) {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("POST", form.dataset.url);
      request.setRequestHeader("X-CSRFToken", window.aistack.csrfToken());
      request.responseType = "json";
      request.upload.addEventListener("progress", (event) => {
        if (!event.lengthComputable || !event.total) return;
        const percent = Math.round((event.loaded / event.total) * 100);
        item.bar.value = percent;
        item.bar.textContent = `${percent}%`;
        item.status.textContent = `Uploading… ${percent}%`;
      });
      request.addEventListener("load", () => {
        answered(item, request);
        resolve();
      });
      request.addEventListener("error", () => {
        fail(item, "The connection to the server failed.", true);
        resolve();
      });
      const body = new FormData();
      body.append("workspace", form.dataset.workspace);
      body.append("file", item.file, item.file.name);
      show(item, "sending", "Uploading… 0%");
      request.send(body);
    });
  }

  function answered(item, request) {
    const body = request.response;
    if (request.status === 201) {
      uploaded(item, body);
      return;
    }
    if (request.status === 429) {
      // Over the rate limit: this file and every one after it wait, then go on by themselves.
      const seconds = Number(request.getResponseHeader("Retry-After")) || DEFAULT_WAIT_SECONDS;
      resumeAt = Math.max(resumeAt, Date.now() + seconds * 1000);
      queue.unshift(item);
      show(item, "waiting", `Waiting for the upload rate limit; going on in ${seconds} s.`);
      return;
    }
    const message = body && body.error && body.error.message
      ? body.error.message : `The server answered ${request.status}.`;
    // A server error may pass; a refusal (a 4xx) would be repeated.
    fail(item, message, request.status >= 500);
  }

  function uploaded(item, created) {
    item.bar.value = 100;
    item.bar.textContent = "100%";
    const link = item.row.querySelector(".upload-document");
    link.href = `/documents/${created.id}/`;
    link.textContent = created.title;
    link.dataset.titleOf = created.id;
    const badge = item.row.querySelector(".badge");
    badge.dataset.document = created.id;
    badge.dataset.status = created.embedding_status;
    badge.textContent = window.aistack.statusLabel(created.embedding_status);
    item.row.querySelector(".upload-result").hidden = false;
    byDocument.set(created.id, item);
    show(item, "uploaded", "Uploaded. Its text is being read and indexed…");
    listen();
  }

  // The uploads' index jobs: each row shows its document's title and whether it was read.
  function listen() {
    if (listening) return;
    listening = true;
    window.aistack.onJob(form.dataset.since, (event) => {
      window.aistack.updateBadges(event);
      window.aistack.updateTitles(event);
      const item = byDocument.get(event.object_id);
      if (!item || event.kind !== "documents.index") return;
      if (event.status === "complete") {
        show(item, "ready", "Uploaded and indexed.");
      } else if (event.status === "failed") {
        show(item, "unreadable", `Uploaded, but it could not be indexed: ${event.error}`);
      }
    });
  }

  filesInput.addEventListener("change", () => {
    for (const file of filesInput.files) add(file, file.name);
    filesInput.value = "";
  });
  folderInput.addEventListener("change", () => {
    for (const file of folderInput.files) {
      const path = file.webkitRelativePath || file.name;
      if (!hiddenInside(path)) add(file, path);
    }
    folderInput.value = "";
  });

  // A folder's entries are read in batches until one comes back empty.
  function entriesOf(folder) {
    const reader = folder.createReader();
    return new Promise((resolve, reject) => {
      const all = [];
      const next = () => reader.readEntries((batch) => {
        if (!batch.length) {
          resolve(all);
          return;
        }
        all.push(...batch);
        next();
      }, reject);
      next();
    });
  }

  async function walk(entry) {
    const path = entry.fullPath.replace(/^\//, "");
    try {
      if (entry.isFile) {
        add(await new Promise((resolve, reject) => entry.file(resolve, reject)), path);
        return;
      }
      // In name order, as a file manager lists them: folders come in no order of their own.
      const children = await entriesOf(entry);
      children.sort((one, other) => one.name.localeCompare(other.name));
      for (const child of children) {
        if (!dotted(child.name)) await walk(child);
      }
    } catch (_) {
      fail(track(path, null), "It could not be read from this computer.", false);
    }
  }

  async function dropped(transfer) {
    // Entries are taken while the drop event lasts; what they hold is read afterwards.
    const entries = [...transfer.items].filter((item) => item.kind === "file")
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (!entries.length || entries.includes(null)) {
      for (const file of transfer.files) add(file, file.name);
      return;
    }
    for (const entry of entries) await walk(entry);
  }

  // The whole page takes drops: a file dropped beside the zone must not replace the page.
  const carriesFiles = (event) => event.dataTransfer && event.dataTransfer.types.includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    dropped(event.dataTransfer);
  });

  // Leaving the page stops the uploads still queued or in flight.
  window.addEventListener("beforeunload", (event) => {
    if (tally.waiting + tally.sending) event.preventDefault();
  });
})();
