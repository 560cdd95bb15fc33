#!/usr/bin/env node
'use strict';
// Load generator coordinator.
//   node bench/loadgen/run.js <p2p|fanout|idle|connect> '<json config>' [--procs N]
// Prints one JSON result line as the last line of stdout (idle prints a
// {"phase":"ready"} line before it); logs go to stderr. See README.md.
const { spawn } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { performance } = require('perf_hooks');
const { Histogram } = require('./hist');

const ORIGIN_US = performance.timeOrigin * 1000;
const nowUs = () => Math.round(ORIGIN_US + performance.now() * 1000);
const SCENARIOS = ['p2p', 'fanout', 'idle', 'connect'];
const KINDS = ['stomp', 'rabbitmq', 'socketio', 'echo'];

function log(...a) {
  process.stderr.write(`[loadgen] ${a.join(' ')}\n`);
}

let exiting = false;
let workers = [];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function finish(obj, code) {
  if (exiting) return;
  exiting = true;
  emit(obj);
  for (const w of workers) {
    if (w.alive && w.child.connected) {
      try {
        w.child.send({ cmd: 'close' });
      } catch (e) {
        /* ignore */
      }
    }
  }
  const t = setTimeout(() => {
    for (const w of workers) if (w.alive) w.child.kill('SIGKILL');
    process.exit(code);
  }, 4000);
  const check = setInterval(() => {
    if (workers.every((w) => !w.alive)) {
      clearTimeout(t);
      clearInterval(check);
      process.exit(code);
    }
  }, 50);
}

function fail(error, extra) {
  log('error:', error);
  finish({ ok: false, error: String(error), ...(extra || {}) }, 1);
}

// ----------------------------------------------------------------- config ----

function parseArgs(argv) {
  const args = argv.slice(2);
  let procs = null;
  const pos = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--procs') procs = Number(args[++i]);
    else if (a.startsWith('--procs=')) procs = Number(a.slice(8));
    else pos.push(a);
  }
  if (pos.length < 1 || !SCENARIOS.includes(pos[0]))
    throw new Error(`usage: run.js <${SCENARIOS.join('|')}> '<json config>' [--procs N]`);
  let cfg = {};
  if (pos[1] !== undefined) {
    try {
      cfg = JSON.parse(pos[1]);
    } catch (e) {
      throw new Error(`config is not JSON: ${e.message}`);
    }
  }
  if (procs !== null) cfg.procs = procs;
  return { scenario: pos[0], cfg };
}

function num(cfg, key, dflt, { min = 0, int = false } = {}) {
  const v = cfg[key] === undefined || cfg[key] === null ? dflt : Number(cfg[key]);
  if (!Number.isFinite(v) || v < min || (int && !Number.isInteger(v)))
    throw new Error(`config.${key}: expected a${int ? 'n integer' : ' number'} >= ${min}, got ${JSON.stringify(cfg[key])}`);
  return v;
}

function normalize(scenario, cfg) {
  const t = cfg.target;
  if (!t || typeof t !== 'object') throw new Error('config.target: required object {kind, urls}');
  if (!KINDS.includes(t.kind)) throw new Error(`config.target.kind: one of ${KINDS.join(', ')}`);
  if (!Array.isArray(t.urls) || t.urls.length === 0 || !t.urls.every((u) => typeof u === 'string'))
    throw new Error('config.target.urls: non-empty array of URLs');
  const c = {
    scenario,
    target: t,
    procs: num(cfg, 'procs', 1, { min: 1, int: true }),
    timeoutS: num(cfg, 'connect_timeout_s', 10, { min: 0.1 }),
    openConcurrency: num(cfg, 'open_concurrency', 200, { min: 1, int: true }),
    prefix: cfg.user_prefix !== undefined ? String(cfg.user_prefix) : `lg${crypto.randomBytes(3).toString('hex')}u`,
    payloadBytes: num(cfg, 'payload_bytes', 100, { min: 1, int: true }),
    tickMs: num(cfg, 'tick_ms', 1, { min: 1, int: true }),
    stragglerS: num(cfg, 'straggler_s', 3, { min: 0 }),
    warmupS: 0,
    durationS: 0,
  };
  let units;
  let setupBudget;
  if (scenario === 'p2p' || scenario === 'fanout') {
    c.durationS = num(cfg, 'duration_s', 10, { min: 0.1 });
    c.warmupS = num(cfg, 'warmup_s', 2, { min: 0 });
    if (scenario === 'p2p') {
      c.users = num(cfg, 'users', 200, { min: 1, int: true });
      c.rate = num(cfg, 'rate', 1000, { min: 0 });
      units = c.users;
    } else {
      c.subscribers = num(cfg, 'subscribers', 1000, { min: 1, int: true });
      c.rate = num(cfg, 'rate', 100, { min: 0 });
      units = c.subscribers;
    }
    setupBudget = c.timeoutS + units / 200;
    c.deadlineS = num(cfg, 'deadline_s', setupBudget + c.warmupS + c.durationS + 30, { min: 1 });
  } else if (scenario === 'idle') {
    c.sessions = num(cfg, 'sessions', 20000, { min: 1, int: true });
    c.holdS = num(cfg, 'hold_s', 30, { min: 0 });
    units = c.sessions;
    setupBudget = c.timeoutS + c.sessions / 100;
    c.deadlineS = num(cfg, 'deadline_s', setupBudget + c.holdS + 30, { min: 1 });
  } else {
    c.count = num(cfg, 'count', 2000, { min: 1, int: true });
    c.concurrency = num(cfg, 'concurrency', 100, { min: 1, int: true });
    units = c.count;
    c.deadlineS = num(cfg, 'deadline_s', c.timeoutS + c.count / 50 + 30, { min: 1 });
  }
  c.procs = Math.max(1, Math.min(c.procs, units, c.scenario === 'connect' ? c.concurrency : units));
  // one process cannot hold more sockets than its open-files limit allows
  const limit = nofileLimit();
  if (limit && (scenario === 'idle' || scenario === 'p2p' || scenario === 'fanout')) {
    const perProc = Math.max(1000, limit - 1000);
    const need = Math.ceil((units + 1) / perProc);
    if (need > c.procs) {
      log(`open-files limit ${limit}: using ${need} processes instead of ${c.procs}`);
      c.procs = need;
    }
  }
  return c;
}

