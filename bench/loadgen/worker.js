'use strict';
// One load-generating process. Started by run.js (always forked, even for
// procs=1), driven over the IPC channel:
//   parent -> {cmd:'setup', ...}   worker opens its sessions   -> {type:'ready', ...}
//   parent -> {cmd:'start', t0}    p2p/fanout: send on schedule -> {type:'sent'} then {type:'progress'} every 50 ms
//                                  connect: open/close sessions  -> {type:'result'}
//   parent -> {cmd:'finish'}       p2p/fanout                   -> {type:'result'}
//   parent -> {cmd:'close'}        close everything             -> {type:'closed'}, exit
const { performance } = require('perf_hooks');
const { sessionClass } = require('./clients');
const { Histogram } = require('./hist');

const ORIGIN_US = performance.timeOrigin * 1000;
// Wall-clock microseconds, comparable across processes on one machine.
function nowUs() {
  return Math.round(ORIGIN_US + performance.now() * 1000);
}

function log(...a) {
  process.stderr.write(`[loadgen w${W.index}] ${a.join(' ')}\n`);
}

function send(msg) {
  if (process.connected) process.send(msg);
}

const W = { index: '?' };

// Growable bitset for duplicate detection.
class Bits {
  constructor() {
    this.a = new Uint32Array(64);
  }
  // returns true if the bit was already set
  testSet(i) {
    const w = i >>> 5;
    if (w >= this.a.length) {
      let n = this.a.length * 2;
      while (n <= w) n *= 2;
      const b = new Uint32Array(n);
      b.set(this.a);
      this.a = b;
    }
    const m = 1 << (i & 31);
    const old = this.a[w] & m;
    this.a[w] |= m;
    return old !== 0;
  }
}

// Runs fn(i) for i in [0, n) with at most `limit` promises in flight.
async function pool(n, limit, fn) {
  let next = 0;
  async function lane() {
    while (next < n) {
      const i = next++;
      await fn(i);
    }
  }
  const lanes = [];
  for (let k = 0; k < Math.min(limit, n); k++) lanes.push(lane());
  await Promise.all(lanes);
}

function padBody(prefix, size) {
  if (prefix.length >= size) return prefix;
  return prefix + PAD.substring(0, size - prefix.length);
}
let PAD = 'x'.repeat(1024);

// ------------------------------------------------------------------ state ----

let S = null; // setup message
let Session = null;
const sessions = []; // all open sessions of this worker
let dropped = 0;
let firstDrop = null;
let finished = false;

// measured window (wall-clock us), set by 'start'
let T0 = 0;
let W_START = 0;
let W_END = 0;

// receive side
const hist = new Histogram();
let recvWin = 0; // unique deliveries of messages sent inside the window
let arrivalsWin = 0; // unique deliveries that arrived inside the window
let dups = 0;
let recvAll = 0;
let badBodies = 0;

// send side
let sentWin = 0;
let sentAll = 0;
let sendFailed = 0;
const lagHist = new Histogram();
let maxLagUs = 0;
let cpuStart = null;
let cpuStartUs = 0;
let cpuPct = null;
let endLagUs = 0;

function onDrop(reason) {
  if (finished) return;
  dropped++;
  if (firstDrop === null) {
    firstDrop = reason;
    log('session dropped:', reason);
  }
}

// Parse "<t>|<sender>:<seq>|pad", record; seenOf(sender) gives the Bits to use.
function receive(body, bits) {
  if (finished) return;
  const now = nowUs();
  const i1 = body.indexOf('|');
  const c = body.indexOf(':', i1 + 1);
  const i2 = body.indexOf('|', c + 1);
  if (i1 <= 0 || c < 0 || i2 < 0) {
    badBodies++;
    return;
  }
  const t = +body.substring(0, i1);
  const sender = +body.substring(i1 + 1, c);
  const seq = +body.substring(c + 1, i2);
  const b = bits === null ? senderBits(sender) : bits;
  if (b === null) {
    badBodies++;
    return;
  }
  if (b.testSet(seq)) {
    dups++;
    return;
  }
  recvAll++;
  if (now >= W_START && now < W_END) arrivalsWin++;
  if (t >= W_START && t < W_END) {
    recvWin++;
    hist.record(now - t);
  }
}

// p2p: one Bits per sender (global user index)
let p2pSeen = null;
function senderBits(sender) {
  if (!(sender >= 0 && sender < p2pSeen.length)) return null;
  let b = p2pSeen[sender];
  if (b === undefined) b = p2pSeen[sender] = new Bits();
  return b;
}

// ------------------------------------------------------------------ setup ----

