// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// stream is read as bytes and parsed here (fields: event, data, id, retry; ':' comments).
// Reconnects with Last-Event-ID after a dropped connection until the server sends `end`.

import { ApiError, apiFetch } from "./api.js";

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/** Calls onMessage({event, data, id}) per message; resolves after `end` or when aborted. */
export async function followStream(path, { onMessage, signal }) {
  const state = { lastId: "", retryMs: 2000 };
  while (!signal.aborted) {
    try {
      const headers = state.lastId ? { "Last-Event-ID": state.lastId } : {};
      const response = await apiFetch(path, { headers, signal });
      if (await readMessages(response.body, state, onMessage)) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error; // retrying will not help
      console.warn("stream interrupted, reconnecting", error);
    }
    await sleep(state.retryMs, signal);
  }
}

/** Parse one connection's messages; true once the `end` message arrived. */
async function readMessages(body, state, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop(); // an incomplete last line waits for the next chunk
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (message.data.length) {
          if (message.id !== null) state.lastId = message.id;
          onMessage({ event: message.event, data: JSON.parse(message.data.join("\n")), id: message.id });
          if (message.event === "end") {
            await reader.cancel();
            return true;
          }
        }
        message = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue; // keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") message.data.push(text);
      else if (field === "event") message.event = text;
      else if (field === "id") message.id = text;
      else if (field === "retry" && /^\d+$/.test(text)) state.retryMs = Number(text);
    }
  }
}
