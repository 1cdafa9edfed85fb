// Live stage logs over server-sent events (the session cookie authenticates the EventSource).
// Lines are added as text nodes: ANSI colour codes become class names, never markup.
// Each line has an anchor (#<stage>-L<n>); the search box marks matching lines.
(function () {
  "use strict";
  var SGR = /\x1b\[([0-9;]{0,32})m/g;
  var OTHER = /\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|.)?/g;

  function classesFor(params, current) {
    var out = current.slice();
    var codes = params ? params.split(";") : ["0"];
    codes.forEach(function (p) {
      var code = parseInt(p || "0", 10);
      if (code === 0) { out = []; }
      else if (code === 1) { out = out.filter(function (c) { return c !== "ansi-bold"; }); out.push("ansi-bold"); }
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        out = out.filter(function (c) { return c.indexOf("ansi-fg") !== 0; }); out.push("ansi-fg" + code);
      } else if (code >= 40 && code <= 47) {
        out = out.filter(function (c) { return c.indexOf("ansi-bg") !== 0; }); out.push("ansi-bg" + code);
      }
    });
    return out;
  }

  function lineNumber(pre, lastEventId) {
    // Event IDs are "<attempt>:<line>" with 0-based lines; anchors count from 1.
    var parts = (lastEventId || "").split(":");
    var n = parseInt(parts[parts.length - 1], 10);
    if (isNaN(n)) { n = pre.querySelectorAll("span.line").length; }
    return n + 1;
  }

  function appendLine(pre, text, number) {
    var classes = [];
    var last = 0;
    var anchorId = (pre.getAttribute("data-anchor") || "log") + "-L" + number;
    var line = document.createElement("span");
    line.className = "line";
    line.id = anchorId;
    var link = document.createElement("a");
    link.className = "ln";
    link.href = "#" + anchorId;
    link.setAttribute("aria-label", "Line " + number);
    link.textContent = String(number);
    line.appendChild(link);
    function add(raw) {
      var clean = raw.replace(OTHER, "");
      if (!clean) { return; }
      var span = document.createElement("span");
      if (classes.length) { span.className = classes.join(" "); }
      span.textContent = clean;
      line.appendChild(span);
    }
    var m;
    SGR.lastIndex = 0;
    while ((m = SGR.exec(text)) !== null) {
      add(text.slice(last, m.index));
      classes = classesFor(m[1], classes);
      last = SGR.lastIndex;
    }
    add(text.slice(last));
    line.appendChild(document.createTextNode("\n"));
    pre.appendChild(line);
    markSearch(line);
    if (window.location.hash === "#" + anchorId) { target(line); }
  }

  function target(line) {
    var details = line.closest("details");
    if (details) { details.open = true; }
    line.classList.add("target");
    line.scrollIntoView({ block: "center" });
  }

  var query = "";
  function markSearch(line) {
    var hit = query && line.textContent.toLowerCase().indexOf(query) !== -1;
    line.classList.toggle("hit", !!hit);
    return hit;
  }

  function search(input, counter) {
    query = input.value.trim().toLowerCase();
    var hits = 0;
    document.querySelectorAll("pre.log span.line").forEach(function (line) {
      if (markSearch(line)) {
        hits += 1;
        var details = line.closest("details");
        if (details) { details.open = true; }
      }
    });
    counter.textContent = query ? hits + (hits === 1 ? " matching line" : " matching lines") : "";
    var first = document.querySelector("pre.log span.line.hit");
    if (first) { first.scrollIntoView({ block: "nearest" }); }
  }

  // A browser keeps about six connections per server: at most MAX_STREAMS logs are followed at
  // once, the others wait their turn (a stage's stream ends when the stage does).
  var MAX_STREAMS = 3;
  var waiting = [];
  var open = 0;
  function next() {
    while (open < MAX_STREAMS && waiting.length) { open += 1; follow(waiting.shift()); }
  }
  function done() { open -= 1; next(); }

  function follow(pre) {
    var url = pre.getAttribute("data-stream");
    if (!url || !window.EventSource) { done(); return; }
    var source = new EventSource(url, { withCredentials: true });
    var finished = false;
    function release() { if (!finished) { finished = true; done(); } }
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) { release(); }
    });
    var cleared = false;
    var stage = pre.closest("li.stage");
    var label = stage ? stage.querySelector("[data-stage-status]") : null;
    function show(status) {
      if (!label) { return; }
      label.textContent = status.replace(/_/g, " ");
      label.className = "status status-" + status;
    }
    source.addEventListener("line", function (event) {
      if (!cleared) { pre.textContent = ""; cleared = true; show("running"); }
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      appendLine(pre, event.data, lineNumber(pre, event.lastEventId));
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("attempt", function () {
      pre.textContent = ""; cleared = true;
    });
    source.addEventListener("end", function (event) {
      pre.setAttribute("data-ended", event.data);
      if (/^[a-z_]{1,20}$/.test(event.data)) { show(event.data); }
      source.close();
      release();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre.log[data-stream]").forEach(function (pre) { waiting.push(pre); });
    next();
    var form = document.querySelector("form[data-log-search]");
    if (form) {
      var input = form.querySelector("input");
      var counter = form.querySelector("[data-search-count]");
      form.addEventListener("submit", function (event) { event.preventDefault(); search(input, counter); });
      input.addEventListener("input", function () { search(input, counter); });
    }
    function toHash() {
      if (window.location.hash.indexOf("-L") === -1) { return; }
      document.querySelectorAll("span.line.target").forEach(function (l) { l.classList.remove("target"); });
      var line = document.getElementById(window.location.hash.slice(1));
      if (line) { target(line); }
    }
    window.addEventListener("hashchange", toHash);
    toHash();
  });
})();
