// Live stage logs over server-sent events (the session cookie authenticates the EventSource).
// Lines are added as text nodes: ANSI colour codes become class names, never markup.
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

  function appendLine(pre, text) {
    var classes = [];
    var last = 0;
    var frag = document.createDocumentFragment();
    function add(raw) {
      var clean = raw.replace(OTHER, "");
      if (!clean) { return; }
      var span = document.createElement("span");
      if (classes.length) { span.className = classes.join(" "); }
      span.textContent = clean;
      frag.appendChild(span);
    }
    var m;
    SGR.lastIndex = 0;
    while ((m = SGR.exec(text)) !== null) {
      add(text.slice(last, m.index));
      classes = classesFor(m[1], classes);
      last = SGR.lastIndex;
    }
    add(text.slice(last));
    frag.appendChild(document.createTextNode("\n"));
    pre.appendChild(frag);
  }

  function follow(pre) {
    var url = pre.getAttribute("data-stream");
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url, { withCredentials: true });
    var cleared = false;
    source.addEventListener("line", function (event) {
      if (!cleared) { pre.textContent = ""; cleared = true; }
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      appendLine(pre, event.data);
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("attempt", function () {
      pre.textContent = ""; cleared = true;
    });
    source.addEventListener("end", function (event) {
      pre.setAttribute("data-ended", event.data);
      source.close();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre.log[data-stream]").forEach(follow);
  });
})();
