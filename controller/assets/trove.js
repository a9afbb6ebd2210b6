// Trove: the little JavaScript the pages use. No framework.
"use strict";

/** This page's CSRF token, for requests scripts make. */
function troveCsrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}
