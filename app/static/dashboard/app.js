// Operator dashboard for sandbox-broker. Plain JS modules, no build step, no third-party
// code: it runs under a CSP of script-src 'self' and builds every node with textContent
// (never innerHTML), because sandbox names, owners and tracks come from clients.
import {drawChart} from "./chart.js";

const TOKEN_KEY = "sandbox-broker.admin-token";
const REFRESH_MS = 30000;
const TRACK_PAGES_MAX = 10; // at most 1,000 leases are read to count allocations per track
const STATUSES = ["available", "allocated", "pending_deletion", "deleting", "stale",
  "deletion_failed"];
const LABELS = {available: "Available", allocated: "Allocated",
  pending_deletion: "Pending deletion", deleting: "Deleting", stale: "Stale",
  deletion_failed: "Deletion failed"};
const ACTIONS = {
  sync: {path: "/admin/sync", title: "Sync with the provider",
    text: "Add the sandboxes the provider lists, mark available ones it no longer lists as " +
      "stale, and revive stale ones that are back."},
  cleanup: {path: "/admin/cleanup", title: "Run cleanup",
    text: "Delete the sandboxes pending deletion at the provider now."},
  expire: {path: "/admin/auto-expire", title: "Expire leases",
    text: "Release every lease past its end (plus the grace period) for deletion."},
  retry: {path: "/admin/retry-failed", title: "Retry failed deletions",
    text: "Move every sandbox whose deletion failed back to pending deletion, with a " +
      "fresh set of attempts."},
  "delete-stale": {path: "/admin/bulk-delete", params: {status: "stale"},
    title: "Delete all stale sandboxes", danger: true,
    text: "Mark every stale sandbox for deletion; cleanup then deletes it at the " +
      "provider. This cannot be undone."},
};
const apiBase = document.querySelector('meta[name="api-base"]').content;
const $ = (id) => document.getElementById(id);
const table = {cursors: [null], page: 0, next: null, seq: 0, timer: 0};
let refreshTimer = 0;

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    Object.assign(this, {status, code, requestId});
  }
}

