'use strict';
// SockJS scenarios run by tests/test_sockjs_clients.py: sockjs-client (1.6.x and
// 1.1.4) against the SockJS test echo server and against a live stompgate node.
//
//   node sockjs_scenarios.js SCENARIO BASE_URL [OPTIONS_JSON]
//
// BASE_URL is the echo server's root (http://127.0.0.1:PORT) for `echo` and
// `close`, and the node's SockJS endpoint (http://127.0.0.1:PORT/chat-websocket)
// for the stomp-* scenarios. Options: transport (websocket | xhr-streaming |
// xhr-polling | eventsource), library (1.6 | 1.1.4), and per scenario more.
//
// Prints one JSON line on stdout: {"ok": true, ...observations} and exits 0, or
// {"ok": false, "error": ..., "report": {...partial observations}} and exits 1.
// The scenario reports what the clients saw; the Python test decides whether it
// is right. Every run stops by itself within DEADLINE_MS.

const { TAG, runScenarios, Peer, sleep, until, withTimeout } = require('./lib');
const { connectSock, frameCount, openSockJS, sockFacts, sockjsVersion } = require('./sockjs_lib');

const DEADLINE_MS = 20000;
const bodies = Peer.bodies;

/** The messages `echo` sends: unicode, JSON-hostile characters, and one longer than the streaming limit. */
function echoMessages() {
  const long = '0123456789 abcdé€😀 "x" \\ \n'.repeat(800).slice(0, 20 * 1024);
  return [
    'hello',
    'é',
    '\u2028',
    'emoji 😀🎉 and a flag 🇫🇷',
    'quotes " \' backslash \\ slash / newline \n cr \r tab \t end',
    '["not", "a", "frame"]',
    'controls \u0001\u001f\u007f\u0085 bom \ufeff rtl \u200f \u2029 ok',
    long,
    'after the long one',
    'last',
  ];
}

/** Resolve when the socket has opened, reject if it closed first. */
function opened(sock, ms = 8000) {
  return until(
    () => {
      if (sock.record.openedAt) return true;
      if (sock.record.closeCode !== null) {
        throw new Error(`socket closed (${sock.record.closeCode} ${sock.record.closeReason}) before opening`);
      }
      return false;
    },
    `SockJS open over ${sock.record.requested}`,
    ms,
  );
}

const closed = (sock, ms = 8000) => until(() => sock.record.closeCode !== null, 'the SockJS close', ms);

/** Ask the node's API whether `user` has a session anywhere. */
async function online(url, apiKey, user) {
  const res = await fetch(`${new URL(url).origin}/api/users/${encodeURIComponent(user)}`, {
    headers: { Authorization: `Bearer ${apiKey}` },
  });
  if (!res.ok) throw new Error(`GET /api/users/${user}: HTTP ${res.status}`);
  return (await res.json()).online;
}

/** Poll until the node says `user` is offline; resolves to how long that took (ms). */
async function offline(url, apiKey, user, ms = 8000) {
  const started = Date.now();
  while (Date.now() - started < ms) {
    if (!(await online(url, apiKey, user))) return Date.now() - started;
    await sleep(50);
  }
  throw new Error(`${user} still online after ${ms} ms`);
}

/** Close a peer and wait for its SockJS socket to be closed; returns the close code seen. */
async function closePeer(peer) {
  await withTimeout(Promise.resolve(peer.close()), `close of ${peer.login}`).catch(() => {});
  await until(() => peer.sockClosed(), `SockJS close for ${peer.login}`).catch(() => {});
  return peer.ws.record.closeCode;
}

const messageFacts = (inbox) =>
  inbox.map((m) => ({
    body: m.body,
    destination: m.headers.destination,
    subscription: m.headers.subscription,
    'content-type': m.headers['content-type'],
  }));