async function openSessions(count, mode, mk) {
  // mk(i) -> {user, url, onMessage}
  const t = Date.now();
  let failed = 0;
  let firstError = null;
  const opened = new Array(count).fill(null);
  await pool(count, S.openConcurrency, async (i) => {
    const { user, url, onMessage } = mk(i);
    const s = new Session(S.target, user, url, { timeoutMs: S.timeoutMs, onMessage, onDrop });
    try {
      await s.open(mode);
      opened[i] = s;
      sessions.push(s);
    } catch (e) {
      failed++;
      if (firstError === null) firstError = `${user}@${url}: ${e && e.message ? e.message : e}`;
    }
  });
  return { opened, failed, firstError, open_s: (Date.now() - t) / 1000 };
}

function urlFor(i) {
  const urls = S.target.urls;
  return urls[i % urls.length];
}

let local = null; // p2p: opened sessions of local users; fanout: publisher

async function setup(msg) {
  S = msg;
  W.index = msg.index;
  if (S.payloadBytes > PAD.length) PAD = 'x'.repeat(S.payloadBytes);
  Session = sessionClass(S.target.kind);
  const sc = S.scenario;
  if (sc === 'p2p') {
    const { lo, hi } = S.share;
    p2pSeen = new Array(S.users);
    const r = await openSessions(hi - lo, 'user', (k) => ({
      user: S.prefix + (lo + k),
      url: urlFor(lo + k),
      onMessage: (body) => receive(body, null),
    }));
    local = r.opened.map((s, k) => ({ s, idx: lo + k, seq: 0 }));
    send({ type: 'ready', opened: hi - lo - r.failed, failed: r.failed, error: r.firstError, open_s: r.open_s });
  } else if (sc === 'fanout') {
    const { lo, hi, publisher } = S.share;
    const r = await openSessions(hi - lo, 'topic', (k) => {
      const bits = new Bits();
      return { user: `${S.prefix}s${lo + k}`, url: urlFor(lo + k), onMessage: (body) => receive(body, bits) };
    });
    let failed = r.failed;
    let error = r.firstError;
    if (publisher) {
      const p = new Session(S.target, `${S.prefix}pub`, S.target.urls[0], { timeoutMs: S.timeoutMs, onDrop });
      try {
        await p.open('none');
        sessions.push(p);
        local = p;
      } catch (e) {
        failed++;
        error = `publisher: ${e && e.message ? e.message : e}`;
      }
    }
    send({ type: 'ready', opened: hi - lo - r.failed, failed, error, open_s: r.open_s });
  } else if (sc === 'idle') {
    const { lo, hi } = S.share;
    const r = await openSessions(hi - lo, 'idle', (k) => ({ user: S.prefix + (lo + k), url: urlFor(lo + k), onMessage: null }));
    send({ type: 'ready', opened: hi - lo - r.failed, failed: r.failed, error: r.firstError, open_s: r.open_s });
  } else if (sc === 'connect') {
    send({ type: 'ready', opened: 0, failed: 0, error: null, open_s: 0 });
  } else {
    throw new Error(`unknown scenario ${sc}`);
  }
}

// ---------------------------------------------------------------- sending ----

function startSchedule(rate, sendOne) {
  // message k (k = 0, 1, ...) is due at T0 + k / rate; every tick sends what is due
  const usPerMsg = 1e6 / rate;
  let k = 0;
  const tickMs = S.tickMs;
  const tick = () => {
    const now = nowUs();
    const until = now < W_END ? now : W_END;
    const due = Math.floor((until - T0) / usPerMsg) + 1;
    if (due > k) {
      const lag = now - (T0 + k * usPerMsg); // how late the oldest due message is
      if (now >= W_START && now < W_END) {
        lagHist.record(lag);
        if (lag > maxLagUs) maxLagUs = lag;
      }
      if (now >= W_END) endLagUs = lag;
      for (; k < due; k++) sendOne(k);
    } else if (now >= W_END) endLagUs = 0;
    if (now >= W_END) {
      sendingDone();
      return;
    }
    // behind schedule by more than a tick: go on after I/O instead of sleeping;
    // otherwise sleep until the next message is due (tick_ms .. 5 ms)
    const wait = (T0 + k * usPerMsg - nowUs()) / 1000;
    if (wait < -tickMs) setImmediate(tick);
    else setTimeout(tick, Math.min(5, Math.max(tickMs, wait)));
  };
  const wait = (T0 - nowUs()) / 1000;
  setTimeout(tick, wait > 0 ? wait : 0);
}

function p2pStart() {
  const n = local.length;
  if (n === 0 || S.localRate <= 0) {
    setTimeout(sendingDone, Math.max(0, (W_END - nowUs()) / 1000));
    return;
  }
  const total = S.users;
  const echo = S.target.kind === 'echo';
  const prefix = S.prefix;
  const size = S.payloadBytes;
  startSchedule(S.localRate, (k) => {
    const u = local[k % n];
    let to = u.idx;
    if (!echo && total > 1) {
      to = Math.floor(Math.random() * (total - 1));
      if (to >= u.idx) to++;
    }
    const t = nowUs();
    const body = padBody(`${t}|${u.idx}:${u.seq++}|`, size);
    if (u.s.sendTo(prefix + to, body)) {
      sentAll++;
      if (t >= W_START && t < W_END) sentWin++;
    } else sendFailed++;
  });
}

