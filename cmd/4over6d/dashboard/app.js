// The 4over6d dashboard: polls the admin API about once a second and keeps
// the page's tables in step, row by row (so focus and scrolling survive an
// update). No framework and no other file: the admin endpoint serves this
// from the binary.

const POLL_MS = 1000;
const RETRY_MS = 2000;
const TIMEOUT_MS = 5000;
const TOKEN_KEY = '4over6d.token';
const HISTORY_POINTS = 60; // 5 minutes of 5 s means, as the API keeps them

const $ = (id) => document.getElementById(id);

// --- the admin token ---------------------------------------------------------

let memoryToken = ''; // when session storage is off

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

function setToken(value) {
  memoryToken = value;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives as long as the page
  }
  $('forget-token').hidden = !value;
}

// takeTokenFromFragment moves #token=... into session storage and out of
// the address bar (and so out of the history and of screenshots). The
// value is percent-decoded only: a "+" in a token stays a "+".
function takeTokenFromFragment() {
  const parts = location.hash.slice(1).split('&');
  const i = parts.findIndex((p) => p.startsWith('token='));
  if (i < 0) return;
  let value = parts[i].slice('token='.length);
  try {
    value = decodeURIComponent(value);
  } catch {
    // not percent-encoded: take it as it is
  }
  setToken(value.trim());
  parts.splice(i, 1);
  const rest = parts.filter((p) => p !== '').join('&');
  history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
}

// --- talking to the API --------------------------------------------------------

// ApiError is an answer with an error status; message is the API's
// {"error": ...} text when there is one.
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Unreachable is a request that got no HTTP answer at all.
class Unreachable extends Error {}

let clockOffset = 0; // server clock minus ours, from the Date header

function noteServerClock(res) {
  const date = Date.parse(res.headers.get('Date') || '');
  if (Number.isNaN(date)) return;
  const offset = date + 500 - Date.now(); // Date has whole seconds
  clockOffset = Math.abs(offset) > 2000 ? offset : 0;
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  let res;
  let text;
  try {
    res = await fetch(path, {
      method, headers, cache: 'no-store', credentials: 'same-origin', signal: abort.signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    text = await res.text();
  } catch (err) {
    throw new Unreachable(err.name === 'AbortError' ? 'no answer within 5 s' : String(err.message || err));
  } finally {
    clearTimeout(timer);
  }
  noteServerClock(res);
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok) {
    const msg = doc && typeof doc.error === 'string' ? doc.error : (text.trim().slice(0, 200) || res.statusText);
    throw new ApiError(res.status, msg || 'HTTP ' + res.status);
  }
  return doc;
}

// --- formatting ------------------------------------------------------------------

function si(value, units) {
  let i = 0;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  const digits = i === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return value.toFixed(digits) + ' ' + units[i];
}

const formatRate = (bps) => si(Number(bps) || 0, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s']);
const formatBytes = (n) => si(Number(n) || 0, ['B', 'kB', 'MB', 'GB', 'TB']);
const formatCount = (n) => (Number(n) || 0).toLocaleString('en');

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' min ' + (s % 60) + ' s';
  const h = Math.floor(m / 60);
  if (h < 24) return h + ' h ' + (m % 60) + ' min';
  return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
}

const serverNow = () => Date.now() + clockOffset;

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '–';
  const ms = serverNow() - t;
  return ms < 1000 ? 'just now' : formatDuration(ms) + ' ago';
}

const clockTime = (ms) => new Date(ms).toLocaleTimeString('en-GB');

// --- building rows ---------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function cell(label, field, cls) {
  const td = el('td', { role: 'cell', 'data-label': label, 'data-field': field });
  if (cls) td.className = cls;
  return td;
}

function sparkline() {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 60 16');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('aria-hidden', 'true');
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('class', 'spark-base');
  for (const [k, v] of Object.entries({ x1: 0, y1: 15.5, x2: 60, y2: 15.5 })) base.setAttribute(k, v);
  const area = document.createElementNS(SVG, 'polygon');
  area.setAttribute('class', 'spark-area');
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('class', 'spark-line');
  svg.append(base, area, line);
  return svg;
}

// drawSparkline plots the history with the newest value at the right edge,
// one step per value, scaled to the largest value shown.
function drawSparkline(svg, history) {
  const values = (Array.isArray(history) ? history : []).slice(-HISTORY_POINTS).map((v) => Number(v) || 0);
  const max = Math.max(1, ...values);
  const step = 60 / (HISTORY_POINTS - 1);
  const points = values.map((v, i) => {
    const x = 60 - (values.length - 1 - i) * step;
    const y = 15 - (v / max) * 14;
    return x.toFixed(2) + ',' + y.toFixed(2);
  });
  svg.dataset.points = String(values.length);
  const [, area, line] = svg.children;
  line.setAttribute('points', points.join(' '));
  area.setAttribute('points', points.length ? points[0].split(',')[0] + ',16 ' + points.join(' ') + ' 60,16' : '');
}

