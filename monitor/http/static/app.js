// The dashboard (SPEC 6.3): plain ES module, no build step, no third party.
//
// Data flow: the token comes from `#token=` or the sign-in form and lives in
// sessionStorage. The API is read with `fetch` + Authorization header; live
// changes come over one EventSource (`?access_token=`, the only place a token
// may ride in a URL). Every incident the page holds is in `state.incidents`;
// the three lists are views of that map, so an SSE event, a reload and an
// ack answer all go through the same `apply()` + `render()`.
//
// Tenancy is the server's job: the page shows whatever the API returns for
// its token and never filters by contract itself.

import { translate } from "./i18n.js";

const TOKEN_KEY = "monitor.token"; // sessionStorage: gone when the tab closes
const LANG_KEY = "monitor.lang"; // localStorage: a preference, not a secret
const ACTOR_KEY = "monitor.actor";
const RECENT_LIMIT = 50;
const ALARMS_SHOWN = 20;
const ACTIVE = ["open", "notified", "acknowledged"];
const ACKABLE = new Set(["deferred", "open", "notified"]);
const SEVERITIES = ["critical", "major", "minor", "warning", "info", "clear"];

const state = {
  lang: "en",
  token: null,
  me: null,
  skew: 0, // daemon clock minus browser clock, ms (the daemon clock may be simulated)
  incidents: new Map(),
  rows: new Map(), // incident id -> row record (DOM kept across updates so focus survives)
  contracts: null,
  contractsBoundary: null, // daemon-time ms of the next window opening or closing
  contractsLoading: false,
  es: null,
  lastEventId: "",
  retry: 0,
  retryTimer: null,
  loading: null,
  reloadAgain: false,
  queue: [],
  loaded: false,
  detailId: null,
  detailTimer: null,
  clockTimer: null,
};

// -- small helpers -------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);
const t = (key, vars) => translate(state.lang, key, vars);
const incLabel = (id) => `INC-${id}`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const daemonNow = () => Date.now() + state.skew;

function syncClock(iso) {
  const at = Date.parse(iso);
  if (!Number.isNaN(at)) state.skew = at - Date.now();
}

function formatTime(iso, withSeconds = false) {
  const when = new Date(iso);
  const sameYear = when.getFullYear() === new Date(daemonNow()).getFullYear();
  const opts = {
    weekday: "short",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  };
  if (!sameYear) opts.year = "numeric";
  if (withSeconds) opts.second = "2-digit";
  return new Intl.DateTimeFormat(state.lang === "ja" ? "ja-JP" : "en-GB", opts).format(when);
}

// A time in the browser's zone; the exact RFC 3339 from the API on hover.
function timeEl(iso) {
  if (!iso) return el("span", { class: "none", text: "—" });
  return el("time", { datetime: iso, title: iso, text: formatTime(iso) });
}

