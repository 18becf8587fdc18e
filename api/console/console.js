// Nexus Routines operator console: a small hand-written script over the JSON API.
// The board token lives in sessionStorage (this tab only) and is sent as a bearer header, never
// in an address; no cookie exists, so no other site can make a request on the operator's behalf.
// Everything shown is built with DOM nodes and textContent: nothing from the API is parsed as HTML.

const TOKEN = "nexus.token";
const COMPANY = "nexus.company";
const main = document.getElementById("main");
const state = { companies: [], agents: new Map(), projects: new Map(), page: null, stream: null };

// ---- DOM helpers ----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svgNs = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(svgNs, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

// Events carry the resource as it was when the server read it; one read before a change the
// page has already shown arrives late sometimes: such a copy is older and is not drawn.
function older(data, row) {
  return Boolean(row.dataset.updated && data.updatedAt && Date.parse(data.updatedAt) < Date.parse(row.dataset.updated));
}

function status(value) {
  return value ? h("span", { class: `status ${value}`, text: value.replace(/_/g, " ") }) : "—";
}

function when(iso, zone) {
  if (!iso) return "—";
  const options = { dateStyle: "medium", timeStyle: "short" };
  if (zone) options.timeZone = zone;
  try {
    return new Date(iso).toLocaleString(undefined, options);
  } catch {
    return iso;
  }
}

function flash(where, ...content) {
  const box = h("div", { class: "flash", role: "status" }, ...content);
  where.prepend(box);
  return box;
}

function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h("div", { class: "grow" }, h("label", { for: id, text: label }), input);
}

function option(value, label, selected) {
  return h("option", { value, selected: selected ? true : undefined, text: label });
}

function copyButton(value, label) {
  const button = h("button", { type: "button", class: "quiet", "data-copy": label, text: `Copy ${label}` });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy by hand";
    }
  });
  return button;
}

// ---- API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `request failed (${status})`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    signOut("Your token is no longer accepted. Sign in again.");
    throw new ApiError(401, parsed);
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "" && value !== false) search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---- Sign-in --------------------------------------------------------------------------

function signInForm(message) {
  document.getElementById("top").hidden = true;
  const error = h("p", { id: "sign-in-error", class: "error", role: "alert", text: message || "" });
  const input = h("input", { id: "token", name: "token", type: "password", required: true, spellcheck: "false" });
  const form = h("form", { id: "sign-in", class: "card narrow", method: "post", action: "/", autocomplete: "off" },
    h("h1", { text: "Nexus Routines" }),
    h("p", { text: "Sign in with a board token. It is kept for this tab only and sent with each request, never in an address." }),
    h("label", { for: "token", text: "Board token" }), input,
    h("button", { type: "submit", text: "Sign in" }), error);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    signIn(input.value.trim(), error);
  });
  main.replaceChildren(form);
  input.focus();
}

async function signIn(token, error) {
  error.textContent = "";
  const response = await fetch("/api/system", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (response.status === 401) {
    error.textContent = "That token was refused.";
    return;
  }
  if (response.status === 403) {
    error.textContent = "That is an agent key; the console needs a board token.";
    return;
  }
  if (!response.ok) {
    error.textContent = `The server answered ${response.status}.`;
    return;
  }
  sessionStorage.setItem(TOKEN, token);
  await start();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  stopStream();
  state.streamCompany = null;
  signInForm(message);
}

// ---- Live updates ---------------------------------------------------------------------
// EventSource cannot send an Authorization header, so the stream is read with fetch and
// parsed here; on a drop it reconnects with Last-Event-ID.

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

// A browser opens at most six connections to one server over HTTP/1.1, and each open stream
// holds one: a tab that is hidden or left closes its stream, and one shown again resumes
// with Last-Event-ID (or reloads its data, if it was away longer than the server keeps).
document.addEventListener("visibilitychange", () => {
  if (!state.streamCompany || !sessionStorage.getItem(TOKEN)) return;
  if (document.hidden) {
    stopStream();
    setLive("Paused while hidden", false);
  } else if (!state.stream) {
    startStream(state.streamCompany, state.lastEventId);
  }
});
window.addEventListener("pagehide", stopStream);

function setLive(text, down) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.classList.toggle("down", down);
}

