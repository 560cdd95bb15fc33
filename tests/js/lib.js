'use strict';
// Building blocks for scenarios.js: the two third-party STOMP clients and a raw
// WebSocket client behind one small interface, plus waiting helpers and the
// command-line driver (runScenarios) that scenarios.js and sockjs_scenarios.js share.
//
//   ModernPeer  @stomp/stompjs 7 (`Client`), negotiates STOMP 1.2
//   LegacyPeer  stompjs 2.3.3 (`Stomp.over` / `Stomp.client`), negotiates STOMP 1.1
//   RawStomp    the `ws` package writing STOMP frames by hand (for malformed input
//               and for a client that stops heart-beating)
//
// Every peer records what crossed its WebSocket, so scenarios can report facts
// (frames, headers, bodies, close codes) and the Python tests assert on them.

const crypto = require('crypto');
const WebSocket = require('ws');
const { Client } = require('@stomp/stompjs');
const Stomp = require('stompjs');

const MODERN_PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
const WAIT_MS = 5000;

/** A random tag that keeps user names and destinations unique to one run. */
const TAG = crypto.randomBytes(3).toString('hex');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve once predicate() holds; reject after `ms` naming what was awaited. */
function until(predicate, what, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      let done;
      try {
        done = predicate();
      } catch (err) {
        reject(err);
        return;
      }
      if (done) resolve();
      else if (Date.now() - started > ms) reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      else setTimeout(check, 5);
    };
    check();
  });
}

/** Race `promise` against a timer. */
function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

/**
 * A `ws` WebSocket that records every message it sends and receives
 * (whether it was a binary message, and its data), and its close code.
 * `protocols` undefined means no Sec-WebSocket-Protocol header at all, as
 * SockJS or a plain `new WebSocket(url)` in a page would do.
 */
class RecordingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    this.received = []; // {binary, data: Buffer}
    this.sent = []; // {binary, length}
    this.closeCode = null;
    this.closeReason = null;
    // binary data is an ArrayBuffer once a library sets binaryType = 'arraybuffer'
    this.on('message', (data, isBinary) => this.received.push({ binary: isBinary, data: Buffer.from(data) }));
    this.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
    });
    this.on('error', () => {}); // a refused or reset socket surfaces as 'close'
  }

  send(data, ...rest) {
    this.sent.push({ binary: typeof data !== 'string', length: data.length });
    return super.send(data, ...rest);
  }
}

/** The parts of a received STOMP frame worth reporting (JSON-friendly). */
function summary(frame) {
  return { command: frame.command, headers: { ...frame.headers }, body: frame.body };
}

// --------------------------------------------------------------- base peer

let counter = 0;
const nextId = (prefix) => `${prefix}-${++counter}`;

/** What both library adapters share: receipts, inboxes, error and close records. */
class Peer {
  constructor(login) {
    this.login = login;
    this.connected = null; // the CONNECTED frame's headers
    this.errors = []; // ERROR frames (summaries)
    this.closes = []; // WebSocket close codes
    this.pongs = 0; // heart-beats received from the server
    this.pings = 0; // heart-beats the library sent
    this.receipts = []; // receipt-ids in arrival order
    this.heartbeatLost = []; // the library's own "no server activity" verdicts
    this._receiptWaiters = new Map();
  }

  /** A promise for the RECEIPT with this id (register before sending the frame). */
  receipt(id) {
    return withTimeout(
      new Promise((resolve) => this._receiptWaiters.set(id, resolve)),
      `RECEIPT ${id} for ${this.login}`,
    );
  }

  _onReceipt(frame) {
    const id = frame.headers['receipt-id'];
    this.receipts.push(id);
    const waiter = this._receiptWaiters.get(id);
    if (waiter) {
      this._receiptWaiters.delete(id);
      waiter(summary(frame));
    }
  }

  /** Both libraries log heart-beats and their heart-beat timeouts through `debug`. */
  _debug(line) {
    if (line === '<<< PONG') this.pongs++;
    else if (line === '>>> PING') this.pings++;
    else if (line.startsWith('did not receive server activity')) this.heartbeatLost.push(line);
  }

