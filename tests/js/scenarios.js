'use strict';
// Scenarios run by tests/test_js_clients.py against a live stompgate node.
//
//   node scenarios.js SCENARIO WS_URL [OPTIONS_JSON]
//
// Prints one JSON line on stdout: {"ok": true, ...observations} and exits 0, or
// {"ok": false, "error": ..., "report": {...partial observations}} and exits 1.
// A scenario reports what the clients saw; the Python test decides whether it
// is right. A scenario throws only when it cannot go on (a wait timed out).
// Every run stops by itself within DEADLINE_MS.

const { TAG, runScenarios, LegacyPeer, ModernPeer, RawStomp, Peer, sha256, sleep, until, withTimeout } = require('./lib');
const Stomp = require('stompjs');

const DEADLINE_MS = 20000;
const bodies = Peer.bodies;

/** Connect a peer of the given kind: 'modern' (@stomp/stompjs) or 'legacy' (stompjs 2.3.3). */
function connect(kind, url, login, options = {}) {
  if (kind === 'modern') return ModernPeer.connect(url, login, options);
  if (kind === 'legacy') return LegacyPeer.connect(url, login, options);
  throw new Error(`unknown client kind ${kind}`);
}

const other = (kind) => (kind === 'modern' ? 'legacy' : 'modern');

/** Headers and body of each message, for the report. */
const messages = (inbox) => inbox.map((m) => ({ headers: m.headers, body: m.body }));

