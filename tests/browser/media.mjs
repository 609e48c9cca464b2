// Files and voice in the chat page, in a real headless Chromium whose fake microphone plays a
// real recording. Started by tests/tests/browser.rs, which runs a stack whose model, transcription
// and speech are the fake provider's, and checks what reached the provider afterwards:
//
//   node media.mjs 'http://127.0.0.1:PORT/?token=JWT'
//
// Environment: CHROMIUM (Debian's chromium), SHOT_DIR (screenshots media-*.png), VOICE_WAV (the
// file the fake microphone plays), HEARD (the transcript the fake provider answers).
//
// Steps: an image uploads with a progress bar and is sent and shown; spoken replies are turned on;
// a voice message is recorded (indicator shown), uploaded and sent, comes back with the
// transcript as its text and a player, and the reply comes with a player whose audio loads; the
// page fits a phone's width. Exits 0 when every step passed, 1 naming the step that failed.

import { chromium } from 'playwright-core';
import path from 'node:path';

import { harness } from './harness.mjs';

const URL_ARG = process.argv[2];
const { CHROMIUM = '/usr/bin/chromium', SHOT_DIR = '/tmp', VOICE_WAV, HEARD } = process.env;
if (!URL_ARG || !VOICE_WAV || !HEARD) {
  console.error('usage: VOICE_WAV=file.wav HEARD="transcript" node media.mjs "http://HOST:PORT/?token=JWT"');
  process.exit(2);
}
const PNG = Buffer.from(
  '89504e470d0a1a0a0000000d4948445200000001000000010806000000' +
  '1f15c4890000000d49444154789c63f80f00000101000518d84e0000000049454e44ae426082', 'hex');
const WAIT = 20_000;
const { log, step, watch, run } = harness();

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${VOICE_WAV}`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
await run(browser, 'files and voice work in the page', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(['microphone'], { origin: new URL(URL_ARG).origin });
  const page = await context.newPage();
  watch(page, 'chat');
  const shot = async (name) => {
    const file = path.join(SHOT_DIR, `media-${name}.png`);
    await page.screenshot({ path: file });
    log(`  screenshot ${file}`);
  };

  await step('open the page: connected, with attach, record and speak controls', async () => {
    await page.goto(URL_ARG);
    await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
    await page.waitForSelector('#attach:not([hidden])', { timeout: WAIT });
    await page.waitForSelector('#record:not([hidden])', { timeout: WAIT });
    await page.waitForSelector('#speak:not([hidden])', { timeout: WAIT });
  });

  await step('upload an image: a progress bar, then ready', async () => {
    // Every state the tray goes through, as the page renders it.
    await page.evaluate(() => {
      window.__tray = [];
      new MutationObserver(() => {
        for (const li of document.querySelectorAll('#tray .upload')) {
          window.__tray.push({ state: li.dataset.state, progress: !!li.querySelector('progress') });
        }
      }).observe(document.getElementById('tray'), { subtree: true, childList: true, attributes: true });
    });
    await page.setInputFiles('#file-input', { name: 'dot.png', mimeType: 'image/png', buffer: PNG });
    await page.waitForSelector('#tray .upload[data-state="done"]', { timeout: WAIT });
    const seen = await page.evaluate(() => window.__tray);
    if (!seen.some((s) => s.state === 'uploading' && s.progress)) throw new Error(`no progress bar shown: ${JSON.stringify(seen)}`);
  });

  await step('send it with a question: the bubble shows the image, the reply completes', async () => {
    await page.fill('#input', 'What is in the picture?');
    await page.click('#send');
    const img = await page.waitForSelector('.msg[data-role="user"][data-status="sent"] .files img', { timeout: WAIT });
    await page.waitForFunction((el) => el.complete && el.naturalWidth === 1, img, { timeout: WAIT });
    await page.waitForSelector('.msg[data-role="assistant"][data-status="complete"]', { timeout: WAIT });
    if (!(await page.isHidden('#tray'))) throw new Error('the tray was not emptied by sending');
    await shot('01-image');
  });

  await step('turn spoken replies on', async () => {
    await page.click('#speak');
    await page.waitForSelector('#speak[aria-pressed="true"]', { timeout: WAIT });
  });

  await step('record a voice message: the indicator counts, the button says stop', async () => {
    await page.click('#record');
    await page.waitForSelector('#recording:not([hidden])', { timeout: WAIT });
    await page.waitForSelector('#record[aria-pressed="true"]', { timeout: WAIT });
    // The recording's own length: the fake microphone plays the file meanwhile.
    await page.waitForFunction(() => /Recording 0:0[2-9]/.test(document.getElementById('recording').textContent), null, { timeout: WAIT });
    await shot('02-recording');
    await page.click('#record');
    await page.waitForSelector('#recording[hidden]', { state: 'attached', timeout: WAIT });
  });

  await step('the voice message comes back as its transcript, with a player', async () => {
    await page.waitForFunction((heard) => [...document.querySelectorAll('.msg[data-role="user"][data-status="sent"]')]
      .some((m) => m.querySelector('.body').textContent === heard && m.querySelector('.files audio')), HEARD, { timeout: WAIT });
  });

  await step('the reply is spoken: its player loads the audio', async () => {
    const replies = '.msg[data-role="assistant"][data-status="complete"]';
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length >= 2, replies, { timeout: WAIT });
    const audio = page.locator(replies).last().locator('.files audio');
    await audio.waitFor({ timeout: WAIT });
    const duration = await audio.evaluate((a) => new Promise((resolve) => {
      if (a.readyState >= 1) { resolve(a.duration); return; }
      a.addEventListener('loadedmetadata', () => resolve(a.duration), { once: true });
      a.addEventListener('error', () => resolve(-1), { once: true });
      a.load();
    }));
    if (!(duration > 0.5)) throw new Error(`the spoken reply did not load (duration ${duration})`);
    log(`  spoken reply: ${duration.toFixed(2)} s`);
    await shot('03-voice');
  });

  await step('phone width: nothing overflows, the composer keeps its controls', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const widest = await page.evaluate(() => document.documentElement.scrollWidth);
    if (widest > 390) throw new Error(`the page is ${widest}px wide at 390px`);
    for (const id of ['#attach', '#record', '#send']) {
      const box = await page.locator(id).boundingBox();
      if (!box || box.x < 0 || box.x + box.width > 390) throw new Error(`${id} is off screen: ${JSON.stringify(box)}`);
    }
    await shot('04-phone');
  });
});
