// End-to-end check of the chat page (ws-edge/src/web/chat.html) in a real headless Chromium,
// against a running `chatctl dev`. Normally started by ./run.sh, which builds and starts the
// stack and passes the demo user's URL:
//
//   node check.mjs 'http://127.0.0.1:PORT/?token=JWT'
//
// Environment: CHROMIUM (default /usr/bin/chromium), SHOT_DIR (default /tmp; screenshots are
// written as browser-check-*.png), FRAMES_LOG (default $SHOT_DIR/browser-check-frames.log: every
// WebSocket frame the pages sent and received), SKIP_STOP=1 to leave out the Stop step.
//
// Exits 0 when every check passed, 1 with a "FAIL: ..." line naming the failed step otherwise.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const URL_ARG = process.argv[2] || process.env.CHAT_URL;
if (!URL_ARG || !/^https?:\/\/.+[?&]token=/.test(URL_ARG)) {
  console.error('usage: node check.mjs "http://HOST:PORT/?token=JWT"  (the `open:` URL chatctl dev prints)');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOT_DIR = process.env.SHOT_DIR || '/tmp';
const FRAMES_LOG = process.env.FRAMES_LOG || path.join(SHOT_DIR, 'browser-check-frames.log');
const ORIGIN = new URL(URL_ARG).origin;
const HELLO = 'Hello from the browser';
const T = { connect: 15_000, reply: 30_000, short: 5_000 };

// ---------- bookkeeping ----------
const problems = { console: [], external: [], serverNotes: [] };
const frames = []; // {t, page, dir, frame}
const t0 = Date.now();
let currentStep = '(start)';
const shots = [];
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);

class CheckError extends Error {}
class ServerBug extends Error {}
function expect(cond, message) { if (!cond) throw new CheckError(message); }
function expectServer(cond, message) { if (!cond) throw new ServerBug(message); }

function watch(page, label) {
  page.on('console', (msg) => {
    // The offline step sends sockets to a closed port on purpose.
    if (msg.type() === 'error' && !msg.text().includes('ws://127.0.0.1:9/')) {
      const loc = msg.location();
      problems.console.push(`[${label}] console.error: ${msg.text()}${loc && loc.url ? ` (${loc.url})` : ''}`);
    }
  });
  page.on('pageerror', (err) => problems.console.push(`[${label}] uncaught exception: ${err.message}`));
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith(ORIGIN) && !u.startsWith(ORIGIN.replace(/^http/, 'ws')) && !u.startsWith('data:')) {
      problems.external.push(`[${label}] ${req.method()} ${u}`);
    }
  });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.console.push(`[${label}] HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
  });
  page.on('websocket', (ws) => {
    const rec = (dir) => (ev) => {
      let frame;
      try { frame = JSON.parse(typeof ev.payload === 'string' ? ev.payload : ev.payload.toString()); } catch { frame = { raw: String(ev.payload) }; }
      frames.push({ t: Date.now() - t0, page: label, url: ws.url(), dir, frame });
    };
    ws.on('framesent', rec('sent'));
    ws.on('framereceived', rec('recv'));
    ws.on('close', () => frames.push({ t: Date.now() - t0, page: label, url: ws.url(), dir: 'close', frame: null }));
  });
}
const recv = (label, type) => frames.filter((f) => f.page === label && f.dir === 'recv' && f.frame && f.frame.type === type);
const sent = (label, type) => frames.filter((f) => f.page === label && f.dir === 'sent' && f.frame && f.frame.type === type);

async function shot(page, name) {
  const file = path.join(SHOT_DIR, `browser-check-${name}.png`);
  await page.screenshot({ path: file });
  shots.push(file);
  log(`  screenshot ${file}`);
}

async function step(name, fn) {
  currentStep = name;
  log(`STEP ${name}`);
  await fn();
  log(`  ok`);
}

// Text of the bubbles currently on the page, for messages and debugging.
const bubbles = (page) => page.$$eval('#messages .msg', (els) => els.map((e) => ({
  role: e.dataset.role, status: e.dataset.status, id: e.dataset.id, seq: e.dataset.seq,
  text: e.querySelector('.body') ? e.querySelector('.body').textContent : '',
  meta: e.querySelector('.meta') ? e.querySelector('.meta').textContent : '',
})));

async function waitConnected(page) {
  try {
    await page.waitForSelector('#status[data-state="connected"], #status[data-state="auth-failed"]', { timeout: T.connect });
    const state = await page.$eval('#status', (e) => e.dataset.state);
    if (state !== 'connected') throw new Error(state);
  } catch {
    const st = await page.$eval('#status', (e) => `${e.dataset.state} / "${e.textContent}"`).catch(() => '?');
    throw new CheckError(`status did not reach connected within ${T.connect} ms (it shows ${st})`);
  }
  const text = await page.$eval('#status', (e) => e.textContent.trim());
  expect(/connected/i.test(text), `#status is data-state=connected but reads "${text}"`);
  expect(await page.isVisible('#status'), '#status is not visible');
}

