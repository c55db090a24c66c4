// iwo-lite's dashboard: the board, a spec's page and the costs, drawn from the JSON API and kept
// live by /api/stream. Every text from the database, an agent or a handoff goes in as text
// (textContent), never as markup; the only HTML taken from the server is a handoff rendered by
// markdown-it with raw HTML disabled.
"use strict";

const STATES = ["waiting", "running", "paused", "queued", "failed", "done", "rejected", "cancelled"];
const TITLES = {
  waiting: "Waiting for you", running: "Running", paused: "Paused", queued: "Queued", failed: "Failed",
  done: "Done", rejected: "Rejected", cancelled: "Cancelled",
};
const FINISHED = new Set(["done", "rejected", "failed", "cancelled"]);
const ROLES = ["planner", "builder", "reviewer", "tester", "deployer", "docs"];
const SHOWN = 100; // rows of a finished group before "show all"

const state = { specs: new Map(), since: null, daemon: null, expanded: new Set(), view: null, spec: null,
  tab: "timeline", events: null, eventsDispatch: "", diffDispatch: "", diff: null, diffKey: null, open: new Set() };

// -- small helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function parseUtc(text) { return text ? Date.parse(text.endsWith("Z") || text.includes("+") ? text : text + "Z") : NaN; }

function span(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
}

function ago(text) {
  const at = parseUtc(text);
  return Number.isNaN(at) ? "" : `${span((Date.now() - at) / 1000)} ago`;
}

function left(text) {
  const at = parseUtc(text);
  if (Number.isNaN(at)) return "";
  const seconds = (at - Date.now()) / 1000;
  return seconds >= 0 ? `${span(seconds)} left` : `overdue ${span(-seconds)}`;
}

function money(value) { return value === null || value === undefined ? "?" : `$${Number(value).toFixed(4)}`; }
function tokens(n) { n = n || 0; return n >= 1000 ? `${Math.round(n / 1000)}k` : String(n); }
function nn(step) { return step ? String(step).padStart(2, "0") : ""; }

// a live countdown or age: redrawn every second without a fetch
function since(text) { const at = parseUtc(text); return Number.isNaN(at) ? "" : span((Date.now() - at) / 1000); }
const CLOCKS = { left, ago, since };
function clock(kind, at) { return h("span", { class: "clock", dataset: { kind, at: at || "" } }, CLOCKS[kind](at)); }
setInterval(() => {
  for (const el of document.querySelectorAll(".clock")) el.textContent = CLOCKS[el.dataset.kind](el.dataset.at);
}, 1000);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
}

function flash(text, kind = "ok") {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = `flash ${kind}`;
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.hidden = true; }, kind === "ok" ? 4000 : 10000);
}

function groupOf(spec) {
  if (spec.paused_until && (spec.state === "running" || spec.state === "queued")) return "paused";
  return spec.state;
}

// -- the daemon line -----------------------------------------------------------------------------

function drawDaemon(daemon) {
  state.daemon = daemon;
  const pill = document.getElementById("daemon");
  pill.textContent = daemon.running ? `daemon running (pid ${daemon.pid})` : "daemon not running";
  pill.className = `pill ${daemon.running ? "ok" : daemon.ok ? "idle" : "bad"}`;
  const banner = document.getElementById("banner");
  banner.hidden = daemon.ok;
  banner.textContent = daemon.ok ? "" : daemon.line;
}

// -- the board -------------------------------------------------------------------------------------

async function loadBoard(full) {
  const since = full || !state.since ? "" : `?since=${encodeURIComponent(state.since)}`;
  const board = await api(`/api/board${since}`);
  if (board.full) state.specs = new Map();
  for (const spec of board.specs) state.specs.set(spec.id, spec);
  state.since = board.since; // a little before the server's now: a row changed while it read is read again
  drawDaemon(board.daemon);
  if (state.view === "board") drawBoard();
}

