// The Tandem live demo page (dev profile): a shared board with cursors, presence and notes.
//
// Identity: the page asks the dev-only `POST /dev/token {name}` route for a token
// (a fresh user id with the chosen display name) and keeps it in sessionStorage,
// so each tab is its own user and a reload keeps it.
// Cursors and status travel as presence state; notes are durable events
// (`note:add`, `note:remove`) replayed from seq 0 on join and resumed with `since`.

import { ConnectionEnded, TandemClient, mergeParticipant } from "/client.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["yellow", "pink", "blue", "green", "violet"];
const BOARD_W = 1600;
const BOARD_H = 1000;
const NOTE_W = 180;
const CURSOR_EVERY_MS = 50; // presence is coalesced by the server anyway; stay under its rate
const MAX_ACTIVITY = 40;
const ID_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

const ui = {
  joinScreen: $("join-screen"), joinForm: $("join-form"), joinError: $("join-error"),
  joinButton: $("join-button"), nameInput: $("name-input"), sessionInput: $("session-input"),
  app: $("app"), board: $("board"), notes: $("notes"), cursors: $("cursors"),
  people: $("people"), peopleCount: $("people-count"), activity: $("activity"),
  conn: $("conn"), connText: $("conn-text"), banner: $("banner"),
  me: $("me"), meAvatar: $("me-avatar"), meName: $("me-name"),
  boardTitle: $("board-title"), boardName: $("board-name"), copyLink: $("copy-link"),
  seqLabel: $("seq-label"), swatches: $("swatches"),
  composer: $("composer"), composerText: $("composer-text"), composerCancel: $("composer-cancel"),
  composerSubmit: $("composer-submit"), commentMode: $("comment-mode"), hint: $("hint"),
  pins: $("pins"), threadPanel: $("thread-panel"), threadState: $("thread-state"),
  threadComments: $("thread-comments"), threadResolve: $("thread-resolve"),
  threadClose: $("thread-close"), replyForm: $("reply-form"), replyText: $("reply-text"),
  bell: $("bell"), badge: $("badge"),
};

const state = {
  client: null,
  sessionId: null,
  color: COLORS[0],
  participants: new Map(), // userId -> participant object
  notes: new Map(), // note id -> element
  cursors: new Map(), // userId -> element
  presence: { cursor: null, status: "active", color: null },
  composerAt: null,
  commenting: false,
  threads: new Map(), // thread id -> {thread, comments: Map, pin}
  openThread: null,
};

// -- helpers ---------------------------------------------------------------------

