// The till page (/pos) in Debian's headless Chromium with a fake camera, driven by playwright-core.
// Run by crates/ringfence/tests/pos_page.rs, which starts the server, makes the face video and
// checks the API afterwards:
//
//   node crates/ringfence/tests/browser/pos.mjs <base-url> <face-video.y4m> <screenshot-dir>
//
// The story: at store-a a purchase with the camera's photo (a real face: the video) is approved
// with its photo verified; its return at store-a with a new photo is approved; a second return of
// the same receipt at store-b without a photo is blocked, with the reasons on the page. Then,
// with Chromium's default fake camera (no face), a return is flagged no_photo_verification; a
// store is chosen from the form /pos shows without one; a bad field is shown as an error.
// The till is signed in as RF_USER / RF_PASSWORD (an `ingest` account): a till page that is not
// signed in shows a link to the dashboard's sign-in, which comes back to the till.
// The last line printed is `RESULT {...}`: the transaction ids, for the Rust test to check.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [base, faceVideo, shots] = process.argv.slice(2);
if (!base || !faceVideo || !shots) {
  console.error('usage: node pos.mjs <base-url> <face-video.y4m> <screenshot-dir>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const CHROMIUM = process.env.RINGFENCE_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];
const WAIT = 20_000;

const step = (text) => console.log(`- ${text}`);

async function launch(extraArgs) {
  return chromium.launch({ executablePath: CHROMIUM, args: [...ARGS, ...extraArgs], timeout: 60_000 });
}

/** A till page; fails the run on any script error on the page. */
async function openTill(browser, query) {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.refusalsExpected = 0; // the 4xx answers a step provokes on purpose
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Not signed in yet: the till and the dashboard ask who is there, and hear 401.
    if (/status of 401/.test(m.text())) return;
    if (page.refusalsExpected > 0 && /status of 4\d\d/.test(m.text())) {
      page.refusalsExpected -= 1;
      return;
    }
    page.problems.push(`console error: ${m.text()}`);
  });
  await page.goto(`/pos${query}`);
  if (query.includes('store=')) await signInIfNeeded(page);
  return page;
}

let signIns = 0;

/**
 * A till that is not signed in says so and links to the dashboard's sign-in, which returns to
 * the till: follow it with RF_USER / RF_PASSWORD.
 */
async function signInIfNeeded(page) {
  const needed = page.getByTestId('sign-in-needed');
  const till = page.getByTestId('till-identity');
  await Promise.race([needed.waitFor({ state: 'visible' }), till.waitFor({ state: 'visible' })]);
  if (!(await needed.isVisible())) return;
  const here = new URL(page.url());
  step(`${here.pathname}${here.search} is not signed in: sign in as ${process.env.RF_USER}`);
  await page.getByTestId('sign-in-link').click();
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  await page.fill('#sign-in-user', process.env.RF_USER ?? '');
  await page.fill('#sign-in-password', process.env.RF_PASSWORD ?? '');
  await page.click('#sign-in button[type=submit]');
  await page.waitForURL((url) => url.pathname === '/pos' && url.search === here.search);
  await till.waitFor({ state: 'visible' });
  signIns += 1;
}

function noProblems(page) {
  assert.deepEqual(page.problems, [], 'the page logged errors');
}

async function cameraReady(page) {
  await page.waitForFunction(() => !document.querySelector('[data-testid="capture"]').disabled);
  const size = await page.getByTestId('camera-preview').evaluate((v) => [v.videoWidth, v.videoHeight]);
  assert.ok(size[0] > 0 && size[1] > 0, `the preview plays (${size})`);
  return size;
}

async function capture(page) {
  await page.getByTestId('capture').click();
  await page.getByTestId('captured-photo').waitFor({ state: 'visible' });
  const bytes = Number(await page.getByTestId('captured-photo').getAttribute('data-bytes'));
  assert.ok(bytes > 1000, `a JPEG was captured (${bytes} bytes)`);
  await page.waitForFunction(() => {
    const img = document.querySelector('[data-testid="captured-photo"]');
    return img.complete && img.naturalWidth > 0;
  });
}

/** Fills one item line of `kind`'s form (adding a line when `index` is past the last). */
async function fillLine(page, kind, index, item) {
  const lines = page.getByTestId(`${kind}-items`).getByTestId('item-line');
  if ((await lines.count()) <= index) await page.getByTestId(`${kind}-add-item`).click();
  const line = lines.nth(index);
  await line.getByTestId('item-sku').fill(item.sku);
  await line.getByTestId('item-serial').fill(item.serial ?? '');
  await line.getByTestId('item-price').fill(String(item.price));
  await line.getByTestId('item-quantity').fill(String(item.quantity ?? 1));
}

