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
// - Reconnects back off 1, 2, 4, 8, 16, then 30 s (each within 10% either way, so clients
//   dropped together do not come back together), wait for the network while the browser is
//   offline, and resume every joined chat from the last `seq` seen (and the reply that was
//   streaming from its last chunk), so no event is lost or delivered twice: durable events
//   with a `seq` already seen are dropped. A close with 1008 (token refused, abuse) is final.
// - With `getToken`, a fresh token is asked for when half the token's life (at most a minute)
//   is left, and handed to the socket in-band (`auth`); reconnects use it.
//
// Events (CustomEvent, `detail` the frame's `data` plus `seq` where it has one): `session`,
// `ack`, `message`, `chunk` (message_chunk), `typing`, `chat_update`, `history`, `presence`,
// `read_receipt`, `operator_joined`, `operator_left`, `error` (server errors that answer no
// `send`), `frame` (every new frame, before the client acts on it), `status` (`{state,
// retryAt?}`: `connecting`, `connected`, `reconnecting`, `offline`, `closed`), `closed`
// (`{code, reason}`: closed for good by the server), `resume_failed` (`{chats, error}`),
// `token_expiring` (`{expiresAt}`: no fresh token is available) and `token_error` (`{message}`).
//
// The chat page (/chat.js) and the admin page (/admin.js) are built on it.

const BACKOFF_S = [1, 2, 4, 8, 16, 30];
const REFRESH_LEAD_MS = 60_000;

