// The offline reader against libpcap's own answers (the tcpdump corpus), against
// files built here byte by byte, and against damaged files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Batch, recordAt } from '../src/capture/batch.js';
import { CaptureFileError, openCaptureFile, type CaptureFile } from '../src/capture/file.js';
import { CORPUS } from './helpers.js';

// ------------------------------------------------------------------ helpers

interface Rec {
  sec: number;
  nsec: number;
  caplen: number;
  wirelen: number;
  linktype: number;
  iface: number;
  data: Buffer;
}

function drain(f: CaptureFile, batch = new Batch(1 << 16), max = 1000): Rec[] {
  const out: Rec[] = [];
  for (;;) {
    batch.reset();
    const n = f.fill(batch, max);
    if (n === 0) return out;
    assert.equal(n, batch.count);
    for (const o of batch.offsets()) {
      const r = recordAt(batch, o);
      out.push({ ...r, data: Buffer.from(r.data) });
    }
  }
}

/** Read a file to its end or its damage: the packets delivered, and the error thrown after them. */
function readAll(file: string): { f: CaptureFile; recs: Rec[]; err: CaptureFileError | null } {
  const f = openCaptureFile(file);
  const recs: Rec[] = [];
  let err: CaptureFileError | null = null;
  const batch = new Batch(1 << 16);
  try {
    for (;;) {
      batch.reset();
      const n = f.fill(batch, 1000);
      if (n === 0) break;
      for (const o of batch.offsets()) {
        const r = recordAt(batch, o);
        recs.push({ ...r, data: Buffer.from(r.data) });
      }
    }
  } catch (e) {
    assert.ok(e instanceof CaptureFileError, `expected CaptureFileError, got ${e}`);
    err = e;
    // Damage is sticky: every later call reports it again.
    assert.throws(() => f.fill(batch, 1000), (e2) => e2 === err);
  }
  f.close();
  return { f, recs, err };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-capfile-'));
let seq = 0;
function write(bytes: Buffer | Buffer[], name = `f${seq++}`): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Array.isArray(bytes) ? Buffer.concat(bytes) : bytes);
  return p;
}
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const bytes = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

function u16(n: number, le: boolean): Buffer {
  const b = Buffer.alloc(2);
  if (le) b.writeUInt16LE(n);
  else b.writeUInt16BE(n);
  return b;
}
function u32(n: number, le: boolean): Buffer {
  const b = Buffer.alloc(4);
  if (le) b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
}
function i64(n: bigint, le: boolean): Buffer {
  const b = Buffer.alloc(8);
  if (le) b.writeBigInt64LE(n);
  else b.writeBigInt64BE(n);
  return b;
}

// Classic pcap.
interface PcapOpts {
  le: boolean;
  ns?: boolean;
  linktype?: number;
  snaplen?: number;
}
function pcapHeader(o: PcapOpts): Buffer {
  const magic = o.ns ? 0xa1b23c4d : 0xa1b2c3d4;
  return Buffer.concat([u32(magic, o.le), u16(2, o.le), u16(4, o.le), u32(0, o.le), u32(0, o.le), u32(o.snaplen ?? 65535, o.le), u32(o.linktype ?? 1, o.le)]);
}
function pcapRecord(le: boolean, sec: number, frac: number, data: Buffer, wirelen = data.length, caplen = data.length): Buffer {
  return Buffer.concat([u32(sec, le), u32(frac, le), u32(caplen, le), u32(wirelen, le), data]);
}

