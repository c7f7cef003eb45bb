/* Progressive enhancement only: every page works without this file.
 *
 * 1. Tell the server the browser's time zone (a cookie), so times show in local time.
 * 2. A context pane that htmx swapped in as <dialog open data-modal> becomes a real modal
 *    (backdrop, focus trap, Esc), and is removed when closed so the next open fetches it fresh.
 */
(function () {
  "use strict";

  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var cookie = "portal_tz=" + encodeURIComponent(zone);
    if (zone && document.cookie.split("; ").indexOf(cookie) === -1) {
      document.cookie = cookie + "; path=/; max-age=31536000; SameSite=Lax";
    }
  } catch (e) {
    /* no Intl: the server shows UTC */
  }

  function openModals(root) {
    var dialogs = root.querySelectorAll ? root.querySelectorAll("dialog[data-modal][open]") : [];
    Array.prototype.forEach.call(dialogs, function (dialog) {
      if (dialog.dataset.shown || typeof dialog.showModal !== "function") return;
      dialog.dataset.shown = "1";
      dialog.close();
      dialog.showModal();
      // After a refused submit, start at the first field with an error; else at the first field.
      var first =
        dialog.querySelector(".has-error input, .has-error textarea, .has-error select") ||
        dialog.querySelector("[autofocus], input:not([type=hidden]), select, textarea");
      if (first) first.focus();
    });
  }

  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail.elt;
    openModals(elt.parentNode || document);
  });

  // A closed pane goes back to its empty placeholder (same id), ready to be opened again.
  document.addEventListener(
    "close",
    function (event) {
      var dialog = event.target;
      if (!dialog.matches || !dialog.matches("dialog[data-modal]")) return;
      if (dialog.open) return; // the close() in openModals, already reopened as a modal
      var placeholder = document.createElement("div");
      placeholder.id = dialog.id;
      dialog.replaceWith(placeholder);
    },
    true
  );
})();
