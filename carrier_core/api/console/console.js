// Carrier web console: a plain ES module, no framework and no build step.
//
// It talks to the API it is served by, with relative URLs, and to the WebSocket API
// (`GET v1/console-config` says where; by default `/v1/ws` beside the page). The API key
// comes from the URL fragment (`#key=...`, which `carrier dev` prints and browsers never
// send to a server) or is pasted; it is kept in this tab's sessionStorage only.
// Every piece of data is written with textContent: nothing from the API is parsed as HTML.

const KEY_STORAGE = "carrier.console.key";
const PREFS_STORAGE = "carrier.console.prefs";
const DEFAULT_ROOM = "console";
const DEFAULT_SENDER = "console";
const PAGE = 50;

const base = new URL(".", location.href);

const state = {
  key: null,
  websocketBase: null,
  agents: [],
  agentId: null,
  rooms: [],
  /** whether `rooms` is every room of the agent (else only the first page) */
  allRooms: false,
  room: null,
  view: "chat",
  socket: null,
  socketRetry: 0,
  socketTimer: null,
  /** client_message_id -> a message sent from here, until its turn is known */
  pending: new Map(),
  /** turn id -> its live block in the conversation */
  turns: new Map(),
  seenMessages: new Set(),
  /** whether the conversation is scrolled to (about) its end */
  atBottom: true,
  inspected: null,
  inspectTimer: null,
  facts: { cursor: null },
  documents: { cursor: null },
  webhook: null,
  deliveries: { cursor: null },
  prefs: readPrefs(),
};

// ------------------------------------------------------------------ DOM helpers

const $ = (id) => document.getElementById(id);

/** An element: `attrs` are attributes (`class`, `text` for textContent, `on` for events). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "class") el.className = value;
    else if (name === "on") for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

function clear(el) {
  el.replaceChildren();
  return el;
}

function badge(text, kind = text) {
  return h("span", { class: `badge ${kind || ""}`, text });
}

function empty(title, detail) {
  return h("div", { class: "empty" }, h("strong", { text: title }), detail ? h("span", { text: detail }) : null);
}

function skeleton(lines = 3) {
  return h("div", { class: "block" }, Array.from({ length: lines }, (_, i) => h("div", { class: i === 0 ? "skeleton tall" : "skeleton" })));
}

let toastTimer = null;
function toast(message, kind = "") {
  const el = $("toast");
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 6000 : 3000);
}

// ------------------------------------------------------------------ formatting

const numberFormat = new Intl.NumberFormat();
const fmtInt = (n) => numberFormat.format(n ?? 0);

function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function fmtCost(usd) {
  if (!usd) return "$0.00";
  if (usd < 0.01) return `$${usd.toFixed(6).replace(/0+$/, "")}`;
  return `$${usd.toFixed(4)}`;
}

function fmtTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function fmtDateTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

function pretty(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function newId() {
  if (crypto.randomUUID) return `console-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// ------------------------------------------------------------------ preferences

function readPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_STORAGE) || "{}") || {};
  } catch {
    return {};
  }
}

function savePrefs() {
  try {
    localStorage.setItem(PREFS_STORAGE, JSON.stringify(state.prefs));
  } catch {
    /* storage may be off: preferences are a convenience */
  }
}

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body, auth = true } = {}) {
  const headers = {};
  if (auth) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, base), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, "network", `The API could not be reached (${error.message}).`);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    const detail = (data && data.error) || {};
    if (response.status === 401 && auth) signOut("The API refused this key. Paste another one.");
    throw new ApiError(response.status, detail.code || `http_${response.status}`, detail.message || response.statusText);
  }
  return data;
}

const agentPath = (suffix = "") => `v1/agents/${encodeURIComponent(state.agentId)}${suffix}`;
const roomPath = (room, suffix = "") => agentPath(`/rooms/${encodeURIComponent(room)}${suffix}`);

function reportError(error, what) {
  if (error instanceof ApiError && error.status === 401) return;
  console.error(what, error);
  toast(`${what}: ${error.message}`, "error");
}

// ------------------------------------------------------------------ signing in

function keyFromFragment() {
  if (!location.hash) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) {
    // Out of the address bar (and the history) at once.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return key;
}

function showSignIn(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("signin-key").value = "";
  $("signin-key").focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  closeSocket();
  closeInspector();
  showSignIn(message);
}

async function signIn(key) {
  state.key = key;
  try {
    await loadAgents();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(error.status === 403 ? "This key may not list agents: the console needs an API key." : "The API refused this key.");
      return;
    }
    state.key = null;
    showSignIn(`The API could not be read: ${error.message}`);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  showView(state.prefs.view || "chat");
  await selectAgent(pickAgent());
}

// ------------------------------------------------------------------ agents

function agentLabel(agent) {
  return agent.handle || agent.name;
}

async function loadAgents() {
  const agents = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "100" });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`v1/agents?${query}`);
    agents.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && agents.length < 1000);
  state.agents = agents;
  const select = clear($("agent-select"));
  const names = new Map();
  for (const agent of agents) names.set(agentLabel(agent), (names.get(agentLabel(agent)) || 0) + 1);
  for (const agent of agents) {
    const label = agentLabel(agent);
    select.append(h("option", { value: agent.id, text: names.get(label) > 1 ? `${label} · ${shortId(agent.id)}` : label }));
  }
  if (!agents.length) select.append(h("option", { value: "", text: "No agents yet" }));
  select.disabled = !agents.length;
}