function detailOf(spec) {
  const p = spec.progress || {};
  if (spec.state === "waiting") {
    return h("span", {}, spec.gate_reason && spec.gate_reason !== "blocker" ? h("span", { class: "tag" }, spec.gate_reason) : null,
      " ", spec.question || "", " · ", clock("left", spec.deadline));
  }
  if (spec.paused_until) {
    return h("span", {}, `paused (${spec.pause_reason || "?"}) until ${spec.paused_until.slice(11, 16)}Z · `, clock("left", spec.paused_until));
  }
  if (spec.state === "failed") return h("span", { class: "error" }, spec.error || "");
  if (spec.state === "running") {
    return h("span", {}, h("b", {}, p.tool || "thinking"), ` · turn ${p.turns || 0} · ${tokens(p.tokens)} tok · ${money(p.cost_usd)}`,
      p.last_event_at ? [" · last event ", clock("ago", p.last_event_at)] : null);
  }
  if (spec.error) return h("span", { class: "muted" }, spec.error);
  return "";
}

function specRow(spec) {
  const group = groupOf(spec);
  return h("tr", { class: `row ${group}`, dataset: { id: spec.id } },
    h("td", {}, h("a", { href: `/spec/${encodeURIComponent(spec.id)}`, class: "spec-link" }, spec.id)),
    h("td", { class: "title" }, spec.title || ""),
    h("td", {}, h("span", { class: `badge ${group}` }, group)),
    h("td", {}, spec.role || ""),
    h("td", { class: "num" }, nn(spec.step)),
    h("td", { class: "detail" }, detailOf(spec)),
    h("td", { class: "num" }, FINISHED.has(spec.state) ? ago(spec.updated_at) : clock("since", spec.created_at)),
    h("td", { class: "num" }, spec.dispatches),
    h("td", { class: "num" }, money(spec.cost_usd) + (spec.budget_usd ? ` / $${spec.budget_usd.toFixed(2)}` : "")));
}

function drawBoard() {
  const groups = new Map(STATES.map((s) => [s, []]));
  for (const spec of state.specs.values()) groups.get(groupOf(spec)).push(spec);
  const main = document.getElementById("main");
  const counts = h("div", { class: "counts" }, STATES.filter((s) => groups.get(s).length).map((s) =>
    h("a", { href: `#group-${s}`, class: `count ${s}` }, h("b", {}, groups.get(s).length), ` ${s}`)));
  const parts = [h("h1", {}, "Specs"), counts];
  if (!state.specs.size) {
    parts.push(h("p", { class: "empty" }, "No specs yet. Submit one with the button above, ",
      h("code", {}, "iwo-lite submit FILE"), ", or drop a file into the home's inbox/."));
  }
  for (const group of STATES) {
    const specs = groups.get(group);
    if (!specs.length) continue;
    specs.sort((a, b) => (b.updated_at || "").localeCompare(a.updated_at || "") || a.id.localeCompare(b.id));
    const all = state.expanded.has(group) || !FINISHED.has(group) || specs.length <= SHOWN;
    const rows = (all ? specs : specs.slice(0, SHOWN)).map(specRow);
    const more = all ? null : h("button", { type: "button", class: "more", onclick: () => { state.expanded.add(group); drawBoard(); } },
      `show all ${specs.length}`);
    parts.push(h("section", { class: `group ${group}`, id: `group-${group}` },
      h("h2", {}, `${TITLES[group]} `, h("span", { class: "muted" }, `(${specs.length})`)),
      h("table", { class: "specs" },
        h("thead", {}, h("tr", {}, ["id", "title", "state", "role", "NN", "doing / waiting on / error",
          FINISHED.has(group) ? "advanced" : "elapsed", "calls", "$"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows)), more));
  }
  main.replaceChildren(...parts);
}

// -- a spec's page ---------------------------------------------------------------------------------

async function loadSpec(id) {
  const [spec, daemon] = await Promise.all([api(`/api/specs/${encodeURIComponent(id)}`), api("/api/daemon")]);
  state.spec = spec;
  drawDaemon(daemon);
  if (state.tab === "calls") await loadEvents(id);
  if (state.tab === "diff") await loadDiff(id);
  if (state.view === "spec") drawSpec();
}

async function loadEvents(id) {
  const query = state.eventsDispatch ? `?dispatch=${state.eventsDispatch}` : "";
  state.events = await api(`/api/specs/${encodeURIComponent(id)}/events${query}`);
}

async function loadDiff(id) {
  const key = `${state.diffDispatch}|${state.spec ? state.spec.head : ""}|${state.spec ? state.spec.dispatches : ""}`;
  if (state.diffKey === key && state.diff !== null) return;
  const query = state.diffDispatch ? `?dispatch=${state.diffDispatch}` : "";
  state.diff = await api(`/api/specs/${encodeURIComponent(id)}/diff${query}`);
  state.diffKey = key;
}

function actionBar(spec) {
  const id = encodeURIComponent(spec.id);
  const bar = h("div", { class: "actions" });
  const note = h("textarea", { id: "answer-note", rows: 2, placeholder: "a note with your answer — for Revise, the builder's instructions" });
  const act = async (action, body, label) => {
    try {
      const result = await post(`/api/specs/${id}/${action}`, body);
      flash(`${label}: ${result.output || result.gate || spec.id}`);
      if (action === "fork" && result.new_id) { navigate(`/spec/${encodeURIComponent(result.new_id)}`); return; }
      refresh();
    } catch (error) { flash(`${label} refused: ${error.message}`, "bad"); }
  };
  if (spec.state === "waiting") {
    const gate = (spec.gates || []).find((g) => !g.answer) || {};
    bar.append(h("div", { class: "gate" },
      h("div", { class: "question" }, gate.reason && gate.reason !== "blocker" ? h("span", { class: "tag" }, gate.reason) : null, " ", spec.question || gate.question || ""),
      h("div", { class: "muted" }, `gate ${gate.id || ""} · asked by the ${gate.role || spec.role || ""} · deadline ${spec.deadline || ""} (`, clock("left", spec.deadline), ")"),
      note,
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "primary", id: "approve", onclick: () => act("approve", { note: note.value }, "Approved") }, "Approve"),
        h("button", { type: "button", id: "revise", onclick: () => {
          if (!note.value.trim()) { flash("Revise needs instructions for the builder: write them in the box", "bad"); note.focus(); return; }
          act("revise", { text: note.value }, "Sent back to the builder");
        } }, "Revise"),
        h("button", { type: "button", class: "danger", id: "reject", onclick: () => act("reject", { note: note.value }, "Rejected") }, "Reject"))));
  }
  const buttons = h("div", { class: "buttons" });
  if (!FINISHED.has(spec.state)) {
    buttons.append(h("button", { type: "button", class: "danger", id: "cancel", onclick: () => {
      if (confirm(`Cancel ${spec.id}? Its agent is stopped; resume continues it.`)) act("cancel", {}, "Cancelled");
    } }, "Cancel"));
  }
  if (spec.state === "cancelled" || spec.state === "failed") {
    buttons.append(h("button", { type: "button", id: "resume", onclick: () => act("resume", {}, "Resumed") }, "Resume"));
  }
  const ran = [...new Set((spec.steps || []).map((s) => s.role))];
  if (ran.length) {
    const select = h("select", { id: "fork-role" }, ran.map((r) => h("option", { value: r }, r)));
    buttons.append(h("span", { class: "fork" }, "fork from ", select,
      h("button", { type: "button", id: "fork", onclick: () => act("fork", { from: select.value }, "Forked") }, "Fork")));
  }
  if (buttons.childNodes.length) bar.append(buttons);
  return bar;
}

