// The sessions and admin pages beside the chat page, in a real headless Chromium: a user chats
// (an XSS payload stays text), asks for a person, finds the session on the sessions page and
// opens it again; an admin sees it live on the admin page (sessions, help queue, usage), takes
// it over, talks to the user, and hands it back, while the user's page shows each step. Started
// by tests/tests/browser.rs against a stack on the demo model:
//
//   node pages.mjs BASE_URL USER_TOKEN ADMIN_TOKEN LONG_CHAT_TOKEN SHORT_TOKEN FRESH_TOKEN
//
// SHORT_TOKEN expires in seconds; the edge names `/auth/chat-token` as the site's token service
// (`pages.token_url`), which this run plays (Playwright answers it with FRESH_TOKEN): the chat
// page fetches a fresh token before the short one runs out and hands it to the socket in-band.
//
// LONG_CHAT_TOKEN's user has one chat of 72 messages: the chat page shows the last 50 and loads
// the rest when scrolled to the top, keeping the messages in view where they were.
//
// Environment: CHROMIUM (Debian's chromium), SHOT_DIR (screenshots pages-*.png, desktop and
// phone width). Exits 0 when every step passed, 1 naming the step that failed.

import { chromium } from 'playwright-core';
import path from 'node:path';

import { harness } from './harness.mjs';

