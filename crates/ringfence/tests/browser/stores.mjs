// The stores page in Chromium: two stores side by side, each with its purchases and returns;
// the blocked return is highlighted, the till's photo is shown, and so are the photo checks.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step, WAIT } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('stores.mjs');
const [blockedId] = rest;
const browser = await launch();
try {
  const page = await openDashboard(browser, base, '#/stores');
  step('two store columns');
  await page.waitForFunction(() => document.querySelectorAll('.stores-col').length >= 2);
  const columns = await page.evaluate(() => [...document.querySelectorAll('.stores-col')].map((c) => c.dataset.store));
  step(`columns ${columns.join(', ')}`);

  step(`the blocked return ${blockedId} is highlighted`);
  const blocked = page.locator(`.stores-col[data-store="store-b"] li.stores-tx[data-id="${blockedId}"]`);
  await blocked.waitFor();
  assert.match(await blocked.getAttribute('class'), /\bblocked\b/);
  assert.equal(await blocked.getAttribute('data-kind'), 'return');
  const blockedText = await blocked.textContent();
  assert.match(blockedText, /no photo/);

  step('the purchase photo at store-a is shown and loaded');
  const img = page.locator('.stores-col[data-store="store-a"] li.stores-tx img.photo').first();
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector('.stores-col[data-store="store-a"] li.stores-tx img.photo');
    return i && i.complete && i.naturalWidth > 0;
  });
  const photoSrc = await img.getAttribute('src');
  const outcomes = await page.evaluate(() => [...document.querySelectorAll('.stores-photo-outcome')].map((e) => e.dataset.photo));
  const replication = await page.textContent('#stores-replication');
  await shot(page, shots, 'stores');

  step('a refresh slower than its 5 s period is not overlapped by the next one');
  // Every answer to the store list is held back 8 s: with the refresh every 5 s, a second
  // request would start while the first waits, unless the page skips ticks while busy.
  let inFlight = 0;
  let mostInFlight = 0;
  let answered = 0;
  await page.route(/\/v1\/stores$/, async (route) => {
    inFlight++;
    mostInFlight = Math.max(mostInFlight, inFlight);
    await new Promise((resolve) => setTimeout(resolve, 8000));
    inFlight--;
    answered++;
    await route.continue();
  });
  const deadline = Date.now() + 3 * WAIT;
  while (answered < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.ok(answered >= 1, `a slow refresh answered (${answered})`);
  assert.equal(mostInFlight, 1, 'refreshes overlapped');
  await page.unrouteAll({ behavior: 'wait' });
  step(`held-back refreshes: ${answered}, at most ${mostInFlight} at a time`);
  page.assertNoErrors();
  result({ columns, blocked: blockedId, blockedText, photoSrc, outcomes, replication, mostInFlight });
} finally {
  await browser.close();
}
