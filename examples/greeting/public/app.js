'use strict';
// The guide's app.js with @stomp/stompjs: SEND /app/hello {"name": ...}, greetings on /topic/greetings.

const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const stompClient = new StompJs.Client({
  brokerURL: `${scheme}//${location.host}/gs-guide-websocket`,
  connectHeaders: { login: 'guest' }, // the node's dev login; a real node would check a token
});

const $ = (id) => document.getElementById(id);

function setConnected(connected) {
  $('connect').disabled = connected;
  $('disconnect').disabled = !connected;
  $('send').disabled = !connected;
  $('conversation').hidden = !connected;
  $('status').textContent = connected ? 'connected' : 'disconnected';
  if (!connected) $('greetings').replaceChildren();
}

function showGreeting(message) {
  const row = document.createElement('tr');
  const cell = document.createElement('td');
  cell.textContent = message; // text, never HTML
  row.appendChild(cell);
  $('greetings').appendChild(row);
}

stompClient.onConnect = () => {
  setConnected(true);
  stompClient.subscribe('/topic/greetings', (greeting) => showGreeting(JSON.parse(greeting.body).content));
};
stompClient.onWebSocketError = () => {
  $('status').textContent = 'cannot connect';
};
stompClient.onStompError = (frame) => {
  $('status').textContent = `error: ${frame.headers.message}`;
};

$('connect').addEventListener('click', () => stompClient.activate());
$('disconnect').addEventListener('click', () => {
  stompClient.deactivate();
  setConnected(false);
});
$('greet').addEventListener('submit', (event) => {
  event.preventDefault();
  stompClient.publish({
    destination: '/app/hello',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: $('name').value }),
  });
});
