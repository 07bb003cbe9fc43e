// Live durations: an element with data-clock="<seconds>" shows a duration; with data-running it
// grows by one second a second from the moment it appeared. Every server update (an htmx swap of a
// fragment) brings fresh figures, so the clocks re-sync to the server at each update.
// Notices can be closed; a notice tied to an action goes away when the state it spoke of changes.
(function () {
  "use strict";

  // The same format as the `seconds` template filter: 0.4 s, 12.3 s, 2 min 05 s, 1 h 02 min.
  function format(value) {
    if (value < 60) { return value.toFixed(1) + " s"; }
    var total = Math.round(value), minutes = Math.floor(total / 60), secs = total % 60;
    if (minutes < 60) { return minutes + " min " + (secs < 10 ? "0" : "") + secs + " s"; }
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + " h " + (minutes < 10 ? "0" : "") + minutes + " min";
  }

  function tick() {
    var now = performance.now();
    document.querySelectorAll("[data-clock][data-running]").forEach(function (el) {
      if (el._clockFrom === undefined) {
        el._clockFrom = now;
        el._clockBase = parseFloat(el.dataset.clock) || 0;
      }
      el.textContent = format(el._clockBase + (now - el._clockFrom) / 1000);
    });
  }

  // Notices: a close button on each; one that speaks of a state (data-about) is dropped when a
  // server update changes that part of the page.
  function drop(el) {
    if (el.id === "notice") {  // buttons answer into #notice: keep an empty one
      var empty = document.createElement("div");
      empty.id = "notice";
      el.replaceWith(empty);
    } else {
      el.remove();
    }
  }
  function closable() {
    document.querySelectorAll(".notice:not([data-closable])").forEach(function (el) {
      if (!el.textContent.trim()) { return; }
      el.dataset.closable = "1";
      var close = document.createElement("button");
      close.type = "button";
      close.className = "notice-close link";
      close.setAttribute("aria-label", "Dismiss this notice");
      close.title = "Dismiss";
      close.textContent = "×";
      close.addEventListener("click", function () { drop(el); });
      el.appendChild(close);
    });
  }

  // data-about="run-12:3 batch-header": the notice is stale once each element named has ended (for
  // "id:n", ended on an attempt after n). The live page then says what happened.
  var ENDED = ["succeeded", "failed", "timed_out", "lost", "cancelled", "skipped", "partial"];
  function stale(el) {
    return el.dataset.about.split(" ").every(function (item) {
      var parts = item.split(":"), target = document.getElementById(parts[0]);
      if (!target || !target.dataset.status) { return false; }
      var ended = ENDED.indexOf(target.dataset.status) !== -1;
      if (parts.length > 1) { return ended && parseInt(target.dataset.attempt || "0", 10) > parseInt(parts[1], 10); }
      return ended;
    });
  }
  function dropStale() {
    document.querySelectorAll(".notice[data-about]").forEach(function (el) {
      if (stale(el)) { drop(el); }
    });
  }

  // A table wider than the screen says so: "scroll →" above it and a fade on its right edge.
  function scrollHints() {
    document.querySelectorAll(".table-wrap").forEach(function (wrap) {
      var scrolls = wrap.scrollWidth > wrap.clientWidth + 2;
      wrap.classList.toggle("scrolls", scrolls);
      wrap.classList.toggle("at-end", wrap.scrollLeft + wrap.clientWidth >= wrap.scrollWidth - 2);
      var hint = wrap.previousElementSibling;
      if (!hint || !hint.classList.contains("scroll-hint")) {
        if (!scrolls) { return; }
        hint = document.createElement("p");
        hint.className = "scroll-hint";
        hint.setAttribute("aria-hidden", "true");
        hint.textContent = "more columns: scroll →";
        wrap.parentNode.insertBefore(hint, wrap);
      }
      hint.classList.toggle("shown", scrolls);
    });
  }
  document.addEventListener("scroll", function (e) {
    var el = e.target;
    if (el && el.classList && el.classList.contains("table-wrap")) {
      el.classList.toggle("at-end", el.scrollLeft + el.clientWidth >= el.scrollWidth - 2);
    }
  }, true);
  window.addEventListener("resize", scrollHints);

  function settle() {
    closable();
    scrollHints();
    dropStale();
    tick();
  }

  document.addEventListener("DOMContentLoaded", settle);
  document.addEventListener("htmx:afterSettle", settle);
  document.addEventListener("htmx:wsAfterMessage", settle);
  setInterval(tick, 1000);
})();
