// The investigate page in Chromium: search finds the device, its entity page draws the link
// graph, tapping a neighbour expands it (the node count grows), and double-tapping a node
// opens its page.
//
// Arguments after the base URL and screenshot directory: the search query (a device id) and
// the node id (`kind:id`) to expand.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('investigate.mjs <device> <node-to-expand>');
const [device, expandId] = rest;
if (!device || !expandId) throw new Error('give the device and the node to expand');
const browser = await launch();

/** Clicks (or double-clicks) a graph node where Cytoscape drew it. */
async function tapNode(page, id, clicks = 1) {
  const at = await page.evaluate((nid) => {
    const box = document.getElementById('graph');
    const node = box._cy.getElementById(nid);
    if (node.empty()) return null;
    const p = node.renderedPosition();
    const r = box.getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y };
  }, id);
  assert.ok(at, `node ${id} is drawn`);
  await page.mouse.click(at.x, at.y, { clickCount: clicks });
}

try {
  const page = await openDashboard(browser, base, '#/live');
  step(`search ${device}`);
  await page.fill('#search-q', device);
  await page.press('#search-q', 'Enter');
  const hit = page.locator(`#search-results tr[data-type="device"][data-id="${device}"]`);
  await hit.waitFor();
  await hit.click();
  await page.waitForFunction((d) => location.hash === `#/investigate/device/${d}`, device);

  step('the graph draws the neighbourhood');
  await page.waitForFunction(() => Number(document.getElementById('graph')?.dataset.nodes) > 1);
  const before = Number(await page.locator('#graph').getAttribute('data-nodes'));
  const fraud = await page.evaluate(() => document.getElementById('graph')._cy.nodes('[?fraud]').map((n) => n.id()));
  step(`${before} nodes; fraud: ${fraud.join(', ')}`);

  step(`tap ${expandId}`);
  await tapNode(page, expandId);
  await page.waitForFunction((n) => Number(document.getElementById('graph').dataset.nodes) > n, before);
  // Let the layout settle before the picture.
  await page.waitForTimeout(300);
  const after = Number(await page.locator('#graph').getAttribute('data-nodes'));
  const nodes = await page.evaluate(() => document.getElementById('graph')._cy.nodes().map((n) => n.id()).sort());
  step(`${after} nodes after expanding`);
  await shot(page, shots, 'graph');

  const profile = await page.locator('#entity-profile').textContent();
  step('double-tap opens the expanded node\'s page');
  await tapNode(page, expandId, 2);
  const [kind, id] = expandId.split(/:(.*)/s);
  await page.waitForFunction(([k, i]) => location.hash === `#/investigate/${k}/${encodeURIComponent(i)}`, [kind, id]);
  await page.locator('#entity-history').waitFor();

  step('a card number typed in the search box is in no address: the page opens on its token');
  await page.fill('#search-q', '4111 1111 1111 1111');
  await page.press('#search-q', 'Enter');
  await page.locator('#search-results h2').waitFor();
  const cardHash = await page.evaluate(() => location.hash);
  const history = await page.evaluate(() => history.length);
  step(`landed on ${cardHash}`);
  page.assertNoErrors();
  result({ before, after, nodes, fraud, profile, cardHash, history });
} finally {
  await browser.close();
}
