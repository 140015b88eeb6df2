// Signing in to the dashboard in Chromium: a wrong password shows the server's error on the form,
// the right one shows the navigation with the user's name and role, a reload stays signed in,
// and signing out returns to the form (and the session is gone: a reload shows the form again).
import assert from 'node:assert/strict';
import { argv, launch, result, shot, step, WAIT } from './dashboard-lib.mjs';

const { base, shots } = argv('signin.mjs');
const user = process.env.RF_USER;
const password = process.env.RF_PASSWORD;
const browser = await launch();
try {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(`console: ${m.text()}`);
  });

  await page.goto('/#/live');
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#nav').isVisible(), false, 'no navigation before signing in');

  step(`wrong password for ${user}`);
  await page.fill('#sign-in-user', user);
  await page.fill('#sign-in-password', 'not the password');
  await page.click('#sign-in button[type=submit]');
  await page.waitForFunction(() => document.getElementById('sign-in-error').textContent.length > 0);
  const wrong = await page.locator('#sign-in-error').innerText();
  step(`the form says: ${wrong}`);
  assert.match(wrong, /wrong user name or password/);
  assert.equal(await page.locator('#nav').isVisible(), false);
  await shot(page, shots, 'signin-wrong-password');

  step('right password');
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in button[type=submit]');
  await page.locator('#nav').waitFor({ state: 'visible' });
  const shown = { name: await page.locator('#who-name').innerText(), role: await page.locator('#who-role').innerText() };
  step(`signed in as ${shown.name} (${shown.role})`);
  assert.equal(shown.name, user);
  assert.equal(await page.locator('#sign-in').isVisible(), false);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'rf_session');
  assert.ok(session, 'the session cookie is set');
  assert.equal(session.httpOnly, true, 'scripts cannot read it');
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('rf_session')), false);
  await shot(page, shots, 'signin-signed-in');

  step('reload');
  await page.reload();
  await page.locator('#nav').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#who-name').innerText(), user, 'still signed in after a reload');

  step('sign out');
  await page.click('#sign-out');
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#nav').isVisible(), false);
  await page.reload();
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  const afterSignOut = (await context.cookies()).find((c) => c.name === 'rf_session');
  await shot(page, shots, 'signin-form');

  step('a sign-in link that would send the browser to another site after signing in');
  await page.goto('/#/login?next=%2F%2Fevil.example%2F');
  await page.locator('#sign-in').waitFor({ state: 'visible' });
  await page.fill('#sign-in-user', user);
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in button[type=submit]');
  await page.locator('#nav').waitFor({ state: 'visible' });
  const landed = new URL(page.url());
  step(`landed on ${landed.host}${landed.pathname}${landed.hash}`);
  assert.equal(landed.origin, new URL(base).origin, 'stayed on this server');
  assert.equal(landed.hash, '#/live');

  step('the same with a tab the browser drops when it follows the address (/\\t/evil.example)');
  await page.goto('about:blank');
  await page.goto('/#/login?next=%2F%09%2Fevil.example%2F');
  await page.locator('#nav').waitFor({ state: 'visible' });
  const stayed = new URL(page.url());
  assert.equal(stayed.origin, new URL(base).origin, 'a tab-split address stays on this server');

  if (errors.length) throw new Error(errors.join('\n'));
  result({ shown, session: session.value, cookieAfterSignOut: afterSignOut ? afterSignOut.value : null });
} finally {
  await browser.close();
}