// Waits for an assistant bubble whose final status is `status`, with text matching `re`, that is
// not one of `exclude` (server ids). Returns {id, text}.
async function waitAssistant(page, status, re, exclude = [], timeout = T.reply) {
  const handle = await page.waitForFunction(({ status, src, exclude }) => {
    const re = new RegExp(src, 'i');
    for (const e of document.querySelectorAll('#messages .msg[data-role="assistant"]')) {
      const text = e.querySelector('.body').textContent;
      if (e.dataset.status === status && re.test(text) && !exclude.includes(e.dataset.id)) return { id: e.dataset.id, text };
    }
    return null;
  }, { status, src: re.source, exclude }, { timeout, polling: 50 }).catch(() => null);
  if (!handle) {
    throw new CheckError(`no assistant bubble with data-status=${status} matching ${re} within ${timeout} ms; bubbles: ${JSON.stringify(await bubbles(page))}`);
  }
  return handle.jsonValue();
}

// Protocol checks on the frames of one reply (by assistant message id) seen by page `label`.
function checkReplyFrames(label, chatId, replyId, expectStatus) {
  const chunks = recv(label, 'message_chunk').filter((f) => f.frame.data && f.frame.data.messageId === replyId);
  const finals = recv(label, 'message').filter((f) => f.frame.data && f.frame.data.message && f.frame.data.message.id === replyId);
  expectServer(finals.length === 1, `expected exactly one final "message" frame for reply ${replyId}, got ${finals.length}`);
  const fin = finals[0];
  const m = fin.frame.data.message;
  expectServer(m.role === 'assistant', `final message role is ${m.role}, expected assistant`);
  expectServer(m.status === expectStatus, `final message status is ${m.status}, expected ${expectStatus}`);
  expectServer(m.chatId === chatId && fin.frame.data.chatId === chatId, `final message chatId ${m.chatId}/${fin.frame.data.chatId}, expected ${chatId}`);
  expectServer(typeof m.seq === 'number' && fin.frame.seq === m.seq, `final message seq: frame.seq=${fin.frame.seq} message.seq=${m.seq}`);
  expectServer(typeof fin.frame.timestamp === 'number', 'final message frame has no numeric timestamp');
  if (expectStatus === 'complete') expectServer(chunks.length > 0, `no message_chunk frames for reply ${replyId}`);
  chunks.forEach((c, i) => expectServer(c.frame.data.index === i,
    `chunk #${i} of reply ${replyId} has index ${c.frame.data.index} (expected 0,1,2,... in order)`));
  const joined = chunks.map((c) => c.frame.data.delta).join('');
  if (expectStatus === 'complete') {
    expectServer(joined === m.content, `concatenated deltas differ from the final content:\n    deltas:  ${JSON.stringify(joined)}\n    content: ${JSON.stringify(m.content)}`);
  } else {
    expectServer(m.content.startsWith(joined) || joined.startsWith(m.content),
      `stopped reply: final content ${JSON.stringify(m.content)} is not consistent with the streamed deltas ${JSON.stringify(joined)}`);
  }
  const late = chunks.filter((c) => c.t > fin.t);
  expectServer(late.length === 0, `${late.length} message_chunk frame(s) arrived after the final message of reply ${replyId}`);
  const typing = recv(label, 'typing').filter((f) => f.frame.data.chatId === chatId && f.frame.data.userId === 'assistant');
  const firstChunkT = chunks.length ? chunks[0].t : fin.t;
  expectServer(typing.some((f) => f.frame.data.isTyping === true && f.t <= firstChunkT),
    'no typing{userId:"assistant", isTyping:true} before the first chunk');
  return { chunks: chunks.length, content: m.content, seq: m.seq, final: fin };
}