function hue(userId) {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}
const PALETTE = ["#e11d48", "#2563eb", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#ea580c", "#4f46e5"];
const userColor = (userId) => PALETTE[hue(userId) % PALETTE.length];
const initials = (name) =>
  (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => [...w][0]).join("").toUpperCase();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function avatar(userId, name) {
  const a = el("span", "avatar", initials(name));
  a.style.background = userColor(userId);
  a.title = name;
  return a;
}

function nameOf(userId) {
  if (userId === state.client?.userId) return "You";
  return state.participants.get(userId)?.name ?? userId;
}

function log(text) {
  const li = el("li");
  const now = new Date();
  li.append(el("time", "", now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  li.append(el("span", "", text));
  ui.activity.prepend(li);
  while (ui.activity.children.length > MAX_ACTIVITY) ui.activity.lastChild.remove();
}

function banner(text) {
  ui.banner.textContent = text || "";
  ui.banner.hidden = !text;
}

function newId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

// -- connection status -----------------------------------------------------------

function showConnection({ state: s, offline, delay }) {
  ui.conn.dataset.state = s;
  const text = {
    idle: "Not connected",
    connecting: "Connecting…",
    open: "Live",
    reconnecting: offline ? "Offline — will resume" : "Reconnecting…",
    closed: "Disconnected",
  }[s];
  ui.connText.textContent = text;
  if (s === "reconnecting") {
    banner(offline
      ? "You are offline. Changes from others will appear as soon as you are back."
      : `Connection lost; retrying${delay ? ` in ${delay.toFixed(1)} s` : ""}. Nothing will be missed.`);
  } else if (s === "open") {
    banner("");
  }
}

// -- presence --------------------------------------------------------------------

function isAway(p) { return p.status === "away" || p.state?.status === "away"; }

function renderPeople() {
  const list = [...state.participants.values()].sort((a, b) =>
    (a.userId === state.client.userId ? -1 : b.userId === state.client.userId ? 1 : 0) ||
    a.name.localeCompare(b.name));
  ui.people.replaceChildren(...list.map((p) => {
    const li = el("li", "person" + (isAway(p) ? " person--away" : ""));
    li.dataset.user = p.userId;
    const who = el("span", "who");
    who.append(el("span", "nm", p.userId === state.client.userId ? `${p.name} (you)` : p.name));
    const tabs = p.connections > 1 ? ` · ${p.connections} tabs` : "";
    who.append(el("span", "st", (isAway(p) ? "Away" : "Active") + tabs));
    li.append(avatar(p.userId, p.name), who);
    return li;
  }));
  ui.peopleCount.textContent = String(list.length);
}

// `p` is a whole record (session:joined, participant:joined) or a presence change
// entry, which carries only what changed (often just the state): merge, never replace.
function setParticipant(p) {
  const merged = mergeParticipant(state.participants.get(p.userId), p);
  state.participants.set(p.userId, merged);
  renderCursor(merged);
}

function removeParticipant(userId) {
  state.participants.delete(userId);
  state.cursors.get(userId)?.remove();
  state.cursors.delete(userId);
}

const CURSOR_SVG = "M2 2 L2 19 L7 14.5 L10.5 22 L13.5 20.6 L10 13.3 L16.5 13.3 Z";

function renderCursor(p) {
  if (p.userId === state.client.userId) return;
  const pos = p.state?.cursor;
  let node = state.cursors.get(p.userId);
  if (!pos || typeof pos.x !== "number" || typeof pos.y !== "number") {
    node?.remove();
    state.cursors.delete(p.userId);
    return;
  }
  if (!node) {
    node = el("div", "cursor");
    node.dataset.user = p.userId;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "24");
    svg.setAttribute("viewBox", "0 0 20 24");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", CURSOR_SVG);
    path.setAttribute("stroke", "#fff");
    path.setAttribute("stroke-width", "1.5");
    svg.append(path);
    node.append(svg, el("span", "label"));
    ui.cursors.append(node);
    state.cursors.set(p.userId, node);
  }
  const color = userColor(p.userId);
  node.querySelector("path").setAttribute("fill", color);
  const label = node.querySelector(".label");
  label.textContent = p.name;
  label.style.background = color;
  node.classList.toggle("cursor--away", isAway(p));
  node.dataset.x = String(Math.round(pos.x));
  node.dataset.y = String(Math.round(pos.y));
  node.style.transform = `translate(${pos.x}px, ${pos.y}px)`;
}

let lastSent = 0;
let trailing = null;

function sendPresence() {
  if (!state.sessionId || !state.client) return;
  clearTimeout(trailing);
  trailing = null;
  const wait = lastSent + CURSOR_EVERY_MS - performance.now();
  if (wait > 0) {
    trailing = setTimeout(sendPresence, wait);
    return;
  }
  lastSent = performance.now();
  try {
    state.client.updatePresence(state.sessionId, { ...state.presence });
  } catch {
    // not joined yet (or rejoining): the client sends the newest state after the rejoin
  }
}

function boardPoint(e) {
  const rect = ui.board.getBoundingClientRect();
  return {
    x: clamp(Math.round(e.clientX - rect.left), 0, BOARD_W),
    y: clamp(Math.round(e.clientY - rect.top), 0, BOARD_H),
  };
}

// -- notes -----------------------------------------------------------------------

function addNote(data, userId) {
  if (!data || typeof data.id !== "string" || state.notes.has(data.id)) return;
  const color = COLORS.includes(data.color) ? data.color : COLORS[0];
  const note = el("div", `note note--${color}`);
  note.dataset.id = data.id;
  note.append(el("div", "text", String(data.text ?? "")));
  note.append(el("span", "by", nameOf(userId) === "You" ? "you" : nameOf(userId)));
  const remove = el("button", "remove", "×");
  remove.type = "button";
  remove.title = "Remove note";
  remove.addEventListener("click", () => publish("note:remove", { id: data.id }));
  note.append(remove);
  note.style.left = `${clamp(Number(data.x) || 0, 0, BOARD_W - NOTE_W)}px`;
  note.style.top = `${clamp(Number(data.y) || 0, 0, BOARD_H - 110)}px`;
  note.addEventListener("dblclick", (e) => e.stopPropagation());
  ui.notes.append(note);
  state.notes.set(data.id, note);
}

function removeNote(id) {
  state.notes.get(id)?.remove();
  state.notes.delete(id);
}

async function publish(name, data) {
  try {
    await state.client.publish(state.sessionId, name, data);
  } catch (err) {
    banner(`Could not save (${err.code || err.message}). Please try again.`);
  }
}

function openComposer(at) {
  state.composerAt = at;
  ui.composerText.placeholder = state.commenting ? "Start a thread… (@name mentions)" : "Write a note…";
  ui.composerSubmit.textContent = state.commenting ? "Comment" : "Place note";
  ui.board.append(ui.composer);
  ui.composer.hidden = false;
  ui.composer.style.left = `${clamp(at.x, 0, BOARD_W - 250)}px`;
  ui.composer.style.top = `${clamp(at.y, 0, BOARD_H - 140)}px`;
  ui.composerText.value = "";
  ui.composerText.focus();
}

function closeComposer() {
  ui.composer.hidden = true;
  state.composerAt = null;
}

// -- events ----------------------------------------------------------------------

function onEvent(msg) {
  if (msg.sessionId !== state.sessionId) return;
  if (!msg.ephemeral) ui.seqLabel.textContent = `seq ${msg.seq}`;
  const who = nameOf(msg.userId);
  if (msg.name === "note:add") {
    addNote(msg.data, msg.userId);
    log(`${who} placed a note`);
  } else if (msg.name === "note:remove") {
    removeNote(msg.data?.id);
    log(`${who} removed a note`);
  } else if (THREAD_EVENTS.has(msg.name)) {
    onThreadEvent(msg.name, msg.data, who);
  }
}

// -- comments --------------------------------------------------------------------

const THREAD_EVENTS = new Set([
  "thread:created", "thread:updated", "thread:resolved", "thread:reopened", "comment:created",
  "comment:edited", "comment:deleted", "reaction:added", "reaction:removed",
]);

function mentionsIn(text) {
  const ids = new Set();
  for (const [, word] of text.matchAll(/@([^\s@]+)/g)) {
    for (const p of state.participants.values()) {
      const first = p.name.split(/\s+/)[0];
      if (p.userId !== state.client.userId && first.toLowerCase() === word.toLowerCase()) {
        ids.add(p.userId);
      }
    }
  }
  return [...ids];
}

async function commentCall(promise) {
  try {
    return await promise;
  } catch (err) {
    banner(`Comment not saved (${err.code || err.message}). Please try again.`);
    return null;
  }
}

async function startThread(at, text) {
  const thread = await commentCall(state.client.createThread(state.sessionId, {
    body: text, anchor: { x: at.x, y: at.y }, mentions: mentionsIn(text),
  }));
  if (thread) showThread(thread.id);
}

function onThreadEvent(name, data, who) {
  if (!data || typeof data !== "object") return;
  if (name.startsWith("thread:")) {
    let entry = state.threads.get(data.id);
    if (!entry) {
      entry = { thread: data, comments: new Map(), pin: null };
      state.threads.set(data.id, entry);
    }
    entry.thread = { ...entry.thread, ...data };
    for (const c of data.comments ?? []) entry.comments.set(c.id, c);
    if (name === "thread:created") log(`${who} started a thread`);
    if (name === "thread:resolved") log(`${who} resolved a thread`);
    renderPin(entry);
    if (state.openThread === data.id) renderThread();
    return;
  }
  const entry = state.threads.get(data.threadId);
  if (!entry) return;
  entry.comments.set(data.id, data);
  if (name === "comment:created") log(`${who} replied in a thread`);
  renderPin(entry);
  if (state.openThread === data.threadId) renderThread();
}

function renderPin(entry) {
  const { thread } = entry;
  if (!entry.pin) {
    entry.pin = el("button", "pin");
    entry.pin.type = "button";
    entry.pin.dataset.thread = thread.id;
    entry.pin.addEventListener("click", (e) => { e.stopPropagation(); showThread(thread.id); });
    entry.pin.addEventListener("dblclick", (e) => e.stopPropagation());
    ui.pins.append(entry.pin);
  }
  const live = [...entry.comments.values()].filter((c) => !c.deleted).length;
  entry.pin.textContent = thread.resolved ? "✓" : String(live);
  entry.pin.title = `${live} comment${live === 1 ? "" : "s"}${thread.resolved ? " (resolved)" : ""}`;
  entry.pin.classList.toggle("pin--resolved", Boolean(thread.resolved));
  entry.pin.classList.toggle("pin--open", state.openThread === thread.id);
  const x = Number(thread.anchor?.x) || 0;
  const y = Number(thread.anchor?.y) || 0;
  entry.pin.style.left = `${clamp(x, 0, BOARD_W - 30)}px`;
  entry.pin.style.top = `${clamp(y, 30, BOARD_H)}px`;
}

function showThread(threadId) {
  const previous = state.threads.get(state.openThread);
  state.openThread = threadId;
  if (previous) renderPin(previous);
  const entry = state.threads.get(threadId);
  if (entry) renderPin(entry);
  ui.threadPanel.hidden = false;
  renderThread();
}

function renderThread() {
  const entry = state.threads.get(state.openThread);
  if (!entry) return;
  ui.threadPanel.dataset.thread = entry.thread.id;
  ui.threadState.textContent = entry.thread.resolved ? "resolved" : "open";
  ui.threadResolve.textContent = entry.thread.resolved ? "Reopen" : "Resolve";
  const comments = [...entry.comments.values()].sort((a, b) => a.position - b.position);
  ui.threadComments.replaceChildren(...comments.map((c) => {
    const li = el("li", "comment");
    li.dataset.comment = c.id;
    const body = el("div", "body");
    body.append(el("div", "author", nameOf(c.authorId) === "You" ? "You" : nameOf(c.authorId)));
    body.append(el("div", "text" + (c.deleted ? " deleted" : ""), c.deleted ? "(deleted)" : c.body));
    if (!c.deleted) {
      const thumbs = c.reactions?.["👍"];
      const mine = Boolean(thumbs?.users?.includes(state.client.userId));
      const react = el("button", "react" + (mine ? " react--mine" : ""), `👍 ${thumbs?.count ?? 0}`);
      react.type = "button";
      react.addEventListener("click", () => commentCall(mine
        ? state.client.unreact(state.sessionId, c.id, "👍")
        : state.client.react(state.sessionId, c.id, "👍")));
      body.append(react);
    }
    li.append(avatar(c.authorId, state.participants.get(c.authorId)?.name ?? nameOf(c.authorId)), body);
    return li;
  }));
}

ui.replyForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = ui.replyText.value.trim();
  if (!text || !state.openThread) return;
  ui.replyText.value = "";
  await commentCall(state.client.reply(state.sessionId, state.openThread, text, {
    mentions: mentionsIn(text),
  }));
});
ui.threadResolve.addEventListener("click", () => {
  const entry = state.threads.get(state.openThread);
  if (!entry) return;
  commentCall(entry.thread.resolved
    ? state.client.reopenThread(state.sessionId, entry.thread.id)
    : state.client.resolveThread(state.sessionId, entry.thread.id));
});
ui.threadClose.addEventListener("click", () => {
  const entry = state.threads.get(state.openThread);
  state.openThread = null;
  if (entry) renderPin(entry);
  ui.threadPanel.hidden = true;
});

