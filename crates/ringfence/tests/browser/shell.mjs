// The dashboard shell in Chromium: the vendored libraries load under the page's
// Content-Security-Policy, every page of the navigation mounts without a script error, and the
// search box leads to the investigate page.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

const { base, shots } = argv('shell.mjs');
const browser = await launch();
try {
  const page = await openDashboard(browser, base, '#/live');
  const libs = await page.evaluate(() => ({ uplot: typeof uPlot, cytoscape: typeof cytoscape, rf: typeof RF }));
  step(`libraries: ${JSON.stringify(libs)}`);
  assert.deepEqual(libs, { uplot: 'function', cytoscape: 'function', rf: 'object' });
  const visited = [];
  for (const name of await page.locator('#nav a').evaluateAll((as) => as.map((a) => a.dataset.page))) {
    await page.click(`#nav a[data-page=${name}]`);
    await page.waitForFunction((n) => location.hash === `#/${n}` && document.querySelector('#nav a.active')?.dataset.page === n, name);
    await page.waitForFunction(() => document.getElementById('view').childElementCount > 0);
    visited.push(name);
  }
  await page.fill('#search-q', 'card-1');
  await page.press('#search-q', 'Enter');
  await page.waitForFunction(() => location.hash.startsWith('#/investigate?q=card-1'));
  await shot(page, shots, 'shell');
  page.assertNoErrors();
  result({ visited, title: await page.title() });
} finally {
  await browser.close();
}
