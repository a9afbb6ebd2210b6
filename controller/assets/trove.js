// Trove: the little JavaScript the pages use. No framework.
"use strict";

/** This page's CSRF token, for requests scripts make. */
function troveCsrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

/** The file page: copy the share link. */
function troveCopyLink() {
  const button = document.getElementById("copy-link");
  const input = document.getElementById("share-link");
  if (!button || !input) return;
  button.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (_) {
      // Plain HTTP on a LAN may have no clipboard API: the selected text can still be copied.
      document.execCommand && document.execCommand("copy");
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

/** What a failed request says, from its ApiErrorBody when there is one. */
function troveErrorMessage(xhr) {
  try {
    const body = JSON.parse(xhr.responseText);
    if (body && body.message) return body.message;
  } catch (_) { /* not JSON */ }
  return "the upload failed (HTTP " + xhr.status + ")";
}

/**
 * The share page: send the file as the raw body of POST /share/upload with the form's
 * fields in the query, show progress from upload.onprogress, then go to the file's page.
 */
function troveShareForm() {
  const form = document.getElementById("share");
  if (!form) return;
  const progress = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const error = document.getElementById("upload-error");
  const done = document.getElementById("upload-done");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = form.elements["file"].files[0];
    if (!file) return;
    const q = new URLSearchParams();
    q.set("name", file.name);
    for (const key of ["title", "kind", "tags", "description"]) {
      const v = form.elements[key].value.trim();
      if (v) q.set(key, v);
    }
    if (form.elements["private"].checked) q.set("private", "1");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.hidden = true;
    done.hidden = true;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = "Uploading " + file.name + "…";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/share/upload?" + q.toString());
    xhr.setRequestHeader("X-CSRF-Token", troveCsrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) {
        progress.value = Math.floor((100 * e.loaded) / e.total);
        if (e.loaded >= e.total) status.textContent = "Storing on the appliances…";
      }
    };
    xhr.onload = () => {
      button.disabled = false;
      if (xhr.status >= 200 && xhr.status < 300) {
        const r = JSON.parse(xhr.responseText);
        progress.value = 100;
        status.textContent = "";
        const a = done.querySelector("a");
        a.href = r.url;
        a.textContent = r.url;
        done.hidden = false;
        window.location.assign(r.url);
      } else {
        progress.hidden = true;
        status.textContent = "";
        error.textContent = troveErrorMessage(xhr);
        error.hidden = false;
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      progress.hidden = true;
      status.textContent = "";
      error.textContent = "the upload failed: the connection to the controller broke";
      error.hidden = false;
    };
    xhr.send(file);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  troveCopyLink();
  troveShareForm();
});

/* fleet */