function fanoutStart() {
  if (!S.share.publisher || local === null) {
    setTimeout(sendingDone, Math.max(0, (W_END - nowUs()) / 1000));
    return;
  }
  const p = local;
  const size = S.payloadBytes;
  let seq = 0;
  startSchedule(S.rate, () => {
    const t = nowUs();
    const body = padBody(`${t}|0:${seq++}|`, size);
    if (p.publish(body)) {
      sentAll++;
      if (t >= W_START && t < W_END) sentWin++;
    } else sendFailed++;
  });
}

let progressTimer = null;
let backlog = 0; // bytes still queued in this process's sockets when sending stopped
function sendingDone() {
  for (const x of sessions) backlog += x.buffered();
  send({ type: 'sent', sentWin, sentAll, sendFailed });
  progressTimer = setInterval(() => send({ type: 'progress', recvWin, dropped }), 50);
  send({ type: 'progress', recvWin, dropped });
}

function result() {
  finished = true;
  if (progressTimer) clearInterval(progressTimer);
  return {
    type: 'result',
    sentWin,
    sentAll,
    sendFailed,
    recvWin,
    recvAll,
    arrivalsWin,
    dups,
    badBodies,
    dropped,
    firstDrop,
    hist: hist.toJSON(),
    lagHist: lagHist.toJSON(),
    maxLagUs,
    endLagUs,
    cpuPct,
    backlog,
  };
}

// ---------------------------------------------------------------- connect ----

async function connectRun() {
  const { lo, hi, concurrency } = S.share;
  const n = hi - lo;
  const lat = new Histogram();
  let failed = 0;
  let firstError = null;
  const wait = (T0 - nowUs()) / 1000;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const t0 = nowUs();
  await pool(n, concurrency, async (k) => {
    const i = lo + k;
    const s = new Session(S.target, `${S.prefix}c${i}`, urlFor(i), { timeoutMs: S.timeoutMs, onMessage: null, onDrop: null });
    const t = nowUs();
    try {
      await s.open('connect');
      lat.record(nowUs() - t);
      s.close();
    } catch (e) {
      failed++;
      if (firstError === null) firstError = `${e && e.message ? e.message : e}`;
    }
  });
  const t1 = nowUs();
  send({ type: 'result', ok: n - failed, failed, firstError, start_us: t0, end_us: t1, hist: lat.toJSON() });
}

// ------------------------------------------------------------------- main ----

function closeAll() {
  finished = true;
  if (progressTimer) clearInterval(progressTimer);
  for (const s of sessions) {
    try {
      s.close();
    } catch (e) {
      /* ignore */
    }
  }
  send({ type: 'closed', dropped, firstDrop });
  // let the close frames go out, then leave
  setTimeout(() => {
    for (const s of sessions) {
      try {
        s.terminate();
      } catch (e) {
        /* ignore */
      }
    }
    process.exit(0);
  }, S && S.scenario === 'idle' ? 1500 : 500).unref();
  setTimeout(() => process.exit(0), 3000);
}

process.on('message', (msg) => {
  try {
    if (msg.cmd === 'setup') {
      setup(msg).catch((e) => {
        send({ type: 'fatal', error: `setup: ${e && e.stack ? e.stack : e}` });
      });
    } else if (msg.cmd === 'start') {
      T0 = msg.t0;
      W_START = T0 + S.warmupS * 1e6;
      W_END = W_START + S.durationS * 1e6;
      if (S.scenario === 'p2p' || S.scenario === 'fanout') {
        // this process's own CPU use over the measured window
        setTimeout(() => {
          cpuStart = process.cpuUsage();
          cpuStartUs = nowUs();
        }, Math.max(0, (W_START - nowUs()) / 1000));
        setTimeout(() => {
          if (cpuStart === null) return;
          const d = process.cpuUsage(cpuStart);
          cpuPct = (100 * (d.user + d.system)) / Math.max(1, nowUs() - cpuStartUs);
        }, Math.max(0, (W_END - nowUs()) / 1000));
      }
      if (S.scenario === 'p2p') p2pStart();
      else if (S.scenario === 'fanout') fanoutStart();
      else if (S.scenario === 'connect')
        connectRun().catch((e) => send({ type: 'fatal', error: `connect: ${e && e.stack ? e.stack : e}` }));
    } else if (msg.cmd === 'finish') {
      send(result());
    } else if (msg.cmd === 'close') {
      closeAll();
    }
  } catch (e) {
    send({ type: 'fatal', error: `${e && e.stack ? e.stack : e}` });
  }
});

process.on('disconnect', () => process.exit(0));
// A stray error from one socket must not end the run: log the first few.
let uncaught = 0;
process.on('uncaughtException', (e) => {
  if (uncaught++ < 5) log('uncaught:', e && e.stack ? e.stack : e);
});
send({ type: 'hello', pid: process.pid });
