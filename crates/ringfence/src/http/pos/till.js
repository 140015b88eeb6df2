// The till page: the camera and its captured photo, purchase and return forms sent to the API as
// multipart (transaction JSON + photo), the decision with every reason, and the till's recent
// transactions. Served by crates/ringfence/src/http/pos.rs; it talks only to the public API.
//
// Text from the server or the URL is only ever set with textContent or as an attribute value,
// never parsed as HTML.

const byId = (id) => document.getElementById(id);

/** Longest id the API accepts (bytes), as EntityId in the core. */
const MAX_ID_BYTES = 128;

/** How the photo outcome reads at the till; the raw value stays in data-outcome. */
const PHOTO_WORDS = {
  verified: 'verified (face found)',
  no_face: 'no face found',
  poor_quality: 'poor quality',
  unreadable: 'unreadable',
  missing: 'none sent',
};

const DECISION_WORDS = {
  approve: 'Approved',
  review: 'Review',
  challenge: 'Challenge',
  block: 'Blocked',
};

/** What the clerk does next, by decision. */
const DECISION_ADVICE = {
  approve: 'Go ahead.',
  review: "Check the customer's identity and the receipt before going ahead.",
  challenge: 'Ask the customer for further verification before going ahead.',
  block: 'Stop: do not complete this transaction. Call a supervisor.',
};

const till = {
  store: '',
  terminal: '',
  photo: null, // the captured JPEG (a Blob) sent with the next transaction
  photoUrl: null,
  lastPurchase: null, // the last recorded purchase, for "Return this purchase"
  lineSeq: 0,
};

/** Why `value` is not an id the API accepts, or null. */
function idProblem(what, value) {
  if (!value) return `${what} id is empty`;
  if (new TextEncoder().encode(value).length > MAX_ID_BYTES) {
    return `${what} id is longer than ${MAX_ID_BYTES} bytes`;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) return `${what} id has control characters`;
  return null;
}

function start() {
  const params = new URLSearchParams(window.location.search);
  const store = (params.get('store') ?? '').trim();
  const terminal = (params.get('terminal') ?? '').trim();
  const problem = store ? idProblem('store', store) || (terminal && idProblem('terminal', terminal)) : null;
  if (!store || problem) {
    showChooser(problem, store, terminal);
    return;
  }
  till.store = store;
  till.terminal = terminal || `${store}-till-1`;
  // The till is a client like any other: it needs a signed-in account (the session cookie).
  fetch('/v1/auth/me', { headers: { accept: 'application/json' } })
    .then((res) => (res.status === 401 ? needSignIn() : openTill()))
    .catch(() => openTill()); // the server is down: the till shows that on its first request
}

/**
 * Shows that the till must be signed in, with a link to the dashboard's sign-in that comes back
 * to this very till page afterwards.
 */
function needSignIn() {
  const here = `${window.location.pathname}${window.location.search}`;
  byId('signin-link').href = `/#/login?next=${encodeURIComponent(here)}`;
  byId('till').hidden = true;
  byId('choose').hidden = true;
  byId('signin').hidden = false;
}

function showChooser(problem, store, terminal) {
  byId('choose').hidden = false;
  byId('choose-store').value = store;
  byId('choose-terminal').value = terminal;
  if (problem) {
    const p = byId('choose-problem');
    p.textContent = `That till cannot open: ${problem}.`;
    p.hidden = false;
  }
  byId('choose-store').focus();
}

function openTill() {
  document.title = `Till ${till.terminal} · ${till.store} · Ringfence`;
  byId('store-name').textContent = till.store;
  byId('terminal-name').textContent = till.terminal;
  byId('identity').hidden = false;
  byId('till').hidden = false;

  for (const form of document.querySelectorAll('form[data-kind]')) {
    addLine(form);
    form.addEventListener('submit', submit);
    form.addEventListener('input', (ev) => {
      if (ev.target.matches('input')) ev.target.removeAttribute('aria-invalid');
      updateTotal(form);
    });
    form.querySelector('.add-line').addEventListener('click', () => {
      const line = addLine(form);
      line.querySelector('input').focus();
    });
  }
  byId('return-terminal').value = till.terminal;
  newReceipt();
  byId('new-receipt').addEventListener('click', newReceipt);

  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (ev) => {
      if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
      const other = tab.id === 'tab-purchase' ? byId('tab-return') : byId('tab-purchase');
      selectTab(other);
      other.focus();
    });
  }
  byId('return-this').addEventListener('click', returnLastPurchase);

  byId('capture').addEventListener('click', capture);
  byId('discard').addEventListener('click', () => setPhoto(null));
  byId('camera-start').addEventListener('click', startCamera);
  byId('refresh').addEventListener('click', refreshRecent);

  startCamera();
  refreshRecent();
}

