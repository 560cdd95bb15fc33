'use strict';
// The chat example's pages in headless Chromium (Debian's, driven by playwright-core).
//
//   node browser_chat.js <scenario> <base-url> '<json options>'
//
// Prints one JSON line (the last line) with what the pages showed; the Python
// tests (tests/test_browser.py) assert on it. Scenarios:
//   chat      alice and bob log in (two browser contexts), connect, chat both
//             ways; bob closes his page, alice sends, bob reopens and reads
//   exchange  alice and bob connect and exchange one message each way
// Options: transport (restricts SockJS to it, without touching the page),
// page ("index.html": the seed's page; "stompjs.html": the @stomp/stompjs
// variant), apiKey (to ask /api/users/{name} which node holds a user),
// distinctNodes (reconnect bob until he is on another node than alice).

const crypto = require('crypto');
const { launchChromium } = require('./chromium');

const [, , scenario, base, rawOptions] = process.argv;
const options = JSON.parse(rawOptions || '{}');
const TAG = crypto.randomBytes(3).toString('hex');
const WAIT_MS = 15000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Restrict the page's `new SockJS(url)` to one transport, leaving the page as it is. */
function restrictTransports(transports) {
  if (!transports || window !== window.top) return; // the iframe transports' inner page stays as it is
  let wrapped;
  Object.defineProperty(window, 'SockJS', {
    configurable: true,
    get() {
      return wrapped;
    },
    set(Real) {
      const SockJS = function (url, protocols, opts) {
        return new Real(url, protocols, Object.assign({}, opts, { transports }));
      };
      Object.assign(SockJS, Real);
      SockJS.prototype = Real.prototype;
      wrapped = SockJS;
    },
  });
}

class ChatUser {
  constructor(browser, name) {
    this.browser = browser;
    this.name = name;
    this.context = null;
    this.page = null;
    this.console = [];
  }

  /** A new tab: the page sends it to the login page (each tab has its own user), then back. */
  async open() {
    if (!this.context) {
      this.context = await this.browser.newContext();
      await this.context.addInitScript(restrictTransports, options.transport ? [options.transport] : null);
    }
    const page = await this.context.newPage();
    await page.goto(`${base}/chat/${options.page || 'index.html'}`);
    await page.waitForURL(/\/chat\/login\.html/);
    await page.fill('#user', this.name);
    await Promise.all([page.waitForURL(/\/chat\/(index|stompjs)\.html/), page.click('#login')]);
    this.page = page;
    this.page.on('pageerror', (err) => this.console.push(`pageerror: ${err.message}`));
    this.page.on('console', (msg) => {
      if (msg.type() === 'error') this.console.push(`console: ${msg.text()}`);
    });
    await this.page.waitForSelector('#connect');
  }

  async connect() {
    const before = (await this.lines()).filter((l) => l === 'Info: STOMP connection opened.').length;
    await this.page.click('#connect');
    await this.waitFor(
      async () => (await this.lines()).filter((l) => l === 'Info: STOMP connection opened.').length > before,
      `${this.name} connected`,
    );
  }

  async disconnect() {
    await this.page.click('#disconnect');
  }

  /** The SockJS transport the page's connection uses (sockjs-client sets it once open). */
  async transport() {
    return this.page.evaluate(() => {
      if (typeof stompClient !== 'undefined' && stompClient) {
        const ws = stompClient.ws || (stompClient.webSocket);
        return ws && ws.transport;
      }
      if (typeof client !== 'undefined' && client && client.webSocket) return client.webSocket.transport;
      return null;
    });
  }

  async send(receiver, text) {
    await this.page.fill('#receiver', receiver);
    await this.page.fill('#message', text);
    if ((options.page || 'index.html') === 'index.html') {
      const sent = this.page.waitForResponse((r) => r.url().endsWith('/wsTemplate/sendToUser'));
      await this.page.click('#echo');
      const response = await sent;
      if (response.status() !== 200) throw new Error(`sendToUser answered ${response.status()}`);
    } else {
      await this.page.click('#echo');
    }
  }

  async lines() {
    return this.page.$$eval('#log .line', (els) => els.map((e) => e.textContent));
  }

  async waitFor(predicate, what, ms = WAIT_MS) {
    const started = Date.now();
    for (;;) {
      if (await predicate()) return;
      if (Date.now() - started > ms) {
        throw new Error(`timed out after ${ms} ms waiting for ${what}; ${this.name}'s log: ${JSON.stringify(await this.lines())}; errors: ${JSON.stringify(this.console)}`);
      }
      await sleep(50);
    }
  }