function startStream(companyId, resumeFrom) {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  state.streamCompany = companyId;
  let lastId = resumeFrom || null;
  const connect = async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(`/api/companies/${companyId}/events`, { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401) return signOut("Your token is no longer accepted. Sign in again.");
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
        setLive("Live", false);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const event = parseEvent(block);
            if (event.id) lastId = state.lastEventId = event.id;
            if (event.data !== null) deliver(event);
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      setLive("Disconnected — reconnecting…", true);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  connect();
}

function parseEvent(block) {
  const event = { name: "message", id: null, data: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event.name = value;
    else if (name === "id") event.id = value;
    else if (name === "data") data.push(value);
  }
  if (data.length) event.data = JSON.parse(data.join("\n"));
  return event;
}

function deliver(event) {
  if (event.name === "reset") {
    route();
    return;
  }
  if (state.page && state.page.onEvent) state.page.onEvent(event.name, event.data);
}

// ---- Shell ----------------------------------------------------------------------------

function companyId() {
  return sessionStorage.getItem(COMPANY);
}

async function start() {
  const { companies } = await api("GET", "/api/companies");
  state.companies = companies;
  const select = document.getElementById("company");
  if (!companies.some((c) => c.id === companyId())) {
    if (companies.length) sessionStorage.setItem(COMPANY, companies[0].id);
    else sessionStorage.removeItem(COMPANY);
  }
  select.replaceChildren(...companies.map((c) => option(c.id, c.name, c.id === companyId())));
  document.getElementById("top").hidden = false;
  await switchCompany();
}

async function switchCompany() {
  const company = companyId();
  state.agents = new Map();
  state.projects = new Map();
  if (company) {
    const [{ agents }, { projects }] = await Promise.all([
      api("GET", `/api/companies/${company}/agents`),
      api("GET", `/api/companies/${company}/projects`),
    ]);
    for (const a of agents) state.agents.set(a.id, a);
    for (const p of projects) state.projects.set(p.id, p);
    state.lastEventId = null;
    startStream(company);
  } else {
    stopStream();
    state.streamCompany = null;
    setLive("", false);
  }
  route();
}

async function route() {
  if (!sessionStorage.getItem(TOKEN)) return signInForm();
  const [, page, id] = (location.hash || "#/routines").split("/");
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = h("div", { id: "view" });
  main.replaceChildren(view);
  state.page = null;
  const pages = { routines: routinesPage, routine: routinePage, run: runPage, activity: activityPage, channels: channelsPage, system: systemPage };
  const render = pages[page] || routinesPage;
  if (!companyId() && render !== systemPage) {
    view.append(h("h1", { text: "No company yet" }), h("p", { text: "Create a company through the API or the command line first." }));
    return;
  }
  try {
    state.page = (await render(view, id)) || null;
  } catch (error) {
    view.append(h("p", { class: "error", role: "alert", text: error.message }));
  }
}

// ---- Plain language -------------------------------------------------------------------

function describeTrigger(trigger) {
  const label = trigger.label ? ` (${trigger.label})` : "";
  const off = trigger.enabled ? "" : " — disabled";
  if (trigger.kind === "schedule") return `${trigger.description}, ${trigger.timezone}${label}${off}`;
  if (trigger.kind === "webhook") return `webhook, ${trigger.signingMode.replace(/_/g, " ")}${label}${off}`;
  return `API${label}${off}`;
}

function scheduleZone(routine) {
  const schedule = routine.triggers.find((t) => t.kind === "schedule" && t.enabled && t.nextRunAt === routine.nextRunAt);
  return schedule ? schedule.timezone : null;
}

function nextFire(routine) {
  if (!routine.nextRunAt) return "—";
  const zone = scheduleZone(routine);
  const local = when(routine.nextRunAt);
  return zone ? h("span", {}, local, h("br"), h("span", { class: "note", text: `${when(routine.nextRunAt, zone)} ${zone}` })) : local;
}

// ---- Routines -------------------------------------------------------------------------

async function routinesPage(view) {
  const company = companyId();
  const filters = { status: "", assigneeAgentId: "", projectId: "", failing: false };
  const statusSelect = h("select", { id: "filter-status" }, option("", "Any"), ["active", "paused", "archived"].map((v) => option(v, v)));
  const agentSelect = h("select", { id: "filter-agent" }, option("", "Any"), [...state.agents.values()].map((a) => option(a.id, a.name)));
  const projectSelect = h("select", { id: "filter-project" }, option("", "Any"), [...state.projects.values()].map((p) => option(p.id, p.name)));
  const failing = h("input", { type: "checkbox", id: "filter-failing" });
  const body = h("tbody");
  const more = h("button", { type: "button", class: "quiet", id: "more", text: "More", hidden: true });
  const note = h("input", { type: "text", id: "bulk-note", placeholder: "Pause note (optional)", maxlength: "500" });
  const rows = new Map();
  let nextBefore = null;

  const selected = () => [...body.querySelectorAll("input[data-routine]:checked")].map((c) => c.dataset.routine);
  const row = (routine) => {
    const agent = state.agents.get(routine.assigneeAgentId);
    const pause = routine.status === "paused" && (routine.pauseNote || routine.pausedReason === "consecutive_failures")
      ? h("div", { class: "note", text: routine.pauseNote || "paused after failures" }) : null;
    const tr = h("tr", { "data-id": routine.id, "data-updated": routine.updatedAt },
      h("td", {}, h("input", { type: "checkbox", "data-routine": routine.id, "aria-label": `Select ${routine.title}` })),
      h("td", {}, h("a", { href: `#/routine/${routine.id}`, text: routine.title })),
      h("td", { text: agent ? agent.name : routine.assigneeAgentId }),
      h("td", {}, status(routine.status), pause),
      h("td", {}, routine.triggers.length ? routine.triggers.map((t) => h("div", { text: describeTrigger(t) })) : h("span", { class: "note", text: "no triggers" })),
      h("td", {}, nextFire(routine)),
      h("td", {}, routine.lastRun ? status(routine.lastRun.status) : "—"),
      h("td", { class: "failures", text: String(routine.consecutiveFailures) }));
    return tr;
  };
  const show = (routine, fresh) => {
    const tr = row(routine);
    if (fresh) tr.classList.add("new");
    const old = rows.get(routine.id);
    if (old) old.replaceWith(tr);
    else if (fresh) body.prepend(tr);
    else body.append(tr);
    rows.set(routine.id, tr);
  };
  const load = async (append) => {
    const params = { ...filters, limit: 50, before: append ? nextBefore : undefined };
    const page = await api("GET", `/api/companies/${company}/routines${query(params)}`);
    if (!append) {
      body.replaceChildren();
      rows.clear();
    }
    for (const routine of page.routines) show(routine, false);
    nextBefore = page.nextBefore;
    more.hidden = !nextBefore;
    if (!rows.size) body.append(h("tr", {}, h("td", { colspan: "8", class: "note", text: "No routines match." })));
  };
  const refilter = () => {
    filters.status = statusSelect.value;
    filters.assigneeAgentId = agentSelect.value;
    filters.projectId = projectSelect.value;
    filters.failing = failing.checked;
    load(false);
  };
  for (const control of [statusSelect, agentSelect, projectSelect, failing]) control.addEventListener("change", refilter);
  more.addEventListener("click", () => load(true));
  const bulk = async (action) => {
    const routineIds = selected();
    if (!routineIds.length) return flash(view, "Select routines first.");
    const body = action === "pause" && note.value ? { routineIds, pauseNote: note.value } : { routineIds };
    try {
      const { routines } = await api("POST", `/api/companies/${company}/routines/${action}`, body);
      for (const routine of routines) show(routine, false);
      flash(view, `${routines.length} routine${routines.length === 1 ? "" : "s"} ${action === "pause" ? "paused" : "resumed"}.`);
    } catch (error) {
      flash(view, h("span", { class: "error", text: error.message }));
    }
  };

  view.append(
    h("div", { class: "row" }, h("h1", { class: "grow", text: "Routines" }), h("a", { href: "#/routine/new", id: "new-routine", text: "New routine" })),
    h("div", { class: "card row" },
      field("Status", statusSelect), field("Agent", agentSelect), field("Project", projectSelect),
      h("label", { class: "inline", for: "filter-failing" }, failing, "Failing only")),
    h("div", { class: "row" }, h("div", { class: "grow" }, note),
      h("button", { type: "button", id: "bulk-pause", onclick: () => bulk("pause"), text: "Pause selected" }),
      h("button", { type: "button", class: "quiet", id: "bulk-resume", onclick: () => bulk("resume"), text: "Resume selected" })),
    h("div", { class: "table" }, h("table", { class: "routines" },
      h("thead", {}, h("tr", {}, ["", "Title", "Agent", "Status", "Triggers", "Next fire", "Last run", "Failures"].map((t) => h("th", { text: t })))),
      body)),
    more);
  await load(false);
  // A listed routine's row is read again at most once a second, however many of its runs
  // change; a routine not listed is added only when it is new (created in the last minute),
  // at most fifty of them, so a mass change elsewhere does not grow the page.
  const pending = new Set();
  let added = 0;
  const refresh = (id) => {
    if (pending.has(id)) return;
    pending.add(id);
    setTimeout(() => {
      pending.delete(id);
      api("GET", `/api/routines/${id}`).then((routine) => show(routine, false)).catch(() => {});
    }, 1000);
  };
  return {
    onEvent(name, data) {
      if (name === "routine.updated") {
        if (rows.has(data.id)) return older(data, rows.get(data.id)) ? undefined : show(data, false);
        const matches = (!filters.status || data.status === filters.status)
          && (!filters.assigneeAgentId || data.assigneeAgentId === filters.assigneeAgentId)
          && (!filters.projectId || data.projectId === filters.projectId)
          && (!filters.failing || data.consecutiveFailures > 0);
        const isNew = Date.now() - new Date(data.createdAt).getTime() < 60000;
        if (matches && isNew && added < 50) {
          added += 1;
          show(data, true);
        }
      } else if ((name === "run.created" || name === "run.updated" || name === "trigger.updated") && rows.has(data.routineId)) {
        refresh(data.routineId);
      }
    },
  };
}

// ---- One routine ----------------------------------------------------------------------

const PRIORITIES = ["critical", "high", "medium", "low"];
const CONCURRENCY = ["coalesce_if_active", "skip_if_active", "always_enqueue"];
const CATCH_UP = ["skip_missed", "enqueue_missed_with_cap"];
const SIGNING = ["bearer", "hmac_sha256", "standard_webhooks", "github", "stripe", "slack"];

function settingsForm(routine, onSave) {
  const isNew = !routine;
  const r = routine || { title: "", description: "", priority: "medium", concurrencyPolicy: "coalesce_if_active", catchUpPolicy: "skip_missed", catchUpCap: 25, runTimeoutSec: null, pauseAfterFailures: null };
  const title = h("input", { type: "text", id: "routine-title", value: r.title, maxlength: "200", required: true });
  const description = h("textarea", { id: "routine-description" });
  description.value = r.description || "";
  const agent = h("select", { id: "routine-agent" }, [...state.agents.values()].filter((a) => a.status !== "terminated").map((a) => option(a.id, a.name, a.id === r.assigneeAgentId)));
  const project = h("select", { id: "routine-project" }, [...state.projects.values()].map((p) => option(p.id, p.name, p.id === r.projectId)));
  const priority = h("select", { id: "routine-priority" }, PRIORITIES.map((p) => option(p, p, p === r.priority)));
  const concurrency = h("select", { id: "routine-concurrency" }, CONCURRENCY.map((p) => option(p, p.replace(/_/g, " "), p === r.concurrencyPolicy)));
  const catchUp = h("select", { id: "routine-catch-up" }, CATCH_UP.map((p) => option(p, p.replace(/_/g, " "), p === r.catchUpPolicy)));
  const cap = h("input", { type: "number", id: "routine-cap", min: "1", max: "100", value: String(r.catchUpCap) });
  const timeout = h("input", { type: "number", id: "routine-timeout", min: "60", placeholder: "none", value: r.runTimeoutSec ?? "" });
  const pauseAfter = h("input", { type: "number", id: "routine-pause-after", min: "1", max: "100", placeholder: "never", value: r.pauseAfterFailures ?? "" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", id: "settings" },
    field("Title", title), field("Description", description),
    h("div", { class: "row" }, field("Agent", agent), field("Project", project), field("Priority", priority)),
    h("div", { class: "row" }, field("When a run is still open", concurrency), field("Missed fires", catchUp), field("Catch-up cap", cap)),
    h("div", { class: "row" }, field("Run timeout (seconds)", timeout), field("Pause after failures in a row", pauseAfter)),
    h("button", { type: "submit", id: "save-settings", text: isNew ? "Create routine" : "Save settings" }), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const number = (input) => (input.value === "" ? null : Number(input.value));
    const body = {
      title: title.value, description: description.value, assigneeAgentId: agent.value, projectId: project.value,
      priority: priority.value, concurrencyPolicy: concurrency.value, catchUpPolicy: catchUp.value,
      catchUpCap: Number(cap.value), runTimeoutSec: number(timeout), pauseAfterFailures: number(pauseAfter),
    };
    if (isNew) {
      if (!body.description) delete body.description;
      if (body.runTimeoutSec === null) delete body.runTimeoutSec;
      if (body.pauseAfterFailures === null) delete body.pauseAfterFailures;
    }
    try {
      await onSave(body);
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

function scheduleForm(routine, done) {
  const cron = h("input", { type: "text", id: "cron", placeholder: "0 9 * * 1-5", required: true, spellcheck: "false" });
  const zone = h("input", { type: "text", id: "timezone", value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC", spellcheck: "false" });
  const jitter = h("input", { type: "number", id: "jitter", min: "0", max: "3600", value: "0" });
  const preview = h("div", { id: "preview", "aria-live": "polite" });
  let timer = null;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!cron.value.trim()) return preview.replaceChildren();
      try {
        const p = await api("GET", `/api/schedule-preview${query({ cronExpression: cron.value.trim(), timezone: zone.value.trim() || "UTC", count: 5 })}`);
        preview.replaceChildren(
          h("p", { id: "preview-description" }, h("b", { text: `${p.description}, ${p.timezone}` })),
          h("ol", { id: "preview-fires" }, p.fires.map((f) => h("li", { text: `${when(f.at)} (your time) — ${when(f.at, p.timezone)} ${p.timezone}` }))));
      } catch (e) {
        preview.replaceChildren(h("p", { class: "error", id: "preview-error", text: e.message }));
      }
    }, 250);
  };
  cron.addEventListener("input", refresh);
  zone.addEventListener("input", refresh);
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", id: "add-schedule" }, h("h2", { text: "Add a schedule" }),
    h("div", { class: "row" }, field("Cron expression", cron), field("Time zone", zone), field("Jitter (seconds)", jitter)),
    preview, h("button", { type: "submit", id: "add-schedule-submit", text: "Add schedule" }), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", `/api/routines/${routine.id}/triggers`, { kind: "schedule", cronExpression: cron.value.trim(), timezone: zone.value.trim() || "UTC", jitterSec: Number(jitter.value || 0) });
      done();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

function secretBox(material, title) {
  return h("div", { class: "flash", id: "secret-material" },
    h("p", {}, h("b", { text: title }), " Shown only now: copy it where the sender keeps secrets."),
    h("p", {}, "URL: ", h("span", { class: "secret", id: "webhook-url", text: material.webhookUrl }), " ", copyButton(material.webhookUrl, "URL")),
    h("p", {}, "Secret: ", h("span", { class: "secret", id: "webhook-secret", text: material.webhookSecret }), " ", copyButton(material.webhookSecret, "secret")));
}

function webhookForm(routine, done) {
  const mode = h("select", { id: "signing-mode" }, SIGNING.map((m) => option(m, m.replace(/_/g, " "))));
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", id: "add-webhook" }, h("h2", { text: "Add a webhook or API trigger" }),
    h("div", { class: "row" }, field("Signing mode", mode),
      h("button", { type: "submit", id: "add-webhook-submit", text: "Add webhook" }),
      h("button", { type: "button", class: "quiet", id: "add-api", text: "Add API trigger", onclick: async () => {
        try { await api("POST", `/api/routines/${routine.id}/triggers`, { kind: "api" }); done(); } catch (e) { error.textContent = e.message; }
      } })), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("POST", `/api/routines/${routine.id}/triggers`, { kind: "webhook", signingMode: mode.value });
      done(secretBox(created.secretMaterial, "Webhook created."));
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

function triggerRow(trigger, reload) {
  const actions = h("td");
  const act = (label, id, handler, cls) => h("button", { type: "button", class: cls || "quiet", "data-action": id, text: label, onclick: async () => {
    try { await handler(); } catch (e) { actions.append(h("div", { class: "error", text: e.message })); }
  } });
  actions.append(act(trigger.enabled ? "Disable" : "Enable", "toggle", async () => {
    await api("PATCH", `/api/routine-triggers/${trigger.id}`, { enabled: !trigger.enabled });
    reload();
  }));
  if (trigger.kind === "webhook") {
    const grace = h("input", { type: "number", min: "0", max: "604800", value: "3600", "aria-label": "Old secret stays valid (seconds)", class: "grace" });
    actions.append(" ", grace, " ", act("Rotate secret", "rotate", async () => {
      // Not forced: while a previous secret is still valid the server refuses (409) and says
      // so, rather than the console ending that secret without being asked.
      const rotated = await api("POST", `/api/routine-triggers/${trigger.id}/rotate-secret`, { previousSecretValidSec: Number(grace.value || 0) });
      reload(secretBox(rotated.secretMaterial, "Secret rotated."));
    }));
  }
  const confirmBox = h("span", { hidden: true, class: "confirm" }, " Delete this trigger? ",
    act("Delete", "confirm-delete", async () => { await api("DELETE", `/api/routine-triggers/${trigger.id}`); reload(); }, "danger"));
  actions.append(" ", act("Delete…", "delete", async () => { confirmBox.hidden = false; }), confirmBox);
  const extra = trigger.kind === "schedule"
    ? h("div", { class: "note", text: `${trigger.cronExpression}; next ${when(trigger.nextRunAt)}` })
    : trigger.kind === "webhook" ? h("div", { class: "note secret", text: trigger.webhookUrl }) : null;
  return h("tr", { "data-trigger": trigger.id, "data-updated": trigger.updatedAt },
    h("td", {}, h("div", { text: describeTrigger(trigger) }), extra,
      trigger.previousSecretExpiresAt ? h("div", { class: "note", text: `previous secret valid until ${when(trigger.previousSecretExpiresAt)}` }) : null),
    h("td", { text: trigger.lastFiredAt ? `${when(trigger.lastFiredAt)} (${trigger.lastResult || "—"})` : "never" }),
    actions);
}

function missedText(run) {
  if (!run.missed) return "";
  const m = run.missed;
  return m.count === 1 ? `missed ${when(m.from)}` : `missed ${m.count} fires, ${when(m.from)} – ${when(m.to)}`;
}

function runRow(run) {
  const marks = [run.catchUp ? "catch-up" : "", missedText(run)].filter(Boolean).join("; ");
  return h("tr", { "data-run": run.id },
    h("td", {}, h("a", { href: `#/run/${run.id}`, text: when(run.triggeredAt) })),
    h("td", { text: run.source }),
    h("td", { class: "run-status" }, status(run.status)),
    h("td", { text: run.reason || run.failureReason || "" }),
    h("td", { text: run.scheduledFor ? when(run.scheduledFor) : "" }),
    h("td", { class: "note", text: marks }));
}

async function routinePage(view, id) {
  if (id === "new") {
    view.append(h("h1", { text: "New routine" }), settingsForm(null, async (body) => {
      const routine = await api("POST", `/api/companies/${companyId()}/routines`, body);
      location.hash = `#/routine/${routine.id}`;
    }));
    return null;
  }
  let routine = await api("GET", `/api/routines/${id}`);
  const head = h("div");
  const triggers = h("tbody");
  const upcoming = h("ol", { id: "upcoming" });
  const runs = h("tbody", { id: "runs" });
  const more = h("button", { type: "button", class: "quiet", id: "more-runs", text: "Older runs", hidden: true });
  const notices = h("div", { id: "notices" });
  const runRows = new Map();
  let nextBefore = null;

  // Made once, so that what is typed survives a redraw of the head by a live update.
  const note = h("input", { type: "text", id: "pause-note", maxlength: "500", placeholder: "Why (optional)" });
  const until = h("input", { type: "datetime-local", id: "pause-until" });
  // Whether the archive question is open; a live update that redraws the head keeps it open.
  let archiveAsked = false;
  const renderHead = () => {
    const paused = routine.status === "paused";
    const controls = h("div", { class: "row" });
    const patch = async (body) => {
      try {
        routine = await api("PATCH", `/api/routines/${routine.id}`, body);
        renderHead();
        loadUpcoming();
      } catch (e) {
        flash(notices, h("span", { class: "error", text: e.message }));
      }
    };
    if (routine.status === "active") {
      controls.append(field("Pause note", note), field("Until (optional)", until),
        h("button", { type: "button", id: "pause", text: "Pause", onclick: () => {
          const body = { status: "paused" };
          if (note.value) body.pauseNote = note.value;
          if (until.value) body.pausedUntil = new Date(until.value).toISOString();
          patch(body);
        } }));
    } else if (paused) {
      controls.append(h("button", { type: "button", id: "resume", text: "Resume", onclick: () => patch({ status: "active" }) }));
    }
    if (routine.status !== "archived") {
      const ask = (open) => { archiveAsked = open; confirmBox.hidden = !open; };
      const confirmBox = h("span", { hidden: !archiveAsked, id: "archive-confirm" }, " Archive for good? It never fires again. ",
        h("button", { type: "button", class: "danger", id: "archive-yes", text: "Archive", onclick: () => patch({ status: "archived" }) }),
        " ", h("button", { type: "button", class: "quiet", text: "Cancel", onclick: () => ask(false) }));
      controls.append(h("button", { type: "button", class: "quiet", id: "archive", text: "Archive…", onclick: () => ask(true) }), confirmBox);
    }
    const agent = state.agents.get(routine.assigneeAgentId);
    head.replaceChildren(
      h("h1", { id: "routine-title-shown", text: routine.title }),
      h("p", {}, status(routine.status), " ", agent ? `assigned to ${agent.name}` : "",
        routine.pauseNote ? h("span", { class: "note", id: "pause-note-shown", text: ` — ${routine.pauseNote}` }) : null,
        routine.pausedUntil ? h("span", { class: "note", text: ` until ${when(routine.pausedUntil)}` }) : null,
        ` · ${routine.consecutiveFailures} failure${routine.consecutiveFailures === 1 ? "" : "s"} in a row`),
      controls);
  };
  const loadTriggers = async (notice) => {
    if (notice) notices.replaceChildren(notice);
    routine = await api("GET", `/api/routines/${routine.id}`);
    triggers.replaceChildren(...routine.triggers.map((t) => triggerRow(t, loadTriggers)));
    if (!routine.triggers.length) triggers.append(h("tr", {}, h("td", { colspan: "3", class: "note", text: "No triggers yet." })));
    renderHead();
    loadUpcoming();
  };
  const loadUpcoming = async () => {
    const { fires } = await api("GET", `/api/routines/${routine.id}/upcoming?count=5`);
    const zones = new Map(routine.triggers.map((t) => [t.id, t.timezone]));
    upcoming.replaceChildren(...fires.map((f) => h("li", { text: `${when(f.at)} — ${when(f.at, zones.get(f.triggerId))} ${zones.get(f.triggerId) || ""}` })));
    if (!fires.length) upcoming.append(h("li", { class: "note", text: "Nothing scheduled." }));
  };
  const showRun = (run, fresh) => {
    const tr = runRow(run);
    const old = runRows.get(run.id);
    if (old) old.replaceWith(tr);
    else if (fresh) { tr.classList.add("new"); runs.prepend(tr); } else runs.append(tr);
    runRows.set(run.id, tr);
  };
  const loadRuns = async (append) => {
    const page = await api("GET", `/api/routines/${routine.id}/runs${query({ limit: 20, before: append ? nextBefore : undefined })}`);
    for (const run of page.runs) showRun(run, false);
    nextBefore = page.nextBefore;
    more.hidden = !nextBefore;
  };
  more.addEventListener("click", () => loadRuns(true));

  const payload = h("textarea", { id: "run-payload", placeholder: "{}" });
  const runError = h("p", { class: "error", role: "alert" });
  const runForm = h("form", { class: "card", id: "run-now" }, h("h2", { text: "Run now" }), field("Payload (JSON object, optional)", payload),
    h("button", { type: "submit", id: "run-now-submit", text: "Run now" }), runError);
  runForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    runError.textContent = "";
    let body = {};
    if (payload.value.trim()) {
      try { body = { payload: JSON.parse(payload.value) }; } catch { runError.textContent = "The payload is not valid JSON."; return; }
    }
    try {
      const run = await api("POST", `/api/routines/${routine.id}/run`, body);
      showRun(run, true);
    } catch (e) {
      runError.textContent = e.message;
    }
  });
  const from = h("input", { type: "datetime-local", id: "backfill-from", required: true });
  const to = h("input", { type: "datetime-local", id: "backfill-to", required: true });
  const backfillResult = h("p", { role: "status" });
  const backfill = h("form", { class: "card", id: "backfill" }, h("h2", { text: "Backfill a range" }),
    h("p", { class: "note", text: "One run for every scheduled fire in the range that has none (times in your zone)." }),
    h("div", { class: "row" }, field("From", from), field("To", to), h("button", { type: "submit", text: "Backfill" })), backfillResult);
  backfill.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const result = await api("POST", `/api/routines/${routine.id}/backfill`, { from: new Date(from.value).toISOString(), to: new Date(to.value).toISOString() });
      backfillResult.textContent = `${result.runs.length} run(s) created; ${result.existing} fire(s) already had one.`;
      for (const run of result.runs) showRun(run, true);
    } catch (e) {
      backfillResult.textContent = e.message;
    }
  });

  view.append(head, notices,
    h("h2", { text: "Triggers" }),
    h("div", { class: "table" }, h("table", { id: "triggers" }, h("thead", {}, h("tr", {}, ["Trigger", "Last fired", ""].map((t) => h("th", { text: t })))), triggers)),
    h("h2", { text: "Upcoming fires" }), upcoming,
    runForm,
    h("h2", { text: "Runs" }),
    h("div", { class: "table" }, h("table", { id: "run-history" }, h("thead", {}, h("tr", {}, ["Triggered", "Source", "Status", "Reason", "Scheduled for", "Marks"].map((t) => h("th", { text: t })))), runs)),
    more,
    scheduleForm(routine, () => loadTriggers()), webhookForm(routine, (notice) => loadTriggers(notice)),
    backfill,
    h("h2", { text: "Settings" }),
    settingsForm(routine, async (body) => {
      routine = await api("PATCH", `/api/routines/${routine.id}`, body);
      renderHead();
      flash(notices, "Settings saved.");
    }));
  renderHead();
  await Promise.all([loadTriggers(), loadRuns(false)]);
  return {
    onEvent(name, data) {
      if ((name === "run.created" || name === "run.updated") && data.routineId === routine.id) showRun(data, !runRows.has(data.id));
      else if (name === "routine.updated" && data.id === routine.id && Date.parse(data.updatedAt) >= Date.parse(routine.updatedAt)) { routine = data; renderHead(); }
      else if (name === "trigger.updated" && data.routineId === routine.id) {
        // Only that trigger's row is redrawn, and not while a question is open on it.
        const row = triggers.querySelector(`tr[data-trigger="${data.id}"]`);
        if (data.deleted) {
          if (row) row.remove();
        } else if (!row) {
          loadTriggers();
        } else if (!row.querySelector(".confirm:not([hidden])") && !older(data, row)) {
          row.replaceWith(triggerRow(data, loadTriggers));
        }
        loadUpcoming();
      }
    },
  };
}

