// The seeds' stack in miniature, the Node baseline of the benchmark suite (bench/): a `ws`
// server that, for each client message, calls the fake upstream's /v1/chat/completions with
// stream=true and forwards every delta as one frame. No auth, no storage, no history: what a
// relay costs at the least. Run by chat-bench with PORT, UPSTREAM_STREAM, UPSTREAM_SHORT and
// UPSTREAM_FANOUT (OpenAI base URLs, http://host:port/v1).
//
// Client -> relay: {"type":"message","content":"...","reply":"stream"|"short"}
// Relay -> client: {"type":"chunk","index":n,"delta":"..."} per delta, then {"type":"done"}
// (or {"type":"error","message":"..."}).
//
// Rooms, for the fan-out scenario: {"type":"join","room":"r"} is answered {"type":"joined"};
// {"type":"message","room":"r","reply":"fanout",...} streams the reply to every socket in the
// room, each chunk serialized once and stamped with the relay's clock when its delta arrived
// ({"type":"chunk","index":n,"delta":"...","ts":ms}), then {"type":"done"} to each.

import { WebSocketServer } from "ws";

const port = Number(process.env.PORT ?? 8090);
const upstreams = {
  stream: process.env.UPSTREAM_STREAM,
  short: process.env.UPSTREAM_SHORT,
  fanout: process.env.UPSTREAM_FANOUT,
};
// room name -> the sockets in it.
const rooms = new Map();

const wss = new WebSocketServer({ host: "127.0.0.1", port });

wss.on("connection", (socket) => {
  socket.on("message", async (raw) => {
    let frame;
    try {
      frame = JSON.parse(raw.toString());
    } catch {
      socket.send(JSON.stringify({ type: "error", message: "Invalid JSON" }));
      return;
    }
    if (frame.type === "join") {
      join(socket, String(frame.room));
      return;
    }
    try {
      await relay(socket, frame);
    } catch (err) {
      if (socket.readyState === socket.OPEN) {
        socket.send(JSON.stringify({ type: "error", message: String(err) }));
      }
    }
  });
});

function join(socket, name) {
  let room = rooms.get(name);
  if (!room) {
    room = new Set();
    rooms.set(name, room);
  }
  room.add(socket);
  socket.on("close", () => room.delete(socket));
  socket.send(JSON.stringify({ type: "joined" }));
}

// Sends to the room's sockets when the frame names one, else to the sender.
async function relay(socket, frame) {
  const room = frame.room === undefined ? null : rooms.get(String(frame.room));
  const send = room
    ? (text) => {
        for (const member of room) member.send(text);
      }
    : (text) => socket.send(text);
  const base = upstreams[frame.reply] ?? upstreams.stream;
  const response = await fetch(`${base}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "fake-model",
      stream: true,
      messages: [{ role: "user", content: String(frame.content ?? "") }],
    }),
  });
  if (!response.ok) {
    throw new Error(`upstream answered ${response.status}`);
  }
  const decoder = new TextDecoder();
  let buffered = "";
  let index = 0;
  for await (const bytes of response.body) {
    buffered += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const delta = JSON.parse(data).choices?.[0]?.delta?.content;
        if (delta) {
          const chunk = { type: "chunk", index, delta };
          if (room) chunk.ts = Date.now();
          send(JSON.stringify(chunk));
          index += 1;
        }
      }
    }
  }
  send(JSON.stringify({ type: "done" }));
}

wss.on("listening", () => console.log(`relay listening on 127.0.0.1:${port}`));
