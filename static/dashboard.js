// Small behaviours htmx does not cover. Everything else is server-rendered.
(function () {
  "use strict";

  // The "live" badge in the header: on while every websocket of the page (the page's own and
  // the header's) is open.
  var closed = new Set();
  function showLive() { document.body.dataset.live = closed.size ? "off" : "on"; }
  document.addEventListener("htmx:wsOpen", function (e) { closed.delete(e.target); showLive(); });
  document.addEventListener("htmx:wsClose", function (e) {
    closed.add(e.target);
    showLive();
    // The ws extension retries 1006 and 1011-1013 itself; a server going away (1001)
    // or closing without a code (1005) should come back too. Every connect sends a snapshot.
    var code = e.detail && e.detail.event && e.detail.event.code;
    if ((code === 1001 || code === 1005) && e.detail.socketWrapper) {
      setTimeout(function () { e.detail.socketWrapper.reconnect(); }, 1000 + Math.random() * 2000);
    }
  });

  // Follow the output as it grows, unless the reader scrolled up to look at something.
  var follow = true;
  document.addEventListener("scroll", function (e) {
    var el = e.target;
    if (el && el.id === "run-tail") {
      follow = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    }
  }, true);
  function toBottom() {
    var tail = document.getElementById("run-tail");
    if (tail && follow) { tail.scrollTop = tail.scrollHeight; }
  }
  document.addEventListener("htmx:wsAfterMessage", toBottom);
  document.addEventListener("DOMContentLoaded", toBottom);

  // Filter selects apply at once.
  document.addEventListener("change", function (e) {
    var form = e.target.closest && e.target.closest("form[data-autosubmit]");
    if (form) { form.requestSubmit(); }
  });
})();