// ---- One run --------------------------------------------------------------------------

function fields(entries) {
  return h("dl", { class: "fields" }, entries.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v === null || v === "" ? "—" : v)]));
}

async function runPage(view, id) {
  const run = await api("GET", `/api/routine-runs/${id}`);
  const routine = await api("GET", `/api/routines/${run.routineId}`).catch(() => null);
  view.append(h("p", {}, h("a", { href: `#/routine/${run.routineId}`, text: `← ${routine ? routine.title : "routine"}` })),
    h("h1", { text: `Run of ${when(run.triggeredAt)}` }),
    h("div", { class: "card", id: "run-fields" }, fields([
      ["Status", status(run.status)], ["Reason", run.reason || run.failureReason], ["Source", run.source],
      ["Trigger", run.trigger ? `${run.trigger.kind}${run.trigger.label ? ` (${run.trigger.label})` : ""}` : null],
      ["Scheduled for", run.scheduledFor ? when(run.scheduledFor) : null], ["Triggered", when(run.triggeredAt)],
      ["Completed", run.completedAt ? when(run.completedAt) : null], ["Catch-up", run.catchUp ? "yes" : "no"],
      ["Missed", missedText(run)], ["Idempotency key", run.idempotencyKey],
      ["Delivery", run.delivery ? `${run.delivery.format} ${run.delivery.id}${run.delivery.event ? ` (${run.delivery.event})` : ""}` : null],
      ["Coalesced into", run.coalescedIntoRunId ? h("a", { href: `#/run/${run.coalescedIntoRunId}`, text: run.coalescedIntoRunId }) : null],
      ["Payload", h("pre", { text: JSON.stringify(run.payload, null, 2) })],
    ])));
  if (run.linkedIssueId) {
    const issue = await api("GET", `/api/issues/${run.linkedIssueId}`);
    view.append(h("h2", { text: "Issue" }), h("div", { class: "card", id: "run-issue" },
      fields([["Title", issue.title], ["Status", status(issue.status)], ["Priority", issue.priority], ["Updated", when(issue.updatedAt)]]),
      h("h2", { text: "Events" }),
      h("ol", {}, issue.events.map((e) => h("li", { text: `${when(e.createdAt)} — ${e.type.replace(/_/g, " ")} by ${e.actorType}${e.data && e.data.to ? `: ${e.data.from || ""} → ${e.data.to}` : ""}` })))));
  }
  if (run.heartbeatRunId) {
    const beat = await api("GET", `/api/heartbeat-runs/${run.heartbeatRunId}`);
    const agent = state.agents.get(beat.agentId);
    view.append(h("h2", { text: "Heartbeat run" }), h("div", { class: "card", id: "run-heartbeat" }, fields([
      ["Status", status(beat.status)], ["Agent", agent ? agent.name : beat.agentId], ["Created", when(beat.createdAt)],
      ["Started", beat.startedAt ? when(beat.startedAt) : null], ["Finished", beat.finishedAt ? when(beat.finishedAt) : null], ["Summary", beat.summary],
    ])));
  }
  if (routine && run.triggerId) {
    const trigger = routine.triggers.find((t) => t.id === run.triggerId);
    if (trigger) view.append(h("h2", { text: "Trigger" }), h("div", { class: "card", id: "run-trigger" }, h("p", { text: describeTrigger(trigger) })));
  }
  return { onEvent(name, data) { if (name === "run.updated" && data.id === run.id) route(); } };
}