// -- notifications ---------------------------------------------------------------

function setUnread(n) {
  const unread = Number(n) || 0;
  ui.bell.hidden = false;
  ui.badge.hidden = unread === 0;
  ui.badge.textContent = unread > 99 ? "99+" : String(unread);
  ui.bell.title = unread ? `${unread} unread notification${unread === 1 ? "" : "s"}` : "No unread notifications";
}

function onNotification(msg) {
  setUnread(msg.unread);
  const n = msg.notification;
  if (!n) return;
  const who = nameOf(n.actorIds?.[n.actorIds.length - 1] ?? "");
  log(n.kind === "mention" ? `${who} mentioned you` : `Notification: ${n.kind ?? "update"}`);
  if (n.threadId && state.threads.has(n.threadId) && !state.openThread) showThread(n.threadId);
}

ui.bell.addEventListener("click", async () => {
  const result = await commentCall(state.client.markAllNotificationsRead());
  if (result) setUnread(result.unread);
});

function onJoined(msg) {
  if (msg.sessionId !== state.sessionId) return;
  // A (re)join brings the whole list: forget whoever left while we were away.
  for (const userId of [...state.participants.keys()]) removeParticipant(userId);
  for (const p of msg.participants) setParticipant(p);
  renderPeople();
  ui.seqLabel.textContent = `seq ${msg.seq}`;
}