// pcapng.
function block(le: boolean, type: number, body: Buffer): Buffer {
  const pad = Buffer.alloc((4 - (body.length % 4)) % 4);
  const len = 12 + body.length + pad.length;
  return Buffer.concat([u32(type, le), u32(len, le), body, pad, u32(len, le)]);
}
function opt(le: boolean, code: number, value: Buffer): Buffer {
  const pad = Buffer.alloc((4 - (value.length % 4)) % 4);
  return Buffer.concat([u16(code, le), u16(value.length, le), value, pad]);
}
const endOpt = (le: boolean) => opt(le, 0, Buffer.alloc(0));
const shb = (le: boolean) => block(le, 0x0a0d0d0a, Buffer.concat([u32(0x1a2b3c4d, le), u16(1, le), u16(0, le), i64(-1n, le)]));
function idb(le: boolean, linktype: number, snaplen: number, opts: Buffer[] = []): Buffer {
  const o = opts.length ? Buffer.concat([...opts, endOpt(le)]) : Buffer.alloc(0);
  return block(le, 1, Buffer.concat([u16(linktype, le), u16(0, le), u32(snaplen, le), o]));
}
const tsresol = (le: boolean, v: number) => opt(le, 9, Buffer.from([v]));
const tsoffset = (le: boolean, s: bigint) => opt(le, 14, i64(s, le));
function epb(le: boolean, iface: number, ticks: bigint, data: Buffer, wirelen = data.length, caplen = data.length): Buffer {
  const hi = Number(ticks >> 32n);
  const lo = Number(ticks & 0xffffffffn);
  return block(le, 6, Buffer.concat([u32(iface, le), u32(hi, le), u32(lo, le), u32(caplen, le), u32(wirelen, le), data]));
}
function pb(le: boolean, iface: number, ticks: bigint, data: Buffer, wirelen = data.length): Buffer {
  const hi = Number(ticks >> 32n);
  const lo = Number(ticks & 0xffffffffn);
  return block(le, 2, Buffer.concat([u16(iface, le), u16(0, le), u32(hi, le), u32(lo, le), u32(data.length, le), u32(wirelen, le), data]));
}
const spb = (le: boolean, wirelen: number, data: Buffer) => block(le, 3, Buffer.concat([u32(wirelen, le), data]));

/** What a time stamp in `ticks` units of 1/`perSec` s must read as: exact, truncated. */
function expectTs(ticks: bigint, perSec: bigint, offset = 0n): { sec: number; nsec: number } {
  return { sec: Number(ticks / perSec + offset), nsec: Number(((ticks % perSec) * 1000000000n) / perSec) };
}

function assertError(err: CaptureFileError | null, message: RegExp, offset: number): void {
  assert.ok(err, 'expected an error');
  assert.match(err.message, message);
  assert.equal(err.offset, offset, `offset of "${err.message}"`);
}

// ------------------------------------------------------------------ corpus

const EXPECTED = path.join(CORPUS, 'EXPECTED.tsv');

test('tcpdump corpus matches libpcap (EXPECTED.tsv)', () => {
  const lines = fs.readFileSync(EXPECTED, 'utf8').replace(/\r?\n$/, '').split(/\r?\n/);
  const header = lines.shift()!.split('\t');
  assert.deepEqual(header, ['file', 'container', 'linktype', 'packets', 'captured_bytes', 'wire_bytes', 'first_ts_us', 'last_ts_us', 'error']);
  const mismatches: string[] = [];
  for (const line of lines) {
    const want = line.split('\t');
    while (want.length < header.length) want.push('');
    let got: string[];
    try {
      const f = openCaptureFile(path.join(CORPUS, want[0]));
      let packets = 0;
      let cap = 0;
      let wire = 0;
      let first = 'None';
      let last = 'None';
      let error = '';
      const batch = new Batch(1 << 16);
      try {
        for (;;) {
          batch.reset();
          if (f.fill(batch, 512) === 0) break;
          for (const o of batch.offsets()) {
            const r = recordAt(batch, o);
            const us = String(BigInt(r.sec) * 1000000n + BigInt(Math.floor(r.nsec / 1000)));
            if (packets === 0) first = us;
            last = us;
            packets++;
            cap += r.caplen;
            wire += r.wirelen;
          }
        }
      } catch (e) {
        error = (e as Error).message;
      }
      got = [want[0], f.container, String(f.linktype), String(packets), String(cap), String(wire), first, last, error];
      f.close();
    } catch (e) {
      got = [want[0], '', '', '0', '0', '0', 'None', 'None', (e as Error).message];
    }
    // An expected error is matched by presence; libpcap's wording is its own.
    const norm = (r: string[]) => r.map((x, i) => (i === 8 && x !== '' ? 'error' : x)).join('\t');
    if (norm(got) !== norm(want)) mismatches.push(`want ${want.join('\t')}\n   got ${got.join('\t')}`);
  }
  assert.equal(mismatches.length, 0, `${mismatches.length} of ${lines.length} corpus files differ:\n${mismatches.join('\n')}`);
});

