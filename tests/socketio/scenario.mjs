// Seed 003's client against the edge's Socket.IO endpoint, with the real socket.io-client.
// Run by tests/tests/socketio.rs, which starts the stack and passes, in the environment:
// SIO_URL (http://127.0.0.1:PORT), TOKEN_ALICE, TOKEN_BOB, TOKEN_FORGED, SHARED_CHAT (a chat
// of alice's with bob as a member). Prints one line per step; exits 1 on the first failure.
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const { SIO_URL, TOKEN_ALICE, TOKEN_BOB, TOKEN_FORGED, SHARED_CHAT } = process.env;
const WAIT_MS = 10_000;

/** Resolves with the payload of the next `event` on `socket` that satisfies `pred`. */
function next(socket, event, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`timed out waiting for ${event}`));
    }, WAIT_MS);
    function on(payload) {
      if (!pred(payload)) return;
      clearTimeout(timer);
      socket.off(event, on);
      resolve(payload);
    }
    socket.on(event, on);
  });
}

/** Connects and resolves once connected with the first chat:history; rejects on connect_error. */
function connect(options) {
  const socket = io(SIO_URL, { reconnection: false, forceNew: true, ...options });
  const history = next(socket, "chat:history");
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return connected.then(() => history).then((h) => ({ socket, history: h }));
}

/** Emits with an ack callback and resolves with the ack. */
function emitWithAck(socket, event, payload) {
  return socket.timeout(WAIT_MS).emitWithAck(event, payload);
}

/** Collects a whole streamed turn: chunks until the assistant's chat:message. */
async function reply(socket, connectionId) {
  const chunks = [];
  const onChunk = (c) => {
    if (c.connectionId === connectionId) chunks.push(c);
  };
  socket.on("chat:chunk", onChunk);
  const final = await next(
    socket,
    "chat:message",
    (m) => m.role === "assistant" && m.connectionId === connectionId,
  );
  socket.off("chat:chunk", onChunk);
  return { chunks, final };
}

function step(name) {
  console.log(`ok ${name}`);
}

// A bad token is refused at the handshake, with a clear message.
for (const auth of [{ token: "not-a-jwt" }, { token: TOKEN_FORGED }, {}]) {
  await assert.rejects(connect({ auth }), (err) => {
    assert.equal(err.message, "Authentication failed");
    return true;
  });
}
step("bad tokens are refused with connect_error");

// History on connect: a connectionId with no chat yet has an empty history.
const first = await connect({ auth: { token: TOKEN_ALICE, connectionId: "db-1" } });
const alice = first.socket;
assert.deepEqual(first.history.messages, []);
assert.equal(first.history.connectionId, "db-1");
step("history on connect");

// A streamed turn: the ack, chat:message:sent, the user's own message, chunks, the reply.
const sent = next(alice, "chat:message:sent", (s) => s.messageId === "m-1");
const own = next(alice, "chat:message", (m) => m.messageId === "m-1");
const streamed = reply(alice, "db-1");
const ack = await emitWithAck(alice, "chat:message", {
  messageId: "m-1",
  content: "Which tables hold orders?",
  connectionId: "db-1",
  context: { schema: "public", tables: ["orders"], config: { readOnly: true } },
});
assert.equal(ack.status, "sent");
assert.equal(ack.messageId, "m-1");
assert.equal(ack.duplicate, false);
assert.equal(ack.connectionId, "db-1");
assert.equal(typeof ack.id, "string");
const chatId = ack.chatId;
assert.equal(typeof (await sent).timestamp, "number");
const mine = await own;
assert.equal(mine.userId, "alice");
assert.equal(mine.role, "user");
assert.equal(mine.content, "Which tables hold orders?");
assert.equal(mine.connectionId, "db-1");
assert.equal(typeof mine.timestamp, "number");
const { chunks, final } = await streamed;
assert.ok(chunks.length > 1, `several chunks, got ${chunks.length}`);
chunks.forEach((c, i) => {
  assert.equal(c.index, i);
  assert.equal(c.messageId, final.id);
});
assert.equal(chunks.map((c) => c.delta).join(""), final.content);
assert.equal(final.status, "delivered");
assert.equal(final.userId, "assistant");
step("a streamed turn");

