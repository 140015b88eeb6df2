//! The analyst dashboard in a real browser: Debian's headless Chromium driven by playwright-core,
//! one script per page under `tests/browser/`, one module here per page. Each test starts a
//! server, runs its script (which signs in, acts on the page and saves screenshots), then checks
//! through the API that what the page showed and did is what the server holds.
//!
//! `scripts/test` installs what they need (`chromium`, `node`, `npm ci` in `tests/browser`);
//! when something is missing a test fails and says so, it never skips.

#[path = "../helpers/mod.rs"]
mod helpers;

mod alerts;
mod browser;
mod investigate;
mod live;
mod rules;
mod shell;
mod signin;
mod stores;