function nofileLimit() {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (e) {
    return null;
  }
}

function split(n, parts, i) {
  const lo = Math.floor((n * i) / parts);
  const hi = Math.floor((n * (i + 1)) / parts);
  return { lo, hi };
}

// ---------------------------------------------------------------- workers ----

function startWorkers(c, onMessage) {
  const workerPath = path.join(__dirname, 'worker.js');
  const perWorker = Math.ceil((c.users || c.subscribers || c.sessions || c.concurrency || 0) / c.procs);
  const nofile = Math.max(65536, perWorker * 2 + 4096);
  for (let i = 0; i < c.procs; i++) {
    // through sh to raise the open-files limit (works as root or below the hard limit)
    const child = spawn(
      '/bin/sh',
      ['-c', `ulimit -n ${nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"`, process.execPath, ...process.execArgv, workerPath],
      { stdio: ['ignore', 2, 2, 'ipc'] },
    );
    const w = { i, child, alive: true, ready: null, sent: null, progress: null, result: null, closed: null };
    child.on('message', (m) => onMessage(w, m));
    child.on('exit', (code, sig) => {
      w.alive = false;
      if (!exiting && !w.closed) fail(`worker ${i} exited (code ${code}, signal ${sig})`);
    });
    child.on('error', (e) => fail(`worker ${i}: ${e.message}`));
    workers.push(w);
  }
}

function shareFor(c, i) {
  const P = c.procs;
  if (c.scenario === 'p2p') {
    const s = split(c.users, P, i);
    return { ...s };
  }
  if (c.scenario === 'fanout') return { ...split(c.subscribers, P, i), publisher: i === 0 };
  if (c.scenario === 'idle') return split(c.sessions, P, i);
  const s = split(c.count, P, i);
  const cc = split(c.concurrency, P, i);
  return { ...s, concurrency: Math.max(1, cc.hi - cc.lo) };
}

// ------------------------------------------------------------------- main ----