const [BASE, USER_TOKEN, ADMIN_TOKEN, LONG_TOKEN, SHORT_TOKEN, FRESH_TOKEN] = process.argv.slice(2);
const { CHROMIUM = '/usr/bin/chromium', SHOT_DIR = '/tmp' } = process.env;
if (!BASE || !USER_TOKEN || !ADMIN_TOKEN || !LONG_TOKEN || !SHORT_TOKEN || !FRESH_TOKEN) {
  console.error('usage: node pages.mjs http://HOST:PORT USER_TOKEN ADMIN_TOKEN LONG_CHAT_TOKEN SHORT_TOKEN FRESH_TOKEN');
  process.exit(2);
}
const XSS = '<img src=x onerror="window.__xss=1">Hello <b>there</b>';
const WAIT = 20_000;
const { log, step, watch, run } = harness();
async function shot(page, name) {
  const file = path.join(SHOT_DIR, `pages-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`  screenshot ${file}`);
}
async function noInjectedMarkup(page, label) {
  const injected = await page.evaluate(() => ({
    img: document.querySelectorAll('img[src="x"]').length,
    bold: [...document.querySelectorAll('b')].filter((b) => b.textContent === 'there').length,
    ran: !!window.__xss,
  }));
  if (injected.img || injected.bold || injected.ran) throw new Error(`${label}: message text reached the DOM as HTML: ${JSON.stringify(injected)}`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM });
await run(browser, 'the chat, sessions and admin pages work together', async () => {
  const userCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const adminCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // First: the short token was minted just before this run started.
  await step('the page renews a token about to run out, in-band, and keeps chatting', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    let asked = 0;
    await ctx.route('**/auth/chat-token', (route) => { asked += 1; route.fulfill({ json: { token: FRESH_TOKEN } }); });
    const page = await ctx.newPage();
    watch(page, 'refresh');
    const sent = [];
    const sessions = [];
    let renewed;
    const second = new Promise((resolve) => { renewed = resolve; });
    page.on('websocket', (ws) => {
      ws.on('framesent', (f) => { try { sent.push(JSON.parse(f.payload)); } catch { /* binary */ } });
      ws.on('framereceived', (f) => {
        try {
          const j = JSON.parse(f.payload);
          if (j.type === 'session') sessions.push(j);
          if (sessions.length >= 2) renewed();
        } catch { /* binary */ }
      });
    });
    await page.goto(`${BASE}/?token=${SHORT_TOKEN}`);
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await page.waitForFunction(() => localStorage.getItem('chat.token') !== null, null, { timeout: WAIT });
    // The short token lives a few seconds: the renewal, answered by a second `session`, comes
    // well before its end.
    await Promise.race([second, new Promise((_, reject) => setTimeout(() => reject(new Error('no renewal in time')), WAIT))]);
    const auth = sent.filter((f) => f.type === 'auth');
    if (asked !== 1 || auth.length !== 1 || auth[0].data.token !== FRESH_TOKEN) throw new Error(`renewal: asked ${asked} times, auth frames ${JSON.stringify(auth.map((a) => a.type))}`);
    if (sessions.length < 2) throw new Error('no session frame answered the in-band auth');
    const stored = await page.evaluate(() => localStorage.getItem('chat.token'));
    if (stored !== FRESH_TOKEN) throw new Error('the fresh token was not kept for reconnects');
    await page.fill('#input', 'Still here after the renewal');
    await page.click('#send');
    await page.waitForSelector('.msg[data-role="user"][data-status="sent"] >> text=Still here after the renewal', { timeout: WAIT });
    await ctx.close();
  });

  const chat = await userCtx.newPage();
  watch(chat, 'chat');
  let chatId = null;

  await step('the user chats; the XSS payload is shown as text', async () => {
    await chat.goto(`${BASE}/?token=${USER_TOKEN}`);
    await chat.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await chat.fill('#input', XSS);
    await chat.click('#send');
    await chat.waitForSelector('.msg[data-role="assistant"][data-status="complete"]', { timeout: WAIT });
    const text = await chat.locator('.msg[data-role="user"] .body').first().textContent();
    if (text !== XSS) throw new Error(`the message shows as ${JSON.stringify(text)}`);
    await noInjectedMarkup(chat, 'chat page');
  });

  await step('replies render markdown as elements, links only to http(s), user text as typed', async () => {
    const md = 'Say **bold**, `code` and _soft_ with [a link](https://example.com/x) or [bad](javascript:alert(1))';
    await chat.fill('#input', md);
    await chat.click('#send');
    const reply = chat.locator('.msg[data-role="assistant"][data-status="complete"]').last();
    await chat.waitForFunction(() => {
      const all = document.querySelectorAll('.msg[data-role="assistant"][data-status="complete"]');
      return all.length >= 2 && all[all.length - 1].querySelector('.body strong');
    }, null, { timeout: WAIT });
    const got = await reply.evaluate((el) => {
      const body = el.querySelector('.body');
      return {
        strong: [...body.querySelectorAll('strong')].map((e) => e.textContent),
        code: [...body.querySelectorAll('code')].map((e) => e.textContent),
        em: [...body.querySelectorAll('em')].map((e) => e.textContent),
        links: [...body.querySelectorAll('a')].map((a) => a.getAttribute('href')),
        text: body.textContent,
      };
    });
    const ok = got.strong.includes('bold') && got.code.includes('code') && got.em.includes('soft')
      && got.links.length === 1 && got.links[0] === 'https://example.com/x' && got.text.includes('[bad](javascript:alert(1))');
    if (!ok) throw new Error(`the markdown rendered as ${JSON.stringify(got)}`);
    const mine = await chat.locator('.msg[data-role="user"] .body').last().textContent();
    if (mine !== md) throw new Error(`the user's own text shows as ${JSON.stringify(mine)}`);
  });

  await step('the user asks for a person from the menu', async () => {
    await chat.click('#menu summary');
    await chat.click('#help');
    await chat.waitForSelector('.note >> text=A person has been asked to join this chat.', { timeout: WAIT });
    await chat.waitForSelector('#help[disabled]', { state: 'attached', timeout: WAIT });
    await shot(chat, '01-chat-help');
  });

  await step('the sessions page lists the session and opens it again', async () => {
    const list = await userCtx.newPage();
    watch(list, 'sessions');
    await list.goto(`${BASE}/sessions.html`);
    const item = list.locator('#sessions li.session').first();
    await item.waitFor({ timeout: WAIT });
    const title = await item.locator('.title').textContent();
    if (!title.startsWith('<img src=x')) throw new Error(`the session's title shows as ${JSON.stringify(title)}`);
    const count = await item.locator('.count').textContent();
    if (count !== '4 messages') throw new Error(`message count shows as ${JSON.stringify(count)}`);
    await noInjectedMarkup(list, 'sessions page');
    chatId = await item.getAttribute('data-chat-id');
    await shot(list, '02-sessions');
    await list.setViewportSize({ width: 390, height: 844 });
    const wide = await list.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) throw new Error(`the sessions page is ${wide}px wide at 390px`);
    await shot(list, '03-sessions-phone');
    await list.setViewportSize({ width: 1280, height: 800 });
    await item.locator('a').click();
    await list.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await list.waitForFunction((xss) => [...document.querySelectorAll('.msg[data-role="user"] .body')].some((b) => b.textContent === xss), XSS, { timeout: WAIT });
    if (new URL(list.url()).searchParams.has('chat')) throw new Error('the chat id stayed in the address bar');
    await list.close();
  });

  const admin = await adminCtx.newPage();
  watch(admin, 'admin');
  await step('the admin page shows the session, the help request and the usage, live', async () => {
    await admin.goto(`${BASE}/admin.html?token=${ADMIN_TOKEN}`);
    await admin.waitForSelector('#feed-state[data-state="live"]', { timeout: WAIT });
    await admin.waitForSelector(`#sessions-table tr[data-chat-id="${chatId}"]`, { timeout: WAIT });
    await admin.waitForSelector(`#help-table tr[data-chat-id="${chatId}"]`, { timeout: WAIT });
    await admin.waitForSelector('#usage-table tbody tr >> text=alice', { timeout: WAIT });
    await noInjectedMarkup(admin, 'admin page');
    // A new message in the session reaches the list through the live feed.
    const before = await admin.locator(`#sessions-table tr[data-chat-id="${chatId}"] td`).nth(5).textContent();
    await chat.fill('#input', 'One more question');
    await chat.click('#send');
    await admin.waitForFunction(([id, was]) => {
      const row = document.querySelector(`#sessions-table tr[data-chat-id="${id}"]`);
      return row && row.cells[5].textContent !== was;
    }, [chatId, before], { timeout: WAIT });
    await chat.waitForFunction(() => document.querySelectorAll('.msg[data-role="assistant"][data-status="complete"]').length >= 2, null, { timeout: WAIT });
    // Filters: only sessions that need help, then a user with none.
    await admin.check('#f-needs-help');
    await admin.waitForSelector(`#sessions-table tr[data-chat-id="${chatId}"]`, { timeout: WAIT });
    await admin.fill('#f-user', 'nobody-here');
    await admin.dispatchEvent('#filters', 'change');
    await admin.waitForSelector('#sessions-state >> text=No session matches.', { timeout: WAIT });
    await admin.fill('#f-user', '');
    await admin.uncheck('#f-needs-help');
    await admin.waitForSelector(`#sessions-table tr[data-chat-id="${chatId}"]`, { timeout: WAIT });
    await shot(admin, '04-admin');
  });

  await step('the admin takes the session over and the user sees it', async () => {
    await admin.click(`#help-table tr[data-chat-id="${chatId}"] button >> text=Open`);
    await admin.waitForSelector('#detail:not([hidden])', { timeout: WAIT });
    await admin.waitForFunction((xss) => [...document.querySelectorAll('#transcript .line[data-role="user"]')].some((l) => l.textContent.includes(xss)), XSS, { timeout: WAIT });
    await admin.click('#takeover');
    await admin.waitForSelector('#release:not([hidden])', { timeout: WAIT });
    await chat.waitForSelector('.note >> text=/a human operator\\) joined the chat/', { timeout: WAIT });
    // Taking over answered the help request: the queue empties.
    await admin.waitForSelector(`#help-table tr[data-chat-id="${chatId}"]`, { state: 'detached', timeout: WAIT });
  });

  await step('the admin talks to the user as the operator', async () => {
    await admin.fill('#operator-input', 'Hello, I am a person.');
    await admin.click('#operator-send');
    await chat.waitForSelector('.msg[data-role="admin"] .body >> text=Hello, I am a person.', { timeout: WAIT });
    await admin.waitForSelector('#transcript .line[data-role="admin"] >> text=Hello, I am a person.', { timeout: WAIT });
    await chat.fill('#input', 'Thank you!');
    await chat.click('#send');
    await admin.waitForSelector('#transcript .line[data-role="user"] >> text=Thank you!', { timeout: WAIT });
    await shot(admin, '05-admin-takeover');
    await shot(chat, '06-chat-operator');
  });

  await step('the admin hands back; the assistant answers again', async () => {
    await admin.click('#release');
    await admin.waitForSelector('#takeover:not([hidden]):not([disabled])', { timeout: WAIT });
    await chat.waitForSelector('.note >> text=/left the chat; the assistant is back/', { timeout: WAIT });
    const replies = await chat.locator('.msg[data-role="assistant"][data-status="complete"]').count();
    await chat.fill('#input', 'Are you back?');
    await chat.click('#send');
    await chat.waitForFunction((n) => document.querySelectorAll('.msg[data-role="assistant"][data-status="complete"]').length > n, replies, { timeout: WAIT });
  });

  await step('the admin page at phone width', async () => {
    await admin.setViewportSize({ width: 390, height: 844 });
    const wide = await admin.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) throw new Error(`the admin page is ${wide}px wide at 390px`);
    await shot(admin, '07-admin-phone');
  });

  await step('a long chat shows its last 50 messages and loads older ones on scroll', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const long = await ctx.newPage();
    watch(long, 'long chat');
    await long.goto(`${BASE}/?token=${LONG_TOKEN}`);
    await long.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await long.waitForFunction(() => document.querySelectorAll('#messages .msg[data-seq]').length === 50, null, { timeout: WAIT });
    const top = await long.evaluate(() => document.querySelector('#messages .msg[data-seq]').dataset.id);
    await long.evaluate(() => { document.getElementById('messages').scrollTop = 0; });
    await long.waitForFunction(() => document.querySelectorAll('#messages .msg[data-seq]').length === 72, null, { timeout: WAIT });
    await long.waitForSelector('.note >> text=The beginning of this chat.', { timeout: WAIT });
    const view = await long.evaluate((id) => {
      const seqs = [...document.querySelectorAll('#messages .msg[data-seq]')].map((m) => Number(m.dataset.seq));
      const box = document.getElementById('messages').getBoundingClientRect();
      const was = document.querySelector(`#messages .msg[data-id="${id}"]`).getBoundingClientRect();
      return { ordered: seqs.every((s, i) => i === 0 || s > seqs[i - 1]), scrollTop: document.getElementById('messages').scrollTop, visible: was.bottom > box.top && was.top < box.bottom };
    }, top);
    if (!view.ordered) throw new Error('older messages are out of order');
    if (!(view.scrollTop > 0 && view.visible)) throw new Error(`the view jumped when older messages came: ${JSON.stringify(view)}`);
    await shot(long, '08-older-messages');
    await ctx.close();
  });
});
