// Tandem browser client: protocol v1 over one WebSocket, resumed across drops.
//
// Dependency-free ES module, served by Tandem at /client.js:
//
//   import { TandemClient } from "/client.js";
//   const client = new TandemClient("ws://127.0.0.1:8080/", { token });
//   client.on("event", (msg) => console.log(msg.seq, msg.name, msg.data));
//   await client.connect();
//   await client.join("doc-1", { since: 0 });
//   await client.publish("doc-1", "shape:add", { id: "r1" });
//   client.updatePresence("doc-1", { cursor: { x: 10, y: 20 } });
//
// Same behaviour as the Python client (client/connection.py):
// * reconnect with exponential backoff and full jitter when the close code
//   allows it (docs/protocol.md section 12), and at once when the browser
//   comes back online;
// * after a reconnect, rejoin every joined session with `since` = the last
//   seq delivered, so nothing is lost; events are de-duplicated by seq;
// * ephemeral events (`"ephemeral": true`) carry the seq they follow, are
//   delivered live and never move the last seq;
// * an unsolicited `session:left` with a reason (the session actor restarted)
//   rejoins on its own; "revoked" and "deleted" end the session instead;
// * the last presence state of each session is sent again after a rejoin, so
//   other members see this user as they saw it before the drop;
// * `presence` messages carry only what changed (`userId` plus the changed
//   fields); the client merges them into the `session:joined` snapshot, and
//   `participants(sessionId)` gives the whole records (`mergeParticipant`
//   does the same merge for an application that keeps its own).
// Liveness: browsers answer the server's WebSocket pings, but a page cannot
// see them; so when nothing arrived for one heartbeat the client sends a
// `ping`, and after three heartbeats of silence it drops the socket and
// reconnects.

export const PROTOCOL = 1;

/** Close codes and whether to reconnect after them (runtime/protocol/errors.py RECONNECT). */
export const RECONNECT = Object.freeze({
  1000: false, 1001: true, 1002: false, 1007: false, 1009: true, 1011: true,
  4000: true, 4001: true, 4002: true,
  4400: false, 4401: false, 4402: false, 4403: false,
});

/** Reconnect policy for a close code; an abnormal drop (1005, 1006, none) reconnects. */
export function shouldReconnect(code) {
  if (code === undefined || code === null || code === 1005 || code === 1006) return true;
  if (Object.prototype.hasOwnProperty.call(RECONNECT, code)) return RECONNECT[code];
  return code > 1000 && code < 4400;
}

/** Delay before attempt n: uniform in [0, min(maximum, initial * 2**n)] seconds (full jitter). */
export class Backoff {
  constructor(initial = 0.1, maximum = 10, random = Math.random) {
    if (!(initial > 0) || maximum < initial) throw new RangeError("need 0 < initial <= maximum");
    this.initial = initial;
    this.maximum = maximum;
    this.attempt = 0;
    this._random = random;
  }
  cap() { return Math.min(this.maximum, this.initial * 2 ** Math.min(this.attempt, 64)); }
  nextDelay() { const d = this._random() * this.cap(); this.attempt += 1; return d; }
  reset() { this.attempt = 0; }
}

/** The server refused a request (`code` from docs/protocol.md section 7). */
export class TandemError extends Error {
  constructor(code, message, { sessionId = null, retryAfter = null, path = null } = {}) {
    super(`${code}: ${message}`);
    this.name = "TandemError";
    this.code = code;
    this.sessionId = sessionId;
    this.retryAfter = retryAfter;
    this.path = path;
  }
  static fromMessage(msg) {
    return new TandemError(msg.code, msg.message || "", {
      sessionId: msg.sessionId ?? null, retryAfter: msg.retryAfter ?? null, path: msg.path ?? null,
    });
  }
}

/** The connection dropped before the reply; the client is reconnecting. */
export class Disconnected extends Error {
  constructor(message) { super(message); this.name = "Disconnected"; }
}

