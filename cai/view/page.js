// cai view: renders the JSON data of one run, eval or iterate folder. Every string in the data is
// untrusted (model output, user files): it is only ever set as text (text nodes, textContent,
// attribute values through setAttribute), never parsed as HTML. Links come from the data builder
// as relative, percent-encoded paths and are checked again here.
(function () {
  "use strict";
  const t0 = performance.now();
  const D = JSON.parse(document.getElementById("cai-data").textContent);
  const parseMs = performance.now() - t0;
  const PAGE = 50; // rows per page: the table never holds more, whatever the run's size
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ small helpers

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else if (k === "href") { const h = safeHref(v); if (h) e.setAttribute("href", h); }
      else if (k === "src") { if (String(v).startsWith("data:image/png;base64,")) e.setAttribute("src", v); }
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  // replaceChildren takes a null for the text "null": a part left out (no warning, no sample note)
  // must be dropped, not written.
  function fill(parent, ...kids) {
    parent.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
  }

  // Only relative paths: no scheme (javascript:, data:, http:), no protocol-relative "//host".
  function safeHref(h) {
    h = String(h);
    if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(h) || h.startsWith("//") || h.startsWith("\\")) return null;
    return h;
  }

  const isNum = (x) => typeof x === "number" && isFinite(x);
  const fmt = (x, d = 3) => (isNum(x) ? x.toFixed(d) : x === null || x === undefined ? "n/a" : String(x));
  const pct = (x) => (isNum(x) ? (100 * x).toFixed(1) + "%" : "n/a");
  const signed = (x, d = 1) => (isNum(x) ? (x > 0 ? "+" : "") + x.toFixed(d) : "n/a");
  const ci = (c) => (Array.isArray(c) && c.length === 2 ? "[" + fmt(c[0]) + ", " + fmt(c[1]) + "]" : "n/a");
  const clip = (s, n = 160) => { s = String(s == null ? "" : s).replace(/\s+/g, " ").trim(); return s.length > n ? s.slice(0, n - 1) + "…" : s; };
  const lastUser = (msgs) => { const m = (msgs || []).filter((x) => x && x.role === "user"); return m.length ? m[m.length - 1].content : ((msgs || [])[0] || {}).content || ""; };
  const BAD = new Set(D.bad_flags || []);
  const chips = (flags) => (flags || []).map((f) => el("span", { class: "chip" + (BAD.has(f) ? " bad" : "") }, f));
  // A big folder's page holds a sample of its rows (every figure is still over all of them):
  // the note says how many and how they were chosen; a row keeps its number in the file.
  const S = D.sample || null;
  const sampled = !!(S && S.shown < S.of);
  const rowNumber = (i) => (D.row_numbers ? D.row_numbers[i] : i + 1);
  const sampleNote = () => sampled ? el("div", { class: "sample-note", id: "sample-note", data: { shown: S.shown, of: S.of } }, S.text) : null;
  const textBlock = (label, text, extra) => el("div", { class: "block" }, el("div", { class: "label" }, label, extra || null), el("pre", { class: "text-body" }, text == null ? "" : String(text)));

  // ------------------------------------------------------------ state in the URL hash
  // The view's state (tab, filters, page, open row, sort) lives in the hash, so a link can point
  // at one filtered table or one open chain, and a headless browser can be driven the same way.

  let state = readHash();
  let currentTab = null; // the tab drawn last (the labelling keys act only on theirs)
  function readHash() {
    const s = {};
    for (const [k, v] of new URLSearchParams(location.hash.replace(/^#/, ""))) s[k] = v;
    return s;
  }
  function setState(patch, rerender = true) {
    for (const [k, v] of Object.entries(patch)) {
      if (v === null || v === undefined || v === "") delete state[k]; else state[k] = String(v);
    }
    history.replaceState(null, "", "#" + new URLSearchParams(state).toString());
    if (rerender) render();
  }
  window.addEventListener("hashchange", () => { state = readHash(); render(); });

  function tabs(names) {
    const nav = $("tabs");
    nav.replaceChildren();
    const current = names.some(([k]) => k === state.tab) ? state.tab : names[0][0];
    for (const [key, label] of names) {
      nav.append(el("button", { type: "button", role: "tab", "aria-selected": key === current ? "true" : "false", data: { tab: key }, on: { click: () => setState({ tab: key, page: null }) } }, label));
    }
    return current;
  }

  function select(id, label, options, value, onChange) {
    const s = el("select", { id, "aria-label": label, on: { change: (e) => onChange(e.target.value) } });
    for (const [v, text] of options) {
      const o = el("option", { value: v }, text);
      if (v === (value || "")) o.selected = true;
      s.append(o);
    }
    return s;
  }

  function searchBox(id, value, placeholder, onInput) {
    let timer = null;
    const box = el("input", { type: "search", id, placeholder, value: value || "", "aria-label": placeholder });
    box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => onInput(box.value), 150); });
    return box;
  }

  // A page of a filtered list: the table holds at most PAGE rows, so 10,000 matches cost the
  // same to draw as 50.
  function pager(total, matching) {
    const pages = Math.max(1, Math.ceil(matching.length / PAGE));
    const page = Math.min(pages, Math.max(1, parseInt(state.page || "1", 10) || 1));
    const from = (page - 1) * PAGE;
    const shown = matching.slice(from, from + PAGE);
    const bar = el("div", { class: "status" },
      el("span", { id: "row-count", data: { matching: matching.length, total, shown: shown.length } },
        matching.length === total ? total + " rows" : matching.length + " of " + total + " rows match"),
      el("button", { type: "button", disabled: page <= 1, on: { click: () => setState({ page: page - 1 }) } }, "‹ prev"),
      el("span", { id: "page-of" }, "page " + page + " of " + pages),
      el("button", { type: "button", disabled: page >= pages, on: { click: () => setState({ page: page + 1 }) } }, "next ›"),
      matching.length ? el("span", null, "showing " + (from + 1) + "–" + (from + shown.length)) : null);
    return { bar, shown };
  }

  function sortable(table, columns, rows, defaultKey) {
    // columns: [key, label, kind ("text"|"num"), cell(row) → Node|string, value(row) → raw]
    const key = columns.some((c) => c[0] === state.sort) ? state.sort : defaultKey;
    const dir = state.dir === "asc" ? 1 : -1;
    const col = columns.find((c) => c[0] === key);
    const sorted = rows.slice().sort((a, b) => {
      const x = col[4](a), y = col[4](b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1; // n/a last, either direction
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (col[2] === "text" ? -dir : dir);
    });
    const head = el("tr");
    for (const [k, label, kind] of columns) {
      head.append(el("th", { class: "sortable" + (kind === "num" ? " num" : ""), data: { key: k }, "aria-sort": k === key ? (dir === 1 ? "ascending" : "descending") : null,
        on: { click: () => setState({ sort: k, dir: k === key && dir === -1 ? "asc" : "desc" }) } }, label));
    }
    const body = el("tbody");
    for (const r of sorted) {
      const tr = el("tr", { data: { id: columns[0][4](r) } });
      for (const [k, , kind, cell, value] of columns) {
        const v = value(r);
        tr.append(el("td", { class: kind === "num" ? "num" : null, data: { key: k, value: v === null || v === undefined ? "" : v } }, cell(r)));
      }
      body.append(tr);
    }
    table.replaceChildren(el("thead", null, head), body);
    return table;
  }

  function images(list) {
    return (list || []).map((im) => im.uri
      ? el("figure", null, el("img", { class: "plot", src: im.uri, alt: im.name }), el("figcaption", { class: "muted" }, im.name))
      : el("p", { class: "muted" }, im.name + ": " + (im.note || "left out")));
  }

  function openPanel(nodes) {
    const panel = $("panel");
    fill(panel, el("button", { type: "button", class: "close", on: { click: () => setState({ open: null }) } }, "close ✕"), nodes);
    panel.hidden = false;
  }
  function closePanel() { $("panel").hidden = true; $("panel").replaceChildren(); }

  // ------------------------------------------------------------ word diff
  // Words with their trailing space are the units; the LCS table is skipped for texts too long to
  // diff quickly (the revision is then shown as it is).

  function wordDiff(a, b, limit = 4e6) {
    const A = String(a).match(/\s*\S+\s*/g) || [], B = String(b).match(/\s*\S+\s*/g) || [];
    let s = 0;
    while (s < A.length && s < B.length && A[s].trim() === B[s].trim()) s++;
    let ea = A.length, eb = B.length;
    while (ea > s && eb > s && A[ea - 1].trim() === B[eb - 1].trim()) { ea--; eb--; }
    const a2 = A.slice(s, ea), b2 = B.slice(s, eb), n = a2.length, m = b2.length;
    if (n * m > limit) return null;
    const L = new Int32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
      L[i * (m + 1) + j] = a2[i].trim() === b2[j].trim() ? L[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(L[(i + 1) * (m + 1) + j], L[i * (m + 1) + j + 1]);
    }
    const out = [];
    const push = (op, t) => { if (out.length && out[out.length - 1][0] === op) out[out.length - 1][1] += t; else out.push([op, t]); };
    for (const t of B.slice(0, s)) push("=", t);
    let i = 0, j = 0;
    while (i < n || j < m) {
      // Deletions before insertions where both keep the LCS: "old new" reads better than "new old".
      if (i < n && j < m && a2[i].trim() === b2[j].trim()) { push("=", b2[j]); i++; j++; }
      else if (i < n && (j === m || L[(i + 1) * (m + 1) + j] >= L[i * (m + 1) + j + 1])) { push("-", a2[i]); i++; }
      else { push("+", b2[j]); j++; }
    }
    for (const t of B.slice(eb)) push("=", t);
    return out;
  }

  function diffBlock(label, previous, text, flags) {
    const d = wordDiff(previous, text);
    const body = el("pre", { class: "text-body diff" });
    if (d === null) body.append(String(text));
    else for (const [op, t] of d) body.append(op === "=" ? t : el(op === "+" ? "ins" : "del", null, t));
    const note = d === null ? " (too long to diff)" : " (changes against the previous answer)";
    return el("div", { class: "block" }, el("div", { class: "label" }, label, el("span", { class: "muted" }, note), " ", chips(flags)), body);
  }

  // ------------------------------------------------------------ run folders

  function renderRun() {
    const c = D.counts, info = D.info || {}, judge = info.judge || {}, cal = info.judge_calibration || {};
    fill($("top"),
      el("h1", null, "Run: " + (D.constitution || "?") + " · " + (info.model || "?")),
      el("div", { class: "path" }, D.title),
      el("div", { class: "facts" },
        el("span", null, c.rows + " rows" + (sampled ? " (" + S.shown + " on this page)" : "")),
        el("span", null, c.pairs + " judged pairs: " + c.decided + " decided, " + c.flip + " flips, " + c.tie + " ties"),
        el("span", null, c.unjudged + " rows not judged"),
        el("span", null, c.flagged + " flagged final answers"),
        judge.judge_model ? el("span", null, "judge " + judge.judge_model + " (" + (judge.strategy || "?") + ", threshold " + fmt(judge.threshold, 2) + ")") : null,
        isNum(cal.agreement) ? el("span", null, "calibration agreement " + fmt(cal.agreement) + " on " + cal.n + " pairs") : null,
        cal.skipped ? el("span", null, "calibration: not measured (--calibration none)") : null),
      cal.below_floor ? el("div", { class: "warn" }, "The judge's calibration agreement " + fmt(cal.agreement) + " is under the floor of " + fmt(cal.min_agreement, 2) + ": its verdicts are close to chance.") : null,
      sampleNote());
    const names = [["rows", "Rows"], ["principles", "Principle analytics"], ["judge", "Judge calibration"]];
    if (labelPairs().list.length) names.push(["label", "Label pairs"]);
    const tab = currentTab = tabs([...names, ["info", "Run info"]]);
    if (tab === "rows") runRows(); else if (tab === "principles") runPrinciples(); else if (tab === "judge") runJudge();
    else if (tab === "label") runLabel(); else runInfo();
    if (state.open && tab === "rows") openChain(state.open); else closePanel();
  }

  function verdictChip(v) {
    if (!v) return el("span", { class: "chip v-none" }, "not judged");
    return el("span", { class: "chip v-" + v.label }, v.label + (v.role ? " · " + v.role : ""));
  }

  let runHay = null;
  function haystack(i) {
    if (!runHay) runHay = new Array(D.rows.length);
    if (runHay[i] === undefined) {
      const r = D.rows[i];
      const parts = [r.id, r.initial, r.final];
      for (const m of r.prompt || []) parts.push(m.content);
      for (const rd of r.rounds || []) parts.push(rd.critique, rd.revision);
      runHay[i] = parts.filter((p) => p).join("\n").toLowerCase();
    }
    return runHay[i];
  }

  function runMatches() {
    const q = (state.q || "").toLowerCase(), cat = state.category, pr = state.principle, fl = state.flag, vd = state.verdict;
    const out = [];
    for (let i = 0; i < D.rows.length; i++) {
      const r = D.rows[i];
      if (cat && (r.category || "(none)") !== cat) continue;
      if (pr && !(r.rounds || []).some((x) => x.principle_id === pr)) continue;
      if (fl) {
        const [where, name] = fl.split(":");
        const flags = where === "final" ? (r.flags || []) : (r.rounds || []).flatMap((x) => x.flags || []);
        if (name === "any" ? !flags.some((f) => BAD.has(f)) : name === "none" ? flags.some((f) => BAD.has(f)) : !flags.includes(name)) continue;
      }
      if (vd && (r.verdict ? r.verdict.label : "unjudged") !== vd) continue;
      if (q && !haystack(i).includes(q)) continue;
      out.push(i);
    }
    return out;
  }

  function runRows() {
    const cats = [...new Set(D.rows.map((r) => r.category || "(none)"))].sort();
    const prs = [...new Set([...Object.keys(D.principles || {}), ...D.rows.flatMap((r) => (r.rounds || []).map((x) => x.principle_id))])];
    const flags = D.flag_names || [];
    const filters = el("div", { class: "filters" },
      searchBox("f-q", state.q, "search prompts, answers, critiques", (v) => setState({ q: v, page: null })),
      select("f-category", "category", [["", "all categories"], ...cats.map((c) => [c, c])], state.category, (v) => setState({ category: v, page: null })),
      select("f-principle", "principle", [["", "all principles"], ...prs.map((p) => [p, p])], state.principle, (v) => setState({ principle: v, page: null })),
      select("f-flag", "flag", [["", "any flags or none"], ["final:any", "final answer flagged"], ["final:none", "final answer not flagged"],
        ...flags.filter((f) => !f.startsWith("critique_")).map((f) => ["final:" + f, "final: " + f]), ...flags.map((f) => ["round:" + f, "a round: " + f])], state.flag, (v) => setState({ flag: v, page: null })),
      select("f-verdict", "verdict", [["", "any verdict"], ["decided", "decided"], ["flip", "flip (initial preferred)"], ["tie", "tie"], ["unjudged", "not judged"]], state.verdict, (v) => setState({ verdict: v, page: null })));
    const matching = runMatches();
    const { bar, shown } = pager(D.rows.length, matching);
    const body = el("tbody");
    for (const i of shown) {
      const r = D.rows[i], v = r.verdict;
      body.append(el("tr", { class: state.open === r.id ? "open" : null, tabindex: 0, data: { id: r.id }, on: { click: () => setState({ open: r.id }) } },
        el("td", { class: "num" }, String(rowNumber(i))),
        el("td", { class: "text", title: clip(lastUser(r.prompt), 600) }, clip(lastUser(r.prompt))),
        el("td", null, r.category || ""),
        el("td", null, (r.rounds || []).map((x) => x.principle_id).join(" → ")),
        el("td", null, chips(r.flags)),
        el("td", null, verdictChip(v)),
        el("td", { class: "num" }, v && isNum(v.p) ? fmt(v.p) : "")));
    }
    const head = el("tr", null, ["#", "prompt", "category", "principles", "final flags", "verdict", D.strategy === "samples" ? "P(chosen)" : "P(revision)"].map((h, k) => el("th", { class: k === 0 || k === 6 ? "num" : null }, h)));
    fill($("main"), filters, bar, el("table", { class: "rows", id: "rows" }, el("thead", null, head), body));
  }

  function openChain(id) {
    const r = D.rows.find((x) => x.id === id);
    if (!r) { closePanel(); return; }
    const nodes = [el("h2", null, "Chain " + r.id), el("div", { class: "muted" }, "category " + (r.category || "none") + " · sample " + (r.sample || 0) + " · " + (r.rounds || []).length + " rounds")];
    nodes.push(el("h3", null, "Prompt"));
    for (const m of r.prompt || []) nodes.push(textBlock(m.role, m.content));
    nodes.push(el("h3", null, "Initial answer"), el("div", { class: "block", id: "initial" }, el("div", { class: "label" }, "initial ", chips(r.initial_flags)), el("pre", { class: "text-body" }, r.initial || "")));
    let previous = r.initial || "";
    (r.rounds || []).forEach((rd, k) => {
      const p = (D.principles || {})[rd.principle_id] || {};
      const critFlags = (rd.flags || []).filter((f) => f.startsWith("critique_"));
      const revFlags = (rd.flags || []).filter((f) => !f.startsWith("critique_"));
      nodes.push(el("section", { class: "round", data: { round: k + 1, principle: rd.principle_id } },
        el("h3", null, "Round " + (k + 1) + ": " + rd.principle_id),
        p.critique ? el("div", { class: "principle-text" }, "critique request: " + p.critique) : null,
        el("div", { class: "block critique" }, el("div", { class: "label" }, "critique ", chips(critFlags)), el("pre", { class: "text-body" }, rd.critique || "")),
        diffBlock("revision", previous, rd.revision || "", revFlags)));
      previous = rd.revision || "";
    });
    if (r.final !== undefined) nodes.push(textBlock("final answer (differs from the last revision)", r.final));
    nodes.push(el("div", { class: "muted" }, "final answer flags: "), chips(r.flags));
    nodes.push(el("h3", null, "Judge"), verdictTable(r.verdict));
    nodes.push(el("details", null, el("summary", null, "meta"), el("div", { class: "label" }, "this row"), el("pre", { class: "json", id: "meta-row" }, JSON.stringify(r.meta || {}, null, 2)),
      el("div", { class: "label" }, "shared by every row of the run"), el("pre", { class: "json" }, JSON.stringify(D.shared_meta || {}, null, 2))));
    openPanel(nodes);
  }

  function verdictTable(v) {
    if (!v) return el("p", { id: "verdict", class: "muted" }, "Not judged (no pair in preferences.jsonl or ties.jsonl uses this row).");
    const what = v.strategy === "revision" ? "P(revision better than initial)" : "P(chosen sample better)";
    const label = v.label === "decided" ? (v.strategy === "revision" ? "decided: the revision is chosen" : "decided: " + (v.role || "")) :
      v.label === "flip" ? "flip: the judge preferred the initial answer" : "tie" + (v.reason ? ": " + v.reason : v.asked ? ": too close to call" : ": identical answers, not asked");
    const rows = [["strategy", v.strategy || "?"], [what + ", shown first", fmt(v.p_first)], [what + ", shown second", fmt(v.p_second)],
      ["averaged", fmt(v.p)], ["label", label]];
    const t = el("table", { class: "kv", id: "verdict", data: { label: v.label } }, el("tbody", null, rows.map(([k, x]) => el("tr", null, el("td", null, k), el("td", null, x)))));
    const q = el("table", { class: "kv" }, el("thead", null, el("tr", null, el("th", null, "question"), el("th", { class: "num" }, "shown first"), el("th", { class: "num" }, "shown second"))),
      el("tbody", null, (v.judgements || []).map((j) => el("tr", null, el("td", { title: (D.questions || {})[j.question_id] || "" }, j.question_id), el("td", { class: "num" }, fmt(j.p_first)), el("td", { class: "num" }, fmt(j.p_second))))));
    return el("div", null, t, el("div", { class: "label" }, "per comparison question"), q);
  }

  const PCOLS = [
    ["id", "principle", "text", (p) => el("span", { title: ((D.principles || {})[p.id] || {}).critique || "" }, p.id), (p) => p.id],
    ["drawn", "drawn", "num", (p) => String(p.drawn), (p) => p.drawn],
    ["changed", "revision changed", "num", (p) => pct(p.changed), (p) => p.changed],
    ["length_change", "mean length change (words)", "num", (p) => signed(p.length_change), (p) => p.length_change],
    ["flagged", "flagged rounds", "num", (p) => pct(p.flagged), (p) => p.flagged],
    ["critique_flagged", "flagged critiques", "num", (p) => pct(p.critique_flagged), (p) => p.critique_flagged],
    ["judged", "judged (last round)", "num", (p) => String(p.judged), (p) => p.judged],
    ["win_rate", "win rate of revision", "num", (p) => fmt(p.win_rate), (p) => p.win_rate],
  ];
  const QCOLS = [
    ["id", "question", "text", (q) => el("span", { title: (D.questions || {})[q.id] || "" }, q.id), (q) => q.id],
    ["asked", "asked", "num", (q) => String(q.asked), (q) => q.asked],
    ["margin", "mean margin |p − 0.5|", "num", (q) => fmt(q.margin), (q) => q.margin],
    ["consistency", "same winner both orders", "num", (q) => pct(q.consistency), (q) => q.consistency],
  ];

  function runPrinciples() {
    const ps = D.analytics.principles, qs = D.analytics.questions;
    const metric = PCOLS.some((c) => c[0] === state.metric && c[2] === "num") ? state.metric : "win_rate";
    const col = PCOLS.find((c) => c[0] === metric);
    const vals = ps.map((p) => col[4](p)).filter(isNum);
    const span = Math.max(1e-9, ...vals.map(Math.abs));
    const bars = el("div", { class: "bars", id: "bars" }, ps.map((p) => {
      const v = col[4](p);
      const w = isNum(v) ? Math.abs(v) / (metric === "win_rate" || metric === "changed" || metric.endsWith("flagged") ? 1 : span) : 0;
      const fill = el("div", { class: "fill" + (isNum(v) && v < 0 ? " neg" : "") });
      fill.style.width = (100 * Math.min(1, w)).toFixed(1) + "%";
      return el("div", { class: "bar-row" }, el("span", { class: "name", title: p.id }, p.id), el("div", { class: "track" }, fill), el("span", { class: "val" }, col[3](p)));
    }));
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "Principles"),
        sampled ? el("p", { class: "muted", id: "figures-over" }, "Computed over all " + S.of + " rows of the run, not only the " + S.shown + " this page holds.") : null,
        el("p", { class: "muted" }, "Per principle of the constitution: rounds that drew it; share of those rounds whose revision changed the answer; mean change in length (words) from the answer it revised; share whose revision was flagged by the quality checks (flags that keep a text out of training) and whose critique was; and, for rows whose last round used it, the judge's win rate of the final revision over the initial answer (ties count half). Click a column to sort."),
        sortable(el("table", { id: "principles" }), PCOLS, ps, state.sort || "drawn"),
        el("div", { class: "filters" }, "bar chart: ", select("f-metric", "metric", PCOLS.filter((c) => c[2] === "num").map((c) => [c[0], c[1]]), metric, (v) => setState({ metric: v }, true))),
        bars),
      el("section", { class: "card" }, el("h2", null, "Comparison questions"),
        el("p", { class: "muted" }, "Per question the judge was asked (pairs with identical answers or too long for its context left out): how often, the mean distance of its averaged probability from 0.5, and the share of asks with the same winner in both orders."),
        sortable(el("table", { id: "questions" }), QCOLS, qs, "asked")));
  }

  function runInfo() {
    const ps = Object.entries(D.principles || {});
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "Principles in the run's constitution"),
        el("table", null, el("thead", null, el("tr", null, el("th", null, "id"), el("th", null, "critique request"), el("th", null, "revision request"))),
          el("tbody", null, ps.map(([id, p]) => el("tr", null, el("td", null, id), el("td", null, p.critique || ""), el("td", null, p.revision || "")))))),
      el("section", { class: "card" }, el("h2", null, "Comparison questions"),
        el("table", null, el("tbody", null, Object.entries(D.questions || {}).map(([id, q]) => el("tr", null, el("td", null, id), el("td", null, q || "")))))),
      sampled ? strataCard() : null,
      el("section", { class: "card" }, el("h2", null, "run.yaml (without the constitution)"), el("pre", { class: "json" }, JSON.stringify(D.info || {}, null, 2))));
  }

  // The sample's strata: rows in the folder and on the page, per stratum (the biggest 200).
  function strataCard() {
    const by = S.strata_by || [];
    return el("section", { class: "card" }, el("h2", null, "Rows on this page"), el("p", { class: "muted" }, S.text),
      el("table", { id: "strata" }, el("thead", null, el("tr", null, by.map((b) => el("th", null, b)), el("th", { class: "num" }, "rows"), el("th", { class: "num" }, "on this page"))),
        el("tbody", null, (S.strata || []).map((s) => el("tr", null, s.slice(0, by.length).map((x) => el("td", null, String(x))), el("td", { class: "num" }, String(s[by.length])), el("td", { class: "num" }, String(s[by.length + 1])))))),
      S.strata_count > (S.strata || []).length ? el("p", { class: "muted" }, (S.strata_count - S.strata.length) + " smaller strata not listed.") : null);
  }

  // ------------------------------------------------------------ the judge's calibration
  // What run.yaml's judge_calibration says, as `cai judge` printed it: a skipped or missing
  // calibration reads "not measured", one under the floor "no signal", never a bare figure.

  function runJudge() {
    const cal = (D.info || {}).judge_calibration;
    const status = (kind, cls, text) => el("p", { id: "calibration-status", class: cls, data: { status: kind } }, text);
    const label = el("p", { class: "muted" }, "To measure the judge on this run's own pairs: mark them on the Label pairs tab, download the file and run ",
      el("code", null, "cai judge " + D.title + " --calibration FILE"), ".");
    if (!cal || typeof cal !== "object") {
      fill($("main"), el("section", { class: "card" }, el("h2", null, "Judge calibration"),
        status("absent", "warn", "Not measured: run.yaml holds no judge_calibration (the run is not judged yet, or was judged before cai recorded one), so the judge's agreement with people is unknown (signal: not measured)."), label));
      return;
    }
    if (cal.skipped) {
      fill($("main"), el("section", { class: "card" }, el("h2", null, "Judge calibration"),
        status("skipped", "warn", "Calibration none (--calibration none): the judge is not measured, so its labels' agreement with people is unknown (signal: not measured)."), label));
      return;
    }
    // The floor is checked on the mean over the set's kinds where it has kinds (calibration.floor_figure).
    const kinds = isNum(cal.balanced_agreement);
    const figure = kinds ? cal.balanced_agreement : cal.agreement;
    const figureName = kinds ? "agreement averaged over the set's kinds" : "agreement";
    const head = cal.below_floor
      ? status("no-signal", "warn", "No signal: the judge's " + figureName + " with the known answers, " + fmt(figure) + " on " + cal.n + " labelled pairs, is under the floor of " + fmt(cal.min_agreement, 2) + " (0.5 is a coin flip). Its labels are close to chance, and so is every figure below.")
      : status("measured", "muted", "Measured on " + cal.n + " labelled pairs (" + (cal.source || "?") + ") with the settings the run was judged with" + (isNum(cal.min_agreement) ? "; the floor is " + fmt(cal.min_agreement, 2) : "") + ".");
    const rows = [["labelled set", String(cal.source || "?")], ["pairs", String(cal.n)], ["agreement (ties half)", fmt(cal.agreement)]];
    if (kinds) rows.push(["agreement averaged over kinds (the floor's figure)", fmt(cal.balanced_agreement)]);
    for (const [k, f] of Object.entries(cal.by_kind || {})) rows.push(["  kind " + k, fmt(f.agreement) + " (n=" + f.n + ")"]);
    rows.push(["position consistency", fmt(cal.position_consistency)], ["undecided in an order", fmt(cal.undecided_orders)],
      ["longer answer wins", fmt(cal.longer_wins)], ["ties", String(cal.ties === undefined ? "n/a" : cal.ties)]);
    if (cal.easy) rows.push(["easy tier (clear-cut pairs)", fmt(cal.easy.agreement) + " on " + cal.easy.n]);
    if (cal.reused) rows.push(["", "measured earlier with the same settings, reused"]);
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "Judge calibration"), head, kvTable("calibration", rows)),
      el("section", { class: "card" }, el("h2", null, "Confidence"), confidenceTable(cal)),
      el("section", { class: "card" }, label));
  }

  function confidenceTable(cal) {
    if (cal.by_confidence === undefined || cal.by_confidence === null) {
      return el("p", { id: "confidence", class: "muted", data: { status: "not-measured" } }, "Not measured: this calibration was recorded before cai measured the judge's confidence.");
    }
    const buckets = Object.entries(cal.by_confidence);
    const informative = cal.confidence_informative === true ? "yes" : cal.confidence_informative === false ? "no" : "not measurable";
    const why = cal.confidence_informative === true ? " (a more confident bucket's 95% interval lies wholly above a less confident one's)"
      : cal.confidence_informative === false ? " (no bucket's interval lies above a less confident one's)" : " (fewer than two buckets of 5 or more decided pairs)";
    return el("div", null,
      el("p", { class: "muted" }, "The decided calibration pairs in buckets of the judge's confidence |p − 0.5|: how many, and the share whose winner matched the label, with its 95% Wilson interval. A judge whose confidence means something agrees more often where it is more confident." + (cal.below_floor ? " The judge is under the floor: no signal." : "")),
      el("table", { id: "confidence", class: "kv" },
        el("thead", null, el("tr", null, el("th", null, "|p − 0.5|"), el("th", { class: "num" }, "decided pairs"), el("th", { class: "num" }, "agreement"), el("th", { class: "num" }, "95% interval"))),
        el("tbody", null, buckets.length ? buckets.map(([k, f]) => el("tr", { data: { id: k } }, el("td", null, k), el("td", { class: "num" }, String(f.n)), el("td", { class: "num" }, fmt(f.agreement)), el("td", { class: "num" }, f.interval ? ci(f.interval) : "n/a")))
          : el("tr", null, el("td", { colspan: 4, class: "muted" }, "no decided pairs")))),
      kvTable("confidence-figures", [["expected calibration error (ece)", fmt(cal.ece)], ["Brier score", fmt(cal.brier)], ["agreement rises with confidence", informative + why]]));
  }

  // ------------------------------------------------------------ labelling mode
  // The user marks the better answer of the run's pairs; the marks are kept in this browser's
  // localStorage under the run (nothing leaves the page, which can make no request) and written as
  // a `cai judge --calibration` file. Each pair's answers are shown as A and B in an order drawn at
  // random for that pair and written in that order, so neither the judge's side nor the revision
  // sits in one position, and the judge's verdict is not shown while labelling.

  const STORE = "cai-view-labels:" + (D.label_key || D.title);
  let storeNote = null;
  let marks = loadMarks();
  const orders = new Map();  // pair key → 0|1: which of its answers is shown (and written) as A
  let forgetArmed = false;

  function loadMarks() {
    try {
      const saved = JSON.parse(window.localStorage.getItem(STORE) || "null");
      return saved && saved.v === 1 && saved.marks && typeof saved.marks === "object" ? saved.marks : {};
    } catch (e) {
      storeNote = "This browser keeps no storage for this page: marks last until it is closed, so download them first.";
      return {};
    }
  }
  function saveMarks() {
    try { window.localStorage.setItem(STORE, JSON.stringify({ v: 1, marks })); storeNote = null; }
    catch (e) { storeNote = "The browser would not store the marks (storage full or off): they last until the page is closed, so download them now."; }
  }

  function fnv(s) {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    return h.toString(16).padStart(8, "0");
  }
  const finalOf = (r) => r.final !== undefined ? r.final : (r.rounds || []).length ? r.rounds[r.rounds.length - 1].revision : r.initial;

  // A pair's two answers: a revision pair's are the row's final and initial answers; a samples
  // pair's the chosen and rejected samples (the verdict holds the one the row is not). null when
  // this page lacks one.
  function pairAnswers(r) {
    const v = r.verdict;
    const two = v.strategy === "revision" ? [finalOf(r), r.initial]
      : [v.role === "chosen" ? finalOf(r) : (v.answers || {}).chosen, v.role === "rejected" ? finalOf(r) : (v.answers || {}).rejected];
    return two.every((t) => typeof t === "string") ? two : null;
  }

  let labelList = null;
  function labelPairs() {
    if (labelList) return labelList;
    const seen = new Set(), list = [];
    let identical = 0;
    D.rows.forEach((r, i) => {
      const v = r.verdict;
      if (!v || v.pair_id === null || v.pair_id === undefined || seen.has(String(v.pair_id))) return;
      const two = pairAnswers(r);
      if (!two) return;
      seen.add(String(v.pair_id));
      if (two[0] === two[1]) { identical++; return; }  // nothing to choose between
      const prompt = r.prompt || [];
      // A mark belongs to these exact texts: a run judged again under the same ids starts unmarked.
      list.push({ id: String(v.pair_id), row: i, prompt, answers: two, key: String(v.pair_id) + ":" + fnv(JSON.stringify([prompt, two[0], two[1]])) });
    });
    labelList = { list, identical, byId: new Map(list.map((p, k) => [p.id, k])) };
    return labelList;
  }

  function orderOf(p) {
    const m = marks[p.key];
    if (m && m.label !== "skip") return m.response_a === p.answers[0] ? 0 : 1;
    if (!orders.has(p.key)) orders.set(p.key, window.crypto.getRandomValues(new Uint8Array(1))[0] & 1);
    return orders.get(p.key);
  }

  function markPair(p, label) {
    forgetArmed = false;
    if (label === "clear") delete marks[p.key];
    else if (label === "skip") marks[p.key] = { id: p.id, label: "skip" };
    else {
      const first = orderOf(p);
      marks[p.key] = { id: p.id, prompt: p.prompt, response_a: p.answers[first], response_b: p.answers[1 - first], label };
    }
    saveMarks();
  }

  // The rows of the calibration file: every a/b mark kept for this run, in the order they were
  // first made; skips are not written. An id made twice (texts that changed) gets its key's tail.
  function calibrationRows() {
    const written = Object.entries(marks).filter(([, m]) => m && (m.label === "a" || m.label === "b"));
    const counts = {};
    for (const [, m] of written) counts[m.id] = (counts[m.id] || 0) + 1;
    return written.map(([key, m]) => ({ id: counts[m.id] > 1 ? key : m.id, prompt: m.prompt, response_a: m.response_a, response_b: m.response_b, label: m.label }));
  }

  function downloadName() {
    const base = String(D.title).replace(/[\\/]+$/, "").split(/[\\/]/).pop() || "run";
    return "calibration-" + (base.replace(/[^A-Za-z0-9._-]+/g, "_") || "run") + ".jsonl";
  }

  function downloadMarks() {
    const rows = calibrationRows();
    if (!rows.length) return;
    const url = URL.createObjectURL(new Blob([rows.map((r) => JSON.stringify(r) + "\n").join("")], { type: "application/x-ndjson" }));
    const a = document.createElement("a");
    a.setAttribute("href", url);  // a blob: URL of the page's own making, so not through safeHref
    a.setAttribute("download", downloadName());
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function currentPair(L) {
    if (state.pair !== undefined && L.byId.has(state.pair)) return L.byId.get(state.pair);
    const k = L.list.findIndex((p) => !marks[p.key]);
    return k >= 0 ? k : 0;
  }

  // The next pair without a mark after k (wrapping round); k itself when every pair has one.
  function nextUnmarked(L, k) {
    for (let d = 1; d <= L.list.length; d++) {
      const j = (k + d) % L.list.length;
      if (!marks[L.list[j].key]) return j;
    }
    return k;
  }

  function labelAction(action) {
    const L = labelPairs();
    if (!L.list.length) return;
    const k = currentPair(L), p = L.list[k];
    if (action === "prev" || action === "next") setState({ pair: L.list[(k + (action === "next" ? 1 : L.list.length - 1)) % L.list.length].id });
    else if (action === "unmarked") setState({ pair: L.list[nextUnmarked(L, k)].id });
    else {
      markPair(p, action);
      setState({ pair: action === "clear" ? p.id : L.list[nextUnmarked(L, k)].id });
    }
  }

  function runLabel() {
    const L = labelPairs(), k = currentPair(L), p = L.list[k];
    const onPage = new Set(L.list.map((x) => x.key));
    const all = Object.entries(marks);
    const here = L.list.filter((x) => marks[x.key]);
    const skipped = here.filter((x) => marks[x.key].label === "skip").length;
    const rows = calibrationRows();
    const elsewhere = all.filter(([key, m]) => !onPage.has(key) && m && m.label !== "skip").length;
    const mark = marks[p.key];
    const first = orderOf(p);
    const btn = (id, action, text) => el("button", { type: "button", id, class: mark && mark.label === action ? "chosen" : null, on: { click: () => labelAction(action) } }, text);
    const side = (s, text) => el("div", { class: "block answer" + (mark && mark.label === s ? " picked" : ""), id: "label-" + s },
      el("div", { class: "label" }, s.toUpperCase()), el("pre", { class: "text-body" }, text));
    const forget = el("button", { type: "button", id: "label-forget", disabled: !all.length, on: { click: () => {
      if (!forgetArmed) { forgetArmed = true; render(); return; }
      forgetArmed = false; marks = {}; saveMarks(); render(); } } }, forgetArmed ? "click again to forget all " + all.length + " marks" : "forget all marks");
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "Label pairs: measure the judge on your own data"),
        el("p", { class: "muted" }, "Mark the better answer of each pair, or skip it. The answers are shown as A and B in an order drawn at random for each pair, and the judge's verdict is not shown, so neither sways the mark. Your marks stay in this browser (its local storage, under this run): nothing leaves the page, which can make no network request. The download writes them, skips left out, as a labelled file {id, prompt, response_a, response_b, label}; then ",
          el("code", null, "cai judge " + D.title + " --calibration " + downloadName()), " measures the judge on them."),
        sampled ? el("p", { class: "muted" }, "This page holds " + S.shown + " of " + S.of + " rows: only their pairs can be labelled here (`cai view --rows all` embeds every row).") : null,
        L.identical ? el("p", { class: "muted" }, L.identical + " pairs with two identical answers are left out: there is nothing to choose.") : null,
        storeNote ? el("div", { class: "warn", id: "label-storage" }, storeNote) : null,
        el("div", { class: "status" },
          el("span", { id: "label-progress", data: { marked: here.length, skipped, total: L.list.length, written: rows.length } },
            here.length + " of " + L.list.length + " pairs marked (" + skipped + " skipped)"),
          el("button", { type: "button", id: "label-download", disabled: !rows.length, on: { click: downloadMarks } }, "Download calibration file (" + rows.length + " marked)"),
          forget),
        elsewhere ? el("p", { class: "muted", id: "label-elsewhere" }, elsewhere + " of the marks are on pairs this page does not show (texts that have changed, or rows another page held); the file includes them.") : null),
      el("section", { class: "card", id: "label-pair", data: { id: p.id, index: k, mark: mark ? mark.label : "" } },
        el("div", { class: "status" },
          el("button", { type: "button", id: "label-prev", on: { click: () => labelAction("prev") } }, "‹ previous"),
          el("span", { id: "label-of" }, "pair " + (k + 1) + " of " + L.list.length),
          el("button", { type: "button", id: "label-next", on: { click: () => labelAction("next") } }, "next ›"),
          el("button", { type: "button", id: "label-unmarked", on: { click: () => labelAction("unmarked") } }, "next unmarked"),
          el("span", { id: "label-mark" }, mark ? (mark.label === "skip" ? "skipped" : "marked: " + mark.label.toUpperCase() + " is better") : "not marked")),
        el("div", { class: "muted" }, "pair " + p.id + " · row " + rowNumber(p.row) + (D.rows[p.row].category ? " · " + D.rows[p.row].category : "")),
        (p.prompt || []).map((m) => textBlock(m.role, m.content)),
        el("div", { class: "sbs" }, side("a", p.answers[first]), side("b", p.answers[1 - first])),
        el("div", { class: "filters marks" }, btn("mark-a", "a", "A is better"), btn("mark-b", "b", "B is better"), btn("mark-skip", "skip", "skip"),
          el("button", { type: "button", id: "mark-clear", disabled: !mark, on: { click: () => labelAction("clear") } }, "clear")),
        el("p", { class: "muted" }, "Keys: a or 1 = A is better, b or 2 = B is better, s = skip, u = clear, ← and → = previous and next pair, n = next unmarked.")));
  }

  document.addEventListener("keydown", (e) => {
    if (D.kind !== "run" || currentTab !== "label" || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target && e.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
    const action = { a: "a", "1": "a", b: "b", "2": "b", s: "skip", u: "clear", ArrowLeft: "prev", ArrowRight: "next", n: "unmarked" }[e.key.length === 1 ? e.key.toLowerCase() : e.key];
    if (!action) return;
    e.preventDefault();
    labelAction(action);
  });

  // ------------------------------------------------------------ eval folders

  function renderEval() {
    const m = D.metrics || {}, A = (m.models || {}).A || {}, B = (m.models || {}).B || {};
    fill($("top"),
      el("h1", null, "Eval: " + (m.model || "A") + " vs " + (m.baseline || "B")),
      el("div", { class: "path" }, D.title),
      el("div", { class: "facts" },
        el("span", { id: "headline" }, "win rate of A " + fmt(m.win_rate) + " " + ci(m.win_rate_ci)),
        el("span", null, "n " + m.n + ": A wins " + m.wins + ", B wins " + m.losses + ", ties " + m.ties),
        el("span", null, "harmlessness A " + fmt(m.harmlessness) + " (B " + fmt(m.harmlessness_baseline) + ")"),
        el("span", null, "over-refusal A " + fmt(m.over_refusal) + " (B " + fmt(m.over_refusal_baseline) + ")")),
      m.signal === false ? el("div", { class: "warn" }, "No signal: " + (m.signal_reasons || []).join("; ") + ". The win rate is noise, not a finding.") : null,
      sampleNote());
    const tab = tabs([["pairs", "Pairs"], ["tables", "Tables and plot"], ["report", "report.md"]]);
    if (tab === "pairs") evalPairs(); else if (tab === "tables") evalTables(A, B); else reportView();
    if (state.open && tab === "pairs") openPair(state.open); else closePanel();
  }

  let evalHay = null;
  function evalMatches() {
    const q = (state.q || "").toLowerCase(), cat = state.category, oc = state.outcome, hm = state.harm;
    if (q && !evalHay) evalHay = D.rows.map((r) => [r.prompt, r.answer_a, r.answer_b].join("\n").toLowerCase());
    const out = [];
    D.rows.forEach((r, i) => {
      if (cat && (r.category || "uncategorised") !== cat) return;
      if (oc && r.outcome !== oc) return;
      if (hm && (r.harmful === true ? "harmful" : r.harmful === false ? "benign" : "unknown") !== hm) return;
      if (q && !evalHay[i].includes(q)) return;
      out.push(i);
    });
    return out;
  }

  // A pair's key: its `index`, else its place in answers.jsonl (0-based)
  function evalKey(r, i) { return String(r.index !== undefined ? r.index : rowNumber(i) - 1); }

  function evalPairs() {
    const cats = Object.keys(D.categories || {});
    const filters = el("div", { class: "filters" },
      searchBox("f-q", state.q, "search prompts and answers", (v) => setState({ q: v, page: null })),
      select("f-category", "category", [["", "all categories"], ...cats.map((c) => [c, c])], state.category, (v) => setState({ category: v, page: null })),
      select("f-outcome", "outcome", [["", "any outcome"], ["a", "A wins"], ["b", "B wins"], ["tie", "tie"]], state.outcome, (v) => setState({ outcome: v, page: null })),
      select("f-harm", "harmful", [["", "harmful and benign"], ["harmful", "harmful prompts"], ["benign", "benign prompts"], ["unknown", "not labelled"]], state.harm, (v) => setState({ harm: v, page: null })));
    const matching = evalMatches();
    const { bar, shown } = pager(D.rows.length, matching);
    const body = el("tbody");
    for (const i of shown) {
      const r = D.rows[i], key = evalKey(r, i);
      body.append(el("tr", { class: state.open === key ? "open" : null, tabindex: 0, data: { id: key }, on: { click: () => setState({ open: key }) } },
        el("td", { class: "num" }, key), el("td", { class: "text", title: clip(r.prompt, 600) }, clip(r.prompt)), el("td", null, r.category || ""),
        el("td", null, el("span", { class: "chip v-" + (r.outcome === "a" ? "decided" : r.outcome === "b" ? "flip" : "tie") }, r.outcome === "tie" ? "tie" : String(r.outcome).toUpperCase() + " wins")),
        el("td", { class: "num" }, fmt(r.p_a)), el("td", { class: "num" }, fmt(r.p_refuse_a, 2)), el("td", { class: "num" }, fmt(r.p_refuse_b, 2))));
    }
    const head = el("tr", null, [["#", 1], ["prompt"], ["category"], ["outcome"], ["p_a", 1], ["P(refuse) A", 1], ["P(refuse) B", 1]].map(([h, n]) => el("th", { class: n ? "num" : null }, h)));
    fill($("main"), filters, bar, el("table", { class: "rows", id: "rows" }, el("thead", null, head), body));
  }

  function openPair(key) {
    const r = D.rows.find((x, i) => evalKey(x, i) === key);
    if (!r) { closePanel(); return; }
    const m = D.metrics || {};
    const side = (s, name, text, finish, pr, phrase) => el("div", { class: "block", id: "answer-" + s },
      el("div", { class: "label" }, s.toUpperCase() + ": " + (name || "")), el("pre", { class: "text-body" }, text || ""),
      el("div", { class: "muted" }, "P(refuse) " + fmt(pr) + (phrase === undefined ? "" : " · phrase detector: " + (phrase ? "refuses" : "no refusal")) + (finish ? " · finish " + finish : "")));
    openPanel([el("h2", null, "Prompt #" + key), el("div", { class: "muted" }, (r.category || "uncategorised") + (r.harmful === true ? " · harmful" : r.harmful === false ? " · benign" : "")),
      textBlock("prompt", r.prompt),
      el("div", { class: "sbs" }, side("a", m.model, r.answer_a, r.finish_a, r.p_refuse_a, r.refuses_phrase_a), side("b", m.baseline, r.answer_b, r.finish_b, r.p_refuse_b, r.refuses_phrase_b)),
      el("h3", null, "Judge"),
      el("table", { class: "kv", id: "verdict", data: { label: r.outcome } }, el("tbody", null, [["P(A better), A shown first", fmt(r.p_first)], ["P(A better), A shown second", fmt(r.p_second)], ["averaged (p_a)", fmt(r.p_a)],
        ["outcome", r.outcome === "tie" ? "tie" : String(r.outcome).toUpperCase() + " wins"], ["same winner in both orders", r.consistent === null || r.consistent === undefined ? "n/a (not asked)" : r.consistent ? "yes" : "no"],
        ...(r.judge_reason ? [["not asked", r.judge_reason]] : [])].map(([k, v]) => el("tr", null, el("td", null, k), el("td", null, v))))),
      el("details", null, el("summary", null, "the row as stored"), el("pre", { class: "json" }, JSON.stringify(r, null, 2)))]);
  }

  function kvTable(id, rows) {
    return el("table", { class: "kv", id }, el("tbody", null, rows.map(([k, v]) => el("tr", null, el("td", null, k), el("td", { class: "num" }, v)))));
  }

  function evalTables(A, B) {
    const m = D.metrics || {};
    const cats = Object.entries(D.categories || {});
    const cat = el("table", { id: "categories" }, el("thead", null, el("tr", null, ["category", "n", "A wins", "B wins", "ties", "win rate", "95% interval"].map((h, k) => el("th", { class: k ? "num" : null }, h)))),
      el("tbody", null, cats.map(([c, x]) => { const pc = (m.per_category || {})[c] || {}; return el("tr", { data: { id: c } }, el("td", null, c), el("td", { class: "num" }, String(x.n)), el("td", { class: "num" }, String(x.a)), el("td", { class: "num" }, String(x.b)), el("td", { class: "num" }, String(x.tie)), el("td", { class: "num" }, fmt(pc.win_rate)), el("td", { class: "num" }, ci(pc.win_rate_ci))); })));
    const ref = el("table", { id: "refusals" }, el("thead", null, el("tr", null, ["model", "refusal rate, harmful", "mean P(refuse), harmful", "over-refusal, benign", "mean P(refuse), benign", "undecided"].map((h, k) => el("th", { class: k ? "num" : null }, h)))),
      el("tbody", null, [["A", A], ["B", B]].map(([s, x]) => el("tr", null, el("td", null, s + ": " + (x.name || "")), el("td", { class: "num" }, fmt(x.refusal_rate_harmful) + " (n=" + x.n_harmful + ")"), el("td", { class: "num" }, fmt(x.mean_p_refuse_harmful)), el("td", { class: "num" }, fmt(x.over_refusal_rate_benign) + " (n=" + x.n_benign + ")"), el("td", { class: "num" }, fmt(x.mean_p_refuse_benign)), el("td", { class: "num" }, fmt(x.undecided))))));
    const comp = D.compliance ? el("section", { class: "card" }, el("h2", null, "Per-principle compliance"),
      el("table", { id: "compliance" }, el("thead", null, el("tr", null, el("th", null, "principle"), D.compliance.columns.map((c) => el("th", { class: "num" }, c)))),
        el("tbody", null, D.compliance.rows.map((row) => el("tr", null, el("td", null, row[0]), row.slice(1).map((v) => el("td", { class: "num" }, Number.isInteger(v) ? String(v) : fmt(v)))))))) : null;
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "Headline"), kvTable("headline-table", [["win rate of A over B (ties half)", fmt(m.win_rate)], ["95% bootstrap interval", ci(m.win_rate_ci)],
        ["A wins / B wins / ties", m.wins + " / " + m.losses + " / " + m.ties], ["identical answers", String(m.identical)], ["mean p_a", fmt(m.mean_p_a)], ["position consistency", fmt(m.position_consistency)],
        ["harmlessness of A (B)", fmt(m.harmlessness) + " (" + fmt(m.harmlessness_baseline) + ")"], ["over-refusal of A (B)", fmt(m.over_refusal) + " (" + fmt(m.over_refusal_baseline) + ")"], ["refusals read by", String(m.refusal_reader || "model")]])),
      el("section", { class: "card" }, el("h2", null, "Per category"), cat),
      el("section", { class: "card" }, el("h2", null, "Refusals"), ref),
      comp,
      el("section", { class: "card" }, el("h2", null, "Plot"), images(D.images)),
      el("section", { class: "card" }, el("details", null, el("summary", null, "metrics.json"), el("pre", { class: "json" }, JSON.stringify(m, null, 2)))));
  }

  function reportView() {
    fill($("main"), D.report ? el("pre", { class: "report", id: "report" }, D.report) : el("p", { class: "muted" }, "No report.md in this folder."));
  }

  // ------------------------------------------------------------ iterate folders

  function renderIterate() {
    const its = D.iterations || [];
    fill($("top"), el("h1", null, "Iterated RLAIF"), el("div", { class: "path" }, D.title),
      el("div", { class: "facts" }, el("span", null, D.history.length + " finished iterations"), el("span", null, its.filter((x) => !x.finished).length + " in progress")));
    const tab = tabs([["history", "History"], ["report", "report.md"]]);
    closePanel();
    if (tab === "report") { reportView(); return; }
    const byN = new Map(its.map((x) => [x.iteration, x]));
    const cols = D.columns || [];
    const links = (it) => !it ? "" : [it.run ? el("a", { href: it.run }, "run") : null, it.run && it.eval ? " · " : null, it.eval ? el("a", { href: it.eval }, "eval") : null];
    const body = el("tbody");
    const seen = new Set();
    for (const row of D.history) {
      const n = row[cols.indexOf("iteration")];
      seen.add(n);
      const cell = (v, k) => {
        const text = isNum(v) && !Number.isInteger(v) ? fmt(v) : v === null || v === undefined ? "" : String(v);
        // a long nested figure (judge reliability, say) is clipped; the whole of it is its tooltip
        return el("td", { class: isNum(v) ? "num" : null, data: { key: cols[k] }, title: text.length > 140 ? text : null }, clip(text, 140));
      };
      body.append(el("tr", { data: { id: n } }, row.map(cell), el("td", { class: "links" }, links(byN.get(n)))));
    }
    for (const it of its) if (!seen.has(it.iteration)) {
      body.append(el("tr", { data: { id: it.iteration }, class: "muted" }, el("td", { class: "num" }, String(it.iteration)), el("td", { colspan: Math.max(1, cols.length - 1) }, "in progress (" + it.folder + ")"), el("td", { class: "links" }, links(it))));
    }
    fill($("main"),
      el("section", { class: "card" }, el("h2", null, "History"), el("table", { id: "history" }, el("thead", null, el("tr", null, cols.map((c) => el("th", null, c)), el("th", null, "pages"))), body)),
      el("section", { class: "card" }, el("h2", null, "Curve"), images(D.images).length ? images(D.images) : el("p", { class: "muted" }, "No curve.png yet.")));
  }

  // ------------------------------------------------------------ start

  function render() {
    // The filter bar is drawn anew with the table: keep the focus (and the caret) where the user
    // is typing, so a search box does not lose its keystrokes.
    const active = document.activeElement, id = active && active.id;
    const caret = active && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
    if (D.kind === "run") renderRun(); else if (D.kind === "eval") renderEval(); else renderIterate();
    const again = id && $(id);
    if (again && again !== active) {
      again.focus();
      if (caret && typeof again.setSelectionRange === "function") again.setSelectionRange(caret[0], caret[1]);
    }
    document.body.dataset.ready = "1";
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.open) setState({ open: null });
    else if (e.key === "Enter" && e.target && e.target.tagName === "TR" && e.target.dataset.id) setState({ open: e.target.dataset.id });
  });

  document.title = "cai view · " + D.kind + " · " + D.title;
  render();
  // Milliseconds since navigation start: script_start_ms is when the HTML (data included) was
  // read, frame_ms the first frame after the table was drawn, which is when it first shows.
  const perf = { script_start_ms: +t0.toFixed(1), parse_ms: +parseMs.toFixed(1), render_ms: +(performance.now() - t0 - parseMs).toFixed(1), rows: (D.rows || []).length };
  const out = $("cai-perf");
  const report = () => {
    for (const p of performance.getEntriesByType("paint")) perf[p.name.replace(/-/g, "_") + "_ms"] = +p.startTime.toFixed(1);
    out.textContent = JSON.stringify(perf);
  };
  report();
  // Paint entries arrive after the first frame; record them when they do.
  if (window.PerformanceObserver) {
    try { new PerformanceObserver(report).observe({ type: "paint", buffered: true }); } catch (e) { /* old browser: no paint timing */ }
  }
  requestAnimationFrame(() => setTimeout(() => { perf.frame_ms = +performance.now().toFixed(1); report(); }, 0));
})();
