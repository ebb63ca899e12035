// The upload form: a progress bar fed by the upload's own progress events.
"use strict";

document.addEventListener("htmx:xhr:progress", (event) => {
  const form = event.target.closest("#upload-form");
  if (!form || !event.detail.lengthComputable || !event.detail.total) return;
  const bar = form.querySelector("#upload-progress");
  const percent = Math.round((event.detail.loaded / event.detail.total) * 100);
  bar.closest(".progress").hidden = false;
  bar.value = percent;
  bar.textContent = `${percent}%`;
});