function pickAgent() {
  const wanted = state.prefs.agent;
  if (state.agents.some((a) => a.id === wanted)) return wanted;
  return state.agents.length ? state.agents[0].id : null;
}

function currentAgent() {
  return state.agents.find((a) => a.id === state.agentId) || null;
}

async function selectAgent(agentId) {
  state.agentId = agentId;
  $("agent-select").value = agentId || "";
  state.prefs.agent = agentId;
  savePrefs();
  closeInspector();
  forgetTurns();
  state.pending.clear();
  const agent = currentAgent();
  $("message-input").placeholder = agent ? `Message ${agent.name}…` : "Write a message…";
  document.title = agent ? `${agent.name} · Carrier console` : "Carrier console";
  if (!agentId) {
    clear($("room-list"));
    closeSocket();
    $("room-title").textContent = "No agent";
    $("room-meta").textContent = "";
    clear($("messages")).append(
      empty("No agents yet", "Register one with `carrier dev --character characters/ada.json`, or POST a character file to /v1/agents."),
    );
    $("composer").hidden = true;
    return;
  }
  $("composer").hidden = false;
  await loadRooms();
  const saved = (state.prefs.rooms || {})[agentId];
  const room = saved || (state.rooms[0] && state.rooms[0].room) || DEFAULT_ROOM;
  await selectRoom(room);
  refreshView();
}

// ------------------------------------------------------------------ rooms

async function loadRooms() {
  try {
    const page = await api(agentPath("/rooms?limit=100"));
    state.rooms = page.data.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    state.allRooms = !page.next_cursor;
  } catch (error) {
    state.rooms = [];
    state.allRooms = false;
    reportError(error, "Rooms could not be read");
  }
  renderRooms();
}

function renderRooms() {
  const list = clear($("room-list"));
  const rooms = [...state.rooms];
  if (state.room && !rooms.some((r) => r.room === state.room)) rooms.unshift({ room: state.room, messages: 0, fresh: true });
  for (const room of rooms) {
    const button = h(
      "button",
      {
        type: "button",
        class: "room",
        "aria-current": room.room === state.room ? "true" : "false",
        title: room.room,
        on: { click: () => selectRoom(room.room) },
      },
      h("span", { class: "room-name", text: room.room }),
      h("span", { class: "room-count", text: room.fresh ? "new" : fmtInt(room.messages) }),
    );
    list.append(h("li", {}, button));
  }
}

async function selectRoom(room) {
  state.room = room;
  state.prefs.rooms = { ...(state.prefs.rooms || {}), [state.agentId]: room };
  savePrefs();
  renderRooms();
  $("room-title").textContent = room;
  const info = state.rooms.find((r) => r.room === room);
  $("room-meta").textContent = info ? `${info.kind === "group" ? "Group room" : "Direct conversation"} · ${fmtInt(info.messages)} messages` : "New room: it is made by its first message";
  await loadMessages();
  connectSocket();
}

// ------------------------------------------------------------------ messages

async function loadMessages() {
  const list = clear($("messages"));
  forgetTurns();
  state.seenMessages.clear();
  list.append(h("li", { class: "block" }, skeleton(3)));
  let messages = [];
  // A room not listed yet is made by its first message: nothing to read (and no 404).
  const known = !state.allRooms || state.rooms.some((r) => r.room === state.room);
  try {
    if (known) messages = (await api(roomPath(state.room, `/messages?limit=${PAGE}`))).data.reverse();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) reportError(error, "Messages could not be read");
  }
  clear(list);
  if (!messages.length) {
    list.append(h("li", { class: "empty", id: "messages-empty" }, h("strong", { text: "No messages yet" }), h("span", { text: "Say hello: the agent's reply and each step of its turn show up here." })));
    return;
  }
  let day = null;
  for (const message of messages) {
    const thisDay = message.created_at ? new Date(message.created_at).toDateString() : null;
    if (thisDay && thisDay !== day) {
      day = thisDay;
      list.append(h("li", { class: "day-divider", text: new Date(message.created_at).toLocaleDateString([], { dateStyle: "medium" }) }));
    }
    list.append(messageElement(message));
  }
  scrollToEnd();
}

function agentName() {
  const agent = currentAgent();
  return agent ? agent.name : "Agent";
}

/** A message of the conversation: the agent's (with its turn's inspector) or a person's. */
function messageElement(message, { sending = false } = {}) {
  state.seenMessages.add(message.id);
  const fromAgent = Boolean(message.from_agent);
  const meta = h("div", { class: "meta" });
  if (message.created_at) meta.append(h("time", { datetime: message.created_at, text: fmtTime(message.created_at) }));
  if (fromAgent && message.actions && message.actions.length) {
    for (const action of message.actions) meta.append(h("span", { class: "chip", text: action }));
  }
  const li = h(
    "li",
    {
      class: `message ${fromAgent ? "from-agent" : "from-user"}${sending ? " sending" : ""}`,
      dataset: { id: message.id || "", turn: message.turn_id || "" },
    },
    fromAgent ? h("span", { class: "who", text: agentName() }) : null,
    h("div", { class: "bubble", text: message.text }),
    attachmentsElement(message.attachments),
    meta,
  );
  if (message.turn_id && fromAgent) meta.append(inspectButton(message.turn_id));
  return li;
}