// ---- camera -------------------------------------------------------------------------------

function cameraStatus(text, problem = false) {
  const status = byId('camera-status');
  status.textContent = text;
  status.classList.toggle('problem', problem);
}

async function startCamera() {
  const preview = byId('preview');
  byId('camera-start').hidden = true;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    cameraStatus(
      'The camera needs a secure page: open the till on localhost or over HTTPS. ' +
        'Transactions can still be recorded, without a photo.',
      true,
    );
    return;
  }
  cameraStatus('Starting the camera…');
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'user' },
      audio: false,
    });
    preview.srcObject = stream;
    if (preview.readyState < HTMLMediaElement.HAVE_METADATA) {
      await new Promise((resolve) => preview.addEventListener('loadedmetadata', resolve, { once: true }));
    }
    await preview.play().catch(() => {});
    byId('capture').disabled = false;
    cameraStatus(`Camera ready (${preview.videoWidth} × ${preview.videoHeight}).`);
    const [track] = stream.getVideoTracks();
    track?.addEventListener('ended', () => {
      byId('capture').disabled = true;
      byId('camera-start').hidden = false;
      cameraStatus('The camera stopped.', true);
    });
  } catch (e) {
    byId('capture').disabled = true;
    byId('camera-start').hidden = false;
    const why = {
      NotAllowedError: 'permission to use the camera was refused',
      NotFoundError: 'no camera is connected',
      NotReadableError: 'the camera is in use by another program',
    }[e?.name] ?? (e?.message || String(e));
    cameraStatus(`No camera: ${why}. Transactions can still be recorded, without a photo.`, true);
  }
}

async function capture() {
  const preview = byId('preview');
  const width = preview.videoWidth;
  const height = preview.videoHeight;
  if (!width || !height) {
    cameraStatus('The camera has no picture yet; try again in a moment.', true);
    return;
  }
  const canvas = byId('frame');
  canvas.width = width;
  canvas.height = height;
  canvas.getContext('2d').drawImage(preview, 0, 0, width, height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.92));
  if (!blob) {
    cameraStatus('The picture could not be captured; try again.', true);
    return;
  }
  setPhoto(blob);
  cameraStatus(`Photo captured (${width} × ${height}, ${Math.round(blob.size / 1024)} KB): it goes with the next transaction.`);
}

function setPhoto(blob) {
  if (till.photoUrl) URL.revokeObjectURL(till.photoUrl);
  till.photo = blob;
  till.photoUrl = blob ? URL.createObjectURL(blob) : null;
  const img = byId('captured');
  if (blob) {
    img.src = till.photoUrl;
    img.dataset.bytes = String(blob.size);
  } else {
    img.removeAttribute('src');
    delete img.dataset.bytes;
  }
  img.hidden = !blob;
  byId('no-capture').hidden = Boolean(blob);
  byId('discard').disabled = !blob;
}

// ---- forms --------------------------------------------------------------------------------

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    byId(t.getAttribute('aria-controls')).hidden = !on;
  }
}