// ---- Activity and channels ------------------------------------------------------------

async function activityPage(view) {
  const { activity } = await api("GET", `/api/companies/${companyId()}/activity?limit=100`);
  view.append(h("h1", { text: "Activity" }), h("div", { class: "table" }, h("table", { id: "activity" },
    h("thead", {}, h("tr", {}, ["When", "Who", "What", "On"].map((t) => h("th", { text: t })))),
    h("tbody", {}, activity.map((a) => h("tr", {},
      h("td", { text: when(a.createdAt) }), h("td", { text: a.actorType }), h("td", { text: a.action.replace(/_/g, " ") }),
      h("td", {}, a.entityType === "routine" ? h("a", { href: `#/routine/${a.entityId}`, text: "routine" }) : a.entityType)))))));
  if (!activity.length) view.append(h("p", { class: "note", text: "Nothing yet." }));
  return { onEvent(name) { if (name === "routine.updated") route(); } };
}

async function channelsPage(view) {
  const { channels } = await api("GET", `/api/companies/${companyId()}/notification-channels`);
  view.append(h("h1", { text: "Notification channels" }));
  if (!channels.length) view.append(h("p", { class: "note", text: "No channels. Create one through the API to be told when runs fail." }));
  for (const channel of channels) {
    const { deliveries } = await api("GET", `/api/notification-channels/${channel.id}/deliveries?limit=20`);
    view.append(h("div", { class: "card", "data-channel": channel.id },
      h("h2", { text: `${channel.name} (${channel.kind})` }),
      h("p", { class: "note", text: `${channel.enabled ? "enabled" : "disabled"} · ${channel.events.join(", ")}` }),
      h("div", { class: "table" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Event", "Status", "Attempts", "Last answer", "Created"].map((t) => h("th", { text: t })))),
        h("tbody", {}, deliveries.map((d) => h("tr", {},
          h("td", { text: d.event }), h("td", {}, status(d.status)), h("td", { text: String(d.attempts) }),
          h("td", { text: d.lastError || (d.lastStatusCode ? String(d.lastStatusCode) : "") }), h("td", { text: when(d.createdAt) }))))))));
  }
  return null;
}