function duration(ms) {
  let s = Math.max(0, Math.floor(Math.abs(ms) / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const u = (k) => t(`u.${k}`);
  const pad = (n) => String(n).padStart(2, "0");
  if (d > 0) return `${d}${u("d")} ${h}${u("h")}`;
  if (h > 0) return `${h}${u("h")} ${pad(m)}${u("m")}`;
  return `${m}${u("m")} ${pad(s)}${u("s")}`;
}

// Countdowns are refreshed by the one-second tick, from `data-at`.
function countdownEl(iso) {
  return el("span", { class: "countdown", "data-at": iso });
}

function updateCountdown(node) {
  const left = Date.parse(node.dataset.at) - daemonNow();
  node.textContent = left >= 0 ? t("in", { d: duration(left) }) : t("ago", { d: duration(left) });
  node.classList.toggle("overdue", left < 0);
}

function badge(kind, value) {
  // Text first, colour second: the word is always there (not colour alone).
  return el("span", { class: `badge ${kind}-${value}`, "data-value": value, text: t(`${kind}.${value}`) });
}

function announce(text) {
  const node = $("#announce");
  node.textContent = "";
  // A fresh text node after a tick makes screen readers read it again.
  setTimeout(() => {
    node.textContent = text;
  }, 30);
}

function showBanner(text) {
  const node = $("#banner");
  node.textContent = text;
  node.hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

// -- API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${state.token}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch {
    throw new ApiError(0, t("error.network"));
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (resp.status === 401) {
    signOut(t("login.rejected"));
    throw new ApiError(401, t("login.rejected"));
  }
  if (!resp.ok) throw new ApiError(resp.status, body?.error ?? resp.statusText);
  return body;
}

async function fetchAll(path, maxPages = 5) {
  const items = [];
  let after = null;
  for (let page = 0; page < maxPages; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const body = await api(after ? `${path}${sep}after=${encodeURIComponent(after)}` : path);
    items.push(...body.items);
    if (!body.next) break;
    after = body.next;
  }
  return items;
}

async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function failed(error) {
  if (error.status === 401) return; // already back at the sign-in form
  showBanner(error.status === 0 ? t("error.network") : t("error.server", { reason: error.message }));
}

// -- language ------------------------------------------------------------------------

function pickLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved === "en" || saved === "ja") return saved;
  return (navigator.language || "").toLowerCase().startsWith("ja") ? "ja" : "en";
}

function applyLang() {
  document.documentElement.lang = state.lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-aria]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAria));
  }
  const other = state.lang === "ja" ? "en" : "ja";
  const button = $("#lang");
  button.textContent = t("lang.switch");
  button.lang = other;
  button.setAttribute("aria-label", t("lang.switch.label"));
  showRole();
  setLive(state.liveMode ?? "connecting");
  // Rows are rebuilt in the new language; the language button keeps focus.
  for (const row of state.rows.values()) row.tr.remove();
  state.rows.clear();
  for (const table of document.querySelectorAll("section table")) table.tHead.replaceChildren();
  if (state.loaded) render();
  if (state.contracts) renderContracts();
  if (state.detailId !== null && $("#detail").open) loadDetail(state.detailId);
  tick();
}

function setLang(lang) {
  state.lang = lang;
  localStorage.setItem(LANG_KEY, lang);
  applyLang();
}

// -- sign-in ---------------------------------------------------------------------