/** Submits `kind`'s form and waits for a new decision (or fails with the error shown). */
async function submit(page, kind) {
  const before = await page.getByTestId('result').getAttribute('data-transaction-id');
  await page.getByTestId(`${kind}-submit`).click();
  await page.waitForFunction(
    (previous) => {
      const result = document.querySelector('[data-testid="result"]');
      const error = document.querySelector('[data-testid="error"]');
      return !error.hidden || (!result.hidden && result.dataset.transactionId && result.dataset.transactionId !== previous);
    },
    before,
  );
  const error = page.getByTestId('error');
  if (await error.isVisible()) {
    assert.fail(`the page shows an error: ${await error.innerText()}`);
  }
  return readResult(page);
}

async function readResult(page) {
  const result = page.getByTestId('result');
  const reasons = page.getByTestId('result-reasons').locator('li');
  return {
    id: await result.getAttribute('data-transaction-id'),
    decision: await page.getByTestId('result-decision').getAttribute('data-decision'),
    decisionText: await page.getByTestId('result-decision').textContent(),
    score: Number(await page.getByTestId('result-score').innerText()),
    photo: await page.getByTestId('result-photo').getAttribute('data-outcome'),
    rules: await reasons.evaluateAll((lis) => lis.map((li) => li.dataset.rule)),
    reasonTexts: await reasons.allInnerTexts(),
  };
}