function rateCell(label, field) {
  const td = cell(label, field, 'rate');
  const span = el('span', { class: 'rate-text' });
  td.append(span, sparkline());
  return td;
}

function setRate(td, bps, history) {
  td.dataset.bps = String(Number(bps) || 0);
  td.firstChild.textContent = formatRate(bps);
  drawSparkline(td.lastChild, history);
}

function newSessionRow(key) {
  const tr = el('tr', { role: 'row', 'data-key': key });
  const actions = cell('', 'actions', 'actions');
  actions.append(
    el('button', { type: 'button', class: 'danger', 'data-action': 'kick' }, 'Kick'),
    el('button', { type: 'button', class: 'quiet', 'data-action': 'reserve' }, 'Reserve'),
  );
  tr.append(
    cell('Client', 'client', 'mono'), cell('Address', 'addr', 'mono'), cell('Connected for', 'since'),
    cell('Last heard', 'last_heard'), rateCell('In', 'rate_in'), rateCell('Out', 'rate_out'),
    cell('Drops', 'drops', 'num'), actions,
  );
  return tr;
}

const field = (tr, name) => tr.querySelector(`[data-field="${name}"]`);

function updateSessionRow(tr, s) {
  tr.dataset.addr = s.addr || '';
  tr.dataset.client = s.client || '';
  field(tr, 'client').textContent = s.client || '–';
  field(tr, 'addr').textContent = s.addr || '(none yet)';
  field(tr, 'since').textContent = formatDuration(serverNow() - Date.parse(s.since));
  field(tr, 'since').title = 'since ' + new Date(s.since).toLocaleString('en-GB');
  const heard = field(tr, 'last_heard');
  heard.textContent = ago(s.last_heard);
  heard.classList.toggle('stale', serverNow() - Date.parse(s.last_heard) > 10000);
  setRate(field(tr, 'rate_in'), s.rate_in_bps, s.history_in_bps);
  setRate(field(tr, 'rate_out'), s.rate_out_bps, s.history_out_bps);
  field(tr, 'rate_in').title = formatBytes(s.bytes_in) + ' in ' + formatCount(s.packets_in) + ' packets from the client';
  field(tr, 'rate_out').title = formatBytes(s.bytes_out) + ' in ' + formatCount(s.packets_out) + ' packets to the client';
  const drops = field(tr, 'drops');
  drops.textContent = formatCount(s.drops);
  drops.classList.toggle('warn', Number(s.drops) > 0);
  const who = `${s.addr} (${s.client})`;
  for (const b of tr.querySelectorAll('button')) {
    b.dataset.addr = s.addr || '';
    b.dataset.client = s.client || '';
    b.disabled = !s.addr;
  }
  tr.querySelector('[data-action=kick]').setAttribute('aria-label', 'Kick ' + who);
  tr.querySelector('[data-action=reserve]').setAttribute('aria-label', 'Reserve ' + who + ' for this client');
}

function newReservationRow(key) {
  const tr = el('tr', { role: 'row', 'data-key': key });
  const actions = cell('', 'actions', 'actions');
  actions.append(el('button', { type: 'button', class: 'danger', 'data-action': 'unreserve' }, 'Remove'));
  tr.append(cell('Client', 'client', 'mono'), cell('Address', 'addr', 'mono'), cell('Rate limit', 'rate'), actions);
  return tr;
}

function updateReservationRow(tr, r) {
  tr.dataset.client = r.client;
  tr.dataset.addr = r.addr;
  field(tr, 'client').textContent = r.client;
  field(tr, 'addr').textContent = r.addr;
  field(tr, 'rate').textContent = r.rate || 'server default';
  const b = tr.querySelector('button');
  b.dataset.client = r.client;
  b.dataset.addr = r.addr;
  b.setAttribute('aria-label', `Remove the reservation of ${r.addr} for ${r.client}`);
}

