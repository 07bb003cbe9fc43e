// Desktop notifications for a batch's owner (opt-in): "Notify me" on the batch page asks the
// browser's permission, remembers the choice per batch, and then watches the live header
// (#batch-header: data-status, data-open-escalations) for the batch ending or a new escalation.
(function () {
  "use strict";
  var ENDED = { succeeded: 1, partial: 1, failed: 1, cancelled: 1 };

  function setup() {
    var button = document.getElementById("notify-toggle");
    if (!button || !("Notification" in window)) return;
    var batch = button.dataset.batch, name = button.dataset.name;
    var key = "spawner-notify-" + batch;
    var state = document.getElementById("notify-state");
    button.hidden = false;

    function on() { return localStorage.getItem(key) === "1" && Notification.permission === "granted"; }
    function show() {
      var active = on();
      button.setAttribute("aria-pressed", active ? "true" : "false");
      button.textContent = active ? "Stop notifying me" : "Notify me";
      state.textContent = Notification.permission === "denied"
        ? "(notifications are blocked for this site in the browser)"
        : active ? "(a desktop notification when the batch ends or escalates)" : "";
    }
    button.addEventListener("click", function () {
      if (on()) { localStorage.removeItem(key); show(); return; }
      Notification.requestPermission().then(function (answer) {
        if (answer === "granted") localStorage.setItem(key, "1");
        show();
      });
    });
    show();

    function read() {
      var header = document.getElementById("batch-header");
      if (!header) return null;
      return { status: header.dataset.status, open: parseInt(header.dataset.openEscalations || "0", 10) };
    }
    var last = read();
    function say(title, body) {
      if (!on()) return;
      var n = new Notification(title, { body: body, tag: "spawner-batch-" + batch + "-" + title });
      n.onclick = function () { window.focus(); n.close(); };
      document.dispatchEvent(new CustomEvent("spawner:notified", { detail: { title: title, body: body } }));
    }
    function check() {
      var now = read();
      if (!now || !last) { last = now || last; return; }
      if (now.status !== last.status && ENDED[now.status] && !ENDED[last.status]) {
        say("Batch #" + batch + " " + now.status, name + " ended: " + now.status + ".");
      }
      if (now.open > last.open) {
        say("Batch #" + batch + " needs a person", name + ": " + now.open + " open escalation" + (now.open === 1 ? "" : "s") + ".");
      }
      last = now;
    }
    // The header is swapped in whole by live updates: watch the page for it.
    new MutationObserver(check).observe(document.body, { childList: true, subtree: true, attributes: true,
      attributeFilter: ["data-status", "data-open-escalations"] });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