function specHead(spec) {
  const lines = [
    h("div", { class: "crumbs" }, h("a", { href: "/" }, "board"), " / ", spec.id),
    h("h1", {}, spec.title || spec.id),
    h("div", { class: "facts" },
      h("span", { class: `badge ${groupOf(spec)}` }, groupOf(spec)),
      spec.role ? ` ${spec.role}` : "", spec.step ? ` · dispatch ${nn(spec.step)}` : "",
      ` · ${spec.dispatches} call(s) · ${money(spec.cost_usd)}`, spec.budget_usd ? ` of $${spec.budget_usd.toFixed(2)}` : "",
      spec.branch ? [" · ", h("code", {}, spec.branch), spec.head ? ` at ${spec.head.slice(0, 8)}` : ""] : " · shared workdir",
      spec.agent ? ` · ${spec.agent}` : "", " · submitted ", clock("ago", spec.created_at)),
  ];
  if (spec.paused_until) lines.push(h("div", { class: "note warn" }, `paused (${spec.pause_reason}) until ${spec.paused_until} (`, clock("left", spec.paused_until), ")"));
  if (spec.state === "running" && spec.progress) {
    const p = spec.progress;
    lines.push(h("div", { class: "note now" }, "now: ", h("b", {}, p.tool || "thinking"), ` · turn ${p.turns || 0} · ${tokens(p.tokens)} tok · ${money(p.cost_usd)}`,
      p.last_event_at ? [" · last event ", clock("ago", p.last_event_at)] : null));
  }
  if (spec.error) lines.push(h("div", { class: "note bad" }, `error: ${spec.error}`));
  if (spec.parent_id) lines.push(h("div", { class: "note" }, "forked from ", h("a", { href: `/spec/${encodeURIComponent(spec.parent_id)}` }, spec.parent_id)));
  if (spec.recoveries) lines.push(h("div", { class: "note" }, `recovered ${spec.recoveries} time(s); replay saved ${money(spec.saved_usd)} (calls not paid again)`));
  return lines;
}

