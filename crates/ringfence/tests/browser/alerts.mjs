// The alerts page in Chromium: the queue lists the case, the analyst opens it, reads why,
// takes it, confirms fraud with a note, and the page shows it closed with its label and
// audit trail. A second close attempt is refused and the error is shown.
//
// Arguments after the base URL and screenshot directory: the case id to open.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('alerts.mjs <case-id>');
const [caseId] = rest;
if (!caseId) throw new Error('give the case id to open');
const browser = await launch();
try {
  const page = await openDashboard(browser, base, '#/alerts');
  step('the queue lists the case');
  const row = page.locator(`#alerts-queue tr[data-id="${caseId}"]`);
  await row.waitFor();
  const queued = await page.locator('#alerts-queue tbody tr').count();
  await shot(page, shots, 'alerts-queue');

  step(`open case ${caseId}`);
  await row.click();
  await page.waitForFunction((id) => location.hash === `#/alerts/${id}`, caseId);
  await page.locator('#case-status').waitFor();
  assert.equal(await page.locator('#case-status').textContent(), 'open');
  const hits = await page.locator('#case-rule-hits tbody tr td:first-child').allTextContents();
  step(`rule hits: ${hits.join(', ')}`);
  assert.ok(hits.length > 0, 'the case shows why it was raised');

  step('assign to me');
  await page.click('#case-assign');
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'assigned');

  step('confirm fraud with a note');
  await page.fill('#case-note', 'cardholder confirms it was not them');
  await page.click('#case-fraud');
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'closed');
  await page.waitForFunction(() => document.querySelector('#case-label')?.textContent === 'fraud');
  const audit = await page.locator('#case-audit tbody tr td:nth-child(3)').allTextContents();
  step(`audit trail: ${audit.join(', ')}`);
  assert.deepEqual(audit, ['case.close', 'case.assign']);
  assert.equal(await page.locator('#case-fraud').isDisabled(), true);
  await shot(page, shots, 'case');

  step('a refused action is shown: close it again through the page API');
  await page.evaluate((id) => RF.api.post(`/v1/cases/${id}/close`, { verdict: 'fraud' }).catch((e) => {
    document.getElementById('case-error').textContent = `${e.status} ${e.message}`;
  }), caseId);
  const refused = await page.locator('#case-error').textContent();
  assert.match(refused, /^409 /);

  step('reopen');
  await page.click('#case-reopen');
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'assigned');
  step('close as false positive, then reopen and confirm fraud again');
  await page.click('#case-false-positive');
  await page.waitForFunction(() => document.querySelector('#case-label')?.textContent === 'not_fraud');
  await page.click('#case-reopen');
  await page.waitForFunction(() => document.querySelector('#case-status')?.textContent === 'assigned');
  await page.fill('#case-note', 'confirmed after a call');
  await page.click('#case-fraud');
  await page.waitForFunction(() => document.querySelector('#case-label')?.textContent === 'fraud');

  step('back to the queue: the case is closed there');
  await page.click('a[href="#/alerts"]');
  await page.selectOption('#alerts-status', 'closed');
  await page.locator(`#alerts-queue tr[data-id="${caseId}"]`).waitFor();
  page.assertNoErrors();
  result({ queued, hits, status: await page.locator(`#alerts-queue tr[data-id="${caseId}"] td:nth-child(8)`).textContent() });
} finally {
  await browser.close();
}
