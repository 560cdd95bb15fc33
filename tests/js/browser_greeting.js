'use strict';
// The greeting example (Spring's gs-messaging-stomp-websocket page) in headless Chromium.
//
//   node browser_greeting.js <own-base-url> <other-base-url> <screenshot path or "">
//
// On its own origin the page connects, sends names and shows the greetings the
// Python handler returns. A page of another origin (the node under another host
// name is another origin to the browser) that opens a WebSocket to the node is
// refused at the handshake. Prints one JSON line with what it saw.

const { launchChromium } = require('./chromium');

const [, , own, other, screenshot] = process.argv;
const WAIT_MS = 15000;

async function main() {
  const browser = await launchChromium();
  const report = { ok: false };
  try {
    const context = await browser.newContext();
    // The user is logged in at the node (its chat page's cookie).
    await context.addCookies([{ name: 'chat_user', value: 'alice', url: own }]);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${own}/greeting/`);
    await page.click('#connect');
    await page.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, {
      timeout: WAIT_MS,
    });
    for (const name of ['Ada', '<b>Grace</b>']) {
      await page.fill('#name', name);
      await page.click('#send');
    }
    await page.waitForFunction(() => document.querySelectorAll('#greetings td').length >= 2, null, {
      timeout: WAIT_MS,
    });
    report.greetings = await page.$$eval('#greetings td', (cells) => cells.map((c) => c.textContent));
    if (screenshot) await page.screenshot({ path: screenshot });
    report.pageErrors = errors;

    // Another origin's page (the node under another host name is another origin to
    // the browser) opens a WebSocket to the node, as a hostile page would.
    const foreign = await context.newPage();
    await foreign.goto(`${other}/greeting/`);
    const target = own.replace(/^http/, 'ws') + '/gs-guide-websocket';
    report.foreign = await foreign.evaluate(
      (url) => new Promise((resolve) => {
        const ws = new WebSocket(url, ['v12.stomp']);
        ws.onopen = () => ws.send('CONNECT\naccept-version:1.2\nlogin:guest\n\n\0');
        ws.onmessage = (event) => resolve(`frame: ${String(event.data).slice(0, 40)}`);
        ws.onerror = () => resolve('error');
        ws.onclose = (event) => resolve(`closed ${event.code}`);
        setTimeout(() => resolve('timeout'), 10000);
      }),
      target,
    );
    // The same over SockJS (the chat's endpoint), with the user's login cookie set for
    // the node: no transport may open the session from this origin.
    await foreign.addScriptTag({ url: `${other}/chat/node_modules/sockjs-client/dist/sockjs.min.js` });
    report.foreignSockjs = await foreign.evaluate(
      (url) => new Promise((resolve) => {
        const sock = new SockJS(url);
        sock.onopen = () => resolve('open');
        sock.onclose = (event) => resolve(`closed ${event.code}`);
        setTimeout(() => resolve('timeout'), 10000);
      }),
      `${own}/chat-websocket`,
    );
    // The page itself, from its own origin there, works: the check is per origin.
    await foreign.click('#connect');
    await foreign.waitForFunction(() => document.getElementById('status').textContent === 'connected', null, {
      timeout: WAIT_MS,
    });
    report.ok = true;
  } catch (err) {
    report.error = String(err && err.stack ? err.stack : err);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
}

main();