function inspectButton(turnId, label = "Inspect turn") {
  return h("button", { type: "button", class: "link-button inspect", on: { click: () => openInspector(turnId) } }, icon("inspect"), label);
}

function attachmentsElement(attachments) {
  if (!attachments || !attachments.length) return null;
  return h(
    "div",
    { class: "attachments" },
    attachments.map((a) => h("span", { class: "attachment", title: a.url || "" }, icon("clip"), h("span", { text: a.title || a.contentType || a.url || "attachment" }))),
  );
}

/** Scroll the conversation to its end (with `ifNear`, only when it is almost there). */
function scrollToEnd({ ifNear = false } = {}) {
  const list = $("messages");
  if (ifNear && !state.atBottom) return;
  requestAnimationFrame(() => { list.scrollTop = list.scrollHeight; });
}

function removeEmptyNotice() {
  const notice = $("messages-empty");
  if (notice) notice.remove();
}

// ------------------------------------------------------------------ a turn, live

/** What the conversation shows of a turn while it runs: its progress, then a summary. */
class TurnBlock {
  constructor(turnId, anchor) {
    this.turnId = turnId;
    this.started = performance.now();
    this.finished = false;
    this.replies = 0;
    this.steps = h("span", { class: "progress-steps" });
    this.spinner = h("span", { class: "spinner", "aria-hidden": "true" });
    this.elapsed = h("span", { class: "elapsed" });
    this.el = h("li", { class: "progress", dataset: { turn: turnId } }, this.spinner, this.steps, this.elapsed);
    const list = $("messages");
    if (anchor && anchor.parentNode === list) anchor.after(this.el);
    else list.append(this.el);
    this.timer = setInterval(() => this.tick(), 100);
    this.watchdog = setTimeout(() => this.poll(), 10000);
  }

  tick() {
    this.elapsed.textContent = fmtMs(performance.now() - this.started);
  }

  /** Stop its clock and its polling (the conversation it was in is gone). */
  dispose() {
    this.finished = true;
    clearInterval(this.timer);
    clearTimeout(this.watchdog);
  }

  step(label, { error = false } = {}) {
    this.steps.append(h("span", { class: `progress-step${error ? " error" : ""}` }, icon(error ? "alert" : "check"), label));
    if (!this.finished) scrollToEnd();
  }

  /** A reply of this turn goes before the progress line. */
  addReply(element) {
    this.replies += 1;
    this.el.before(element);
  }

  /** Once the turn ends, one line sums it up; the frames stay listed for a tooltip. */
  finish(status, error) {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    clearTimeout(this.watchdog);
    const took = fmtMs(performance.now() - this.started);
    const done = status === "done";
    this.step(done ? "Done" : `Failed${error ? `: ${error}` : ""}`, { error: !done });
    this.el.classList.add(done ? "done" : "failed");
    this.el.title = [...this.steps.children].map((s) => s.textContent).join(" → ");
    this.steps.classList.add("sr-only");
    const summary = done ? (this.replies ? `Answered in ${took}` : `Done in ${took}, no reply`) : `Failed after ${took}${error ? `: ${error}` : ""}`;
    this.spinner.replaceWith(icon(done ? "check" : "alert"));
    this.elapsed.replaceWith(h("span", { class: "progress-summary", text: summary }));
    if (!done || !this.replies) this.el.append(inspectButton(this.turnId, "Inspect"));
    scrollToEnd({ ifNear: true });
  }

  /** Frames may be missed (a reconnect, a push that failed): read the turn itself. */
  async poll() {
    if (this.finished || !state.key) return;
    try {
      const turn = await api(`v1/turns/${this.turnId}`);
      if (this.finished) return; // disposed meanwhile
      for (const reply of turn.replies) addReply({ ...reply, turn_id: this.turnId });
      if (turn.status === "done" || turn.status === "failed") {
        this.finish(turn.status, turn.error);
        turnChanged(this.turnId);
        return;
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
    }
    this.watchdog = setTimeout(() => this.poll(), 2000);
  }
}

function forgetTurns() {
  for (const block of state.turns.values()) block.dispose();
  state.turns.clear();
}

function blockFor(turnId, anchor) {
  let block = state.turns.get(turnId);
  if (!block) {
    removeEmptyNotice();
    block = new TurnBlock(turnId, anchor);
    state.turns.set(turnId, block);
  }
  return block;
}

function addReply(reply) {
  if (state.seenMessages.has(reply.id)) return;
  const element = messageElement({ ...reply, from_agent: true, created_at: reply.created_at || new Date().toISOString() });
  const block = reply.turn_id ? blockFor(reply.turn_id) : null;
  if (block) block.addReply(element);
  else $("messages").append(element);
  scrollToEnd();
}

async function sendMessage(text) {
  if (!state.agentId || !state.room) return;
  const sender = ($("sender").value || DEFAULT_SENDER).trim();
  const clientId = newId();
  removeEmptyNotice();
  const element = messageElement({ id: clientId, text, from_agent: false, created_at: new Date().toISOString() }, { sending: true });
  $("messages").append(element);
  scrollToEnd();
  const message = { text, sender, client_message_id: clientId };
  state.pending.set(clientId, { element, room: state.room });
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ action: "sendMessage", ...message }));
    // Not accepted soon (the socket dropped?): post it again over REST. The client message
    // id makes that the same message, never a second one.
    setTimeout(() => {
      const sent = state.pending.get(clientId);
      if (sent && sent.room === state.room) postMessage(message);
    }, 8000);
    return;
  }
  // No live connection: post over REST; the turn's block polls for the answer.
  await postMessage(message);
}

