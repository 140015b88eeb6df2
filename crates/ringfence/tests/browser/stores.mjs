// The stores page in Chromium: two stores side by side, each with its purchases and returns;
// the blocked return is highlighted, the till's photo is shown, and so are the photo checks.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

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
  page.assertNoErrors();
  result({ columns, blocked: blockedId, blockedText, photoSrc, outcomes, replication });
} finally {
  await browser.close();
}