const scenarios = {
  /**
   * Application destinations answered by Python handlers (tests/app_handlers.py):
   * a SEND to /app/hello answered on /topic/hello, a handler's MessagingError on
   * /user/queue/errors, and a SUBSCRIBE to /app/rooms answered once on that
   * subscription, before its RECEIPT.
   */
  async handlers({ url, client }, report) {
    const peer = await connect(client, url, `ada-${TAG}`);
    const hello = await peer.subscribe('/topic/hello');
    const errors = await peer.subscribe('/user/queue/errors');
    await peer.sendConfirmed('/app/hello', JSON.stringify({ name: 'Ada' }), { 'content-type': 'application/json' });
    await until(() => hello.length === 1, 'the greeting');
    report.greeting = messages(hello);
    await peer.sendConfirmed('/app/fail', '');
    await until(() => errors.length === 1, 'the error message');
    report.errors = messages(errors);
    const rooms = await peer.subscribe('/app/rooms');
    report.roomsAtReceipt = messages(rooms);
    report.peerErrors = peer.errors;
    return report;
  },

  /**
   * CONNECTED headers and the WebSocket sub-protocol for each way of connecting,
   * then one round trip through a topic to show the session works.
   * options.client: modern | legacy-over | legacy-client | legacy-overws
   */
  async handshake({ url, client }, report) {
    let peer;
    if (client === 'modern') peer = await ModernPeer.connect(url, `carol-${TAG}`);
    else if (client === 'legacy-over') peer = await LegacyPeer.connect(url, `carol-${TAG}`, { how: 'over' });
    else if (client === 'legacy-client') peer = await LegacyPeer.connect(url, `carol-${TAG}`, { how: 'client' });
    else if (client === 'legacy-overws') peer = await connectOverWs(url, `carol-${TAG}`);
    else throw new Error(`unknown client ${client}`);
    report.login = peer.login;
    report.connected = peer.connected;
    report.protocol = peer.ws.protocol; // the sub-protocol the server chose ('' = none)
    const inbox = await peer.subscribe(`/topic/handshake.${TAG}`);
    await peer.sendConfirmed(`/topic/handshake.${TAG}`, 'ping');
    await until(() => inbox.length === 1, 'the round-trip message');
    report.roundTrip = bodies(inbox);
    return report;
  },

  /**
   * alice sends to /user/bob/queue/chat; bob has two sessions (tabs), one per
   * library; alice is subscribed to the same /user/queue/chat herself.
   * options.client: the library of alice and of bob's first tab.
   */
  async 'user-destination'({ url, client }, report) {
    const bobName = `bob-${TAG}`;
    const aliceName = `alice-${TAG}`;
    const alice = await connect(client, url, aliceName);
    const bob1 = await connect(client, url, bobName);
    const bob2 = await connect(other(client), url, bobName);
    const [aliceBox, bob1Box, bob2Box] = await Promise.all(
      [alice, bob1, bob2].map((p) => p.subscribe('/user/queue/chat')),
    );
    report.inboxes = { alice: aliceBox, bob1: bob1Box, bob2: bob2Box };
    alice.send(`/user/${bobName}/queue/chat`, 'hello bob', { 'content-type': 'text/plain', 'x-trace': '42' });
    // alice's own messages are routed after the one to bob: had bob's reached
    // her, it would arrive before these.
    await alice.sendConfirmed(`/user/${aliceName}/queue/chat`, 'note to self');
    alice.send(`/user/${bobName}/queue/chat`, 'end');
    await until(() => bob1Box.length >= 2 && bob2Box.length >= 2, "both of bob's sessions to get 2 messages");
    await alice.sendConfirmed(`/user/${aliceName}/queue/chat`, 'second note');
    await until(() => aliceBox.length >= 2, "alice's two notes");
    return {
      kinds: { alice: alice.kind, bob1: bob1.kind, bob2: bob2.kind },
      subscriptions: { alice: aliceBox.subscription.id, bob1: bob1Box.subscription.id, bob2: bob2Box.subscription.id },
      alice: messages(aliceBox),
      bob1: messages(bob1Box),
      bob2: messages(bob2Box),
    };
  },

  /**
   * Publish-subscribe with exact and Ant-pattern subscriptions, subscribers of
   * both libraries. options.client: the publisher's library.
   */
  async topics({ url, client }, report) {
    const subs = [
      ['exact', 'modern', '/topic/chat.general'],
      ['exact2', 'legacy', '/topic/chat.general'],
      ['star', 'modern', '/topic/chat.*'],
      ['globstar', 'legacy', '/topic/**'],
      ['news', 'modern', '/topic/news'],
    ];
    const inboxes = {};
    report.inboxes = inboxes;
    for (const [name, kind, destination] of subs) {
      const peer = await connect(kind, url, `sub-${name}-${TAG}`);
      inboxes[name] = await peer.subscribe(destination);
    }
    const publisher = await connect(client, url, `pub-${TAG}`);
    publisher.send('/topic/chat.general', 'm1');
    publisher.send('/topic/chat.random', 'm2');
    publisher.send('/topic/news', 'm3');
    publisher.send('/topic/sports/football', 'm4');
    // 'end' reaches every subscriber after anything it could have got before
    publisher.send('/topic/chat.general', 'end');
    publisher.send('/topic/news', 'end');
    const ended = (box, n = 1) => bodies(box).filter((b) => b === 'end').length >= n;
    await until(
      () => Object.entries(inboxes).every(([name, box]) => ended(box, name === 'globstar' ? 2 : 1)),
      "'end' at every subscriber",
    );
    const out = {};
    for (const [name, box] of Object.entries(inboxes)) {
      out[name] = box.map((m) => [m.headers.destination, m.body]);
    }
    return { received: out };
  },

  /** 200 messages from one sender reach two subscribers (one per library) in order. */
  async order({ url, client }, report) {
    const destination = `/queue/order-${TAG}`;
    const same = await connect(client, url, `same-${TAG}`);
    const diff = await connect(other(client), url, `other-${TAG}`);
    const sameBox = await same.subscribe(destination);
    const otherBox = await diff.subscribe(destination);
    report.inboxes = { same: sameBox, other: otherBox };
    const sender = await connect(client, url, `sender-${TAG}`);
    for (let i = 0; i < 200; i++) sender.send(destination, `msg-${i}`, { seq: String(i) });
    await until(() => sameBox.length >= 200 && otherBox.length >= 200, '200 messages at both subscribers');
    await sleep(100); // room for any duplicate to show up
    const summary = (box) => ({
      bodies: bodies(box),
      seq: box.map((m) => m.headers.seq),
      distinctMessageIds: new Set(box.map((m) => m.headers['message-id'])).size,
    });
    return { same: summary(sameBox), other: summary(otherBox) };
  },

  /**
   * RECEIPT frames for SUBSCRIBE and SEND (and DISCONNECT for @stomp/stompjs),
   * and an ERROR that carries the receipt-id of the frame it refuses.
   */
  async receipts({ url, client }, report) {
    const peer = await connect(client, url, `rita-${TAG}`);
    const destination = `/topic/receipts.${TAG}`;
    const inbox = [];
    const subscribed = peer.receipt(`subscribe-${TAG}`);
    peer._subscribe(destination, { receipt: `subscribe-${TAG}` }, inbox);
    report.subscribeReceipt = await subscribed;
    report.messagesAtSubscribeReceipt = inbox.length;
    const sent = peer.receipt(`send-${TAG}`);
    peer.send(destination, 'with receipt', { receipt: `send-${TAG}` });
    report.sendReceipt = await sent;
    await until(() => inbox.length === 1, 'the message sent with a receipt');
    report.message = messages(inbox)[0];
    report.receiptOrder = [...peer.receipts];

    // A frame the server refuses: the ERROR names the receipt it will never send.
    const bad = await connect(client, url, `bad-${TAG}`);
    bad.send('/app/not-a-broker-destination', 'x', { receipt: `bad-${TAG}` });
    await until(() => bad.errors.length > 0, 'the ERROR frame');
    report.error = bad.errors[0];

    if (client === 'modern') {
      // deactivate() sends DISCONNECT with a receipt and waits for it
      let disconnectFrame = null;
      peer.client.onDisconnect = (frame) => (disconnectFrame = { ...frame.headers });
      await peer.client.deactivate();
      report.disconnectReceipt = disconnectFrame;
    }
    return report;
  },

  /**
   * Both libraries with 500 ms heart-beats stay connected through 3 s of
   * silence (the node is configured with send_ms/receive_ms 500).
   */
  async heartbeat({ url }, report) {
    const modern = await ModernPeer.connect(url, `hb-modern-${TAG}`, {
      heartbeatIncoming: 500,
      heartbeatOutgoing: 500,
    });
    const legacy = await LegacyPeer.connect(url, `hb-legacy-${TAG}`, { heartbeat: 500 });
    await sleep(3000);
    const facts = (peer) => ({
      heartBeatHeader: peer.connected['heart-beat'],
      pongs: peer.pongs,
      pings: peer.pings,
      // EOL-only WebSocket messages seen on the raw socket
      rawHeartbeats: peer.ws.received.filter((m) => !m.binary && m.data.toString() === '\n').length,
      heartbeatLost: peer.heartbeatLost,
      errors: peer.errors,
      closes: peer.closes,
      open: peer.ws.readyState === 1,
    });
    Object.assign(report, { modern: facts(modern), legacy: facts(legacy), afterIdle: null });
    if (report.modern.open && report.legacy.open) {
      // still alive: a message from one to the other
      const inbox = await modern.subscribe(`/topic/hb.${TAG}`);
      await legacy.sendConfirmed(`/topic/hb.${TAG}`, 'still here');
      await until(() => inbox.length === 1, 'the message after the idle period');
      report.afterIdle = bodies(inbox);
    }
    return report;
  },

  /**
   * When a client asks for server heart-beats every 500 ms (heart-beat:0,500)
   * the server must never stay silent much longer than that. A raw client
   * notes when CONNECTED and each EOL arrive over 2.5 s of silence.
   */
  async 'heartbeat-gaps'({ url }, report) {
    const raw = await RawStomp.open(url);
    const connected = await raw.connect(`hb-gaps-${TAG}`, '0,500');
    await sleep(2500);
    const times = [raw.connectedAt, ...raw.heartbeats];
    return Object.assign(report, {
      connected: connected.headers,
      gapsMs: times.slice(1).map((t, i) => t - times[i]),
      closeCode: raw.ws.closeCode,
    });
  },

  /**
   * Raw clients that promise heart-beats (heart-beat:500,500), send EOLs for a
   * while, then go silent: the server must close them. With 500 ms heart-beats
   * and read_margin 1.5 the server reads a client as dead after 750 ms of
   * silence. The times of the last EOLs (ms after CONNECTED) are chosen away
   * from the server's periodic read checks (every 750 ms after CONNECT), so the
   * outcome does not depend on a race with a check:
   *   steady  every 250 ms up to 1250 ms (between two checks)
   *   late    last one at 800 ms, just after the first check: the worst case
   *           for a server that only looks at the clock at its checks
   */
  async 'heartbeat-dead'({ url }, report) {
    const run = async (name, lastWrites) => {
      const raw = await RawStomp.open(url);
      const connected = await raw.connect(`silent-${name}-${TAG}`, '500,500');
      for (const at of lastWrites) {
        await sleep(at - (Date.now() - raw.connectedAt));
        raw.write('\n');
      }
      const stoppedAt = Date.now();
      const closedWhilePinging = raw.closedAt !== null;
      await raw.closed(6000);
      return Object.assign(raw.outcome(), {
        connected: connected.headers,
        closedWhilePinging,
        lastWriteAfterConnectMs: raw.lastWriteAt - raw.connectedAt,
        silentMs: raw.closedAt - raw.lastWriteAt,
        closedAfterStopMs: raw.closedAt - stoppedAt,
        heartbeatsReceived: raw.heartbeats.length,
      });
    };
    const [steady, late] = await Promise.all([
      run('steady', [250, 500, 750, 1000, 1250]),
      run('late', [250, 500, 800]),
    ]);
    return { steady, late };
  },

  /**
   * ack:client is cumulative. The node allows 3 unacknowledged messages per
   * session, so the consumer only gets 3 more messages after acking the third
   * of three if that ACK also covered the first two.
   */
  async 'ack-client'({ url, client }, report) {
    const destination = `/queue/ack-client-${TAG}`;
    const consumer = await connect(client, url, `consumer-${TAG}`);
    const publisher = await connect(client, url, `publisher-${TAG}`);
    const inbox = await consumer.subscribe(destination, { ack: 'client' });
    report.inbox = inbox;
    for (const body of ['c1', 'c2', 'c3']) publisher.send(destination, body);
    await until(() => inbox.length === 3, 'c1..c3');
    const acked = consumer.receipt(`ack-c3-${TAG}`);
    consumer.ack(inbox[2], { receipt: `ack-c3-${TAG}` });
    report.ackReceipt = await acked;
    for (const body of ['c4', 'c5', 'c6']) publisher.send(destination, body);
    // had the ACK settled c3 alone, c5 would exceed the limit: ERROR instead of c5
    await until(() => inbox.length === 6 || consumer.errors.length > 0, 'c4..c6 or an ERROR');
    const acked2 = consumer.receipt(`ack-c6-${TAG}`);
    consumer.ack(inbox[inbox.length - 1], { receipt: `ack-c6-${TAG}` });
    report.secondAckReceipt = await acked2.catch((err) => String(err));
    return {
      ackHeaders: inbox.map((m) => m.headers.ack ?? null),
      bodies: bodies(inbox),
      ackReceipt: report.ackReceipt,
      secondAckReceipt: report.secondAckReceipt,
      errors: consumer.errors,
    };
  },

  /**
   * ack:client-individual, with NACK: each ACK/NACK settles one message only.
   * With at most 3 unacknowledged messages allowed, settling i1 (NACK), i3 and
   * i5 (ACK) leaves i2 and i4 pending, so delivering i6 is fine and i7 is one
   * too many: the server refuses it with an ERROR.
   */
  async 'ack-individual'({ url, client }, report) {
    const destination = `/queue/ack-individual-${TAG}`;
    const consumer = await connect(client, url, `consumer-${TAG}`);
    const publisher = await connect(client, url, `publisher-${TAG}`);
    const inbox = await consumer.subscribe(destination, { ack: 'client-individual' });
    report.inbox = inbox;
    const settle = async (method, index) => {
      const id = `${method}-${inbox[index].body}-${TAG}`;
      const done = consumer.receipt(id);
      consumer[method](inbox[index], { receipt: id });
      return (await done).headers['receipt-id'];
    };
    for (const body of ['i1', 'i2', 'i3']) publisher.send(destination, body);
    await until(() => inbox.length === 3, 'i1..i3');
    report.receipts = [await settle('nack', 0), await settle('ack', 2)];
    for (const body of ['i4', 'i5']) publisher.send(destination, body);
    await until(() => inbox.length === 5 || consumer.errors.length > 0, 'i4, i5');
    report.errorsBeforeLimit = [...consumer.errors];
    report.receipts.push(await settle('ack', 4));
    for (const body of ['i6', 'i7']) publisher.send(destination, body);
    await until(() => consumer.errors.length > 0 || inbox.length === 7, 'an ERROR or i6, i7');
    await consumer.closed().catch(() => {});
    return {
      bodies: bodies(inbox),
      receipts: report.receipts,
      errorsBeforeLimit: report.errorsBeforeLimit,
      errors: consumer.errors,
      closeCode: consumer.ws.closeCode,
    };
  },

  /**
   * ACK and NACK of message ids the server never issued: an unknown one, and
   * one shaped like the session's ids but numbered past the last delivery.
   */
  async 'ack-unknown'({ url, client }, report) {
    const Kind = client === 'modern' ? ModernPeer : LegacyPeer;
    const destination = `/queue/ack-unknown-${TAG}`;
    const publisher = await connect(client, url, `publisher-${TAG}`);
    const results = {};
    report.results = results;
    for (const [name, command] of [
      ['made-up', 'ACK'],
      ['future', 'NACK'],
    ]) {
      const consumer = await connect(client, url, `consumer-${name}-${TAG}`);
      const inbox = await consumer.subscribe(destination, { ack: 'client-individual', id: `s-${name}` });
      await publisher.sendConfirmed(destination, `for ${name}`);
      await until(() => inbox.length === 1, `the message for ${name}`);
      const issued = Kind.ackIdOf(inbox[0]);
      // "<session>-<n>": a number the server has not used yet
      const messageId = name === 'made-up' ? 'no-such-message' : issued.replace(/\d+$/, (n) => String(+n + 100));
      consumer.ackId(command, messageId, `s-${name}`, { receipt: `bad-${name}` });
      await consumer.closed();
      results[name] = { command, issued, messageId, errors: consumer.errors, closeCode: consumer.ws.closeCode };
      await publisher.sendConfirmed(destination, 'drain'); // nobody left: dropped
    }
    return { results };
  },

  /** BEGIN, two SENDs, COMMIT delivers both in order; ABORT delivers nothing. */
  async transactions({ url, client }, report) {
    const destination = `/queue/tx-${TAG}`;
    const subscriber = await connect(client, url, `tx-sub-${TAG}`);
    const publisher = await connect(client, url, `tx-pub-${TAG}`);
    const inbox = await subscriber.subscribe(destination);
    report.inbox = inbox;
    const seen = (body) => bodies(inbox).includes(body);

    const tx = publisher.begin(`tx-commit-${TAG}`);
    publisher.send(destination, 'tx-1', { transaction: tx.id });
    publisher.send(destination, 'tx-2', { transaction: tx.id });
    // outside the transaction, processed after both transactional SENDs
    await publisher.sendConfirmed(destination, 'outside');
    await until(() => seen('outside'), "'outside'");
    const beforeCommit = bodies(inbox);
    tx.commit();
    await publisher.sendConfirmed(destination, 'after-commit');
    await until(() => seen('after-commit'), "'after-commit'");

    const tx2 = publisher.begin(`tx-abort-${TAG}`);
    publisher.send(destination, 'aborted-1', { transaction: tx2.id });
    publisher.send(destination, 'aborted-2', { transaction: tx2.id });
    tx2.abort();
    await publisher.sendConfirmed(destination, 'after-abort');
    await until(() => seen('after-abort'), "'after-abort'");
    return { beforeCommit, all: bodies(inbox), errors: publisher.errors.concat(subscriber.errors) };
  },

  /**
   * A 100 KB body sent by a client that splits frames into several WebSocket
   * messages arrives whole and byte-exact at an @stomp/stompjs subscriber.
   * options.sender: legacy (stompjs 2.3.3, 16 KiB pieces by default) or
   * modern-split (@stomp/stompjs with splitLargeFrames, 8 KiB pieces).
   */
  async 'large-split'({ url, sender: senderKind }, report) {
    const destination = `/topic/large.${TAG}`;
    const receiver = await ModernPeer.connect(url, `big-rx-${TAG}`);
    const inbox = await receiver.subscribe(destination);
    const sender =
      senderKind === 'legacy'
        ? await LegacyPeer.connect(url, `big-tx-${TAG}`)
        : await ModernPeer.connect(url, `big-tx-${TAG}`, { splitLargeFrames: true, maxWebSocketChunkSize: 8 * 1024 });
    report.maxChunk = senderKind === 'legacy' ? sender.client.maxWebSocketFrameSize : sender.client.maxWebSocketChunkSize;
    // ~100 KB of text with 2- and 3-byte UTF-8 characters (all in the BMP, so a
    // split by UTF-16 code units never cuts a character in two)
    let body = '';
    for (let i = 0; body.length < 100000; i++) body += `line ${i}: héllo wörld € ✓ ${'x'.repeat(i % 50)}\n`;
    const before = sender.ws.sent.length;
    await sender.sendConfirmed(destination, body, { 'content-type': 'text/plain;charset=UTF-8' });
    const pieces = sender.ws.sent.slice(before); // the WebSocket messages of that one SEND
    await until(() => inbox.length === 1, 'the large message');
    const message = inbox[0];
    const received = Buffer.from(message.raw.binaryBody);
    return {
      maxChunk: report.maxChunk,
      sentMessages: pieces.length,
      sentPieceLengths: pieces.map((p) => p.length),
      bodyChars: body.length,
      bodyBytes: Buffer.byteLength(body),
      sentSha256: sha256(Buffer.from(body, 'utf8')),
      receivedBytes: received.length,
      receivedSha256: sha256(received),
      contentLength: message.headers['content-length'],
      contentType: message.headers['content-type'],
      errors: sender.errors,
    };
  },

  /**
   * @stomp/stompjs binaryBody (bytes 0..255, application/octet-stream) arrives
   * as a binary WebSocket message with the same bytes; a text body, as text.
   */
  async binary({ url }, report) {
    const destination = `/topic/binary.${TAG}`;
    const receiver = await ModernPeer.connect(url, `bin-rx-${TAG}`);
    const inbox = await receiver.subscribe(destination);
    const sender = await ModernPeer.connect(url, `bin-tx-${TAG}`);
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const sentBefore = sender.ws.sent.length;
    sender.sendBinary(destination, bytes, { 'content-type': 'application/octet-stream' });
    report.sentAs = sender.ws.sent.slice(sentBefore).map((s) => (s.binary ? 'binary' : 'text'));
    await sender.sendConfirmed(destination, 'plain text', { 'content-type': 'text/plain' });
    await until(() => inbox.length === 2, 'the binary and the text message');
    // the receiver's WebSocket messages that carried MESSAGE frames
    const carried = receiver.ws.received
      .filter((m) => m.data.subarray(0, 8).toString('latin1') === 'MESSAGE\n')
      .map((m) => (m.binary ? 'binary' : 'text'));
    return {
      sentAs: report.sentAs,
      receivedAs: carried,
      messages: inbox.map((m) => ({
        headers: m.headers,
        isBinaryBody: m.raw.isBinaryBody,
        bytes: Array.from(m.raw.binaryBody),
      })),
    };
  },

  /**
   * Malformed input from a raw client gets ERROR (with a message header) and
   * a 1002 close, while an @stomp/stompjs session on the node carries on.
   * options.case: garbage | bad-header | oversized | oversized-2mib | oversized-split
   */
  async malformed({ url, case: which }, report) {
    const bystander = await ModernPeer.connect(url, `bystander-${TAG}`);
    const inbox = await bystander.subscribe(`/topic/bystander.${TAG}`);
    await bystander.sendConfirmed(`/topic/bystander.${TAG}`, 'before');
    const raw = await RawStomp.open(url);
    const big = (size) => RawStomp.frame('SEND', { destination: `/topic/big.${TAG}` }, 'a'.repeat(size));
    if (which === 'garbage') {
      raw.write('HELLO\n\n\0'); // no CONNECT, and not a STOMP command at all
    } else {
      await raw.connect(`raw-${TAG}`);
      if (which === 'bad-header') {
        raw.write(`SEND\ndestination:/topic/bystander.${TAG}\nthis line has no colon\n\nbody\0`);
      } else if (which === 'oversized') {
        raw.write(big(1024 * 1024 + 1024)); // just over max_frame_size (1 MiB), one message
      } else if (which === 'oversized-2mib') {
        raw.write(big(2 * 1024 * 1024)); // twice max_frame_size, one message
      } else if (which === 'oversized-split') {
        const frame = big(2 * 1024 * 1024); // twice max_frame_size, 16 KiB messages
        for (let i = 0; i < frame.length && raw.ws.readyState === 1; i += 16384) raw.write(frame.slice(i, i + 16384));
      } else {
        throw new Error(`unknown case ${which}`);
      }
    }
    await raw.closed();
    Object.assign(report, raw.outcome());
    // the bystander's session is unaffected
    await bystander.sendConfirmed(`/topic/bystander.${TAG}`, 'after');
    await until(() => inbox.length === 2, "the bystander's message after the bad client");
    report.bystander = { bodies: bodies(inbox), errors: bystander.errors, closes: bystander.closes };
    return report;
  },

  /**
   * A hostile sender tries to forge frames inside other users' pages: a body
   * with a NUL and a whole MESSAGE frame after it (stompjs 2.x splits what it
   * receives at every NUL), and header names that differ from reserved ones by
   * blanks or case (stompjs 2.x trims names and keeps the last value). Victims:
   * stompjs 2.3.3 and @stomp/stompjs, each subscribed as subscription "sub-0";
   * they report every message their library hands to the page.
   */
  async forgery({ url }, report) {
    const destination = `/topic/forge.${TAG}`;
    const legacy = await LegacyPeer.connect(url, `victim-l-${TAG}`);
    const modern = await ModernPeer.connect(url, `victim-m-${TAG}`);
    const legacyBox = await legacy.subscribe(destination, { id: 'sub-0' });
    const modernBox = await modern.subscribe(destination, { id: 'sub-0' });
    const raw = await RawStomp.open(url);
    await raw.connect(`mallory-${TAG}`);
    const forged = `MESSAGE\nsubscription:sub-0\nmessage-id:forged-id\ndestination:${destination}\n\nFORGED`;
    const body = `hello\0${forged}`;
    const length = Buffer.byteLength(body, 'utf8');
    raw.write(`SEND\ndestination:${destination}\ncontent-length:${length}\n\n${body}\0`);
    raw.send('SEND', { destination, 'message-id ': 'forged-id', ' subscription': 'sub-9', 'Destination': '/topic/elsewhere' }, 'second');
    raw.send('SEND', { destination, receipt: 'r-end' }, 'third');
    await until(() => raw.frames.some((f) => f.command === 'RECEIPT'), "mallory's last RECEIPT");
    await until(() => legacyBox.length >= 3 && modernBox.length >= 3, 'three messages at each victim');
    await sleep(200); // room for anything forged to show up
    const seen = (box) => box.map((m) => ({ body: m.body, id: m.headers['message-id'], subscription: m.headers.subscription, destination: m.headers.destination }));
    return { legacy: seen(legacyBox), modern: seen(modernBox), mallory: raw.outcome() };
  },

  /**
   * POST /api/send-to-user reaches every session of the user (one per library);
   * a wrong API key is refused and delivers nothing.
   */
  async 'http-api'({ url, httpUrl, apiKey }, report) {
    const user = `dave-${TAG}`;
    const modern = await ModernPeer.connect(url, user);
    const legacy = await LegacyPeer.connect(url, user);
    const modernBox = await modern.subscribe('/user/queue/notify');
    const legacyBox = await legacy.subscribe('/user/queue/notify');
    const post = async (key, payload) => {
      const resp = await fetch(`${httpUrl}/api/send-to-user`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'X-API-Key': key },
        body: JSON.stringify(payload),
      });
      return { status: resp.status, json: await resp.json() };
    };
    report.responses = [
      await post(apiKey, { user, destination: '/queue/notify', payload: { text: 'hi' } }),
      await post('wrong-key', { user, destination: '/queue/notify', payload: 'must not arrive' }),
      await post(apiKey, { user, destination: '/user/queue/notify', payload: 'plain hello' }),
    ];
    await until(() => modernBox.length >= 2 && legacyBox.length >= 2, 'two messages in both sessions');
    await sleep(100); // room for anything unexpected
    return { responses: report.responses, modern: messages(modernBox), legacy: messages(legacyBox) };
  },
};

/** stompjs 2.3.3's own Node transport (the `websocket` package, no sub-protocol), as a LegacyPeer. */
function connectOverWs(url, login) {
  const peer = new LegacyPeer(login);
  const client = Stomp.overWS(url);
  peer.client = client;
  client.debug = () => {};
  client.onreceipt = (frame) => peer._onReceipt(frame);
  const connecting = new Promise((resolve, reject) => {
    client.connect(
      { login },
      (frame) => {
        peer.connected = { ...frame.headers };
        // the `websocket` package's connection is private to stompjs: the
        // chosen sub-protocol cannot be read (stompjs offers none here)
        peer.ws = { protocol: null };
        resolve(peer);
      },
      (error) => (typeof error === 'string' ? reject(new Error(error)) : peer.errors.push(error)),
    );
  });
  return withTimeout(connecting, `CONNECTED for ${login} (Stomp.overWS)`);
}

runScenarios(scenarios, { script: 'scenarios.js', urlName: 'WS_URL', deadlineMs: DEADLINE_MS, tag: TAG });