  /** SUBSCRIBE with a receipt; resolves to the inbox (an array filled as MESSAGEs arrive). */
  async subscribe(destination, headers = {}) {
    const inbox = [];
    const receipt = nextId('sub');
    const confirmed = this.receipt(receipt);
    inbox.subscription = this._subscribe(destination, { ...headers, receipt }, inbox);
    await confirmed;
    return inbox;
  }

  /** SEND and wait for its RECEIPT: the server has routed it when this resolves. */
  async sendConfirmed(destination, body, headers = {}) {
    const receipt = nextId('send');
    const confirmed = this.receipt(receipt);
    this.send(destination, body, { ...headers, receipt });
    return confirmed;
  }

  /** Resolve when the socket is closed (by either side). */
  closed(what = `close of ${this.login}'s connection`, ms = WAIT_MS) {
    return until(() => this.ws.closeCode !== null, what, ms);
  }

  /** Bodies of an inbox, the most common thing to assert on. */
  static bodies(inbox) {
    return inbox.map((m) => m.body);
  }
}

// ------------------------------------------------------ @stomp/stompjs 7

class ModernPeer extends Peer {
  /**
   * Connect an @stomp/stompjs Client as `login`; `config` is merged into the
   * Client configuration (heart-beats, splitLargeFrames, ...).
   */
  static connect(url, login, config = {}) {
    const peer = new ModernPeer(login);
    const connecting = new Promise((resolve, reject) => {
      const client = new Client({
        webSocketFactory: () => (peer.ws = new RecordingWebSocket(url, MODERN_PROTOCOLS)),
        connectHeaders: { login },
        reconnectDelay: 0, // a test must see a lost connection, not a silent reconnect
        heartbeatIncoming: 0,
        heartbeatOutgoing: 0,
        debug: (line) => peer._debug(line),
        onConnect: (frame) => {
          peer.connected = { ...frame.headers };
          resolve(peer);
        },
        onStompError: (frame) => peer.errors.push(summary(frame)),
        onWebSocketClose: (event) => {
          peer.closes.push(event.code);
          if (!peer.connected) reject(new Error(`${login}: socket closed (${event.code}) before CONNECTED`));
        },
        onUnhandledReceipt: (frame) => peer.receipts.push(frame.headers['receipt-id']),
        ...config,
      });
      peer.client = client;
      client.activate();
    });
    return withTimeout(connecting, `CONNECTED for ${login}`);
  }

  get kind() {
    return 'modern';
  }

  _subscribe(destination, headers, inbox) {
    return this.client.subscribe(destination, (m) => inbox.push(ModernPeer._message(m)), headers);
  }

  static _message(m) {
    const out = summary(m);
    Object.defineProperty(out, 'raw', { value: m, enumerable: false }); // for ack(), binaryBody
    return out;
  }

  /** Receipts through the library's own watchForReceipt. */
  receipt(id) {
    return withTimeout(
      new Promise((resolve) =>
        this.client.watchForReceipt(id, (frame) => {
          this.receipts.push(id);
          resolve(summary(frame));
        }),
      ),
      `RECEIPT ${id} for ${this.login}`,
    );
  }

  send(destination, body, headers = {}) {
    this.client.publish({ destination, body, headers });
  }

  /** SEND with a binary body: @stomp/stompjs sends it as a binary WebSocket message. */
  sendBinary(destination, bytes, headers = {}) {
    this.client.publish({ destination, binaryBody: bytes, headers });
  }

  ack(message, headers = {}) {
    message.raw.ack(headers);
  }

  nack(message, headers = {}) {
    message.raw.nack(headers);
  }

  /** ACK or NACK a message id of our choosing (one the server never issued). */
  ackId(command, messageId, subscriptionId, headers = {}) {
    if (command === 'ACK') this.client.ack(messageId, subscriptionId, headers);
    else this.client.nack(messageId, subscriptionId, headers);
  }

  /** The id an ACK must carry: the `ack` header in STOMP 1.2. */
  static ackIdOf(message) {
    return message.headers.ack;
  }

  begin(id) {
    return this.client.begin(id);
  }

  close() {
    return this.client.deactivate();
  }
}

// ---------------------------------------------------------- stompjs 2.3.3

