// What every dashboard browser script shares: Debian's headless Chromium through
// playwright-core, a signed-in page that fails the run on any script error, screenshots.
//
// A script is run by a test under crates/ringfence/tests/dashboard/ as
//   node crates/ringfence/tests/browser/<page>.mjs <base-url> <screenshot-dir> [args...]
// with RF_USER and RF_PASSWORD in its environment (the account it signs in with), and prints
// `RESULT {...}` as its last line for the Rust side to check through the API.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.RINGFENCE_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
/** Longest a single wait on the page may take. */
export const WAIT = 20_000;

/** Logs one step of the story (shown when the Rust test fails). */
export const step = (text) => console.log(`- ${text}`);

/** The command line: base URL, screenshot directory, then the script's own arguments. */
export function argv(usage) {
  const [base, shots, ...rest] = process.argv.slice(2);
  if (!base || !shots) {
    console.error(`usage: node ${usage} <base-url> <screenshot-dir> ...`);
    process.exit(2);
  }
  mkdirSync(shots, { recursive: true });
  return { base, shots, rest };
}

/** Chromium with the flags this machine requires. */
export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 });
}

/**
 * A dashboard page at `hash` (e.g. `#/live`), signed in with RF_USER / RF_PASSWORD when the
 * sign-in form shows. Any uncaught script error or console error on the page fails the run.
 */
export async function openDashboard(browser, base, hash = '#/live') {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  page.assertNoErrors = () => {
    if (errors.length) throw new Error(errors.join('\n'));
  };
  await page.goto(`/${hash}`);
  await signInIfAsked(page);
  return page;
}

/** Fills the sign-in form if the page shows it. */
export async function signInIfAsked(page) {
  const form = page.locator('#sign-in');
  const nav = page.locator('#nav');
  await Promise.race([
    form.waitFor({ state: 'visible' }),
    nav.waitFor({ state: 'visible' }),
  ]);
  if (await form.isVisible()) {
    const user = process.env.RF_USER;
    const password = process.env.RF_PASSWORD;
    if (!user || !password) throw new Error('the page asks to sign in but RF_USER/RF_PASSWORD are not set');
    step(`sign in as ${user}`);
    await page.fill('#sign-in-user', user);
    await page.fill('#sign-in-password', password);
    await page.click('#sign-in button[type=submit]');
    await nav.waitFor({ state: 'visible' });
  }
}

/** Saves a full-page screenshot as `<dir>/<name>.png`. */
export async function shot(page, shots, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  step(`screenshot ${file}`);
}

/** Prints the result line the Rust test reads. */
export function result(value) {
  console.log(`RESULT ${JSON.stringify(value)}`);
}
