'use strict';
// Minimal clients for the four target kinds. Every session class has:
//   constructor(target, user, url, opts)   opts: {timeoutMs, onMessage(body: string), onDrop(reason)}
//   open(mode) -> Promise                  mode: 'user' (subscribe to the user's own destination),
//                                          'topic' (subscribe to the bench topic), 'none' (connect only),
//                                          'idle'/'connect' (what the idle/connect scenarios establish)
//   sendTo(user, body)                     a message to another user
//   publish(body)                          a message to the bench topic
//   close()                                close now, no waiting
const WebSocket = require('ws');

const STOMP_PROTOCOLS = ['v12.stomp', 'v11.stomp'];
const WS_OPTS = { perMessageDeflate: false, skipUTF8Validation: true };

function timeoutError(what, ms) {
  const e = new Error(`${what}: timed out after ${ms} ms`);
  e.code = 'TIMEOUT';
  return e;
}

// ---------------------------------------------------------------- STOMP ----

const LF = 10;
const CR = 13;

function unescapeHeader(s) {
  if (s.indexOf('\\') < 0) return s;
  return s.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c === 'c' ? ':' : c));
}

// Parses the STOMP frames of one WebSocket message (plus what was left of the
// previous one). Calls onFrame(command, headersText, body) for each full frame
// and returns the unparsed rest (a Buffer) or null.
function parseFrames(buf, onFrame) {
  const n = buf.length;
  let pos = 0;
  while (pos < n) {
    // heart-beats / EOLs between frames
    while (pos < n && (buf[pos] === LF || buf[pos] === CR)) pos++;
    if (pos >= n) return null;
    // end of headers: the first empty line
    let hEnd = -1;
    let bodyStart = -1;
    let i = buf.indexOf(LF, pos);
    while (i >= 0) {
      if (i + 1 < n && buf[i + 1] === LF) {
        hEnd = i;
        bodyStart = i + 2;
        break;
      }
      if (i + 2 < n && buf[i + 1] === CR && buf[i + 2] === LF) {
        hEnd = i;
        bodyStart = i + 3;
        break;
      }
      i = buf.indexOf(LF, i + 1);
    }
    if (hEnd < 0) return buf.subarray(pos);
    const head = buf.toString('utf8', pos, hEnd);
    const nl = head.indexOf('\n');
    let command = nl < 0 ? head : head.substring(0, nl);
    if (command.charCodeAt(command.length - 1) === CR) command = command.substring(0, command.length - 1);
    const headers = nl < 0 ? '' : head.substring(nl + 1);
    let bodyEnd;
    const cl = headers.startsWith('content-length:') ? 0 : headers.indexOf('\ncontent-length:');
    if (cl >= 0) {
      const vs = cl === 0 ? 15 : cl + 16;
      let ve = headers.indexOf('\n', vs);
      if (ve < 0) ve = headers.length;
      const len = parseInt(headers.substring(vs, ve), 10);
      bodyEnd = bodyStart + len;
      if (bodyEnd >= n) return buf.subarray(pos); // incomplete
    } else {
      bodyEnd = buf.indexOf(0, bodyStart);
      if (bodyEnd < 0) return buf.subarray(pos);
    }
    onFrame(command, headers, buf.toString('utf8', bodyStart, bodyEnd));
    pos = bodyEnd + 1; // past the NUL
  }
  return null;
}

function headerValue(headers, name) {
  const key = name + ':';
  for (const line of headers.split('\n')) {
    const l = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (l.startsWith(key)) return unescapeHeader(l.substring(key.length));
  }
  return undefined;
}

function escapeHeader(s) {
  return String(s).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/:/g, '\\c');
}

const sendPrefixes = new Map();
function sendPrefix(dest) {
  let p = sendPrefixes.get(dest);
  if (p === undefined) {
    p = `SEND\ndestination:${escapeHeader(dest)}\ncontent-length:`;
    if (sendPrefixes.size < 200000) sendPrefixes.set(dest, p);
  }
  return p;
}

/** What every kind of session shares: where it goes, its callbacks, a bounded opening. */
class BaseSession {
  constructor(user, url, opts) {
    this.user = user;
    this.url = url;
    this.timeoutMs = opts.timeoutMs || 10000;
    this.onMessage = opts.onMessage || null;
    this.onDrop = opts.onDrop || null;
    this.closing = false;
  }

  /**
   * A promise that `start(finish)` settles once through `finish(err | null)`, or that
   * fails after timeoutMs; a failed opening terminates the session.
   */
  opening(start) {
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.opened();
        if (err) {
          this.terminate();
          reject(err);
        } else resolve();
      };
      const timer = setTimeout(() => finish(timeoutError(`connect ${this.url}`, this.timeoutMs)), this.timeoutMs);
      start(finish);
    });
  }

  opened() {}
}

class StompSession extends BaseSession {
  constructor(target, user, url, opts) {
    super(user, url, opts);
    this.kind = target.kind; // 'stomp' | 'rabbitmq'
    this.target = target;
    this.ws = null;
    this.rest = null;
    this.pending = null; // {what, resolve, reject} while opening
    this.receipts = new Map();
    this.nextSub = 0;
    this.nextReceipt = 0;
    this.rabbit = this.kind === 'rabbitmq';
  }