function onReset(msg) {
  if (msg.sessionId !== state.sessionId) return;
  // Some of the history we asked for is gone: rebuild from what is still retained.
  for (const id of [...state.notes.keys()]) removeNote(id);
  log("History was trimmed; reloading the board");
  state.client.join(state.sessionId, { since: Math.max(0, msg.firstSeq - 1) }).catch(() => {});
}

function wireClient(client) {
  client.on("state", showConnection);
  client.on("session:joined", onJoined);
  client.on("session:reset", onReset);
  client.on("event", onEvent);
  client.on("participant:joined", (msg) => {
    if (msg.sessionId !== state.sessionId) return;
    const known = state.participants.has(msg.participant.userId);
    setParticipant(msg.participant);
    renderPeople();
    if (!known && msg.participant.userId !== client.userId) log(`${msg.participant.name} joined`);
  });
  client.on("participant:left", (msg) => {
    if (msg.sessionId !== state.sessionId) return;
    const name = state.participants.get(msg.userId)?.name;
    removeParticipant(msg.userId);
    renderPeople();
    if (name) log(`${name} left`);
  });
  client.on("presence", (msg) => {
    if (msg.sessionId !== state.sessionId) return;
    for (const p of msg.changes) setParticipant(p);
    renderPeople();
  });
  client.on("notification", onNotification);
  client.on("notifications", (msg) => setUnread(msg.unread));
  client.on("notifications:unread", (msg) => setUnread(msg.unread));
  client.on("session:left", (msg) => {
    if (msg.reason) banner(`You were removed from this board (${msg.reason}).`);
  });
  client.on("error", (msg) => {
    if (msg.code === "rate_limited") return; // presence catches up on its own
    banner(`Server said: ${msg.message || msg.code}`);
  });
}

