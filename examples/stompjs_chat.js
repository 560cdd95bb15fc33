// alice sends bob a message through a node started with `make run`, using @stomp/stompjs.
// Run from tests/js (where the npm packages are installed): node ../../examples/stompjs_chat.js
const path = require('path');
const modules = path.join(__dirname, '..', 'tests', 'js', 'node_modules');
const { Client } = require(path.join(modules, '@stomp/stompjs'));
const WebSocket = require(path.join(modules, 'ws'));
const url = `ws://127.0.0.1:${process.env.STOMPGATE_PORT || 8080}/ws`;

function connect(login) {
  return new Promise((resolve, reject) => {
    const client = new Client({
      webSocketFactory: () => new WebSocket(url, ['v12.stomp']),
      connectHeaders: { login },
      reconnectDelay: 0,
      onConnect: () => resolve(client),
      onStompError: (frame) => reject(new Error(frame.headers.message)),
      onWebSocketError: () => reject(new Error(`cannot reach ${url}: is \`make run\` up?`)),
    });
    client.activate();
  });
}

(async () => {
  const bob = await connect('bob');
  const got = new Promise((resolve) =>
    bob.subscribe('/user/queue/chat', (m) => resolve(m)));
  const alice = await connect('alice');
  alice.publish({ destination: '/user/bob/queue/chat', body: "hi bob, it's alice" });
  const message = await got;
  console.log(`bob got ${JSON.stringify(message.body)} on ${message.headers.destination}`);
  await alice.deactivate();
  await bob.deactivate();
})().catch((err) => { console.error(err.message); process.exit(1); });
