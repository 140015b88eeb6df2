// The dashboard left open under demo traffic: does it stay responsive and bounded?
//
//   node crates/ringfence/tests/browser/soak.mjs <base-url> <screenshot-dir> [minutes]
//
// Run by `scripts/soak-dashboard` (10 minutes of `ringfence demo` traffic at 100,000
// transactions a minute), not by the test suite. The live page stays open with its feed and
// charts streaming; every 3 minutes the analyst also visits the other pages and comes back, so
// a page that leaks what it started (timers, sockets, listeners) on leaving shows up too.
// Every 30 s, after a forced garbage collection, Chromium's own counters are sampled (DOM
// nodes, event listeners, JS heap in use) with the time a click on the page takes to paint.
// The run fails when nodes or listeners keep growing from one tour to the next, the heap more
// than doubles, or a click takes over a second. The baseline is the first sample after the first
// tour: Chromium's node count still includes about one page's worth of nodes left by the last
// tour (freed, not yet swept), so only growth across later tours is a leak. (A leak this caught:
// uPlot charts never destroyed kept every visited live page, +6,000 nodes a tour.)
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('soak.mjs');
const minutes = Number(rest[0] || 10);
const browser = await launch();
const samples = [];
try {
  const page = await openDashboard(browser, base, '#/live');
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const started = Date.now();
  const end = started + minutes * 60_000;
  let nextTour = started + 3 * 60_000;
  let tours = 0;
  while (Date.now() < end) {
    await page.waitForTimeout(30_000);
    if (Date.now() >= nextTour) {
      for (const name of ['alerts', 'investigate', 'stores', 'rules', 'live']) {
        await page.click(`#nav a[data-page=${name}]`);
        await page.waitForTimeout(2_000);
      }
      nextTour += 3 * 60_000;
      tours += 1;
    }
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    // A click's round trip to the next painted frame: what an analyst feels.
    const clickMs = await page.evaluate(() => new Promise((resolve) => {
      const t0 = performance.now();
      document.querySelector('#nav a.active')?.dispatchEvent(new MouseEvent('mouseover', { bubbles: true }));
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
    }));
    const rows = await page.locator('#view tr').count();
    const s = {
      tours,
      minute: +((Date.now() - started) / 60_000).toFixed(1),
      nodes: m.Nodes,
      listeners: m.JSEventListeners,
      heap_mb: +(m.JSHeapUsedSize / 1048576).toFixed(1),
      click_ms: +clickMs.toFixed(1),
      rows,
    };
    samples.push(s);
    step(JSON.stringify(s));
  }
  await shot(page, shots, 'soak-live');
  page.assertNoErrors();
  const settled = samples.filter((s) => s.tours >= 1);
  assert.ok(settled.length >= 2 && settled[settled.length - 1].tours >= 3, 'the run was too short to judge (three tours needed)');
  const first = settled[0];
  const last = settled[settled.length - 1];
  const maxClick = Math.max(...samples.map((s) => s.click_ms));
  const verdict = {
    nodes: [first.nodes, last.nodes],
    listeners: [first.listeners, last.listeners],
    heap_mb: [first.heap_mb, last.heap_mb],
    max_click_ms: maxClick,
  };
  step(`verdict ${JSON.stringify(verdict)}`);
  assert.ok(last.nodes <= first.nodes * 1.25 + 200, `DOM nodes grew: ${first.nodes} → ${last.nodes}`);
  assert.ok(last.listeners <= first.listeners * 1.25 + 50, `listeners grew: ${first.listeners} → ${last.listeners}`);
  assert.ok(last.heap_mb <= first.heap_mb * 2 + 5, `heap grew: ${first.heap_mb} → ${last.heap_mb} MB`);
  assert.ok(maxClick < 1000, `a click took ${maxClick} ms`);
  result({ samples, verdict });
} finally {
  await browser.close();
}