// -- joining ---------------------------------------------------------------------

async function devToken(name) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body?.error?.message || `HTTP ${response.status}`);
  return body.token;
}

function wsUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`;
}

async function start(name, sessionId) {
  let token = sessionStorage.getItem("tandem.token");
  if (!token || sessionStorage.getItem("tandem.name") !== name) {
    token = await devToken(name);
    sessionStorage.setItem("tandem.token", token);
    sessionStorage.setItem("tandem.name", name);
  }
  const client = new TandemClient(wsUrl(), { token, backoffInitial: 0.25, backoffMax: 5 });
  state.client = client;
  state.sessionId = sessionId;
  wireClient(client);
  window.tandemDemo = { client, state };
  try {
    await client.connect();
  } catch (err) {
    if (err instanceof ConnectionEnded && [4401, 4402, 4400].includes(err.code)) {
      sessionStorage.removeItem("tandem.token"); // minted by another server: get a new one
    }
    state.client = null;
    throw err;
  }
  state.presence.color = userColor(client.userId);
  const mine = avatar(client.userId, client.name);
  mine.id = "me-avatar";
  ui.meAvatar.replaceWith(mine);
  ui.meAvatar = mine;
  ui.meName.textContent = client.name;
  ui.me.hidden = false;
  ui.boardName.textContent = sessionId;
  ui.boardTitle.hidden = false;
  if (location.hash.slice(1) !== sessionId) history.replaceState(null, "", `#${sessionId}`);
  document.title = `${sessionId} — Tandem`;
  ui.joinScreen.hidden = true;
  ui.app.hidden = false;
  await client.join(sessionId, { since: 0 }); // since 0: every note so far
  sendPresence();
  log("You joined the board");
}