class LegacyPeer extends Peer {
  /**
   * Connect a stompjs 2.3.3 client as `login`.
   *   how = 'over'    Stomp.over(new WebSocket(url)) with no sub-protocol (SockJS-like page)
   *   how = 'client'  Stomp.client(url): the library opens the socket itself, offering
   *                   'v10.stomp', 'v11.stomp' (Stomp.WebSocketClass stands in for the
   *                   browser's WebSocket)
   * `heartbeat` sets both directions in ms (the library default is 10000).
   */
  static connect(url, login, { how = 'over', heartbeat } = {}) {
    const peer = new LegacyPeer(login);
    let client;
    if (how === 'client') {
      Stomp.WebSocketClass = RecordingWebSocket;
      client = Stomp.client(url);
      peer.ws = client.ws;
    } else {
      peer.ws = new RecordingWebSocket(url);
      client = Stomp.over(peer.ws);
    }
    return LegacyPeer._attach(peer, client, login, { heartbeat });
  }

  /**
   * Wire a stompjs 2.3.3 `client` (already holding its socket as `peer.ws`) to
   * `peer` and CONNECT as `login`; resolves with `peer` on CONNECTED.
   *   heartbeat  both directions in ms (undefined keeps the library default)
   *   closeCode  reads the socket's close code when the library reports the close
   *   what       names the wait in the timeout error
   */
  static _attach(
    peer,
    client,
    login,
    { heartbeat, closeCode = () => peer.ws.closeCode, what = `CONNECTED for ${login}` } = {},
  ) {
    peer.client = client;
    if (heartbeat !== undefined) client.heartbeat = { outgoing: heartbeat, incoming: heartbeat };
    client.debug = (line) => peer._debug(line);
    client.onreceipt = (frame) => peer._onReceipt(frame);
    return withTimeout(
      new Promise((resolve, reject) => {
        client.connect(
          { login },
          (frame) => {
            peer.connected = { ...frame.headers };
            resolve(peer);
          },
          // called with an ERROR frame, or with a string when the socket closes
          (error) => {
            if (typeof error === 'string') {
              peer.closes.push(closeCode());
              if (!peer.connected) reject(new Error(`${login}: ${error} before CONNECTED`));
            } else {
              peer.errors.push(summary(error));
            }
          },
        );
      }),
      what,
    );
  }

  get kind() {
    return 'legacy';
  }

  _subscribe(destination, headers, inbox) {
    return this.client.subscribe(destination, (frame) => inbox.push(LegacyPeer._message(frame)), headers);
  }

  static _message(frame) {
    const out = summary(frame);
    Object.defineProperty(out, 'raw', { value: frame, enumerable: false }); // for ack()
    return out;
  }

  send(destination, body, headers = {}) {
    this.client.send(destination, { ...headers }, body);
  }

  ack(message, headers = {}) {
    message.raw.ack({ ...headers });
  }

  nack(message, headers = {}) {
    message.raw.nack({ ...headers });
  }

  ackId(command, messageId, subscriptionId, headers = {}) {
    if (command === 'ACK') this.client.ack(messageId, subscriptionId, { ...headers });
    else this.client.nack(messageId, subscriptionId, { ...headers });
  }

  /** The id an ACK must carry: `message-id` in STOMP 1.1. */
  static ackIdOf(message) {
    return message.headers['message-id'];
  }

  begin(id) {
    return this.client.begin(id);
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN) this.client.disconnect();
  }
}

// ------------------------------------------------------------- raw client

/**
 * STOMP written by hand over a `ws` socket. stompgate writes each frame (and
 * each heart-beat EOL) as its own WebSocket message, so a received message is
 * parsed as exactly one frame or one heart-beat.
 */
class RawStomp {
  static open(url, protocols = MODERN_PROTOCOLS) {
    const raw = new RawStomp();
    raw.ws = new RecordingWebSocket(url, protocols);
    raw.frames = [];
    raw.heartbeats = [];
    raw.closedAt = null;
    raw.version = null; // header escaping applies once CONNECTED says 1.1 or 1.2
    raw.ws.on('message', (data) => {
      const text = data.toString('utf8');
      if (text === '\n' || text === '\r\n') raw.heartbeats.push(Date.now());
      else raw.frames.push(raw.parse(text));
    });
    raw.ws.on('close', () => (raw.closedAt = Date.now()));
    return withTimeout(new Promise((resolve) => raw.ws.on('open', () => resolve(raw))), 'WebSocket open');
  }