const scenarios = {
  /** Echo round trips through <base>/echo; the client then closes (1000). */
  async echo({ url, transport, library }, report) {
    const sock = openSockJS(`${url}/echo`, { transport, library });
    report.socket = sock.record;
    const received = [];
    sock.addEventListener('message', (e) => received.push(e.data));
    await opened(sock);
    const sent = echoMessages();
    for (const m of sent) sock.send(m);
    await until(() => received.length >= sent.length, `${sent.length} echoes (have ${received.length})`, 10000);
    await sleep(100); // anything extra would show up
    sock.close();
    await closed(sock);
    return { version: sockjsVersion(library), sent, received, ...sockFacts(sock) };
  },

  /** <base>/close closes every session with 3000 "Go away!" right after opening it. */
  async close({ url, transport, library }, report) {
    const sock = openSockJS(`${url}/close`, { transport, library });
    report.socket = sock.record;
    const received = [];
    sock.addEventListener('message', (e) => received.push(e.data));
    await closed(sock);
    return { version: sockjsVersion(library), opened: sock.record.openedAt !== null, received, ...sockFacts(sock) };
  },

  /**
   * alice (stompjs 2.3.3 by default) and bob (@stomp/stompjs 7) chat over SockJS
   * through /user/{name}/queue/chat: alice sends 20 numbered messages in a burst,
   * bob answers each as it arrives.
   */
  async 'stomp-chat'({ url, transport, library, alice: aliceKind = 'legacy', count = 20 }, report) {
    const bobKind = aliceKind === 'legacy' ? 'modern' : 'legacy';
    const aliceName = `alice-${TAG}`;
    const bobName = `bob-${TAG}`;
    const sockOptions = { transport, library };
    const [alice, bob] = await Promise.all([
      connectSock(aliceKind, url, aliceName, sockOptions),
      connectSock(bobKind, url, bobName, sockOptions),
    ]);
    report.sockets = { alice: alice.ws.record, bob: bob.ws.record };
    const [aliceBox, bobBox] = await Promise.all([alice.subscribe('/user/queue/chat'), bob.subscribe('/user/queue/chat')]);
    report.inboxes = { alice: aliceBox, bob: bobBox };
    // bob answers each message as it arrives
    bobBox.push = function (m) {
      const n = Array.prototype.push.call(this, m);
      bob.send(`/user/${aliceName}/queue/chat`, `re: ${m.body}`, { 'content-type': 'text/plain;charset=UTF-8' });
      return n;
    };
    for (let i = 1; i <= count; i++) {
      alice.send(`/user/${bobName}/queue/chat`, `#${i} héllo 😀 from alice\nline 2`, { 'content-type': 'text/plain;charset=UTF-8' });
    }
    await until(
      () => bobBox.length >= count && aliceBox.length >= count,
      `${count} messages each (bob ${bobBox.length}, alice ${aliceBox.length})`,
      12000,
    );
    await sleep(200); // anything extra would show up
    const result = {
      version: sockjsVersion(library),
      kinds: { alice: alice.kind, bob: bob.kind },
      versions: { alice: alice.connected.version, bob: bob.connected.version },
      users: { alice: alice.connected['user-name'], bob: bob.connected['user-name'] },
      subscriptions: { alice: aliceBox.subscription.id, bob: bobBox.subscription.id },
      alice: messageFacts(aliceBox),
      bob: messageFacts(bobBox),
      errors: { alice: alice.errors, bob: bob.errors },
    };
    const closeCodes = { alice: await closePeer(alice), bob: await closePeer(bob) };
    return {
      ...result,
      closeCodes,
      sockets: { alice: sockFacts(alice.ws), bob: sockFacts(bob.ws) },
    };
  },

  /**
   * bob subscribes and leaves; alice sends 3 messages while he is away; bob comes
   * back over the same transport and gets them in order, then a live one.
   */
  async 'stomp-offline'({ url, transport, library, apiKey, client: bobKind = 'legacy' }, report) {
    const aliceKind = bobKind === 'legacy' ? 'modern' : 'legacy';
    const aliceName = `alice-${TAG}`;
    const bobName = `bob-${TAG}`;
    const sockOptions = { transport, library };
    const bob1 = await connectSock(bobKind, url, bobName, sockOptions);
    report.bob1 = bob1.ws.record;
    await bob1.subscribe('/user/queue/chat');
    const wasOnline = await online(url, apiKey, bobName);
    const firstClose = await closePeer(bob1);
    const offlineAfterMs = await offline(url, apiKey, bobName);
    const alice = await connectSock(aliceKind, url, aliceName, sockOptions);
    report.alice = alice.ws.record;
    const stored = [1, 2, 3].map((i) => `while away #${i} ✉`);
    for (const body of stored) await alice.sendConfirmed(`/user/${bobName}/queue/chat`, body);
    const bob2 = await connectSock(bobKind, url, bobName, sockOptions);
    report.bob2 = bob2.ws.record;
    const box = await bob2.subscribe('/user/queue/chat');
    report.box = box;
    await until(() => box.length >= 3, `the 3 stored messages (have ${box.length})`, 8000);
    await alice.sendConfirmed(`/user/${bobName}/queue/chat`, 'live #4');
    await until(() => box.length >= 4, `the live message (have ${box.length})`);
    await sleep(200);
    const result = {
      kinds: { bob: bob2.kind, alice: alice.kind },
      wasOnline,
      offlineAfterMs,
      firstClose,
      received: messageFacts(box),
      subscription: box.subscription.id,
      errors: { bob1: bob1.errors, bob2: bob2.errors, alice: alice.errors },
    };
    await closePeer(alice);
    await closePeer(bob2);
    return { ...result, sockets: { bob1: sockFacts(bob1.ws), bob2: sockFacts(bob2.ws), alice: sockFacts(alice.ws) } };
  },

  /**
   * One large SEND from @stomp/stompjs 7 (which does not split frames) to
   * stompjs 2.3.3: `emoji` astral characters, 4 bytes each in UTF-8 but 12 in the
   * JSON sockjs-client writes (it escapes surrogates as \\uXXXX).
   */
  async 'stomp-large'({ url, transport, library, emoji = 150000 }, report) {
    const sockOptions = { transport, library };
    const [sender, receiver] = await Promise.all([
      connectSock('modern', url, `big-sender-${TAG}`, sockOptions),
      connectSock('legacy', url, `big-receiver-${TAG}`, sockOptions),
    ]);
    report.sockets = { sender: sender.ws.record, receiver: receiver.ws.record };
    const box = await receiver.subscribe('/user/queue/big');
    const body = '😀'.repeat(emoji);
    sender.send(`/user/${receiver.login}/queue/big`, body);
    let error = null;
    try {
      await until(() => box.length >= 1 || sender.sockClosed() || sender.errors.length > 0, 'the large message', 10000);
    } catch (err) {
      error = err.message;
    }
    const got = box[0];
    const result = {
      version: sockjsVersion(library),
      utf8Bytes: Buffer.byteLength(body, 'utf8'),
      delivered: box.length,
      intact: got !== undefined && got.body === body,
      receivedLength: got === undefined ? null : got.body.length,
      wait: error,
      senderOpen: !sender.sockClosed(),
      errors: { sender: sender.errors, receiver: receiver.errors },
    };
    await closePeer(sender);
    await closePeer(receiver);
    return { ...result, sockets: { sender: sockFacts(sender.ws), receiver: sockFacts(receiver.ws) } };
  },

  /**
   * Three idle connections for `idleMs`: stompjs 2.3.3 and @stomp/stompjs 7
   * negotiating STOMP heart-beats (`heartbeat` ms both ways), and @stomp/stompjs 7
   * with heart-beats 0,0 (kept alive by SockJS `h` frames only). Each then makes
   * a round trip to show the session is alive at the server too.
   */
  async 'stomp-heartbeat'({ url, transport, library, heartbeat = 1000, idleMs = 4000 }, report) {
    const sockOptions = { transport, library };
    const specs = { legacy: ['legacy', heartbeat], modern: ['modern', heartbeat], quiet: ['modern', 0] };
    const names = Object.keys(specs);
    const peers = await Promise.all(
      names.map((n) => connectSock(specs[n][0], url, `${n}-${TAG}`, sockOptions, { heartbeat: specs[n][1] })),
    );
    const connectedAt = Date.now();
    report.sockets = Object.fromEntries(names.map((n, i) => [n, peers[i].ws.record]));
    const before = peers.map((p) => ({ pongs: p.pongs, pings: p.pings }));
    await sleep(idleMs);
    const idle = peers.map((p, i) => ({
      openAfterIdle: !p.sockClosed(),
      pongsWhileIdle: p.pongs - before[i].pongs,
      pingsWhileIdle: p.pings - before[i].pings,
      hFramesWhileIdle: frameCount(p.ws, 'h', connectedAt),
      hFramesTotal: frameCount(p.ws, 'h'),
      heartbeatLost: p.heartbeatLost,
    }));
    // the session still routes: a message to oneself
    const roundTrips = await Promise.all(
      peers.map(async (p) => {
        if (p.sockClosed()) return null;
        const box = await p.subscribe('/user/queue/ping');
        await p.sendConfirmed(`/user/${p.login}/queue/ping`, 'still here');
        await until(() => box.length >= 1, `round trip for ${p.login}`);
        return bodies(box);
      }),
    );
    const out = {};
    for (const [i, n] of names.entries()) {
      out[n] = {
        kind: peers[i].kind,
        clientHeartbeat: specs[n][1],
        connectedHeartbeat: peers[i].connected['heart-beat'],
        version: peers[i].connected.version,
        ...idle[i],
        roundTrip: roundTrips[i],
        errors: peers[i].errors,
        closes: peers[i].closes.slice(),
      };
    }
    for (const p of peers) await closePeer(p);
    for (const [i, n] of names.entries()) out[n].socket = sockFacts(peers[i].ws);
    return { version: sockjsVersion(library), idleMs, clients: out };
  },
};

runScenarios(scenarios, { script: 'sockjs_scenarios.js', urlName: 'BASE_URL', deadlineMs: DEADLINE_MS, tag: TAG });
