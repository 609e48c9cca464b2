// What the browser runs (media.mjs, pages.mjs) share: timed log lines, named steps, the problems
// pages report (console errors, uncaught exceptions, dialogs), and one ending: "PASS: ..." and
// exit 0, or "FAIL: <step>: <error>" and exit 1, the browser closed either way.

export function harness() {
  const t0 = Date.now();
  const problems = [];
  let current = '(start)';
  const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);
  return {
    log,
    problems,
    async step(name, fn) {
      current = name;
      log(`STEP ${name}`);
      await fn();
    },
    watch(page, label) {
      page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`[${label}] console.error: ${msg.text()}`); });
      page.on('pageerror', (err) => problems.push(`[${label}] uncaught: ${err.message}`));
      page.on('dialog', (d) => { problems.push(`[${label}] a dialog opened: ${d.message()}`); d.dismiss(); });
    },
    // Runs `body`, then checks no page reported a problem; exits the process.
    async run(browser, pass, body) {
      let failed = false;
      try {
        await body();
        current = 'no console errors, uncaught exceptions or dialogs';
        if (problems.length) throw new Error(problems.join('\n'));
        console.log(`PASS: ${pass}`);
      } catch (err) {
        failed = true;
        console.error(`FAIL: ${current}: ${err && err.stack ? err.stack : err}`);
      } finally {
        await browser.close();
      }
      process.exit(failed ? 1 : 0);
    },
  };
}
