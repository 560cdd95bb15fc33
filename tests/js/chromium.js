'use strict';
// Debian's Chromium, headless, as every browser test launches it (DEVELOPERS.md's flags).

const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function launchChromium() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS, headless: true });
}

// Run a scenario: fn(browser, report) fills the report; ok unless it throws. Prints the report as
// the one JSON line tests/jsrun.py reads.
async function runReport(fn) {
  const browser = await launchChromium();
  const report = { ok: false };
  try {
    await fn(browser, report);
    report.ok = true;
  } catch (err) {
    report.ok = false;
    report.error = String(err && err.stack ? err.stack : err);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
}

module.exports = { launchChromium, runReport };