// ------------------------------------------------------------------ synthetic files

test('pcap, nanosecond, big-endian', () => {
  const le = false;
  const file = write([
    pcapHeader({ le, ns: true, linktype: 101, snaplen: 0 }),
    pcapRecord(le, 1504850400, 123456789, ALL_BYTES),
    pcapRecord(le, 1504850401, 999999999, bytes(60, 3), 1500),
    pcapRecord(le, 4000000000, 1, Buffer.alloc(0), 0), // past 2038: seconds are unsigned
  ]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.equal(f.container, 'pcap');
  assert.equal(f.linktype, 101);
  assert.equal(f.snaplen, 262144, 'snaplen 0 means the maximum');
  assert.deepEqual(
    recs.map((r) => [r.sec, r.nsec, r.caplen, r.wirelen, r.linktype, r.iface]),
    [
      [1504850400, 123456789, 256, 256, 101, 0],
      [1504850401, 999999999, 60, 1500, 101, 0],
      [4000000000, 1, 0, 0, 101, 0],
    ],
  );
  assert.deepEqual(recs[0].data, ALL_BYTES);
  assert.deepEqual(recs[1].data, bytes(60, 3));
  assert.deepEqual(f.warnings, []);
  assert.equal(f.offset, fs.statSync(file).size);
});

test('pcap, microsecond, little-endian; FCS bits kept only with the FCS-present flag', () => {
  const le = true;
  const file = write([
    pcapHeader({ le, linktype: 0x04000001, snaplen: 1514 }),
    pcapRecord(le, 1, 999999, ALL_BYTES),
    pcapRecord(le, 2, 5, ALL_BYTES.subarray(0, 1)),
    pcapRecord(le, 3, 2500000, ALL_BYTES.subarray(7, 9)), // fraction over a second carries, like sec*1e6+usec
  ]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.equal(f.linktype, 0x04000001);
  assert.equal(f.snaplen, 1514);
  assert.deepEqual(
    recs.map((r) => [r.sec, r.nsec, r.caplen, r.linktype]),
    [
      [1, 999999000, 256, 0x04000001],
      [2, 5000, 1, 0x04000001],
      [5, 500000000, 2, 0x04000001],
    ],
  );
  assert.deepEqual(recs[0].data, ALL_BYTES);
  assert.deepEqual(recs[2].data, Buffer.from([7, 8]));

  const junk = readAll(write([pcapHeader({ le, linktype: 0x30000001 }), pcapRecord(le, 1, 0, ALL_BYTES)]));
  assert.equal(junk.f.linktype, 1, 'FCS length without the FCS-present bit is junk');
  assert.equal(junk.recs[0].linktype, 1);
});

test('pcap: records longer than the snapshot length are cut to it, with a counted warning', () => {
  const le = true;
  const file = write([
    pcapHeader({ le, snaplen: 64 }),
    pcapRecord(le, 1, 0, bytes(100, 1), 1000),
    pcapRecord(le, 2, 0, bytes(64, 2)),
    pcapRecord(le, 3, 0, bytes(65, 3)),
  ]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.deepEqual(
    recs.map((r) => [r.sec, r.caplen, r.wirelen]),
    [
      [1, 64, 1000],
      [2, 64, 64],
      [3, 64, 65],
    ],
  );
  assert.deepEqual(recs[0].data, bytes(100, 1).subarray(0, 64));
  assert.deepEqual(recs[2].data, bytes(65, 3).subarray(0, 64));
  assert.equal(f.warnings.length, 1);
  assert.match(f.warnings[0], /^2 packets longer than the snapshot length 64/);
});

test('pcap: variants libpcap still reads (pre-2.3 swapped lengths, 2.3 maybe swapped, Kuznetzov headers)', () => {
  const le = true;
  const old = pcapHeader({ le, snaplen: 100 });
  old.writeUInt16LE(2, 6); // version 2.2: the wire length comes first
  let r = readAll(write([old, pcapRecord(le, 1, 0, bytes(40, 1), 40, 1000).subarray(0, 16), bytes(1000, 1).subarray(0, 40)]));
  assert.equal(r.err, null);
  assert.deepEqual(r.recs.map((x) => [x.caplen, x.wirelen]), [[40, 1000]]);

  const v23 = pcapHeader({ le, snaplen: 100 });
  v23.writeUInt16LE(3, 6); // 2.3: swapped only when caplen > len shows it
  const swapped = Buffer.concat([u32(1, le), u32(0, le), u32(1000, le), u32(40, le), bytes(40, 2)]);
  r = readAll(write([v23, pcapRecord(le, 1, 0, bytes(40, 1), 1000), swapped]));
  assert.equal(r.err, null);
  assert.deepEqual(r.recs.map((x) => [x.caplen, x.wirelen]), [[40, 1000], [40, 1000]]);
  assert.ok(r.recs[1].data.equals(bytes(40, 2)));

  const kuz = pcapHeader({ le, snaplen: 100 });
  kuz.writeUInt32LE(0xa1b2cd34, 0);
  const rec = Buffer.concat([u32(7, le), u32(8, le), u32(114, le), u32(114, le), Buffer.alloc(8, 0xee), bytes(114, 3)]);
  r = readAll(write([kuz, rec, rec]));
  assert.equal(r.err, null);
  assert.equal(r.f.snaplen, 114, 'Ethernet snapshot grows by a fake 14-byte header, as in libpcap');
  assert.deepEqual(r.recs.map((x) => [x.sec, x.nsec, x.caplen]), [[7, 8000, 114], [7, 8000, 114]]);
  assert.ok(r.recs[1].data.equals(bytes(114, 3)));
});

test('pcap: D-Bus may carry records far above 256 KiB, bigger than the read buffer', () => {
  const le = true;
  const big = bytes(3 << 20, 9);
  const file = write([pcapHeader({ le, linktype: 231, snaplen: 0 }), pcapRecord(le, 1, 0, bytes(10, 1)), pcapRecord(le, 2, 0, big), pcapRecord(le, 3, 0, bytes(10, 2))]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.equal(f.snaplen, 128 << 20);
  assert.deepEqual(recs.map((r) => r.caplen), [10, 3 << 20, 10]);
  assert.ok(recs[1].data.equals(big));
});

test('pcapng: two sections, two interfaces each, every block kind', () => {
  const le = true;
  const be = false;
  const T = 1504850400n;
  const data = [ALL_BYTES, bytes(60, 1), bytes(42, 2), bytes(1514, 3), bytes(17, 4), bytes(99, 5), bytes(128, 6), bytes(70, 7)];
  const file = write([
    // Section 1, little-endian: µs Ethernet (default resolution) and ns SLL.
    shb(le),
    idb(le, 1, 0),
    idb(le, 113, 65535, [opt(le, 2, Buffer.from('eth0')), tsresol(le, 9)]),
    epb(le, 0, T * 1000000n + 1n, data[0]),
    epb(le, 1, T * 1000000000n + 123456789n, data[1], 1000),
    block(le, 0x12345678, Buffer.from('opaque')), // unknown: skipped
    block(le, 5, Buffer.alloc(20)), // interface statistics: metadata, skipped
    spb(le, data[2].length, data[2]),
    pb(le, 1, T * 1000000000n + 5n, data[3]),
    // Section 2, big-endian: 2^-10 s with an offset, and 10^-12 s (finer than a double can split).
    shb(be),
    idb(be, 228, 128, [tsresol(be, 0x80 | 10), tsoffset(be, 1000n)]),
    idb(be, 101, 0, [tsresol(be, 12)]),
    epb(be, 0, 5n * 1024n + 512n, data[4]),
    epb(be, 1, 1504850n * 1000000000000n + 999999999999n, data[5]), // 2^64 ps is only 213 days
    spb(be, 500, data[6]), // SPB wire 500, interface 0 snaplen 128: captured = min(wire, snaplen, block)
    epb(be, 0, 0xffffffffffn, data[7]),
  ]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.equal(f.container, 'pcapng');
  assert.equal(f.linktype, 1);
  assert.equal(f.snaplen, 262144);
  const want: { sec: number; nsec: number; linktype: number; iface: number; data: Buffer; wirelen?: number }[] = [
    { ...expectTs(T * 1000000n + 1n, 1000000n), linktype: 1, iface: 0, data: data[0] },
    { ...expectTs(T * 1000000000n + 123456789n, 1000000000n), linktype: 113, iface: 1, data: data[1], wirelen: 1000 },
    { sec: 0, nsec: 0, linktype: 1, iface: 0, data: data[2] },
    { ...expectTs(T * 1000000000n + 5n, 1000000000n), linktype: 113, iface: 1, data: data[3] },
    { sec: 1005, nsec: 500000000, linktype: 228, iface: 2, data: data[4] },
    { ...expectTs(1504850n * 1000000000000n + 999999999999n, 1000000000000n), linktype: 101, iface: 3, data: data[5] },
    { sec: 1000, nsec: 0, linktype: 228, iface: 2, data: data[6], wirelen: 500 },
    { ...expectTs(0xffffffffffn, 1024n, 1000n), linktype: 228, iface: 2, data: data[7] },
  ];
  assert.equal(recs.length, want.length);
  recs.forEach((r, i) => {
    const w = want[i];
    assert.deepEqual(
      { sec: r.sec, nsec: r.nsec, linktype: r.linktype, iface: r.iface, wirelen: r.wirelen, caplen: r.caplen },
      { sec: w.sec, nsec: w.nsec, linktype: w.linktype, iface: w.iface, wirelen: w.wirelen ?? w.data.length, caplen: w.data.length },
      `packet ${i + 1}`,
    );
    assert.ok(r.data.equals(w.data), `packet ${i + 1} bytes`);
  });
  assert.equal(want[5].nsec, 999999999);
  assert.deepEqual(f.warnings, ['skipped 1 block of unknown type 0x12345678']);
  assert.equal(f.offset, fs.statSync(file).size);
});

test('pcapng: large time stamps split exactly; caplen over the interface snapshot length is cut and warned', () => {
  const le = true;
  const ticks = 1700000000123456789n; // far beyond 2^53
  const bin32 = (1700000000n << 32n) + 0x80000001n; // 2^-32 s: 16-bit long division
  const bin40 = (1700000n << 40n) + 0xffffffffffn; // 2^-40 s: BigInt
  const file = write([
    shb(le),
    idb(le, 1, 64, [tsresol(le, 9)]),
    idb(le, 1, 0, [tsresol(le, 0x80 | 32)]),
    idb(le, 1, 0, [tsresol(le, 0x80 | 40), tsoffset(le, -1700000n)]),
    epb(le, 0, ticks, bytes(100, 1)),
    epb(le, 0, ticks + 1n, bytes(64, 2)),
    epb(le, 1, bin32, bytes(1, 3)),
    epb(le, 2, bin40, bytes(1, 4)),
  ]);
  const { f, recs, err } = readAll(file);
  assert.equal(err, null);
  assert.deepEqual(
    recs.map((r) => [r.sec, r.nsec, r.caplen, r.wirelen]),
    [
      [1700000000, 123456789, 64, 100],
      [1700000000, 123456790, 64, 64],
      [1700000000, 500000000, 1, 1], // 0.5 + 2^-32 s, truncated to ns
      [0, 999999999, 1, 1],
    ],
  );
  assert.deepEqual(expectTs(bin32, 1n << 32n), { sec: 1700000000, nsec: 500000000 });
  assert.ok(recs[0].data.equals(bytes(100, 1).subarray(0, 64)));
  assert.deepEqual(f.warnings.length, 1);
  assert.match(f.warnings[0], /^1 packet longer than the interface snapshot length 64/);
});

test('batches: fill stops at max and at a full batch, and resumes where it stopped', () => {
  const le = true;
  const n = 20000; // several MiB: the read buffer is refilled and compacted many times
  const parts = [pcapHeader({ le, linktype: 1 })];
  for (let i = 0; i < n; i++) parts.push(pcapRecord(le, i, i % 1000000, bytes(40 + (i % 300), i)));
  const file = write(parts);
  const f = openCaptureFile(file);
  const small = new Batch(4096);
  small.reset();
  assert.equal(f.fill(small, 3), 3);
  small.reset();
  const k = f.fill(small, 1000);
  assert.ok(k > 1 && k < 1000, `a 4 KiB batch holds a handful of packets (got ${k})`);
  assert.equal(small.buf.length, 4096, 'the batch was not grown');
  const rest = drain(f);
  assert.equal(3 + k + rest.length, n);
  rest.forEach((r, j) => {
    const i = 3 + k + j;
    assert.equal(r.sec, i);
    if (!r.data.equals(bytes(40 + (i % 300), i))) assert.fail(`packet ${i} bytes differ`);
  });
  assert.equal(f.fill(small, 10), 0, 'end of file stays end of file');
  f.close();
});

test('batches in shared memory: one fill spanning several read-buffer compactions keeps every byte', () => {
  // Packets bound for a ring slot are copied in one addon call per batch;
  // the reader must settle them before it moves its buffered bytes.
  const le = true;
  const n = 6000;
  const parts = [pcapHeader({ le, linktype: 1 })];
  for (let i = 0; i < n; i++) parts.push(pcapRecord(le, i, 0, bytes(900 + (i % 600), i)));
  const file = write(parts); // ~7 MiB: the 1 MiB read buffer moves several times per fill
  const f = openCaptureFile(file);
  const batch = Batch.over(Buffer.from(new SharedArrayBuffer(8 << 20)));
  const got = drain(f, batch, n);
  assert.equal(got.length, n);
  got.forEach((r, i) => {
    if (!r.data.equals(bytes(900 + (i % 600), i))) assert.fail(`packet ${i} bytes differ`);
  });
  f.close();
});

// ------------------------------------------------------------------ hostile files

test('open errors: missing, directory, empty, too short, wrong magic, truncated header', () => {
  assert.throws(() => openCaptureFile(path.join(tmp, 'nope.pcap')), (e: unknown) => {
    assert.ok(e instanceof CaptureFileError);
    assert.match(e.message, /nope\.pcap: cannot open it: no such file \(ENOENT\)$/);
    return e.offset === 0;
  });
  assert.throws(() => openCaptureFile(tmp), (e: unknown) => e instanceof CaptureFileError && /: a directory \(EISDIR\); give a pcap or pcapng capture file$/.test(e.message));
  const cases: [Buffer, RegExp][] = [
    [Buffer.alloc(0), /empty file; expected a pcap or pcapng/],
    [Buffer.from([0xd4, 0xc3]), /only 2 bytes/],
    [Buffer.from('hello, world\n'), /magic 0x68656c6c/],
    [Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]), /magic 0x1f8b0800 .*gzip/],
    [pcapHeader({ le: true }).subarray(0, 20), /truncated pcap file header \(20 of 24 bytes\)/],
  ];
  for (const [bytes, message] of cases) {
    const file = write(bytes);
    assert.throws(() => openCaptureFile(file), (e: unknown) => {
      assert.ok(e instanceof CaptureFileError, String(e));
      assert.match(e.message, message);
      return e.offset === 0;
    });
  }
});

test('pcap: truncated record header after good packets', () => {
  const le = true;
  const good = [pcapRecord(le, 1, 0, bytes(50, 1)), pcapRecord(le, 2, 0, bytes(60, 2))];
  const file = write([pcapHeader({ le }), ...good, pcapRecord(le, 3, 0, bytes(10, 3)).subarray(0, 7)]);
  const f = openCaptureFile(file);
  const batch = new Batch();
  assert.equal(f.fill(batch, 100), 2, 'the packets before the damage come first');
  assert.throws(() => f.fill(batch, 100), (e: unknown) => {
    assert.ok(e instanceof CaptureFileError);
    assert.match(e.message, /packet 3: truncated record header \(7 of 16 bytes/);
    return e.offset === 24 + 66 + 76;
  });
  f.close();
});

test('pcap: truncated record data', () => {
  const le = false;
  const rec = pcapRecord(le, 2, 0, bytes(100, 2));
  const { recs, err } = readAll(write([pcapHeader({ le }), pcapRecord(le, 1, 0, bytes(50, 1)), rec.subarray(0, 70)]));
  assert.equal(recs.length, 1);
  assertError(err, /packet 2: truncated record \(needs 116 bytes, 70 before end of file\)/, 24 + 66);
});

test('pcap: captured length over the link type maximum', () => {
  const le = true;
  const over = Buffer.concat([u32(2, le), u32(0, le), u32(262145, le), u32(262145, le)]);
  const { recs, err } = readAll(write([pcapHeader({ le, snaplen: 0 }), pcapRecord(le, 1, 0, bytes(50, 1)), over, Buffer.alloc(64)]));
  assert.equal(recs.length, 1);
  assertError(err, /^packet 2: captured length 262145 exceeds the maximum 262144$/, 24 + 66);
});

test('pcap: unsupported version', () => {
  const h = pcapHeader({ le: true });
  h.writeUInt16LE(3, 4);
  assert.throws(() => openCaptureFile(write(h)), (e: unknown) => e instanceof CaptureFileError && /unsupported pcap version 3\.4/.test(e.message));
});

/** A pcapng file with one good packet, then `tail`; the damage is at the returned offset. */
function pcapngThen(tail: Buffer[], le = true): { file: string; at: number } {
  const head = Buffer.concat([shb(le), idb(le, 1, 0), epb(le, 0, 1n, bytes(40, 1))]);
  return { file: write([head, ...tail]), at: head.length };
}

test('pcapng: zero block length', () => {
  const { file, at } = pcapngThen([u32(6, true), u32(0, true), Buffer.alloc(32)]);
  const { recs, err } = readAll(file);
  assert.equal(recs.length, 1);
  assertError(err, /block of type 0x6 has a total length of 0$/, at);
});

test('pcapng: block length below the minimum, or not a multiple of 4', () => {
  let t = pcapngThen([u32(6, true), u32(8, true), Buffer.alloc(32)]);
  let r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /total length of 8 < the minimum 12/, t.at);
  t = pcapngThen([u32(6, true), u32(13, true), Buffer.alloc(32)]);
  r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /total length of 13, not a multiple of 4/, t.at);
  // A legal length that is too short for an EPB's fixed fields.
  t = pcapngThen([block(true, 6, Buffer.alloc(8))]);
  r = readAll(t.file);
  assertError(r.err, /enhanced packet block has a total length of 20 < the minimum 32/, t.at);
});

test('pcapng: trailing length differs from the leading one', () => {
  const bad = epb(true, 0, 2n, bytes(30, 2));
  bad.writeUInt32LE(bad.length + 4, bad.length - 4);
  const { file, at } = pcapngThen([bad, epb(true, 0, 3n, bytes(30, 3))]);
  const { recs, err } = readAll(file);
  assert.equal(recs.length, 1);
  assertError(err, new RegExp(`trailing total length ${bad.length + 4} not equal to the leading ${bad.length}`), at);
});

test("pcapng: the first section header's trailing length is not checked (libpcap reads such a file)", () => {
  const first = shb(true);
  first.writeUInt32LE(first.length + 176, first.length - 4);
  const file = write([first, idb(true, 1, 0), epb(true, 0, 1n, bytes(40, 1)), epb(true, 0, 2n, bytes(30, 2))]);
  const { recs, err } = readAll(file);
  assert.equal(err, null);
  assert.equal(recs.length, 2);
});

test('pcapng: absurd block length, and a block running past the end of the file', () => {
  let t = pcapngThen([u32(6, true), u32(0x7ffffff0, true), Buffer.alloc(64)]);
  let r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /absurd total length of 2147483632 \(maximum 16777216\)/, t.at);
  t = pcapngThen([epb(true, 0, 2n, bytes(300, 2)).subarray(0, 200)]);
  r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /truncated block of type 0x6: total length 332 but only 200 bytes before end of file/, t.at);
  t = pcapngThen([Buffer.from([6, 0, 0])]);
  r = readAll(t.file);
  assertError(r.err, /truncated block header \(3 of 8 bytes/, t.at);
});

test('pcapng: packets on interfaces their section never declared', () => {
  let t = pcapngThen([epb(true, 1, 2n, bytes(30, 2))]);
  let r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /packet 2: packet on interface 1, but section 1 declares 1 interface$/, t.at);
  // A new section forgets the previous section's interfaces.
  t = pcapngThen([shb(false), spb(false, 10, bytes(10, 3))]);
  r = readAll(t.file);
  assert.equal(r.recs.length, 1);
  assertError(r.err, /simple packet block on interface 0, but section 2 declares 0 interfaces/, t.at + 28);
});