// The same messageId again: acked as a duplicate, and no second reply (the next reply
// belongs to the next message, and history below has exactly two answers).
const again = await emitWithAck(alice, "chat:message", {
  messageId: "m-1",
  content: "Which tables hold orders?",
  connectionId: "db-1",
});
assert.equal(again.duplicate, true);
assert.equal(again.id, ack.id);
const second = reply(alice, "db-1");
const ack2 = await emitWithAck(alice, "chat:message", {
  messageId: "m-2",
  content: "And customers?",
  connectionId: "db-1",
});
assert.equal(ack2.chatId, chatId, "one chat per user and connectionId");
await second;
step("a duplicate messageId is acked as such");

// Bad input: a clear error, to the ack callback and as chat:message:error.
const refusedEvent = next(alice, "chat:message:error", (e) => e.messageId === "m-bad");
const refused = await emitWithAck(alice, "chat:message", { messageId: "m-bad", content: "x" });
assert.equal(refused.status, "error");
assert.equal(refused.code, 400);
assert.match(refused.error, /connectionId/);
assert.equal((await refusedEvent).code, 400);
const empty = await emitWithAck(alice, "chat:message", {
  messageId: "m-empty",
  content: 5,
  connectionId: "db-1",
});
assert.equal(empty.code, 400);
step("bad messages get clear errors");

// Typing and presence between two users of one chat (alice's, bob a member).
const a2 = await connect({ auth: { token: TOKEN_ALICE, connectionId: SHARED_CHAT } });
const bob = await connect({ auth: { token: TOKEN_BOB, connectionId: SHARED_CHAT } });
assert.equal(bob.history.connectionId, SHARED_CHAT);
const typing = next(bob.socket, "chat:typing", (t) => t.userId === "alice" && t.isTyping);
a2.socket.emit("chat:typing:start", { connectionId: SHARED_CHAT });
assert.deepEqual(await typing, { userId: "alice", connectionId: SHARED_CHAT, isTyping: true });
const stopped = next(bob.socket, "chat:typing", (t) => t.userId === "alice" && !t.isTyping);
a2.socket.emit("chat:typing:stop", { connectionId: SHARED_CHAT });
await stopped;
const away = next(bob.socket, "presence:update", (p) => p.userId === "alice" && p.status === "away");
a2.socket.emit("presence:update", { status: "away", connectionId: SHARED_CHAT });
assert.equal((await away).connectionId, SHARED_CHAT);
// Bob reads alice's message: a read receipt (chat:ack) of a message he saw.
const bobSees = next(bob.socket, "chat:message", (m) => m.userId === "alice");
a2.socket.emit("chat:message", { messageId: "m-s", content: "hi bob", connectionId: SHARED_CHAT });
const seen = await bobSees;
assert.equal((await emitWithAck(bob.socket, "chat:ack", { messageId: seen.messageId })).status, "ok");
assert.equal((await emitWithAck(bob.socket, "chat:ack", { messageId: "nope" })).code, 404);
a2.socket.close();
bob.socket.close();
step("typing, presence and read receipts between two users");

// Reconnect: history again, the same chat, the sender's own ids on its messages.
alice.close();
const back = await connect({ auth: { token: TOKEN_ALICE, connectionId: "db-1" } });
const ids = back.history.messages.map((m) => m.messageId);
assert.equal(back.history.messages.length, 4, JSON.stringify(ids));
assert.equal(ids[0], "m-1");
assert.equal(ids[2], "m-2");
assert.deepEqual(
  back.history.messages.map((m) => m.role),
  ["user", "assistant", "user", "assistant"],
);
assert.ok(back.history.messages.every((m, i, all) => i === 0 || all[i - 1].seq < m.seq));
// Paging: the older page of a one-message window.
const page = next(back.socket, "chat:history", (h) => h.messages.length === 1);
back.socket.emit("chat:history", { connectionId: "db-1", limit: 1 });
const newest = await page;
assert.equal(newest.hasMore, true);
assert.equal(newest.messages[0].messageId, back.history.messages[3].messageId);
back.socket.close();
step("reconnect and history again");

// The token as the `auth` query parameter, over the polling transport only.
const polled = await connect({
  query: { auth: TOKEN_ALICE, connectionId: "db-1" },
  transports: ["polling"],
});
assert.equal(polled.history.messages.length, 4);
const polledTurn = reply(polled.socket, "db-1");
await emitWithAck(polled.socket, "chat:message", {
  messageId: "m-3",
  content: "Over polling",
  connectionId: "db-1",
});
await polledTurn;
polled.socket.close();
step("the auth query parameter over long polling");

process.exit(0);