  parse(text) {
    const split = text.indexOf('\n\n');
    const lines = text.slice(0, split).split('\n');
    const command = lines[0];
    const escaped = this.version !== null && this.version !== '1.0' && command !== 'CONNECTED';
    const unescape = (v) => (escaped ? v.replace(/\\([\\cnr])/g, (_, c) => RawStomp.ESCAPES[c]) : v);
    const headers = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = unescape(line.slice(0, colon));
      if (!(name in headers)) headers[name] = unescape(line.slice(colon + 1));
    }
    if (command === 'CONNECTED') this.version = headers.version;
    return { command, headers, body: text.slice(split + 2).replace(/\0\n*$/, '') };
  }

  static ESCAPES = { '\\': '\\', c: ':', n: '\n', r: '\r' };

  static frame(command, headers, body = '') {
    const lines = Object.entries(headers).map(([k, v]) => `${k}:${v}`);
    return [command, ...lines, '', body].join('\n') + '\0';
  }

  /** Send raw text; the time of the last write is kept for heart-beat checks. */
  write(data) {
    this.lastWriteAt = Date.now();
    this.ws.send(data);
  }

  send(command, headers, body) {
    this.write(RawStomp.frame(command, headers, body));
  }

  async connect(login, heartBeat = '0,0') {
    this.send('CONNECT', { 'accept-version': '1.2', host: 'localhost', login, 'heart-beat': heartBeat });
    await until(() => this.frames.length > 0 || this.closedAt, `CONNECTED for raw client ${login}`);
    const frame = this.frames[0];
    if (!frame || frame.command !== 'CONNECTED') throw new Error(`raw CONNECT answered ${JSON.stringify(frame)}`);
    this.connectedAt = Date.now();
    return frame;
  }

  closed(ms = WAIT_MS) {
    return until(() => this.closedAt !== null, 'the server to close the raw connection', ms);
  }

  /** What the server did: its frames after CONNECTED, and how it closed. */
  outcome() {
    return {
      frames: this.frames.filter((f) => f.command !== 'CONNECTED'),
      closeCode: this.ws.closeCode,
      closeReason: this.ws.closeReason,
    };
  }
}

// ------------------------------------------------------------- script driver

/** One JSON line, ASCII only: U+2028, U+0085 and friends would split it for Python's splitlines(). */
function finish(result, code) {
  const json = JSON.stringify(result).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  process.stdout.write(json + '\n', () => process.exit(code));
}

/**
 * The command line of a scenario script: `node SCRIPT SCENARIO URL [OPTIONS_JSON]`.
 * Runs scenarios[SCENARIO]({url, ...options}, report) and prints one JSON line:
 * {ok: true, tag, ...result} (exit 0), {ok: false, tag, error, report} (exit 1),
 * or a usage error (exit 2). Gives up after `deadlineMs`, printing the partial report.
 *   script   the script's file name, for the usage message
 *   urlName  what the URL argument is called there (WS_URL, BASE_URL)
 */
async function runScenarios(scenarios, { script, urlName, deadlineMs, tag = TAG }) {
  const [name, url, optionsJson] = process.argv.slice(2);
  const scenario = scenarios[name];
  if (!scenario || !url) {
    finish({ ok: false, error: `usage: node ${script} {${Object.keys(scenarios).join('|')}} ${urlName} [OPTIONS_JSON]` }, 2);
    return;
  }
  const report = {}; // filled as the scenario goes, printed if it fails
  setTimeout(
    () => finish({ ok: false, error: `scenario ${name} did not finish within ${deadlineMs} ms`, report }, 1),
    deadlineMs,
  );
  try {
    const result = await scenario({ url, ...JSON.parse(optionsJson || '{}') }, report);
    finish({ ok: true, tag, ...result }, 0);
  } catch (err) {
    finish({ ok: false, tag, error: err.stack || String(err), report }, 1);
  }
}

module.exports = {
  TAG,
  LegacyPeer,
  ModernPeer,
  RawStomp,
  RecordingWebSocket,
  Peer,
  runScenarios,
  sha256,
  sleep,
  until,
  withTimeout,
};
