'use strict';
// Offline checks of the STOMP frame parser and the histogram: node selftest.js
const assert = require('assert');
const { parseFrames } = require('./clients');
const { Histogram, bucketOf, valueOf, upperOf } = require('./hist');

let passed = 0;
let failed = 0;
function test(name, fn) {
  try {
    fn();
    passed++;
  } catch (e) {
    failed++;
    console.error(`FAIL ${name}: ${e.stack}`);
  }
}

function frames(chunks) {
  const out = [];
  let rest = null;
  for (const c of chunks) {
    let buf = Buffer.from(c);
    if (rest) buf = Buffer.concat([rest, buf]);
    const r = parseFrames(buf, (cmd, h, body) => out.push([cmd, body]));
    rest = r ? Buffer.from(r) : null;
  }
  return { out, rest };
}

test('several frames in one message, heart-beats between', () => {
  const { out, rest } = frames([
    'MESSAGE\ndestination:/a\nmessage-id:1\n\nhello\0\nMESSAGE\ncontent-length:3\n\na\0b\0\n\nRECEIPT\nreceipt-id:r0\n\n\0',
  ]);
  assert.deepStrictEqual(out, [
    ['MESSAGE', 'hello'],
    ['MESSAGE', 'a\0b'],
    ['RECEIPT', ''],
  ]);
  assert.strictEqual(rest, null);
});

test('frame split over messages', () => {
  const { out, rest } = frames(['MESS', 'AGE\ndestination:/a\n', '\nbo', 'dy\0MESSAGE\ncontent-le', 'ngth:2\n\nxy', '\0']);
  assert.deepStrictEqual(out, [
    ['MESSAGE', 'body'],
    ['MESSAGE', 'xy'],
  ]);
  assert.strictEqual(rest, null);
});

test('CRLF line ends', () => {
  const { out } = frames(['CONNECTED\r\nversion:1.2\r\nheart-beat:0,0\r\n\r\n\0\r\n']);
  assert.deepStrictEqual(out, [['CONNECTED', '']]);
});

test('content-length first header and utf-8 body', () => {
  const body = 'héllo';
  const { out } = frames([`MESSAGE\ncontent-length:${Buffer.byteLength(body)}\ndestination:/x\n\n${body}\0`]);
  assert.deepStrictEqual(out, [['MESSAGE', body]]);
});

test('histogram buckets are monotone and tight', () => {
  let prev = -1;
  for (let v = 0; v < 5e7; v = v < 2000 ? v + 1 : Math.floor(v * 1.0007)) {
    const b = bucketOf(v);
    assert.ok(b >= prev, `bucket of ${v}`);
    prev = b;
    assert.ok(valueOf(b) <= v && v <= upperOf(b), `${v} in [${valueOf(b)}, ${upperOf(b)}]`);
    assert.ok(upperOf(b) - valueOf(b) <= Math.max(0, v * 0.002), `precision at ${v}`);
  }
});

test('histogram percentiles and merge', () => {
  const a = new Histogram();
  const b = new Histogram();
  for (let i = 1; i <= 1000; i++) (i % 2 ? a : b).record(i * 100);
  const m = new Histogram().merge(a.toJSON()).merge(b.toJSON());
  assert.strictEqual(m.total, 1000);
  const p50 = m.percentile(50);
  assert.ok(Math.abs(p50 - 50000) <= 100, `p50 ${p50}`);
  const p99 = m.percentile(99);
  assert.ok(Math.abs(p99 - 99000) <= 200, `p99 ${p99}`);
  assert.strictEqual(m.percentile(100), 100000);
  assert.strictEqual(m.max, 100000);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