function took(a) {
  if (!a.started_at) return "";
  const end = a.finished_at ? parseUtc(a.finished_at) : Date.now();
  return span((end - parseUtc(a.started_at)) / 1000) + (a.finished_at ? "" : " so far");
}

function attemptLine(step, a) {
  const t = a.tools || {};
  const notes = [];
  if (a.reattached) notes.push(h("span", { class: "tag" }, "re-attached after restart"));
  if (a.resumed_from) notes.push(h("span", { class: "tag" }, `resumed session ${a.resumed_from.slice(0, 8)}`));
  if (t.calls) notes.push(h("span", { class: "tag" }, `${t.calls} tool call(s)`));
  if (t.failed) notes.push(h("span", { class: "tag bad" }, `${t.failed} FAILED: ${t.failed_tools.join(", ")}`));
  if (t.denied) notes.push(h("span", { class: "tag warn" }, `${t.denied} denied: ${t.denied_tools.join(", ")}`));
  for (const d of a.denials || []) notes.push(h("span", { class: "tag warn" }, `denied ${d.tool}(${d.input || ""})`));
  if (a.cost_note) notes.push(h("span", { class: "tag warn" }, a.cost_note));
  return h("li", { class: a.error ? "attempt failed" : "attempt" },
    h("span", { class: "muted" }, `attempt ${a.attempt} · ${(a.started_at || "").slice(11, 19)} · ${took(a)} · ${money(a.cost_usd)}`,
      a.num_turns ? ` · ${a.num_turns} turns` : "", a.agent ? ` · ${a.agent}` : ""),
    a.verdict ? h("span", { class: "verdict" }, ` → ${a.verdict}`) : null,
    a.finished_at ? null : h("span", { class: "tag now" }, "running"),
    " ", notes,
    a.error ? h("div", { class: "error" }, a.error) : null);
}

function dispatchCard(spec, step) {
  const key = `${spec.id}#${step.step}`;
  const details = h("details", { class: "more-info", dataset: { step: step.step } });
  if (state.open.has(key)) details.open = true;
  const body = h("div", { class: "handoff" }, h("p", { class: "muted" }, "loading…"));
  details.append(h("summary", {}, "handoff and prompt"), body);
  const fill = async () => {
    try {
      const d = await api(`/api/specs/${encodeURIComponent(spec.id)}/dispatches/${step.step}`);
      const handoff = h("div", { class: "markdown" });
      if (d.handoff_html) handoff.innerHTML = d.handoff_html; // markdown-it, raw HTML off: agents' text stays text
      body.replaceChildren(h("h4", {}, "handoff"), d.handoff_html ? handoff : h("p", { class: "muted" }, "no handoff (yet)"),
        h("h4", {}, "prompt"), d.prompt ? h("pre", { class: "prompt" }, d.prompt) : h("p", { class: "muted" }, "no prompt recorded"));
    } catch (error) { body.replaceChildren(h("p", { class: "error" }, error.message)); }
  };
  details.addEventListener("toggle", () => { if (details.open) { state.open.add(key); fill(); } else state.open.delete(key); });
  if (details.open) fill();
  const cost = (step.attempts || []).reduce((sum, a) => sum + (a.cost_usd || 0), 0);
  return h("li", { class: `dispatch ${step.verdict || (step.finished_at ? "" : "running")}` },
    h("div", { class: "dispatch-head" },
      h("b", {}, `${nn(step.step)} ${step.role}`), step.agent ? h("span", { class: "muted" }, ` ${step.agent}`) : null,
      step.verdict ? h("span", { class: "verdict" }, ` → ${step.verdict}`) : h("span", { class: "tag now" }, step.finished_at ? "" : "running"),
      h("span", { class: "muted" }, ` · ${(step.attempts || []).length} attempt(s) · ${money(cost)}`),
      step.commit_sha ? [" · commit ", h("a", { href: "#", class: "commit", onclick: (e) => { e.preventDefault(); state.diffDispatch = String(step.step); showTab("diff"); } }, step.commit_sha.slice(0, 8))] : null),
    step.summary ? h("div", { class: "summary" }, step.summary) : null,
    step.question ? h("div", { class: "question" }, `asked: ${step.question}`) : null,
    step.error ? h("div", { class: "error" }, step.error) : null,
    h("ul", { class: "attempts" }, (step.attempts || []).map((a) => attemptLine(step, a))),
    details);
}

