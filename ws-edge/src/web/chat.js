// Script of the chat page (chat.html), served by chat-edge at /chat.js (an ES module).
/*
 * The chat page, built on the client module (/chat-client.js): the module owns the socket,
 * reconnects with backoff, resumes every joined chat by `seq` (and the streaming reply by chunk),
 * drops events already seen, resends unacknowledged messages under the same ids and renews the
 * token in-band. The page adds what a person needs on top: state lives in `S`; new frames
 * arrive in onFrame() and go to one handler per type; outgoing messages are also kept in an
 * outbox in IndexedDB until the server acks them, so nothing typed is lost across reloads.
 */
import { ChatClient, uuid } from '/chat-client.js';

(() => {
  const $ = (id) => document.getElementById(id);
  const LS_TOKEN = 'chat.token';
  const LS_OUTBOX = 'chat.outbox';
  const LABELS = { pending: 'pending', sent: 'sent', failed: 'failed', streaming: '', complete: '', stopped: 'stopped' };

  const S = {
    token: null, client: null, ready: false, booted: false,
    countdown: null, noticeTimer: null,
    session: null, chatId: null, chatModel: null, pendingModel: null,
    outbox: [],                // [{messageId, chatId, content, attachments?, createdAt, failed?}]
    tray: [],                  // uploads for the next message: [{key, name, state, progress, file?, error?}]
    handed: new Set(),         // outbox ids handed to the client (it resends them until acked)
    chatlessInFlight: null,    // id of the message that is creating a chat (no chatId)
    creating: null,            // request id of a pending `chat_update create`
    requests: new Map(),       // request id -> {kind, chatId, ...} for error correlation
    bubbles: new Map(),        // server message id -> element
    pendingEls: new Map(),     // client messageId -> element (not yet acked)
    stream: null,              // {chatId, id, el, text, lastIndex, partial, pending: Map}
    assistantTyping: false, othersTyping: new Set(), names: new Map(),
    titleFor: null,            // chatId whose title was last looked up (loadTitle)
    older: null,               // {chatId, cursor, hasMore, loading: request id}: paging back
  };

  // ---------- storage and ids ----------
  function lsGet(key) { try { return localStorage.getItem(key); } catch { return null; } }
  function lsSet(key, value) {
    try { if (value == null) localStorage.removeItem(key); else localStorage.setItem(key, value); } catch { /* storage off */ }
  }
  // The outbox lives in IndexedDB (database `chat`, store `outbox`, by messageId), at most
  // OUTBOX_MAX messages; where IndexedDB cannot be opened, in localStorage. Writes are queued in
  // order, each a snapshot of the whole outbox. An outbox an older page left in localStorage is
  // taken over once.
  const OUTBOX_MAX = 100;
  let outboxDb = null;
  let outboxWrites = Promise.resolve();
  function openOutboxDb() {
    if (!outboxDb) {
      outboxDb = new Promise((resolve) => {
        let req;
        try { req = indexedDB.open('chat', 1); } catch { resolve(null); return; }
        req.onupgradeneeded = () => req.result.createObjectStore('outbox', { keyPath: 'messageId' });
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => resolve(null);
        req.onblocked = () => resolve(null);
      });
    }
    return outboxDb;
  }
  const validOutbox = (list) => (Array.isArray(list)
    ? list.filter((m) => m && typeof m.messageId === 'string' && typeof m.content === 'string') : []);
  async function loadOutbox() {
    let legacy = [];
    try { legacy = validOutbox(JSON.parse(lsGet(LS_OUTBOX) || '[]')); } catch { /* unreadable */ }
    const db = await openOutboxDb();
    if (!db) return legacy;
    const stored = await new Promise((resolve) => {
      try {
        const req = db.transaction('outbox', 'readonly').objectStore('outbox').getAll();
        req.onsuccess = () => resolve(validOutbox(req.result));
        req.onerror = () => resolve([]);
      } catch { resolve([]); }
    });
    const known = new Set(stored.map((m) => m.messageId));
    const all = stored.concat(legacy.filter((m) => !known.has(m.messageId)));
    all.sort((a, b) => (a.createdAt || 0) - (b.createdAt || 0));
    if (legacy.length) lsSet(LS_OUTBOX, null);
    return all;
  }
  function saveOutbox() {
    const snapshot = S.outbox.map((m) => Object.assign({}, m));
    outboxWrites = outboxWrites.then(async () => {
      const db = await openOutboxDb();
      if (!db) { lsSet(LS_OUTBOX, snapshot.length ? JSON.stringify(snapshot) : null); return; }
      await new Promise((resolve) => {
        try {
          const tx = db.transaction('outbox', 'readwrite');
          const store = tx.objectStore('outbox');
          store.clear();
          for (const m of snapshot) store.put(m);
          tx.oncomplete = resolve; tx.onerror = resolve; tx.onabort = resolve;
        } catch { resolve(); }
      });
    });
  }
  const findOutbox = (id) => S.outbox.find((m) => m.messageId === id);
  function dropOutbox(id) { S.outbox = S.outbox.filter((m) => m.messageId !== id); saveOutbox(); }

  // ---------- token ----------
  const cleanToken = (t) => (t || '').trim().replace(/^bearer\s+/i, '');
  // `?chat=ID` (the sessions page's links) opens that chat instead of the latest one.
  function takeChatParam() {
    const url = new URL(location.href);
    const chat = (url.searchParams.get('chat') || '').trim();
    if (url.searchParams.has('chat')) {
      url.searchParams.delete('chat');
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    }
    return chat || null;
  }
  function takeToken() {
    const url = new URL(location.href);
    const fromUrl = cleanToken(url.searchParams.get('token'));
    if (url.searchParams.has('token')) {
      url.searchParams.delete('token');
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    }
    if (fromUrl) lsSet(LS_TOKEN, fromUrl);
    return fromUrl || cleanToken(lsGet(LS_TOKEN)) || null;
  }
  function showTokenForm(text) {
    $('token-msg').textContent = text || 'Paste an access token to start chatting.';
    $('token-form').hidden = false;
    $('sign-out').hidden = true;
    $('token-input').focus();
  }
  function submitToken(ev) {
    ev.preventDefault();
    const token = cleanToken($('token-input').value);
    if (!token) return;
    $('token-input').value = '';
    S.token = token; lsSet(LS_TOKEN, token);
    $('token-form').hidden = true;
    connect();
  }
  function signOut(ev) {
    ev.preventDefault();
    S.token = null; S.booted = false;
    lsSet(LS_TOKEN, null);
    S.outbox = []; saveOutbox();
    closeClient();
    S.session = null;
    newChat(false);
    $('user').textContent = '';
    setStatus('offline', 'offline (signed out)');
    showTokenForm('Signed out. Paste a token to sign in again.');
  }
  function authFail() {
    S.token = null;
    lsSet(LS_TOKEN, null);
    closeClient();
    setStatus('auth-failed', 'authentication failed');
    showTokenForm('Authentication failed. Paste a new token to reconnect.');
  }

  // ---------- token refresh ----------
  // Before the token runs out the client asks renewToken() for a fresh one, from the site's
  // token service (`tokenUrl` of /pages.json: a same-origin path, asked with the site's
  // cookies), and hands it to the socket in-band (`auth`); reconnects use it too. Without a
  // token service the user is told shortly before the sign-in runs out.
  async function loadPagesConfig() {
    try {
      const res = await fetch('/pages.json', { cache: 'no-store' });
      if (res.ok) S.pagesConfig = await res.json();
    } catch { /* offline: no token service this time */ }
  }
  async function renewToken() {
    if (!S.pagesConfig) await loadPagesConfig();
    const url = S.pagesConfig && S.pagesConfig.tokenUrl;
    if (!url) return null;
    const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const json = (res.headers.get('content-type') || '').includes('json');
    const token = cleanToken(json ? ((await res.json()) || {}).token : await res.text());
    if (!token || token.split('.').length !== 3) throw new Error('no token in the answer');
    S.token = token;
    lsSet(LS_TOKEN, token);
    return token;
  }

  // ---------- connection (the client module's) ----------
  function setStatus(state, text) {
    const el = $('status');
    el.dataset.state = state;
    el.textContent = text;
  }
  // One ChatClient per sign-in; events of a client closed since are ignored.
  function connect() {
    if (S.client) return;
    if (!S.token) { setStatus('offline', 'offline'); showTokenForm(); return; }
    const client = new ChatClient({ token: S.token, getToken: renewToken });
    S.client = client;
    const on = (type, fn) => client.addEventListener(type, (ev) => { if (S.client === client) fn(ev.detail); });
    on('frame', onFrame);
    on('session', onSession);
    on('status', onStatus);
    on('closed', (d) => { if (d.code === 1008) authFail(); });
    on('resume_failed', onResumeFailed);
    on('token_expiring', () => notify('Your sign-in runs out in a minute: open the page with a fresh token to keep chatting.'));
    on('token_error', (d) => notify(`Could not renew the sign-in (${d.message}); trying again.`));
    $('sign-out').hidden = false;
    client.connect().catch(() => { /* a refused token is handled by `closed` */ });
  }
  function onStatus(d) {
    clearCountdown();
    if (d.state === 'connected') return; // shown by onSession
    resetConnState();
    if (d.state === 'connecting') setStatus('connecting', 'connecting…');
    else if (d.state === 'offline') setStatus('offline', 'offline');
    else if (d.state === 'reconnecting' && d.retryAt) {
      const tick = () => setStatus('reconnecting', `reconnecting in ${Math.max(1, Math.round((d.retryAt - Date.now()) / 1000))}s`);
      tick();
      S.countdown = setInterval(tick, 250);
    } else if (d.state === 'reconnecting') setStatus('reconnecting', 'reconnecting…');
  }
  function clearCountdown() { clearInterval(S.countdown); S.countdown = null; }
  // What a connection knew and the next one must learn again. Messages handed to the client
  // stay handed: it sends them again itself after the reconnect.
  function resetConnState() {
    S.ready = false;
    S.requests.clear();
    S.creating = null;
    S.assistantTyping = false; S.othersTyping.clear();
    renderActivity();
  }
  function closeClient() {
    clearCountdown();
    const client = S.client;
    S.client = null;
    S.handed.clear(); S.chatlessInFlight = null;
    resetConnState();
    if (client) client.close();
  }
  const seqOf = (chatId) => (S.client ? S.client.lastSeq.get(chatId) : undefined);

  function send(type, data) { return !!S.client && S.client.frame(type, data); }
  // A frame whose errors we want to recognise: it carries a fresh messageId we remember.
  function request(kind, type, data, extra) {
    const id = uuid();
    if (!S.client || !S.client.frame(type, data, id)) return null;
    S.requests.set(id, Object.assign({ kind, chatId: data.chatId }, extra));
    return id;
  }

  // ---------- incoming frames ----------
  // Every frame the client has not seen before (replayed duplicates never get here); the
  // `session` frame comes as the client's `session` event, once the client has acted on it.
  const HANDLERS = {
    ack: onAck, message: onMessage, message_chunk: onChunk, typing: onTyping,
    chat_update: onChatUpdate, history: onHistory, error: onError,
    operator_joined: (d, f) => onOperator(d, f, true),
    operator_left: (d, f) => onOperator(d, f, false),
  };
  function onFrame(f) {
    const handler = HANDLERS[f.type];
    const d = f.data && typeof f.data === 'object' && !Array.isArray(f.data) ? f.data : {};
    if (handler) handler(d, f);
  }

  function onSession(d) {
    const first = !S.ready;
    S.session = d; S.ready = true;
    clearCountdown();
    setStatus('connected', 'connected');
    $('user').textContent = d.name || d.userId || '';
    $('sign-out').hidden = false;
    renderModels();
    renderVoice();
    if (!first) return; // sent again after `auth`: nothing to re-join
    if (S.chatId) { if (!S.client.joined.has(S.chatId)) joinChat(S.chatId); } // else resumed by the client
    else if (!S.booted && S.wantChat) openChat(S.wantChat);
    else if (!S.booted) openInitialChat(d.activeChatId);
    S.booted = true;
    for (const item of S.outbox) {
      // e.g. 503 during a restart: the client has sent it again.
      if (item.failed && item.failed.retryable && S.handed.has(item.messageId)) markPending(item);
    }
    flush();
    renderActivity();
  }
  function openInitialChat(activeChatId) {
    if (S.outbox.some((m) => !m.chatId)) return; // unsent messages of a new chat: stay there
    const target = (S.outbox[0] && S.outbox[0].chatId) || activeChatId;
    if (target) openChat(target);
  }
  function joinChat(chatId) {
    if (!S.client) return;
    S.requests.set(S.client.join(chatId), { kind: 'join', chatId });
  }
  function onResumeFailed(d) {
    const e = d.error || {};
    if (d.chats.includes(S.chatId) && (e.code === 403 || e.code === 404)) {
      notify('That chat is not available any more; starting a new one.');
      newChat(false);
    } else {
      notify(errorText(e));
    }
  }

  function onAck(d, f) {
    const ref = d.messageId || f.messageId;
    const req = S.requests.get(ref);
    if (req && req.kind === 'create' && d.chatId) { chatCreated(ref, d.chatId); return; }
    settleOutgoing(ref, d.id, d.seq, d.chatId);
  }
  // The server stored one of our messages (ack, or its broadcast echo): mark it sent.
  function settleOutgoing(clientId, serverId, seq, chatId) {
    const item = findOutbox(clientId);
    const el = S.pendingEls.get(clientId);
    if (!item && !el) return; // unknown or already settled: duplicates are fine
    if (item) dropOutbox(clientId);
    if (S.chatlessInFlight === clientId) S.chatlessInFlight = null;
    if (el) {
      S.pendingEls.delete(clientId);
      if (!S.chatId && chatId) adoptChat(chatId); // our first message created this chat
      const existing = serverId && S.bubbles.get(serverId);
      if (existing && existing !== el) {
        el.remove(); // already shown from history
      } else {
        if (serverId) { el.dataset.id = serverId; S.bubbles.set(serverId, el); }
        if (typeof seq === 'number') el.dataset.seq = seq;
        setBubbleStatus(el, 'sent');
      }
    }
    flush();
  }

  function onMessage(d) {
    const m = d.message;
    if (!m || !m.id) return;
    const chatId = d.chatId || m.chatId;
    if (d.messageId) settleOutgoing(d.messageId, m.id, m.seq, chatId);
    if (chatId !== S.chatId) return;
    withScroll(() => upsertMessage(m));
    if (S.stream && S.stream.id === m.id) endStream(); // the final message is authoritative
  }

  function onChunk(d) {
    if (d.chatId !== S.chatId || !d.messageId || typeof d.index !== 'number') return;
    let s = S.stream;
    if (!s || s.id !== d.messageId) {
      const shown = S.bubbles.get(d.messageId);
      if (shown && shown.dataset.status !== 'streaming') return; // final message already shown
      s = startStream(d.chatId, d.messageId, d.index);
    }
    if (d.index <= s.lastIndex || s.pending.has(d.index)) return; // duplicate chunk
    s.pending.set(d.index, String(d.delta == null ? '' : d.delta));
    while (s.pending.has(s.lastIndex + 1)) {
      s.lastIndex += 1;
      s.text += s.pending.get(s.lastIndex);
      s.pending.delete(s.lastIndex);
    }
    withScroll(() => setBody(s.el, 'assistant', (s.partial ? '… ' : '') + s.text));
  }
  function startStream(chatId, id, firstIndex) {
    const el = S.bubbles.get(id) || bubble('assistant');
    el.dataset.id = id;
    if (!el.isConnected) setMeta(el, modelName(S.chatModel) || 'assistant', Date.now());
    setBubbleStatus(el, 'streaming');
    S.bubbles.set(id, el);
    if (!el.isConnected) withScroll(() => $('messages').appendChild(el));
    // Joined mid-reply: earlier chunks are unknown, the final message will fill them in.
    S.stream = { chatId, id, el, text: '', lastIndex: firstIndex - 1, partial: firstIndex > 0, pending: new Map() };
    renderActivity();
    return S.stream;
  }
  function endStream() { S.stream = null; renderActivity(); }

  function onTyping(d) {
    if (d.chatId !== S.chatId) return;
    if (d.userId === 'assistant') S.assistantTyping = !!d.isTyping;
    else if (!S.session || d.userId !== S.session.userId) {
      if (d.isTyping) S.othersTyping.add(d.userId); else S.othersTyping.delete(d.userId);
    }
    renderActivity();
  }

  function onChatUpdate(d, f) {
    const ref = f.messageId || d.messageId;
    const req = ref && S.requests.get(ref);
    if (req && req.kind === 'create' && d.chatId) { chatCreated(ref, d.chatId); return; }
    // The answer to our `create` (a chat we have never seen) while waiting for one.
    if (S.creating && !S.chatId && d.chatId && !(S.client && S.client.joined.has(d.chatId))) { chatCreated(S.creating, d.chatId); return; }
    if (!d.chatId || d.chatId !== S.chatId) return;
    const u = d.updates || {};
    if (typeof u.needsHelp === 'boolean') {
      S.needsHelp = u.needsHelp;
      renderHelp();
      if (u.needsHelp) note('A person has been asked to join this chat.');
    }
    if (typeof u.spokenReplies === 'boolean') { lsSet(spokenKey(d.chatId), u.spokenReplies ? '1' : null); renderVoice(); }
    if (typeof u.title === 'string' && u.title) setTitle(u.title);
    if (typeof u.model === 'string' && u.model) { S.chatModel = u.model; renderModels(); }
  }

  function onHistory(d, f) {
    if (!d.chatId || d.chatId !== S.chatId) return;
    const msgs = Array.isArray(d.messages) ? d.messages : [];
    // Server frames carry no request id: the answer to our `before` page is the history whose
    // messages are all older than the oldest shown (or none), while one is asked for.
    if (S.older && S.older.loading && !d.reset && olderThanShown(msgs)) { showOlder(d, msgs, S.older.loading); return; }
    const first = !$('messages').querySelector('.msg[data-seq]');
    withScroll(() => {
      if (d.reset) clearView();
      for (const m of msgs) {
        if (!m || !m.id) continue;
        upsertMessage(m);
        if (S.stream && S.stream.id === m.id) endStream();
      }
      if (d.reset) {
        const s = S.stream;
        if (s && s.chatId === S.chatId) { S.bubbles.set(s.id, s.el); $('messages').appendChild(s.el); }
        showPendingFor(S.chatId);
      }
    }, d.reset || first);
    S.older = { chatId: d.chatId, cursor: d.cursor, hasMore: !!d.hasMore, loading: null };
    if (S.titleFor !== d.chatId) { S.titleFor = d.chatId; loadTitle(d.chatId); }
    // A page that does not fill the screen cannot be scrolled up: ask for more at once.
    const box = $('messages');
    if (S.older && S.older.hasMore && box.scrollHeight <= box.clientHeight + 80) loadOlder();
    if (!S.chatModel) {
      const last = msgs.filter((m) => m && m.role === 'assistant' && m.metadata && m.metadata.model).pop();
      if (last) { S.chatModel = last.metadata.model; renderModels(); }
    }
  }

  // Older messages, asked for when the list is scrolled to its top: shown above, the messages
  // in view staying where they were.
  function loadOlder() {
    const o = S.older;
    if (!o || o.chatId !== S.chatId || !o.hasMore || o.loading || !S.ready) return;
    o.loading = request('older', 'history', { chatId: o.chatId, before: o.cursor, limit: 50 });
  }
  function olderThanShown(msgs) {
    const first = $('messages').querySelector('.msg[data-seq]');
    if (!first) return false;
    const oldest = Number(first.dataset.seq);
    return msgs.every((m) => !m || typeof m.seq !== 'number' || m.seq < oldest);
  }
  function showOlder(d, msgs, ref) {
    S.requests.delete(ref);
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    for (const m of msgs) if (m && m.id) upsertMessage(m);
    box.scrollTop = box.scrollHeight - fromBottom;
    S.older = { chatId: d.chatId, cursor: d.cursor || S.older.cursor, hasMore: !!d.hasMore && msgs.length > 0, loading: null };
    if (!S.older.hasMore) note('The beginning of this chat.', -1);
    else if (box.scrollTop < 80) loadOlder(); // still at the top (a tall screen): keep going
  }

  function onOperator(d, f, joined) {
    if (d.chatId !== S.chatId) return;
    const op = d.operator || {};
    const name = op.name || 'An operator';
    if (op.id) S.names.set(op.id, name);
    note(joined ? `${name} (a human operator) joined the chat` : `${name} left the chat; the assistant is back`, f.seq);
  }

  function onError(d, f) {
    if (d.code === 401) { authFail(); return; }
    const ref = d.messageId || f.messageId;
    const resume = S.client && S.client.resumeRequest;
    if (ref && resume && ref === resume.messageId) return; // onResumeFailed
    const item = ref && findOutbox(ref);
    if (item) { markFailed(item, d); return; }
    const req = ref && S.requests.get(ref);
    if (req) { S.requests.delete(ref); requestFailed(req, ref, d); return; }
    notify(errorText(d));
  }
  const errorText = (d) => `${d.message || 'Error'}${d.code ? ` (${d.code})` : ''}`;
  function requestFailed(req, id, d) {
    if (req.kind === 'create') {
      if (S.creating === id) S.creating = null;
      S.pendingModel = null; // fall back to the default model
      renderModels();
      notify(`Could not start a chat with that model: ${errorText(d)}`);
      flush();
    } else if ((req.kind === 'join' || req.kind === 'resume') && req.chatId === S.chatId && (d.code === 403 || d.code === 404)) {
      notify('That chat is not available any more; starting a new one.');
      newChat(false);
    } else if (req.kind === 'older') {
      if (S.older) S.older.loading = null;
      notify(`Could not load older messages: ${errorText(d)}`);
    } else if (req.kind === 'help') {
      notify(`Could not ask for a person: ${errorText(d)}`);
    } else if (req.kind === 'spoken') {
      notify(`Could not change spoken replies: ${errorText(d)}`);
    } else if (req.kind === 'select_model') {
      S.chatModel = req.prev || null;
      renderModels();
      notify(`Could not change the model: ${errorText(d)}`);
    } else {
      notify(errorText(d));
    }
  }

  // ---------- outgoing messages ----------
  function submitMessage(ev) {
    if (ev) ev.preventDefault();
    const input = $('input');
    const content = input.value.trim();
    if (S.tray.some((t) => t.state === 'uploading')) { notify('Wait until the uploads have finished.'); return; }
    const files = S.tray.filter((t) => t.state === 'done').map((t) => t.file);
    if (!content) {
      if (files.length) notify('Add a message to send with the files.');
      return;
    }
    const max = (S.session && S.session.limits && S.session.limits.maxMessageChars) || 10000;
    if (content.length > max) { notify(`Message too long: ${content.length} of at most ${max} characters.`); return; }
    input.value = '';
    autosize();
    S.tray = [];
    renderTray();
    queueMessage(content, files);
  }
  // Into the outbox (kept across reloads until acked), shown as pending, sent when possible.
  function queueMessage(content, attachments) {
    if (S.outbox.length >= OUTBOX_MAX) {
      notify(`${OUTBOX_MAX} messages are waiting to be sent: wait until they are delivered.`);
      return;
    }
    const item = { messageId: uuid(), chatId: S.chatId, content, createdAt: Date.now() };
    if (attachments.length) item.attachments = attachments;
    S.outbox.push(item);
    saveOutbox();
    withScroll(() => showPending(item), true);
    flush();
  }

  // ---------- files and voice ----------
  const TYPE_BY_EXT = { md: 'text/markdown', csv: 'text/csv', json: 'application/json', txt: 'text/plain' };
  function fileType(file) {
    if (file.type) return file.type;
    return TYPE_BY_EXT[(file.name.split('.').pop() || '').toLowerCase()] || 'application/octet-stream';
  }
  // One upload (XMLHttpRequest: fetch reports no upload progress). Resolves with the server's
  // {id, name, mime, size, url}; rejects with its error message.
  function uploadFile(file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/uploads');
      xhr.setRequestHeader('Authorization', `Bearer ${S.token}`);
      xhr.upload.onprogress = (ev) => { if (ev.lengthComputable && ev.total) onProgress(ev.loaded / ev.total); };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        if (xhr.status === 201 && body && body.id) resolve(body);
        else reject(new Error((body && body.error && body.error.message) || `upload failed (${xhr.status})`));
      };
      xhr.onerror = () => reject(new Error('upload failed: network error'));
      const form = new FormData();
      form.append('file', new File([file], file.name || 'file', { type: fileType(file) }));
      xhr.send(form);
    });
  }
  // Uploads files into the tray; a voice recording is sent on its own once uploaded.
  function addFiles(list, voice) {
    if (!S.token) return;
    for (const file of list) {
      const item = { key: uuid(), name: file.name, state: 'uploading', progress: 0, file: null, voice: !!voice };
      S.tray.push(item);
      uploadFile(file, (p) => { item.progress = p; renderTray(); })
        .then((f) => {
          item.state = 'done'; item.file = f;
          if (item.voice) { S.tray = S.tray.filter((t) => t !== item); queueMessage('', [f]); }
        })
        .catch((err) => { item.state = 'failed'; item.error = err.message; })
        .finally(renderTray);
    }
    renderTray();
  }
  function renderTray() {
    const tray = $('tray');
    tray.replaceChildren(...S.tray.map((t) => {
      const li = document.createElement('li');
      li.className = 'upload'; li.dataset.state = t.state;
      const name = document.createElement('span');
      name.className = 'name'; name.textContent = t.voice ? 'voice message' : t.name;
      li.append(name);
      if (t.state === 'uploading') {
        const bar = document.createElement('progress');
        bar.max = 1; bar.value = t.progress;
        bar.setAttribute('aria-label', `Uploading ${t.name}`);
        li.append(bar);
      } else if (t.state === 'failed') {
        const why = document.createElement('span');
        why.textContent = t.error || 'failed';
        li.append(why);
      }
      const remove = button('\u00D7', 'remove', () => { S.tray = S.tray.filter((x) => x !== t); renderTray(); });
      remove.setAttribute('aria-label', `Remove ${t.name}`);
      li.append(remove);
      return li;
    }));
    tray.hidden = !S.tray.length;
  }
  function pickFiles(input) {
    const files = [...(input.files || [])];
    input.value = '';
    if (files.length) addFiles(files, false);
  }

  const REC = { recorder: null, chunks: [], stream: null, started: 0, timer: null };
  const canRecord = () => !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  async function toggleRecording() {
    if (REC.recorder) { REC.recorder.stop(); return; }
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (err) {
      notify(`The microphone is not available: ${err && (err.message || err.name)}`);
      return;
    }
    const type = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/webm', 'audio/mp4']
      .find((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    Object.assign(REC, { recorder, stream, chunks: [], started: Date.now() });
    recorder.ondataavailable = (ev) => { if (ev.data && ev.data.size) REC.chunks.push(ev.data); };
    recorder.onstop = () => finishRecording(recorder.mimeType || type || 'audio/webm');
    recorder.start(250);
    REC.timer = setInterval(renderRecording, 500);
    renderRecording();
  }
  function finishRecording(mime) {
    clearInterval(REC.timer);
    for (const track of REC.stream.getTracks()) track.stop();
    const type = mime.split(';')[0];
    const blob = new Blob(REC.chunks, { type });
    Object.assign(REC, { recorder: null, stream: null, chunks: [], timer: null });
    renderRecording();
    if (!blob.size) { notify('Nothing was recorded.'); return; }
    const ext = type.includes('ogg') ? 'ogg' : type.includes('mp4') ? 'm4a' : 'webm';
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
    addFiles([new File([blob], `voice-${stamp}.${ext}`, { type })], true);
  }
  function renderRecording() {
    const on = !!REC.recorder;
    const el = $('recording');
    el.hidden = !on;
    if (on) {
      const s = Math.floor((Date.now() - REC.started) / 1000);
      el.textContent = `Recording ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}. Press the microphone again to send.`;
    }
    $('record').setAttribute('aria-pressed', String(on));
    $('record').setAttribute('aria-label', on ? 'Stop and send the voice message' : 'Record a voice message');
  }
  const spokenKey = (chatId) => `chat.spoken.${chatId}`;
  function renderVoice() {
    const voice = !!(S.session && S.session.voice);
    $('record').hidden = !(voice && canRecord());
    const speak = $('speak');
    speak.hidden = !voice;
    speak.disabled = !S.chatId;
    speak.setAttribute('aria-pressed', String(!!S.chatId && lsGet(spokenKey(S.chatId)) === '1'));
    renderHelp();
  }
  function renderHelp() {
    const help = $('help');
    help.disabled = !S.chatId || !S.ready || !!S.needsHelp;
    help.textContent = S.needsHelp ? 'A person has been asked' : 'Ask a person to join';
  }
  function askForHelp() {
    if (!S.chatId) return;
    $('menu').open = false;
    if (!request('help', 'help_request', { chatId: S.chatId })) notify('Offline: ask again once reconnected.');
  }
  function toggleSpeak() {
    if (!S.chatId) return;
    const on = $('speak').getAttribute('aria-pressed') !== 'true';
    if (!request('spoken', 'chat_update', { action: 'set_spoken_replies', chatId: S.chatId, spokenReplies: on })) {
      notify('Offline: spoken replies can be changed once reconnected.');
    }
  }
  const wantsCreate = () => !!(S.pendingModel && S.session && S.pendingModel !== S.session.defaultModel);
  // Hands every queued message not handed yet to the client, which sends it and sends it again
  // after each reconnect until it is acked. Messages of a chat that does not exist yet wait for
  // the first one (or the `create`) to establish the chatId.
  function flush() {
    if (!S.ready) return;
    let changed = false;
    for (const item of S.outbox) {
      if (item.failed || S.handed.has(item.messageId)) continue;
      if (!item.chatId) {
        if (S.chatId) { item.chatId = S.chatId; changed = true; }
        else if (S.creating || S.chatlessInFlight) continue;
        else if (wantsCreate()) {
          S.creating = request('create', 'chat_update', { action: 'create', model: S.pendingModel }, { model: S.pendingModel });
          continue;
        } else S.chatlessInFlight = item.messageId;
      }
      hand(item);
    }
    if (changed) saveOutbox();
  }
  // The ack and the error come as frames (onAck, onError); the promise is not needed.
  function hand(item) {
    const attachments = Array.isArray(item.attachments) ? item.attachments.map((a) => a.id) : [];
    S.handed.add(item.messageId);
    S.client.send(item.content, { chatId: item.chatId || undefined, attachments, messageId: item.messageId })
      .catch(() => { /* shown by onError */ });
  }
  function markFailed(item, d) {
    item.failed = { code: d.code, message: d.message || 'error', retryable: !!d.retryable };
    saveOutbox();
    if (!d.retryable) {
      // Final: the client has dropped it; only Retry sends it again.
      S.handed.delete(item.messageId);
      if (S.chatlessInFlight === item.messageId) S.chatlessInFlight = null;
    }
    const el = S.pendingEls.get(item.messageId);
    if (el) setBubbleStatus(el, 'failed', errorText(d));
    notify(`A message was not sent: ${errorText(d)}`); // #notice is an alert: read out at once
    flush();
  }
  function markPending(item) {
    item.failed = null;
    saveOutbox();
    const el = S.pendingEls.get(item.messageId);
    if (el) setBubbleStatus(el, 'pending');
  }
  function retry(id) { // resends with the SAME messageId: the server deduplicates
    const item = findOutbox(id);
    if (!item) return;
    markPending(item);
    if (S.handed.has(id) && S.client) hand(item); // still in the client's outbox: sent again now
    else flush();
  }
  function discard(id) {
    if (S.client) S.client.discard(id);
    S.handed.delete(id);
    if (S.chatlessInFlight === id) S.chatlessInFlight = null;
    dropOutbox(id);
    const el = S.pendingEls.get(id);
    if (el) el.remove();
    S.pendingEls.delete(id);
  }

  // ---------- chats ----------
  function openChat(chatId) {
    showChat(chatId);
    joinChat(chatId);
  }
  // The chat's view (its unsent messages) before it is joined: also what a page that starts
  // offline shows.
  function showChat(chatId) {
    S.chatId = chatId; S.chatModel = null; S.needsHelp = false;
    setTitle('Chat');
    clearView();
    showPendingFor(chatId);
    renderModels();
    renderVoice();
  }
  function adoptChat(chatId) { // a chat created by our first message or by `create`
    S.chatId = chatId;
    S.chatModel = S.pendingModel || (S.session && S.session.defaultModel) || null;
    S.pendingModel = null;
    setTitle('Chat');
    renderModels();
    renderVoice();
    joinChat(chatId);
  }
  function chatCreated(reqId, chatId) {
    const req = S.requests.get(reqId);
    S.requests.delete(reqId);
    if (S.creating !== reqId) return;
    S.creating = null;
    if (!S.chatId) {
      if (req && req.model) S.pendingModel = req.model;
      adoptChat(chatId);
    }
    flush();
  }
  function newChat(leave) {
    if (leave !== false && S.chatId && S.client) S.client.leave(S.chatId);
    S.chatId = null; S.chatModel = null; S.stream = null; S.needsHelp = false;
    S.assistantTyping = false; S.othersTyping.clear();
    setTitle('New chat');
    clearView();
    showPendingFor(null);
    renderModels();
    renderVoice();
    renderActivity();
  }
  function changeModel() {
    const model = $('model').value;
    if (!S.chatId) { S.pendingModel = model; return; } // used by the next chat's `create`
    const prev = S.chatModel;
    S.chatModel = model;
    if (!request('select_model', 'chat_update', { action: 'select_model', chatId: S.chatId, model }, { prev })) {
      S.chatModel = prev;
      renderModels();
      notify('Offline: the model can be changed once reconnected.');
    }
  }
  function stopReply() { if (S.chatId) send('stop', { chatId: S.chatId }); }

  // ---------- markdown, built as DOM nodes (never HTML) ----------
  // The assistant's and operators' text: fenced code, headings, lists, quotes, paragraphs;
  // inline code, bold, italic, and links to http(s) and mailto only. Every piece of text goes
  // in as a text node, so markup in a message is shown, never run.
  function markdown(text) {
    const frag = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    const el = (tag, children) => { const e = document.createElement(tag); if (children) e.append(...children); return e; };
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^\s*(```|~~~)\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { body.push(lines[i]); i += 1; }
        i += 1; // the closing fence (or the end: an unclosed block while streaming)
        const code = el('code');
        code.textContent = body.join('\n');
        if (fence[2]) code.dataset.lang = fence[2];
        frag.append(el('pre', [code]));
        continue;
      }
      if (!line.trim()) { i += 1; continue; }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) { frag.append(el(`h${Math.min(6, heading[1].length + 2)}`, inline(heading[2]))); i += 1; continue; }
      const item = /^\s*([-*+]|\d{1,9}[.)])\s+/;
      if (item.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const list = el(ordered ? 'ol' : 'ul');
        while (i < lines.length && item.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
          list.append(el('li', inline(lines[i].replace(item, ''))));
          i += 1;
        }
        frag.append(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) { quoted.push(lines[i].replace(/^\s*>\s?/, '')); i += 1; }
        frag.append(el('blockquote', [markdown(quoted.join('\n'))]));
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !/^\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d{1,9}[.)]\s)/.test(lines[i])) {
        para.push(lines[i]);
        i += 1;
      }
      if (!para.length) { para.push(line); i += 1; }
      const p = el('p');
      para.forEach((l, n) => { if (n) p.append(el('br')); p.append(...inline(l)); });
      frag.append(p);
    }
    return frag;
  }
  // Inline spans of one line: `code`, **bold** / __bold__, *italic* / _italic_, [text](url),
  // bare http(s) URLs. Anything else is text.
  function inline(text) {
    const out = [];
    const re = /(`+)([^`]+?)\1|\*\*(?=\S)([^*]+?)\*\*|__(?=\S)([^_]+?)__|\*(?=\S)([^*]+?)\*|(?<![\w])_(?=\S)([^_]+?)_(?![\w])|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;
    let last = 0;
    let m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
      last = re.lastIndex;
      const e = (tag, t) => { const x = document.createElement(tag); x.append(...(tag === 'code' ? [document.createTextNode(t)] : inline(t))); return x; };
      if (m[2] !== undefined) out.push(e('code', m[2]));
      else if (m[3] !== undefined || m[4] !== undefined) out.push(e('strong', m[3] !== undefined ? m[3] : m[4]));
      else if (m[5] !== undefined || m[6] !== undefined) out.push(e('em', m[5] !== undefined ? m[5] : m[6]));
      else {
        const label = m[7] !== undefined ? m[7] : m[9];
        const href = m[7] !== undefined ? m[8] : m[9];
        if (/^(https?:|mailto:)/i.test(href) && isSafeUrl(href)) {
          const a = document.createElement('a');
          a.href = href; a.target = '_blank'; a.rel = 'noopener noreferrer';
          a.textContent = label;
          out.push(a);
        } else {
          out.push(document.createTextNode(m[0]));
        }
      }
    }
    if (last < text.length) out.push(document.createTextNode(text.slice(last)));
    return out;
  }
  // A message's text: markdown for the assistant and operators, exactly as typed for users.
  function setBody(el, role, text) {
    const body = el.querySelector('.body');
    if (role === 'assistant' || role === 'admin') {
      body.classList.add('md');
      body.replaceChildren(markdown(text));
    } else {
      body.classList.remove('md');
      body.textContent = text;
    }
  }

  // ---------- rendering (textContent only) ----------
  function setTitle(text) { $('title').textContent = text; $('title').title = text; document.title = `${text} · Chat`; }
  // The server names a chat created by its first message without announcing the name on the
  // socket, so the title comes from `GET /api/sessions` (same token). Best effort: on any error
  // the header keeps "Chat"; a later `chat_update {title}` still wins.
  async function loadTitle(chatId) {
    if (!S.token || !chatId) return;
    try {
      const res = await fetch('/api/sessions?limit=100', { headers: { Authorization: `Bearer ${S.token}` }, cache: 'no-store' });
      if (!res.ok) return;
      const body = await res.json();
      const found = (Array.isArray(body && body.sessions) ? body.sessions : []).find((c) => c && c.chatId === chatId);
      if (found && typeof found.title === 'string' && found.title.trim() && S.chatId === chatId && $('title').textContent === 'Chat') {
        setTitle(found.title.trim());
      }
    } catch { /* offline or not available: keep the generic title */ }
  }
  function clearView() {
    S.older = null;
    $('messages').replaceChildren();
    S.bubbles.clear();
    S.pendingEls.clear();
  }
  function withScroll(fn, force) {
    const box = $('messages');
    const stick = force || box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fn();
    if (stick) box.scrollTop = box.scrollHeight;
  }
  function bubble(role) {
    const el = document.createElement('div');
    el.className = 'msg';
    el.dataset.role = role; el.dataset.status = ''; el.dataset.id = '';
    const body = document.createElement('div'); body.className = 'body';
    const meta = document.createElement('div'); meta.className = 'meta';
    for (const cls of ['who', 'when', 'state', 'actions']) {
      const part = document.createElement(cls === 'when' ? 'time' : 'span');
      part.className = cls;
      meta.append(part);
    }
    el.append(body, meta);
    return el;
  }
  // Inserts before the first element with a higher seq or without one (pending, streaming).
  function place(el, seq) {
    const box = $('messages');
    if (typeof seq === 'number') {
      for (const child of box.children) {
        const cs = child.dataset.seq;
        if (cs === undefined || cs === '' || Number(cs) > seq) { box.insertBefore(el, child); return; }
      }
    }
    box.appendChild(el);
  }
  function upsertMessage(m) {
    let el = S.bubbles.get(m.id);
    if (!el) {
      el = bubble(m.role || 'assistant');
      S.bubbles.set(m.id, el);
      place(el, m.seq);
    }
    fillBubble(el, m);
  }
  function fillBubble(el, m) {
    const role = m.role || 'assistant';
    const md = m.metadata || {};
    el.dataset.role = role;
    el.dataset.id = m.id;
    if (typeof m.seq === 'number') el.dataset.seq = m.seq;
    setBody(el, role, m.content || '');
    renderAttachments(el, m.attachments);
    let who = role;
    if (role === 'admin') who = md.operatorName || 'operator';
    else if (role === 'assistant') who = modelName(md.model) || 'assistant';
    else if (role === 'user') who = S.session && m.userId === S.session.userId ? 'you' : 'user';
    setMeta(el, who, m.timestamp);
    const userish = role === 'user' || role === 'admin';
    setBubbleStatus(el, userish ? 'sent' : m.status || 'complete');
  }
  function renderAttachments(el, list) {
    const old = el.querySelector('.files');
    if (old) old.remove();
    if (!Array.isArray(list) || !list.length) return;
    const box = document.createElement('div');
    box.className = 'files';
    for (const a of list) {
      if (!a) continue;
      const safe = isSafeUrl(a.url);
      const mime = typeof a.mime === 'string' ? a.mime : '';
      const link = document.createElement('a');
      link.textContent = a.name || 'attachment';
      if (safe) { link.href = a.url; link.target = '_blank'; link.rel = 'noopener'; }
      if (safe && mime.startsWith('audio/')) {
        const fig = document.createElement('figure');
        const audio = document.createElement('audio');
        audio.controls = true; audio.preload = 'metadata'; audio.src = a.url;
        audio.setAttribute('aria-label', a.name || 'audio');
        fig.append(audio, link);
        box.append(fig);
      } else if (safe && mime.startsWith('image/')) {
        const img = document.createElement('img');
        img.src = a.url; img.alt = a.name || 'image'; img.loading = 'lazy';
        link.replaceChildren(img);
        box.append(link);
      } else {
        box.append(link);
      }
    }
    el.insertBefore(box, el.querySelector('.meta'));
  }
  function isSafeUrl(url) {
    try { return ['http:', 'https:', 'mailto:'].includes(new URL(url, location.href).protocol); } catch { return false; }
  }
  function setMeta(el, who, ts) {
    el.querySelector('.who').textContent = who;
    const when = el.querySelector('.when');
    const date = new Date(ts);
    if (Number.isNaN(date.getTime())) return;
    when.dateTime = date.toISOString();
    when.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  function setBubbleStatus(el, status, detail) {
    el.dataset.status = status;
    // A screen reader waits for the whole reply instead of reading every chunk.
    if (status === 'streaming') el.setAttribute('aria-busy', 'true'); else el.removeAttribute('aria-busy');
    const label = LABELS[status] !== undefined ? LABELS[status] : status;
    el.querySelector('.state').textContent = status === 'failed' && detail ? `failed: ${detail}` : label;
    const actions = el.querySelector('.actions');
    actions.replaceChildren();
    const id = el.dataset.clientId;
    if (status === 'failed' && id) {
      actions.append(button('Retry', 'retry', () => retry(id)), button('Discard', 'discard', () => discard(id)));
    }
  }
  function button(text, cls, onClick) {
    const b = document.createElement('button');
    b.type = 'button'; b.className = cls; b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }
  function showPending(item) {
    const el = bubble('user');
    el.dataset.clientId = item.messageId;
    el.querySelector('.body').textContent = item.content;
    renderAttachments(el, item.attachments);
    setMeta(el, 'you', item.createdAt);
    setBubbleStatus(el, item.failed ? 'failed' : 'pending', item.failed && errorText(item.failed));
    S.pendingEls.set(item.messageId, el);
    $('messages').appendChild(el);
  }
  function showPendingFor(chatId) {
    for (const item of S.outbox) if ((item.chatId || null) === chatId) showPending(item);
  }
  function note(text, seq) {
    const el = document.createElement('div');
    el.className = 'note';
    el.textContent = text;
    const at = typeof seq === 'number' ? seq : seqOf(S.chatId);
    if (typeof at === 'number') el.dataset.seq = at;
    withScroll(() => place(el, at));
  }
  function modelName(id) {
    const models = (S.session && S.session.models) || [];
    const found = models.find((m) => m && m.id === id);
    return found ? found.name || found.id : id;
  }
  function renderModels() {
    const sel = $('model');
    const models = S.session && Array.isArray(S.session.models) ? S.session.models.filter((m) => m && m.id) : [];
    sel.hidden = models.length <= 1;
    sel.replaceChildren(...models.map((m) => new Option(m.name || m.id, m.id)));
    const wanted = (S.chatId ? S.chatModel : S.pendingModel) || (S.session && S.session.defaultModel);
    if (wanted) sel.value = wanted;
  }
  function renderActivity() {
    const streaming = !!(S.stream && S.stream.chatId === S.chatId && S.chatId);
    const bot = S.assistantTyping || streaming;
    const others = [...S.othersTyping].map((id) => S.names.get(id) || 'someone');
    const typing = $('typing');
    typing.textContent = bot ? 'assistant is typing…' : others.length ? `${others.join(', ')} typing…` : '';
    typing.hidden = !typing.textContent;
    $('stop').hidden = !(S.ready && S.chatId && bot);
  }
  function notify(text) {
    const el = $('notice');
    el.textContent = text;
    el.hidden = false;
    clearTimeout(S.noticeTimer);
    S.noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }
  function autosize() {
    const input = $('input');
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, 192)}px`;
  }

  // ---------- start ----------
  async function init() {
    $('composer').addEventListener('submit', submitMessage);
    $('input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) submitMessage(ev);
      else if (ev.key === 'Escape' && !$('stop').hidden) { ev.preventDefault(); stopReply(); }
    });
    $('menu').addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && $('menu').open) { $('menu').open = false; $('menu').querySelector('summary').focus(); }
    });
    $('input').addEventListener('input', autosize);
    const narrow = window.matchMedia('(max-width: 600px)');
    const placeholder = () => {
      $('input').placeholder = narrow.matches ? 'Message…' : 'Message… (Enter to send, Shift+Enter for a new line)';
      autosize();
    };
    placeholder();
    if (narrow.addEventListener) narrow.addEventListener('change', placeholder); else narrow.addListener(placeholder);
    $('stop').addEventListener('click', stopReply);
    $('attach').addEventListener('click', () => $('file-input').click());
    $('file-input').addEventListener('change', () => pickFiles($('file-input')));
    $('camera').addEventListener('click', () => $('camera-input').click());
    $('camera-input').addEventListener('change', () => pickFiles($('camera-input')));
    $('camera').hidden = !window.matchMedia('(pointer: coarse)').matches;
    $('record').addEventListener('click', toggleRecording);
    $('speak').addEventListener('click', toggleSpeak);
    $('help').addEventListener('click', askForHelp);
    $('messages').addEventListener('scroll', () => { if ($('messages').scrollTop < 80) loadOlder(); }, { passive: true });
    $('new-chat').addEventListener('click', () => { newChat(); $('input').focus(); });
    $('model').addEventListener('change', changeModel);
    $('token-form').addEventListener('submit', submitToken);
    $('sign-out').addEventListener('click', signOut);
    // Back on the page while waiting to reconnect: try at once (the client itself reconnects
    // when the browser comes back online).
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && S.client && S.client.state === 'reconnecting') S.client.reconnectNow();
    });

    loadPagesConfig();
    // Messages queued before the stored outbox was read go after it.
    const early = S.outbox;
    S.outbox = (await loadOutbox()).concat(early);
    saveOutbox(); // also moves an outbox an older page kept in localStorage

    S.wantChat = takeChatParam();
    S.token = takeToken();
    setTitle('New chat');
    // Unsent messages of a chat: show it at once, joined when the socket is up.
    const queued = S.outbox.find((m) => m.chatId);
    if (!S.wantChat && queued && !S.outbox.some((m) => !m.chatId)) showChat(queued.chatId);
    else showPendingFor(null);
    if (S.token) connect();
    else { setStatus('offline', 'offline'); showTokenForm(); }
  }
  init();
})();