function tokenFromHash() {
  const hash = location.hash.replace(/^#/, "");
  if (!hash.includes("token=")) return null;
  return new URLSearchParams(hash).get("token");
}

function showLogin(message) {
  $("#board").hidden = true;
  $("#login").hidden = false;
  $("#signout").hidden = true;
  $("#role").hidden = true;
  $("#live").hidden = true;
  $("#clock").hidden = true;
  const error = $("#login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("#token-input").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  closeStream();
  clearTimeout(state.retryTimer);
  if ($("#detail").open) $("#detail").close();
  Object.assign(state, {
    token: null, me: null, loaded: false, lastEventId: "", queue: [], contracts: null,
    contractsBoundary: null,
  });
  state.incidents.clear();
  for (const row of state.rows.values()) row.tr.remove();
  state.rows.clear();
  // The next token may have another role and other contracts: start blank.
  for (const section of document.querySelectorAll("#board section")) {
    $("table", section).hidden = true;
    $("tbody", section).replaceChildren();
    $(".empty", section).hidden = false;
    $(".empty", section).textContent = t("loading");
  }
  for (const count of document.querySelectorAll(".jump .count")) count.textContent = "0";
  showLogin(message);
}

async function start(token) {
  state.token = token;
  let me;
  try {
    me = await api("/api/v1/whoami");
  } catch (error) {
    if (error.status === 401) return;
    failed(error);
    scheduleRetry(() => start(token));
    return;
  }
  if (!me.may.read) {
    signOut(t("login.agent"));
    return;
  }
  hideBanner();
  state.me = me;
  syncClock(me.now);
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#signout").hidden = false;
  $("#clock").hidden = false;
  $("#actor-row").hidden = !me.may.ack;
  $("#actor").value = localStorage.getItem(ACTOR_KEY) ?? "";
  $("#actor").placeholder = me.role;
  showRole();
  connect();
}

function showRole() {
  const node = $("#role");
  if (!state.me) return;
  node.hidden = false;
  node.textContent = `${t("role")}: ${t(`role.${state.me.role}`)}`;
  node.dataset.role = state.me.role;
}

function scheduleRetry(fn) {
  clearTimeout(state.retryTimer);
  const delay = Math.min(30000, 1000 * 2 ** state.retry);
  state.retry += 1;
  state.retryTimer = setTimeout(fn, delay);
}

// -- live feed -------------------------------------------------------------------

function setLive(mode) {
  state.liveMode = mode;
  const node = $("#live");
  node.hidden = !state.me;
  node.dataset.live = mode;
  node.textContent = t(`live.${mode}`);
}

function closeStream() {
  if (state.es) state.es.close();
  state.es = null;
}

function connect() {
  closeStream();
  const params = new URLSearchParams({ access_token: state.token });
  // A new EventSource cannot send Last-Event-ID itself; the API takes it here too.
  if (state.lastEventId) params.set("last_event_id", state.lastEventId);
  const es = new EventSource(`/api/v1/events?${params}`);
  state.es = es;
  setLive("connecting");
  es.addEventListener("open", () => {
    if (es !== state.es) return;
    state.retry = 0;
    setLive("live");
    hideBanner();
    // Without an event id the server cannot replay what we missed, so the
    // lists are (re)loaded — after the stream is open, so nothing falls
    // between the snapshot and the stream.
    if (!state.lastEventId || !state.loaded) reload();
  });
  es.addEventListener("incident", (event) => {
    if (es !== state.es) return;
    if (event.lastEventId) state.lastEventId = event.lastEventId;
    let inc;
    try {
      inc = JSON.parse(event.data);
    } catch {
      return;
    }
    if (state.loading) {
      state.queue.push(inc); // applied on top of the snapshot being loaded
      return;
    }
    apply(inc);
    render();
    if (inc.id === state.detailId) refreshDetailSoon();
    resyncClockSoon();
  });
  es.addEventListener("reset", () => {
    if (es !== state.es) return;
    reload();
  });
  es.addEventListener("error", () => {
    if (es !== state.es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error, not a dropped connection): check
      // the token, then open a new stream that resumes from our last id.
      setLive("offline");
      closeStream();
      if (!state.loaded) reload();
      scheduleRetry(async () => {
        try {
          const me = await api("/api/v1/whoami");
          syncClock(me.now);
          connect();
        } catch (error) {
          if (error.status !== 401) {
            failed(error);
            connect();
          }
        }
      });
    } else {
      setLive("reconnecting"); // EventSource retries by itself, with Last-Event-ID
    }
  });
}

function resyncClockSoon() {
  // A jump of a simulated clock shows up as a burst of events; re-read the
  // daemon's now once things are quiet so countdowns stay right.
  clearTimeout(state.clockTimer);
  state.clockTimer = setTimeout(async () => {
    try {
      syncClock((await api("/api/v1/whoami")).now);
    } catch (error) {
      failed(error);
    }
  }, 500);
}

// -- incidents -------------------------------------------------------------------

function apply(inc) {
  state.incidents.set(inc.id, inc);
}

async function reload() {
  if (state.loading) {
    state.reloadAgain = true;
    return;
  }
  const token = state.token;
  state.loading = (async () => {
    try {
      const lists = await Promise.all([
        api("/api/v1/whoami"),
        ...[...ACTIVE, "deferred"].map((s) => fetchAll(`/api/v1/incidents?state=${s}&limit=1000`)),
        api(`/api/v1/incidents?state=resolved&limit=${RECENT_LIMIT}`).then((b) => b.items),
      ]);
      if (token !== state.token) return;
      const [me, ...groups] = lists;
      state.me = me;
      syncClock(me.now);
      state.incidents = new Map();
      for (const group of groups) for (const inc of group) apply(inc);
      state.loaded = true;
      hideBanner();
    } catch (error) {
      failed(error);
      if (error.status !== 401) scheduleRetry(reload);
    } finally {
      for (const inc of state.queue) apply(inc);
      state.queue = [];
      state.loading = null;
    }
  })();
  await state.loading;
  if (token !== state.token) return;
  if (state.loaded) render();
  loadContracts();
  if (state.detailId !== null) refreshDetailSoon();
  if (state.reloadAgain) {
    state.reloadAgain = false;
    reload();
  }
}

function sections() {
  const all = [...state.incidents.values()].sort((a, b) => b.id - a.id);
  const recent = all.filter((i) => i.state === "resolved").slice(0, RECENT_LIMIT);
  // Forget resolved incidents that fell off the recent list: memory stays bounded.
  const keep = new Set(recent.map((i) => i.id));
  for (const inc of all) if (inc.state === "resolved" && !keep.has(inc.id)) state.incidents.delete(inc.id);
  return {
    open: all.filter((i) => ACTIVE.includes(i.state)),
    deferred: all.filter((i) => i.state === "deferred"),
    recent,
  };
}

const COLUMNS = [
  "id", "state", "severity", "contract", "device", "code", "title", "count",
  "first_seen", "last_seen", "due",
];

function headRow(columns) {
  return el("tr", {}, ...columns.map((c) => el("th", { scope: "col", text: t(`col.${c}`) })));
}

function render() {
  const canAct = Boolean(state.me?.may?.ack);
  const columns = canAct ? [...COLUMNS, "actions"] : COLUMNS;
  const groups = sections();
  for (const [name, items] of Object.entries(groups)) {
    const section = $(`section[data-section="${name}"]`);
    const table = $("table", section);
    const tbody = table.tBodies[0];
    // The columns depend on the role (actions): rebuild when they differ.
    if (table.tHead.rows[0]?.cells.length !== columns.length) {
      table.tHead.replaceChildren(headRow(columns));
    }
    let prev = null;
    for (const inc of items) {
      const row = rowFor(inc, canAct);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (row.tr !== want) tbody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    let extra = prev ? prev.nextSibling : tbody.firstChild;
    while (extra) {
      const next = extra.nextSibling;
      extra.remove();
      extra = next;
    }
    table.hidden = items.length === 0;
    const empty = $(".empty", section);
    empty.hidden = items.length > 0;
    empty.textContent = t(`empty.${name}`);
    $(`#count-${name}`).textContent = String(items.length);
  }
  for (const [id, row] of state.rows) if (!row.tr.isConnected) state.rows.delete(id);
  tick();
}

function cell(column, ...children) {
  return el("td", { "data-label": t(`col.${column}`), class: `c-${column}` }, ...children);
}

function rowFor(inc, canAct) {
  let row = state.rows.get(inc.id);
  if (!row) {
    const label = incLabel(inc.id);
    row = { tr: el("tr", { "data-id": inc.id }), cells: {} };
    row.open = el("button", {
      type: "button", class: "link", "aria-haspopup": "dialog",
      "aria-label": t("details", { id: label }), text: label,
      onclick: () => openDetail(inc.id),
    });
    for (const column of COLUMNS) row.cells[column] = cell(column);
    row.cells.id.append(row.open);
    row.tr.append(...COLUMNS.map((c) => row.cells[c]));
    if (canAct) {
      row.ack = actionButton("ack", inc.id);
      row.resolve = actionButton("resolve", inc.id);
      row.tr.append(cell("actions", el("div", { class: "actions" }, row.ack, row.resolve)));
    }
    state.rows.set(inc.id, row);
  }
  if (row.inc !== inc) fillRow(row, inc);
  return row;
}

function fillRow(row, inc) {
  row.inc = inc;
  row.tr.dataset.state = inc.state;
  row.tr.dataset.severity = inc.severity;
  const c = row.cells;
  c.state.replaceChildren(badge("state", inc.state));
  c.severity.replaceChildren(badge("sev", inc.severity));
  c.contract.textContent = inc.contract;
  c.device.textContent = inc.device;
  c.code.textContent = inc.code;
  c.title.textContent = inc.title ?? "";
  c.count.textContent = String(inc.count);
  c.first_seen.replaceChildren(timeEl(inc.first_seen));
  c.last_seen.replaceChildren(timeEl(inc.last_seen));
  c.due.replaceChildren(...dueParts(inc));
  if (row.ack) updateActions(row.ack, row.resolve, inc);
}

function dueParts(inc) {
  if (inc.state === "deferred" && inc.due_at) {
    return [el("span", { class: "due-kind", text: t("due") }), " ", timeEl(inc.due_at), " ",
      countdownEl(inc.due_at)];
  }
  if (!inc.respond_by) return [el("span", { class: "none", text: "—" })];
  const parts = [el("span", { class: "due-kind", text: t("respond_by") }), " ", timeEl(inc.respond_by)];
  // The SLA clock only matters until someone has acknowledged.
  if (ACKABLE.has(inc.state)) parts.push(" ", countdownEl(inc.respond_by));
  return parts;
}

function actionButton(kind, id) {
  const button = el("button", {
    type: "button", class: kind === "ack" ? "primary small" : "danger small", "data-action": kind,
    text: t(kind),
  });
  button.addEventListener("click", () => act(kind, id, button));
  return button;
}

// aria-disabled rather than disabled: a disabled button drops keyboard focus.
function updateActions(ack, resolve, inc) {
  const canAck = ACKABLE.has(inc.state);
  const canResolve = inc.state !== "resolved";
  ack.setAttribute("aria-disabled", String(!canAck));
  resolve.setAttribute("aria-disabled", String(!canResolve));
  ack.hidden = inc.state === "resolved";
  resolve.hidden = inc.state === "resolved";
  const label = incLabel(inc.id);
  ack.setAttribute("aria-label", `${t("ack")} ${label}`);
  if (resolve.dataset.confirm !== "1") resolve.setAttribute("aria-label", `${t("resolve")} ${label}`);
}

function actor() {
  const name = $("#actor").value.trim();
  localStorage.setItem(ACTOR_KEY, name);
  return name || state.me?.role || "staff";
}

async function act(kind, id, button) {
  if (button.getAttribute("aria-disabled") === "true" || button.getAttribute("aria-busy") === "true") return;
  const label = incLabel(id);
  if (kind === "resolve" && button.dataset.confirm !== "1") {
    // Resolving ends the incident for good: a second press confirms it,
    // without a modal confirm() that blocks the page.
    button.dataset.confirm = "1";
    button.textContent = t("resolve.confirm");
    button.setAttribute("aria-label", `${t("resolve.confirm")} ${label}`);
    announce(t("resolve.confirm.hint", { id: label }));
    setTimeout(() => resetConfirm(button, id), 5000);
    return;
  }
  button.setAttribute("aria-busy", "true");
  try {
    const updated = await api(`/api/v1/incidents/${id}/${kind}`, {
      method: "POST",
      body: JSON.stringify({ by: actor() }),
    });
    apply(updated);
    render();
    announce(t(`done.${kind}`, { id: label }));
    if (state.detailId === id) refreshDetailSoon(0);
  } catch (error) {
    if (error.status === 404) {
      state.incidents.delete(id);
      render();
      announce(t("error.gone", { id: label }));
    } else if (error.status !== 401) {
      showBanner(t("error.action", { id: label, reason: error.message }));
    }
  } finally {
    button.removeAttribute("aria-busy");
    resetConfirm(button, id);
    keepFocus(button, id);
  }
}

function resetConfirm(button, id) {
  if (button.dataset.confirm !== "1") return;
  delete button.dataset.confirm;
  button.textContent = t("resolve");
  button.setAttribute("aria-label", `${t("resolve")} ${incLabel(id)}`);
}

// After an action a row may have moved to another list (the move drops
// focus): put the focus back on the row's incident button.
function keepFocus(button, id) {
  if (button.isConnected && !button.hidden && document.activeElement === document.body) {
    button.focus();
    return;
  }
  if (document.activeElement === document.body || !document.activeElement) {
    const row = state.rows.get(id);
    if (row?.tr.isConnected) row.open.focus();
  }
}

// -- service windows ---------------------------------------------------------------

async function loadContracts() {
  if (state.contractsLoading || !state.token) return;
  state.contractsLoading = true;
  try {
    const list = await api("/api/v1/contracts");
    const hours = await mapLimit(list.items, 6, (c) =>
      api(`/api/v1/contracts/${encodeURIComponent(c.id)}/hours?next=1`).catch(() => null));
    state.contracts = list.items.map((c, i) => ({ ...c, window: hours[i]?.window ?? null }));
    // The page re-reads the windows when one opens or closes (on the daemon's
    // clock), instead of polling.
    let boundary = null;
    for (const c of state.contracts) {
      for (const iso of [c.window?.end, c.next_start]) {
        const at = iso ? Date.parse(iso) : NaN;
        if (!Number.isNaN(at) && (boundary === null || at < boundary)) boundary = at;
      }
    }
    state.contractsBoundary = boundary;
    renderContracts();
  } catch (error) {
    failed(error);
  } finally {
    state.contractsLoading = false;
  }
}

function renderContracts() {
  const section = $("#sec-contracts");
  const table = $("table", section);
  const empty = $(".empty", section);
  const items = state.contracts ?? [];
  table.tHead.replaceChildren(headRow(["contract", "customer", "plan", "window", "next"]));
  const rows = items.map((c) => {
    const open = Boolean(c.in_hours);
    // A window is only worth showing while the contract covers its devices.
    const cover = coverage(c);
    const value = cover ?? (open ? "open" : "closed");
    const status = el("span", {
      class: `badge window-${cover ? "closed" : value}`, "data-value": value, text: t(`window.${value}`),
    });
    const windowCell = [status];
    if (!cover && open && c.window?.end) {
      windowCell.push(" ", timeUntil(c.window.end));
    }
    const next = c.next_start && !cover
      ? [timeEl(c.next_start), " ", countdownEl(c.next_start)]
      : [el("span", { class: "none", text: t("window.none") })];
    return el("tr", { "data-contract": c.id },
      el("td", { "data-label": t("col.contract"), text: c.id }),
      el("td", { "data-label": t("col.customer"), text: c.customer }),
      el("td", { "data-label": t("col.plan") }, c.plan, el("span", { class: "hint", text: ` ${c.hours}` })),
      el("td", { "data-label": t("col.window"), class: "c-window" }, ...windowCell),
      el("td", { "data-label": t("col.next") }, ...next));
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  empty.hidden = rows.length > 0;
  empty.textContent = t("empty.contracts");
  tick();
}

// SPEC 4.2 coverage of a contract today (in its zone): null when covered,
// else why not. Dates compare as YYYY-MM-DD strings.
function coverage(c) {
  if (!c.registered) return "unregistered";
  const today = new Intl.DateTimeFormat("en-CA", {
    timeZone: c.timezone, year: "numeric", month: "2-digit", day: "2-digit",
  }).format(new Date(daemonNow()));
  if (today < c.start) return "not-started";
  const [y, m, d] = c.start.split("-");
  const year = Number(y) + c.years;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  // start + years; Feb 29 into a year without one is Mar 1 (SPEC 4.2).
  const end = m === "02" && d === "29" && !leap ? `${year}-03-01` : `${year}-${m}-${d}`;
  return today >= end ? "expired" : null;
}

// "until 17:30" with the time as a <time> element, in either language's word order.
function timeUntil(iso) {
  const [before, after] = t("window.until", { time: "\u0000" }).split("\u0000");
  return el("span", { class: "until" }, before, timeEl(iso), after);
}

// -- detail ---------------------------------------------------------------------------

function openDetail(id) {
  const dialog = $("#detail");
  state.detailId = id;
  $("#detail-h").textContent = incLabel(id);
  $("#detail-body").replaceChildren(el("p", { text: t("loading") }));
  if (!dialog.open) dialog.showModal();
  loadDetail(id);
}

function refreshDetailSoon(delay = 200) {
  clearTimeout(state.detailTimer);
  state.detailTimer = setTimeout(() => {
    if (state.detailId !== null && $("#detail").open) loadDetail(state.detailId);
  }, delay);
}

async function loadDetail(id) {
  let inc;
  let alarms;
  try {
    inc = await api(`/api/v1/incidents/${id}`);
    const seqs = inc.alarms.slice(-ALARMS_SHOWN).reverse();
    alarms = await Promise.all(seqs.map((s) => api(`/api/v1/alarms/${s}`).catch(() => null)));
  } catch (error) {
    if (state.detailId !== id) return;
    const text = error.status === 404 ? t("error.gone", { id: incLabel(id) }) : error.message;
    $("#detail-body").replaceChildren(el("p", { class: "error", role: "alert", text }));
    return;
  }
  if (state.detailId !== id || !$("#detail").open) return;
  const body = $("#detail-body");
  const focused = body.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  body.replaceChildren(...detailParts(inc, alarms.filter(Boolean)));
  // Keep the keyboard where it was; when that button is gone (resolved),
  // the dialog's close button is the next sensible place.
  if (focused) ($(`[data-action="${focused}"]`, body) ?? $("#detail-close")).focus();
}

function detailParts(inc, alarms) {
  const parts = [];
  parts.push(el("p", { class: "detail-title" }, badge("state", inc.state), " ", badge("sev", inc.severity),
    " ", el("strong", { text: inc.title ?? "" })));
  if (state.me?.may?.ack && inc.state !== "resolved") {
    const ack = actionButton("ack", inc.id);
    const resolve = actionButton("resolve", inc.id);
    updateActions(ack, resolve, inc);
    parts.push(el("div", { class: "actions" }, ack, resolve));
  }
  const fields = [
    ["col.contract", inc.contract], ["col.device", inc.device], ["f.component", inc.component],
    ["col.code", inc.code], ["f.fingerprint", inc.fingerprint], ["col.count", String(inc.count)],
    ["f.plan", inc.plan], ["f.round", inc.round],
    ["col.first_seen", timeEl(inc.first_seen)], ["col.last_seen", timeEl(inc.last_seen)],
    ["f.due_at", inc.due_at && timeEl(inc.due_at)], ["f.raised_at", inc.raised_at && timeEl(inc.raised_at)],
    ["f.respond_by", inc.respond_by && timeEl(inc.respond_by)],
    ["f.recovered_at", inc.recovered_at && timeEl(inc.recovered_at)],
    ["f.acknowledged_at", inc.acknowledged_at && timeEl(inc.acknowledged_at)],
    ["f.acknowledged_by", inc.acknowledged_by],
    ["f.resolved_at", inc.resolved_at && timeEl(inc.resolved_at)],
    ["f.after_hours", t(inc.after_hours ? "yes" : "no")],
    ["f.fee_estimate", inc.fee_estimate === null || inc.fee_estimate === undefined
      ? null : `¥${Number(inc.fee_estimate).toLocaleString()}`],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  parts.push(el("h3", { text: t("detail.fields") }));
  parts.push(el("dl", { class: "fields" }, ...fields.flatMap(([key, value]) => [
    el("dt", { text: t(key) }), el("dd", {}, value),
  ])));

  parts.push(el("h3", { text: `${t("detail.alarms")} (${inc.alarms.length})` }));
  if (!alarms.length) {
    parts.push(el("p", { class: "empty", text: t("detail.no_alarms") }));
  } else {
    if (inc.alarms.length > alarms.length) {
      parts.push(el("p", { class: "hint", text: t("detail.alarms.more", { shown: alarms.length, total: inc.alarms.length }) }));
    }
    const cols = ["a.seq", "a.received_at", "col.severity", "col.code", "a.message", "a.channel"];
    parts.push(el("table", { class: "alarms" },
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col", text: t(c) })))),
      el("tbody", {}, ...alarms.map((a) => el("tr", { "data-seq": a.seq },
        el("td", { "data-label": t("a.seq"), text: String(a.seq) }),
        el("td", { "data-label": t("a.received_at") }, timeEl(a.received_at)),
        el("td", { "data-label": t("col.severity") }, badge("sev", a.severity)),
        el("td", { "data-label": t("col.code"), text: `${a.component} ${a.code}` }),
        el("td", { "data-label": t("a.message"), text: a.message ?? "" }),
        el("td", { "data-label": t("a.channel"), text: `${a.channel}/${a.format}` }))))));
  }

  parts.push(el("h3", { text: `${t("detail.notices")} (${inc.notices.length})` }));
  if (!inc.notices.length) {
    parts.push(el("p", { class: "empty", text: t("detail.no_notices") }));
  } else {
    const cols = ["f.round", "n.kind", "n.contact", "n.transport", "n.status", "n.attempts"];
    parts.push(el("table", { class: "notices" },
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col", text: t(c) })))),
      el("tbody", {}, ...inc.notices.map((n) => el("tr", { "data-notice": n.id },
        el("td", { "data-label": t("f.round"), text: String(n.round) }),
        el("td", { "data-label": t("n.kind"), text: `${n.kind} (${n.severity})` }),
        el("td", { "data-label": t("n.contact"), text: n.contact }),
        el("td", { "data-label": t("n.transport"), title: n.target ?? "", text: n.transport }),
        el("td", { "data-label": t("n.status") }, n.status,
          n.last_error ? el("span", { class: "hint", text: ` ${n.last_error}` }) : null),
        el("td", { "data-label": t("n.attempts") }, attemptsList(n.attempts)))))));
  }
  return parts;
}

function attemptsList(attempts) {
  if (!attempts.length) return el("span", { class: "none", text: t("detail.no_attempts") });
  return el("ul", { class: "attempts" }, ...attempts.map((a) => {
    const [before, after] = t("n.attempt", { n: a.attempt, time: "\u0000", outcome: a.outcome }).split("\u0000");
    return el("li", { "data-outcome": a.outcome }, before, timeEl(a.started_at), after,
      a.error ? el("span", { class: "hint", text: ` ${a.error}` }) : null);
  }));
}

// -- the one-second tick: countdowns, clock, window boundaries ----------------------

function tick() {
  for (const node of document.querySelectorAll(".countdown[data-at]")) updateCountdown(node);
  if (state.me) {
    const now = new Date(daemonNow()).toISOString();
    const clock = $("#clock");
    clock.textContent = `${t("clock")}: ${formatTime(now, true)}`;
    clock.title = now;
  }
  if (state.contractsBoundary !== null && daemonNow() >= state.contractsBoundary) {
    state.contractsBoundary = null;
    loadContracts();
  }
}

// -- wiring -----------------------------------------------------------------------------

function boot() {
  state.lang = pickLang();
  $("#lang").addEventListener("click", () => setLang(state.lang === "ja" ? "en" : "ja"));
  $("#signout").addEventListener("click", () => signOut());
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    $("#token-input").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    start(token);
  });
  const dialog = $("#detail");
  $("#detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    state.detailId = null;
  });
  // A click on the backdrop (outside the dialog box) closes it too.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  $("#actor").addEventListener("change", () => actor());
  applyLang();
  setInterval(tick, 1000);

  const fromHash = tokenFromHash();
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    // Keep the token out of the address bar, history and bookmarks.
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = fromHash || sessionStorage.getItem(TOKEN_KEY);
  if (token) start(token);
  else showLogin();
}

boot();