async function postMessage(message) {
  try {
    const accepted = await api(roomPath(state.room, "/messages"), { method: "POST", body: message });
    onFrame({ type: "accepted", ...accepted, client_message_id: message.client_message_id });
  } catch (error) {
    onFrame({ type: "error", code: error.code, message: error.message, client_message_id: message.client_message_id });
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case "accepted": {
      const sent = state.pending.get(frame.client_message_id);
      state.pending.delete(frame.client_message_id);
      const anchor = sent ? sent.element : null;
      if (sent) {
        sent.element.classList.remove("sending");
        sent.element.dataset.id = frame.message_id;
        sent.element.dataset.turn = frame.turn_id;
        state.seenMessages.add(frame.message_id);
      }
      if (!sent && state.turns.has(frame.turn_id)) break; // accepted twice (a retried post)
      const block = blockFor(frame.turn_id, anchor);
      block.step(frame.status === "queued" ? "Accepted" : `Accepted (${frame.status})`);
      if (frame.status === "done" || frame.status === "failed") block.poll();
      break;
    }
    case "turn.progress": {
      const block = blockFor(frame.turn_id);
      if (frame.step === "decided") {
        block.step(frame.respond ? `Decided: ${frame.actions.join(", ")}` : "Decided to stay silent");
      } else if (frame.step === "action") {
        block.step(frame.error ? `${frame.action} failed: ${frame.error}` : `${frame.action} done`, { error: Boolean(frame.error) });
      } else {
        block.step(frame.step);
      }
      turnChanged(frame.turn_id);
      break;
    }
    case "reply":
      addReply(frame);
      turnChanged(frame.turn_id);
      break;
    case "turn.done":
    case "turn.failed": {
      const block = blockFor(frame.turn_id);
      if (frame.answered_by) block.step(`Answered with turn ${shortId(frame.answered_by)}`);
      block.finish(frame.type === "turn.done" ? "done" : "failed", frame.error);
      turnChanged(frame.turn_id);
      refreshRoomCount();
      break;
    }
    case "error": {
      const sent = state.pending.get(frame.client_message_id);
      if (sent) {
        state.pending.delete(frame.client_message_id);
        sent.element.classList.remove("sending");
        sent.element.classList.add("failed");
        sent.element.querySelector(".meta").append(h("span", { class: "error-text", text: `Not sent: ${frame.message}` }));
      } else {
        toast(frame.message, "error");
      }
      break;
    }
    default:
      break;
  }
}

let roomCountTimer = null;
function refreshRoomCount() {
  clearTimeout(roomCountTimer);
  roomCountTimer = setTimeout(async () => {
    const room = state.room;
    await loadRooms();
    if (room !== state.room) return;
    const info = state.rooms.find((r) => r.room === room);
    if (info) $("room-meta").textContent = `${info.kind === "group" ? "Group room" : "Direct conversation"} · ${fmtInt(info.messages)} messages`;
  }, 400);
}

// ------------------------------------------------------------------ the WebSocket

function setLive(liveState, text) {
  const el = $("live");
  el.dataset.state = liveState;
  $("live-text").textContent = text;
}

function socketUrl() {
  let url;
  if (state.websocketBase) {
    url = new URL(state.websocketBase);
  } else {
    url = new URL("v1/ws", base);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  }
  url.searchParams.set("agent", state.agentId);
  url.searchParams.set("room", state.room);
  url.searchParams.set("token", state.key);
  return url;
}

function closeSocket() {
  clearTimeout(state.socketTimer);
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000);
  setLive("offline", "Offline");
}

function connectSocket() {
  closeSocket();
  if (!state.agentId || !state.room || !state.key) return;
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (error) {
    setLive("offline", "No live updates");
    console.error("WebSocket", error);
    return;
  }
  state.socket = socket;
  setLive("connecting", "Connecting");
  socket.addEventListener("open", () => {
    if (state.socket !== socket) return;
    state.socketRetry = 0;
    setLive("live", "Live");
  });
  socket.addEventListener("message", (event) => {
    if (state.socket !== socket) return;
    try {
      onFrame(JSON.parse(event.data));
    } catch (error) {
      console.error("a frame could not be read", error);
    }
  });
  socket.addEventListener("close", () => {
    if (state.socket !== socket) return;
    state.socket = null;
    setLive("offline", "Reconnecting");
    const wait = Math.min(15000, 1000 * 2 ** state.socketRetry++);
    state.socketTimer = setTimeout(connectSocket, wait);
  });
}

// ------------------------------------------------------------------ the turn inspector

function turnChanged(turnId) {
  if (state.inspected !== turnId) return;
  clearTimeout(state.inspectTimer);
  state.inspectTimer = setTimeout(() => loadInspector(turnId, { quiet: true }), 250);
}

function openInspector(turnId) {
  state.inspected = turnId;
  document.body.classList.add("inspecting");
  $("inspector").hidden = false;
  $("inspector-backdrop").hidden = false;
  for (const el of document.querySelectorAll(".message.selected")) el.classList.remove("selected");
  for (const el of document.querySelectorAll(`.message.from-agent[data-turn="${CSS.escape(turnId)}"]`)) el.classList.add("selected");
  scrollToEnd({ ifNear: true }); // the conversation may have narrowed beside the panel
  loadInspector(turnId);
}

