// chat-client.js: a client of the chat WebSocket protocol (v1) for other apps to embed, served by
// chat-edge at /chat-client.js as an ES module (no dependencies, no build step):
//
//   import { ChatClient } from 'https://chat.example.com/chat-client.js';
//   const chat = new ChatClient({ url: 'wss://chat.example.com/ws', token, getToken });
//   chat.addEventListener('message', (e) => show(e.detail.message));
//   chat.addEventListener('chunk', (e) => grow(e.detail));
//   await chat.connect();
//   const ack = await chat.send('Hello', { chatId });
//
// What it guarantees (docs/protocol.md, "Delivery, resume, operators"):
// - Every `send` has a messageId and stays in the outbox until the server acknowledges it;
//   unacknowledged messages are sent again, with the same id, after every reconnect (the server
//   deduplicates, so each is stored once). `send` resolves with the ack.
// - Reconnects back off 1, 2, 4, 8, 16, then 30 s, and resume every joined chat from the last
//   `seq` seen (and the reply that was streaming from its last chunk), so no event is lost or
//   delivered twice: durable events with a `seq` already seen are dropped.
// - With `getToken`, a fresh token is asked for when half the token's life (at most a minute)
//   is left, and handed to the socket in-band (`auth`); reconnects use it.
//
// Events (CustomEvent, `detail` the frame's `data` plus `seq` where it has one): `session`,
// `message`, `chunk` (message_chunk), `typing`, `chat_update`, `history`, `presence`,
// `read_receipt`, `operator_joined`, `operator_left`, `error` (server errors that answer no
// `send`), `frame` (every frame as received), `status` (`{state}`: `connecting`, `connected`,
// `reconnecting`, `closed`).

const BACKOFF_S = [1, 2, 4, 8, 16, 30];
const REFRESH_LEAD_MS = 60_000;

