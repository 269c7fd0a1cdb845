// Hostile capture files through the real CLI: each kind of damage libpcap
// refuses (or tolerates) gets exactly one `riff:` line naming the problem and
// the byte offset where it is, the packets before it are processed, exit code
// 1, and never a stack trace. The files are cut and patched from the fixtures.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, riff, tmpdir } from './helpers.js';

const HTTP = fs.readFileSync(path.join(FIXTURES, 'http.pcap'));
const MULTI = fs.readFileSync(path.join(FIXTURES, 'multi.pcapng'));
const COUNT = 'fixtures/count.lua';

const dir = tmpdir('riff-hostile-');
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
let seq = 0;
function write(bytes: Buffer): string {
  const file = path.join(dir, `case${seq++}`);
  fs.writeFileSync(file, bytes);
  return file;
}

/** Offsets of http.pcap's records (little-endian, µs, 16-byte record headers). */
function pcapRecords(b: Buffer): { at: number; caplen: number }[] {
  const out: { at: number; caplen: number }[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const caplen = b.readUInt32LE(o + 8);
    out.push({ at: o, caplen });
    o += 16 + caplen;
  }
  return out;
}

/** multi.pcapng's blocks (all little-endian): offset, type, length. */
function pcapngBlocks(b: Buffer): { at: number; type: number; len: number }[] {
  const out: { at: number; type: number; len: number }[] = [];
  for (let o = 0; o + 12 <= b.length; ) {
    const len = b.readUInt32LE(o + 4);
    out.push({ at: o, type: b.readUInt32LE(o), len });
    o += len;
  }
  return out;
}

const REC = pcapRecords(HTTP);
const BLK = pcapngBlocks(MULTI);
const isPacket = (t: number) => t === 2 || t === 3 || t === 6;
/** Packets in multi.pcapng's blocks before offset `at`. */
const packetsBefore = (at: number) => BLK.filter((b) => b.at < at && isPacket(b.type)).length;
const blockAt = (type: number, nth = 0) => BLK.filter((b) => b.type === type)[nth];
const SKIPPED_CB = /^riff: .*: skipped 1 block of local-use type 0x80000bad$/;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface Expect {
  /** The problem, as the reader words it (matched inside the line). */
  message: RegExp;
  offset: number;
  /** Packets before the damage (all of them reach Lua). */
  packets: number;
  /** Damage in the header: reported before any counting, as the only stderr line. */
  atOpen?: boolean;
  /** Tolerated-oddity lines riff prints before the error line. */
  warnings?: RegExp[];
}

