// The tokenlog browser app: the conversation id lives in the URL (?c=...), the last cursor and
// unacknowledged prompts in localStorage, so a reload, a crashed tab or a second tab resumes
// exactly and a prompt sent before a crash is re-sent (same prompt_id: idempotent).
import { TokenlogClient } from "./tokenlog.js";

const $ = (id) => document.getElementById(id);
const store = {
  get: (key, fallback = null) => JSON.parse(localStorage.getItem(`tokenlog:${key}`) ?? "null") ?? fallback,
  set: (key, value) => localStorage.setItem(`tokenlog:${key}`, JSON.stringify(value)),
  del: (key) => localStorage.removeItem(`tokenlog:${key}`),
};

const params = new URLSearchParams(location.search);
let cid = params.get("c");
if (!cid) {
  cid = `c-${crypto.randomUUID().replaceAll("-", "")}`;
  params.set("c", cid);
  history.replaceState(null, "", `?${params}`);
}
$("conversation").textContent = cid;
$("new").onclick = () => { location.search = ""; };

async function token() {
  const saved = store.get("token");
  if (saved && saved.expires_at * 1000 > Date.now() + 60_000) return saved.token;
  const user = store.get("user") ?? `user-${crypto.randomUUID().slice(0, 8)}`;
  store.set("user", user);
  const response = await fetch("/v1/dev/token", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user_id: user }),
  });
  if (!response.ok) throw new Error("no development token (is the gateway in development mode?)");
  const issued = await response.json();
  store.set("token", issued);
  return issued.token;
}

// ---------------------------------------------------------------- state and rendering

const answers = new Map(); // response_id -> {prompt, text, status, sentAt, firstAt, el}
const sentAt = new Map(); // prompt_id -> when this tab sent it (time to first token is measured from it)
const pendingKey = `pending:${cid}`;

function turnEl(prompt) {
  const el = document.createElement("div");
  el.className = "turn";
  el.innerHTML = '<div class="prompt"></div><div class="answer"></div><div class="meta"></div>';
  el.querySelector(".prompt").textContent = prompt;
  $("turns").append(el);
  return el;
}

function render(answer) {
  answer.el.className = `turn ${answer.status}`;
  answer.el.querySelector(".answer").textContent = answer.text;
  const ttft = answer.firstAt && answer.sentAt ? ` · first token ${Math.max(0, answer.firstAt - answer.sentAt)} ms` : "";
  answer.el.querySelector(".meta").textContent = answer.status === "streaming" ? `writing…${ttft}` : `${answer.status}${ttft}`;
  $("stop").disabled = ![...answers.values()].some((a) => a.status === "streaming");
  $("turns").scrollTop = $("turns").scrollHeight;
}

function answerFor(responseId, prompt, sentAt) {
  let answer = answers.get(responseId);
  if (!answer) {
    answer = { prompt, text: "", status: "streaming", sentAt, firstAt: 0, seq: -1, attempt: 0, el: turnEl(prompt) };
    answers.set(responseId, answer);
  }
  return answer;
}

function renderPending() {
  document.querySelectorAll(".turn.pending").forEach((el) => el.remove());
  for (const p of store.get(pendingKey, [])) {
    const el = turnEl(p.text);
    el.className = "turn pending";
    el.querySelector(".meta").textContent = "sending…";
  }
}

// ---------------------------------------------------------------- the stream

// What the page shows is saved with the cursor it reflects (one localStorage entry, written
// together): a reload renders it and resumes after that cursor, so nothing is missed or doubled.
const stateKey = `state:${cid}`;
function save(cursor) {
  const shown = [...answers].map(([rid, a]) => ({ rid, prompt: a.prompt, text: a.text, status: a.status,
    seq: a.seq, attempt: a.attempt, firstAt: a.firstAt, sentAt: a.sentAt }));
  store.set(stateKey, { cursor, answers: shown });
}
const saved = store.get(stateKey);
for (const a of saved?.answers ?? []) {
  const answer = answerFor(a.rid, a.prompt, a.sentAt);
  Object.assign(answer, { text: a.text, status: a.status, seq: a.seq, attempt: a.attempt, firstAt: a.firstAt });
  render(answer);
}
renderPending();

const client = new TokenlogClient({ token: await token(), conversationId: cid, cursor: saved?.cursor ?? null });
client.on("status", (status) => { $("status").textContent = status; $("status").className = `status ${status}`; });
client.on("cursor", save);
client.on("snapshot", (conversation) => {
  answers.clear();
  $("turns").replaceChildren();
  for (const turn of [...(conversation.turns || []), ...(conversation.live ? [conversation.live] : [])]) {
    const answer = answerFor(turn.response_id, turn.prompt_text, turn.started_at);
    Object.assign(answer, { text: turn.answer, status: turn.status, seq: turn.last_seq, attempt: turn.attempt,
      firstAt: turn.first_token_at });
    render(answer);
  }
  renderPending();
});
client.on("started", (e) => {
  const answer = answerFor(e.response_id, e.prompt_text, sentAt.get(e.prompt_id) ?? e.started_at);
  answer.attempt = e.attempt;
  render(answer);
});
client.on("token", (e) => {
  const answer = answers.get(e.response_id);
  if (!answer || e.attempt < answer.attempt || e.seq !== answer.seq + 1) return; // reader rule
  answer.seq = e.seq;
  answer.text += e.text;
  answer.firstAt ||= Date.now();
  render(answer);
});
client.on("resumed", (e) => {
  const answer = answers.get(e.response_id);
  if (!answer) return;
  answer.attempt = e.attempt;
  if (e.mode === "RESTART") { answer.text = ""; answer.seq = -1; }
  render(answer);
});
client.on("finished", (e) => {
  const answer = answers.get(e.response_id);
  if (!answer || e.attempt < answer.attempt) return;
  answer.status = e.type.replace("response.", "");
  render(answer);
});
client.start();
window.tokenlog = client; // for the console (and the browser tests)

// ---------------------------------------------------------------- prompts (kept until acknowledged)

async function send(pending) {
  try {
    await client.prompt(pending.text, { promptId: pending.prompt_id });
    store.set(pendingKey, store.get(pendingKey, []).filter((p) => p.prompt_id !== pending.prompt_id));
    renderPending();
  } catch (error) {
    if (error.action === "stop") {
      store.set(pendingKey, store.get(pendingKey, []).filter((p) => p.prompt_id !== pending.prompt_id));
      alert(error.message);
    } else {
      setTimeout(() => send(pending), 1000); // offline or unavailable: the same prompt_id again
    }
  }
}

$("ask").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const pending = { prompt_id: `p-${crypto.randomUUID()}`, text };
  sentAt.set(pending.prompt_id, Date.now());
  store.set(pendingKey, [...store.get(pendingKey, []), pending]);
  $("text").value = "";
  renderPending();
  send(pending);
};
$("text").onkeydown = (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); }
};
$("stop").onclick = () => client.cancel().catch((error) => alert(error.message));
for (const pending of store.get(pendingKey, [])) send(pending); // sent before a crash or reload
addEventListener("online", () => { for (const pending of store.get(pendingKey, [])) send(pending); });