function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The `exp` of a JWT, in milliseconds; null when it cannot be read. */
export function tokenExpiry(token) {
  try {
    const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch { return null; }
}

export class ChatClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url] the socket URL (default: `/ws` of this page's host)
   * @param {string} options.token an access token (JWT)
   * @param {() => Promise<string>} [options.getToken] returns a fresh token before this one expires
   */
  constructor({ url, token, getToken } = {}) {
    super();
    if (!token) throw new TypeError('ChatClient: a token is required');
    const here = globalThis.location;
    this.url = url || `${here.protocol === 'https:' ? 'wss:' : 'ws:'}//${here.host}/ws`;
    this.token = token;
    this.getToken = getToken || null;
    this.socket = null;
    this.session = null;
    this.state = 'closed';
    this.lastSeq = new Map();      // chatId -> highest seq seen
    this.joined = new Set();       // chats to resume after a reconnect
    this.streams = new Map();      // chatId -> {messageId, lastIndex} of the reply streaming
    this.outbox = new Map();       // messageId -> {data, resolve, reject}
    this.attempt = 0;
    this.closed = true;
    this.retryTimer = null;
    this.refreshTimer = null;
    this.ready = null;
  }

  /** Opens the socket; resolves with the `session` frame's data. */
  connect() {
    this.closed = false;
    if (!this.ready) this.ready = new Promise((resolve, reject) => { this.readyWaiters = { resolve, reject }; });
    this.open();
    return this.ready;
  }

  /** Closes for good: no reconnect; unacknowledged sends are rejected. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    if (this.socket) this.socket.close(1000, 'closed by the client');
    for (const [, pending] of this.outbox) pending.reject(new Error('the client was closed'));
    this.outbox.clear();
    this.setState('closed');
  }

  /**
   * Sends a message; resolves with the ack (`{messageId, id, chatId, seq, duplicate}`), rejects
   * with the server's error (`{code, message, retryable, field}`). Without `chatId` a new chat
   * is created; the connection then follows that chat.
   */
  send(content, { chatId, attachments, agentId, context, messageId } = {}) {
    const id = messageId || uuid();
    const data = { content, messageId: id };
    if (chatId) data.chatId = chatId;
    if (attachments && attachments.length) data.attachments = attachments;
    if (agentId) data.agentId = agentId;
    if (context) data.context = context;
    return new Promise((resolve, reject) => {
      this.outbox.set(id, { data, resolve, reject });
      if (this.state === 'connected') this.frame('message', data, id);
    });
  }

  /** Follows a chat: answered with `history`; resumed after reconnects. */
  join(chatId) {
    this.joined.add(chatId);
    this.frame('chat_update', { action: 'join', chatId }, uuid());
  }

  leave(chatId) {
    this.joined.delete(chatId);
    this.frame('chat_update', { action: 'leave', chatId });
  }

  /** A page of older messages (`before`: a history's `cursor`); answered with `history`. */
  history(chatId, before, limit = 50) {
    const data = { chatId, limit };
    if (before) data.before = before;
    this.frame('history', data);
  }

  stop(chatId) { this.frame('stop', { chatId }); }
  typing(chatId, isTyping) { this.frame('typing', { chatId, isTyping: !!isTyping }); }
  askForHelp(chatId, reason) { this.frame('help_request', reason ? { chatId, reason } : { chatId }); }

  /** Sends one frame now (false when the socket is not open). */
  frame(type, data, messageId) {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    const frame = { type, data, timestamp: Date.now() };
    if (messageId) frame.messageId = messageId;
    socket.send(JSON.stringify(frame));
    return true;
  }

  // ---------- connection ----------
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('status', { state });
  }

  open() {
    clearTimeout(this.retryTimer);
    if (this.socket || this.closed) return;
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    const socket = new WebSocket(this.url, ['chat.v1', `bearer.${this.token}`]);
    this.socket = socket;
    socket.onmessage = (ev) => { if (this.socket === socket) this.onFrame(ev.data); };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (ev.code === 1008 && !this.session) {
        // The token was refused at the start: retrying it cannot help.
        this.closed = true;
        this.setState('closed');
        if (this.readyWaiters) this.readyWaiters.reject(new Error(ev.reason || 'authentication failed'));
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.closed) { this.setState('closed'); return; }
    this.setState('reconnecting');
    const wait = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), wait * 1000);
  }

  /** Reconnects at once (e.g. when the app knows the network is back). */
  reconnectNow() {
    if (this.closed || this.socket) return;
    this.open();
  }

  // ---------- frames ----------
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  onFrame(raw) {
    let f;
    try { f = JSON.parse(raw); } catch { return; }
    if (!f || typeof f.type !== 'string') return;
    const d = f.data && typeof f.data === 'object' ? f.data : {};
    const msg = d.message && typeof d.message === 'object' ? d.message : null;
    const chatId = d.chatId || (msg && msg.chatId);
    const seq = typeof f.seq === 'number' ? f.seq : msg && typeof msg.seq === 'number' ? msg.seq : null;
    if (chatId && seq !== null) {
      const last = this.lastSeq.get(chatId);
      if (last !== undefined && seq <= last) return; // a replayed event already delivered
      this.lastSeq.set(chatId, seq);
    }
    this.emit('frame', f);
    const detail = seq !== null ? Object.assign({ seq }, d) : d;
    switch (f.type) {
      case 'session': this.onSession(d); break;
      case 'ack': this.onAck(d); break;
      case 'message_chunk': this.onChunk(d); break;
      case 'message':
        if (msg && msg.role === 'assistant') this.streams.delete(chatId);
        if (chatId) this.joined.add(chatId);
        this.emit('message', detail);
        break;
      case 'history':
        if (d.chatId && typeof d.lastSeq === 'number') {
          if (d.reset) this.lastSeq.set(d.chatId, d.lastSeq);
          else if (!this.lastSeq.has(d.chatId) || this.lastSeq.get(d.chatId) < d.lastSeq) this.lastSeq.set(d.chatId, d.lastSeq);
        }
        this.emit('history', d);
        break;
      case 'error': this.onError(d, f); break;
      default: this.emit(f.type, detail);
    }
  }

  onSession(d) {
    const first = this.state !== 'connected';
    this.session = d;
    this.attempt = 0;
    this.setState('connected');
    this.scheduleRefresh();
    if (first) {
      const chats = [...this.joined].map((chatId) => {
        const entry = { chatId, lastSeq: this.lastSeq.get(chatId) || 0 };
        const s = this.streams.get(chatId);
        if (s) entry.streaming = { messageId: s.messageId, lastIndex: s.lastIndex };
        return entry;
      });
      if (chats.length) this.frame('resume', { chats });
      for (const [id, pending] of this.outbox) this.frame('message', pending.data, id);
    }
    if (this.readyWaiters) { this.readyWaiters.resolve(d); this.readyWaiters = null; }
    this.emit('session', d);
  }

  onAck(d) {
    const pending = this.outbox.get(d.messageId);
    if (d.chatId) this.joined.add(d.chatId);
    if (pending) {
      this.outbox.delete(d.messageId);
      pending.resolve(d);
    }
    this.emit('ack', d);
  }

  onChunk(d) {
    if (d.chatId && d.messageId && typeof d.index === 'number') {
      const s = this.streams.get(d.chatId);
      if (s && s.messageId === d.messageId && d.index <= s.lastIndex) return; // seen already
      this.streams.set(d.chatId, { messageId: d.messageId, lastIndex: d.index });
    }
    this.emit('chunk', d);
  }

  onError(d, f) {
    const ref = d.messageId || f.messageId;
    const pending = ref && this.outbox.get(ref);
    if (pending && !d.retryable) {
      this.outbox.delete(ref);
      pending.reject(Object.assign(new Error(d.message || 'error'), d));
      return;
    }
    // A retryable refusal (503, 429) stays in the outbox: it is sent again after a reconnect.
    this.emit('error', d);
  }

  // ---------- token refresh ----------
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.getToken) return;
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const left = exp - Date.now();
    const lead = Math.min(REFRESH_LEAD_MS, Math.max(1_000, left / 2));
    this.refreshTimer = setTimeout(() => this.refresh(), Math.max(0, left - lead));
  }

  async refresh() {
    try {
      const token = await this.getToken();
      if (typeof token !== 'string' || token.split('.').length !== 3) throw new Error('getToken gave no token');
      this.token = token;
      // Answered with `session` again, which schedules the next renewal.
      if (!this.frame('auth', { token })) this.scheduleRefresh();
    } catch (err) {
      this.emit('error', { code: 0, message: `token renewal failed: ${err.message}`, retryable: true });
      this.refreshTimer = setTimeout(() => this.refresh(), 10_000);
    }
  }
}