function closeInspector() {
  state.inspected = null;
  document.body.classList.remove("inspecting");
  $("inspector").hidden = true;
  $("inspector-backdrop").hidden = true;
  for (const el of document.querySelectorAll(".message.selected")) el.classList.remove("selected");
  scrollToEnd({ ifNear: true });
}

async function loadInspector(turnId, { quiet = false } = {}) {
  const body = $("inspector-body");
  $("inspector-id").textContent = turnId;
  if (!quiet) clear(body).append(skeleton(4));
  let turn, steps, calls, decision;
  try {
    [turn, steps, calls, decision] = await Promise.all([
      api(`v1/turns/${turnId}`),
      api(`v1/turns/${turnId}/steps`),
      api(`v1/turns/${turnId}/calls`),
      api(`v1/turns/${turnId}/decision`),
    ]);
  } catch (error) {
    if (state.inspected !== turnId) return;
    clear(body).append(h("div", { class: "notice error", text: `The turn could not be read: ${error.message}` }));
    return;
  }
  if (state.inspected !== turnId) return;
  const opened = new Set([...body.querySelectorAll("details[open]")].map((d) => d.dataset.fold));
  clear(body).append(...inspectorSections(turn, steps, calls, decision, quiet ? opened : null));
}

function inspectorSections(turn, steps, calls, decision, opened) {
  const sections = [];
  const isOpen = (name, fallback) => (opened ? opened.has(name) : fallback);
  const starts = steps.map((s) => Date.parse(s.started_at));
  const ends = steps.map((s) => Date.parse(s.finished_at));
  const t0 = starts.length ? Math.min(...starts) : 0;
  const t1 = ends.length ? Math.max(...ends) : 0;
  const total = Math.max(1, t1 - t0);
  const callLatency = calls.reduce((sum, c) => sum + (c.latency_ms || 0), 0);

  // Status and totals.
  const head = h("div", { class: "row" }, badge(turn.status), h("span", { class: "muted small", text: `message ${shortId(turn.message_id)}` }));
  sections.push(head);
  if (turn.answered_by) {
    sections.push(h("div", { class: "notice" }, "Answered together with later messages by turn ", h("button", { type: "button", class: "link-button", text: shortId(turn.answered_by), on: { click: () => openInspector(turn.answered_by) } }), "."));
  }
  if (turn.error) sections.push(h("div", { class: "notice error", text: turn.error }));
  sections.push(
    h(
      "div",
      { class: "stats" },
      stat("Latency", steps.length ? fmtMs(t1 - t0) : "—", `${steps.length} steps`),
      stat("Model calls", fmtInt(turn.usage.model_calls), calls.length ? `${fmtMs(callLatency)} in models` : "none"),
      stat("Tokens", fmtInt(turn.usage.input_tokens + turn.usage.output_tokens), `${fmtInt(turn.usage.input_tokens)} in · ${fmtInt(turn.usage.output_tokens)} out`),
      stat("Est. cost", fmtCost(turn.usage.cost_usd), "list prices"),
    ),
  );

  // The decision.
  if (decision.decision) {
    const d = decision.decision;
    const card = h("div", { class: "decision" });
    if (d.thought) card.append(h("p", { class: "thought", text: d.thought }));
    const fields = h("dl", { class: "decision-fields" });
    fields.append(h("dt", { text: "Actions" }), h("dd", { class: "row" }, (d.actions || []).map((a) => h("span", { class: "chip", text: a }))));
    if (d.providers && d.providers.length) {
      fields.append(h("dt", { text: "Providers" }), h("dd", { class: "row" }, d.providers.map((p) => h("span", { class: "chip", text: p }))));
    }
    if (d.text) fields.append(h("dt", { text: "Text" }), h("dd", { class: "decision-text", text: d.text }));
    card.append(fields);
    sections.push(block("Decision", card, decision.steps_taken > 1 ? `the last of ${decision.steps_taken} decide steps` : null));
  }

  // The steps, as a timeline.
  const list = h("ol", { class: "steps" });
  steps.forEach((step, i) => {
    const start = starts[i] - t0;
    const bar = h("span", { class: "lane-bar" });
    bar.style.left = `${(start / total) * 100}%`;
    bar.style.width = `${Math.max(0.6, (step.duration_ms / total) * 100)}%`;
    const tokens = step.input_tokens || step.output_tokens ? `${fmtInt(step.input_tokens)} → ${fmtInt(step.output_tokens)} tokens` : null;
    const detail = { ...step.detail };
    delete detail.prompt;
    const summary = h(
      "summary",
      {},
      h(
        "div",
        { class: "step-line" },
        h("span", { class: `status-dot ${step.status}`, title: step.status }),
        h("span", { class: "step-name", text: step.step }),
        step.status !== "ok" ? badge(step.status) : null,
        h("span", { class: "step-time", text: `+${fmtMs(start)} · ${fmtMs(step.duration_ms)}` }),
      ),
      h("div", { class: "lane" }, bar),
      tokens || step.model_calls ? h("div", { class: "step-tokens", text: [step.model_calls ? `${step.model_calls} model call${step.model_calls > 1 ? "s" : ""}` : null, tokens].filter(Boolean).join(" · ") }) : null,
    );
    const body = h("div", { class: "step-detail" }, step.key ? h("div", { class: "muted small mono", text: `key ${step.key}` }) : null, keyValues(detail));
    list.append(h("li", {}, h("details", { class: `step ${step.status}`, dataset: { fold: `step-${i}` }, open: isOpen(`step-${i}`, false) }, summary, body)));
  });
  sections.push(block("Steps", steps.length ? list : empty("No steps yet", "The turn is queued.")));

  // The prompt the decide step sent.
  const decides = steps.filter((s) => s.detail && s.detail.prompt);
  decides.forEach((step, i) => {
    const prompt = step.detail.prompt;
    const sizes = [
      step.detail.prompt_tokens !== undefined ? `${fmtInt(step.detail.prompt_tokens)} tokens` : null,
      step.detail.prompt_budget ? `budget ${fmtInt(step.detail.prompt_budget)}` : null,
      prompt.images ? `${prompt.images} image${prompt.images > 1 ? "s" : ""}` : null,
    ].filter(Boolean).join(" · ");
    const parts = h("div", { class: "fold-body" });
    if (step.detail.prompt_cut) parts.append(h("div", { class: "notice", text: `Cut to fit: ${pretty(step.detail.prompt_cut)}` }));
    if (prompt.system) parts.append(h("h3", { text: "System" }), h("pre", { class: "prompt-system", text: prompt.system }));
    parts.append(h("h3", { text: "Prompt" }), h("pre", { class: "prompt-text", text: prompt.text }));
    const name = `prompt-${i}`;
    sections.push(h("details", { class: "fold", dataset: { fold: name }, open: isOpen(name, false) }, h("summary", {}, decides.length > 1 ? `Prompt sent (${step.key || step.step})` : "Prompt sent", h("span", { class: "muted", text: sizes })), parts));
  });

  // The model calls.
  if (calls.length) {
    const list = h("ol", { class: "calls" });
    for (const c of calls) {
      list.append(
        h(
          "li",
          { class: `call ${c.status}` },
          h(
            "div",
            { class: "call-line" },
            h("span", { class: "chip", text: c.step || "—" }),
            h("span", { class: "call-task", text: c.task || c.role }),
            h("span", { class: "call-model mono", title: `${c.provider}:${c.model}`, text: c.model }),
            c.status === "ok" ? null : badge(c.status, "error"),
          ),
          h(
            "div",
            { class: "call-numbers" },
            h("span", { text: c.provider }),
            c.task ? h("span", { text: c.role }) : null,
            h("span", { text: `${fmtInt(c.input_tokens)} in → ${fmtInt(c.output_tokens)} out` }),
            h("span", { text: fmtMs(c.latency_ms) }),
            h("span", { text: fmtCost(c.cost_usd) }),
          ),
          c.error ? h("div", { class: "form-error", text: c.error }) : null,
        ),
      );
    }
    sections.push(block("Model calls", list));
  }

  // What the prompt was composed of.
  const inputs = Object.keys(decision.state || {});
  if (inputs.length) {
    sections.push(h("details", { class: "fold", dataset: { fold: "state" }, open: isOpen("state", false) }, h("summary", {}, "Prompt inputs", h("span", { class: "muted", text: `${inputs.length} providers' values` })), h("div", { class: "fold-body" }, keyValues(decision.state))));
  }
  return sections;
}