// ---- System ---------------------------------------------------------------------------

function seconds(value) {
  return value === null || value === undefined ? "—" : `${value < 10 ? value.toFixed(2) : value.toFixed(1)} s`;
}

function chart(minutes) {
  const width = 600, height = 140, top = 4, bottom = 0;
  const peak = Math.max(0.001, ...minutes.map((m) => m.p99Sec || 0));
  const step = width / minutes.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / peak);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Fire lateness per minute, p99 up to ${seconds(peak)}`, preserveAspectRatio: "none" });
  minutes.forEach((m, i) => {
    if (m.p99Sec !== null) svg.append(s("rect", { class: "p99", x: i * step + 1, y: y(m.p99Sec), width: step - 2, height: height - bottom - y(m.p99Sec) }));
    if (m.p50Sec !== null) svg.append(s("rect", { class: "p50", x: i * step + 1, y: y(m.p50Sec), width: step - 2, height: height - bottom - y(m.p50Sec) }));
  });
  return svg;
}

async function systemPage(view) {
  const system = await api("GET", "/api/system");
  const t = system.lateness.total;
  view.append(h("h1", { text: "System" }),
    h("div", { class: "figures", id: "system-figures" },
      h("div", { class: "figure" }, "Leading scheduler", h("b", { id: "leader", text: system.scheduler.leaderId || "none yet" }), `epoch ${system.scheduler.epoch}`),
      h("div", { class: "figure" }, "Jobs waiting", h("b", { id: "queue-depth", text: String(system.queue.waiting) }), `oldest ${seconds(system.queue.oldestWaitingAgeSec)}`),
      h("div", { class: "figure" }, "Fire lateness p50", h("b", { id: "lateness-p50", text: seconds(t.p50Sec) }), "last hour"),
      h("div", { class: "figure" }, "Fire lateness p99", h("b", { id: "lateness-p99", text: seconds(t.p99Sec) }), `${t.fires} fires, ${t.sampled} measured`)),
    h("h2", { text: "Fire lateness per minute (p99 dark, p50 light)" }), chart(system.lateness.minutes),
    h("div", { class: "axis" }, h("span", { text: "60 minutes ago" }),
      h("span", { text: `highest p99 ${seconds(Math.max(0, ...system.lateness.minutes.map((m) => m.p99Sec || 0)))}` }), h("span", { text: "now" })),
    h("p", { class: "note", text: "Lateness: from a schedule fire's instant to the heartbeat run that wakes its agent, from the first 1,000 fires of each minute." }),
    h("h2", { text: "Queue" }),
    h("div", { class: "table" }, h("table", {}, h("thead", {}, h("tr", {}, ["Kind", "State", "Jobs", "Oldest"].map((x) => h("th", { text: x })))),
      h("tbody", {}, system.queue.jobs.map((j) => h("tr", {}, h("td", { text: j.kind }), h("td", { text: j.state }), h("td", { text: String(j.count) }), h("td", { text: seconds(j.oldestAgeSec) })))))));
  const timer = setInterval(() => { if (state.page === page) route(); else clearInterval(timer); }, 15000);
  const page = { onEvent() {} };
  return page;
}

// ---- Start ----------------------------------------------------------------------------

document.getElementById("company").addEventListener("change", (event) => {
  sessionStorage.setItem(COMPANY, event.target.value);
  switchCompany();
});
document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
if (sessionStorage.getItem(TOKEN)) start().catch(() => signInForm());
else signInForm();