test('pcapng: captured length larger than its block', () => {
  const { file, at } = pcapngThen([epb(true, 0, 2n, bytes(40, 2), 100, 60)]);
  const { recs, err } = readAll(file);
  assert.equal(recs.length, 1);
  assertError(err, /packet 2: captured length 60 exceeds the 40 bytes its block holds/, at);
});

test('pcapng: no interface, packet before any interface, bad interface options', () => {
  const le = true;
  const cases: [Buffer[], RegExp, number][] = [
    [[shb(le)], /no Interface Description Block/, 28],
    [[shb(le), epb(le, 0, 1n, bytes(4, 0))], /packet block before any Interface Description Block/, 28],
    [[shb(le), idb(le, 1, 0, [opt(le, 9, Buffer.from([6, 6]))])], /if_tsresol has length 2, not 1/, 28 + 16],
    [[shb(le), idb(le, 1, 0, [tsresol(le, 20)])], /if_tsresol 10\^-20 is too fine/, 28 + 16],
    [[block(le, 0x0a0d0d0a, Buffer.concat([u32(0x1a2b3c4d, le), u16(2, le), u16(0, le), i64(-1n, le)])), idb(le, 1, 0)], /unsupported pcapng version 2\.0/, 0],
    [[block(le, 0x0a0d0d0a, Buffer.concat([u32(0x11223344, le), u16(1, le), u16(0, le), i64(-1n, le)]))], /bad byte-order magic 0x11223344/, 8],
  ];
  for (const [parts, message, offset] of cases) {
    const file = write(parts);
    assert.throws(() => openCaptureFile(file), (e: unknown) => {
      assert.ok(e instanceof CaptureFileError, String(e));
      assert.match(e.message, message);
      assert.equal(e.offset, offset, e.message);
      return true;
    });
  }
});