  userSubDestination() {
    return this.rabbit ? `/exchange/amq.direct/${this.user}` : '/user/queue/bench';
  }
  userDestination(to) {
    return this.rabbit ? `/exchange/amq.direct/${to}` : `/user/${to}/queue/bench`;
  }
  topicDestination() {
    return this.target.topic || '/topic/bench';
  }

  async open(mode) {
    await this.connect();
    if (mode === 'user' || mode === 'idle' || mode === 'connect') await this.subscribe(this.userSubDestination());
    else if (mode === 'topic') await this.subscribe(this.topicDestination());
  }

  connect() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(timeoutError(`connect ${this.url}`, this.timeoutMs)), this.timeoutMs);
      const fail = (err) => {
        clearTimeout(timer);
        if (this.pending === null) return;
        this.pending = null;
        this.close();
        reject(err);
      };
      this.pending = {
        resolve: () => {
          clearTimeout(timer);
          this.pending = null;
          resolve();
        },
        reject: fail,
      };
      let ws;
      try {
        ws = new WebSocket(this.url, STOMP_PROTOCOLS, { ...WS_OPTS, handshakeTimeout: this.timeoutMs });
      } catch (e) {
        fail(e);
        return;
      }
      this.ws = ws;
      ws.on('open', () => {
        const t = this.target;
        let host = t.host;
        if (host === undefined) host = this.rabbit ? '/' : new URL(this.url).hostname;
        let f = `CONNECT\naccept-version:1.2\nhost:${escapeHeader(host)}\nheart-beat:0,0\n`;
        const login = this.rabbit ? (t.login ?? 'guest') : this.user;
        if (login !== undefined && login !== null) f += `login:${escapeHeader(login)}\n`;
        const passcode = this.rabbit ? (t.passcode ?? 'guest') : t.passcode;
        if (passcode !== undefined && passcode !== null) f += `passcode:${escapeHeader(passcode)}\n`;
        ws.send(f + '\n\0');
      });
      ws.on('message', (data) => this.onData(data));
      ws.on('error', (err) => {
        if (this.pending) this.pending.reject(err);
      });
      ws.on('close', (code, reason) => {
        const why = `websocket closed ${code} ${reason ? reason.toString() : ''}`.trim();
        if (this.pending) this.pending.reject(new Error(why));
        for (const r of this.receipts.values()) r.reject(new Error(why));
        this.receipts.clear();
        if (!this.closing) {
          this.closing = true;
          if (this.onDrop) this.onDrop(why);
        }
      });
    });
  }

  onData(data) {
    let buf = data;
    if (this.rest !== null) {
      buf = Buffer.concat([this.rest, data]);
      this.rest = null;
    }
    const rest = parseFrames(buf, this.frameHandler || (this.frameHandler = (c, h, b) => this.onFrame(c, h, b)));
    if (rest !== null) this.rest = Buffer.from(rest);
  }

  onFrame(command, headers, body) {
    if (command === 'MESSAGE') {
      if (this.onMessage !== null) this.onMessage(body);
    } else if (command === 'RECEIPT') {
      const id = headerValue(headers, 'receipt-id');
      const r = this.receipts.get(id);
      if (r) {
        this.receipts.delete(id);
        r.resolve();
      }
    } else if (command === 'CONNECTED') {
      if (this.pending) this.pending.resolve();
    } else if (command === 'ERROR') {
      const msg = headerValue(headers, 'message') || '';
      const err = new Error(`STOMP ERROR: ${msg} ${body ? body.slice(0, 200) : ''}`.trim());
      if (this.pending) this.pending.reject(err);
      for (const r of this.receipts.values()) r.reject(err);
      this.receipts.clear();
      if (!this.closing && this.onDrop) {
        this.closing = true;
        this.onDrop(err.message);
      }
    }
  }

  subscribe(dest) {
    return new Promise((resolve, reject) => {
      const id = `r${this.nextReceipt++}`;
      const sub = `s${this.nextSub++}`;
      const timer = setTimeout(() => {
        this.receipts.delete(id);
        reject(timeoutError(`subscribe ${dest}`, this.timeoutMs));
      }, this.timeoutMs);
      this.receipts.set(id, {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.ws.send(`SUBSCRIBE\nid:${sub}\ndestination:${escapeHeader(dest)}\nack:auto\nreceipt:${id}\n\n\0`);
    });
  }

  sendRaw(dest, body) {
    const ws = this.ws;
    if (ws === null || ws.readyState !== 1) return false;
    ws.send(sendPrefix(dest) + Buffer.byteLength(body) + '\n\n' + body + '\0');
    return true;
  }
  sendTo(to, body) {
    return this.sendRaw(this.userDestination(to), body);
  }
  publish(body) {
    return this.sendRaw(this.topicDestination(), body);
  }

  // bytes accepted by send() but not yet written to the socket
  buffered() {
    return this.ws === null ? 0 : this.ws.bufferedAmount;
  }
  close() {
    this.closing = true;
    const ws = this.ws;
    if (ws === null) return;
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(1000);
      const t = setTimeout(() => ws.terminate(), 2000);
      t.unref();
      ws.once('close', () => clearTimeout(t));
    } else if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
    }
  }
  terminate() {
    this.closing = true;
    if (this.ws !== null) this.ws.terminate();
  }
}

