// tokenlog browser client: follow a conversation over WebSocket (SSE as fallback), resume by
// cursor after any drop, de-duplicate by (response_id, attempt, seq), submit and cancel prompts.
//
//   const c = new TokenlogClient({ baseUrl: "", token, conversationId, cursor });
//   c.on("snapshot", (conversation) => ...);     // hydrate / resync: replace your state
//   c.on("started", (e) => ...); c.on("token", (e) => ...); c.on("finished", (e) => ...);
//   c.on("status", (s) => ...);                  // "connecting" | "live" | "reconnecting" | "resynced"
//   c.on("cursor", (cursor) => ...);             // store it: a reload resumes from it
//   c.start(); await c.prompt("Why?", { promptId }); await c.cancel();

export class TokenlogClient {
  constructor({ baseUrl = "", token, conversationId, cursor = null, transport = "ws", maxBackoffMs = 5000 }) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.conversationId = conversationId;
    this.cursor = cursor;
    this.transport = transport;
    this.maxBackoffMs = maxBackoffMs;
    this.handlers = {};
    this.seen = new Set();
    this.attempts = 0;
    this.stopped = false;
    this.socket = null;
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
    if (this.socket) this.socket.close();
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
    let opened = false;
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({ type: "subscribe", cursor: this.cursor }));
    };
    ws.onmessage = (message) => this.handle(JSON.parse(message.data));
    ws.onclose = (event) => {
      this.socket = null;
      if (this.stopped) return;
      if ([4401, 4403, 4404, 4400].includes(event.code)) {
        this.emit("status", "stopped");
        this.emit("error", { code: event.code, reason: event.reason });
        return;
      }
      if (!opened && ++this.wsFailures >= 3) this.transport = "sse"; // WebSocket blocked: use SSE
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
    const kinds = ["snapshot", "resync", "response.started", "token", "response.completed",
      "response.failed", "response.cancelled", "response.resumed", "error"];
    for (const kind of kinds) source.addEventListener(kind, (e) => this.handle(JSON.parse(e.data)));
    source.onerror = () => {
      // EventSource reconnects by itself with Last-Event-ID; on a closed stream, start over.
      if (source.readyState === EventSource.CLOSED && !this.stopped) {
        this.socket = null;
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
    setTimeout(() => this.connect(), base / 2 + Math.random() * (base / 2)); // backoff with jitter
  }

  handle(frame) {
    const kind = frame.type;
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