/** The connection ended for good (a close code that says not to reconnect, or close()). */
export class ConnectionEnded extends Error {
  constructor(code, reason) {
    super(`connection ended (${code ?? "no code"}): ${reason || ""}`);
    this.name = "ConnectionEnded";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * Merge a `presence` change entry into the participant record held for that user
 * (docs/protocol.md, `presence`): fields present replace, absent fields keep their
 * value, and `state: null` is a value ("no state"). Returns a new object.
 */
export function mergeParticipant(record, change) {
  return { ...(record ?? {}), ...change };
}

const RETRYABLE = new Set(["overloaded", "internal", "rate_limited"]);
const SESSION_SCOPED = new Set([
  "event", "session:reset", "participant:joined", "participant:left", "presence",
]);
const ENDS_SESSION = new Set(["revoked", "deleted"]);
const OPEN = 1;

export class TandemClient {
  /**
   * @param {string} url ws:// or wss:// URL of the server ("/" or "/v1/ws").
   * @param {object} [options]
   * @param {string} [options.token] JWT, sent as ?token= (none: a dev-profile guest).
   * @param {number} [options.backoffInitial] seconds (0.1).
   * @param {number} [options.backoffMax] seconds (10).
   * @param {() => number} [options.random] for deterministic jitter.
   * @param {typeof WebSocket} [options.WebSocket] the WebSocket class to use.
   */
  constructor(url, options = {}) {
    this.url = url;
    this.token = options.token ?? null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._backoff = new Backoff(options.backoffInitial ?? 0.1, options.backoffMax ?? 10,
      options.random ?? Math.random);
    this._handlers = new Map();
    this._refs = 1;
    this._pending = new Map(); // ref -> {kind, sessionId, since, resolve, reject, sentAt}
    // sessionId -> {lastSeq, leaving, presence, joined, participants: Map userId -> record}
    this._sessions = new Map();
    this._ws = null;
    this._open = false;
    this._waiters = []; // {resolve, reject} waiting for an open connection
    this._ended = null;
    this._closing = false;
    this._retryTimer = null;
    this._liveTimer = null;
    this._lastHeard = 0;
    this._started = false;
    this._everOpen = false;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    this.userId = null;
    this.name = null;
    this.guest = null;
    this.connectionId = null;
    this.heartbeat = 5;
    /** How many times the client reconnected after a drop. */
    this.reconnects = 0;
    this._onOnline = () => this._retryNow();
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onOnline);
    }
  }

  // -- events --------------------------------------------------------------------

