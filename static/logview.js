// The run page's log viewer: follow the live tail (or stay put), open a linked line (#L1234,
// #a2-L1234 for an earlier attempt) on its page, highlighted.
(function () {
  "use strict";

  var following = true;
  var pendingReveal = false;
  var LINE = /^#(?:a(\d+)-)?L(\d+)$/;

  function section() { return document.getElementById("output"); }
  function box() { return document.getElementById("log-scroll"); }
  function live() {
    var s = section();
    return s && s.dataset.mode === "tail" && s.dataset.current === "1";
  }
  function toBottom() {
    var b = box();
    if (b && following && live()) { b.scrollTop = b.scrollHeight; }
  }
  function showFollow() {
    var tick = document.getElementById("log-follow");
    if (tick) { tick.checked = following && live(); }
  }
  function linesUrl(attempt) {
    var s = section();
    if (!s || !s.dataset.linesUrl) { return null; }
    return s.dataset.linesUrl.replace(/\/attempts\/\d+\/lines\/$/, "/attempts/" + attempt + "/lines/");
  }

  // Reveal a line: open the section it is folded in, scroll to it, mark it. Load its page first
  // when it is not on screen (or belongs to another attempt).
  function reveal(hash, load) {
    var m = LINE.exec(hash || "");
    var s = section();
    if (!m || !s) { return; }
    var current = s.dataset.current === "1" ? s.dataset.attempt : s.dataset.runAttempt;
    var attempt = m[1] || current || s.dataset.attempt;
    var el = document.getElementById(hash.slice(1));
    if (el && s.dataset.attempt === String(attempt)) {
      following = false;
      showFollow();
      document.querySelectorAll(".log-lines .l.hl").forEach(function (x) { x.classList.remove("hl"); });
      el.classList.add("hl");
      for (var p = el.parentElement; p && p !== s; p = p.parentElement) {
        if (p.tagName === "DETAILS") { p.open = true; }
      }
      el.scrollIntoView({ block: "center" });
      return;
    }
    var url = linesUrl(attempt);
    if (load !== false && url && window.htmx) {
      following = false;
      pendingReveal = true;
      htmx.ajax("GET", url + "?line=" + m[2], { target: "#output", swap: "outerHTML" }).then(function () {
        pendingReveal = false;
        reveal(hash, false);
      });
    }
  }

  // Live updates: the tail is swapped in only while it is shown and followed; a page, an earlier
  // attempt or a reader who stopped following stays as it is.
  document.addEventListener("htmx:oobBeforeSwap", function (e) {
    var id = e.target && e.target.id;
    if ((id === "run-tail" || id === "output") && !(live() && following)) {
      e.preventDefault();
      var s = section();
      if (s && id === "run-tail") { s.dataset.newOutput = "1"; }
    }
  });
  document.addEventListener("htmx:wsAfterMessage", function () { showFollow(); toBottom(); });
  document.addEventListener("htmx:afterSwap", function (e) {
    // Back on the live tail (its button, or the current attempt picked): follow it again.
    if (e.target && e.target.id === "output" && live() && !pendingReveal) { following = true; }
    showFollow();
    toBottom();
  });
  document.addEventListener("htmx:afterSettle", function () { showFollow(); toBottom(); });

  // Scrolling up stops following; back at the bottom follows again.
  document.addEventListener("scroll", function (e) {
    var b = e.target;
    if (b && b.id === "log-scroll" && live()) {
      var atBottom = b.scrollHeight - b.scrollTop - b.clientHeight < 24;
      if (atBottom !== following) { following = atBottom; showFollow(); }
    }
  }, true);

  document.addEventListener("change", function (e) {
    if (!e.target || e.target.id !== "log-follow") { return; }
    following = e.target.checked;
    var s = section();
    if (following && s && !live() && s.dataset.linesUrl && window.htmx) {
      htmx.ajax("GET", s.dataset.linesUrl + "?tail=1", { target: "#output", swap: "outerHTML" });
    } else if (following && s && s.dataset.newOutput && window.htmx) {
      htmx.ajax("GET", s.dataset.linesUrl + "?tail=1", { target: "#output", swap: "outerHTML" });
    }
    toBottom();
  });

  // Line links and search results: mark the line, keep the address shareable.
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("#output a[href^='#']");
    if (!a || !LINE.test(a.getAttribute("href"))) { return; }
    e.preventDefault();
    var hash = a.getAttribute("href");
    history.replaceState(null, "", hash);
    reveal(hash);
  });
  window.addEventListener("hashchange", function () { reveal(location.hash); });
  document.addEventListener("DOMContentLoaded", function () {
    if (LINE.test(location.hash)) { reveal(location.hash); } else { toBottom(); }
  });
})();