ui.joinForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = ui.nameInput.value.trim();
  const sessionId = ui.sessionInput.value.trim();
  ui.joinError.textContent = "";
  if (!name) { ui.joinError.textContent = "Please enter your name."; return; }
  if (!ID_RE.test(sessionId)) {
    ui.joinError.textContent = "Board names use letters, digits and . _ : @ - only.";
    return;
  }
  ui.joinButton.disabled = true;
  try {
    await start(name, sessionId);
  } catch (err) {
    ui.joinError.textContent = `Could not join: ${err.message}`;
  } finally {
    ui.joinButton.disabled = false;
  }
});

// -- board input -----------------------------------------------------------------

ui.board.addEventListener("pointermove", (e) => {
  state.presence.cursor = boardPoint(e);
  state.presence.status = "active";
  sendPresence();
});
ui.board.addEventListener("pointerleave", () => {
  state.presence.cursor = null;
  sendPresence();
});
ui.board.addEventListener("dblclick", (e) => {
  if (state.commenting || e.target.closest(".note, .composer, .pin")) return;
  openComposer(boardPoint(e));
});
ui.board.addEventListener("click", (e) => {
  if (!state.commenting || e.target.closest(".note, .composer, .pin")) return;
  openComposer(boardPoint(e));
});
ui.commentMode.addEventListener("click", () => {
  state.commenting = !state.commenting;
  ui.commentMode.setAttribute("aria-pressed", String(state.commenting));
  ui.board.classList.toggle("board--comment", state.commenting);
  ui.hint.textContent = state.commenting
    ? "Click a spot to start a comment thread"
    : "Double-click the board to add a sticky note";
  closeComposer();
});
ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.composerText.value.trim();
  const at = state.composerAt;
  closeComposer();
  if (!text || !at) return;
  if (state.commenting) {
    startThread(at, text);
    return;
  }
  publish("note:add", { id: newId(), x: at.x, y: at.y, text, color: state.color });
});
ui.composerText.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); ui.composer.requestSubmit(); }
  if (e.key === "Escape") closeComposer();
});
ui.composerCancel.addEventListener("click", closeComposer);
ui.composer.addEventListener("dblclick", (e) => e.stopPropagation());

for (const color of COLORS) {
  const b = el("button", `swatch note--${color}`);
  b.type = "button";
  b.setAttribute("role", "radio");
  b.setAttribute("aria-checked", String(color === state.color));
  b.title = `${color} notes`;
  b.addEventListener("click", () => {
    state.color = color;
    for (const s of ui.swatches.children) s.setAttribute("aria-checked", String(s === b));
  });
  ui.swatches.append(b);
}

document.addEventListener("visibilitychange", () => {
  state.presence.status = document.hidden ? "away" : "active";
  if (document.hidden) state.presence.cursor = null;
  sendPresence();
});

ui.copyLink.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(location.href);
    ui.copyLink.textContent = "Copied";
  } catch {
    ui.copyLink.textContent = location.href;
  }
  setTimeout(() => { ui.copyLink.textContent = "Copy link"; }, 1500);
});

// -- boot ------------------------------------------------------------------------

const fromHash = decodeURIComponent(location.hash.slice(1));
ui.sessionInput.value = ID_RE.test(fromHash) ? fromHash : "demo";
ui.nameInput.value = sessionStorage.getItem("tandem.name") || "";
if (ui.nameInput.value && ID_RE.test(fromHash)) {
  ui.joinForm.requestSubmit(); // a reload of a joined tab: straight back in
} else {
  ui.nameInput.focus();
}
