// The grid of index.html: every image of the run, filtered, searched and sorted in the page.
// Plain JavaScript, no library; the data come from data/index.js (window.ATLAS_INDEX), whose rows
// hold their fields by position (see atlas.site.tables.grid_data). Text goes in with textContent only.
(function () {
  "use strict";
  var data = window.ATLAS_INDEX;
  var grid = document.getElementById("grid");
  if (!data || !grid) { return; }
  var ID = 0, SLUG = 1, M = 2, K = 3, LABEL = 4, INDEX = 5, FAILED = 7, S0 = 8;
  var rows = data.rows;
  var KINDS = data.kinds, FILTER = KINDS.indexOf("filter");
  var classGroup = data.class_group || {};
  // Each row's groups of classes: a class's own, a pair's or group's every member's; a filter none.
  var rowGroups = rows.map(function (r) {
    var gs = [];
    if (r[K] !== FILTER) {
      r[INDEX].forEach(function (c) {
        var g = classGroup[c];
        if (g !== undefined && gs.indexOf(g) < 0) { gs.push(g); }
      });
    }
    return gs;
  });
  var q = document.getElementById("q"), method = document.getElementById("method"),
      kind = document.getElementById("kind"), sort = document.getElementById("sort"),
      group = document.getElementById("group"),
      order = document.getElementById("order"), count = document.getElementById("count");

  // Numbers as the pages print them (atlas.formatting): probabilities as percentages, 3 significant digits.
  var MISSING = "\u2013", PERCENT = "\u00a0%";
  function g3(v) { return String(Number(v.toPrecision(3))); }  // 3 significant digits, no trailing zeros
  function exp3(v) {
    var parts = v.toExponential(2).split("e");
    return parts[0].replace(/\.?0+$/, "") + "e" + parseInt(parts[1], 10);
  }
  function num(v) {
    if (v === null || v === undefined || !isFinite(v)) { return MISSING; }
    var a = Math.abs(v);
    if (a === 0) { return "0"; }
    if (a >= 999500 || a < 0.0009995) { return exp3(v); }
    if (a >= 999.5) { return v.toFixed(0); }
    return g3(v);
  }
  function pct(p) {
    if (p === null || p === undefined || !isFinite(p)) { return MISSING; }
    if (p > 0 && p < 0.00001) { return "<\u00a00.001" + PERCENT; }
    var text = g3(100 * p);
    if (p < 1 && Number(text) >= 100) { return ">\u00a099.9" + PERCENT; }
    return text + PERCENT;
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  var hay = [];
  var cards = rows.map(function (r) {
    var slug = r[SLUG] || r[ID], mslug = data.method_slugs[r[M]], name = data.methods[r[M]];
    var a = el("a", "card");
    a.href = slug + ".html#m-" + mslug;
    if (r[FAILED] !== null) {
      var f = el("div", "failed");
      f.setAttribute("role", "img");
      f.setAttribute("aria-label", "failed: " + r[FAILED]);
      f.appendChild(el("strong", "", "failed"));
      f.appendChild(el("span", "", r[FAILED]));
      a.appendChild(f);
    } else {
      var img = document.createElement("img");
      img.loading = "lazy";  // before src, or the browser fetches at once
      img.decoding = "async";
      img.width = 128;
      img.height = 128;
      img.alt = r[LABEL] + " (" + name + ")";
      img.src = "thumbs/" + mslug + "/" + slug + ".jpg";
      a.appendChild(img);
    }
    a.appendChild(el("div", "name", r[LABEL]));
    a.appendChild(el("div", "muted", name + " \u00b7 " + r[ID]));
    // The scores, one to a line (a 128-pixel card has no room for two without wrapping mid-value).
    var scores = el("div", "muted scores");
    (r[S0] === null && r[FAILED] === null
      ? ["activation " + num(r[S0 + 4])]  // a filter: no probabilities
      : ["D " + pct(r[S0]), "judge " + pct(r[S0 + 1]), "robust " + pct(r[S0 + 2])]
    ).forEach(function (line) { scores.appendChild(el("div", "", line)); });
    a.appendChild(scores);
    hay.push((r[LABEL] + " " + r[ID]).toLowerCase());
    return a;
  });

  function apply() {
    var text = q.value.trim().toLowerCase(), m = method.value, k = kind.value, s = sort.value;
    var g = group ? group.value : "";
    var asc = order.value === "asc";
    var num = /^\d+$/.test(text) ? parseInt(text, 10) : null;
    var keep = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (m !== "" && r[M] !== +m) { continue; }
      if (k !== "" && r[K] !== +k) { continue; }
      if (g !== "" && rowGroups[i].indexOf(+g) < 0) { continue; }
      if (text) {
        if (num !== null) { if (r[INDEX].indexOf(num) < 0) { continue; } }
        else if (hay[i].indexOf(text) < 0) { continue; }
      }
      keep.push(i);
    }
    if (s !== "") {
      var j = S0 + (+s);
      keep.sort(function (a, b) {
        var x = rows[a][j], y = rows[b][j];
        if (x === null || y === null) { return (x === null) - (y === null) || a - b; }  // missing last
        return (asc ? x - y : y - x) || a - b;
      });
    }
    var frag = document.createDocumentFragment();
    keep.forEach(function (i) { frag.appendChild(cards[i]); });
    grid.replaceChildren(frag);
    count.textContent = keep.length + " of " + rows.length + " images";
    if (group) {  // the group in the address, so that it can be linked and the back button keeps it
      var want = g === "" ? "" : "#group=" + data.group_slugs[+g];
      if (location.hash !== want && (want || location.hash.indexOf("#group=") === 0)) {
        history.replaceState(null, "", want || location.pathname + location.search);
      }
    }
  }

  // index.html#group=<slug> opens the grid on that group (the group pages link so).
  function fromHash() {
    var match = /^#group=([a-z0-9-]+)$/.exec(location.hash);
    if (group && match) {
      var i = (data.group_slugs || []).indexOf(match[1]);
      if (i >= 0) { group.value = String(i); }
    }
  }

  document.getElementById("controls").addEventListener("submit", function (e) { e.preventDefault(); });
  window.addEventListener("hashchange", function () { fromHash(); apply(); });
  [q, method, kind, sort, order, group].forEach(function (c) {
    if (!c) { return; }
    c.addEventListener("input", apply);
    c.addEventListener("change", apply);
  });
  fromHash();
  apply();
}());
