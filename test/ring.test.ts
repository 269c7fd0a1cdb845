// The worker ring (src/vm/ring.ts): batches come out whole and in order, and
// a capture that Lua keeps up with writes only the ring's first pages: the
// ring lies in a Lua VM's memory, where a page once written stays resident.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HDR, align8 } from '../src/capture/batch.js';
import { newRingControl, RingConsumer, RingProducer } from '../src/vm/ring.js';
import { Rng } from './rng.js';

const RING = 8 << 20;

function pair() {
  const shared = { data: new SharedArrayBuffer(RING), ctrl: newRingControl() };
  return { p: new RingProducer(shared), c: new RingConsumer(shared) };
}

/** Publish one batch of one packet of `len` bytes, all `seq & 255`; false if the ring had no room. */
function put(p: RingProducer, seq: number, len: number): boolean {
  const b = p.reserve(HDR + 65536, 0);
  if (!b) return false;
  b.buf.fill(0, 0, HDR);
  b.buf.writeUInt32LE(len, 12);
  b.buf.writeUInt32LE(seq, 32);
  b.buf.fill(seq & 255, HDR, HDR + len);
  b.count = 1;
  b.bytes = HDR + align8(len);
  return p.commit(b, 0);
}

function take(c: RingConsumer, seq: number): number {
  const b = c.next(0);
  assert.ok(b, `batch ${seq} is there`);
  assert.equal(b.count, 1);
  assert.equal(b.buf.readUInt32LE(32), seq, 'batches in order');
  const len = b.buf.readUInt32LE(12);
  assert.ok(b.buf.subarray(HDR, HDR + len).every((x) => x === (seq & 255)), `batch ${seq} intact`);
  const end = b.buf.byteOffset + b.bytes;
  c.release();
  return end;
}

test('an empty ring is written from its start again: the pages written stay near the largest backlog, not the ring', () => {
  const slot = 8 + HDR + 1200;
  // The consumer `backlog` batches behind, catching up every 1000 batches
  // (Lua stalled for a while): the producer writes at most the 1000 batches
  // between two moments the ring is empty, 12 times the ring's size in all.
  for (const [backlog, bound] of [[0, slot], [300, 1000 * slot]]) {
    const { p, c } = pair();
    let high = 0;
    let got = 0;
    for (let seq = 0; seq < 80_000; seq++) {
      assert.ok(put(p, seq, 1200));
      if (seq - got >= backlog) high = Math.max(high, take(c, got++));
      if (seq % 1000 === 999) while (got <= seq) high = Math.max(high, take(c, got++));
    }
    assert.ok(high <= bound, `backlog ${backlog}: written up to byte ${high} of ${RING}`);
  }
});

test('with a backlog the ring still wraps and hands every batch over once, in order', () => {
  const { p, c } = pair();
  const rng = new Rng(17);
  let sent = 0;
  let got = 0;
  let high = 0;
  while (got < 60_000) {
    // Bursts the consumer falls behind on (up to most of the ring), then catches up with.
    for (let k = rng.int(4000); k > 0 && put(p, sent, 64 + rng.int(1500)); k--) sent++;
    for (let k = rng.int(4000); k > 0 && got < sent; k--) high = Math.max(high, take(c, got++));
  }
  while (got < sent) take(c, got++);
  assert.equal(c.next(0), null);
  assert.ok(high > RING / 2, `a backlog reaches the ring's end (${high})`);
});