function gateList(spec) {
  if (!spec.gates || !spec.gates.length) return null;
  return h("section", {}, h("h3", {}, "Human gates"), h("table", { class: "gates" },
    h("thead", {}, h("tr", {}, ["gate", "role", "reason", "question", "deadline", "answer", "by / via"].map((c) => h("th", {}, c)))),
    h("tbody", {}, spec.gates.map((g) => h("tr", {},
      h("td", {}, g.id), h("td", {}, g.role || ""), h("td", {}, g.reason || ""), h("td", {}, g.question || ""),
      h("td", {}, g.deadline || ""), h("td", {}, g.answer ? `${g.answer}${g.note ? ": " + g.note : ""}` : h("b", {}, "(waiting)")),
      h("td", {}, [g.answered_by, g.answered_via].filter(Boolean).join(" / ")))))));
}

function timelineTab(spec) {
  if (!spec.steps.length) return h("p", { class: "muted" }, spec.state === "queued" ? "Queued: no agent has run yet." : "No dispatch yet.");
  return [h("ol", { class: "timeline" }, spec.steps.map((s) => dispatchCard(spec, s))), gateList(spec)];
}

function dispatchPicker(spec, value, onchange, label) {
  return h("label", { class: "picker" }, label, " ",
    h("select", { onchange: (e) => onchange(e.target.value) },
      h("option", { value: "", selected: value === "" }, label === "diff of" ? "the whole branch" : "the running / last attempt"),
      spec.steps.map((s) => h("option", { value: String(s.step), selected: value === String(s.step) }, `${nn(s.step)} ${s.role}`))));
}

function callsTab(spec) {
  const ev = state.events;
  const picker = dispatchPicker(spec, state.eventsDispatch, (v) => { state.eventsDispatch = v; refresh(); }, "tool calls of");
  if (!ev) return [picker, h("p", { class: "muted" }, "loading…")];
  if (!ev.step) return [picker, h("p", { class: "muted" }, "No agent has run yet.")];
  const head = h("p", { class: "muted" }, `dispatch ${nn(ev.step)} ${ev.role || ""} · attempt ${ev.attempt} · ${ev.agent || ""} · `,
    ev.finished ? "finished" : h("span", { class: "tag now" }, "running"), ` · ${ev.events.length} tool call(s)`);
  if (!ev.events.length) return [picker, head, h("p", { class: "muted" }, "No tool calls (yet).")];
  const timed = ev.events.some((e) => e.at); // Claude Code's stream carries no times; Codex's rollout does
  return [picker, head, h("table", { class: "calls" },
    h("thead", {}, h("tr", {}, ["#", timed ? "at" : null, "tool", "input", "", "result"].filter((c) => c !== null).map((c) => h("th", {}, c)))),
    h("tbody", {}, ev.events.map((e) => h("tr", { class: `call ${e.status}` },
      h("td", { class: "num" }, e.seq), timed ? h("td", {}, (e.at || "").slice(11, 19)) : null, h("td", {}, h("b", {}, e.tool)),
      h("td", { class: "mono" }, e.input), h("td", {}, e.status === "ok" ? "" : h("span", { class: `tag ${e.status === "failed" ? "bad" : e.status === "denied" ? "warn" : "now"}` }, e.status)),
      h("td", { class: "mono result" }, e.result)))))];
}

function diffFiles(text) {
  const files = [];
  let current = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("diff --git ")) {
      const m = / b\/(.*)$/.exec(line);
      current = { name: m ? m[1] : line.slice(11), added: 0, removed: 0 };
      files.push(current);
    } else if (current && line.startsWith("+") && !line.startsWith("+++")) current.added++;
    else if (current && line.startsWith("-") && !line.startsWith("---")) current.removed++;
  }
  return files;
}

