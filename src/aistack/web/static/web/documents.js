// The documents list: status badges and titles follow the background jobs without a reload.
"use strict";

(() => {
  const list = document.getElementById("document-list");
  const announcer = document.getElementById("announcer");
  const finished = {complete: "finished", failed: "failed"};
  const work = {"documents.index": "Indexing", "documents.summary": "Summary"};

  window.aistack.onJob(list.dataset.liveSince, (event) => {
    window.aistack.updateBadges(event);
    window.aistack.updateTitles(event);
    const badge = document.querySelector(
      `.badge[data-document="${event.object_id}"][data-kind="${event.kind}"]`);
    if (!badge || !finished[event.status]) return;
    // Only endings are announced: every step of every job would drown the page out.
    const title = badge.closest("tr").querySelector("th").textContent.trim();
    announcer.textContent = `${work[event.kind] || "Work"} of ${title} ${finished[event.status]}.`;
  });
})();
