// A React page using the AI SDK's own `useChat` hook with `resume: true` and the default
// transport against tokenlog (bundled by esbuild in the tests; served on the gateway's origin).
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useState } from "react";
import { createRoot } from "react-dom/client";

const params = new URLSearchParams(location.search);
const chatId = params.get("chat");
const transport = new DefaultChatTransport({
  api: "/api/chat",
  headers: { Authorization: `Bearer ${params.get("token")}` },
});

function Chat() {
  const { messages, sendMessage, status, error } = useChat({ id: chatId, resume: true, transport });
  const [text, setText] = useState("");
  const submit = (event) => {
    event.preventDefault();
    sendMessage({ text });
    setText("");
  };
  return (
    <main>
      <p id="status" data-status={status}>{status}{error ? ` ${error.message}` : ""}</p>
      {messages.map((m) => (
        <div key={m.id} className={`message ${m.role}`} data-id={m.id}>
          {m.parts.filter((p) => p.type === "text").map((p) => p.text).join("")}
        </div>
      ))}
      <form onSubmit={submit}>
        <input id="text" value={text} onChange={(e) => setText(e.target.value)} />
        <button id="send" type="submit">Send</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Chat />);
