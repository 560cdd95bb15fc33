'use strict';
// Building blocks for sockjs_scenarios.js: sockjs-client (1.6.x, or 1.1.4, the
// version of Spring's guides) with a record of what crossed it, and the two STOMP
// libraries of lib.js running over it.
//
//   openSockJS(url, {transport, library})  a SockJS socket limited to one transport
//   SockModernPeer  @stomp/stompjs 7 with webSocketFactory: () => new SockJS(...)
//   SockLegacyPeer  stompjs 2.3.3 with Stomp.over(new SockJS(...))
//
// The socket records the SockJS frames it received by type (o, h, a, c) with
// their times, the transport it ended up with, and how it closed, so the Python
// tests can assert on them.

const { LegacyPeer, ModernPeer } = require('./lib');
const Stomp = require('stompjs');

const LIBRARIES = { '1.6': 'sockjs-client', '1.1.4': 'sockjs-client-114' };
const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];

function sockjsClass(library = '1.6') {
  const name = LIBRARIES[library];
  if (!name) throw new Error(`unknown sockjs-client library ${library}`);
  return require(name);
}

/** The version string sockjs-client reports of itself (SockJS.version). */
const sockjsVersion = (library) => sockjsClass(library).version;

/**
 * A SockJS socket allowed exactly one transport, recording:
 *   sock.record.frames     [{type, at}] for each SockJS frame ('o', 'h', 'a', 'm', 'c',
 *                          'prelude' for xhr-streaming's 2 KiB of 'h')
 *   sock.record.transport  sock.transport once open (what the client really used)
 *   sock.record.closeCode / closeReason / closedAt / openedAt
 */
function openSockJS(url, { transport, library = '1.6' } = {}) {
  if (!TRANSPORTS.includes(transport)) throw new Error(`unknown transport ${transport}`);
  const SockJS = sockjsClass(library);
  const sock = new SockJS(url, null, { transports: [transport] });
  const record = {
    library,
    requested: transport,
    transport: null,
    frames: [],
    openedAt: null,
    closeCode: null,
    closeReason: null,
    closedAt: null,
  };
  sock.record = record;
  // _transportMessage is bound when the transport is created (after /info), so an
  // own property set now is the one the transport calls with each raw frame.
  const original = sock._transportMessage;
  sock._transportMessage = function (msg) {
    // xhr-streaming's prelude (2048 'h') is not a heartbeat frame
    const type = typeof msg !== 'string' ? '?' : msg.length > 1 && /^h+$/.test(msg) ? 'prelude' : msg.slice(0, 1);
    record.frames.push({ type, at: Date.now() });
    return original.call(this, msg);
  };
  sock.addEventListener('open', () => {
    record.openedAt = Date.now();
    record.transport = sock.transport;
  });
  sock.addEventListener('close', (event) => {
    record.closedAt = Date.now();
    record.closeCode = event.code;
    record.closeReason = event.reason;
  });
  return sock;
}

/** Count the SockJS frames of a type, optionally only those at or after `since`. */
function frameCount(sock, type, since = 0) {
  return sock.record.frames.filter((f) => f.type === type && f.at >= since).length;
}

/** What a report says about a socket. */
function sockFacts(sock) {
  const r = sock.record;
  const counts = {};
  for (const f of r.frames) counts[f.type] = (counts[f.type] || 0) + 1;
  return {
    library: r.library,
    requested: r.requested,
    transport: r.transport,
    frameCounts: counts,
    closeCode: r.closeCode,
    closeReason: r.closeReason,
  };
}

// ------------------------------------------------------ @stomp/stompjs 7

class SockModernPeer {
  /**
   * An @stomp/stompjs Client over SockJS; `config` is merged into the Client
   * configuration (heart-beats). Returns a ModernPeer whose `ws` is the SockJS socket.
   */
  static async connect(url, login, sockOptions, config = {}) {
    let sock = null;
    const peer = await ModernPeer.connect(url, login, {
      webSocketFactory: () => (sock = openSockJS(url, sockOptions)),
      ...config,
    });
    peer.ws = sock;
    peer.sockClosed = () => sock.record.closeCode !== null;
    return peer;
  }
}

// ---------------------------------------------------------- stompjs 2.3.3

class SockLegacyPeer extends LegacyPeer {
  /** stompjs 2.3.3 over SockJS (Stomp.over(sock)), as in Spring's guides; `heartbeat` both ways in ms. */
  static connect(url, login, sockOptions, { heartbeat } = {}) {
    const peer = new SockLegacyPeer(login);
    peer.ws = openSockJS(url, sockOptions);
    peer.sockClosed = () => peer.ws.record.closeCode !== null;
    return LegacyPeer._attach(peer, Stomp.over(peer.ws), login, {
      heartbeat,
      closeCode: () => peer.ws.record.closeCode,
      what: `CONNECTED for ${login} over SockJS ${sockOptions.transport}`,
    });
  }

  close() {
    if (this.ws.readyState === 1) this.client.disconnect();
  }
}

/** Connect over SockJS with 'modern' (@stomp/stompjs 7) or 'legacy' (stompjs 2.3.3). */
function connectSock(kind, url, login, sockOptions, { heartbeat } = {}) {
  if (kind === 'modern') {
    const config = heartbeat === undefined ? {} : { heartbeatIncoming: heartbeat, heartbeatOutgoing: heartbeat };
    return SockModernPeer.connect(url, login, sockOptions, config);
  }
  if (kind === 'legacy') return SockLegacyPeer.connect(url, login, sockOptions, { heartbeat });
  throw new Error(`unknown client kind ${kind}`);
}

module.exports = {
  TRANSPORTS,
  connectSock,
  frameCount,
  openSockJS,
  sockFacts,
  sockjsVersion,
  SockLegacyPeer,
  SockModernPeer,
};
