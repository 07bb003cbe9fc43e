// The batch timeline: zoom and pan (buttons, Ctrl + wheel, drag, keys), dependency edges on demand.
// The server redraws the timeline as runs change (websocket); the zoom, the scroll and the
// edges toggle of each timeline are kept here and put back after every redraw.
(function () {
  "use strict";
  if (window.spawnerTimeline) { return; }
  var MIN = 1, MAX = 64;
  var views = {};  // timeline id -> {zoom, scroll, edges}

  function view(tl) {
    return views[tl.id] || (views[tl.id] = { zoom: 1, scroll: 0, edges: false });
  }
  function body(tl) { return tl.querySelector(".tl-body"); }

  // Ticks for the zoom: about six per screen width (the server drew six for the whole span).
  var STEPS = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400];
  function ticks(tl, zoom) {
    var axis = tl.querySelector(".axis[data-axis]");
    if (!axis) { return; }
    if (!axis.dataset.server) { axis.dataset.server = axis.innerHTML; }
    if (zoom === 1) { axis.innerHTML = axis.dataset.server; return; }
    var span = +axis.dataset.axis, step = STEPS[STEPS.length - 1];
    for (var i = 0; i < STEPS.length; i++) { if (span / zoom / STEPS[i] <= 6) { step = STEPS[i]; break; } }
    var html = "";
    for (var t = 0; t <= span + 1e-9; t += step) {
      var label = step < 60 ? (Math.round(t * 10) / 10) + " s" : (Math.round(t / 6) / 10) + " min";
      html += '<span style="left: ' + (100 * t / span).toFixed(3) + '%">' + label + "</span>";
    }
    axis.innerHTML = html;
  }

  function apply(tl) {
    var v = view(tl), b = body(tl);
    tl.style.setProperty("--zoom", v.zoom);
    ticks(tl, v.zoom);
    var label = tl.querySelector(".tl-zoom");
    if (label) { label.textContent = (Math.round(v.zoom * 10) / 10) + "×"; }
    var box = tl.querySelector("[data-edges]");
    if (box) { box.checked = v.edges; }
    if (b) { b.scrollLeft = v.scroll; }
    drawEdges(tl);
  }

  // Zoom by `factor`, keeping the time under `atX` (px from the body's left edge) in place.
  function zoom(tl, factor, atX) {
    var v = view(tl), b = body(tl);
    var next = Math.min(MAX, Math.max(MIN, v.zoom * factor));
    if (!b || next === v.zoom) { return; }
    var inner = tl.querySelector(".tl-inner");
    var keyWidth = (tl.querySelector(".lane-key") || { offsetWidth: 0 }).offsetWidth;
    var x = atX === undefined ? b.clientWidth / 2 : atX;
    var track = inner.offsetWidth - keyWidth;
    var t = (b.scrollLeft + x - keyWidth) / Math.max(track, 1);  // 0..1 along the time axis
    v.zoom = next;
    tl.style.setProperty("--zoom", next);
    ticks(tl, next);
    var newTrack = inner.offsetWidth - keyWidth;
    v.scroll = Math.max(0, t * newTrack + keyWidth - x);
    apply(tl);
  }

  function fit(tl) { var v = view(tl); v.zoom = 1; v.scroll = 0; apply(tl); }

  function drawEdges(tl) {
    var old = tl.querySelector(".tl-edges");
    if (old) { old.remove(); }
    if (!view(tl).edges) { return; }
    var inner = tl.querySelector(".tl-inner");
    var lanes = inner.querySelectorAll(".lane");
    var origin = inner.getBoundingClientRect();
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "tl-edges");
    svg.setAttribute("width", inner.scrollWidth);
    svg.setAttribute("height", inner.scrollHeight);
    svg.setAttribute("aria-hidden", "true");
    var d = [];
    function ends(lane) {
      var bars = lane.querySelectorAll(".bar");
      if (!bars.length) { return null; }
      var first = bars[0].getBoundingClientRect(), last = bars[bars.length - 1].getBoundingClientRect();
      return { start: first.left - origin.left, end: last.right - origin.left, y: first.top + first.height / 2 - origin.top };
    }
    var cache = [];
    for (var i = 0; i < lanes.length; i++) {
      var after = (lanes[i].dataset.after || "").split(" ");
      if (!after[0]) { continue; }
      var to = cache[i] === undefined ? (cache[i] = ends(lanes[i])) : cache[i];
      if (!to) { continue; }
      for (var j = 0; j < after.length; j++) {
        var k = +after[j];
        if (!lanes[k]) { continue; }
        var from = cache[k] === undefined ? (cache[k] = ends(lanes[k])) : cache[k];
        if (!from) { continue; }
        var mid = (from.end + to.start) / 2;
        d.push("M" + from.end + " " + from.y + "C" + mid + " " + from.y + " " + mid + " " + to.y + " " + to.start + " " + to.y);
      }
    }
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", d.join(""));
    svg.appendChild(path);
    inner.appendChild(svg);
  }

  function timelineOf(el) { return el && el.closest ? el.closest("[data-timeline]") : null; }

  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-zoom]");
    var tl = timelineOf(button);
    if (!tl) { return; }
    var how = button.dataset.zoom;
    if (how === "in") { zoom(tl, 2); } else if (how === "out") { zoom(tl, 0.5); } else { fit(tl); }
  });
  document.addEventListener("change", function (e) {
    if (!e.target.matches || !e.target.matches("[data-edges]")) { return; }
    var tl = timelineOf(e.target);
    if (tl) { view(tl).edges = e.target.checked; drawEdges(tl); }
  });
  document.addEventListener("wheel", function (e) {
    var b = e.target.closest && e.target.closest(".tl-body");
    var tl = timelineOf(b);
    if (!tl || !(e.ctrlKey || e.metaKey)) { return; }
    e.preventDefault();
    zoom(tl, e.deltaY < 0 ? 1.25 : 0.8, e.clientX - b.getBoundingClientRect().left);
  }, { passive: false });
  document.addEventListener("keydown", function (e) {
    var tl = timelineOf(e.target);
    if (!tl || !e.target.classList.contains("tl-body") || e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "+" || e.key === "=") { zoom(tl, 2); } else if (e.key === "-" || e.key === "_") { zoom(tl, 0.5); } else if (e.key === "0") { fit(tl); } else { return; }
    e.preventDefault();
  });
  document.addEventListener("scroll", function (e) {
    var tl = timelineOf(e.target);
    if (tl && e.target.classList && e.target.classList.contains("tl-body")) { view(tl).scroll = e.target.scrollLeft; }
  }, true);

  // Drag to pan (a mouse or a pen; touch screens pan natively).
  var drag = null;
  document.addEventListener("pointerdown", function (e) {
    var b = e.target.closest && e.target.closest(".tl-body");
    if (!b || e.pointerType === "touch" || e.button !== 0 || e.target.closest("a")) { return; }
    drag = { body: b, x: e.clientX, left: b.scrollLeft, moved: false };
  });
  document.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x;
    if (Math.abs(dx) > 3) { drag.moved = true; drag.body.classList.add("dragging"); }
    if (drag.moved) { drag.body.scrollLeft = drag.left - dx; }
  });
  document.addEventListener("pointerup", function () {
    if (drag) { drag.body.classList.remove("dragging"); drag = null; }
  });

  function restore() {
    var all = document.querySelectorAll("[data-timeline]");
    for (var i = 0; i < all.length; i++) { apply(all[i]); }
  }
  document.addEventListener("htmx:wsAfterMessage", restore);
  document.addEventListener("htmx:afterSwap", restore);
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", restore); } else { restore(); }
  window.spawnerTimeline = { zoom: zoom, fit: fit, views: views };
})();