function stat(label, value, sub) {
  return h("div", { class: "stat" }, h("div", { class: "stat-label", text: label }), h("div", { class: "stat-value", text: value }), sub ? h("div", { class: "stat-sub", text: sub }) : null);
}

function block(title, content, note) {
  return h("section", { class: "block" }, h("div", { class: "row" }, h("h3", { class: "block-title", text: title }), note ? h("span", { class: "muted small", text: note }) : null), content);
}

function keyValues(object) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("p", { class: "muted small", text: "Nothing recorded." });
  const dl = h("dl", { class: "kv" });
  for (const [key, value] of entries) dl.append(h("dt", { text: key }), h("dd", {}, valueElement(value)));
  return dl;
}

const isScalar = (value) => value === null || ["string", "number", "boolean"].includes(typeof value);

/** A value of a step's detail: short ones inline, the rest as indented JSON. */
function valueElement(value) {
  let text = null;
  if (isScalar(value)) text = String(value);
  else if (Array.isArray(value) && value.every(isScalar)) text = value.length ? value.join(", ") : "none";
  else if (typeof value === "object" && !Object.keys(value).length) text = "none";
  if (text !== null && !text.includes("\n") && text.length <= 200) return h("span", { text });
  return h("pre", { text: text ?? pretty(value) });
}

// ------------------------------------------------------------------ memory

async function loadMemory() {
  loadFacts(true);
  loadDocuments(true);
}

