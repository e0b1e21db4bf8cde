// tokenlog browser client: follow a conversation over WebSocket (SSE as fallback), resume by
// cursor after any drop, de-duplicate by (response_id, attempt, seq), submit and cancel prompts.
//
//   const c = new TokenlogClient({ baseUrl: "", token, conversationId, cursor });
//   c.on("snapshot", (conversation) => ...);     // hydrate / resync: replace your state
//   c.on("started", (e) => ...); c.on("token", (e) => ...); c.on("finished", (e) => ...);
//   c.on("status", (s) => ...);                  // "connecting" | "live" | "reconnecting" | "resynced"
//   c.on("cursor", (cursor) => ...);             // store it: a reload resumes from it
//   c.start(); await c.prompt("Why?", { promptId }); await c.cancel();
//
// A link on which nothing arrives (no frame, no heartbeat) for `livenessMs` is dead: the client
// drops it and resumes from its cursor. By default `livenessMs` is derived from the heartbeat
// interval the server announces (`heartbeat_s`): twice it plus a margin, as gateway.wire.liveness_s.

const ASSUMED_HEARTBEAT_MS = 15_000; // the gateway's default, until the server announces its own
const LIVENESS_MARGIN_MS = 2_000;

export class TokenlogClient {
  constructor({ baseUrl = "", token, conversationId, cursor = null, transport = "ws", maxBackoffMs = 5000,
    livenessMs = null }) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.conversationId = conversationId;
    this.cursor = cursor;
    this.transport = transport;
    this.maxBackoffMs = maxBackoffMs;
    this.livenessMs = livenessMs;
    this.heartbeatMs = null; // the server's interval, once announced
    this.handlers = {};
    this.seen = new Set();
    this.attempts = 0;
    this.stopped = false;
    this.socket = null;
    this.retryTimer = null;
    this.livenessTimer = null;
    this.heardAt = 0;
    // Back online: a connection that is waiting out its backoff goes now.
    globalThis.addEventListener?.("online", () => { if (this.retryTimer !== null) this.reconnectNow(); });
  }

  on(kind, handler) {
    (this.handlers[kind] ||= []).push(handler);
    return this;
  }

  emit(kind, value) {
    for (const handler of this.handlers[kind] || []) handler(value);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.livenessTimer);
    if (this.socket) this.socket.close();
  }

  // ---------------------------------------------------------------- liveness

  liveness() {
    return this.livenessMs ?? 2 * (this.heartbeatMs ?? ASSUMED_HEARTBEAT_MS) + LIVENESS_MARGIN_MS;
  }

  // Something arrived on the connection (or it is being opened): it is alive for liveness() more.
  // One timer, re-armed when it fires (not per frame).
  heard() {
    this.heardAt = Date.now();
    if (this.livenessTimer === null) this.armLiveness(this.liveness());
  }

  armLiveness(delayMs) {
    this.livenessTimer = setTimeout(() => {
      this.livenessTimer = null;
      if (!this.socket) return;
      const silentMs = Date.now() - this.heardAt;
      if (silentMs < this.liveness()) this.armLiveness(this.liveness() - silentMs);
      else this.dead(this.socket);
    }, delayMs);
  }

  // Nothing within liveness(): a frozen link (a phone out of signal, a stalled proxy). Its close
  // handshake could wait as long, so the socket is abandoned (its late frames ignored) and the
  // stream resumes from the cursor on a new one.
  dead(socket) {
    socket.onmessage = socket.onclose = socket.onerror = socket.onopen = null;
    this.socket = null;
    socket.close();
    this.emit("status", "reconnecting");
    this.retry();
  }

  unheard() {
    clearTimeout(this.livenessTimer);
    this.livenessTimer = null;
  }

  path(suffix) {
    return `${this.baseUrl}/v1/conversations/${encodeURIComponent(this.conversationId)}${suffix}`;
  }

  connect() {
    this.emit("status", this.attempts ? "reconnecting" : "connecting");
    if (this.transport === "ws" && "WebSocket" in globalThis) this.connectWs();
    else this.connectSse();
  }

  connectWs() {
    const url = new URL(this.path("/ws"), location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("access_token", this.token);
    const ws = new WebSocket(url);
    this.socket = ws;
    this.heard(); // the opening handshake is bounded by the liveness time too
    let opened = false;
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({ type: "subscribe", cursor: this.cursor }));
    };
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      this.handle(frame);
      this.heard(); // after handle(): a subscribed frame announces the interval
    };
    ws.onclose = (event) => {
      this.socket = null;
      this.unheard();
      if (this.stopped) return;
      if ([4401, 4403, 4404, 4400].includes(event.code)) {
        this.emit("status", "stopped");
        this.emit("error", { code: event.code, reason: event.reason });
        return;
      }
      // WebSocket blocked: use SSE. Failures while the browser is offline say nothing about that.
      if (!opened && navigator.onLine !== false && ++this.wsFailures >= 3) this.transport = "sse";
      this.retry();
    };
    this.wsFailures ||= 0;
  }

  connectSse() {
    const url = new URL(this.path("/events"), location.href);
    url.searchParams.set("access_token", this.token);
    if (this.cursor) url.searchParams.set("cursor", this.cursor);
    const source = new EventSource(url);
    this.socket = source;
    this.heard();
    const kinds = ["snapshot", "resync", "response.started", "token", "response.completed",
      "response.failed", "response.cancelled", "response.resumed", "error", "heartbeat"];
    for (const kind of kinds) {
      source.addEventListener(kind, (e) => {
        this.handle(JSON.parse(e.data));
        this.heard();
      });
    }
    source.onerror = () => {
      // EventSource reconnects by itself with Last-Event-ID; on a closed stream, start over.
      if (source.readyState === EventSource.CLOSED && !this.stopped) {
        this.socket = null;
        this.unheard();
        this.retry();
      } else {
        this.emit("status", "reconnecting");
      }
    };
    source.onopen = () => this.emit("status", "live");
    this.socket.close = () => EventSource.prototype.close.call(source);
  }

  retry() {
    this.attempts += 1;
    const base = Math.min(this.maxBackoffMs, 100 * 2 ** Math.min(this.attempts, 10));
    clearTimeout(this.retryTimer);
    const delayMs = base / 2 + Math.random() * (base / 2); // backoff with jitter
    this.retryTimer = setTimeout(() => this.reconnectNow(), delayMs);
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  handle(frame) {
    const kind = frame.type;
    if (typeof frame.heartbeat_s === "number" && (kind === "subscribed" || kind === "heartbeat")) {
      this.heartbeatMs = frame.heartbeat_s * 1000;
    }
    if (kind === "heartbeat") return; // it kept the link alive; nothing to show
    if (kind === "subscribed") {
      this.attempts = 0;
      this.emit("status", "live");
      return;
    }
    if (kind === "error") {
      this.emit("error", frame.error || frame);
      return;
    }
    if (kind === "snapshot" || kind === "resync") {
      this.seen.clear();
      this.emit("snapshot", frame.conversation);
      if (kind === "resync") this.emit("status", "resynced");
    } else if (kind !== "ack" && kind !== "pong") {
      const key = `${frame.response_id}/${frame.attempt || 0}/${frame.seq ?? kind}`;
      if (this.seen.has(key)) return; // delivered twice (an overlap of two connections)
      this.seen.add(key);
      if (kind === "response.started") this.emit("started", frame);
      else if (kind === "token") this.emit("token", frame);
      else if (kind === "response.resumed") this.emit("resumed", frame);
      else this.emit("finished", frame);
    }
    if (frame.cursor) {
      this.cursor = frame.cursor;
      this.emit("cursor", frame.cursor);
    }
  }

  async request(suffix, body) {
    const response = await fetch(this.path(suffix), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.token}` },
      body: JSON.stringify(body),
    });
    const json = await response.json();
    if (response.status !== 202) throw Object.assign(new Error(json.error?.message), json.error);
    return json;
  }

  prompt(text, { promptId = crypto.randomUUID(), deviceId } = {}) {
    return this.request("/prompts", { prompt_id: promptId, text, ...(deviceId ? { device_id: deviceId } : {}) });
  }

  cancel(fields = {}) {
    return this.request("/cancel", fields);
  }
}