function main() {
  let c;
  try {
    const { scenario, cfg } = parseArgs(process.argv);
    c = normalize(scenario, cfg);
  } catch (e) {
    emit({ ok: false, error: e.message });
    process.exit(1);
  }
  if (c.scenario === 'fanout' && c.target.kind === 'echo') {
    emit({ ok: false, scenario: 'fanout', error: 'unsupported' });
    process.exit(1);
  }

  const deadline = setTimeout(() => {
    fail(`deadline of ${c.deadlineS} s exceeded (phase ${phase})`, { scenario: c.scenario, phase });
  }, c.deadlineS * 1000);
  deadline.unref();

  let phase = 'setup';
  const setupT0 = Date.now();
  let setupS = 0;
  let wEndUs = 0;
  let stragglerTimer = null;
  let hellos = 0;

  const all = (k) => workers.every((w) => w[k] !== null);

  const base = {
    scenario: c.scenario,
    target: c.target.kind,
    procs: c.procs,
  };

  function startRun() {
    const t0 = nowUs() + 200000; // common start, 200 ms ahead
    wEndUs = t0 + (c.warmupS + c.durationS) * 1e6;
    phase = c.scenario === 'connect' ? 'connect' : 'run';
    for (const w of workers) w.child.send({ cmd: 'start', t0 });
  }

  function checkStragglers() {
    if (phase !== 'drain') return;
    const sent = workers.reduce((a, w) => a + w.sent.sentWin, 0);
    const expected = c.scenario === 'fanout' ? sent * totalOpened() : sent;
    const got = workers.reduce((a, w) => a + (w.progress ? w.progress.recvWin : 0), 0);
    if (got >= expected || nowUs() >= wEndUs + c.stragglerS * 1e6) {
      phase = 'collect';
      if (stragglerTimer) clearInterval(stragglerTimer);
      for (const w of workers) w.child.send({ cmd: 'finish' });
    }
  }

  const totalOpened = () => workers.reduce((a, w) => a + w.ready.opened, 0);

  function report() {
    const h = new Histogram();
    const lag = new Histogram();
    let sentWin = 0;
    let recvWin = 0;
    let arrivals = 0;
    let dups = 0;
    let dropped = 0;
    let sendFailed = 0;
    let maxLag = 0;
    let endLag = 0;
    let bad = 0;
    let firstDrop = null;
    const cpu = [];
    let backlog = 0;
    for (const w of workers) {
      const r = w.result;
      backlog += r.backlog || 0;
      if (r.cpuPct !== null) cpu.push(Math.round(r.cpuPct));
      h.merge(r.hist);
      lag.merge(r.lagHist);
      sentWin += r.sentWin;
      recvWin += r.recvWin;
      arrivals += r.arrivalsWin;
      dups += r.dups;
      dropped += r.dropped;
      sendFailed += r.sendFailed;
      bad += r.badBodies;
      maxLag = Math.max(maxLag, r.maxLagUs);
      endLag = Math.max(endLag, r.endLagUs);
      if (firstDrop === null && r.firstDrop) firstDrop = r.firstDrop;
    }
    const ms = (us) => Math.round(us) / 1000;
    const lat = h.summaryMs();
    const out = { ok: true, ...base };
    if (c.scenario === 'p2p') {
      Object.assign(out, { users: c.users, offered_rate: c.rate });
    } else {
      Object.assign(out, { subscribers: totalOpened(), offered_rate: c.rate });
    }
    Object.assign(out, {
      duration_s: c.durationS,
      warmup_s: c.warmupS,
      payload_bytes: c.payloadBytes,
      sent: sentWin,
      sent_rate: Math.round(sentWin / c.durationS),
    });
    if (c.scenario === 'fanout') out.deliveries = sentWin * totalOpened();
    const expected = c.scenario === 'fanout' ? out.deliveries : sentWin;
    Object.assign(out, {
      delivered: recvWin,
      lost: Math.max(0, expected - recvWin),
      duplicates: dups,
      delivered_rate: Math.round(arrivals / c.durationS),
      ...lat,
      send_lag_ms: ms(maxLag),
      send_lag_p99_ms: lag.total ? ms(lag.percentile(99)) : 0,
      send_lag_end_ms: ms(endLag),
      send_failed: sendFailed,
      send_backlog_kb: Math.round(backlog / 1024),
      gen_cpu_pct: cpu,
      dropped_sessions: dropped,
      setup_s: setupS,
    });
    if (bad) out.bad_bodies = bad;
    if (firstDrop) out.first_drop = firstDrop;
    return out;
  }

  function connectReport() {
    const h = new Histogram();
    let ok = 0;
    let failed = 0;
    let start = Infinity;
    let end = 0;
    let firstError = null;
    for (const w of workers) {
      const r = w.result;
      h.merge(r.hist);
      ok += r.ok;
      failed += r.failed;
      start = Math.min(start, r.start_us);
      end = Math.max(end, r.end_us);
      if (firstError === null && r.firstError) firstError = r.firstError;
    }
    const el = (end - start) / 1e6;
    const lat = h.summaryMs();
    const out = {
      ok: true,
      ...base,
      count: c.count,
      concurrency: c.concurrency,
      failed,
      rate: el > 0 ? Math.round((ok / el) * 10) / 10 : null,
      elapsed_s: Math.round(el * 1000) / 1000,
      p50_ms: lat.p50_ms,
      p90_ms: lat.p90_ms,
      p99_ms: lat.p99_ms,
      max_ms: lat.max_ms,
    };
    if (firstError) out.first_error = firstError;
    return out;
  }

  function idleHold() {
    phase = 'hold';
    const opened = totalOpened();
    emit({ phase: 'ready', sessions: opened });
    log(`idle: ${opened} sessions open, holding up to ${c.holdS} s`);
    let released = false;
    const release = (why) => {
      if (released) return;
      released = true;
      log(`idle: releasing (${why})`);
      phase = 'closing';
      for (const w of workers) w.child.send({ cmd: 'close' });
    };
    setTimeout(() => release('hold_s'), c.holdS * 1000).unref();
    let st = null;
    try {
      st = fs.fstatSync(0);
    } catch (e) {
      st = null;
    }
    // only a pipe or socket can be closed by the orchestrator; /dev/null or a tty is ignored
    if (st && (st.isFIFO() || st.isSocket())) {
      let buf = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line === 'stop') release('stop');
        }
        if (buf.trim() === 'stop') release('stop');
      });
      process.stdin.on('end', () => release('stdin closed'));
      process.stdin.on('error', () => release('stdin error'));
    }
    // keep the loop alive while holding
    const keep = setInterval(() => {}, 1000);
    keep.unref();
    holdKeep = setInterval(() => {}, 60000);
  }
  let holdKeep = null;

  function onMessage(w, m) {
    if (exiting) return;
    switch (m.type) {
      case 'hello':
        if (++hellos === workers.length) {
          log(`${c.scenario} on ${c.target.kind} ${c.target.urls.join(',')} with ${c.procs} process(es), prefix ${c.prefix}`);
          workers.forEach((x) => {
            x.child.send({
              cmd: 'setup',
              index: x.i,
              nprocs: c.procs,
              scenario: c.scenario,
              target: c.target,
              share: shareFor(c, x.i),
              users: c.users,
              rate: c.rate,
              localRate: c.scenario === 'p2p' ? (c.rate * (shareFor(c, x.i).hi - shareFor(c, x.i).lo)) / c.users : c.rate,
              warmupS: c.warmupS,
              durationS: c.durationS,
              payloadBytes: c.payloadBytes,
              prefix: c.prefix,
              timeoutMs: c.timeoutS * 1000,
              openConcurrency: Math.max(1, Math.ceil(c.openConcurrency / c.procs)),
              tickMs: c.tickMs,
            });
          });
        }
        break;
      case 'ready':
        w.ready = m;
        if (all('ready')) {
          setupS = (Date.now() - setupT0) / 1000;
          const failed = workers.reduce((a, x) => a + x.ready.failed, 0);
          const opened = totalOpened();
          const firstErr = (workers.find((x) => x.ready.error) || { ready: {} }).ready.error;
          const openS = Math.max(...workers.map((x) => x.ready.open_s));
          if (c.scenario === 'p2p' || c.scenario === 'fanout') {
            log(`setup: ${opened} sessions in ${setupS} s, ${failed} failed`);
            if (failed > 0) {
              fail(`setup: ${failed} session(s) failed; first: ${firstErr}`, { scenario: c.scenario, failed });
              return;
            }
            startRun();
          } else if (c.scenario === 'idle') {
            log(`idle: opened ${opened} in ${openS} s, ${failed} failed${firstErr ? '; first: ' + firstErr : ''}`);
            if (opened === 0) {
              fail(`setup: no session opened; first: ${firstErr}`, { scenario: 'idle', failed });
              return;
            }
            idleHoldState.openS = openS;
            idleHoldState.failed = failed;
            idleHoldState.opened = opened;
            idleHold();
          } else startRun();
        }
        break;
      case 'sent':
        w.sent = m;
        if (all('sent')) {
          phase = 'drain';
          stragglerTimer = setInterval(checkStragglers, 20);
        }
        break;
      case 'progress':
        w.progress = m;
        break;
      case 'result':
        w.result = m;
        if (all('result')) {
          if (c.scenario === 'connect') {
            const out = connectReport();
            if (out.failed === c.count) fail(`connect: all sessions failed; first: ${out.first_error}`, { scenario: 'connect' });
            else finish(out, 0);
          } else finish(report(), 0);
        }
        break;
      case 'closed':
        w.closed = m;
        if (c.scenario === 'idle' && all('closed')) {
          if (holdKeep) clearInterval(holdKeep);
          const dropped = workers.reduce((a, x) => a + x.closed.dropped, 0);
          const out = {
            ok: true,
            ...base,
            sessions: idleHoldState.opened,
            failed: idleHoldState.failed,
            open_s: idleHoldState.openS,
            dropped_during_hold: dropped,
          };
          const fd = (workers.find((x) => x.closed.firstDrop) || { closed: {} }).closed.firstDrop;
          if (fd) out.first_drop = fd;
          const fe = (workers.find((x) => x.ready.error) || { ready: {} }).ready.error;
          if (fe) out.first_error = fe;
          finish(out, 0);
        }
        break;
      case 'fatal':
        fail(`worker ${w.i}: ${m.error}`);
        break;
      default:
        break;
    }
  }
  const idleHoldState = { openS: 0, failed: 0, opened: 0 };

  startWorkers(c, onMessage);
  process.on('SIGINT', () => fail('interrupted'));
  process.on('SIGTERM', () => fail('terminated'));
}

main();