  async waitForLine(text) {
    await this.waitFor(async () => (await this.lines()).includes(text), `${this.name} to show ${JSON.stringify(text)}`);
  }
}

async function userInfo(name) {
  const response = await fetch(`${base}/api/users/${encodeURIComponent(name)}`, {
    headers: { Authorization: `Bearer ${options.apiKey}` },
  });
  return response.json();
}

async function nodesOf(name) {
  return Object.keys((await userInfo(name)).nodes || {}).sort();
}

async function waitOnline(name, online) {
  const started = Date.now();
  while ((await userInfo(name)).online !== online) {
    if (Date.now() - started > WAIT_MS) throw new Error(`${name} still ${online ? 'offline' : 'online'}`);
    await sleep(100);
  }
}

async function bothConnected(browser, report) {
  const alice = new ChatUser(browser, `alice-${TAG}`);
  // Two tabs of one browser when asked (the login is per tab), else two browser contexts.
  const bob = new ChatUser(browser, `bob-${TAG}`);
  if (options.sameBrowser) {
    await alice.open();
    bob.context = alice.context;
  }
  if (!options.sameBrowser) await alice.open();
  await bob.open();
  await alice.connect();
  await bob.connect();
  report.transports = { alice: await alice.transport(), bob: await bob.transport() };
  if (options.apiKey) {
    await waitOnline(alice.name, true);
    await waitOnline(bob.name, true);
    report.nodes = { alice: await nodesOf(alice.name), bob: await nodesOf(bob.name) };
    let tries = 0;
    while (options.distinctNodes && report.nodes.alice.join() === report.nodes.bob.join() && tries < 20) {
      tries += 1; // nginx picks the node by the SockJS session id: a new connection, a new draw
      await bob.disconnect();
      await waitOnline(bob.name, false);
      await bob.connect();
      await waitOnline(bob.name, true);
      report.nodes.bob = await nodesOf(bob.name);
    }
    report.reconnects = tries;
  }
  return { alice, bob };
}

async function exchange(alice, bob, report) {
  // What the two inputs say they are for: a reader without CJK fonts sees only the English.
  report.placeholders = {};
  for (const id of ['receiver', 'message']) {
    report.placeholders[id] = await alice.page.getAttribute(`#${id}`, 'placeholder');
  }
  await alice.send(bob.name, 'hello bob');
  await bob.waitForLine(`${alice.name} say: hello bob`);
  await bob.send(alice.name, 'hello alice');
  await alice.waitForLine(`${bob.name} say: hello alice`);
  report.exchanged = true;
}

const scenarios = {
  async exchange(browser, report) {
    const { alice, bob } = await bothConnected(browser, report);
    await exchange(alice, bob, report);
    report.aliceLog = await alice.lines();
    report.bobLog = await bob.lines();
    report.errors = [...alice.console, ...bob.console];
  },

  async chat(browser, report) {
    const { alice, bob } = await bothConnected(browser, report);
    await exchange(alice, bob, report);
    for (let i = 1; i <= 5; i += 1) await alice.send(bob.name, `burst ${i}`);
    for (let i = 1; i <= 5; i += 1) await bob.waitForLine(`${alice.name} say: burst ${i}`);
    report.bobLog = await bob.lines();

    // bob closes his page; alice writes to him while he is away
    await bob.page.close();
    if (options.apiKey) await waitOnline(bob.name, false);
    report.bobWentOffline = true;
    await alice.send(bob.name, 'while you were away 1');
    await alice.send(bob.name, 'while you were away 2');

    // bob comes back: the page connects and shows what was kept for him
    await bob.open();
    await bob.connect();
    await bob.waitForLine(`${alice.name} say: while you were away 1`);
    await bob.waitForLine(`${alice.name} say: while you were away 2`);
    await sleep(300); // anything delivered twice would show up by now
    report.reopenedTransport = await bob.transport();
    report.reopenedLog = await bob.lines();
    report.aliceLog = await alice.lines();
    report.errors = [...alice.console, ...bob.console];
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  const report = { ok: false, scenario, options };
  const browser = await launchChromium();
  const deadline = setTimeout(() => {
    console.log(JSON.stringify({ ...report, ok: false, error: 'scenario took longer than 90 s' }));
    process.exit(1);
  }, 90000);
  try {
    await run(browser, report);
    report.ok = true;
  } catch (err) {
    report.error = String(err && err.stack ? err.stack : err);
  } finally {
    clearTimeout(deadline);
    await browser.close().catch(() => {});
  }
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}

main();