function newReceipt() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const stamp =
    `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-` +
    `${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const random = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => alphabet[b % 32]).join('');
  byId('purchase-receipt').value = `R-${stamp}-${random}`;
  byId('purchase-receipt').removeAttribute('aria-invalid');
}

/** Adds an item line to `form`, its inputs labelled, filled from `item` if given. */
function addLine(form, item = {}) {
  const lines = form.querySelector('.lines');
  const line = byId('line-template').content.firstElementChild.cloneNode(true);
  const n = ++till.lineSeq;
  for (const field of line.querySelectorAll('.field')) {
    const input = field.querySelector('input');
    const id = `${form.dataset.kind}-line-${n}-${input.name}`;
    input.id = id;
    field.querySelector('label').htmlFor = id;
    if (item[input.name] !== undefined && item[input.name] !== null) input.value = String(item[input.name]);
  }
  line.querySelector('.remove').addEventListener('click', () => {
    line.remove();
    renumber(form);
    updateTotal(form);
  });
  lines.append(line);
  renumber(form);
  updateTotal(form);
  return line;
}

/** Keeps the remove buttons' names in step with the lines; the last line cannot be removed. */
function renumber(form) {
  const lines = [...form.querySelectorAll('.line')];
  lines.forEach((line, i) => {
    const remove = line.querySelector('.remove');
    remove.setAttribute('aria-label', `Remove item ${i + 1}`);
    remove.disabled = lines.length === 1;
  });
}

function clearLines(form) {
  form.querySelector('.lines').replaceChildren();
}

/** The number in `text`, or the trimmed text itself (the API then names the bad field). */
function numberOrText(text, integer) {
  const t = text.trim();
  if (t === '') return undefined;
  const pattern = integer ? /^\d+$/ : /^\d+(\.\d+)?$/;
  return pattern.test(t) ? Number(t) : t;
}

/** The form's non-blank item lines as the API wants them, and the line element of each. */
function readLines(form) {
  const items = [];
  const elements = [];
  for (const line of form.querySelectorAll('.line')) {
    const value = (name) => line.querySelector(`input[name="${name}"]`).value;
    if (['sku', 'serial', 'price'].every((name) => value(name).trim() === '')) continue;
    const item = { sku: value('sku').trim() || undefined };
    const serial = value('serial').trim();
    if (serial) item.serial = serial;
    item.price = numberOrText(value('price'), false);
    const quantity = numberOrText(value('quantity'), true);
    if (quantity !== undefined) item.quantity = quantity;
    items.push(item);
    elements.push(line);
  }
  return { items, elements };
}

function total(items) {
  let cents = 0;
  for (const item of items) {
    const quantity = item.quantity === undefined ? 1 : item.quantity;
    if (typeof item.price === 'number' && typeof quantity === 'number') {
      cents += Math.round(item.price * 100) * quantity;
    }
  }
  return cents / 100;
}

function updateTotal(form) {
  const { items } = readLines(form);
  form.querySelector('output').value = total(items).toFixed(2);
}

/** The transaction a form describes, blank fields left out. */
function transactionOf(form) {
  const kind = form.dataset.kind;
  const text = (name) => {
    const input = form.querySelector(`input[name="${name}"]`);
    const value = input ? input.value.trim() : '';
    return value === '' ? undefined : value;
  };
  const { items, elements } = readLines(form);
  const tx = {
    kind,
    store_id: till.store,
    terminal_id: kind === 'return' ? text('terminal_id') ?? till.terminal : till.terminal,
    receipt_id: text('receipt_id'),
    customer_id: text('customer_id'),
    amount: total(items),
    items,
  };
  if (kind === 'purchase') {
    tx.card_id = text('card_id');
    tx.user_id = text('user_id');
  }
  return { tx, elements };
}

async function submit(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const button = form.querySelector('button[type="submit"]');
  const label = button.textContent;
  clearError();
  const { tx, elements } = transactionOf(form);
  const photo = till.photo;
  const body = new FormData();
  body.append('transaction', JSON.stringify(tx));
  if (photo) body.append('photo', photo, 'till.jpg');

  button.disabled = true;
  button.textContent = 'Deciding…';
  try {
    const res = await fetch('/v1/transactions', { method: 'POST', body, headers: { accept: 'application/json' } });
    if (res.status === 401) {
      needSignIn();
      return;
    }
    const data = await res.json().catch(() => null);
    if (!res.ok || !data?.transaction_id) {
      showError(res.status, data?.error, form, elements);
      return;
    }
    const record = await fetchJson(`/v1/transactions/${encodeURIComponent(data.transaction_id)}`);
    showResult(tx, data, record?.transaction?.retail ?? null);
    if (photo) {
      setPhoto(null);
      cameraStatus(`The photo went with the ${tx.kind}. Capture a new one for the next transaction.`);
    }
    if (tx.kind === 'purchase') {
      till.lastPurchase = tx;
      resetForm(form);
      newReceipt();
    } else {
      till.lastPurchase = null;
      resetForm(form);
    }
    byId('return-this').hidden = !till.lastPurchase;
    refreshRecent();
  } catch (e) {
    showError(0, { code: 'network', message: `the server could not be reached (${e.message})` }, form, elements);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function resetForm(form) {
  for (const input of form.querySelectorAll('.fields input')) {
    if (input.name !== 'terminal_id') input.value = '';
  }
  clearLines(form);
  addLine(form);
}

function returnLastPurchase() {
  const bought = till.lastPurchase;
  if (!bought) return;
  const form = byId('return-form');
  selectTab(byId('tab-return'));
  byId('return-receipt').value = bought.receipt_id ?? '';
  byId('return-customer').value = bought.customer_id ?? '';
  clearLines(form);
  for (const item of bought.items) addLine(form, item);
  if (!bought.items.length) addLine(form);
  form.querySelector('button[type="submit"]').focus();
}

async function fetchJson(url) {
  try {
    const res = await fetch(url, { headers: { accept: 'application/json' } });
    if (res.status === 401) needSignIn();
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}

// ---- outcome ------------------------------------------------------------------------------

function clearError() {
  byId('error').hidden = true;
  for (const el of document.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
}

/** Shows the API's `{"code", "field", "message"}` and marks the input it names. */
function showError(status, error, form, elements) {
  const code = error?.code ?? `http_${status}`;
  const field = error?.field ?? '';
  const message = error?.message ?? `the server answered HTTP ${status} without an explanation`;
  byId('error-message').textContent = message;
  byId('error-field').textContent = field || '—';
  byId('error-where').textContent = fieldLabel(field, form);
  byId('error-code').textContent = code;
  const box = byId('error');
  box.dataset.field = field;
  box.dataset.code = code;
  box.hidden = false;
  byId('result').hidden = true;
  byId('outcome-empty').hidden = true;

  let input = null;
  const line = /^items\[(\d+)\]\.(\w+)$/.exec(field);
  if (line) {
    input = elements[Number(line[1])]?.querySelector(`input[name="${line[2]}"]`) ?? null;
  } else if (field === 'photo') {
    cameraStatus(`The photo was refused: ${message}`, true);
    input = byId('capture');
  } else if (field === 'items') {
    input = form.querySelector('.line input');
  } else if (field) {
    input = form.querySelector(`input[name="${CSS.escape(field)}"]`);
  }
  if (input) {
    if (input.tagName === 'INPUT') {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', 'error-message');
    }
    input.focus();
  }
}

/** The field an error names, as the page labels it ("item 2 price", "Customer id"). */
function fieldLabel(field, form) {
  const line = /^items\[(\d+)\]\.(\w+)$/.exec(field);
  if (line) return `item ${Number(line[1]) + 1} ${line[2]}`;
  if (field === 'photo') return 'the captured photo';
  if (field === 'body' || field === 'transaction') return 'the whole request';
  if (field === 'items') return 'the items';
  const input = field && form.querySelector(`input[name="${CSS.escape(field)}"]`);
  const label = input && form.querySelector(`label[for="${input.id}"]`);
  return label ? label.firstChild.textContent.trim() : field || 'the request';
}

function showResult(tx, decision, retail) {
  byId('outcome-empty').hidden = true;
  const result = byId('result');
  result.hidden = false;
  result.dataset.transactionId = decision.transaction_id;
  result.dataset.kind = tx.kind;

  const badge = byId('result-decision');
  badge.textContent = DECISION_WORDS[decision.decision] ?? decision.decision;
  badge.dataset.decision = decision.decision;
  badge.className = `badge decision-${decision.decision}`;
  byId('result-score').textContent = Number(decision.score).toFixed(0);
  byId('result-advice').textContent = DECISION_ADVICE[decision.decision] ?? '';
  byId('result-advice').className = `advice decision-${decision.decision}`;

  const outcome = retail?.photo ?? 'unknown';
  const photo = byId('result-photo');
  photo.textContent = PHOTO_WORDS[outcome] ?? outcome;
  photo.dataset.outcome = outcome;
  photo.className = `photo-outcome ${outcome === 'verified' ? 'good' : outcome === 'missing' || outcome === 'unknown' ? '' : 'bad'}`;

  const image = byId('result-image');
  if (retail?.photo_ref) {
    image.src = `/v1/photos/${encodeURIComponent(retail.photo_ref)}`;
    image.hidden = false;
  } else {
    image.removeAttribute('src');
    image.hidden = true;
  }

  byId('result-kind').textContent = `${tx.kind === 'purchase' ? 'Purchase' : 'Return'} ${tx.receipt_id ?? '(no receipt)'} · ${tx.amount.toFixed(2)} ·`;
  byId('result-id').textContent = decision.transaction_id;

  const list = byId('result-reasons');
  const reasons = decision.reasons ?? [];
  list.replaceChildren(
    ...reasons.map((reason) => {
      const li = document.createElement('li');
      li.dataset.testid = 'result-reason';
      li.dataset.rule = reason.rule ?? '';
      const rule = document.createElement('span');
      rule.className = 'rule';
      rule.textContent = reason.rule ?? reason.category ?? 'reason';
      const weight = document.createElement('span');
      weight.className = 'weight';
      weight.textContent = reason.weight !== undefined ? ` +${reason.weight}` : '';
      const detail = document.createElement('div');
      detail.textContent = reason.detail ?? '';
      li.append(rule, weight, detail);
      return li;
    }),
  );
  byId('result-no-reasons').hidden = reasons.length > 0;
}

// ---- recent -------------------------------------------------------------------------------

async function refreshRecent() {
  const status = byId('recent-status');
  const url =
    `/v1/stores/${encodeURIComponent(till.store)}/transactions` +
    `?terminal=${encodeURIComponent(till.terminal)}&limit=20`;
  const data = await fetchJson(url);
  if (!data) {
    status.textContent = 'The recent transactions could not be loaded.';
    return;
  }
  const rows = data.transactions.map(recentRow);
  byId('recent-rows').replaceChildren(...rows);
  byId('recent-rows').closest('table').hidden = rows.length === 0;
  status.textContent = rows.length ? '' : 'Nothing recorded at this till yet.';
}

function recentRow(t) {
  const tr = document.createElement('tr');
  tr.dataset.testid = 'recent-row';
  tr.dataset.transactionId = t.transaction_id;
  tr.dataset.decision = t.decision;
  if (t.decision === 'block') tr.className = 'blocked';
  const cell = (text, className) => {
    const td = document.createElement('td');
    if (className) td.className = className;
    if (text !== undefined) td.textContent = text;
    tr.append(td);
    return td;
  };

  const photoCell = cell();
  if (t.photo_ref) {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.loading = 'lazy';
    img.src = `/v1/photos/${encodeURIComponent(t.photo_ref)}`;
    img.alt = `Photo for ${t.kind} ${t.receipt_id ?? ''}: ${PHOTO_WORDS[t.photo] ?? t.photo}`;
    img.dataset.testid = 'recent-photo';
    photoCell.append(img);
  } else {
    const none = document.createElement('span');
    none.className = 'no-thumb';
    none.textContent = 'no photo';
    photoCell.append(none);
  }
  const when = new Date(t.timestamp);
  cell(Number.isNaN(when.getTime()) ? t.timestamp : when.toLocaleTimeString());
  cell(t.kind);
  cell(t.receipt_id ?? '—');
  cell(t.customer_id ?? '—');
  cell(Number(t.amount).toFixed(2), 'num');
  const decision = cell();
  const badge = document.createElement('span');
  badge.className = `badge small decision-${t.decision}`;
  badge.textContent = DECISION_WORDS[t.decision] ?? t.decision;
  const photo = document.createElement('div');
  photo.className = 'muted small';
  photo.textContent = `photo: ${PHOTO_WORDS[t.photo] ?? t.photo ?? 'none sent'}`;
  decision.append(badge, photo);
  return tr;
}

start();