function diffTab(spec) {
  const picker = dispatchPicker(spec, state.diffDispatch, (v) => { state.diffDispatch = v; state.diff = null; refresh(); }, "diff of");
  const text = state.diff;
  if (text === null) return [picker, h("p", { class: "muted" }, "loading…")];
  if (!text.startsWith("diff --git")) return [picker, h("p", { class: "note" }, text || "No change.")];
  const files = diffFiles(text);
  const list = h("ul", { class: "files" }, files.map((f, i) => h("li", {},
    h("a", { href: `#file-${i}` }, f.name), " ", h("span", { class: "add" }, `+${f.added}`), " ", h("span", { class: "del" }, `−${f.removed}`))));
  const pre = h("pre", { class: "diff" });
  let index = -1;
  const lines = [];
  for (const line of text.split("\n")) {
    let kind = "ctx";
    if (line.startsWith("diff --git")) { kind = "file"; index++; }
    else if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("index ")) kind = "meta";
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    lines.push(h("span", { class: `line ${kind}`, id: kind === "file" ? `file-${index}` : null }, line + "\n"));
  }
  pre.append(...lines);
  return [picker, h("p", { class: "muted" }, `${files.length} file(s) changed`), list, pre];
}

function showTab(tab) {
  state.tab = tab;
  if (tab === "diff") state.diff = null;
  refresh();
}

function drawSpec() {
  const spec = state.spec;
  if (!spec) return;
  const tabs = h("div", { class: "tabs" }, [["timeline", "Timeline"], ["calls", "Tool calls"], ["diff", "Diff"]].map(([key, label]) =>
    h("button", { type: "button", class: state.tab === key ? "tab active" : "tab", id: `tab-${key}`, onclick: () => showTab(key) }, label)));
  const body = state.tab === "calls" ? callsTab(spec) : state.tab === "diff" ? diffTab(spec) : timelineTab(spec);
  const scroll = window.scrollY;
  document.getElementById("main").replaceChildren(...specHead(spec), actionBar(spec), tabs, h("div", { class: "tab-body" }, body));
  window.scrollTo(0, scroll);
}

// -- costs -----------------------------------------------------------------------------------------