/** A random v4 UUID (also where `crypto.randomUUID` needs a secure context). */
export function uuid() {
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
    this.outbox = new Map();       // messageId -> {data, promise, resolve, reject}
    this.resumeRequest = null;     // {messageId, chats} of the last `resume` sent
    this.attempt = 0;
    this.closed = true;
    this.retryTimer = null;
    this.refreshTimer = null;
    this.ready = null;
    this.onOnline = () => this.reconnectNow();
  }

  /** Opens the socket; resolves with the `session` frame's data. */
  connect() {
    this.closed = false;
    if (globalThis.addEventListener) globalThis.addEventListener('online', this.onOnline);
    if (!this.ready) this.ready = new Promise((resolve, reject) => { this.readyWaiters = { resolve, reject }; });
    this.open();
    return this.ready;
  }

  /** Closes for good: no reconnect; unacknowledged sends are rejected. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.refreshTimer);
    if (globalThis.removeEventListener) globalThis.removeEventListener('online', this.onOnline);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, 'closed by the client');
    for (const [, pending] of this.outbox) pending.reject(new Error('the client was closed'));
    this.outbox.clear();
    this.setState('closed');
  }

  /**
   * Sends a message; resolves with the ack (`{messageId, id, chatId, seq, duplicate}`), rejects
   * with the server's error (`{code, message, retryable, field}`). Without `chatId` a new chat
   * is created; the connection then follows that chat. Sending a `messageId` that is still in
   * the outbox sends that message again now (a retry) and returns the same promise.
   */
  send(content, { chatId, attachments, agentId, context, messageId } = {}) {
    const id = messageId || uuid();
    const queued = this.outbox.get(id);
    if (queued) {
      if (this.state === 'connected') this.frame('message', queued.data, id);
      return queued.promise;
    }
    const data = { content, messageId: id };
    if (chatId) data.chatId = chatId;
    if (attachments && attachments.length) data.attachments = attachments;
    if (agentId) data.agentId = agentId;
    if (context) data.context = context;
    const entry = { data };
    entry.promise = new Promise((resolve, reject) => { entry.resolve = resolve; entry.reject = reject; });
    this.outbox.set(id, entry);
    if (this.state === 'connected') this.frame('message', data, id);
    return entry.promise;
  }

  /** Gives up an unacknowledged message: it is not sent again, and its `send` rejects. */
  discard(messageId) {
    const entry = this.outbox.get(messageId);
    if (!entry) return false;
    this.outbox.delete(messageId);
    entry.reject(Object.assign(new Error('discarded'), { code: 0, retryable: false, discarded: true }));
    return true;
  }

  /**
   * Follows a chat: answered with `history`; resumed after reconnects. Returns the frame's
   * `messageId`, which an `error` refusing the join carries.
   */
  join(chatId) {
    this.joined.add(chatId);
    const id = uuid();
    this.frame('chat_update', { action: 'join', chatId }, id);
    return id;
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
  setState(state, extra) {
    if (this.state === state && !extra) return;
    this.state = state;
    this.emit('status', Object.assign({ state }, extra));
  }

  open() {
    clearTimeout(this.retryTimer);
    if (this.socket || this.closed) return;
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    let socket;
    try {
      socket = new WebSocket(this.url, ['chat.v1', `bearer.${this.token}`]);
    } catch (err) {
      // Characters a subprotocol cannot carry: this token can never be sent.
      this.closed = true;
      this.setState('closed');
      if (this.readyWaiters) { this.readyWaiters.reject(err); this.readyWaiters = null; }
      this.emit('closed', { code: 1008, reason: 'the token cannot be sent' });
      return;
    }
    this.socket = socket;
    socket.onmessage = (ev) => { if (this.socket === socket) this.onFrame(ev.data); };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (ev.code === 1008) {
        // Policy: the token was refused or expired, or sustained abuse. Retrying as is cannot
        // help (protocol.md, close codes).
        this.closed = true;
        clearTimeout(this.refreshTimer);
        this.setState('closed');
        if (this.readyWaiters) { this.readyWaiters.reject(new Error(ev.reason || 'authentication failed')); this.readyWaiters = null; }
        this.emit('closed', { code: ev.code, reason: ev.reason });
        return;
      }
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.closed) { this.setState('closed'); return; }
    if (globalThis.navigator && navigator.onLine === false) {
      // The `online` event reconnects at once.
      this.setState('offline');
      return;
    }
    const wait = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)] * 1000 * (0.9 + Math.random() * 0.2);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.open(), wait);
    this.setState('reconnecting', { retryAt: Date.now() + wait });
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
    const d = f.data && typeof f.data === 'object' && !Array.isArray(f.data) ? f.data : {};
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
      // Chats seen before are resumed from their last seq; chats joined but never seen (the
      // socket went before their history came) are joined again.
      const chats = [];
      for (const chatId of this.joined) {
        if (!this.lastSeq.has(chatId)) { this.frame('chat_update', { action: 'join', chatId }, uuid()); continue; }
        const entry = { chatId, lastSeq: this.lastSeq.get(chatId) };
        const s = this.streams.get(chatId);
        if (s) entry.streaming = { messageId: s.messageId, lastIndex: s.lastIndex };
        chats.push(entry);
      }
      if (chats.length) {
        const messageId = uuid();
        this.resumeRequest = { messageId, chats: chats.map((c) => c.chatId) };
        this.frame('resume', { chats }, messageId);
      }
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
    const resume = this.resumeRequest;
    if (ref && resume && ref === resume.messageId) {
      // The chats can no longer be followed (deleted, or access withdrawn).
      this.resumeRequest = null;
      for (const chatId of resume.chats) this.joined.delete(chatId);
      this.emit('resume_failed', { chats: resume.chats, error: d });
      return;
    }
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
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const left = exp - Date.now();
    const lead = Math.min(REFRESH_LEAD_MS, Math.max(1_000, left / 2));
    const renew = this.getToken ? () => this.refresh() : () => this.emit('token_expiring', { expiresAt: exp });
    this.refreshTimer = setTimeout(renew, Math.max(0, left - lead));
  }

  async refresh() {
    let token;
    try {
      token = await this.getToken();
    } catch (err) {
      this.emit('token_error', { message: `token renewal failed: ${err && err.message}` });
      this.refreshTimer = setTimeout(() => this.refresh(), 10_000);
      return;
    }
    if (token == null) {
      // No fresh token can be had: the app is told once; the socket lasts until the token ends.
      this.emit('token_expiring', { expiresAt: tokenExpiry(this.token) });
      return;
    }
    if (typeof token !== 'string' || token.split('.').length !== 3) {
      this.emit('token_error', { message: 'token renewal failed: getToken gave no token' });
      this.refreshTimer = setTimeout(() => this.refresh(), 10_000);
      return;
    }
    this.token = token;
    // Answered with `session` again, which schedules the next renewal.
    if (!this.frame('auth', { token })) this.scheduleRefresh();
  }
}
