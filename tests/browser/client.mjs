// The embeddable client module (/chat-client.js) in a real headless Chromium, against a stack on
// the demo model: connect, send and get the streamed reply, lose the socket with a message
// unsent, see it sent again after the reconnect and stored once, no event twice, and the token
// renewed in-band through `getToken`. Started by tests/tests/browser.rs:
//
//   node client.mjs BASE_URL SHORT_TOKEN FRESH_TOKEN
//
// Environment: CHROMIUM. Exits 0 when every step passed, 1 naming the step that failed.

import { chromium } from 'playwright-core';

import { harness } from './harness.mjs';

const [BASE, SHORT_TOKEN, FRESH_TOKEN] = process.argv.slice(2);
const { CHROMIUM = '/usr/bin/chromium' } = process.env;
if (!BASE || !SHORT_TOKEN || !FRESH_TOKEN) {
  console.error('usage: node client.mjs http://HOST:PORT SHORT_TOKEN FRESH_TOKEN');
  process.exit(2);
}
const { log, step, watch, run } = harness();

const browser = await chromium.launch({ executablePath: CHROMIUM });
await run(browser, 'the client module keeps its delivery guarantees', async () => {
  const page = await browser.newPage();
  watch(page, 'client');
  const sent = [];
  page.on('websocket', (ws) => ws.on('framesent', (f) => { try { sent.push(JSON.parse(f.payload)); } catch { /* binary */ } }));
  // Any page of the site gives the module its origin (the CSP allows scripts from it).
  await page.goto(`${BASE}/sessions.html`);

  let result;
  await step('connect, send, reconnect with a message unsent, renew the token', async () => {
    result = await page.evaluate(async ({ token, fresh }) => {
      const { ChatClient } = await import('/chat-client.js');
      const events = [];
      const chat = new ChatClient({ token, getToken: async () => fresh });
      window.__chat = chat;
      for (const type of ['session', 'message', 'chunk', 'status', 'error', 'ack']) {
        chat.addEventListener(type, (e) => events.push({ type, detail: e.detail }));
      }
      const next = (type, pred = () => true, ms = 15_000) => new Promise((resolve, reject) => {
        const seen = events.find((e) => e.type === type && pred(e.detail));
        if (seen) { resolve(seen.detail); return; }
        const timer = setTimeout(() => reject(new Error(`no ${type} in time`)), ms);
        const handler = (e) => {
          if (!pred(e.detail)) return;
          clearTimeout(timer);
          chat.removeEventListener(type, handler);
          resolve(e.detail);
        };
        chat.addEventListener(type, handler);
      });
      const replyTo = (text) => next('message', (d) => d.message.role === 'assistant' && d.message.status === 'complete' && d.message.content.includes(text));
      const session = await chat.connect();
      const first = await chat.send('hello from the module');
      await replyTo('hello from the module');
      const chunks = events.filter((e) => e.type === 'chunk').length;
      // The socket drops; a message sent meanwhile waits in the outbox.
      chat.socket.close(4000, 'test: drop');
      const pending = chat.send('sent while away', { chatId: first.chatId });
      const again = await pending;
      await replyTo('sent while away');
      // The token is short: a fresh one comes through getToken, in-band.
      await next('session', () => chat.token === fresh, 20_000);
      chat.close();
      const messages = events.filter((e) => e.type === 'message').map((e) => e.detail.message.id);
      const statuses = events.filter((e) => e.type === 'status').map((e) => e.detail.state);
      return {
        userId: session.userId, first, again, chunks, statuses,
        duplicates: messages.filter((id, i) => messages.indexOf(id) !== i),
        messages: messages.length, outbox: chat.outbox.size, token: chat.token === fresh,
      };
    }, { token: SHORT_TOKEN, fresh: FRESH_TOKEN });
    log(`  ${JSON.stringify(result)}`);
  });

  await step('what the module saw keeps the guarantees', async () => {
    const r = result;
    if (r.first.duplicate !== false || r.again.duplicate !== false) throw new Error('a send was acked as a duplicate');
    if (r.again.chatId !== r.first.chatId) throw new Error('the second message went to another chat');
    if (!(r.chunks > 0)) throw new Error('no chunks streamed');
    if (r.duplicates.length) throw new Error(`messages delivered twice: ${r.duplicates}`);
    if (r.messages !== 4) throw new Error(`expected 4 messages (2 sent, 2 replies), saw ${r.messages}`);
    if (!r.statuses.includes('reconnecting') || r.statuses[r.statuses.length - 1] !== 'closed') throw new Error(`statuses: ${r.statuses}`);
    if (!r.token) throw new Error('the token was not renewed');
    const auth = sent.filter((f) => f.type === 'auth');
    if (auth.length !== 1 || auth[0].data.token !== FRESH_TOKEN) throw new Error(`auth frames sent: ${auth.length}`);
    const messages = sent.filter((f) => f.type === 'message' && f.data.content === 'sent while away');
    log(`  "sent while away" went out ${messages.length} time(s), ids ${[...new Set(messages.map((m) => m.data.messageId))].length}`);
    if (new Set(messages.map((m) => m.data.messageId)).size !== 1) throw new Error('the resend used another messageId');
  });
});
