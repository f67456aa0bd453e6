// lmtune ui: sortable tables, the compare picker, live SVG curves polled from
// /api/runs/NAME/metrics?after=N every second, the chat panes (answers streamed as JSON lines), and
// /new's steps. No library: a line chart is a few dozen lines. Every POST carries X-Lmtune-UI.
(function () {
  "use strict";
  var COLORS = ["#3867d6", "#eb3b5a", "#20bf6b", "#f7b731", "#8854d0", "#0fb9b1", "#fa8231", "#4b6584"];
  var SVG = "http://www.w3.org/2000/svg";

  function sortKey(td) {
    var v = td.getAttribute("data-sort");
    v = (v === null ? td.textContent : v).trim();
    return /^-?\d+(\.\d*)?(e[-+]?\d+)?$/i.test(v) ? parseFloat(v) : v.toLowerCase();
  }

  function makeSortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc");
        Array.prototype.forEach.call(heads, function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortKey(a.cells[col]), y = sortKey(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(lo, hi, n) {
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    step *= err >= 5 ? 10 : err >= 2.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }

  function fmt(v) {
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(1) : String(+v.toPrecision(4));
  }

  // series: [{label, points: [[x, y], ...]}]; the plot element records how many points it shows.
  function draw(plot, series) {
    var W = 350, H = 190, L = 52, R = 10, T = 8, B = 26;
    var all = [];
    series.forEach(function (s) { all = all.concat(s.points); });
    plot.setAttribute("data-points", String(all.length));
    plot.textContent = "";
    if (!all.length) { plot.appendChild(document.createTextNode("no points yet")); return; }
    var xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { var pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    ticks(y0, y1, 4).forEach(function (v) {
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#eceef3"}));
      svg.appendChild(el("text", {x: L - 4, y: sy(v) + 4, "text-anchor": "end"}, fmt(v)));
    });
    ticks(x0, x1, 5).forEach(function (v) {
      svg.appendChild(el("text", {x: sx(v), y: H - 8, "text-anchor": "middle"}, fmt(v)));
    });
    svg.appendChild(el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#c9ced8"}));
    series.forEach(function (s, i) {
      if (!s.points.length) return;
      var color = COLORS[i % COLORS.length];
      var pts = s.points.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
      svg.appendChild(el("polyline", {points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.8,
                                      "data-series": s.label}));
      if (s.points.length < 40) s.points.forEach(function (p) {
        svg.appendChild(el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color}));
      });
    });
    plot.appendChild(svg);
    if (series.length > 1) {
      var legend = document.createElement("div");
      legend.className = "legend";
      series.forEach(function (s, i) {
        var item = document.createElement("span"), swatch = document.createElement("i");
        swatch.style.background = COLORS[i % COLORS.length];
        item.appendChild(swatch);
        item.appendChild(document.createTextNode(s.label));
        legend.appendChild(item);
      });
      plot.appendChild(legend);
    }
  }

  // One poller per run: fetch the rows after the ones held, redraw every chart, again in a second.
  function live(section) {
    var runs = JSON.parse(section.getAttribute("data-runs"));
    var plots = Array.prototype.slice.call(section.querySelectorAll(".plot"));
    var rows = {}, next = {};
    runs.forEach(function (r) { rows[r] = []; next[r] = 0; });
    function redraw() {
      plots.forEach(function (plot) {
        var key = plot.getAttribute("data-key");
        draw(plot, runs.map(function (r) {
          var pts = rows[r].filter(function (m) { return typeof m[key] === "number" && typeof m.step === "number"; })
                           .map(function (m) { return [m.step, m[key]]; });
          return {label: r, points: pts};
        }));
      });
    }
    function poll(run) {
      fetch("/api/runs/" + encodeURIComponent(run) + "/metrics?after=" + next[run], {cache: "no-store"})
        .then(function (resp) { if (!resp.ok) throw new Error(resp.status); return resp.json(); })
        .then(function (data) {
          if (data.reset) rows[run] = [];
          if (data.rows.length || data.reset) { rows[run] = rows[run].concat(data.rows); redraw(); }
          next[run] = data.next;
          var steps = document.getElementById("steps");
          if (steps && runs.length === 1 && data.steps !== null) steps.textContent = data.steps;
          if (runs.length === 1) showStatus(data.status, data.resume, data.detail);
        })
        .catch(function () { /* the server may be restarting: try again */ })
        .then(function () { setTimeout(function () { poll(run); }, 1000); });
    }
    redraw();
    runs.forEach(poll);
  }

  function picker() {
    var button = document.getElementById("compare-picked");
    if (!button) return;
    button.addEventListener("click", function () {
      var names = Array.prototype.slice.call(document.querySelectorAll("input.pick:checked"))
        .map(function (c) { return c.value; });
      if (names.length) location.href = "/compare?runs=" + names.map(encodeURIComponent).join(",");
    });
  }

  function $(id) { return document.getElementById(id); }

  function post(url, body, raw) {
    return fetch(url, {method: "POST", headers: raw ? {"X-Lmtune-UI": "1"} :
                       {"X-Lmtune-UI": "1", "Content-Type": "application/json"},
                       body: raw ? body : JSON.stringify(body || {})})
      .then(function (resp) {
        return resp.json().catch(function () { return {error: "HTTP " + resp.status}; })
          .then(function (data) { if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status)); return data; });
      });
  }

  // The run page: status (with the resume command) follows the poll; stop and resume buttons.
  function showStatus(state, resume, detail) {
    var box = $("status");
    if (!box || !state) return;
    var span = box.querySelector(".state");
    if (span.textContent !== state) { span.textContent = state; span.className = "state " + state; }
    var how = box.querySelector(".detail");
    if (how) how.textContent = detail ? "(" + detail + ")" : "";
    var code = box.querySelector("code");
    if (resume && !code) { box.appendChild(document.createElement("br")); code = document.createElement("code"); box.appendChild(code); }
    if (code) code.textContent = resume || "";
    if ($("stop-run")) $("stop-run").hidden = state !== "running";
    if ($("resume-run")) $("resume-run").hidden = state !== "stopped";
  }

  function controls() {
    var box = $("controls");
    if (!box) return;
    var run = box.getAttribute("data-run");
    function act(what) {
      $("action-note").textContent = what + "...";
      post("/api/runs/" + encodeURIComponent(run) + "/" + what)
        .then(function (d) { $("action-note").textContent = what + ": sent (pid " + d.pid + ")"; })
        .catch(function (e) { $("action-note").textContent = e.message; });
    }
    $("stop-run").addEventListener("click", function () { act("stop"); });
    $("resume-run").addEventListener("click", function () { act("resume"); });
  }

  // /chat: one message to each picked model; each answer streams into its pane.
  function chat() {
    var form = $("chat-form");
    if (!form) return;
    var history = {a: [], b: []};
    function bubble(pane, role, text) {
      var div = document.createElement("div");
      div.className = "msg " + role;
      div.textContent = text;
      $("transcript-" + pane).appendChild(div);
      return div;
    }
    function ask(pane, pick, max) {
      var out = bubble(pane, "assistant", ""), text = "";
      out.classList.add("streaming");
      var body = {run: pick.slice(pick.indexOf(":") + 1), base: pick.indexOf("base:") === 0,
                  messages: history[pane], max_tokens: max};
      return fetch("/api/chat", {method: "POST", headers: {"X-Lmtune-UI": "1", "Content-Type": "application/json"},
                                 body: JSON.stringify(body)}).then(function (resp) {
        if (!resp.ok) return resp.json().then(function (d) { throw new Error(d.error || resp.status); });
        var reader = resp.body.getReader(), decoder = new TextDecoder(), buf = "";
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) return;
            buf += decoder.decode(r.value, {stream: true});
            var lines = buf.split("\n");
            buf = lines.pop();
            lines.forEach(function (line) {
              if (!line) return;
              var ev = JSON.parse(line);
              if (ev.text) { text += ev.text; out.textContent = text; }
              if (ev.error) throw new Error(ev.error);
              if (ev.done) out.setAttribute("data-finish", ev.done);
            });
            return pump();
          });
        }
        return pump();
      }).then(function () {
        history[pane].push({role: "assistant", content: text});
      }).catch(function (e) {
        out.classList.add("error");
        out.textContent = text + " [" + e.message + "]";
        history[pane].pop();
      }).then(function () { out.classList.remove("streaming"); out.setAttribute("data-done", "1"); });
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var message = $("chat-input").value;
      if (!message.trim()) return;
      var max = parseInt($("max-tokens").value, 10) || 128;
      $("send").disabled = true;
      var jobs = ["a", "b"].filter(function (p) { return $("model-" + p).value; }).map(function (p) {
        history[p].push({role: "user", content: message});
        bubble(p, "user", message);
        return ask(p, $("model-" + p).value, max);
      });
      $("chat-input").value = "";
      Promise.all(jobs).then(function () { $("send").disabled = false; });
    });
    $("clear-chat").addEventListener("click", function () {
      history = {a: [], b: []};
      $("transcript-a").textContent = ""; $("transcript-b").textContent = "";
    });
    ["a", "b"].forEach(function (p) {
      $("model-" + p).addEventListener("change", function () { history[p] = []; $("transcript-" + p).textContent = ""; });
    });
  }

  // /new: data file (picked or uploaded) -> data check + advise -> config -> start, follow, stop.
  function newRun() {
    if (!$("new-run")) return;
    fetch("/api/data").then(function (r) { return r.json(); }).then(function (d) {
      d.files.forEach(function (f) { var o = document.createElement("option"); o.value = f; $("data-files").appendChild(o); });
      $("folders").textContent = "data files are read from: " + d.folders.join(", ");
    });
    function note(id, text, bad) { $(id).textContent = text; $(id).classList.toggle("bad", !!bad); }
    $("upload").addEventListener("change", function () {
      var file = $("upload").files[0];
      if (!file) return;
      note("upload-note", "uploading " + file.name + "...");
      post("/api/upload?name=" + encodeURIComponent(file.name), file, true)
        .then(function (d) { $("data-path").value = d.path; note("upload-note", "uploaded: " + d.path); })
        .catch(function (e) { note("upload-note", e.message, true); });
    });
    $("inspect").addEventListener("click", function () {
      note("inspect-note", "running lmtune data check and lmtune advise...");
      $("inspect").disabled = true;
      post("/api/new/inspect", {name: $("run-name").value, path: $("data-path").value}).then(function (d) {
        $("check-out").textContent = d.check; $("advise-out").textContent = d.advise;
        if (d.config) $("config").value = d.config;
        note("inspect-note", d.check_ok && d.advise_ok ? "done" : "see the problems below", !(d.check_ok && d.advise_ok));
      }).catch(function (e) { note("inspect-note", e.message, true); })
        .then(function () { $("inspect").disabled = false; });
    });
    function config() { return {name: $("run-name").value, config: $("config").value}; }
    $("validate").addEventListener("click", function () {
      post("/api/new/validate", config()).then(function () { note("config-note", "ok: lmtune's config loader accepts it"); })
        .catch(function (e) { note("config-note", e.message, true); });
    });
    var following = null;
    function follow(name) {
      fetch("/api/runs/" + encodeURIComponent(name) + "/log", {cache: "no-store"}).then(function (r) { return r.json(); })
        .then(function (d) {
          $("train-log").textContent = d.log;
          return fetch("/api/runs/" + encodeURIComponent(name)).then(function (r) { return r.ok ? r.json() : null; })
            .then(function (run) {
              var state = run ? run.status : (d.process === "running" ? "starting" : d.process || "starting");
              var text = state + (run && run.resume ? ": resume with " + run.resume : "");
              $("run-state").textContent = text;
              $("run-state").setAttribute("data-state", state);
              $("stop-new").hidden = !(d.process === "running" || state === "running");
              if (run) $("run-state").innerHTML = "";
              if (run) {
                var a = document.createElement("a"); a.href = "/runs/" + encodeURIComponent(name); a.textContent = name;
                $("run-state").appendChild(a); $("run-state").appendChild(document.createTextNode(" " + text));
              }
            });
        }).catch(function () {}).then(function () { if (following === name) setTimeout(function () { follow(name); }, 1000); });
    }
    $("start").addEventListener("click", function () {
      var c = config();
      note("config-note", "starting...");
      post("/api/new/start", c).then(function (d) {
        note("config-note", "started: pid " + d.pid);
        following = d.name; follow(d.name);
      }).catch(function (e) { note("config-note", e.message, true); });
    });
    $("stop-new").addEventListener("click", function () {
      if (following) post("/api/runs/" + encodeURIComponent(following) + "/stop").catch(function (e) { note("config-note", e.message, true); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
    var charts = document.getElementById("charts");
    if (charts) live(charts);
    picker();
    controls();
    chat();
    newRun();
  });
})();
