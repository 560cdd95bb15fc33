'use strict';
// The admin page (stompgate/admin/static) in headless Chromium.
//
//   node browser_admin.js <node base url> <admin password> <screenshot path>
//
// A wrong password is refused; the right one shows the dashboard: the node, its
// charts, alice among the users online. The operator searches alice, sees her
// session, takes a screenshot, and disconnects her. Prints one JSON line.

const { runReport } = require('./chromium');

const [, , base, password, screenshot] = process.argv;
const WAIT_MS = 15000;

runReport(async (browser, report) => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('dialog', (dialog) => { report.confirm = dialog.message(); dialog.accept(); });
  const failed = [];
  page.on('requestfailed', (request) => failed.push(request.url()));
  page.on('response', (response) => { if (response.status() >= 400) failed.push(`${response.status()} ${response.url()}`); });
  await page.goto(`${base}/admin/`);

  await page.fill('#password', 'not-the-password');
  await page.click('#login-button');
  await page.waitForFunction(() => document.getElementById('login-error').textContent !== '', null, { timeout: WAIT_MS });
  report.wrongPassword = await page.textContent('#login-error');
  report.dashboardAfterWrong = await page.isVisible('#dashboard');

  await page.fill('#password', password);
  await page.click('#login-button');
  await page.waitForSelector('#dashboard', { state: 'visible', timeout: WAIT_MS });
  await page.waitForFunction(
    () => [...document.querySelectorAll('#users a')].some((a) => a.textContent === 'alice'), null, { timeout: WAIT_MS },
  );
  report.loginVisible = await page.isVisible('#login');
  report.users = await page.$$eval('#users a', (links) => links.map((a) => a.textContent));
  report.nodes = await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  // A few refreshes, so the charts have points to draw.
  await page.waitForFunction(() => document.querySelectorAll('.chart canvas').length === 3, null, { timeout: WAIT_MS });
  await page.waitForTimeout(4000);
  report.charts = await page.$$eval('.chart', (charts) => charts.map((c) => c.querySelectorAll('canvas').length));
  report.chartLegend = await page.$$eval('#chart-published .u-legend .u-series', (s) => s.map((x) => x.textContent.trim()));

  await page.fill('#search-user', 'alice');
  await page.click('#search-button');
  await page.waitForFunction(() => document.querySelectorAll('#user-sessions tbody tr').length > 0, null, { timeout: WAIT_MS });
  report.summary = await page.textContent('#user-summary');
  report.aliceSessions = await page.$$eval('#user-sessions tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  await page.click('#disconnect-user');
  await page.waitForFunction(
    () => document.getElementById('user-summary').textContent === 'alice has no session', null, { timeout: WAIT_MS },
  );
  report.status = await page.textContent('#status');
  report.usersAfter = await page.$$eval('#users a', (links) => links.map((a) => a.textContent));
  report.pageErrors = errors;
  report.failedRequests = failed.filter((u) => !u.includes('/api/'));
});
