'use strict';
// Fixed-bucket log-linear latency histogram in microseconds.
// Values below 1024 us have their own bucket; above, each power of two is cut
// into 512 buckets (relative error < 0.2 %). Histograms merge by summing buckets.

const LINEAR = 1024;
const SUB = 512; // buckets per power of two above LINEAR
const MAX_EXP = 24; // up to 2^(10+24) us, far more than any run
const SIZE = LINEAR + MAX_EXP * SUB;

function bucketOf(us) {
  let v = us < 0 ? 0 : Math.floor(us);
  if (v < LINEAR) return v;
  const e = Math.floor(Math.log2(v)) - 9; // v >> e is in [512, 1024)
  if (e > MAX_EXP) return SIZE - 1;
  const m = Math.floor(v / 2 ** e);
  return LINEAR + (e - 1) * SUB + (m - SUB);
}

// Lowest value of a bucket (and upper edge used for percentiles, as HDR does).
function valueOf(idx) {
  if (idx < LINEAR) return idx;
  const k = idx - LINEAR;
  const e = Math.floor(k / SUB) + 1;
  const m = (k % SUB) + SUB;
  return m * 2 ** e;
}
function upperOf(idx) {
  if (idx < LINEAR) return idx;
  const k = idx - LINEAR;
  const e = Math.floor(k / SUB) + 1;
  return valueOf(idx) + 2 ** e - 1;
}

class Histogram {
  constructor() {
    this.counts = new Float64Array(SIZE);
    this.total = 0;
    this.max = 0;
    this.min = Infinity;
    this.sum = 0;
  }
  record(us) {
    this.counts[bucketOf(us)] += 1;
    this.total += 1;
    this.sum += us;
    if (us > this.max) this.max = us;
    if (us < this.min) this.min = us;
  }
  // Sparse form for IPC: [idx, count, idx, count, ...]
  toJSON() {
    const pairs = [];
    const c = this.counts;
    for (let i = 0; i < SIZE; i++) if (c[i] !== 0) pairs.push(i, c[i]);
    return { pairs, total: this.total, max: this.max, min: this.min === Infinity ? null : this.min, sum: this.sum };
  }
  merge(obj) {
    if (!obj) return this;
    if (obj instanceof Histogram) obj = obj.toJSON();
    const p = obj.pairs;
    for (let i = 0; i < p.length; i += 2) this.counts[p[i]] += p[i + 1];
    this.total += obj.total;
    this.sum += obj.sum;
    if (obj.max > this.max) this.max = obj.max;
    if (obj.min !== null && obj.min < this.min) this.min = obj.min;
    return this;
  }
  // Percentile in us (upper edge of the bucket, capped at the exact max).
  percentile(p) {
    if (this.total === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let acc = 0;
    const c = this.counts;
    for (let i = 0; i < SIZE; i++) {
      acc += c[i];
      if (acc >= rank) return Math.min(upperOf(i), this.max);
    }
    return this.max;
  }
  summaryMs() {
    const r = (us) => (us === null ? null : Math.round(us) / 1000);
    return {
      p50_ms: r(this.percentile(50)),
      p90_ms: r(this.percentile(90)),
      p99_ms: r(this.percentile(99)),
      p999_ms: r(this.percentile(99.9)),
      max_ms: this.total ? r(this.max) : null,
      mean_ms: this.total ? r(this.sum / this.total) : null,
    };
  }
}

module.exports = { Histogram, bucketOf, valueOf, upperOf };