  /**
   * Listen for a message type ("event", "presence", "participant:joined", ...),
   * "message" (every delivered message), "state" ({state, code, reason, delay})
   * or "welcome". Returns a function that removes the listener.
   */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type)?.delete(handler);
  }

  _emit(type, value) {
    for (const handler of [...(this._handlers.get(type) ?? [])]) {
      try {
        handler(value);
      } catch (err) {
        // A broken handler must not break the connection; surface it asynchronously.
        setTimeout(() => { throw err; });
      }
    }
  }

  _deliver(msg) {
    this._emit(msg.type, msg);
    this._emit("message", msg);
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  // -- public API ----------------------------------------------------------------

  get connected() { return this._open; }

  /** Sessions the client is in (and rejoins after a reconnect). */
  get sessions() {
    return [...this._sessions].filter(([, s]) => !s.leaving).map(([id]) => id);
  }

  /** The seq of the last event delivered in a session (null if not in it). */
  lastSeq(sessionId) { return this._sessions.get(sessionId)?.lastSeq ?? null; }

  /**
   * Who is present in a session: a Map userId -> whole participant record
   * ({userId, name, state, status, connections}), the `session:joined` snapshot
   * with every `participant:*` and `presence` message since merged in (null if
   * not in the session). Up to date when the listeners of a message run.
   */
  participants(sessionId) {
    const records = this._sessions.get(sessionId)?.participants;
    return records ? new Map([...records].map(([id, p]) => [id, { ...p }])) : null;
  }

  /**
   * Connect; resolves on `welcome`. Transient failures are retried with
   * backoff; rejects with ConnectionEnded when the server refuses for good
   * (e.g. an invalid token: 4402).
   */
  connect() {
    if (this._ended) return Promise.reject(this._ended);
    if (!this._started) {
      this._started = true;
      this._dial();
    }
    return this._waitOpen();
  }

  /** Close with 1000; pending requests fail with Disconnected. The client cannot be reused. */
  close() {
    this._closing = true;
    clearTimeout(this._retryTimer);
    this._stopLiveness();
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onOnline);
    }
    const ws = this._ws;
    this._ws = null;
    this._open = false;
    if (ws && ws.readyState <= OPEN) ws.close(1000, "client closed");
    this._end(new ConnectionEnded(1000, "client closed"));
  }

  /** Join a session; with `since`, every event after it is replayed first. */
  async join(sessionId, { since = null } = {}) {
    const msg = { type: "session:join", sessionId };
    if (since !== null && since !== undefined) msg.since = since;
    const reply = await this._request(msg, { kind: "join", sessionId, since });
    return {
      sessionId, seq: reply.seq, participants: reply.participants, presence: reply.presence,
    };
  }

  /** Leave a session: it is no longer rejoined and its messages are no longer delivered. */
  async leave(sessionId) {
    const state = this._sessions.get(sessionId);
    if (state) state.leaving = true;
    try {
      await this._request({ type: "session:leave", sessionId }, { kind: "leave", sessionId });
    } catch (err) {
      if (err instanceof TandemError && err.code !== "not_joined") {
        if (state) state.leaving = false; // still a member (e.g. overloaded)
        throw err;
      }
      if (!(err instanceof TandemError) && !(err instanceof Disconnected)) throw err;
    }
    if (this._sessions.get(sessionId) === state) this._sessions.delete(sessionId);
  }

  /**
   * Publish an event; resolves with its seq once the server acknowledged it
   * (stored, for a durable event). At most once: if the connection drops
   * first, rejects with Disconnected and the event may or may not exist.
   */
  async publish(sessionId, name, data = null, { durable = true } = {}) {
    const reply = await this._request(
      { type: "event:publish", sessionId, name, data, durable },
      { kind: "publish", sessionId },
    );
    return reply.seq;
  }

  /**
   * Set this client's presence state in a session (no reply; the effect
   * arrives as a `presence` message). Remembered and sent again after a rejoin;
   * while disconnected only the newest state is kept.
   */
  updatePresence(sessionId, state) {
    const session = this._sessions.get(sessionId);
    if (!session || session.leaving) {
      throw new TandemError("not_joined", "join the session first", { sessionId });
    }
    session.presence = state;
    if (this._open && session.joined) {
      this._send({ type: "presence:update", sessionId, state });
    }
  }

  /** Round-trip a `ping`; resolves with the time taken in milliseconds. */
  async ping() {
    const start = performance.now();
    await this._request({ type: "ping" }, { kind: "ping" });
    return performance.now() - start;
  }

  /** Send any other client message type (e.g. newer protocol additions) and await its reply. */
  request(msg) { return this._request(msg, { kind: msg.type, sessionId: msg.sessionId }); }

  // -- comments and notifications (runtime/comments/ws.py) -------------------------
  // Each resolves with the `<type>:ok` reply's `result`. Changes also arrive to every
  // member as durable session events: thread:created, thread:updated, comment:created,
  // comment:edited, comment:deleted, reaction:added, reaction:removed, thread:resolved,
  // thread:reopened. Notifications arrive as "notification" ({notification, unread}),
  // "notifications" ({unread, latest}, on connect) and "notifications:unread" ({unread}).

  async _result(msg) {
    for (const key of Object.keys(msg)) if (msg[key] === undefined) delete msg[key];
    return (await this.request(msg)).result;
  }

  /** Open a thread with its first comment; `anchor` says where (e.g. {x, y}). */
  createThread(sessionId, { body, anchor, metadata, mentions } = {}) {
    return this._result({ type: "thread:create", sessionId, body, anchor, metadata, mentions });
  }
  updateThread(sessionId, threadId, { anchor, metadata } = {}) {
    return this._result({ type: "thread:update", sessionId, threadId, anchor, metadata });
  }
  /** Reply in a thread (to the thread, or to a comment with `parentId`). */
  reply(sessionId, threadId, body, { parentId, mentions } = {}) {
    return this._result({
      type: "comment:create", sessionId, threadId, body, parentId, mentions,
    });
  }
  editComment(sessionId, commentId, body, { mentions } = {}) {
    return this._result({ type: "comment:edit", sessionId, commentId, body, mentions });
  }
  deleteComment(sessionId, commentId) {
    return this._result({ type: "comment:delete", sessionId, commentId });
  }
  react(sessionId, commentId, emoji) {
    return this._result({ type: "reaction:add", sessionId, commentId, emoji });
  }
  unreact(sessionId, commentId, emoji) {
    return this._result({ type: "reaction:remove", sessionId, commentId, emoji });
  }
  resolveThread(sessionId, threadId) {
    return this._result({ type: "thread:resolve", sessionId, threadId });
  }
  reopenThread(sessionId, threadId) {
    return this._result({ type: "thread:reopen", sessionId, threadId });
  }
  listThreads(sessionId, { resolved, authorId, metadata, anchor, after, limit } = {}) {
    return this._result({
      type: "thread:list", sessionId, resolved, authorId, metadata, anchor, after, limit,
    });
  }
  getThread(sessionId, threadId) {
    return this._result({ type: "thread:get", sessionId, threadId });
  }
  listNotifications({ before, limit, unreadOnly } = {}) {
    return this._result({ type: "notifications:list", before, limit, unreadOnly });
  }
  markNotificationRead(id) { return this._result({ type: "notification:read", id }); }
  markAllNotificationsRead() { return this._result({ type: "notifications:read_all" }); }

  // -- requests ------------------------------------------------------------------

  _waitOpen() {
    if (this._ended) return Promise.reject(this._ended);
    if (this._closing) return Promise.reject(new Disconnected("client closed"));
    if (this._open) return Promise.resolve();
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  async _request(msg, pending) {
    await this._waitOpen();
    return this._requestNow(msg, pending);
  }

  _requestNow(msg, pending) {
    const ref = this._refs++;
    return new Promise((resolve, reject) => {
      this._pending.set(ref, { ...pending, resolve, reject, sentAt: performance.now() });
      if (!this._send({ ...msg, ref })) {
        this._pending.delete(ref);
        reject(this._ended ?? new Disconnected("connection lost while sending"));
      }
    });
  }

  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _failPending(err) {
    const pending = this._pending;
    this._pending = new Map();
    for (const p of pending.values()) p.reject(err);
  }

  _end(err) {
    if (this._ended) return;
    this._ended = err;
    this._failPending(err);
    for (const w of this._waiters.splice(0)) w.reject(err);
    this._setState("closed", { code: err.code, reason: err.reason });
  }

  // -- connection lifecycle ------------------------------------------------------

  _dial() {
    if (this._ended || this._closing) return;
    this._retryTimer = null;
    const offline = typeof navigator !== "undefined" && navigator.onLine === false;
    if (offline) {
      // No point trying (and logging a failed connection): the "online" event retries.
      this._setState("reconnecting", { offline: true });
      return;
    }
    this._setState(this.reconnects || this._everOpen ? "reconnecting" : "connecting");
    let url = this.url;
    if (this.token) {
      url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.token);
    }
    const ws = new this._WebSocket(url);
    this._ws = ws;
    ws.onmessage = (e) => { if (this._ws === ws) this._onFrame(e.data); };
    ws.onclose = (e) => { if (this._ws === ws) this._dropped(e.code, e.reason); };
    // onerror is always followed by onclose, which decides what to do.
    ws.onerror = () => {};
  }

  _retryNow() {
    if (this._retryTimer !== null || (this.state === "reconnecting" && !this._ws)) {
      // The pending timer's dial, made now: counted as the timer counts it (a timer
      // that already fired, its dial skipped while offline, counted it then).
      if (this._retryTimer !== null) this.reconnects += 1;
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      this._backoff.reset();
      this._dial();
    }
  }

  _dropped(code, reason) {
    const wasOpen = this._open;
    this._ws = null;
    this._open = false;
    this._stopLiveness();
    if (this._closing || this._ended) return;
    if (!shouldReconnect(code)) {
      this._end(new ConnectionEnded(code, reason));
      return;
    }
    this._failPending(new Disconnected(`connection lost (${code}): ${reason || ""}`));
    for (const s of this._sessions.values()) s.joined = false;
    const delay = this._backoff.nextDelay();
    this._setState("reconnecting", { code, reason, delay, wasOpen });
    this._retryTimer = setTimeout(() => {
      this.reconnects += 1;
      this._dial();
    }, delay * 1000);
  }

  _welcome(msg) {
    this.userId = msg.userId;
    this.name = msg.name;
    this.guest = msg.guest;
    this.connectionId = msg.connectionId;
    if (typeof msg.heartbeat === "number" && msg.heartbeat > 0) this.heartbeat = msg.heartbeat;
    this._open = true;
    this._everOpen = true;
    // Rejoin first, so the joins precede anything the application sends next.
    for (const [sessionId, state] of [...this._sessions]) {
      if (state.leaving) this._sessions.delete(sessionId);
      else this._rejoin(sessionId, state);
    }
    this._backoff.reset();
    this._startLiveness();
    this._setState("open");
    this._emit("welcome", msg);
    for (const w of this._waiters.splice(0)) w.resolve();
  }

  async _rejoin(sessionId, state) {
    const backoff = new Backoff(this._backoff.initial, this._backoff.maximum, this._backoff._random);
    while (this._sessions.get(sessionId) === state && !state.leaving && this._open) {
      try {
        await this._requestNow(
          { type: "session:join", sessionId, since: state.lastSeq },
          { kind: "join", sessionId, since: state.lastSeq },
        );
        return;
      } catch (err) {
        if (!(err instanceof TandemError)) return; // disconnected: the next connection rejoins
        if (RETRYABLE.has(err.code)) {
          const wait = err.retryAfter ?? backoff.nextDelay();
          await new Promise((r) => setTimeout(r, wait * 1000));
          continue;
        }
        if (this._sessions.get(sessionId) === state) this._sessions.delete(sessionId);
        this._deliver({
          type: "error", code: err.code, message: `rejoin failed: ${err.message}`, sessionId,
        });
        return;
      }
    }
  }

  _startLiveness() {
    this._stopLiveness();
    this._lastHeard = performance.now();
    const period = this.heartbeat * 1000;
    this._liveTimer = setInterval(() => {
      const silent = performance.now() - this._lastHeard;
      if (silent >= 3 * period) {
        const ws = this._ws;
        if (ws) {
          this._ws = null; // ignore whatever this socket still does
          try { ws.close(1000, "no sign of life"); } catch { /* already closing */ }
        }
        this._dropped(null, "no sign of life");
      } else if (silent >= period) {
        this._send({ type: "ping" });
      }
    }, period / 2);
  }

  _stopLiveness() {
    clearInterval(this._liveTimer);
    this._liveTimer = null;
  }

  // -- reading -------------------------------------------------------------------

  _onFrame(data) {
    this._lastHeard = performance.now();
    if (typeof data !== "string") return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    for (const msg of Array.isArray(parsed) ? parsed : [parsed]) {
      if (msg && typeof msg === "object") this._dispatch(msg);
    }
  }

  _dispatch(msg) {
    const kind = msg.type;
    const ref = msg.ref;
    let pending;
    if (typeof ref === "number" && this._pending.has(ref)) {
      pending = this._pending.get(ref);
      this._pending.delete(ref);
    }
    const sessionId = msg.sessionId;
    if (kind === "welcome") {
      this._welcome(msg);
    } else if (kind === "error") {
      if (pending) pending.reject(TandemError.fromMessage(msg));
      else this._deliver(msg);
    } else if (kind === "pong" || kind === "event:ack" || kind === "auth:ok") {
      if (pending) pending.resolve(msg);
    } else if (kind === "session:joined" && typeof sessionId === "string") {
      const since = pending?.since;
      let state = this._sessions.get(sessionId);
      const lastSeq = since !== null && since !== undefined ? since : msg.seq;
      if (!state) {
        state = { lastSeq, leaving: false, presence: null, joined: true, participants: null };
        this._sessions.set(sessionId, state);
      } else {
        state.lastSeq = lastSeq;
        state.joined = true;
      }
      // The snapshot is what later presence changes are relative to, rejoin or not.
      state.participants = new Map((msg.participants ?? []).map((p) => [p.userId, { ...p }]));
      if (pending) pending.resolve(msg);
      this._deliver(msg);
      if (state.presence !== null) {
        this._send({ type: "presence:update", sessionId, state: state.presence });
      }
    } else if (kind === "session:left" && typeof sessionId === "string") {
      this._sessionLeft(sessionId, msg, pending);
    } else if (SESSION_SCOPED.has(kind)) {
      const state = typeof sessionId === "string" ? this._sessions.get(sessionId) : undefined;
      if (!state || state.leaving) return;
      if (kind === "event") {
        const seq = msg.seq;
        if (!Number.isInteger(seq)) return;
        if (msg.ephemeral === true) {
          if (seq < state.lastSeq) return; // follows an event we have not seen yet
        } else if (seq <= state.lastSeq) {
          return; // a duplicate: never deliver twice
        } else {
          state.lastSeq = seq;
        }
      } else if (kind === "session:reset") {
        state.lastSeq = msg.seq;
      } else {
        this._participantsChanged(state, msg);
      }
      this._deliver(msg);
    } else if (pending) {
      pending.resolve(msg); // a reply to request() of a newer message type
      this._deliver(msg);
    } else {
      this._deliver(msg);
    }
  }

  _participantsChanged(state, msg) {
    const records = state.participants;
    if (!records) return;
    if (msg.type === "participant:joined") {
      records.set(msg.participant.userId, { ...msg.participant });
    } else if (msg.type === "participant:left") {
      records.delete(msg.userId);
    } else if (msg.type === "presence") {
      for (const change of msg.changes ?? []) {
        records.set(change.userId, mergeParticipant(records.get(change.userId), change));
      }
    }
  }

  _sessionLeft(sessionId, msg, pending) {
    const state = this._sessions.get(sessionId);
    if (pending) { // the answer to our leave
      this._sessions.delete(sessionId);
      pending.resolve(msg);
      this._deliver(msg);
    } else if (!state) {
      // not ours
    } else if (state.leaving) {
      this._sessions.delete(sessionId);
    } else if (ENDS_SESSION.has(msg.reason)) {
      this._sessions.delete(sessionId);
      this._deliver(msg);
    } else if (this._open) {
      // The session actor restarted: rejoin from where we are, transparently.
      state.joined = false;
      this._rejoin(sessionId, state);
    }
  }
}