function barChart(days) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 720, height = 180, pad = 24;
  const top = Math.max(...days.map((d) => d.usd), 0.0001);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + pad}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const bar = (width - pad) / days.length;
  days.forEach((d, i) => {
    const rect = document.createElementNS(ns, "rect");
    const h2 = (d.usd / top) * (height - 10);
    rect.setAttribute("x", pad + i * bar + 2);
    rect.setAttribute("y", height - h2);
    rect.setAttribute("width", Math.max(1, bar - 4));
    rect.setAttribute("height", Math.max(d.usd > 0 ? 1 : 0, h2));
    rect.setAttribute("class", "bar");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${d.day}: $${d.usd.toFixed(4)}`;
    rect.append(title);
    svg.append(rect);
    if (i % 5 === 0 || i === days.length - 1) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", pad + i * bar + bar / 2);
      label.setAttribute("y", height + 16);
      label.setAttribute("class", "axis");
      label.setAttribute("text-anchor", "middle");
      label.textContent = d.day.slice(5);
      svg.append(label);
    }
  });
  const max = document.createElementNS(ns, "text");
  max.setAttribute("x", 2);
  max.setAttribute("y", 12);
  max.setAttribute("class", "axis");
  max.textContent = `$${top.toFixed(2)}`;
  svg.append(max);
  return svg;
}

async function loadCosts() {
  const [costs, daemon] = await Promise.all([api("/api/costs"), api("/api/daemon")]);
  drawDaemon(daemon);
  if (state.view !== "costs") return;
  const last30 = costs.days.reduce((s, d) => s + d.usd, 0);
  document.getElementById("main").replaceChildren(
    h("h1", {}, "Costs"),
    h("div", { class: "counts" },
      h("span", { class: "count" }, h("b", {}, money(costs.total_usd)), " in all"),
      h("span", { class: "count" }, h("b", {}, money(last30)), " in the last 30 days"),
      h("span", { class: "count ok" }, h("b", {}, money(costs.saved_usd)), ` saved by replay (${costs.recoveries} recoveries)`)),
    h("h2", {}, "Per day (UTC), the last 30 days"), barChart(costs.days),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Per role"), h("table", { class: "specs" },
        h("thead", {}, h("tr", {}, h("th", {}, "role"), h("th", {}, "attempts"), h("th", {}, "$"))),
        h("tbody", {}, costs.roles.map((r) => h("tr", {}, h("td", {}, r.role), h("td", { class: "num" }, r.attempts), h("td", { class: "num" }, money(r.usd))))))),
      h("section", {}, h("h2", {}, "The specs that cost most"), h("table", { class: "specs" },
        h("thead", {}, h("tr", {}, h("th", {}, "spec"), h("th", {}, "state"), h("th", {}, "$"))),
        h("tbody", {}, costs.specs.map((s) => h("tr", {},
          h("td", {}, h("a", { href: `/spec/${encodeURIComponent(s.id)}` }, s.id), " ", h("span", { class: "muted" }, s.title || "")),
          h("td", {}, h("span", { class: `badge ${s.state}` }, s.state)), h("td", { class: "num" }, money(s.usd)))))))));
}

// -- routing, the live feed, submit ----------------------------------------------------------------

function route() {
  const path = location.pathname;
  const match = /^\/spec\/(.+)$/.exec(path);
  document.getElementById("nav-board").className = path === "/" ? "active" : "";
  document.getElementById("nav-costs").className = path === "/costs" ? "active" : "";
  if (match) {
    const id = decodeURIComponent(match[1]);
    if (!state.spec || state.spec.id !== id) {
      state.spec = null; state.events = null; state.diff = null; state.diffKey = null;
      state.eventsDispatch = ""; state.diffDispatch = ""; state.tab = "timeline";
    }
    state.view = "spec";
    document.title = `${id} · iwo-lite`;
    return loadSpec(id);
  }
  state.view = path === "/costs" ? "costs" : "board";
  document.title = state.view === "costs" ? "costs · iwo-lite" : "iwo-lite";
  return state.view === "costs" ? loadCosts() : loadBoard(true);
}

function navigate(path) {
  history.pushState(null, "", path);
  guarded(route());
}

let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    if (state.view === "spec" && state.spec) await loadSpec(state.spec.id);
    else if (state.view === "costs") await loadCosts();
    else await loadBoard(false);
  } catch (error) {
    flash(error.message, "bad");
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function guarded(promise) {
  return Promise.resolve(promise).catch((error) => {
    const main = document.getElementById("main");
    main.replaceChildren(h("p", { class: "error" }, error.message), h("p", {}, h("a", { href: "/" }, "back to the board")));
  });
}

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/stream");
  source.addEventListener("hello", () => { live.className = "live on"; live.title = "live: changes show within a second"; });
  source.addEventListener("change", () => refresh());
  source.onerror = () => {
    live.className = "live off";
    live.title = "the dashboard's server does not answer: is `iwo-lite web` still running?";
    const banner = document.getElementById("banner");
    banner.hidden = false;
    banner.textContent = "Lost the connection to the dashboard's server (iwo-lite web): retrying…";
    source.addEventListener("open", () => { refresh(); }, { once: true });
  };
}

function setupSubmit() {
  const dialog = document.getElementById("submit-dialog");
  const text = document.getElementById("submit-text");
  const file = document.getElementById("submit-file");
  const error = document.getElementById("submit-error");
  let filename = null;
  document.getElementById("open-submit").addEventListener("click", () => { error.hidden = true; dialog.showModal(); text.focus(); });
  document.getElementById("submit-cancel").addEventListener("click", () => dialog.close());
  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    if (!chosen) return;
    filename = chosen.name;
    text.value = await chosen.text();
  });
  text.addEventListener("input", () => { filename = null; });
  document.getElementById("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = document.getElementById("submit-id").value.trim();
    try {
      const result = await post("/api/specs", { text: text.value, id: id || null, filename });
      dialog.close();
      text.value = ""; file.value = ""; filename = null; document.getElementById("submit-id").value = "";
      flash(`Submitted ${result.spec_id}`);
      navigate(`/spec/${encodeURIComponent(result.spec_id)}`);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (!link || link.target || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.hash && url.pathname === location.pathname) return;
  if (url.pathname === "/" || url.pathname === "/costs" || url.pathname.startsWith("/spec/")) {
    event.preventDefault();
    navigate(url.pathname);
  }
});
window.addEventListener("popstate", () => guarded(route()));
document.addEventListener("DOMContentLoaded", () => {
  setupSubmit();
  guarded(route());
  listen();
});
