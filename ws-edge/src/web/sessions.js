// Script of the sessions page (sessions.html), served by chat-edge at /sessions.js.
// Lists GET /api/sessions (newest activity first) with the chat page's token; every text is
// set with textContent, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const LS_TOKEN = 'chat.token';

  function token() {
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

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '';
    const today = new Date().toDateString() === date.toDateString();
    return today
      ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' });
  }

  function row(s) {
    const li = document.createElement('li');
    li.className = 'session';
    li.dataset.chatId = s.chatId;
    li.dataset.status = s.status || '';
    const link = document.createElement('a');
    link.href = `/?chat=${encodeURIComponent(s.chatId)}`;
    const title = document.createElement('span');
    title.className = 'title';
    title.textContent = (s.title || '').trim() || 'Untitled chat';
    const meta = document.createElement('span');
    meta.className = 'meta';
    const time = document.createElement('time');
    time.dateTime = s.lastActivityAt || '';
    time.textContent = when(s.lastActivityAt);
    const count = document.createElement('span');
    count.className = 'count';
    const n = Number(s.messageCount) || 0;
    count.textContent = `${n} ${n === 1 ? 'message' : 'messages'}`;
    meta.append(time, count);
    if (s.status === 'ended') {
      const ended = document.createElement('span');
      ended.className = 'badge';
      ended.textContent = 'ended';
      meta.append(ended);
    }
    if (s.adminAssisted) {
      const badge = document.createElement('span');
      badge.className = 'badge assisted';
      badge.textContent = 'a person helped';
      meta.append(badge);
    }
    link.append(title, meta);
    li.append(link);
    return li;
  }

  async function load(tok) {
    const state = $('state');
    state.textContent = 'Loading…';
    state.hidden = false;
    try {
      const res = await fetch('/api/sessions?limit=100', { headers: { Authorization: `Bearer ${tok}` }, cache: 'no-store' });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        state.textContent = res.status === 401
          ? 'Your sign-in has expired: open the chat page with a fresh token.'
          : `Could not load your sessions: ${(body && body.error && body.error.message) || res.status}`;
        return;
      }
      const sessions = Array.isArray(body && body.sessions) ? body.sessions.filter((s) => s && s.chatId) : [];
      $('sessions').replaceChildren(...sessions.map(row));
      state.textContent = sessions.length ? '' : 'No sessions yet. Start one with New chat.';
      state.hidden = !!sessions.length;
    } catch {
      state.textContent = 'Offline: could not load your sessions.';
    }
  }

  const tok = token();
  if (!tok) {
    $('state').textContent = 'Not signed in: open the chat page with your access token first.';
  } else {
    $('refresh').addEventListener('click', () => load(tok));
    load(tok);
  }
})();