// --- helpers -------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null) node.append(child);
  return node;
}
const pad = (n) => String(n).padStart(2, "0");
function clock(sec, withDate = true) {
  if (sec === null || sec === undefined) return "–";
  const d = new Date(sec * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`
    : time;
}
function age(sec) {
  if (sec === null || sec === undefined) return "–";
  const s = Math.max(0, Math.round(sec));
  if (s < 60) return `${s}s`;
  const parts = (big, bigUnit, small, smallUnit) =>
    (small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`);
  if (s < 3600) return parts(Math.floor(s / 60), "m", s % 60, "s");
  if (s < 86400) return parts(Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "m");
  return parts(Math.floor(s / 86400), "d", Math.floor((s % 86400) / 3600), "h");
}
const summaryText = (summary) => Object.entries(summary || {})
  .map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`).join(" · ") || "nothing to do";
const errorText = (err) => err.code ? `${err.message} (${err.code})` : err.message;
const show = (node, visible) => { node.hidden = !visible; };

async function api(path, {method = "GET", params = {}} = {}) {
  const url = new URL(apiBase + path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  let response;
  try {
    response = await fetch(url, {method, cache: "no-store", credentials: "omit", headers: {
      Accept: "application/json",
      Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}`}});
  } catch (err) {
    throw new ApiError(0, "NETWORK", `the broker did not answer (${err.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = (body && body.detail) || {};
    throw new ApiError(response.status, detail.code || `HTTP_${response.status}`,
      detail.message || response.statusText || "request failed", detail.request_id);
  }
  return body;
}

// A 401 mid-session means the token was revoked or rotated: back to the sign-in form.
function sessionLost(err) {
  if (err.status !== 401) return false;
  signOut(`Signed out: ${errorText(err)}`);
  return true;
}

// --- sign in / out -------------------------------------------------------------------
function showLoginError(message) {
  $("login-error").textContent = message;
  show($("login-error"), Boolean(message));
  $("token").setAttribute("aria-invalid", message ? "true" : "false");
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login-submit").disabled = true;
  try {
    await api("/admin/stats");
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLoginError(`Sign-in failed: ${errorText(err)}`);
    $("token").focus();
    return;
  } finally {
    $("login-submit").disabled = false;
  }
  showLoginError("");
  $("token").value = "";
  show($("login"), false);
  show($("dashboard"), true);
  show($("session"), true);
  $("dashboard-title").focus();
  refreshTimer = window.setInterval(() => { if (!document.hidden) refreshOverview(); },
    REFRESH_MS);
  await Promise.all([refreshOverview(), loadTable()]);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  window.clearInterval(refreshTimer);
  show($("dashboard"), false);
  show($("session"), false);
  show($("login"), true);
  showLoginError(message || "");
  $("token").focus();
}

// --- overview: tiles, chart, tracks, jobs ---------------------------------------------
function renderTiles(stats) {
  const tiles = [...STATUSES, "total"].map((status) => el("li",
    {class: `tile s-${status}`, id: `tile-${status}`},
    el("span", {class: "tile-label"}, status === "total" ? "Total" : LABELS[status]),
    el("span", {class: "tile-value"}, String(stats[status] ?? 0))));
  $("tiles").replaceChildren(...tiles);
  const oldest = stats.oldest_pending_deletion_age_sec;
  $("oldest").textContent = oldest === null || oldest === undefined
    ? "No deletion is pending." : `Oldest pending deletion: waiting ${age(oldest)}.`;
}

// The chart ends with the counts just read, so an action shows at once, not a minute later.
function renderChart(history, stats) {
  const points = [...history.samples, {at: Math.floor(Date.now() / 1000), counts: stats}];
  drawChart($("chart"), points, STATUSES, "Pool counts by status over time");
  $("legend").replaceChildren(...STATUSES.map((s) => el("li", {},
    el("span", {class: `swatch s-${s}`}), LABELS[s])));
  const n = history.samples.length;
  const latest = STATUSES.map((s) => `${LABELS[s].toLowerCase()} ${stats[s] ?? 0}`);
  $("chart-caption").textContent = `${n} sample${n === 1 ? "" : "s"}, one every ` +
    `${age(history.interval_sec)}, over the last ${age(history.window_sec)} ` +
    `(kept in memory by the replica that answered). Now: ${latest.join(", ")}.`;
}

async function countTracks() {
  const counts = new Map();
  let cursor = null;
  let pages = 0;
  do {
    const page = await api("/admin/sandboxes",
      {params: {status: "allocated", limit: 100, cursor}});
    for (const s of page.sandboxes) {
      const key = s.track_name || "(no track)";
      counts.set(key, (counts.get(key) || 0) + 1);
    }
    cursor = page.next_cursor;
    pages += 1;
  } while (cursor && pages < TRACK_PAGES_MAX);
  const rows = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  $("tracks-body").replaceChildren(...(rows.length ? rows.map(([track, n]) => el("tr", {},
    el("td", {}, track), el("td", {class: "num"}, String(n))))
    : [el("tr", {}, el("td", {colspan: "2", class: "muted"}, "No live leases."))]));
  $("tracks-note").textContent = cursor
    ? `Counted from the first ${pages * 100} leases only.` : "";
}

const outcomeClass = (outcome) => (outcome === "ok" || outcome === "never" ? outcome : "error");

function renderJobs(health) {
  const breaker = health.provider_breaker;
  $("breaker").textContent = breaker.replace("_", "-");
  $("breaker").className = `badge breaker-${breaker}`;
  $("jobs-body").replaceChildren(...health.jobs.map((job) => el("tr", {},
    el("th", {scope: "row"}, job.job),
    el("td", {}, el("span", {class: `badge outcome-${outcomeClass(job.outcome)}`},
      job.outcome.replaceAll("_", " "))),
    el("td", {}, job.started_at ? clock(job.started_at) : "never"),
    el("td", {class: "num"},
      job.duration_sec === null ? "–" : `${job.duration_sec.toFixed(2)}s`),
    el("td", {class: job.error ? "error-text" : ""},
      job.error || (job.started_at ? summaryText(job.summary) : "–")))));
}

async function refreshOverview() {
  const stats = api("/admin/stats");
  const results = await Promise.allSettled([
    stats.then(renderTiles),
    Promise.all([api("/admin/stats/history"), stats]).then(([h, now]) => renderChart(h, now)),
    countTracks(),
    api("/admin/jobs").then(renderJobs),
  ]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  if (failed.some(sessionLost)) return;
  $("pool-error").textContent = failed.length ? `Could not load: ${errorText(failed[0])}` : "";
  show($("pool-error"), failed.length > 0);
  $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

// --- sandbox table ---------------------------------------------------------------------
function filterParams() {
  const params = {};
  for (const [key, value] of new FormData($("filters"))) {
    const text = String(value).trim();
    if (text) params[key] = text;
  }
  return params;
}

function firstPage() {
  Object.assign(table, {cursors: [null], page: 0});
  return loadTable();
}

async function loadTable() {
  const seq = ++table.seq; // answers to superseded searches are dropped
  const params = {...filterParams(), cursor: table.cursors[table.page]};
  $("sandbox-table").setAttribute("aria-busy", "true");
  try {
    const page = await api("/admin/sandboxes", {params});
    if (seq !== table.seq) return;
    table.next = page.next_cursor;
    renderRows(page.sandboxes);
    show($("table-error"), false);
  } catch (err) {
    if (seq !== table.seq || sessionLost(err)) return;
    $("table-error").textContent = `Could not list sandboxes: ${errorText(err)}`;
    show($("table-error"), true);
  } finally {
    if (seq === table.seq) $("sandbox-table").setAttribute("aria-busy", "false");
  }
}

function renderRows(rows) {
  $("sandbox-body").replaceChildren(...(rows.length ? rows.map((s) => {
    const open = el("button", {type: "button", class: "link",
      onclick: () => openDetails(s, open)}, s.name);
    // The whole row opens the details for a mouse; the name's button is the keyboard's way.
    const onRow = (event) => { if (event.target !== open) openDetails(s, open); };
    return el("tr", {class: "row", onclick: onRow},
      el("td", {}, open),
      el("td", {}, el("span", {class: `badge s-${s.status}`}, LABELS[s.status] || s.status)),
      el("td", {}, s.owner || "–"), el("td", {}, s.track_name || "–"),
      el("td", {}, clock(s.allocated_at)), el("td", {}, clock(s.expires_at)),
      el("td", {}, clock(s.updated_at)));
  }) : [el("tr", {}, el("td", {colspan: "7", class: "muted"}, "No sandbox matches."))]));
  $("table-caption").textContent = `${rows.length} sandbox${rows.length === 1 ? "" : "es"} ` +
    "on this page. Choose a name for its details.";
  $("page-label").textContent = `Page ${table.page + 1}`;
  $("prev-page").disabled = table.page === 0;
  $("next-page").disabled = !table.next;
}

function openDetails(s, opener) {
  const fields = [["Sandbox id", s.sandbox_id], ["Name", s.name], ["Status", LABELS[s.status]],
    ["Owner", s.owner], ["Track", s.track_name], ["External id", s.external_id],
    ["SFDC account", s.sfdc_account_id], ["Allocated", clock(s.allocated_at)],
    ["Expires", clock(s.expires_at)], ["Extensions", s.extensions],
    ["Created", clock(s.created_at)], ["Updated", clock(s.updated_at)],
    ["Deletion requested", clock(s.deletion_requested_at)],
    ["Deletion attempts", s.deletion_attempts], ["Next attempt", clock(s.next_attempt_at)],
    ["Last error", s.last_error]];
  $("details-title").textContent = `Sandbox ${s.name}`;
  $("details-list").replaceChildren(...fields.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "–" : String(v))]));
  const dialog = $("details");
  dialog.addEventListener("close", () => opener.focus(), {once: true});
  dialog.showModal();
  $("details-close").focus();
  loadTimeline(s.sandbox_id);
}

async function loadTimeline(sandboxId) {
  const list = $("timeline");
  list.replaceChildren(el("li", {class: "muted"}, "Loading…"));
  try {
    const page = await api(`/admin/sandboxes/${encodeURIComponent(sandboxId)}/events`,
      {params: {limit: 100}});
    list.replaceChildren(...(page.events.length ? page.events.map((e) =>
      el("li", {}, `${clock(Math.floor(e.at))} · ${e.type} · ${e.actor}` +
        (e.reason ? ` · ${e.reason}` : ""))) : [el("li", {class: "muted"}, "No events.")]));
  } catch (error) {
    list.replaceChildren(el("li", {class: "muted"}, `Timeline unavailable: ${error.message}`));
  }
}

// --- actions -----------------------------------------------------------------------------
function confirmDialog(action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = `${action.title}?`;
  $("confirm-text").textContent = action.text;
  $("confirm-ok").textContent = action.danger ? "Yes, delete" : "Run now";
  $("confirm-ok").className = action.danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const onClose = () => resolve(false); // Escape closes the dialog: a refusal
    const finish = (ok) => {
      dialog.removeEventListener("close", onClose);
      dialog.close();
      resolve(ok);
    };
    dialog.addEventListener("close", onClose, {once: true});
    $("confirm-ok").onclick = () => finish(true);
    $("confirm-cancel").onclick = () => finish(false);
    dialog.showModal();
    $("confirm-cancel").focus(); // the safe choice is the default
  });
}

async function runAction(button) {
  const action = ACTIONS[button.dataset.action];
  const result = $("action-result");
  if (!(await confirmDialog(action))) {
    button.focus();
    return;
  }
  const buttons = document.querySelectorAll("[data-action]");
  buttons.forEach((b) => { b.disabled = true; });
  result.className = "action-result";
  result.textContent = `${action.title}: running…`;
  try {
    const answer = await api(action.path, {method: "POST", params: action.params});
    result.className = "action-result ok";
    result.textContent = `${action.title}: done. ${summaryText(answer.summary)}.`;
  } catch (err) {
    if (sessionLost(err)) return;
    result.className = "action-result error";
    result.textContent = `${action.title} failed: ${errorText(err)}`;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  button.focus();
  await Promise.all([refreshOverview(), loadTable()]);
}

// --- wiring --------------------------------------------------------------------------
function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) showLoginError("Paste an admin token first.");
    else signIn(token);
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", () => Promise.all([refreshOverview(), loadTable()]));
  document.querySelectorAll("[data-action]").forEach((button) =>
    button.addEventListener("click", () => runAction(button)));
  const filters = $("filters");
  filters.addEventListener("submit", (event) => { event.preventDefault(); firstPage(); });
  filters.addEventListener("reset", () => window.setTimeout(firstPage, 0));
  filters.addEventListener("change", (event) => {
    if (event.target.tagName === "SELECT") firstPage();
  });
  filters.addEventListener("input", (event) => {
    if (event.target.tagName !== "INPUT") return;
    window.clearTimeout(table.timer);
    table.timer = window.setTimeout(firstPage, 300);
  });
  $("prev-page").addEventListener("click", () => { table.page -= 1; loadTable(); });
  $("next-page").addEventListener("click", () => {
    table.cursors[table.page + 1] = table.next;
    table.page += 1;
    loadTable();
  });
  $("details-close").addEventListener("click", () => $("details").close());
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $("token").focus();
}

wire();