// syncRows makes tbody hold one row per item, in order, reusing the rows
// that are there (a row is moved only when out of place, so a focused
// button keeps its focus).
function syncRows(tbody, items, keyOf, make, update) {
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  let at = tbody.firstChild;
  for (const item of items) {
    const key = keyOf(item);
    let tr = old.get(key);
    old.delete(key);
    if (!tr) tr = make(key);
    update(tr, item);
    if (tr !== at) tbody.insertBefore(tr, at);
    else at = at.nextSibling;
  }
  for (const tr of old.values()) {
    // Focus in a leaving row goes to the table's heading, not to <body>.
    if (tr.contains(document.activeElement)) tbody.closest('section').querySelector('h2').focus();
    tr.remove();
  }
}

// --- rendering the answers ---------------------------------------------------------

function renderSessions(sessions) {
  const list = Array.isArray(sessions) ? sessions : [];
  // A row is one connection: a client that reconnects (another port) gets
  // a new row, even with the same address.
  syncRows($('session-rows'), list, (s) => s.client + ' ' + s.addr, newSessionRow, updateSessionRow);
  $('sessions-empty').hidden = list.length > 0;
  let inBps = 0, outBps = 0, inBytes = 0, outBytes = 0, drops = 0;
  for (const s of list) {
    inBps += Number(s.rate_in_bps) || 0;
    outBps += Number(s.rate_out_bps) || 0;
    inBytes += Number(s.bytes_in) || 0;
    outBytes += Number(s.bytes_out) || 0;
    drops += Number(s.drops) || 0;
  }
  $('sessions-count').textContent = String(list.length);
  $('total-in').textContent = formatRate(inBps);
  $('total-out').textContent = formatRate(outBps);
  $('total-in').dataset.bps = String(inBps);
  $('total-out').dataset.bps = String(outBps);
  $('total-bytes-in').textContent = formatBytes(inBytes) + ' in total';
  $('total-bytes-out').textContent = formatBytes(outBytes) + ' in total';
  $('total-drops').textContent = formatCount(drops);
}

function renderPool(p) {
  const size = Number(p.size) || 0;
  $('pool-leased').textContent = formatCount(p.leased);
  $('pool-size').textContent = formatCount(size);
  $('pool-reserved').textContent = formatCount(p.reserved);
  $('pool-free').textContent = formatCount(p.free);
  const pct = (n) => (size > 0 ? Math.min(100, (100 * (Number(n) || 0)) / size) : 0);
  const leased = pct(p.leased);
  $('pool-bar-leased').setAttribute('width', leased.toFixed(2));
  $('pool-bar-reserved').setAttribute('x', leased.toFixed(2));
  $('pool-bar-reserved').setAttribute('width', Math.min(100 - leased, pct(p.reserved)).toFixed(2));
}

function renderReservations(list) {
  const items = Array.isArray(list) ? list : [];
  syncRows($('reservation-rows'), items, (r) => r.client, newReservationRow, updateReservationRow);
  $('reservations-empty').hidden = items.length > 0;
}

// --- connection state ------------------------------------------------------------------

let state = 'loading';
let lastAnswer = 0;

function setState(next, text) {
  const changed = next !== state;
  state = next;
  document.body.dataset.state = next;
  $('unreachable').hidden = next !== 'unreachable';
  $('auth').hidden = next !== 'auth';
  const status = $('status');
  if (status.textContent !== text) status.textContent = text;
  if (changed && next === 'auth') $('token-input').focus();
}

function showError(text) {
  $('error-text').textContent = text;
  $('error').hidden = false;
}

function notice(text) {
  $('notice').textContent = text;
}

function describe(err) {
  if (err instanceof ApiError) return `${err.message} (HTTP ${err.status})`;
  if (err instanceof Unreachable) return 'the server did not answer: ' + err.message;
  return String(err);
}

function pollFailed(err) {
  if (err instanceof Unreachable) {
    $('unreachable-since').textContent = lastAnswer ? clockTime(lastAnswer) : 'no answer yet';
    setState('unreachable', 'Server unreachable, retrying');
  } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    $('auth-reason').textContent = err.status === 401
      ? 'This server needs the admin token (the file given to -admin-token-file).'
      : 'The server refused this token: ' + err.message;
    setState('auth', err.status === 401 ? 'Admin token needed' : 'Token refused');
  } else {
    setState('error', 'Server error: ' + describe(err));
  }
}

// --- polling -------------------------------------------------------------------------------

let pollTimer = 0;
let polling = false;
let pollAgain = false;