/** The till's recent list shows `id` with `decision` and, when `photo`, a loaded thumbnail. */
async function listed(page, id, decision, photo) {
  const row = page.locator(`[data-testid="recent-row"][data-transaction-id="${id}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-decision'), decision, `recent row ${id}`);
  if (decision === 'block') {
    assert.match(await row.getAttribute('class'), /blocked/, 'a blocked row is highlighted');
  }
  const thumb = row.getByTestId('recent-photo');
  if (photo) {
    await page.waitForFunction(
      (sel) => {
        const img = document.querySelector(sel);
        return img && img.complete && img.naturalWidth > 0;
      },
      `[data-testid="recent-row"][data-transaction-id="${id}"] img`,
    );
  } else {
    assert.equal(await thumb.count(), 0, 'no thumbnail without a photo');
  }
}

async function shot(page, name) {
  const file = path.join(shots, name);
  await page.screenshot({ path: file, fullPage: true });
  step(`screenshot ${file}`);
}

const ids = {};
const shirt = { sku: 'shirt-blue-m', price: 39.99, quantity: 1 };
const jacket = { sku: 'jacket-rain-l', serial: 'SN-4471-0093', price: 129.0, quantity: 1 };

// ---- the story, with a face in front of the fake camera ----------------------------------------
{
  const browser = await launch([`--use-file-for-fake-video-capture=${faceVideo}`]);
  step(`Chromium ${browser.version()} with the face video as the camera`);
  const tillA = await openTill(browser, '?store=store-a&terminal=pos-a1');
  assert.equal(await tillA.getByTestId('store-name').innerText(), 'store-a');
  assert.equal(await tillA.getByTestId('terminal-name').innerText(), 'pos-a1');
  const size = await cameraReady(tillA);
  step(`store-a camera live at ${size.join(' x ')}`);

  const receipt = await tillA.getByTestId('purchase-receipt').inputValue();
  assert.match(receipt, /^R-\d{8}-\d{6}-[A-Z2-9]{6}$/, 'a fresh receipt id is filled in');
  await tillA.getByTestId('purchase-customer').fill('cust-ada');
  await fillLine(tillA, 'purchase', 0, shirt);
  await fillLine(tillA, 'purchase', 1, jacket);
  assert.equal(await tillA.getByTestId('purchase-total').innerText(), '168.99');
  await capture(tillA);
  await shot(tillA, 'pos-capture.png');
  const bought = await submit(tillA, 'purchase');
  step(`purchase ${receipt}: ${bought.decision}, score ${bought.score}, photo ${bought.photo}`);
  assert.equal(bought.decision, 'approve');
  assert.equal(bought.photo, 'verified', 'the camera photo of a face is verified');
  await tillA.getByTestId('result-image').waitFor({ state: 'visible' });
  await listed(tillA, bought.id, 'approve', true);
  assert.notEqual(await tillA.getByTestId('purchase-receipt').inputValue(), receipt, 'a new receipt id is ready');
  assert.equal(await tillA.getByTestId('captured-photo').isVisible(), false, 'the photo went with the purchase');
  await shot(tillA, 'pos-purchase.png');
  ids.purchase = bought.id;

  await tillA.getByTestId('return-this').click();
  assert.equal(await tillA.getByTestId('return-receipt').inputValue(), receipt);
  assert.equal(await tillA.getByTestId('return-customer').inputValue(), 'cust-ada');
  assert.equal(await tillA.getByTestId('return-total').innerText(), '168.99');
  await capture(tillA);
  const returnedA = await submit(tillA, 'return');
  step(`return at store-a: ${returnedA.decision}, score ${returnedA.score}, photo ${returnedA.photo}, rules ${returnedA.rules}`);
  assert.equal(returnedA.decision, 'approve');
  assert.equal(returnedA.photo, 'verified');
  assert.ok(!returnedA.rules.includes('no_photo_verification'), `${returnedA.rules}`);
  await listed(tillA, returnedA.id, 'approve', true);
  ids.return_a = returnedA.id;
  noProblems(tillA);

  const tillB = await openTill(browser, '?store=store-b');
  assert.equal(await tillB.getByTestId('terminal-name').innerText(), 'store-b-till-1', 'a default till id');
  await cameraReady(tillB);
  await tillB.getByTestId('tab-return').click();
  await tillB.getByTestId('return-receipt').fill(receipt);
  await tillB.getByTestId('return-customer').fill('cust-ada');
  assert.equal(await tillB.getByTestId('return-terminal').inputValue(), 'store-b-till-1');
  await fillLine(tillB, 'return', 0, shirt);
  assert.equal(await tillB.getByTestId('captured-photo').isVisible(), false, 'no photo is taken at store-b');
  const returnedB = await submit(tillB, 'return');
  step(`return again at store-b: ${returnedB.decision}, score ${returnedB.score}, photo ${returnedB.photo}, rules ${returnedB.rules}`);
  assert.equal(returnedB.decision, 'block');
  assert.equal(returnedB.decisionText, 'Blocked');
  assert.ok(returnedB.score >= 85, `score ${returnedB.score}`);
  assert.match(await tillB.getByTestId('result-advice').innerText(), /^Stop/);
  assert.equal(returnedB.photo, 'missing');
  for (const rule of ['duplicate_return', 'no_photo_verification', 'unverified_return_of_verified_purchase']) {
    assert.ok(returnedB.rules.includes(rule), `${rule} is shown: ${returnedB.rules}`);
  }
  assert.ok(returnedB.reasonTexts.every((text) => text.trim().length > 0), 'every reason has words');
  await listed(tillB, returnedB.id, 'block', false);
  await shot(tillB, 'pos-blocked-return.png');
  ids.return_b = returnedB.id;
  noProblems(tillB);
  await browser.close();
}

// ---- Chromium's default fake camera: no face -------------------------------------------------
{
  const browser = await launch([]);
  step('Chromium with its default fake camera');
  const page = await openTill(browser, '');
  await page.getByTestId('choose-store').waitFor({ state: 'visible' });
  assert.equal(await page.getByTestId('till-identity').isVisible(), false);
  await shot(page, 'pos-choose-store.png');
  await page.getByTestId('choose-store-input').fill('store-c');
  await page.getByTestId('open-till').click();
  await page.waitForURL(/\/pos\?store=store-c/);
  await signInIfNeeded(page);
  assert.equal(await page.getByTestId('store-name').innerText(), 'store-c');
  await cameraReady(page);

  await page.getByTestId('purchase-customer').fill('cust-bo');
  await fillLine(page, 'purchase', 0, shirt);
  const bought = await submit(page, 'purchase');
  assert.equal(bought.photo, 'missing');
  ids.default_purchase = bought.id;

  await page.getByTestId('return-this').click();
  await page.getByTestId('return-items').getByTestId('item-price').first().fill('');
  const error = page.getByTestId('error');
  page.refusalsExpected = 1;
  await page.getByTestId('return-submit').click();
  await error.waitFor({ state: 'visible' });
  assert.equal(await error.getAttribute('data-field'), 'items[0].price');
  assert.equal(await page.getByTestId('error-where').innerText(), 'item 1 price');
  assert.match(await page.getByTestId('error-message').innerText(), /^items\[0\]\.price: /);
  const price = page.getByTestId('return-items').getByTestId('item-price').first();
  assert.equal(await price.getAttribute('aria-invalid'), 'true', 'the bad field is marked');
  step(`a bad field is shown: ${await page.getByTestId('error-message').innerText()}`);
  await shot(page, 'pos-error.png');
  await price.fill('39.99');

  await capture(page);
  const returned = await submit(page, 'return');
  step(`return with the default camera: ${returned.decision}, score ${returned.score}, photo ${returned.photo}, rules ${returned.rules}`);
  assert.notEqual(returned.photo, 'verified');
  assert.ok(returned.rules.includes('no_photo_verification'), `${returned.rules}`);
  await listed(page, returned.id, returned.decision, true);
  await shot(page, 'pos-no-face.png');
  ids.default_return = returned.id;
  ids.default_return_photo = returned.photo;
  noProblems(page);
  await browser.close();
}

ids.sign_ins = signIns;
console.log(`RESULT ${JSON.stringify(ids)}`);
