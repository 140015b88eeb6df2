// The rules page in Chromium: a new rule with a misspelt feature is reported at its line (the
// gutter marked, the error list jumping the caret to it); fixed, it validates; a backtest over
// the stored history shows its hits, confirmed fraud and false positives; activated, it is in
// the rules table; put in shadow and made active again from the table.
//
// Arguments after the base URL and screenshot directory: the expected error line and column,
// then the expected backtest hits, confirmed fraud and false positives of the new rule.
import assert from 'node:assert/strict';
import { argv, launch, openDashboard, result, shot, step, WAIT } from './dashboard-lib.mjs';

const { base, shots, rest } = argv('rules.mjs <line> <column> <hits> <fraud> <false-positives>');
const [line, column, hits, fraud, falsePositives] = rest.map(Number);
const RULE = (feature) => `[[rule]]\nname = "huge_amount"\ncategory = "amount"\nwhen = "${feature} > 9000"\nscore = 95\naction = "block"\nreason = "amount {tx.amount} over 9000"\n`;

const browser = await launch();
try {
  const page = await openDashboard(browser, base, '#/rules');
  await page.locator('#rules-table tbody tr').first().waitFor();
  await page.waitForFunction(() => document.getElementById('rules-editor').value.includes('[[rule]]'));
  const inForce = await page.inputValue('#rules-editor');
  const rulesBefore = await page.locator('#rules-table tbody tr').count();
  step(`${rulesBefore} rules in force; the editor holds their text`);

  step('add a rule with a misspelt feature and validate');
  await page.fill('#rules-editor', `${inForce.trimEnd()}\n\n${RULE('tx.amout')}`);
  await page.click('#rules-validate');
  const item = page.locator('#rules-errors li').first();
  await item.waitFor();
  const reported = await item.evaluate((li) => ({ line: Number(li.dataset.line), column: Number(li.dataset.column), text: li.textContent }));
  step(`reported: ${reported.text}`);
  assert.equal(reported.line, line, reported.text);
  assert.equal(reported.column, column, reported.text);
  assert.match(reported.text, /tx\.amout/);
  assert.match(reported.text, /huge_amount/);
  const marked = await page.locator('#rules-gutter .line-error').evaluateAll((ls) => ls.map((l) => Number(l.dataset.line)));
  assert.deepEqual(marked, [line], 'the gutter marks the error line');
  assert.match(await page.textContent('#rules-status'), /error/);

  step('the error jumps the caret to its line and column');
  await item.click();
  const caret = await page.evaluate(() => {
    const t = document.getElementById('rules-editor');
    const before = t.value.slice(0, t.selectionStart).split('\n');
    return { focused: document.activeElement === t, line: before.length, column: before[before.length - 1].length + 1 };
  });
  assert.deepEqual(caret, { focused: true, line, column });
  await shot(page, shots, 'rules-error');

  step('fix it and validate');
  await page.fill('#rules-editor', `${inForce.trimEnd()}\n\n${RULE('tx.amount')}`);
  await page.click('#rules-validate');
  await page.waitForFunction(() => /^Valid: \d+ rules\.$/.test(document.getElementById('rules-status').textContent));
  assert.equal(await page.locator('#rules-errors li').count(), 0);
  assert.equal(await page.locator('#rules-gutter .line-error').count(), 0);

  step('backtest over the last 24 hours of stored history');
  await page.selectOption('#rules-hours', '24');
  await page.click('#rules-backtest');
  const row = page.locator('#rules-backtest-result tr[data-rule="huge_amount"]');
  await row.waitFor({ timeout: WAIT });
  const cell = async (col) => Number((await row.locator(`td[data-col="${col}"]`).textContent()).replace(/[^0-9]/g, ''));
  const shown = { hits: await cell('hits'), fraud: await cell('fraud'), fp: await cell('fp') };
  step(`backtest: ${JSON.stringify(shown)}; ${await page.textContent('#rules-backtest-summary')}`);
  assert.deepEqual(shown, { hits, fraud, fp: falsePositives });
  assert.match(await row.textContent(), /new/);
  const first = await page.locator('#rules-backtest-result tbody tr').first().getAttribute('data-rule');
  assert.equal(first, 'huge_amount', 'the new rule is listed first');
  // The editor's toolbar at the top: the text, the answer and the backtest in one view.
  await page.evaluate(() => {
    document.getElementById('rules-validate').scrollIntoView({ block: 'start' });
    window.scrollBy(0, -64); // below the sticky header
  });
  const links = await row.locator('a').evaluateAll((as) => as.map((a) => a.textContent));
  assert.equal(links.length, hits, 'one sample link per hit (at most 5)');
  await shot(page, shots, 'rules-backtest');

  step('activate');
  await page.click('#rules-activate');
  await page.waitForFunction(() => /^Version \d+ in force/.test(document.getElementById('rules-status').textContent));
  const version = Number((await page.textContent('#rules-status')).match(/^Version (\d+)/)[1]);
  const newRow = page.locator('#rules-table tbody tr[data-rule="huge_amount"]');
  await newRow.waitFor();
  assert.match(await newRow.textContent(), /active/);
  assert.equal(await page.locator('#rules-table tbody tr').count(), rulesBefore + 1);

  step('put it in shadow from the table, then make it active again');
  await newRow.locator('button.rules-toggle').click();
  await page.waitForFunction(() => /huge_amount is shadow/.test(document.getElementById('rules-status').textContent));
  assert.equal(await page.textContent('#rules-table tr[data-rule="huge_amount"] .badge'), 'shadow');
  const reloaded = await page.inputValue('#rules-editor');
  assert.ok(reloaded.includes('name = "huge_amount"\nmode = "shadow"\n'), 'the editor shows the mode line the switch wrote');
  await newRow.locator('button.rules-toggle').click();
  await page.waitForFunction(() => document.querySelector('#rules-table tr[data-rule="huge_amount"] .badge')?.textContent === 'active');
  await page.waitForFunction(() => /huge_amount is active/.test(document.getElementById('rules-status').textContent));
  await page.locator('#rules-table').scrollIntoViewIfNeeded();
  await shot(page, shots, 'rules');
  page.assertNoErrors();
  result({ error: reported, caret, backtest: shown, version, rules: rulesBefore + 1 });
} finally {
  await browser.close();
}
