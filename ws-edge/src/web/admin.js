// Script of the admin page (admin.html), served by chat-edge at /admin.js (an ES module).
/*
 * Reads come from the admin REST routes (/api/admin/*) with the admin's token; the live feed
 * (/api/admin/feed, Server-Sent Events) says when something changed, and the page re-reads what
 * it shows. Takeover speaks the browser socket protocol (/ws) as the admin through the client
 * module (/chat-client.js: reconnects, acks and resends): `takeover` joins the chat and holds
 * it, `message` frames go to the user as the operator, `release` hands it back.
 * Every text from users, models and operators is set with textContent, never as HTML.
 */
import { ChatClient } from '/chat-client.js';

(() => {
  const $ = (id) => document.getElementById(id);
  const LS_TOKEN = 'chat.admin.token';
  const A = {
    token: null, me: null, next: null, selected: null, detail: null,
    feed: null, feedRetry: 1, reloadTimer: null,
    client: null, holding: null, shown: new Set(),
  };

  // ---------- token and REST ----------
  function takeToken() {
    const url = new URL(location.href);
    const fromUrl = (url.searchParams.get('token') || '').trim();
    if (url.searchParams.has('token')) {
      url.searchParams.delete('token');
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    }
    try {
      if (fromUrl) localStorage.setItem(LS_TOKEN, fromUrl);
      return fromUrl || localStorage.getItem(LS_TOKEN);
    } catch { return fromUrl || null; }
  }
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(path, options) {
    const res = await fetch(path, Object.assign({ cache: 'no-store' }, options, {
      headers: { Authorization: `Bearer ${A.token}` },
    }));
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, (body && body.error && body.error.message) || `HTTP ${res.status}`);
    return body;
  }
  function failed(err) {
    if (err && (err.status === 401 || err.status === 403)) {
      showTokenForm(err.status === 401 ? 'The token was refused (expired or invalid).' : 'This token has no admin role.');
    }
    return err && err.message ? err.message : String(err);
  }
  function showTokenForm(text) {
    $('token-msg').textContent = text || 'Paste an admin access token.';
    $('token-form').hidden = false;
  }

  // ---------- formatting ----------
  const cell = (text, cls) => {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text == null ? '' : String(text);
    return td;
  };
  function time(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }
  function duration(ms) {
    if (typeof ms !== 'number') return '';
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }
  const ms = (v) => (typeof v === 'number' ? `${v} ms` : '–');
  function badge(text, cls) {
    const b = document.createElement('span');
    b.className = `badge ${cls || ''}`;
    b.textContent = text;
    return b;
  }
  function button(text, onClick, cls) {
    const b = document.createElement('button');
    b.type = 'button'; b.textContent = text;
    if (cls) b.className = cls;
    b.addEventListener('click', (ev) => { ev.stopPropagation(); onClick(); });
    return b;
  }

  // ---------- sessions ----------
  function query() {
    const p = new URLSearchParams();
    const v = (id) => $(id).value.trim();
    if (v('f-user')) p.set('user', v('f-user'));
    if (v('f-status')) p.set('status', v('f-status'));
    if ($('f-needs-help').checked) p.set('needsHelp', 'true');
    if ($('f-assisted').checked) p.set('assisted', 'true');
    if (v('f-from')) p.set('from', v('f-from'));
    if (v('f-to')) p.set('to', v('f-to'));
    p.set('sort', v('f-sort'));
    p.set('order', v('f-order'));
    p.set('limit', '50');
    return p;
  }
  function sessionRow(s) {
    const tr = document.createElement('tr');
    tr.dataset.chatId = s.chatId;
    tr.tabIndex = 0;
    tr.setAttribute('aria-selected', String(s.chatId === A.selected));
    const m = s.metrics || {};
    const user = document.createElement('td');
    user.append(button(s.ownerName || s.ownerId, () => { $('f-user').value = s.ownerId; loadSessions(); }, 'link'));
    user.title = s.ownerId;
    const flags = document.createElement('td');
    if (s.needsHelp) flags.append(badge('needs help', 'help'));
    if (s.operator) flags.append(badge(`held by ${s.operator.name || s.operator.id}`, 'held'));
    else if (s.adminAssisted) flags.append(badge('assisted', 'assisted'));
    tr.append(
      user,
      cell((s.title || '').trim() || 'Untitled', 'title'),
      cell(s.status),
      cell(time(s.startedAt)),
      cell(duration(m.durationMs)),
      cell((m.userMessages || 0) + (m.assistantMessages || 0) + (m.adminMessages || 0)),
      cell(ms(m.avgTtftMs)),
      cell((m.promptTokens || 0) + (m.completionTokens || 0)),
      flags,
    );
    tr.addEventListener('click', () => select(s.chatId));
    tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') select(s.chatId); });
    return tr;
  }
  async function loadSessions(more) {
    const p = query();
    if (more && A.next) p.set('cursor', A.next);
    try {
      const page = await api(`/api/admin/sessions?${p}`);
      const rows = (page.sessions || []).map(sessionRow);
      const body = $('sessions-table').tBodies[0];
      if (more) body.append(...rows); else body.replaceChildren(...rows);
      A.next = page.nextCursor || null;
      $('more').hidden = !A.next;
      $('sessions-state').textContent = body.rows.length ? '' : 'No session matches.';
    } catch (err) {
      $('sessions-state').textContent = `Could not load sessions: ${failed(err)}`;
    }
  }

  // ---------- help queue ----------
  async function loadHelp() {
    try {
      const list = await api('/api/admin/help-requests');
      const rows = (list.requests || []).filter((r) => !r.resolvedAt).map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.helpId = r.id;
        tr.dataset.chatId = r.chatId;
        const actions = document.createElement('td');
        actions.append(
          button('Open', () => select(r.chatId)),
          button('Resolve', () => resolve(r.id)),
        );
        tr.append(cell(time(r.createdAt)), cell(r.userId), cell(r.reason || '', 'title'), actions);
        tr.addEventListener('click', () => select(r.chatId));
        return tr;
      });
      $('help-table').tBodies[0].replaceChildren(...rows);
      $('help-empty').hidden = rows.length > 0;
    } catch (err) {
      $('help-empty').hidden = false;
      $('help-empty').textContent = `Could not load the help queue: ${failed(err)}`;
    }
  }
  async function resolve(id) {
    try { await api(`/api/admin/help-requests/${encodeURIComponent(id)}/resolve`, { method: 'POST' }); } catch (err) {
      $('help-empty').textContent = `Could not resolve: ${failed(err)}`;
    }
    loadHelp();
    loadSessions();
  }

  // ---------- usage ----------
  async function loadUsage() {
    const by = $('usage-by').value;
    $('usage-key').textContent = { user: 'User', model: 'Model', day: 'Day' }[by] || 'Key';
    try {
      const u = await api(`/api/admin/usage?by=${encodeURIComponent(by)}`);
      const money = (c) => (typeof c === 'number' ? `${c.toFixed(4)} ${u.currency || ''}`.trim() : '–');
      const row = (r, total) => {
        const tr = document.createElement('tr');
        if (total) tr.className = 'total';
        tr.append(cell(total ? 'Total' : r.key), cell(r.replies), cell(r.promptTokens), cell(r.completionTokens), cell(money(r.cost)));
        return tr;
      };
      const rows = (u.rows || []).map((r) => row(r, false));
      if (u.total && rows.length) rows.push(row(u.total, true));
      $('usage-table').tBodies[0].replaceChildren(...rows);
    } catch (err) {
      $('usage-table').tBodies[0].replaceChildren();
      $('usage-key').textContent = `Could not load usage: ${failed(err)}`;
    }
  }

  // ---------- one session ----------
  async function select(chatId) {
    if (A.selected !== chatId && A.holding && A.holding !== chatId) {
      $('detail-state').textContent = 'Hand the held session back before opening another.';
      return;
    }
    A.selected = chatId;
    for (const tr of $('sessions-table').tBodies[0].rows) tr.setAttribute('aria-selected', String(tr.dataset.chatId === chatId));
    $('detail').hidden = false;
    await loadDetail();
    $('detail').scrollIntoView({ block: 'nearest' });
  }
  async function loadDetail() {
    const chatId = A.selected;
    if (!chatId) return;
    try {
      const d = await api(`/api/admin/sessions/${encodeURIComponent(chatId)}?limit=100`);
      if (A.selected !== chatId) return;
      A.detail = d;
      renderDetail();
    } catch (err) {
      $('detail-state').textContent = `Could not load the session: ${failed(err)}`;
    }
  }
  function renderDetail() {
    const s = (A.detail && A.detail.session) || {};
    const m = s.metrics || {};
    $('detail-title').textContent = (s.title || '').trim() || 'Untitled';
    const facts = [
      ['User', `${s.ownerName || ''} (${s.ownerId || ''})`], ['Status', s.status], ['Connected', time(s.startedAt)],
      ['Duration', duration(m.durationMs)], ['Messages', `${m.userMessages || 0} user, ${m.assistantMessages || 0} assistant, ${m.adminMessages || 0} operator`],
      ['First token', `${ms(m.avgTtftMs)} avg, ${ms(m.maxTtftMs)} max`], ['Response', `${ms(m.avgResponseMs)} avg`],
      ['Tokens', `${m.promptTokens || 0} in, ${m.completionTokens || 0} out`], ['Models', (m.models || []).join(', ')],
    ];
    $('detail-summary').replaceChildren(...facts.map(([k, v]) => {
      const span = document.createElement('span');
      const b = document.createElement('strong');
      b.textContent = `${k}: `;
      span.append(b, document.createTextNode(v == null ? '' : String(v)));
      return span;
    }));
    if (s.needsHelp) $('detail-summary').append(badge('needs help', 'help'));
    const box = $('transcript');
    box.replaceChildren();
    A.shown.clear();
    for (const msg of (A.detail.transcript && A.detail.transcript.messages) || []) addLine(msg);
    box.scrollTop = box.scrollHeight;
    renderHolding();
  }
  function addLine(msg) {
    if (!msg || !msg.id || A.shown.has(msg.id)) return;
    A.shown.add(msg.id);
    const line = document.createElement('div');
    line.className = 'line';
    line.dataset.role = msg.role || 'system';
    line.dataset.id = msg.id;
    const who = document.createElement('span');
    who.className = 'who';
    const md = msg.metadata || {};
    who.textContent = msg.role === 'admin' ? (md.operatorName || 'operator') : msg.role === 'user' ? msg.userId : msg.role;
    const text = document.createElement('span');
    text.textContent = msg.content || '';
    line.append(who, text);
    $('transcript').append(line);
  }
  function note(text) {
    const line = document.createElement('div');
    line.className = 'line note';
    line.textContent = text;
    $('transcript').append(line);
    $('transcript').scrollTop = $('transcript').scrollHeight;
  }
  function renderHolding() {
    const held = !!A.holding && A.holding === A.selected;
    const s = (A.detail && A.detail.session) || {};
    // Held by this admin but not on this page (another tab, before a reload): taking over
    // again re-attaches, so only another operator's hold disables it.
    const byOther = !!s.operator && !held && s.operator.id !== A.me;
    $('takeover').hidden = held;
    $('takeover').disabled = !!byOther;
    $('release').hidden = !held;
    $('operator-form').hidden = !held;
    if (byOther) $('detail-state').textContent = `Held by ${s.operator.name || s.operator.id}.`;
    else if (held) $('detail-state').textContent = 'You hold this session: the assistant is silent.';
    else if ($('detail-state').textContent.startsWith('Held by')) $('detail-state').textContent = '';
  }

  // ---------- takeover over the socket ----------
  // The socket opens at the first takeover. Frames wait for the connection; after a reconnect
  // the session held is taken again (the lease outlives a short drop), and operator messages
  // not yet acked are sent again by the client under the same ids.
  function socket() {
    if (A.client) return A.client;
    const client = new ChatClient({ token: A.token });
    A.client = client;
    client.addEventListener('frame', (ev) => onFrame(ev.detail));
    client.addEventListener('session', () => {
      for (const [type, data] of A.waiting.splice(0)) client.frame(type, data);
    });
    client.addEventListener('status', (ev) => {
      if (ev.detail.state === 'reconnecting' && A.holding) {
        $('detail-state').textContent = 'Connection lost; reconnecting…';
        if (!A.waiting.some(([type]) => type === 'takeover')) A.waiting.push(['takeover', { chatId: A.holding }]);
      }
    });
    client.addEventListener('closed', () => {
      if (A.client !== client) return;
      A.client = null;
      showTokenForm('The token was refused (expired or invalid).');
    });
    client.connect().catch(() => { /* told by `closed` */ });
    return client;
  }
  A.waiting = [];
  function wsSend(type, data) {
    const client = socket();
    if (client.state !== 'connected' || !client.frame(type, data)) A.waiting.push([type, data]);
  }
  function onFrame(f) {
    const d = (f && f.data) || {};
    if (f.type === 'operator_joined' && d.chatId) {
      A.holding = d.chatId;
      if (d.chatId === A.selected) { note(`${(d.operator && d.operator.name) || 'You'} joined: the user sees you.`); renderHolding(); }
      loadSessions();
      loadHelp();
    } else if (f.type === 'chat_update' && d.chatId && d.updates && 'operator' in d.updates && d.updates.operator) {
      // Taken over again after a reconnect: the server confirms we still hold it.
      A.holding = d.chatId;
      if (d.chatId === A.selected) $('detail-state').textContent = 'You hold this session: the assistant is silent.';
      renderHolding();
    } else if (f.type === 'operator_left' && d.chatId) {
      if (A.holding === d.chatId) A.holding = null;
      if (d.chatId === A.selected) { note('Handed back to the assistant.'); $('detail-state').textContent = ''; renderHolding(); }
      loadSessions();
    } else if (f.type === 'message' && d.message && d.chatId === A.selected) {
      addLine(d.message);
      $('transcript').scrollTop = $('transcript').scrollHeight;
    } else if (f.type === 'error') {
      $('detail-state').textContent = `${d.message || 'Error'}${d.code ? ` (${d.code})` : ''}`;
      if (d.code === 401) showTokenForm('The token was refused (expired or invalid).');
    }
  }
  function takeOver() {
    if (!A.selected) return;
    $('detail-state').textContent = 'Taking over…';
    wsSend('takeover', { chatId: A.selected });
  }
  function release() {
    if (!A.holding) return;
    wsSend('release', { chatId: A.holding });
  }
  function sendAsOperator(ev) {
    ev.preventDefault();
    const input = $('operator-input');
    const content = input.value.trim();
    if (!content || !A.holding) return;
    input.value = '';
    // Sent now or once connected, and again after every reconnect until acked.
    socket().send(content, { chatId: A.holding }).catch((err) => {
      $('detail-state').textContent = `Not delivered: ${err.message}${err.code ? ` (${err.code})` : ''}`;
    });
  }

  // ---------- live feed ----------
  function scheduleReload(change) {
    clearTimeout(A.reloadTimer);
    A.reloadTimer = setTimeout(() => {
      loadSessions();
      loadHelp();
      if (change && change.chatId === A.selected) loadDetail();
    }, 250);
  }
  function openFeed() {
    if (A.feed) A.feed.close();
    const feed = new EventSource(`/api/admin/feed?token=${encodeURIComponent(A.token)}`);
    A.feed = feed;
    feed.onopen = () => { A.feedRetry = 1; $('feed-state').dataset.state = 'live'; $('feed-state').textContent = 'live'; };
    feed.onerror = () => {
      $('feed-state').dataset.state = 'off';
      $('feed-state').textContent = 'reconnecting…';
      if (feed.readyState === EventSource.CLOSED) retryFeed();
    };
    feed.addEventListener('change', (ev) => {
      let change = null;
      try { change = JSON.parse(ev.data); } catch { /* ignore */ }
      scheduleReload(change);
    });
    // The core dropped this watcher (it fell behind): re-read everything, then follow again.
    feed.addEventListener('reset', () => { feed.close(); scheduleReload(null); retryFeed(); });
  }
  function retryFeed() {
    const wait = Math.min(30, A.feedRetry);
    A.feedRetry *= 2;
    setTimeout(openFeed, wait * 1000);
  }

  // ---------- start ----------
  function start() {
    $('token-form').hidden = true;
    loadSessions();
    loadHelp();
    loadUsage();
    openFeed();
    try {
      const payload = JSON.parse(atob(A.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
      $('who').textContent = payload.name || payload.sub || '';
      A.me = payload.sub || null;
    } catch { /* not shown */ }
  }
  function init() {
    $('filters').addEventListener('change', () => loadSessions());
    $('filters').addEventListener('submit', (ev) => { ev.preventDefault(); loadSessions(); });
    $('more').addEventListener('click', () => loadSessions(true));
    $('usage-by').addEventListener('change', loadUsage);
    $('takeover').addEventListener('click', takeOver);
    $('release').addEventListener('click', release);
    $('operator-form').addEventListener('submit', sendAsOperator);
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token-input').value.trim().replace(/^bearer\s+/i, '');
      if (!t) return;
      A.token = t;
      try { localStorage.setItem(LS_TOKEN, t); } catch { /* storage off */ }
      if (A.client) { A.client.close(); A.client = null; } // the next takeover opens one with the new token
      start();
    });
    A.token = takeToken();
    if (A.token) start(); else showTokenForm();
  }
  init();
})();