// poll fetches everything once and schedules the next round; a call while
// a round is running makes it run again right after.
async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  clearTimeout(pollTimer);
  polling = true;
  try {
    const [s, p, r] = await Promise.all([
      api('GET', 'api/v1/sessions'), api('GET', 'api/v1/pool'), api('GET', 'api/v1/reservations'),
    ]);
    renderSessions(s && s.sessions);
    renderPool(p || {});
    renderReservations(r && r.reservations);
    lastAnswer = Date.now();
    $('updated').textContent = clockTime(lastAnswer);
    $('updated').dateTime = new Date(lastAnswer).toISOString();
    setState('live', 'Live');
  } catch (err) {
    pollFailed(err);
  } finally {
    polling = false;
  }
  if (pollAgain) {
    pollAgain = false;
    return poll();
  }
  if (state === 'auth') return; // until a token is given
  if (document.hidden) return; // resumed by visibilitychange
  pollTimer = setTimeout(poll, state === 'unreachable' ? RETRY_MS : POLL_MS);
}

// --- actions -------------------------------------------------------------------------------

const dialog = $('confirm');
let pending = null; // what the confirm dialog's OK button does

function confirmAction(title, text, okLabel, withBan, action) {
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  $('ban-field').hidden = !withBan;
  $('ban').value = '';
  dialog.returnValue = '';
  pending = action;
  dialog.showModal();
}

dialog.addEventListener('close', () => {
  const action = pending;
  pending = null;
  if (dialog.returnValue === 'ok' && action) action();
});

async function run(what, request, done) {
  $('error').hidden = true;
  try {
    const doc = await request();
    notice(done(doc));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) pollFailed(err);
    showError(`Could not ${what}: ${describe(err)}`);
  }
  poll();
}

function kick(addr, client) {
  confirmAction('Kick this session?', `Disconnect ${client}, which holds ${addr}? Its address goes back to the pool.`,
    'Kick', true, () => {
      const ban = $('ban').value;
      const path = 'api/v1/sessions/' + encodeURIComponent(addr) + (ban ? '?ban=' + encodeURIComponent(ban) : '');
      run('kick ' + addr, () => api('DELETE', path), (doc) => {
        let text = `Kicked ${addr} (${(doc && doc.client) || client})`;
        if (doc && doc.banned_until) text += ', refused until ' + new Date(doc.banned_until).toLocaleString('en-GB');
        return text + '.';
      });
    });
}

function unreserve(client, addr) {
  confirmAction('Remove this reservation?', `${addr} will no longer be kept for ${client}.`, 'Remove', false, () => {
    run('remove the reservation of ' + client, () => api('DELETE', 'api/v1/reservations/' + encodeURIComponent(client)),
      () => `Removed the reservation of ${addr} for ${client}.`);
  });
}

// clientAddress takes the IPv6 address out of "[addr]:port" as sessions
// show it, so a pasted session client works in the form.
function clientAddress(text) {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(text.trim());
  return m ? m[1] : text.trim();
}

function reserve(event) {
  event.preventDefault();
  const client = clientAddress($('reserve-client').value);
  const addr = $('reserve-addr').value.trim();
  const rate = $('reserve-rate').value.trim();
  const error = $('reserve-error');
  error.textContent = '';
  if (!client || !addr) {
    error.textContent = 'Give the client IPv6 address and the IPv4 address to reserve.';
    (client ? $('reserve-addr') : $('reserve-client')).focus();
    return;
  }
  const body = rate ? { addr, rate } : { addr };
  $('reserve-submit').disabled = true;
  api('PUT', 'api/v1/reservations/' + encodeURIComponent(client), body).then((doc) => {
    notice(`Reserved ${(doc && doc.addr) || addr} for ${(doc && doc.client) || client}.`);
    $('reserve-form').reset();
  }, (err) => {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) pollFailed(err);
    error.textContent = 'Not reserved: ' + describe(err);
  }).finally(() => {
    $('reserve-submit').disabled = false;
    poll();
  });
}

function prefillReservation(addr, client) {
  $('reserve-client').value = clientAddress(client);
  $('reserve-addr').value = addr;
  $('reserve-rate').focus();
}

// --- wiring --------------------------------------------------------------------------------

document.addEventListener('click', (event) => {
  const b = event.target.closest('button[data-action]');
  if (!b || b.disabled) return;
  const { addr, client } = b.dataset;
  if (b.dataset.action === 'kick') kick(addr, client);
  else if (b.dataset.action === 'reserve') prefillReservation(addr, client);
  else if (b.dataset.action === 'unreserve') unreserve(client, addr);
});

$('reserve-form').addEventListener('submit', reserve);
$('error-close').addEventListener('click', () => { $('error').hidden = true; });
$('forget-token').addEventListener('click', () => {
  setToken('');
  poll();
});
$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  setToken($('token-input').value.trim());
  $('token-input').value = '';
  setState('loading', 'Connecting…');
  poll();
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state !== 'auth') poll();
});

takeTokenFromFragment();
setToken(token());
poll();