function expectDamage(bytes: Buffer, x: Expect): void {
  const file = write(bytes);
  const r = riff(['-q', '--lua', COUNT, '-r', file]);
  const ctx = `stderr:\n${r.stderr}`;
  assert.equal(r.signal, null, ctx);
  assert.equal(r.code, 1, ctx);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace: ${ctx}`);
  assert.doesNotMatch(r.stderr, /internal error/i, ctx);
  const lines = r.stderr.trimEnd().split('\n');
  const last = lines[lines.length - 1];
  // The one error line, last: file, problem, offset, packets before it.
  assert.match(last, new RegExp(`^riff: ${escape(file)}: .+ at byte offset ${x.offset}; ${x.packets} packets before it were processed$`), ctx);
  assert.match(last, x.message, ctx);
  const riffLines = lines.filter((l) => l.startsWith('riff:'));
  const others = riffLines.slice(0, -1);
  const warnings = x.warnings ?? [];
  assert.equal(others.length, warnings.length, `exactly one error line, and only the expected warnings: ${ctx}`);
  warnings.forEach((w, i) => assert.match(others[i], w, ctx));
  assert.equal(lines.filter((l) => /byte offset/.test(l)).length, 1, ctx);
  if (x.atOpen) {
    assert.equal(lines.length, 1, `damage in the header: one line, nothing read: ${ctx}`);
  } else {
    // The packets before the damage went all the way through Lua.
    assert.match(r.stderr, new RegExp(`^${x.packets} packets read$`, 'm'), ctx);
    assert.match(r.stderr, new RegExp(`^${x.packets} packets processed by Lua$`, 'm'), ctx);
    assert.match(r.stderr, /^0 Lua errors$/m, ctx);
    assert.match(r.stdout.toString(), /^matches\t\d+$/m, 'the script ran to its end (deinit)');
  }
}

test('sanity: the fixtures read cleanly', () => {
  assert.equal(REC.length, 45);
  assert.equal(REC.at(-1)!.at + 16 + REC.at(-1)!.caplen, HTTP.length);
  assert.equal(BLK.reduce((n, b) => n + b.len, 0), MULTI.length);
  assert.equal(BLK.filter((b) => isPacket(b.type)).length, 9);
  const r = riff(['-q', '--lua', COUNT, '-r', path.join(FIXTURES, 'http.pcap')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^45 packets processed by Lua$/m);
});

// ------------------------------------------------------------------ pcap

test('pcap: file header cut short', () => {
  expectDamage(HTTP.subarray(0, 10), { message: /: truncated pcap file header \(10 of 24 bytes\) at/, offset: 0, packets: 0, atOpen: true });
  expectDamage(HTTP.subarray(0, 23), { message: /: truncated pcap file header \(23 of 24 bytes\) at/, offset: 0, packets: 0, atOpen: true });
});

test('pcap: record header cut short', () => {
  const r = REC[3];
  expectDamage(HTTP.subarray(0, r.at + 7), {
    message: /: packet 4: truncated record header \(7 of 16 bytes before end of file\) at/,
    offset: r.at,
    packets: 3,
  });
});

test('pcap: record data cut short', () => {
  const r = REC[10];
  expectDamage(HTTP.subarray(0, r.at + 16 + 20), {
    message: new RegExp(`: packet 11: truncated record \\(needs ${16 + r.caplen} bytes, 36 before end of file\\) at`),
    offset: r.at,
    packets: 10,
  });
});

test('pcap: captured length above the snapshot length is cut to it with a warning, not an error', () => {
  const b = Buffer.from(HTTP);
  b.writeUInt32LE(100, 16); // snaplen 100
  const over = REC.filter((r) => r.caplen > 100).length;
  assert.ok(over > 0);
  const file = write(b);
  const r = riff(['-q', '--lua', COUNT, '-r', file]);
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  assert.match(r.stderr, /^45 packets processed by Lua$/m);
  const riffLines = r.stderr.split('\n').filter((l) => l.startsWith('riff:'));
  assert.deepEqual(riffLines, [
    `riff: ${file}: ${over} packets longer than the snapshot length 100 (truncated to it, as libpcap does)`,
  ]);
  // pcapng: an interface's snapshot length, the same tolerance.
  const ng = Buffer.from(MULTI);
  const idb = blockAt(1);
  ng.writeUInt32LE(50, idb.at + 12);
  const shb2 = blockAt(0x0a0d0d0a, 1).at;
  // EPBs (32-bit interface id) and the obsolete PB (16-bit) of section 1 on interface 0, longer than 50.
  const cut = BLK.filter(
    (b) => (b.type === 6 || b.type === 2) && b.at < shb2 && (b.type === 6 ? MULTI.readUInt32LE(b.at + 8) : MULTI.readUInt16LE(b.at + 8)) === 0 && MULTI.readUInt32LE(b.at + 20) > 50,
  ).length;
  assert.ok(cut > 0);
  const nf = write(ng);
  const rn = riff(['-q', '--lua', COUNT, '-r', nf]);
  assert.equal(rn.code, 0, rn.stderr);
  assert.doesNotMatch(rn.stderr, /^\s+at /m);
  assert.match(rn.stderr, /^9 packets processed by Lua$/m);
  assert.deepEqual(
    rn.stderr.split('\n').filter((l) => l.startsWith('riff:')),
    [`riff: ${nf}: ${cut} packets longer than the interface snapshot length 50 (cut to it; libpcap stops reading such a file at the first)`, `riff: ${nf}: skipped 1 block of local-use type 0x80000bad`],
  );
});

test('pcap: captured length above 256 KiB, and above the link type maximum', () => {
  const b = Buffer.from(HTTP);
  const r = REC[5];
  b.writeUInt32LE(262145, r.at + 8);
  expectDamage(b, { message: /: packet 6: captured length 262145 exceeds the maximum 262144 at/, offset: r.at, packets: 5 });
  // USBPCAP's maximum is 1 MiB: 300 000 bytes are fine there (if present), 1 MiB + 1 is not.
  const usb = Buffer.from(HTTP);
  usb.writeUInt32LE(249, 20);
  usb.writeUInt32LE(0x100001, REC[2].at + 8);
  expectDamage(usb, { message: /: packet 3: captured length 1048577 exceeds the maximum 1048576 at/, offset: REC[2].at, packets: 2 });
  // A length that does not fit the 32-bit signed range either.
  const huge = Buffer.from(HTTP);
  huge.writeUInt32LE(0xffffffff, REC[0].at + 8);
  expectDamage(huge, { message: /: packet 1: captured length 4294967295 exceeds the maximum 262144 at/, offset: 24, packets: 0 });
});

test('pcap: wrong magic', () => {
  const b = Buffer.from(HTTP);
  b.write('RIFF', 0, 'latin1');
  expectDamage(b, { message: /: not a pcap or pcapng file: magic 0x52494646;/, offset: 0, packets: 0, atOpen: true });
  // A pcap magic in the wrong place: the version after it is nonsense.
  const v = Buffer.from(HTTP);
  v.writeUInt16LE(9, 4);
  expectDamage(v, { message: /: unsupported pcap version 9\.4 at/, offset: 4, packets: 0, atOpen: true });
});

// ------------------------------------------------------------------ pcapng

test('pcapng: zero block length', () => {
  // A packet block after three packets (two EPBs, then the EPB at this offset).
  const epb = blockAt(6, 2);
  const b = Buffer.from(MULTI);
  b.writeUInt32LE(0, epb.at + 4);
  expectDamage(b, {
    message: /: block of type 0x6 has a total length of 0 at/,
    offset: epb.at,
    packets: packetsBefore(epb.at),
    warnings: [SKIPPED_CB],
  });
  assert.equal(packetsBefore(epb.at), 2);
  // The first interface block, read while opening: nothing before it.
  const idb = blockAt(1);
  const c = Buffer.from(MULTI);
  c.writeUInt32LE(0, idb.at + 4);
  expectDamage(c, { message: /: block of type 0x1 has a total length of 0 at/, offset: idb.at, packets: 0, atOpen: true });
});

test('pcapng: trailing block length differs from the leading one', () => {
  const epb = blockAt(6, 3); // after the EPBs, SPB and obsolete PB of section 1
  const b = Buffer.from(MULTI);
  b.writeUInt32LE(epb.len + 4, epb.at + epb.len - 4);
  expectDamage(b, {
    message: new RegExp(`: block of type 0x6 has trailing total length ${epb.len + 4} not equal to the leading ${epb.len} at`),
    offset: epb.at,
    packets: packetsBefore(epb.at),
    warnings: [SKIPPED_CB],
  });
  assert.equal(packetsBefore(epb.at), 5);
  // A section header's trailer.
  const shb = blockAt(0x0a0d0d0a, 1);
  const c = Buffer.from(MULTI);
  c.writeUInt32LE(0x1c00, shb.at + shb.len - 4);
  expectDamage(c, {
    message: new RegExp(`: section header block has trailing total length 7168 not equal to the leading ${shb.len} at`),
    offset: shb.at,
    packets: 6,
    warnings: [SKIPPED_CB],
  });
});

test('pcapng: absurd section and block lengths', () => {
  // The second section's header: only the first is held to 1 MiB; later ones to 16 MiB.
  const shb2 = blockAt(0x0a0d0d0a, 1);
  const b = Buffer.from(MULTI);
  b.writeUInt32LE(0x7ffffff0, shb2.at + 4);
  expectDamage(b, {
    message: /: section header block has an absurd total length of 2147483632 \(maximum 16777216\) at/,
    offset: shb2.at,
    packets: 6,
    warnings: [SKIPPED_CB],
  });
  // The first section header, over libpcap's 1 MiB for it.
  const c = Buffer.from(MULTI);
  c.writeUInt32LE(0x200000, 4);
  expectDamage(c, { message: /: section header block has an absurd total length of 2097152 \(maximum 1048576\) at/, offset: 0, packets: 0, atOpen: true });
  // A packet block in the second section.
  const epb = blockAt(6, 5);
  const d = Buffer.from(MULTI);
  d.writeUInt32LE(0xfffffffc, epb.at + 4);
  expectDamage(d, {
    message: /: block of type 0x6 has an absurd total length of 4294967292 \(maximum 16777216\) at/,
    offset: epb.at,
    packets: packetsBefore(epb.at),
    warnings: [SKIPPED_CB],
  });
  assert.equal(packetsBefore(epb.at), 7);
  // Plausible but past the end of the file.
  const e = Buffer.from(MULTI);
  e.writeUInt32LE(0x10000, epb.at + 4);
  expectDamage(e, {
    message: new RegExp(`: truncated block of type 0x6: total length 65536 but only ${MULTI.length - epb.at} bytes before end of file at`),
    offset: epb.at,
    packets: 7,
    warnings: [SKIPPED_CB],
  });
});

test('pcapng: packet block on an interface never described', () => {
  // Section 1 declares interfaces 0 and 1.
  const epb = blockAt(6, 2);
  const b = Buffer.from(MULTI);
  b.writeUInt32LE(2, epb.at + 8);
  expectDamage(b, {
    message: /: packet 3: packet on interface 2, but section 1 declares 2 interfaces at/,
    offset: epb.at,
    packets: 2,
    warnings: [SKIPPED_CB],
  });
  // Section 2 declares one; interface 1 of section 1 is not carried over.
  const epb2 = blockAt(6, 5);
  const c = Buffer.from(MULTI);
  c.writeUInt32LE(1, epb2.at + 8);
  expectDamage(c, {
    message: /: packet 8: packet on interface 1, but section 2 declares 1 interface at/,
    offset: epb2.at,
    packets: 7,
    warnings: [SKIPPED_CB],
  });
  // The highest id there is.
  const d = Buffer.from(MULTI);
  d.writeUInt32LE(0xffffffff, blockAt(6).at + 8);
  expectDamage(d, {
    message: /: packet 1: packet on interface 4294967295, but section 1 declares 2 interfaces at/,
    offset: blockAt(6).at,
    packets: 0,
  });
});

test('pcapng: file cut inside a block', () => {
  const epb = blockAt(6, 4);
  expectDamage(MULTI.subarray(0, epb.at + 30), {
    message: new RegExp(`: truncated block of type 0x6: total length ${epb.len} but only 30 bytes before end of file at`),
    offset: epb.at,
    packets: packetsBefore(epb.at),
    warnings: [SKIPPED_CB],
  });
  expectDamage(MULTI.subarray(0, epb.at + 5), {
    message: /: truncated block header \(5 of 8 bytes before end of file\) at/,
    offset: epb.at,
    packets: packetsBefore(epb.at),
    warnings: [SKIPPED_CB],
  });
});
