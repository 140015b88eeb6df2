// The live page left open under load: samples the page's DOM nodes, JS heap and event
// listeners (Chrome DevTools Protocol metrics, after a forced garbage collection) every
// 10 s for the given number of seconds, and prints them. Not a test: run by hand beside
// traffic (e.g. `ringfence bench --target URL ...`), it shows whether the page stays bounded.
//   node live-soak.mjs <base-url> <screenshot-dir> <seconds>
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('live-soak.mjs');
const seconds = Number(rest[0] || 600);
const browser = await launch();
try {
  const page = await openDashboard(browser, base, '#/live');
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  await cdp.send('HeapProfiler.enable');
  const samples = [];
  const started = Date.now();
  while (Date.now() - started < seconds * 1000) {
    await page.waitForTimeout(10_000);
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    const rows = await page.evaluate(() => document.querySelectorAll('#live-rows tr').length);
    const tps = await page.textContent('[data-card=tps]');
    const s = {
      t: Math.round((Date.now() - started) / 1000),
      nodes: m.Nodes,
      heap_mb: +(m.JSHeapUsedSize / 1e6).toFixed(2),
      listeners: m.JSEventListeners,
      rows,
      tps,
    };
    samples.push(s);
    step(JSON.stringify(s));
  }
  await shot(page, shots, 'live-soak');
  page.assertNoErrors();
  result({ samples });
} finally {
  await browser.close();
}
