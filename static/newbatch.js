// The new-batch page: focus follows "+ Add task" and "Remove", and the error summary's links
// take you to the field (opening its card, and in the YAML box, selecting the line).
(function () {
  "use strict";

  function focusField(el) {
    if (!el) return;
    const card = el.closest("details");
    if (card && !card.open) card.open = true;
    el.focus({ preventScroll: true });
    el.scrollIntoView({ block: "center" });
  }

  function selectLine(textarea, line) {
    const lines = textarea.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const end = start + (lines[line - 1] || "").length;
    textarea.setSelectionRange(start, end);
    // Scroll the box so the line shows (about one line-height per line).
    const height = parseFloat(getComputedStyle(textarea).lineHeight) || 18;
    textarea.scrollTop = Math.max(0, (line - 3) * height);
  }

  document.addEventListener("click", function (event) {
    const link = event.target.closest(".error-summary a[data-focus]");
    if (link) {
      const target = document.getElementById(link.dataset.focus);
      if (!target) return;
      event.preventDefault();
      const field = target.matches("input, select, textarea, button")
        ? target
        : target.querySelector("input, select, textarea");
      focusField(field || target);
      if (field && field.tagName === "TEXTAREA" && link.dataset.line) selectLine(field, Number(link.dataset.line));
      history.replaceState(null, "", "#" + link.dataset.focus);
      return;
    }
    const remove = event.target.closest("[data-remove-row]");
    if (remove) {
      const row = remove.closest(".task-row");
      const before = row.previousElementSibling;
      const after = row.nextElementSibling;
      row.remove();
      const next = before || after;
      focusField(next ? next.querySelector("input:not([type=hidden]), select, textarea") : document.getElementById("add-task"));
    }
  });

  // A Launch button disabled because the previewed plan cannot launch comes back once the batch changes.
  function changed(event) {
    const form = event.target.form || event.target.closest("form");
    if (!form) return;
    form.querySelectorAll("button[data-refused]").forEach(function (button) {
      button.disabled = false;
      button.removeAttribute("data-refused");
      button.removeAttribute("title");
    });
  }
  document.addEventListener("input", changed);
  document.addEventListener("change", changed);

  // A row added by "+ Add task": its first field takes the focus.
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target.id !== "task-rows") return;
    const rows = event.target.querySelectorAll(".task-row");
    const last = rows[rows.length - 1];
    if (last) focusField(last.querySelector("input:not([type=hidden])"));
  });

  // Back from the server with problems: the summary takes the focus, so it is read first.
  document.addEventListener("DOMContentLoaded", function () {
    const summary = document.getElementById("spec-errors");
    if (summary) {
      summary.focus({ preventScroll: true });
      summary.scrollIntoView({ block: "start" });
    }
  });
})();
