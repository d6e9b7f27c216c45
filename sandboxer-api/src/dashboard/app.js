// The sandboxer dashboard. Plain script, no dependencies: it talks to the
// server's own /v1 routes with the token the user signs in with (kept in
// this tab's sessionStorage only), and writes text with textContent only.
'use strict';

const POLL_MS = 3000;
const HOSTS_POLL_MS = 15000;
const CHART_POLL_MS = 30000;
const TOKEN_KEY = 'sandboxer.token';

const $ = (sel) => document.querySelector(sel);

const app = {
  token: sessionStorage.getItem(TOKEN_KEY),
  data: null,
  // server clock minus ours, in ms (time left counts on the server's clock)
  skew: 0,
  detail: null,
  detailLedger: [],
  lastRefresh: 0,
  lastHosts: 0,
  lastChart: 0,
  busy: false,
};

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function message(body, fallback) {
  if (body && body.message) return body.hint ? `${body.message} (${body.hint})` : body.message;
  return fallback;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  let j = null;
  try {
    j = await r.json();
  } catch (_) {
    j = null;
  }
  if (r.status === 401) {
    signOut(message(j, 'The server refused the token.'));
    throw new Error('unauthorized');
  }
  if (!r.ok) {
    const e = new Error(message(j, `${r.status} ${r.statusText}`));
    e.status = r.status;
    throw e;
  }
  return j;
}

function now() {
  return Date.now() + app.skew;
}

function duration(ms) {
  const neg = ms < 0;
  let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  let out;
  if (d > 0) out = `${d}d ${h}h`;
  else if (h > 0) out = `${h}h ${String(m).padStart(2, '0')}m`;
  else if (m > 0) out = `${m}m ${String(s).padStart(2, '0')}s`;
  else out = `${s}s`;
  return neg ? `-${out}` : out;
}

function credits(x) {
  const n = typeof x === 'number' ? x : parseFloat(x || '0');
  return Number.isFinite(n) ? n.toFixed(4) : '—';
}

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function when(t) {
  return t ? new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—';
}

// The cost so far of a metered sandbox: what was settled, or its price for
// the time it has run, never more than it holds.
function costSoFar(s) {
  if (!s.cost) return null;
  if (s.cost.settled !== null && s.cost.settled !== undefined) return parseFloat(s.cost.settled);
  const from = Date.parse(s.ready_at || s.created_at);
  const to = s.ended_at ? Date.parse(s.ended_at) : now();
  const hours = Math.max(0, to - from) / 3600000;
  const c = parseFloat(s.cost.price_per_hour) * hours;
  return Math.min(c, parseFloat(s.cost.held));
}

function timeLeft(s) {
  if (['destroyed', 'failed'].includes(s.state)) return { text: 'ended', cls: 'ended' };
  if (!s.expires_at) return { text: '—', cls: '' };
  const left = Date.parse(s.expires_at) - now();
  if (left <= 0) return { text: 'expired', cls: 'expired' };
  return { text: duration(left), cls: left < 60000 ? 'soon' : '' };
}

function say(text, isError) {
  const s = $('#status');
  s.textContent = text || '';
  s.classList.toggle('error', !!isError);
}

// ------------------------------------------------------------------ session

function showSignedIn(yes) {
  $('#signin-view').hidden = yes;
  $('#nav').hidden = !yes;
  $('#session').hidden = !yes;
  if (!yes) {
    for (const v of document.querySelectorAll('.view')) v.hidden = true;
  }
}

function signOut(why) {
  app.token = null;
  app.data = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn(false);
  $('#signin-error').textContent = why || '';
  $('#token').value = '';
  $('#token').focus();
}

async function signIn(token) {
  app.token = token.trim();
  try {
    const who = await api('GET', '/v1/whoami');
    sessionStorage.setItem(TOKEN_KEY, app.token);
    $('#whoami').textContent = `${who.actor} (token ${who.token})`;
    $('#signin-error').textContent = '';
    showSignedIn(true);
    if (!location.hash || location.hash === '#') location.hash = '#/sandboxes';
    await route();
    return true;
  } catch (e) {
    if (e.message !== 'unauthorized') $('#signin-error').textContent = e.message;
    return false;
  }
}

// ------------------------------------------------------------------ views