async function waitTypingOff(label, chatId, after, timeout = T.short) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (recv(label, 'typing').some((f) => f.t >= after && f.frame.data.chatId === chatId && f.frame.data.userId === 'assistant' && f.frame.data.isTyping === false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new ServerBug(`no typing{userId:"assistant", isTyping:false} within ${timeout} ms after the final message (protocol: reply ends with typing false)`);
}

async function waitTitle(page) {
  const ok = await page.waitForFunction((hello) => {
    const t = document.querySelector('#title').textContent.replace(/…$/, '').trim();
    return t && t !== 'Chat' && t !== 'New chat' && hello.startsWith(t);
  }, HELLO, { timeout: T.short, polling: 100 }).catch(() => null);
  const title = await page.textContent('#title');
  expect(ok, `the header title is "${title}", expected the chat's name (from its first message, "${HELLO}")`);
  return title;
}

// ---------- the run ----------
for (const f of fs.readdirSync(SHOT_DIR)) {
  if (/^browser-check-.*\.png$/.test(f)) fs.rmSync(path.join(SHOT_DIR, f), { force: true });
}
let browser;
let failed = null;
let activePage = null;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  log(`chromium ${browser.version()} (${CHROMIUM}); page ${ORIGIN}`);

  // ===== desktop =====
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
  // Keep a handle on the page's sockets so a step can drop the connection like a flaky network;
  // while `__offline` is set (kept across reloads), new sockets go to a closed port.
  await ctx.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    Object.defineProperty(window, '__offline', {
      get: () => sessionStorage.getItem('check.offline') === '1',
      set: (v) => sessionStorage.setItem('check.offline', v ? '1' : '0'),
    });
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        super(window.__offline ? 'ws://127.0.0.1:9/' : url, protocols);
        window.__sockets.push(this);
      }
    };
  });
  const page = await ctx.newPage();
  activePage = page;
  watch(page, 'desktop');
  let chatId = null;
  let first = null;

  await step('open the page and wait for "connected"', async () => {
    const res = await page.goto(URL_ARG, { waitUntil: 'domcontentloaded' });
    expect(res && res.ok(), `GET ${ORIGIN}/ answered ${res && res.status()}`);
    await waitConnected(page);
    expect(!page.url().includes('token='), `the token is still in the address bar: ${page.url()}`);
    const wsUrls = [...new Set(frames.filter((f) => f.page === 'desktop').map((f) => f.url))];
    expect(wsUrls.every((u) => !u.includes('token=')), `the token appears in the WebSocket URL: ${wsUrls}`);
    const session = recv('desktop', 'session');
    expectServer(session.length === 1, `expected one session frame, got ${session.length}`);
    const s = session[0].frame.data;
    expectServer(s.userId === 'demo' && Array.isArray(s.models) && s.defaultModel, `session frame looks wrong: ${JSON.stringify(s)}`);
    expect((await page.textContent('#user')).includes(s.name || s.userId), '#user does not show the signed-in user');
    expect(await page.isVisible('#input') && await page.isVisible('#send'), '#input or #send not visible');
    await shot(page, '01-connected');
  });

  await step(`send "${HELLO}" and see the user bubble become sent`, async () => {
    await page.fill('#input', HELLO);
    await page.click('#send');
    expect((await page.inputValue('#input')) === '', '#input was not cleared after sending');
    await page.waitForSelector('#messages .msg[data-role="user"]', { timeout: T.short });
    await page.waitForFunction((hello) => [...document.querySelectorAll('#messages .msg[data-role="user"]')]
      .some((e) => e.dataset.status === 'sent' && e.querySelector('.body').textContent === hello), HELLO, { timeout: T.short, polling: 50 })
      .catch(async () => { throw new CheckError(`user bubble never became data-status=sent; bubbles: ${JSON.stringify(await bubbles(page))}`); });
    const users = (await bubbles(page)).filter((b) => b.role === 'user');
    expect(users.length === 1, `expected 1 user bubble, got ${users.length}: ${JSON.stringify(users)}`);
    const out = sent('desktop', 'message')[0];
    expect(out && out.frame.messageId && out.frame.data.messageId === out.frame.messageId && out.frame.data.content === HELLO,
      `the page's message frame looks wrong: ${JSON.stringify(out && out.frame)}`);
    const ack = recv('desktop', 'ack').find((f) => f.frame.data.messageId === out.frame.messageId);
    expectServer(ack, `no ack for messageId ${out.frame.messageId}`);
    expectServer(ack.frame.data.status === 'sent' && ack.frame.data.duplicate === false && typeof ack.frame.data.seq === 'number' && ack.frame.data.chatId && ack.frame.data.id,
      `ack looks wrong: ${JSON.stringify(ack.frame)}`);
    chatId = ack.frame.data.chatId;
    expect(users[0].id === ack.frame.data.id, `user bubble data-id ${users[0].id} != server id ${ack.frame.data.id}`);
    log(`  chat ${chatId}, user message ${ack.frame.data.id} seq ${ack.frame.data.seq}`);
  });

  await step('watch the reply stream (streaming bubble, typing indicator, Stop button)', async () => {
    const streaming = await page.waitForSelector('#messages .msg[data-role="assistant"][data-status="streaming"]', { timeout: T.reply, state: 'attached' })
      .catch(() => null);
    if (!streaming) { log('  (reply finished before a streaming bubble was seen; skipping the streaming look)'); return; }
    await page.waitForFunction(() => {
      const e = document.querySelector('#messages .msg[data-role="assistant"][data-status="streaming"] .body');
      return e && e.textContent.split(' ').length >= 4;
    }, null, { timeout: T.reply, polling: 30 }).catch(() => null);
    const who = await streaming.$eval('.who', (e) => e.textContent).catch(() => '');
    expect(who && who !== 'assistant', `the streaming bubble is labelled "${who}", not with the model's name`);
    const typingShown = await page.isVisible('#typing');
    const stopShown = await page.isVisible('#stop');
    const text = await streaming.$eval('.body', (e) => e.textContent).catch(() => '');
    log(`  mid-stream: typing indicator ${typingShown ? 'shown' : 'hidden'}, Stop ${stopShown ? 'shown' : 'hidden'}, text so far ${JSON.stringify(text)}`);
    await shot(page, '02-streaming');
    const status = await streaming.getAttribute('data-status').catch(() => null);
    if (status === 'streaming') {
      expect(typingShown, '#typing is hidden while a reply streams');
      expect(stopShown, '#stop is hidden while a reply streams');
    }
  });

  await step('wait for the complete assistant reply mentioning "demo"', async () => {
    first = await waitAssistant(page, 'complete', /demo/);
    expect(first.text.includes(HELLO), `the reply does not quote the message: ${JSON.stringify(first.text)}`);
    const r = checkReplyFrames('desktop', chatId, first.id, 'complete');
    expect(first.text === r.content, `bubble text differs from the final message content:\n    bubble:  ${JSON.stringify(first.text)}\n    content: ${JSON.stringify(r.content)}`);
    await waitTypingOff('desktop', chatId, r.final.t);
    await page.waitForSelector('#typing', { state: 'hidden', timeout: T.short })
      .catch(() => { throw new CheckError('#typing is still shown after the reply completed'); });
    await page.waitForSelector('#stop', { state: 'hidden', timeout: T.short })
      .catch(() => { throw new CheckError('#stop is still shown after the reply completed'); });
    const all = await bubbles(page);
    expect(all.length === 2, `expected 2 bubbles (user, assistant), got ${all.length}: ${JSON.stringify(all)}`);
    expect(all[0].role === 'user' && all[1].role === 'assistant', `bubbles out of order: ${JSON.stringify(all)}`);
    expect(all[0].status === 'sent', `user bubble status is ${all[0].status} after the reply, expected sent`);
    log(`  reply (${r.chunks} chunks, seq ${r.seq}): ${JSON.stringify(first.text)}`);
    log(`  title: ${JSON.stringify(await waitTitle(page))}`);
    await shot(page, '03-reply');
  });

  await step('reload: the page re-joins activeChatId and shows the history again', async () => {
    const before = frames.length;
    await page.reload({ waitUntil: 'domcontentloaded' });
    await waitConnected(page);
    const session = recv('desktop', 'session').filter((f) => frames.indexOf(f) >= before);
    expectServer(session.length === 1 && session[0].frame.data.activeChatId === chatId,
      `after reload the session frame's activeChatId is ${JSON.stringify(session[0] && session[0].frame.data.activeChatId)}, expected ${chatId}`);
    await page.waitForFunction((id) => document.querySelector(`#messages .msg[data-role="assistant"][data-id="${id}"][data-status="complete"]`), first.id, { timeout: T.short, polling: 50 })
      .catch(async () => { throw new CheckError(`history not shown after reload; bubbles: ${JSON.stringify(await bubbles(page))}`); });
    const join = sent('desktop', 'chat_update').filter((f) => frames.indexOf(f) >= before && f.frame.data.action === 'join');
    expect(join.length === 1 && join[0].frame.data.chatId === chatId, `expected one join of ${chatId} after reload, got ${JSON.stringify(join.map((f) => f.frame))}`);
    const hist = recv('desktop', 'history').filter((f) => frames.indexOf(f) >= before);
    expectServer(hist.length === 1 && hist[0].frame.data.chatId === chatId && hist[0].frame.data.messages.length === 2 && typeof hist[0].frame.data.lastSeq === 'number',
      `history after join looks wrong: ${JSON.stringify(hist.map((f) => f.frame))}`);
    const all = await bubbles(page);
    expect(all.length === 2, `expected 2 bubbles after reload, got ${all.length}: ${JSON.stringify(all)}`);
    expect(all[0].role === 'user' && all[0].text === HELLO && all[0].status === 'sent', `user bubble after reload: ${JSON.stringify(all[0])}`);
    expect(all[1].role === 'assistant' && all[1].text === first.text && all[1].status === 'complete', `assistant bubble after reload: ${JSON.stringify(all[1])}`);
    await waitTitle(page);
    await shot(page, '04-reloaded');
  });

  await step('keyboard and screen readers: skip link, labels, Enter to send, the reply busy until whole, Escape', async () => {
    // Just reloaded: the first Tab lands on the skip link, which leads to the message box.
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement.classList.contains('skip')), 'the first Tab does not reach the skip link');
    await page.keyboard.press('Enter');
    expect(await page.evaluate(() => document.activeElement.id) === 'input', 'the skip link does not move focus to #input');
    const unnamed = await page.evaluate(() => [...document.querySelectorAll('button, select, textarea, input, a[href], summary')]
      .filter((e) => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
      .filter((e) => !((e.getAttribute('aria-label') || '').trim() || (e.textContent || '').trim() || (e.title || '').trim() || (e.labels && e.labels.length)))
      .map((e) => e.outerHTML.slice(0, 80)));
    expect(unnamed.length === 0, `controls without an accessible name: ${JSON.stringify(unnamed)}`);
    const log = await page.$eval('#messages', (e) => ({ role: e.getAttribute('role'), label: e.getAttribute('aria-label'), tab: e.tabIndex }));
    expect(log.role === 'log' && log.label && log.tab === 0, `#messages is not a labelled, focusable log: ${JSON.stringify(log)}`);
    const live = await page.evaluate(() => ['status', 'notice', 'typing'].map((id) => {
      const e = document.getElementById(id);
      return e.getAttribute('role') || e.getAttribute('aria-live');
    }));
    expect(JSON.stringify(live) === JSON.stringify(['status', 'alert', 'polite']), `live regions: ${JSON.stringify(live)}`);
    // Typed and sent with the keyboard only; the streaming reply is aria-busy until it is whole.
    const text = 'Keyboard check: ' + Array.from({ length: 20 }, (_, i) => `key${i + 1}`).join(' ');
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
    const busy = await page.waitForSelector('#messages .msg[data-role="assistant"][data-status="streaming"][aria-busy="true"]', { timeout: T.reply, state: 'attached' })
      .catch(() => null);
    const res = await waitAssistant(page, 'complete', /Keyboard check/);
    const after = await page.$eval(`#messages .msg[data-id="${res.id}"]`, (e) => e.getAttribute('aria-busy'));
    expect(after === null, `the finished reply is still aria-busy=${after}`);
    if (!busy) log('  (the reply finished before a streaming bubble was seen: aria-busy while streaming not observed)');
    // Escape from the message box stops a streaming reply.
    const mark = Date.now() - t0;
    await page.keyboard.type('Please write a long answer: ' + Array.from({ length: 30 }, (_, i) => `esc${i + 1}`).join(' '));
    await page.keyboard.press('Enter');
    const streaming = await page.waitForSelector('#stop', { state: 'visible', timeout: T.reply }).catch(() => null);
    if (streaming) {
      await page.keyboard.press('Escape');
      await page.waitForFunction(() => !document.querySelector('#messages .msg[data-status="streaming"]'), null, { timeout: T.reply, polling: 50 });
      const stop = sent('desktop', 'stop').find((f) => f.t >= mark);
      expect(stop && stop.frame.data.chatId === chatId, 'Escape in the message box sent no stop frame while the reply streamed');
    } else {
      log('  (the reply finished before Stop was shown: Escape not exercised)');
      await waitAssistant(page, 'complete', /esc1/);
    }
    // The menu opens from the keyboard and Escape closes it, focus back on its button.
    await page.focus('#menu summary');
    await page.keyboard.press('Enter');
    expect(await page.$eval('#menu', (e) => e.open), 'Enter on the menu button did not open the menu');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Escape');
    const menu = await page.evaluate(() => ({ open: document.getElementById('menu').open, focus: document.activeElement.tagName }));
    expect(!menu.open && menu.focus === 'SUMMARY', `Escape left the menu ${JSON.stringify(menu)}`);
    await page.focus('#input');
  });

  if (process.env.SKIP_STOP !== '1') {
    await step('Stop a reply while it streams', async () => {
      const long = 'Please write a long answer: ' + Array.from({ length: 30 }, (_, i) => `word${i + 1}`).join(' ');
      const mark = Date.now() - t0;
      await page.fill('#input', long);
      await page.press('#input', 'Enter'); // Enter sends too
      const streaming = await page.waitForSelector('#messages .msg[data-role="assistant"][data-status="streaming"]', { timeout: T.reply })
        .catch(() => null);
      if (!streaming) { log('  (no streaming bubble seen; the reply was too fast to stop — skipped)'); return; }
      await page.waitForSelector('#stop', { state: 'visible', timeout: T.short })
        .catch(() => { throw new CheckError('#stop not visible while the reply streams'); });
      await page.waitForFunction(() => {
        const e = document.querySelector('#messages .msg[data-role="assistant"][data-status="streaming"] .body');
        return e && e.textContent.split(' ').length >= 5;
      }, null, { timeout: T.reply, polling: 30 }).catch(() => null);
      await page.click('#stop');
      const stopFrame = sent('desktop', 'stop').find((f) => f.t >= mark);
      expect(stopFrame && stopFrame.frame.data.chatId === chatId, `clicking Stop sent ${JSON.stringify(stopFrame && stopFrame.frame)}`);
      const id = await streaming.getAttribute('data-id');
      const handle = await page.waitForFunction((id) => {
        const e = document.querySelector(`#messages .msg[data-role="assistant"][data-id="${id}"]`);
        return e && e.dataset.status !== 'streaming' ? { status: e.dataset.status, text: e.querySelector('.body').textContent, state: e.querySelector('.state').textContent } : null;
      }, id, { timeout: T.reply, polling: 50 }).catch(() => null);
      expect(handle, `the reply ${id} never left data-status=streaming after Stop`);
      const res = await handle.jsonValue();
      if (res.status === 'complete') { log('  (the reply completed before the stop reached the server — Stop not verified)'); return; }
      expect(res.status === 'stopped', `after Stop the reply has data-status=${res.status}, expected stopped`);
      expect(/stopped/i.test(res.state), `the stopped reply shows no "stopped" label (shows "${res.state}")`);
      const r = checkReplyFrames('desktop', chatId, id, 'stopped');
      expect(res.text === r.content, `stopped bubble text ${JSON.stringify(res.text)} differs from the final content ${JSON.stringify(r.content)}`);
      await waitTypingOff('desktop', chatId, r.final.t);
      await page.waitForSelector('#stop', { state: 'hidden', timeout: T.short })
        .catch(() => { throw new CheckError('#stop still shown after the reply stopped'); });
      await page.waitForSelector('#typing', { state: 'hidden', timeout: T.short })
        .catch(() => { throw new CheckError('#typing still shown after the reply stopped'); });
      await new Promise((r) => setTimeout(r, 700)); // nothing may trickle in afterwards
      const after = await page.$eval(`#messages .msg[data-id="${id}"] .body`, (e) => e.textContent);
      expect(after === res.text, `the stopped reply kept changing: ${JSON.stringify(res.text)} -> ${JSON.stringify(after)}`);
      log(`  stopped after ${r.chunks} chunks: ${JSON.stringify(res.text)}`);
      await shot(page, '05-stopped');
    });
  }

  await step('drop the socket mid-reply: the page reconnects, resumes and shows the reply once', async () => {
    const text = 'Resume check: ' + Array.from({ length: 30 }, (_, i) => `item${i + 1}`).join(' ');
    const mark = frames.length;
    await page.fill('#input', text);
    await page.click('#send');
    const streaming = await page.waitForSelector('#messages .msg[data-role="assistant"][data-status="streaming"]', { timeout: T.reply }).catch(() => null);
    expect(streaming, 'no streaming bubble for the resume check');
    const id = await streaming.getAttribute('data-id');
    await page.waitForFunction(() => {
      const e = document.querySelector('#messages .msg[data-role="assistant"][data-status="streaming"] .body');
      return e && e.textContent.split(' ').length >= 4;
    }, null, { timeout: T.reply, polling: 20 });
    await page.evaluate(() => window.__sockets[window.__sockets.length - 1].close(4000, 'browser check: simulated drop'));
    await page.waitForSelector('#status:not([data-state="connected"])', { timeout: T.short })
      .catch(() => { throw new CheckError('the status still says connected after the socket closed'); });
    const st = await page.$eval('#status', (e) => e.textContent);
    log(`  after the drop the status reads "${st}"`);
    await shot(page, '06a-reconnecting');
    await waitConnected(page);
    const res = await waitAssistant(page, 'complete', /Resume check/);
    expect(res.id === id, `the resumed reply has id ${res.id}, the streaming one was ${id}`);
    const after = frames.slice(mark);
    const resume = after.filter((f) => f.page === 'desktop' && f.dir === 'sent' && f.frame.type === 'resume');
    expect(resume.length === 1, `expected one resume frame after reconnecting, got ${resume.length}`);
    const entry = resume[0].frame.data.chats && resume[0].frame.data.chats[0];
    expect(entry && entry.chatId === chatId && typeof entry.lastSeq === 'number', `resume frame looks wrong: ${JSON.stringify(resume[0].frame)}`);
    const chunks = after.filter((f) => f.page === 'desktop' && f.dir === 'recv' && f.frame.type === 'message_chunk' && f.frame.data.messageId === id);
    const idx = chunks.map((c) => c.frame.data.index);
    const dup = idx.filter((x, i) => idx.indexOf(x) !== i);
    expectServer(dup.length === 0, `chunk indices delivered twice across the reconnect: ${dup} (resume sent ${JSON.stringify(entry)})`);
    const finals = after.filter((f) => f.page === 'desktop' && f.dir === 'recv' && f.frame.type === 'message' && f.frame.data.message && f.frame.data.message.id === id);
    expectServer(finals.length === 1, `the final message of the resumed reply arrived ${finals.length} times`);
    const fin = finals[0].frame.data.message;
    if (entry.streaming) {
      expectServer(entry.streaming.messageId === id, `resume carried streaming ${JSON.stringify(entry.streaming)}, expected messageId ${id}`);
      const resumed = chunks.filter((c) => c.t > resume[0].t && c.t <= finals[0].t).map((c) => c.frame.data.index);
      const lastBefore = Math.max(-1, ...chunks.filter((c) => c.t < resume[0].t).map((c) => c.frame.data.index));
      // Everything up to lastIndex arrived before the drop; the rest must come exactly once after it.
      const got = new Set(idx);
      const n = Math.max(...idx) + 1;
      const missing = Array.from({ length: n }, (_, i) => i).filter((i) => !got.has(i));
      expectServer(missing.length === 0, `chunk indices missing across the reconnect: ${missing} (client had up to ${lastBefore}, resumed from lastIndex ${entry.streaming.lastIndex})`);
      expectServer(chunks.map((c) => c.frame.data.delta).join('') === fin.content || resumed.length === 0,
        'the deltas received across the reconnect do not add up to the final content');
      log(`  resumed streaming: lastIndex ${entry.streaming.lastIndex}, ${resumed.length} chunks after the resume, ${n} in all`);
    } else {
      log('  (the reply had finished before the page reconnected: resume replayed the final message only)');
    }
    const all = await bubbles(page);
    const mine = all.filter((b) => b.text === text);
    expect(mine.length === 1 && mine[0].status === 'sent', `the user message is shown ${mine.length} times after the reconnect: ${JSON.stringify(mine)}`);
    const replies = all.filter((b) => b.id === id);
    expect(replies.length === 1 && replies[0].text === fin.content, `the reply is shown ${replies.length} times or with the wrong text: ${JSON.stringify(replies)}`);
    const seqs = all.filter((b) => b.seq).map((b) => Number(b.seq));
    expect(seqs.every((x, i) => i === 0 || x > seqs[i - 1]), `bubbles are out of seq order: ${seqs}`);
    await page.waitForSelector('#typing', { state: 'hidden', timeout: T.short })
      .catch(() => { throw new CheckError('#typing still shown after the resumed reply completed'); });
    await shot(page, '06b-resumed');
  });

  await step('offline: two messages typed while the network is down survive a reload in IndexedDB and are delivered once each when it is back', async () => {
    await page.evaluate(() => { window.__offline = true; window.__sockets[window.__sockets.length - 1].close(4000, 'browser check: offline'); });
    await page.waitForSelector('#status:not([data-state="connected"])', { timeout: T.short })
      .catch(() => { throw new CheckError('the status still says connected while offline'); });
    const texts = ['Offline message one', 'Offline message two'];
    for (const t of texts) {
      await page.fill('#input', t);
      await page.click('#send');
    }
    const pending = (await bubbles(page)).filter((b) => texts.includes(b.text));
    expect(pending.length === 2 && pending.every((b) => b.status === 'pending'), `offline messages not shown as pending: ${JSON.stringify(pending)}`);
    const storedOutbox = () => page.evaluate(() => new Promise((resolve) => {
      const req = indexedDB.open('chat', 1);
      req.onsuccess = () => {
        const all = req.result.transaction('outbox', 'readonly').objectStore('outbox').getAll();
        all.onsuccess = () => { resolve(all.result.map((m) => m.content)); req.result.close(); };
      };
      req.onerror = () => resolve(null);
    }));
    // The writes are queued behind each other: read until both are there (a bounded number of reads).
    let saved = null;
    for (let i = 0; i < 50 && !(saved && texts.every((t) => saved.includes(t))); i += 1) saved = await storedOutbox();
    expect(saved && texts.every((t) => saved.includes(t)), `the outbox in IndexedDB holds ${JSON.stringify(saved)}`);
    // Reload while still offline: the page shows them again from IndexedDB.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForFunction((ts) => ts.every((t) => [...document.querySelectorAll('#messages .msg[data-status="pending"] .body')].some((b) => b.textContent === t)), texts, { timeout: T.short })
      .catch(() => { throw new CheckError('after a reload while offline the queued messages are not shown'); });
    await shot(page, '06c-offline');
    const mark = frames.length;
    await page.evaluate(() => { window.__offline = false; window.dispatchEvent(new Event('online')); });
    await waitConnected(page);
    for (const t of texts) await waitAssistant(page, 'complete', new RegExp(t));
    const shown = (await bubbles(page)).filter((b) => texts.includes(b.text));
    expect(shown.length === 2 && shown.every((b) => b.status === 'sent'), `after reconnecting the offline messages show as ${JSON.stringify(shown)}`);
    const sent = frames.slice(mark).filter((f) => f.page === 'desktop' && f.dir === 'sent' && f.frame.type === 'message');
    for (const t of texts) {
      const n = sent.filter((f) => f.frame.data.content === t).length;
      expect(n === 1, `"${t}" was sent ${n} times after reconnecting`);
    }
    const acks = frames.slice(mark).filter((f) => f.page === 'desktop' && f.dir === 'recv' && f.frame.type === 'ack');
    expectServer(acks.length >= 2 && acks.every((a) => a.frame.data.duplicate === false), `acks after reconnecting: ${JSON.stringify(acks.map((a) => a.frame.data))}`);
  });

  await step('dark colour scheme renders', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    await shot(page, '07-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  // ===== mobile =====
  const mctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const mpage = await mctx.newPage();
  activePage = mpage;
  watch(mpage, 'mobile');
  await step('mobile 390x844: history, layout, a second round trip', async () => {
    await mpage.goto(URL_ARG, { waitUntil: 'domcontentloaded' });
    await waitConnected(mpage);
    await mpage.waitForFunction((id) => document.querySelector(`#messages .msg[data-id="${id}"]`), first.id, { timeout: T.short })
      .catch(() => { throw new CheckError('mobile: the active chat\'s history is not shown'); });
    const layout = await mpage.evaluate(() => {
      const r = (sel) => { const b = document.querySelector(sel).getBoundingClientRect(); return { l: b.left, r: b.right, t: b.top, b: b.bottom, w: b.width, h: b.height }; };
      return {
        placeholderFits: (() => { const i = document.querySelector('#input'); return i.value !== '' || i.scrollHeight <= i.clientHeight + 1; })(),
        vw: window.innerWidth, vh: window.innerHeight, sw: document.documentElement.scrollWidth,
        input: r('#input'), send: r('#send'), status: r('#status'), header: r('header'),
        widest: Math.max(...[...document.querySelectorAll('#messages .msg')].map((e) => e.getBoundingClientRect().right)),
      };
    });
    log(`  layout: ${JSON.stringify(layout)}`);
    expect(layout.sw <= layout.vw, `horizontal overflow on mobile: scrollWidth ${layout.sw} > ${layout.vw}`);
    for (const k of ['input', 'send', 'status']) {
      const b = layout[k];
      expect(b.w > 0 && b.l >= 0 && b.r <= layout.vw + 0.5 && b.t >= 0 && b.b <= layout.vh + 0.5, `#${k} is not fully on screen on mobile: ${JSON.stringify(b)}`);
    }
    expect(layout.send.w >= 44 && layout.send.h >= 36, `#send is a small touch target on mobile: ${layout.send.w}x${layout.send.h}`);
    expect(layout.header.h <= 60, `the header wraps onto more than one row on mobile (${layout.header.h}px high)`);
    expect(layout.placeholderFits, `the #input placeholder does not fit the box on mobile`);
    expect(layout.widest <= layout.vw, `a bubble sticks out of the screen: right edge ${layout.widest} > ${layout.vw}`);
    await shot(mpage, '08-mobile-history');
    await mpage.fill('#input', 'And hello from a phone');
    await mpage.tap('#send');
    const s = await mpage.waitForSelector('#messages .msg[data-role="assistant"][data-status="streaming"]', { timeout: T.reply }).catch(() => null);
    if (s) {
      await mpage.waitForFunction(() => {
        const e = document.querySelector('#messages .msg[data-role="assistant"][data-status="streaming"] .body');
        return e && e.textContent.split(' ').length >= 6;
      }, null, { timeout: T.reply, polling: 30 }).catch(() => null);
      await shot(mpage, '09-mobile-streaming');
    }
    await waitAssistant(mpage, 'complete', /hello from a phone/);
    await mpage.waitForSelector('#messages .msg[data-role="user"][data-status="sent"] >> text=And hello from a phone', { timeout: T.short })
      .catch(() => { throw new CheckError('mobile: the user bubble did not become sent'); });
    const sw = await mpage.evaluate(() => document.documentElement.scrollWidth);
    expect(sw <= 390, `horizontal overflow on mobile after the reply: ${sw}`);
    await shot(mpage, '10-mobile-reply');
  });

  // The desktop page is still joined to the chat: it sees the phone's message and reply live.
  await step('the desktop tab saw the phone\'s round trip live', async () => {
    activePage = page;
    await waitAssistant(page, 'complete', /hello from a phone/, [], T.short);
    const users = (await bubbles(page)).filter((b) => b.role === 'user' && b.text === 'And hello from a phone');
    expect(users.length === 1 && users[0].status === 'sent', `desktop: the phone's message is shown ${users.length} times: ${JSON.stringify(users)}`);
  });

  await step('no console errors, no uncaught exceptions, no external requests', async () => {
    expect(problems.console.length === 0, `console errors:\n    ${problems.console.join('\n    ')}`);
    expect(problems.external.length === 0, `requests outside ${ORIGIN}:\n    ${problems.external.join('\n    ')}`);
    const errs = frames.filter((f) => f.dir === 'recv' && f.frame && f.frame.type === 'error');
    expect(errs.length === 0, `the server sent error frames: ${JSON.stringify(errs.map((f) => f.frame))}`);
  });
} catch (err) {
  failed = err;
  if (activePage) {
    const file = path.join(SHOT_DIR, 'browser-check-failure.png');
    await activePage.screenshot({ path: file }).then(() => shots.push(file)).catch(() => {});
  }
} finally {
  fs.writeFileSync(FRAMES_LOG, frames.map((f) => `${String(f.t).padStart(6)}ms ${f.page.padEnd(7)} ${f.dir.padEnd(5)} ${f.frame ? JSON.stringify(f.frame) : ''}`).join('\n') + '\n');
  if (browser) await browser.close().catch(() => {});
}

console.log(`\nframes: ${FRAMES_LOG} (${frames.length})`);
console.log(`screenshots:\n  ${shots.join('\n  ')}`);
if (failed) {
  const kind = failed instanceof ServerBug ? 'SERVER (protocol) problem' : failed instanceof CheckError ? 'page check failed' : 'error';
  console.error(`\nFAIL at step "${currentStep}": ${kind}: ${failed.message}`);
  if (!(failed instanceof CheckError) && !(failed instanceof ServerBug)) console.error(failed.stack);
  if (problems.console.length) console.error(`console errors so far:\n  ${problems.console.join('\n  ')}`);
  process.exit(1);
}
console.log('\nPASS: the chat page works end to end');