// ------------------------------------------------------------------ standard input

const MODULE = new URL('../src/capture/file.js', import.meta.url).href;
const CHILD = `
import { openCaptureFile } from ${JSON.stringify(MODULE)};
import { Batch, recordAt } from ${JSON.stringify(new URL('../src/capture/batch.js', import.meta.url).href)};
import { createHash } from 'node:crypto';
const f = openCaptureFile('-');
const b = new Batch(1 << 16);
const h = createHash('sha256');
let n = 0;
for (;;) {
  b.reset();
  if (f.fill(b, 100) === 0) break;
  for (const o of b.offsets()) { const r = recordAt(b, o); h.update(r.data); n++; }
}
console.log(JSON.stringify({ container: f.container, linktype: f.linktype, packets: n, sha: h.digest('hex') }));
`;

function runChild(feed: (stdin: NodeJS.WritableStream) => Promise<void>, shellFile?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const args = ['--input-type=module', '-e', CHILD];
    const child = shellFile
      ? spawn('sh', ['-c', `cat "$0" | "${process.execPath}" "$@"`, shellFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let errOut = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (errOut += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`child exited ${code}: ${errOut}`))));
    if (!shellFile) feed(child.stdin!).then(() => child.stdin!.end(), reject);
  });
}

test('reads standard input, from a slow writer and from a shell pipe', async () => {
  const le = true;
  const parts = [shb(le), idb(le, 1, 0)];
  for (let i = 0; i < 3000; i++) parts.push(epb(le, 0, BigInt(i), i % 7 === 0 ? ALL_BYTES : bytes(20 + (i % 500), i)));
  const whole = Buffer.concat(parts);
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  for (let i = 0; i < 3000; i++) h.update(i % 7 === 0 ? ALL_BYTES : bytes(20 + (i % 500), i));
  const want = JSON.stringify({ container: 'pcapng', linktype: 1, packets: 3000, sha: h.digest('hex') });

  // Odd-sized chunks with pauses: blocks arrive split across reads.
  const slow = await runChild(async (stdin) => {
    for (let o = 0; o < whole.length; o += 7919) {
      stdin.write(whole.subarray(o, o + 7919));
      if ((o / 7919) % 16 === 0) await new Promise((r) => setTimeout(r, 5));
    }
  });
  assert.equal(slow, want);
  assert.equal(await runChild(async () => {}, write(whole)), want);
});