function currentView() {
  const h = location.hash.replace(/^#\/?/, '');
  if (h.startsWith('sandbox/')) return { view: 'sandbox', id: decodeURIComponent(h.slice(8)) };
  if (['hosts', 'credits', 'events'].includes(h)) return { view: h };
  return { view: 'sandboxes' };
}

async function route() {
  if (!app.token) return;
  const v = currentView();
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== `${v.view}-view`;
  for (const a of document.querySelectorAll('#nav a')) {
    const on = a.dataset.view === v.view || (v.view === 'sandbox' && a.dataset.view === 'sandboxes');
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (v.view !== 'sandbox') app.detail = null;
  app.lastHosts = 0;
  app.lastChart = 0;
  await refresh();
}

function filters() {
  const q = new URLSearchParams();
  for (const id of ['state', 'profile', 'host', 'actor']) {
    const v = $(`#f-${id}`).value.trim();
    if (v) q.set(id, v);
  }
  return q;
}

async function refresh() {
  if (!app.token || app.busy) return;
  app.busy = true;
  try {
    const v = currentView();
    const q = filters();
    const data = await api('GET', `/v1/dashboard${q.toString() ? `?${q}` : ''}`);
    app.data = data;
    app.skew = Date.parse(data.now) - Date.now();
    renderSandboxes();
    renderEvents();
    renderAccounts();
    if (v.view === 'sandbox') await loadDetail(v.id);
    if (v.view === 'hosts' && Date.now() - app.lastHosts > HOSTS_POLL_MS) await loadHosts();
    if (v.view === 'credits' && Date.now() - app.lastChart > CHART_POLL_MS) await loadChart();
    app.lastRefresh = Date.now();
    say('');
  } catch (e) {
    if (e.message !== 'unauthorized') say(`Could not refresh: ${e.message}`, true);
  } finally {
    app.busy = false;
  }
}

function fillSelect(sel, values) {
  const keep = sel.value;
  const have = Array.from(sel.options).map((o) => o.value);
  for (const v of values) {
    if (!have.includes(v)) sel.append(el('option', { value: v, text: v }));
  }
  sel.value = keep;
}

function renderSandboxes() {
  const d = app.data;
  fillSelect($('#f-profile'), d.profiles);
  fillSelect($('#f-host'), d.hosts);
  $('#f-actor-label').hidden = !d.admin;
  const counts = $('#counts');
  counts.textContent = '';
  if (d.counts) {
    for (const [k, n] of Object.entries(d.counts)) {
      counts.append(el('span', { class: `count state-${k}` }, `${k} `, el('strong', { text: String(n) })));
    }
  }
  const tbody = $('#sandboxes tbody');
  // Keep the keyboard where it was across the refresh: the row link that
  // had focus gets it back in the new rows.
  const active = document.activeElement;
  const focused = active && tbody.contains(active) ? active.closest('tr')?.dataset.id : null;
  tbody.textContent = '';
  for (const s of d.sandboxes) {
    const left = timeLeft(s);
    const cost = costSoFar(s);
    const where = s.host === 'local' ? `local (${s.extension})` : `${s.host} (${s.extension})`;
    tbody.append(el('tr', { 'data-id': s.id, 'data-state': s.state },
      el('td', { 'data-label': 'Sandbox' },
        el('a', { href: `#/sandbox/${encodeURIComponent(s.id)}`, class: 'open', text: s.id })),
      el('td', { 'data-label': 'State' }, el('span', { class: `state state-${s.state}`, text: s.state })),
      el('td', { 'data-label': 'Profile', text: s.profile }),
      el('td', { 'data-label': 'Host', text: where }),
      el('td', { 'data-label': 'Actor', text: s.actor }),
      el('td', { 'data-label': 'Age', class: 'age', 'data-since': s.created_at,
        text: duration(now() - Date.parse(s.created_at)) }),
      el('td', { 'data-label': 'Time left', class: `left ${left.cls}`, text: left.text }),
      el('td', { 'data-label': 'Cost', class: 'cost', text: cost === null ? '—' : credits(cost) })));
  }
  if (focused) {
    const again = tbody.querySelector(`tr[data-id="${CSS.escape(focused)}"] a.open`);
    if (again) again.focus();
  }
  $('#sandboxes-empty').hidden = d.sandboxes.length > 0;
  $('#sandboxes-truncated').hidden = !d.truncated;
}

// Every second: the countdowns, ages and costs move without a request.
function tick() {
  if (app.data) {
    const byId = new Map(app.data.sandboxes.map((s) => [s.id, s]));
    for (const tr of document.querySelectorAll('#sandboxes tbody tr')) {
      const s = byId.get(tr.dataset.id);
      if (!s) continue;
      const left = timeLeft(s);
      const td = tr.querySelector('.left');
      td.textContent = left.text;
      td.className = `left ${left.cls}`;
      tr.querySelector('.age').textContent = duration(now() - Date.parse(s.created_at));
      const c = costSoFar(s);
      tr.querySelector('.cost').textContent = c === null ? '—' : credits(c);
    }
  }
  if (app.detail) {
    const left = timeLeft(app.detail);
    const dd = $('#d-left');
    if (dd) dd.textContent = left.text;
  }
  if (app.lastRefresh) {
    $('#updated').textContent = `Updated ${duration(Date.now() - app.lastRefresh)} ago; refreshes every ${POLL_MS / 1000}s.`;
  }
  if (app.token && Date.now() - app.lastRefresh >= POLL_MS) refresh();
}

// ------------------------------------------------------------------ one sandbox

async function loadDetail(id) {
  const s = await api('GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
  const first = !app.detail || app.detail.id !== s.id;
  const changed = first || app.detail.state !== s.state || app.detail.updated_at !== s.updated_at;
  app.detail = s;
  if (changed) {
    try {
      app.detailLedger = await api('GET', `/v1/credits/ledger?sandbox=${encodeURIComponent(id)}`);
    } catch (_) {
      app.detailLedger = [];
    }
  }
  renderDetail(first);
}

function dl(target, rows) {
  target.textContent = '';
  for (const [k, v, id] of rows) {
    target.append(el('dt', { text: k }), el('dd', { id, text: v === null || v === undefined ? '—' : String(v) }));
  }
}

function renderDetail(first) {
  const s = app.detail;
  $('#d-title').textContent = s.id;
  const left = timeLeft(s);
  const reach = s.reachability ? s.reachability.address : null;
  const cost = costSoFar(s);
  dl($('#d-summary'), [
    ['State', s.reason ? `${s.state} (${s.reason})` : s.state, 'd-state'],
    ['Profile', s.profile],
    ['Extension', s.extension],
    ['Host', s.host],
    ['Actor', s.actor],
    ['Address', reach],
    ['Created', when(s.created_at)],
    ['Expires', when(s.expires_at)],
    ['Time left', left.text, 'd-left'],
    ['Cost so far', cost === null ? 'not metered' : credits(cost)],
  ]);
  const ended = ['destroyed', 'failed', 'destroying'].includes(s.state);
  $('#destroy').disabled = ended;
  $('#extend').disabled = ended || s.state !== 'ready';

  const events = [];
  events.push([s.created_at, 'recorded, provisioning']);
  if (s.ready_at) events.push([s.ready_at, 'ready']);
  if (s.ended_at) events.push([s.ended_at, `${s.state}${s.reason ? ` (${s.reason})` : ''}`]);
  else if (s.state === 'destroying') events.push([s.updated_at, 'destroying']);
  if (s.paused_at) events.push([s.paused_at, `paused, ${s.ttl_remaining_seconds}s of its TTL left`]);
  else if (s.resumed_at) events.push([s.resumed_at, `resumed (${s.paused_seconds}s paused in all)`]);
  if (s.recreated_as) events.push([s.updated_at, `recreated as ${s.recreated_as}`]);
  for (const e of app.detailLedger || []) {
    let what = `credits: ${e.kind}`;
    if (e.amount !== undefined) what += ` ${credits(e.amount)}`;
    if (e.kind === 'settle') what += ` for ${e.seconds}s`;
    events.push([e.at, what]);
  }
  events.sort((a, b) => Date.parse(a[0]) - Date.parse(b[0]));
  const tl = $('#d-timeline');
  tl.textContent = '';
  for (const [at, what] of events) {
    tl.append(el('li', {}, el('time', { datetime: at, text: when(at) }), ' ', what));
  }

  const rt = $('#d-route tbody');
  rt.textContent = '';
  const r = s.route || {};
  if (r.chosen) {
    rt.append(el('tr', {}, el('td', { text: r.chosen.route }), el('td', { text: r.chosen.extension }),
      el('td', { text: r.chosen.host }), el('td', { text: 'chosen' })));
  }
  for (const k of r.skipped || []) {
    rt.append(el('tr', {}, el('td', { text: k.route }), el('td', { text: k.extension }),
      el('td', { text: k.host }), el('td', { text: k.reason })));
  }

  const t = s.telemetry;
  if (t) {
    dl($('#d-telemetry'), [
      ['Collected', when(t.collected_at)],
      ['CPUs', t.cpus],
      ['Load (1/5/15 min)', [t.load_1, t.load_5, t.load_15].map((x) => (x === null || x === undefined ? '—' : x)).join(' / ')],
      ['Memory available', `${bytes(t.mem_available_bytes)} of ${bytes(t.mem_total_bytes)}`],
      ['Disk free', `${bytes(t.disk_free_bytes)}${t.disk_total_bytes ? ` of ${bytes(t.disk_total_bytes)}` : ''}`],
      ['Kernel', t.kernel],
    ]);
  } else {
    dl($('#d-telemetry'), [['Telemetry', 'none reported']]);
  }
  $('#d-record').textContent = JSON.stringify(s, null, 2);
  if (first) $('#d-title').focus();
}

async function extend(ev) {
  ev.preventDefault();
  const s = app.detail;
  const by = $('#extend-by').value.trim();
  $('#d-message').textContent = `Extending by ${by}…`;
  try {
    app.detail = await api('POST', `/v1/sandboxes/${encodeURIComponent(s.id)}/extend-ttl`, { by });
    $('#d-message').textContent = `Extended; it now expires ${when(app.detail.expires_at)}.`;
    renderDetail(false);
    await refresh();
  } catch (e) {
    if (e.message !== 'unauthorized') $('#d-message').textContent = `Could not extend: ${e.message}`;
  }
}

async function destroy() {
  const s = app.detail;
  if (!window.confirm(`Destroy ${s.id}?`)) return;
  $('#d-message').textContent = `Destroying ${s.id}…`;
  $('#destroy').disabled = true;
  try {
    app.detail = await api('DELETE', `/v1/sandboxes/${encodeURIComponent(s.id)}`);
    $('#d-message').textContent = `${s.id} is ${app.detail.state}.`;
    renderDetail(false);
    await refresh();
  } catch (e) {
    if (e.message !== 'unauthorized') $('#d-message').textContent = `Could not destroy: ${e.message}`;
    $('#destroy').disabled = false;
  }
}

// ------------------------------------------------------------------ hosts

function meter(label, value, max, text) {
  const id = `m-${Math.random().toString(36).slice(2)}`;
  return el('div', { class: 'bar' },
    el('label', { for: id, text: label }),
    el('meter', { id, min: '0', max: String(max), value: String(Math.min(value, max)),
      high: String(max * 0.8), optimum: '0' }),
    el('span', { class: 'bar-text', text }));
}

async function loadHosts() {
  app.lastHosts = Date.now();
  const rows = await api('GET', '/v1/hosts');
  const tele = new Map();
  if (app.data && app.data.admin) {
    await Promise.all(rows.filter((h) => h.reachable).map(async (h) => {
      try {
        tele.set(h.name, await api('GET', `/v1/hosts/${encodeURIComponent(h.name)}/telemetry`));
      } catch (e) {
        tele.set(h.name, { error: e.message });
      }
    }));
  }
  const box = $('#hosts');
  box.textContent = '';
  for (const h of rows) {
    const card = el('article', { class: `card ${h.reachable ? 'up' : 'down'}`, 'data-host': h.name },
      el('h3', {}, h.name, ' ', el('span', { class: `badge ${h.reachable ? 'ok' : 'bad'}`,
        text: h.reachable ? 'reachable' : 'unreachable' })),
      el('p', { class: 'hint', text: `${h.kind} ${h.address}${h.port ? `:${h.port}` : ''}` }));
    const cap = h.capacity;
    card.append(cap ? meter('Live', h.live, cap, `${h.live} / ${cap}`)
      : el('p', { text: `Live: ${h.live} (no capacity set)` }));
    if (h.error) card.append(el('p', { class: 'error', text: h.error }));
    const t = tele.get(h.name);
    if (t && !t.error) {
      const cpus = t.cpus || 1;
      if (t.load_1 !== null && t.load_1 !== undefined) {
        card.append(meter('CPU load', t.load_1, cpus, `${t.load_1.toFixed(2)} on ${cpus} CPU${cpus > 1 ? 's' : ''}`));
      }
      if (t.mem_total_bytes) {
        const used = t.mem_total_bytes - (t.mem_available_bytes || 0);
        card.append(meter('Memory', used, t.mem_total_bytes, `${bytes(used)} of ${bytes(t.mem_total_bytes)} used`));
      }
      if (t.disk_total_bytes) {
        const used = t.disk_total_bytes - (t.disk_free_bytes || 0);
        card.append(meter('Disk', used, t.disk_total_bytes, `${bytes(t.disk_free_bytes)} free of ${bytes(t.disk_total_bytes)}`));
      } else if (t.disk_free_bytes !== null && t.disk_free_bytes !== undefined) {
        card.append(el('p', { text: `Disk: ${bytes(t.disk_free_bytes)} free` }));
      }
    } else if (t && t.error) {
      card.append(el('p', { class: 'error', text: `Telemetry: ${t.error}` }));
    } else if (h.reachable && app.data && !app.data.admin) {
      card.append(el('p', { class: 'hint', text: 'Load, memory and disk: adm tokens only.' }));
    }
    box.append(card);
  }
}

// ------------------------------------------------------------------ credits

function renderAccounts() {
  const tbody = $('#accounts tbody');
  tbody.textContent = '';
  for (const a of app.data.accounts) {
    tbody.append(el('tr', { 'data-actor': a.actor },
      el('td', { 'data-label': 'Actor', text: a.actor }),
      el('td', { 'data-label': 'Available', text: credits(a.available) }),
      el('td', { 'data-label': 'Held', text: credits(a.held) }),
      el('td', { 'data-label': 'Spent', text: credits(a.spent) }),
      el('td', { 'data-label': 'Granted', text: credits(a.granted) })));
  }
}

async function loadChart() {
  app.lastChart = Date.now();
  const entries = await api('GET', '/v1/credits/ledger');
  const HOURS = 24;
  const end = Math.ceil(now() / 3600000) * 3600000;
  const start = end - HOURS * 3600000;
  const buckets = new Array(HOURS).fill(0);
  for (const e of entries) {
    if (e.kind !== 'settle') continue;
    const t = Date.parse(e.at);
    if (t < start || t >= end) continue;
    buckets[Math.floor((t - start) / 3600000)] += parseFloat(e.amount);
  }
  const max = Math.max(...buckets, 0);
  const NS = 'http://www.w3.org/2000/svg';
  const W = 480;
  const H = 120;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + 16}`);
  svg.setAttribute('class', 'chart');
  const bw = W / HOURS;
  buckets.forEach((v, i) => {
    const h = max > 0 ? (v / max) * H : 0;
    const r = document.createElementNS(NS, 'rect');
    r.setAttribute('x', String(i * bw + 1));
    r.setAttribute('y', String(H - h));
    r.setAttribute('width', String(bw - 2));
    r.setAttribute('height', String(Math.max(h, v > 0 ? 1 : 0)));
    const title = document.createElementNS(NS, 'title');
    title.textContent = `${new Date(start + i * 3600000).toISOString().slice(11, 16)}Z: ${credits(v)}`;
    r.append(title);
    svg.append(r);
  });
  const axis = document.createElementNS(NS, 'line');
  axis.setAttribute('x1', '0');
  axis.setAttribute('x2', String(W));
  axis.setAttribute('y1', String(H));
  axis.setAttribute('y2', String(H));
  axis.setAttribute('class', 'axis');
  svg.append(axis);
  for (const i of [0, 6, 12, 18]) {
    const t = document.createElementNS(NS, 'text');
    t.setAttribute('x', String(i * bw));
    t.setAttribute('y', String(H + 13));
    t.textContent = `${new Date(start + i * 3600000).toISOString().slice(11, 16)}Z`;
    svg.append(t);
  }
  const chart = $('#chart');
  chart.textContent = '';
  chart.append(svg);
  const total = buckets.reduce((a, b) => a + b, 0);
  $('#chart-total').textContent = `${credits(total)} credits spent in the last 24 hours (highest hour ${credits(max)}).`;
}

// ------------------------------------------------------------------ events

function renderEvents() {
  const ev = app.data.events;
  if (!ev) {
    dl($('#events'), [['Outbox', 'adm tokens only']]);
    return;
  }
  const relay = ev.relay || {};
  dl($('#events'), [
    ['Waiting events', ev.depth, 'ev-depth'],
    ['Oldest waiting', ev.oldest_age_secs === null ? '—' : duration(ev.oldest_age_secs * 1000)],
    ['Relay on this server', relay.running ? 'running' : 'off (no SANDBOXER_STATE_HUB_URL)'],
    ['Last delivery', when(relay.last_delivery_at)],
    ['Last error', ev.last_error ? `${when(ev.last_error.at)}: ${ev.last_error.message}`
      : (relay.last_error ? `${when(relay.last_error_at)}: ${relay.last_error}` : 'none')],
    ['Backing off until', when(ev.backing_off_until)],
  ]);
}

// ------------------------------------------------------------------ start

document.addEventListener('DOMContentLoaded', () => {
  $('#signin').addEventListener('submit', (ev) => {
    ev.preventDefault();
    signIn($('#token').value);
  });
  $('#signout').addEventListener('click', () => signOut('Signed out.'));
  $('#filters').addEventListener('change', () => refresh());
  $('#filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    refresh();
  });
  $('#extend-form').addEventListener('submit', extend);
  $('#destroy').addEventListener('click', destroy);
  window.addEventListener('hashchange', route);
  setInterval(tick, 1000);
  if (app.token) signIn(app.token);
  else showSignedIn(false);
});