// ----------------------------------------------------------------- echo ----

class EchoSession extends BaseSession {
  constructor(target, user, url, opts) {
    super(user, url, opts);
    this.ws = null;
    this.waiter = null;
  }

  opened() {
    this.waiter = null;
  }

  open(mode) {
    return this.opening((finish) => {
      let ws;
      try {
        ws = new WebSocket(this.url, { ...WS_OPTS, handshakeTimeout: this.timeoutMs });
      } catch (e) {
        finish(e);
        return;
      }
      this.ws = ws;
      ws.on('open', () => {
        if (mode === 'connect') {
          this.waiter = () => finish(null); // one echo round trip
          ws.send('hello');
        } else finish(null);
      });
      ws.on('message', (data) => {
        if (this.waiter !== null) {
          this.waiter();
          return;
        }
        if (this.onMessage !== null) this.onMessage(data.toString());
      });
      ws.on('error', (err) => finish(err));
      ws.on('close', (code, reason) => {
        const why = `websocket closed ${code} ${reason ? reason.toString() : ''}`.trim();
        finish(new Error(why));
        if (!this.closing) {
          this.closing = true;
          if (this.onDrop) this.onDrop(why);
        }
      });
    });
  }

  // "sending to another user" is a round trip through the echo server
  sendTo(_to, body) {
    const ws = this.ws;
    if (ws === null || ws.readyState !== 1) return false;
    ws.send(body);
    return true;
  }
  publish(body) {
    return this.sendTo(null, body);
  }
  buffered() {
    return this.ws === null ? 0 : this.ws.bufferedAmount;
  }
  close() {
    StompSession.prototype.close.call(this);
  }
  terminate() {
    this.closing = true;
    if (this.ws !== null) this.ws.terminate();
  }
}

// ------------------------------------------------------------ Socket.IO ----

let ioLib = null;
function io() {
  if (ioLib === null) ioLib = require('socket.io-client').io;
  return ioLib;
}

class SocketIOSession extends BaseSession {
  constructor(target, user, url, opts) {
    super(user, url, opts);
    this.target = target;
    this.sock = null;
    this.topic = target.topic || 'bench';
  }

  open(mode) {
    return this.opening((finish) => {
      const sock = io()(this.url, {
        path: this.target.path || '/socket.io',
        transports: ['websocket'],
        auth: { user: this.user },
        forceNew: true,
        reconnection: false,
        timeout: this.timeoutMs,
        perMessageDeflate: false,
      });
      this.sock = sock;
      sock.on('msg', (body) => {
        if (this.onMessage !== null) this.onMessage(typeof body === 'string' ? body : String(body));
      });
      sock.on('connect_error', (err) => finish(err instanceof Error ? err : new Error(String(err))));
      sock.on('disconnect', (reason) => {
        finish(new Error(`disconnected: ${reason}`));
        if (!this.closing) {
          this.closing = true;
          if (this.onDrop) this.onDrop(`disconnected: ${reason}`);
        }
      });
      sock.once('connect', () => {
        if (mode === 'topic' || mode === 'idle' || mode === 'connect') {
          sock.timeout(this.timeoutMs).emit('subscribe', this.topic, (err) => {
            finish(err ? new Error(`subscribe ack: ${err.message || err}`) : null);
          });
        } else finish(null); // 'user' and 'none': the server put us in room <user> already
      });
    });
  }

  sendTo(to, body) {
    const s = this.sock;
    if (s === null || !s.connected) return false;
    s.emit('send', { to, body });
    return true;
  }
  publish(body) {
    const s = this.sock;
    if (s === null || !s.connected) return false;
    s.emit('publish', { topic: this.topic, body });
    return true;
  }
  buffered() {
    // engine.io's write buffer (packets not yet handed to the WebSocket) + the ws's own buffer
    const s = this.sock;
    if (s === null) return 0;
    const engine = s.io && s.io.engine;
    if (!engine) return 0;
    let n = 0;
    for (const p of engine.writeBuffer || []) n += typeof p.data === 'string' ? p.data.length : 64;
    const ws = engine.transport && engine.transport.ws;
    if (ws && typeof ws.bufferedAmount === 'number') n += ws.bufferedAmount;
    return n;
  }
  close() {
    this.closing = true;
    if (this.sock !== null) this.sock.disconnect();
  }
  terminate() {
    this.close();
  }
}

function sessionClass(kind) {
  switch (kind) {
    case 'stomp':
    case 'rabbitmq':
      return StompSession;
    case 'socketio':
      return SocketIOSession;
    case 'echo':
      return EchoSession;
    default:
      throw new Error(`unknown target.kind ${JSON.stringify(kind)} (stomp, rabbitmq, socketio, echo)`);
  }
}

module.exports = { sessionClass, parseFrames, StompSession, EchoSession, SocketIOSession };
