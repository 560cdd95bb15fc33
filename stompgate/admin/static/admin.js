'use strict';
// The admin page: plain JavaScript over the admin API (docs/admin.md), no build step.
// The credential lives in this tab's sessionStorage and goes out only in the
// Authorization header this script sets: the node never sets a cookie or asks the
// browser for a password, so no other site's page can act with it.

(function () {
  const API = 'api';
  const REFRESH_MS = 3000;
  const COLORS = ['#1a5fb4', '#c01c28', '#26a269', '#e66100', '#613583', '#865e3c', '#1c71d8', '#a51d2d'];
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let charts = {};
  let shownUser = null;

  function credential() { return sessionStorage.getItem('stompgate-admin'); }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    init.headers.Authorization = credential() || '';
    if (init.body !== undefined) init.headers['Content-Type'] = 'application/json';
    const response = await fetch(API + path, init);
    let answer = null;
    try { answer = await response.json(); } catch (e) { answer = { error: response.statusText }; }
    if (response.status === 401) { logout(answer.error); throw new Error(answer.error); }
    if (!response.ok) throw new Error(`${response.status}: ${answer.error || response.statusText}`);
    return answer;
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells) {
    const tr = el('tr');
    for (const cell of cells) {
      if (cell instanceof Node) { const td = el('td'); td.appendChild(cell); tr.appendChild(td); }
      else tr.appendChild(el('td', cell, typeof cell === 'number' ? 'num' : ''));
    }
    return tr;
  }

  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  const when = (ts) => new Date(ts * 1000).toLocaleString();
  function uptime(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
  }
  const last = (list) => (list && list.length ? list[list.length - 1] : 0);

  // ------------------------------------------------------------------ login

  function showLogin(message) {
    $('dashboard').hidden = true; $('logout').hidden = true; $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('password').focus();
  }

  function logout(message) {
    sessionStorage.removeItem('stompgate-admin');
    if (timer) clearInterval(timer);
    timer = null;
    showLogin(message);
  }

  $('login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const secret = $('password').value;
    const value = $('use-key').checked ? `Bearer ${secret}` : `Basic ${btoa(unescape(encodeURIComponent($('user').value + ':' + secret)))}`;
    sessionStorage.setItem('stompgate-admin', value);
    $('password').value = '';
    try { await start(); } catch (e) { if (credential()) showLogin(e.message); }
  });
  $('logout').addEventListener('click', () => logout(''));

  async function start() {
    const info = await api('/info');
    $('login').hidden = true; $('dashboard').hidden = false; $('logout').hidden = false;
    $('where').textContent = `node ${info.node} · stompgate ${info.version}`;
    await refresh();
    if (timer) clearInterval(timer);
    timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  }

  // ------------------------------------------------------------------ views

  async function refresh() {
    const results = await Promise.allSettled([
      api('/nodes').then(showNodes), api('/users').then(showUsers), api('/sessions').then(showSessions),
      shownUser !== null ? api('/users/' + encodeURIComponent(shownUser)).then(showUser) : null,
    ]);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
    $('status').textContent = failed.length ? `refresh failed: ${failed[0]}` : `updated ${new Date().toLocaleTimeString()}`;
  }

  function showNodes(answer) {
    fill($('nodes').tBodies[0], answer.nodes.map((n) => row([
      n.node, n.version, uptime(n.uptime_s), n.sessions, n.subscriptions, n.users,
      n.rates ? last(n.rates.published) : '-', n.rates ? last(n.rates.delivered) : '-',
    ])));
    $('nodes-missing').textContent = answer.missing.length ? `no answer from: ${answer.missing.join(', ')}` : '';
    drawCharts(answer.nodes.filter((n) => n.rates));
  }

  function drawCharts(nodes) {
    if (typeof uPlot === 'undefined') {
      $('chart-note').textContent = 'charts need the chart library: run scripts/bootstrap.sh on the node';
      return;
    }
    for (const [key, id] of [['published', 'chart-published'], ['delivered', 'chart-delivered'], ['sessions', 'chart-sessions']]) {
      const tables = nodes.map((n) => [n.rates.t, n.rates[key]]);
      if (!tables.length || !tables.some((t) => t[0].length)) continue;
      const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
      const names = nodes.map((n) => n.node).join(',');
      let chart = charts[id];
      if (chart && chart.names !== names) { chart.plot.destroy(); chart = null; }
      if (!chart) {
        const opts = {
          width: 420, height: 180,
          series: [{}].concat(nodes.map((n, i) => ({ label: n.node, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))),
          axes: [{}, { size: 50 }],
          scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
        };
        chart = charts[id] = { names, plot: new uPlot(opts, data, $(id)) };
      } else {
        chart.plot.setData(data);
      }
    }
    $('chart-note').textContent = `each node samples its counters every ${nodes.length ? nodes[0].rates.interval_s : '?'} s`;
  }

  function showUsers(answer) {
    $('users-count').textContent = answer.truncated ? `(${answer.users.length} of ${answer.total})` : `(${answer.total})`;
    $('users').replaceChildren(...answer.users.map((name) => {
      const a = el('a', name);
      a.addEventListener('click', () => { $('search-user').value = name; search(name); });
      const li = el('li'); li.appendChild(a); return li;
    }));
  }

  function disconnectButton(session) {
    const button = el('button', 'Disconnect', 'danger');
    button.dataset.session = session.id;
    button.addEventListener('click', () => disconnect({ session: session.id }, `session ${session.id} of ${session.user}`));
    return button;
  }

  function subscriptions(s) {
    const shown = s.subscriptions.map((sub) => sub.destination).join(', ');
    return s.subscription_count > s.subscriptions.length ? `${shown} (+${s.subscription_count - s.subscriptions.length})` : shown || '-';
  }

  function showSessions(answer) {
    $('sessions-count').textContent = answer.truncated ? `(${answer.sessions.length} of ${answer.total})` : `(${answer.total})`;
    fill($('sessions').tBodies[0], answer.sessions.map((s) => row([
      s.node, s.id, s.user || '-', s.transport, s.remote, when(s.since), subscriptions(s), disconnectButton(s),
    ])));
  }

  function showUser(answer) {
    const where = answer.nodes.filter((n) => n.sessions).map((n) => `${n.node}: ${n.sessions}`).join(', ');
    $('user-summary').textContent = answer.total
      ? `${answer.user}: ${answer.total} session(s) (${where})${answer.truncated ? `, ${answer.sessions.length} shown` : ''}`
      : `${answer.user} has no session`;
    $('disconnect-user').disabled = !answer.total;
    fill($('user-sessions').tBodies[0], answer.sessions.map((s) => row([
      s.node, s.id, s.transport, s.remote, when(s.since), subscriptions(s), disconnectButton(s),
    ])));
  }

  async function search(name) {
    shownUser = name;
    try { showUser(await api('/users/' + encodeURIComponent(name))); } catch (e) { $('user-summary').textContent = e.message; }
  }

  async function disconnect(body, what) {
    if (!window.confirm(`Disconnect ${what}?`)) return;
    try {
      const answer = await api('/disconnect', { method: 'POST', body: JSON.stringify(body) });
      $('status').textContent = `disconnected ${what}: ${answer.closed} session(s) closed`;
    } catch (e) {
      $('status').textContent = `disconnect failed: ${e.message}`;
    }
    await refresh();
  }

  $('search').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('search-user').value.trim();
    if (name) search(name);
  });
  $('disconnect-user').addEventListener('click', () => {
    if (shownUser !== null) disconnect({ user: shownUser }, `every session of ${shownUser}`);
  });

  if (credential()) start().catch((e) => { if (credential()) showLogin(e.message); });
  else showLogin('');
})();