async function loadFacts(reset) {
  const list = $("facts");
  if (reset) {
    state.facts.cursor = null;
    clear(list).append(skeleton(2));
  }
  const query = new URLSearchParams({ kind: "fact", limit: "30" });
  if (state.facts.cursor) query.set("cursor", state.facts.cursor);
  try {
    const page = await api(agentPath(`/memories?${query}`));
    if (reset) clear(list);
    for (const fact of page.data) {
      list.append(h("li", { class: "fact" }, h("span", { class: "fact-text", text: fact.text }), h("div", { class: "fact-meta" }, h("span", { text: fmtDateTime(fact.created_at) }), fact.content && fact.content.source ? h("span", { text: fact.content.source }) : null)));
    }
    if (reset && !page.data.length) list.append(empty("No facts yet", "Reflection stores what the agent learns about people as they talk."));
    state.facts.cursor = page.next_cursor;
    $("facts-more").hidden = !page.next_cursor;
    const facts = list.querySelectorAll(".fact").length;
    $("facts-count").textContent = facts ? `${facts}${page.next_cursor ? "+" : ""}` : "";
  } catch (error) {
    if (reset) clear(list);
    reportError(error, "Facts could not be read");
  }
}

async function loadDocuments(reset) {
  const list = $("documents");
  if (reset) {
    state.documents.cursor = null;
    clear(list).append(skeleton(2));
  }
  const query = new URLSearchParams({ limit: "30" });
  if (state.documents.cursor) query.set("cursor", state.documents.cursor);
  try {
    const page = await api(agentPath(`/documents?${query}`));
    if (reset) clear(list);
    for (const doc of page.data) {
      list.append(
        h(
          "li",
          { class: "doc" },
          h("div", { class: "doc-head" }, h("span", { class: "doc-title", text: doc.title }), badge(doc.status)),
          h("div", { class: "doc-meta" }, h("span", { text: `${fmtInt(doc.fragments)} fragment${doc.fragments === 1 ? "" : "s"}` }), h("span", { text: doc.content_type }), h("span", { text: fmtDateTime(doc.created_at) })),
          h("div", { class: "doc-source", title: doc.source, text: doc.source }),
          doc.error ? h("div", { class: "form-error", text: doc.error }) : null,
        ),
      );
    }
    if (reset && !page.data.length) list.append(empty("No documents", "Add some with `carrier knowledge add` or POST /v1/agents/{id}/documents."));
    state.documents.cursor = page.next_cursor;
    $("documents-more").hidden = !page.next_cursor;
    const documents = list.querySelectorAll(".doc").length;
    $("documents-count").textContent = documents ? `${documents}${page.next_cursor ? "+" : ""}` : "";
  } catch (error) {
    if (reset) clear(list);
    reportError(error, "Documents could not be read");
  }
}

const KIND_LABELS = { fact: "fact", fragment: "knowledge", message: "message", document: "document" };

async function search(query) {
  const results = clear($("search-results"));
  const kinds = [...document.querySelectorAll('input[name="kind"]:checked')].map((i) => i.value);
  if (!kinds.length) {
    results.append(empty("Choose what to search", "Facts, knowledge or messages."));
    return;
  }
  results.append(skeleton(2));
  try {
    const found = await api(agentPath("/memories/search"), { method: "POST", body: { query, kinds, limit: 12, threshold: 0.01 } });
    clear(results);
    if (!found.length) results.append(empty("Nothing found", "Nothing the agent remembers is close to that."));
    for (const item of found) {
      const meter = h("span", { class: "meter" }, h("span"));
      meter.firstChild.style.width = `${Math.max(0, Math.min(1, item.similarity)) * 100}%`;
      results.append(
        h(
          "li",
          { class: "result" },
          h("div", { class: "result-head" }, badge(KIND_LABELS[item.kind] || item.kind, "kind"), h("span", { class: "muted small", text: fmtDateTime(item.created_at) }), h("span", { class: "similarity", title: "cosine similarity" }, meter, item.similarity.toFixed(2))),
          h("div", { class: "result-text", text: item.text }),
        ),
      );
    }
  } catch (error) {
    clear(results);
    reportError(error, "The search failed");
  }
}

// ------------------------------------------------------------------ webhooks

async function loadWebhooks() {
  const list = $("webhook-list");
  clear(list).append(skeleton(2));
  clear($("deliveries"));
  $("deliveries-more").hidden = true;
  let hooks = [];
  try {
    hooks = await api(agentPath("/webhooks"));
  } catch (error) {
    clear(list);
    reportError(error, "Webhooks could not be read");
    return;
  }
  clear(list);
  $("webhooks-count").textContent = hooks.length ? String(hooks.length) : "";
  if (!hooks.length) {
    list.append(empty("No webhooks", "POST /v1/agents/{id}/webhooks with a URL to have every reply delivered, signed."));
    $("deliveries").append(empty("No deliveries", "Deliveries appear here once a webhook is set."));
    state.webhook = null;
    return;
  }
  if (!hooks.some((w) => w.id === state.webhook)) state.webhook = hooks[0].id;
  for (const hook of hooks) {
    list.append(
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", class: "webhook", dataset: { id: hook.id }, "aria-current": hook.id === state.webhook ? "true" : "false", on: { click: () => selectWebhook(hook.id) } },
          h("span", { class: "webhook-url", text: hook.url }),
          h("span", { class: "doc-meta" }, h("span", { text: hook.room ? `room ${hook.room}` : "every room" }), h("span", { text: `since ${fmtDateTime(hook.created_at)}` })),
        ),
      ),
    );
  }
  loadDeliveries(true);
}

/** The reply a delivery carries (its payload's `reply.text`), cut short for the table. */
function replyText(payload) {
  const text = (payload && payload.reply && payload.reply.text) || "";
  return text.length > 90 ? `${text.slice(0, 89)}…` : text || "—";
}

