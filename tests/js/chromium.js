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

module.exports = { launchChromium };
