'use strict';
// webstomp-client (a stompjs 2.x fork) against a live stompgate node, run by
// tests/node/test_subprotocol_choice.py.
//
//   node webstomp_scenario.js WS_URL
//
// webstomp.client(url) offers the sub-protocols v10.stomp, v11.stomp, v12.stomp
// in that order and sends the CONNECT `accept-version` of the one the server
// answered. Prints one JSON line: {"ok": true, protocol, version, heartBeat,
// serverPings, nackError, bodies} (what the client saw) and exits 0, or
// {"ok": false, "error": ...} and exits 1. Stops by itself within 15 s.

const WebSocket = require('ws');
const webstomp = require('webstomp-client');

global.WebSocket = WebSocket; // webstomp.client() opens the socket with the global class

const url = process.argv[2];
const report = { ok: false };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const client = webstomp.client(url, { debug: false, heartbeat: { outgoing: 200, incoming: 200 } });
  let serverPings = 0;
  client.ws.addEventListener('message', (event) => {
    if (event.data === '\n') serverPings += 1; // a STOMP heart-beat from the server
  });
  const errors = [];
  const connected = await new Promise((resolve, reject) => {
    client.connect({ login: `webstomp-${process.pid}` }, resolve, (error) => {
      errors.push(String(error && (error.command || error.type || error)));
      reject(new Error(`connect failed: ${errors}`));
    });
  });
  report.protocol = client.ws.protocol;
  report.version = connected.headers.version;
  report.heartBeat = connected.headers['heart-beat'];

  // A 1.2 session acks and nacks by the MESSAGE's `ack` header; a 1.0 one has no NACK.
  const inbox = [];
  client.subscribe('/queue/webstomp-nack', (message) => {
    inbox.push(message.body);
    if (inbox.length === 1) message.nack();
    else message.ack();
  }, { ack: 'client-individual' });
  client.send('/queue/webstomp-nack', 'first');
  client.send('/queue/webstomp-nack', 'second');
  for (let i = 0; i < 50 && inbox.length < 2; i += 1) await sleep(50);
  report.bodies = inbox;
  await sleep(1000); // heart-beats every 200 ms meanwhile
  report.serverPings = serverPings;
  report.errors = errors;
  await new Promise((resolve) => client.disconnect(resolve));
  report.ok = true;
}

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ...report, ok: false, error: 'timed out' }));
  process.exit(1);
}, 15000);

main().then(
  () => {
    clearTimeout(deadline);
    console.log(JSON.stringify(report));
    process.exit(0);
  },
  (error) => {
    clearTimeout(deadline);
    console.log(JSON.stringify({ ...report, ok: false, error: String(error && error.stack || error) }));
    process.exit(1);
  },
);