function selectWebhook(id) {
  state.webhook = id;
  for (const button of document.querySelectorAll(".webhook")) {
    button.setAttribute("aria-current", button.dataset.id === id ? "true" : "false");
  }
  loadDeliveries(true);
}

async function loadDeliveries(reset) {
  const box = $("deliveries");
  if (!state.webhook) return;
  if (reset) {
    state.deliveries.cursor = null;
    clear(box).append(skeleton(2));
  }
  const query = new URLSearchParams({ limit: "25" });
  const status = $("delivery-status").value;
  if (status) query.set("status", status);
  if (state.deliveries.cursor) query.set("cursor", state.deliveries.cursor);
  try {
    const page = await api(agentPath(`/webhooks/${state.webhook}/deliveries?${query}`));
    let tbody = box.querySelector("tbody");
    if (reset || !tbody) {
      clear(box);
      if (!page.data.length) {
        box.append(empty("No deliveries", status ? `None ${status}.` : "Each reply of the agent is delivered to the webhook."));
        $("deliveries-more").hidden = true;
        return;
      }
      tbody = h("tbody");
      box.append(
        h(
          "div",
          { class: "table-wrap" },
          h("table", {}, h("thead", {}, h("tr", {}, ["Created", "Status", "Reply", "Attempts", "HTTP", "Last error", "Next attempt", "Turn"].map((t, i) => h("th", { class: i === 3 || i === 4 ? "num" : null, text: t })))), tbody),
        ),
      );
    }
    for (const d of page.data) {
      tbody.append(
        h(
          "tr",
          { class: "clickable", title: "Inspect the turn", on: { click: () => openInspector(d.turn_id) } },
          h("td", { text: fmtDateTime(d.created_at) }),
          h("td", {}, badge(d.status)),
          h("td", { class: "wrap excerpt", text: replyText(d.payload) }),
          h("td", { class: "num", text: fmtInt(d.attempts) }),
          h("td", { class: "num", text: d.last_status ?? "—" }),
          h("td", { class: "wrap", text: d.last_error || "—" }),
          h("td", { text: d.status === "pending" ? fmtDateTime(d.next_attempt_at) : "—" }),
          h("td", { class: "mono", text: shortId(d.turn_id) }),
        ),
      );
    }
    state.deliveries.cursor = page.next_cursor;
    $("deliveries-more").hidden = !page.next_cursor;
  } catch (error) {
    if (reset) clear(box);
    reportError(error, "Deliveries could not be read");
  }
}

// ------------------------------------------------------------------ views

function showView(view) {
  if (!["chat", "memory", "webhooks"].includes(view)) view = "chat";
  state.view = view;
  state.prefs.view = view;
  savePrefs();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.dataset.view !== view;
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  document.body.classList.toggle("chat-view", view === "chat");
}

function refreshView() {
  if (!state.agentId) return;
  if (state.view === "memory") loadMemory();
  if (state.view === "webhooks") loadWebhooks();
}

// ------------------------------------------------------------------ wiring

function autosize(textarea) {
  textarea.style.height = "auto";
  textarea.style.height = `${Math.min(180, textarea.scrollHeight)}px`;
}

function wire() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("signin-key").value.trim();
    if (key) signIn(key);
  });
  $("signout").addEventListener("click", () => signOut());
  $("agent-select").addEventListener("change", (event) => selectAgent(event.target.value));
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      closeInspector();
      showView(tab.dataset.view);
      refreshView();
    });
  }
  $("rooms-refresh").addEventListener("click", () => loadRooms());
  const messages = $("messages");
  messages.addEventListener("scroll", () => {
    state.atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 160;
  }, { passive: true });
  $("new-room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("new-room").value.trim();
    if (!room) return;
    $("new-room").value = "";
    selectRoom(room);
    $("message-input").focus();
  });
  const sender = $("sender");
  sender.value = state.prefs.sender || DEFAULT_SENDER;
  sender.addEventListener("change", () => {
    state.prefs.sender = sender.value.trim() || DEFAULT_SENDER;
    sender.value = state.prefs.sender;
    savePrefs();
  });
  const input = $("message-input");
  input.addEventListener("input", () => autosize(input));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    autosize(input);
    sendMessage(text);
  });
  $("inspector-close").addEventListener("click", closeInspector);
  $("inspector-backdrop").addEventListener("click", closeInspector);
  $("inspector-refresh").addEventListener("click", () => state.inspected && loadInspector(state.inspected));
  // The console link opened in a tab already showing the page changes only the fragment.
  window.addEventListener("hashchange", () => {
    const key = keyFromFragment();
    if (key && key !== state.key) signIn(key);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.inspected) closeInspector();
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-query").value.trim();
    if (query) search(query);
  });
  $("facts-more").addEventListener("click", () => loadFacts(false));
  $("documents-more").addEventListener("click", () => loadDocuments(false));
  $("delivery-status").addEventListener("change", () => loadDeliveries(true));
  $("deliveries-more").addEventListener("click", () => loadDeliveries(false));
}

async function start() {
  wire();
  const fromFragment = keyFromFragment();
  try {
    const config = await api("v1/console-config", { auth: false });
    state.websocketBase = config.websocket_url || null;
  } catch {
    state.websocketBase = null; // an older API: the WebSocket beside the page
  }
  const key = fromFragment || sessionStorage.getItem(KEY_STORAGE);
  if (key) await signIn(key);
  else showSignIn();
}

start();
