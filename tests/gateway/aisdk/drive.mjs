// Drives tokenlog's AI SDK endpoints with the `ai` package's own transport and stream reader,
// as useChat does. Prints one JSON line: {"text": ..., "parts": [...]} or {"text": null} (204).
//   node drive.mjs send   BASE TOKEN CHAT_ID MESSAGE_ID TEXT
//   node drive.mjs resume BASE TOKEN CHAT_ID
//   node drive.mjs resume-on-cue BASE TOKEN CHAT_ID: resume, once loaded, when a line arrives on
//     stdin (prints "ready" first), so that Node's start-up is not inside the answer's lifetime
import { once } from "node:events";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [command, base, token, chatId, messageId, text] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api: `${base}/api/chat`,
  headers: { Authorization: `Bearer ${token}` },
});

let stream;
if (command === "send") {
  stream = await transport.sendMessages({
    chatId,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    messages: [{ id: messageId, role: "user", parts: [{ type: "text", text }] }],
  });
} else {
  if (command === "resume-on-cue") {
    console.log("ready");
    await once(process.stdin, "data");
    process.stdin.destroy();
  }
  stream = await transport.reconnectToStream({ chatId });
}
if (stream === null) {
  console.log(JSON.stringify({ text: null }));
} else {
  let last;
  for await (const message of readUIMessageStream({ stream })) last = message;
  const parts = last.parts.map((p) => p.type);
  const answer = last.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  console.log(JSON.stringify({ text: answer, parts, id: last.id }));
}
