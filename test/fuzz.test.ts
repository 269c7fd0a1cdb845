// A deterministic fuzzer for the offline reader: real captures (the tcpdump
// corpus and the fixtures) mutated by bit flips, byte overwrites, truncation,
// records and blocks spliced in from other files, duplicated and swapped
// regions, and length fields set to extremes.
//
// Most cases run the reader in-process, in a worker thread watched by a
// timer so a reader stuck in a loop is caught (and named) instead of hanging
// the run. Each mutated file is read twice, with tiny batches one packet at a
// time and with big ones, and the two reads must agree. The only exception
// the reader may throw is CaptureFileError. A smaller sample goes through the
// real CLI (some from standard input, some through the `tcp` filter): exit
// code 0 or 1, no signal, no stack trace, the error as the last line, and the
// same packets and error the in-process reader found.
//
// Huge records (20 MiB, and lengths claiming 200 MiB, in pcap and pcapng,
// D-Bus link type with snaplen 0) go through the CLI too: riff passes them
// or refuses them with a count and one line, and never hangs.
//
// RIFF_FUZZ_SEED, RIFF_FUZZ_CASES and RIFF_FUZZ_CLI override the defaults;
// failing inputs are kept in a directory named in the failure message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { CLI, CORPUS, FIXTURES, ROOT, riff, tmpdir, pcapHeader } from './helpers.js';
import { Rng } from './rng.js';

const SEED = Number(process.env.RIFF_FUZZ_SEED ?? 0x5eed2026) >>> 0;
const CASES = Number(process.env.RIFF_FUZZ_CASES ?? 15000);
const CLI_CASES = Number(process.env.RIFF_FUZZ_CLI ?? 120);
/** A single in-process read of a file of at most a few hundred KiB taking this long is a hang. */
const CASE_TIMEOUT_MS = 5000;
const CLI_TIMEOUT_MS = 10_000;


// ------------------------------------------------------------------ inputs

interface Field {
  at: number;
  size: 2 | 4 | 8;
  le: boolean;
}
interface Unit {
  at: number;
  len: number;
}
interface Shape {
  /** Records (pcap) or blocks (pcapng), header excluded for pcap. */
  units: Unit[];
  /** Length-like fields: snapshot lengths, captured and wire lengths, block and option lengths, interface ids. */
  fields: Field[];
  /** pcap: the file header; pcapng: section and interface headers (offset, block type, byte order). */
  heads: { at: number; type: number; le: boolean }[];
  /** pcapng interface options (if_tsresol, if_tsoffset...): where their value starts. */
  opts: { at: number; code: number; len: number; le: boolean }[];
}

interface Input {
  name: string;
  bytes: Buffer;
  shape: Shape;
}

/** Walk a capture as far as it is well formed, noting where its records or blocks and length fields are. */
function shapeOf(b: Buffer): Shape {
  const units: Unit[] = [];
  const fields: Field[] = [];
  const heads: Shape['heads'] = [];
  const opts: Shape['opts'] = [];
  const shape = { units, fields, heads, opts };
  if (b.length < 4) return shape;
  const m = b.readUInt32BE(0);
  const PCAP = [0xa1b2c3d4, 0xa1b23c4d, 0xa1b2cd34];
  const le = PCAP.includes(b.readUInt32LE(0));
  if (le || PCAP.includes(m)) {
    if (b.length < 24) return shape;
    heads.push({ at: 0, type: 0, le });
    const rd = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const hs = (le ? b.readUInt32LE(0) : m) === 0xa1b2cd34 ? 24 : 16;
    fields.push({ at: 16, size: 4, le }, { at: 20, size: 4, le }, { at: 4, size: 2, le });
    for (let o = 24; o + hs <= b.length; ) {
      const caplen = rd(o + 8);
      if (o + hs + caplen > b.length) break;
      units.push({ at: o, len: hs + caplen });
      fields.push({ at: o + 8, size: 4, le }, { at: o + 12, size: 4, le });
      o += hs + caplen;
    }
    return shape;
  }
  if (m !== 0x0a0d0d0a) return shape;
  let lel = true;
  for (let o = 0; o + 12 <= b.length; ) {
    if (b.readUInt32LE(o) === 0x0a0d0d0a) {
      const bom = b.readUInt32LE(o + 8);
      if (bom === 0x1a2b3c4d) lel = true;
      else if (bom === 0x4d3c2b1a) lel = false;
      else break;
    }
    const rd = (p: number) => (lel ? b.readUInt32LE(p) : b.readUInt32BE(p));
    const type = rd(o);
    const len = rd(o + 4);
    if (len < 12 || len % 4 || o + len > b.length) break;
    units.push({ at: o, len });
    fields.push({ at: o + 4, size: 4, le: lel }, { at: o + len - 4, size: 4, le: lel });
    if (type === 0x0a0d0d0a || type === 1) heads.push({ at: o, type, le: lel });
    let first = -1;
    if (type === 0x0a0d0d0a && len >= 28) {
      fields.push({ at: o + 16, size: 8, le: lel });
      first = o + 24;
    } else if (type === 1 && len >= 20) {
      fields.push({ at: o + 12, size: 4, le: lel }, { at: o + 8, size: 2, le: lel });
      first = o + 16;
    } else if (type === 6 && len >= 32) {
      const caplen = rd(o + 20);
      fields.push({ at: o + 8, size: 4, le: lel }, { at: o + 20, size: 4, le: lel }, { at: o + 24, size: 4, le: lel });
      first = o + 28 + ((caplen + 3) & ~3);
    } else if (type === 3 && len >= 16) {
      fields.push({ at: o + 8, size: 4, le: lel });
    }
    // Option headers: code and length, 16 bits each.
    for (let p = first; p >= 0 && p + 4 <= o + len - 4; ) {
      const olen = lel ? b.readUInt16LE(p + 2) : b.readUInt16BE(p + 2);
      const code = lel ? b.readUInt16LE(p) : b.readUInt16BE(p);
      fields.push({ at: p + 2, size: 2, le: lel });
      if (code === 0) break;
      if (type === 1 && p + 4 + olen <= o + len - 4) opts.push({ at: p + 4, code, len: olen, le: lel });
      p += 4 + ((olen + 3) & ~3);
    }
    o += len;
  }
  return shape;
}

function loadInputs(): Input[] {
  const files: string[] = [];
  for (const f of ['http.pcap', 'multi.pcapng', 'allbytes.pcap', 'ns-be.pcap']) files.push(path.join(FIXTURES, f));
  for (const f of fs.readdirSync(CORPUS).sort()) {
    if (/\.(pcap|pcapng|cap|ntar)$/i.test(f)) files.push(path.join(CORPUS, f));
  }
  return files
    .filter((f) => fs.statSync(f).isFile())
    .map((f) => {
      const bytes = fs.readFileSync(f);
      return { name: path.relative(ROOT, f).replace(/^(\.\.\/)+/, ''), bytes, shape: shapeOf(bytes) };
    });
}

// ------------------------------------------------------------------ mutations

const CATEGORIES = [
  'bitflip',
  'byte-00',
  'byte-ff',
  'byte-random',
  'truncate',
  'splice',
  'duplicate',
  'swap',
  'length-extreme',
  'header-variant',
  'stacked',
] as const;
type Category = (typeof CATEGORIES)[number];

class Mutator {
  constructor(
    private readonly rng: Rng,
    private readonly inputs: Input[],
  ) {}

  /** A position in `b`: uniform, or near the start of a record/block or the header (where the fields are). */
  private pos(b: Buffer, shape: Shape): number {
    const r = this.rng;
    if (b.length === 0) return 0;
    if (shape.units.length && r.chance(0.5)) {
      const u = r.pick(shape.units);
      return Math.min(b.length - 1, u.at + r.int(Math.min(u.len, 40)));
    }
    if (r.chance(0.15)) return r.int(Math.min(b.length, 64));
    return r.int(b.length);
  }

  /** A region: a whole record/block, or a random span. */
  private region(b: Buffer, shape: Shape): Unit {
    const r = this.rng;
    if (shape.units.length && r.chance(0.7)) return r.pick(shape.units);
    const at = r.int(b.length);
    return { at, len: Math.min(b.length - at, 1 + r.int(256)) };
  }

  private boundary(b: Buffer, shape: Shape): number {
    const r = this.rng;
    if (shape.units.length && r.chance(0.75)) {
      const u = r.pick(shape.units);
      return r.chance(0.5) ? u.at : u.at + u.len;
    }
    return r.int(b.length + 1);
  }

  apply(cat: Category, input: Input): { bytes: Buffer; what: string } {
    const r = this.rng;
    let b = Buffer.from(input.bytes);
    const shape = input.shape;
    switch (cat) {
      case 'bitflip': {
        const k = 1 + r.int(8);
        const at: number[] = [];
        for (let i = 0; i < k && b.length; i++) {
          const p = this.pos(b, shape);
          b[p] ^= 1 << r.int(8);
          at.push(p);
        }
        return { bytes: b, what: `flip bits at ${at.join(',')}` };
      }
      case 'byte-00':
      case 'byte-ff':
      case 'byte-random': {
        const value = () => (cat === 'byte-00' ? 0 : cat === 'byte-ff' ? 0xff : r.int(256));
        const at = this.pos(b, shape);
        // A few scattered bytes, or a run (a whole field or more).
        if (r.chance(0.5)) {
          const k = 1 + r.int(8);
          for (let i = 0; i < k && b.length; i++) b[this.pos(b, shape)] = value();
          return { bytes: b, what: `${k} bytes set (${cat})` };
        }
        const len = 1 + r.int(r.chance(0.8) ? 8 : 64);
        for (let i = at; i < Math.min(b.length, at + len); i++) b[i] = value();
        return { bytes: b, what: `${len} bytes at ${at} set (${cat})` };
      }
      case 'truncate': {
        let at = r.chance(0.5) ? r.int(b.length + 1) : this.boundary(b, shape) + r.int(33) - 16;
        at = Math.max(0, Math.min(b.length, at));
        return { bytes: b.subarray(0, at), what: `cut at ${at} of ${b.length}` };
      }
      case 'splice': {
        // A record or block of another file (either container, either byte order) put in or over one of ours.
        const donor = r.pick(this.inputs);
        const piece = Buffer.from(
          (() => {
            const u = this.region(donor.bytes, donor.shape);
            return donor.bytes.subarray(u.at, u.at + u.len);
          })(),
        );
        const at = this.boundary(b, shape);
        if (r.chance(0.3) && shape.units.length) {
          const u = r.pick(shape.units);
          b = Buffer.concat([b.subarray(0, u.at), piece, b.subarray(u.at + u.len)]);
          return { bytes: b, what: `unit at ${u.at} replaced by ${piece.length} bytes of ${donor.name}` };
        }
        b = Buffer.concat([b.subarray(0, at), piece, b.subarray(at)]);
        return { bytes: b, what: `${piece.length} bytes of ${donor.name} inserted at ${at}` };
      }
      case 'duplicate': {
        const u = this.region(b, shape);
        const copy = Buffer.from(b.subarray(u.at, u.at + u.len));
        // Sometimes many copies, but the file stays under a few MiB however often this stacks.
        const times = Math.max(1, Math.min(r.chance(0.1) ? 2 + r.int(30) : 1, Math.floor((4 << 20) / Math.max(1, u.len + b.length))));
        const at = r.chance(0.6) ? u.at + u.len : this.boundary(b, shape);
        b = Buffer.concat([b.subarray(0, at), ...Array(times).fill(copy), b.subarray(at)]);
        return { bytes: b, what: `${u.len} bytes at ${u.at} copied ${times}x to ${at}` };
      }
      case 'swap': {
        if (shape.units.length >= 2 && r.chance(0.7)) {
          let i = r.int(shape.units.length);
          let j = r.int(shape.units.length);
          if (i === j) j = (i + 1) % shape.units.length;
          if (i > j) [i, j] = [j, i];
          const a = shape.units[i];
          const c = shape.units[j];
          b = Buffer.concat([
            b.subarray(0, a.at),
            b.subarray(c.at, c.at + c.len),
            b.subarray(a.at + a.len, c.at),
            b.subarray(a.at, a.at + a.len),
            b.subarray(c.at + c.len),
          ]);
          return { bytes: b, what: `units at ${a.at} and ${c.at} swapped` };
        }
        const len = 1 + r.int(Math.max(1, Math.min(64, b.length >> 1)));
        if (b.length < 2 * len) return { bytes: b.reverse(), what: 'reversed' };
        const p = r.int(b.length - 2 * len + 1);
        const q = p + len + r.int(b.length - p - 2 * len + 1);
        const x = Buffer.from(b.subarray(p, p + len));
        b.copy(b, p, q, q + len);
        x.copy(b, q);
        return { bytes: b, what: `${len} bytes at ${p} and ${q} swapped` };
      }
      case 'length-extreme': {
        const k = r.chance(0.8) ? 1 : 2 + r.int(3);
        const done: string[] = [];
        for (let i = 0; i < k; i++) {
          const f: Field = shape.fields.length
            ? r.pick(shape.fields)
            : { at: r.int(Math.max(1, b.length - 3)) & ~3, size: 4, le: r.chance(0.5) };
          const le = r.chance(0.1) ? !f.le : f.le; // now and then in the wrong byte order
          if (f.at + f.size > b.length) continue;
          if (f.size === 2) {
            const v = r.pick([0, 1, 3, 4, 0x7fff, 0x8000, 0xfffc, 0xffff]);
            le ? b.writeUInt16LE(v, f.at) : b.writeUInt16BE(v, f.at);
            done.push(`u16@${f.at}=${v}`);
          } else if (f.size === 8) {
            const v = r.pick([0n, 1n, 0x7fffffffffffffffn, 0xffffffffffffffffn, 0xfffffff0n, 0x100000000n]);
            le ? b.writeBigUInt64LE(v, f.at) : b.writeBigUInt64BE(v, f.at);
            done.push(`u64@${f.at}=${v}`);
          } else {
            const old = le ? b.readUInt32LE(f.at) : b.readUInt32BE(f.at);
            const v =
              r.pick([0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 0xfffffffc, 12, 0x40000, 0x40001, 0x1000000, old + 1, old + 4, old - 1, old - 4]) >>> 0;
            le ? b.writeUInt32LE(v, f.at) : b.writeUInt32BE(v, f.at);
            done.push(`u32@${f.at}=${v}`);
          }
        }
        return { bytes: b, what: `length fields ${done.join(' ')}` };
      }
      case 'header-variant': {
        // Header values the reader treats specially: the other pcap magics and
        // versions (Kuznetzov headers, swapped lengths), link types with larger
        // maxima (D-Bus 128 MiB, EBHSCR, USBPCAP), the FCS bits, odd snapshot
        // lengths, pcapng versions and byte orders, time stamp resolutions and offsets.
        if (!shape.heads.length) return this.apply('length-extreme', input);
        const h = r.pick(shape.heads);
        const w32 = (at: number, v: number, le = h.le) => at + 4 <= b.length && (le ? b.writeUInt32LE(v >>> 0, at) : b.writeUInt32BE(v >>> 0, at));
        const w16 = (at: number, v: number, le = h.le) => at + 2 <= b.length && (le ? b.writeUInt16LE(v, at) : b.writeUInt16BE(v, at));
        const LINKTYPES = [0, 1, 101, 113, 231, 249, 279, 0xffff, 0x04000001, 0x14000001, 0xf4000001, 0x80000001];
        const SNAPLENS = [0, 1, 14, 64, 65535, 262144, 262145, 0x7fffffff, 0xffffffff];
        const what: string[] = [];
        if (h.type === 0) {
          for (let k = 1 + r.int(3); k > 0; k--) {
            switch (r.int(4)) {
              case 0: {
                const magic = r.pick([0xa1b2c3d4, 0xa1b23c4d, 0xa1b2cd34]);
                const le = r.chance(0.5);
                w32(0, magic, le);
                what.push(`magic ${magic.toString(16)} ${le ? 'le' : 'be'}`);
                break;
              }
              case 1: {
                const [maj, min] = r.pick([[2, 4], [2, 3], [2, 2], [2, 0], [543, 0], [1, 0], [2, 5]]);
                w16(4, maj);
                w16(6, min);
                what.push(`version ${maj}.${min}`);
                break;
              }
              case 2: {
                const lt = r.pick(LINKTYPES);
                w32(20, lt);
                what.push(`linktype 0x${lt.toString(16)}`);
                break;
              }
              default: {
                const sn = r.pick(SNAPLENS);
                w32(16, sn);
                what.push(`snaplen ${sn}`);
              }
            }
          }
        } else if (h.type === 0x0a0d0d0a) {
          if (r.chance(0.5)) {
            const [maj, min] = r.pick([[1, 0], [1, 2], [1, 1], [2, 0], [0, 0]]);
            w16(h.at + 12, maj);
            w16(h.at + 14, min);
            what.push(`section version ${maj}.${min}`);
          } else {
            // The other byte order's magic: every length in the section is now read swapped.
            w32(h.at + 8, 0x1a2b3c4d, !h.le);
            what.push('section byte order flipped');
          }
        } else {
          const mine = shape.opts.filter((o) => o.at > h.at && o.at < h.at + 1024);
          if (mine.length && r.chance(0.6)) {
            const o = r.pick(mine);
            if (o.code === 9 && o.len >= 1) {
              const v = r.pick([0, 3, 6, 9, 19, 20, 0x7f, 0x80, 0x80 | 10, 0x80 | 32, 0x80 | 33, 0x80 | 52, 0x80 | 63, 0x80 | 64, 0xff]);
              b[o.at] = v;
              what.push(`if_tsresol 0x${v.toString(16)}`);
            } else if (o.code === 14 && o.len >= 8 && o.at + 8 <= b.length) {
              const v = r.pick([0n, 1n, -1n, 0x7fffffffffffffffn, -0x8000000000000000n, 1n << 53n, 4102444800n]);
              o.le ? b.writeBigInt64LE(v, o.at) : b.writeBigInt64BE(v, o.at);
              what.push(`if_tsoffset ${v}`);
            } else {
              w16(o.at - 4, r.pick([9, 14, 0, 1, 2, 0x8000]));
              what.push(`option code at ${o.at - 4} changed`);
            }
          } else if (r.chance(0.5)) {
            const lt = r.pick(LINKTYPES) & 0xffff;
            w16(h.at + 8, lt);
            what.push(`interface linktype ${lt}`);
          } else {
            const sn = r.pick(SNAPLENS);
            w32(h.at + 12, sn);
            what.push(`interface snaplen ${sn}`);
          }
        }
        return { bytes: b, what: what.join(', ') };
      }
      case 'stacked': {
        const k = 2 + r.int(4);
        const whats: string[] = [];
        let cur: Input = input;
        for (let i = 0; i < k; i++) {
          const c = CATEGORIES[r.int(CATEGORIES.length - 1)];
          const m = this.apply(c, cur);
          whats.push(`${c}: ${m.what}`);
          cur = { name: input.name, bytes: m.bytes, shape: shapeOf(m.bytes) };
        }
        return { bytes: cur.bytes, what: whats.join('; ') };
      }
    }
  }
}

interface Case {
  id: number;
  category: Category;
  source: string;
  what: string;
  bytes: Buffer;
}

function* cases(seed: number, n: number, inputs: Input[]): Generator<Case> {
  const rng = new Rng(seed);
  const mut = new Mutator(rng, inputs);
  for (let id = 0; id < n; id++) {
    const category = CATEGORIES[id % CATEGORIES.length];
    // The fixtures come up often: they have the most variety per byte (pcapng blocks, both byte orders).
    const input = rng.chance(0.25) ? inputs[rng.int(Math.min(4, inputs.length))] : rng.pick(inputs);
    const { bytes, what } = mut.apply(category, input);
    yield { id, category, source: input.name, what, bytes };
  }
}

// ------------------------------------------------------------------ in-process reads, in a watched worker

interface ReadResult {
  /** 'ok': clean end; 'damage': CaptureFileError after `packets` packets; 'open': refused at open. */
  outcome: 'ok' | 'damage' | 'open';
  packets: number;
  digest: string;
  message?: string;
  offset?: number;
  warnings: string[];
  container?: string;
}
type WorkerReply = { id: number; reads: ReadResult[] } | { id: number; crash: string };

const MODULE = (rel: string) => new URL(rel, import.meta.url).href;
const WORKER = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
Promise.all([import(${JSON.stringify(MODULE('../src/capture/file.js'))}), import(${JSON.stringify(MODULE('../src/capture/batch.js'))})]).then(([F, B]) => {
  const check = (ok, what) => { if (!ok) throw new Error('invariant: ' + what); };
  function read(file, size, max, cap) {
    let f;
    try {
      return readFile(file, size, max, cap, (x) => (f = x));
    } finally {
      f?.close(); // also after a failed check, so a crash does not leak the descriptor
    }
  }
  function readFile(file, size, max, cap, opened) {
    let f;
    try {
      f = opened(F.openCaptureFile(file));
    } catch (e) {
      if (!(e instanceof F.CaptureFileError)) throw e;
      checkError(e, size);
      return { outcome: 'open', packets: 0, digest: '', message: e.message, offset: e.offset, warnings: [] };
    }
    const h = createHash('sha1');
    const batch = new B.Batch(cap);
    let packets = 0;
    let calls = 0;
    let last = f.offset;
    // Every packet takes at least 16 bytes of the file (pcap record header, pcapng SPB).
    const bound = Math.floor(size / 16) + 4;
    try {
      for (;;) {
        check(++calls <= bound, 'more fill() calls than the file can hold packets: ' + calls);
        batch.reset();
        const n = f.fill(batch, max);
        check(Number.isInteger(n) && n >= 0 && n <= max && n === batch.count, 'fill returned ' + n + ' for ' + batch.count + ' records, max ' + max);
        check(f.offset >= last && f.offset <= size, 'offset ' + f.offset + ' after ' + last + ', size ' + size);
        last = f.offset;
        if (n === 0) {
          check(f.fill(batch, max) === 0, 'end of file is not sticky');
          break;
        }
        let o = 0;
        for (let i = 0; i < n; i++) {
          const caplen = batch.view.getUint32(o + 12, true);
          const nsec = batch.view.getUint32(o + 8, true);
          check(caplen <= size, 'caplen ' + caplen + ' > file size ' + size);
          check(nsec < 1e9, 'nanoseconds ' + nsec);
          h.update(batch.buf.subarray(o, o + B.HDR + caplen));
          o += B.HDR + B.align8(caplen);
        }
        check(o === batch.bytes, 'batch bytes ' + batch.bytes + ' != records ' + o);
        packets += n;
      }
    } catch (e) {
      if (!(e instanceof F.CaptureFileError)) throw e;
      checkError(e, size);
      let again;
      try { f.fill(batch, max); } catch (e2) { again = e2; }
      check(again === e, 'damage is not sticky');
      f.close();
      return { outcome: 'damage', packets, digest: h.digest('hex'), message: e.message, offset: e.offset, warnings: f.warnings, container: f.container };
    }
    f.close();
    return { outcome: 'ok', packets, digest: h.digest('hex'), warnings: f.warnings, container: f.container };
  }
  // Every read must close what it opened, damage or not (Linux: /proc/self/fd).
  const procFd = fs.existsSync('/proc/self/fd');
  const openFds = () => (procFd ? fs.readdirSync('/proc/self/fd').length : 0);
  function checkError(e, size) {
    check(typeof e.message === 'string' && e.message.length > 0, 'empty message');
    check(!/NaN|undefined|Infinity|\\[object/.test(e.message), 'message: ' + e.message);
    check(Number.isInteger(e.offset) && e.offset >= 0 && e.offset <= size, 'error offset ' + e.offset + ' outside 0..' + size + ': ' + e.message);
  }
  parentPort.on('message', ({ id, file, size, reads, spin }) => {
    if (spin) for (;;); // the watchdog's own test
    try {
      const fds = openFds();
      const out = reads.map(([max, cap]) => read(file, size, max, cap));
      const left = openFds();
      check(left <= fds, 'file descriptors leaked: ' + fds + ' open before, ' + left + ' after');
      parentPort.postMessage({ id, reads: out });
    } catch (e) {
      parentPort.postMessage({ id, crash: (e && e.stack) || String(e) });
    }
  });
  parentPort.postMessage({ ready: true });
});
`;

class Reader {
  private worker!: Worker;
  private ready!: Promise<void>;
  private pending: ((r: WorkerReply | null) => void) | null = null;
  constructor() {
    this.start();
  }
  private start(): void {
    const w = new Worker(WORKER, { eval: true });
    this.worker = w;
    w.unref();
    this.ready = new Promise((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
    // A worker given up on may still have a reply queued: only the current one answers.
    w.on('message', (m: WorkerReply) => {
      if (w !== this.worker || !('id' in m)) return;
      const p = this.pending;
      this.pending = null;
      p?.(m);
    });
    w.on('error', (e) => {
      if (w !== this.worker) return;
      const p = this.pending;
      this.pending = null;
      p?.({ id: -1, crash: `worker died: ${e.stack ?? e}` });
    });
  }
  /** The reads' results, or null if they did not finish in time (the worker is then replaced). */
  async read(id: number, file: string, size: number, reads: [number, number][], spin = false, limit = CASE_TIMEOUT_MS): Promise<WorkerReply | null> {
    return new Promise((resolve) => {
      // The watch starts before the worker is ready: a worker that never starts is caught too.
      const timer = setTimeout(() => {
        this.pending = null;
        void this.worker.terminate();
        this.start();
        resolve(null);
      }, limit);
      this.ready.then(
        () => {
          this.pending = (r) => {
            clearTimeout(timer);
            resolve(r);
          };
          this.worker.postMessage({ id, file, size, reads, spin });
        },
        (e) => {
          clearTimeout(timer);
          this.start();
          resolve({ id, crash: `worker did not start: ${e?.stack ?? e}` });
        },
      );
    });
  }
  close(): Promise<number> {
    return this.worker.terminate();
  }
}

// ------------------------------------------------------------------ bookkeeping

const work = tmpdir('riff-fuzz-');
const keep = path.join(os.tmpdir(), `riff-fuzz-failures-${SEED.toString(16)}`);
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

interface Failure {
  c: Case;
  kind: 'crash' | 'hang' | 'inconsistent' | 'cli';
  detail: string;
}
const failures: Failure[] = [];
function fail(c: Case, kind: Failure['kind'], detail: string): void {
  let kept = 'not kept (only the first 50 are)';
  if (failures.length < 50) {
    fs.mkdirSync(keep, { recursive: true });
    kept = path.join(keep, `case-${c.id}-${kind}`);
    fs.writeFileSync(kept, c.bytes);
  }
  failures.push({ c, kind, detail: `${detail}\n    input ${kept} (${c.category} of ${c.source}: ${c.what})` });
}

function summary(title: string, rows: Map<string, Record<string, number>>, cols: string[]): void {
  const lines = [...rows].map(([k, v]) => `  ${k.padEnd(15)} ${cols.map((c) => `${c} ${String(v[c] ?? 0).padStart(4)}`).join('  ')}`);
  console.log(`${title}\n${lines.join('\n')}`);
}

const inputs = loadInputs();
/** In-process result of every case, for the CLI sample to agree with. */
const expected = new Map<number, ReadResult>();

// ------------------------------------------------------------------ tests

test('the fuzzer catches what it claims to: a reader stuck in a loop, the same cases for the same seed', async () => {
  const reader = new Reader();
  const file = path.join(work, 'watchdog');
  fs.writeFileSync(file, fs.readFileSync(path.join(FIXTURES, 'http.pcap')));
  assert.equal(await reader.read(-1, file, 0, [[1, 64]], true, 300), null, 'a spinning worker is reported, not waited for');
  const after = await reader.read(-2, file, fs.statSync(file).size, [[1024, 1 << 20]]);
  assert.ok(after && 'reads' in after && after.reads[0].outcome === 'ok' && after.reads[0].packets === 45, 'a fresh worker takes over');
  await reader.close();
  const a = [...cases(7, 50, inputs)].map((c) => c.what + c.bytes.toString('base64'));
  const b = [...cases(7, 50, inputs)].map((c) => c.what + c.bytes.toString('base64'));
  assert.deepEqual(a, b);
});

test(`in-process reader: ${CASES} mutated captures (seed 0x${SEED.toString(16)})`, { timeout: 300_000 }, async () => {
  assert.ok(inputs.length >= 4, 'fixtures present');
  const reader = new Reader();
  const rows = new Map<string, Record<string, number>>(CATEGORIES.map((c) => [c, {}]));
  const t0 = Date.now();
  let slowest = { ms: 0, id: -1 };
  const file = path.join(work, 'case');
  for (const c of cases(SEED, CASES, inputs)) {
    fs.writeFileSync(file, c.bytes);
    // One packet per call in tiny batches (every batch-full path), then big batches.
    const small = [1 + (c.id % 3), 64] as [number, number];
    const t = Date.now();
    const reply = await reader.read(c.id, file, c.bytes.length, [small, [1024, 1 << 20]]);
    const ms = Date.now() - t;
    if (ms > slowest.ms) slowest = { ms, id: c.id };
    const row = rows.get(c.category)!;
    row.cases = (row.cases ?? 0) + 1;
    if (reply === null) {
      row.hang = (row.hang ?? 0) + 1;
      fail(c, 'hang', `case ${c.id}: no answer within ${CASE_TIMEOUT_MS} ms`);
      continue;
    }
    if ('crash' in reply) {
      row.crash = (row.crash ?? 0) + 1;
      fail(c, 'crash', `case ${c.id}: ${reply.crash}`);
      continue;
    }
    const [a, b] = reply.reads;
    row[a.outcome] = (row[a.outcome] ?? 0) + 1;
    const same = (x: ReadResult) => JSON.stringify([x.outcome, x.packets, x.digest, x.message, x.offset, x.warnings]);
    if (same(a) !== same(b)) {
      row.inconsistent = (row.inconsistent ?? 0) + 1;
      fail(c, 'inconsistent', `case ${c.id}: small batches read ${same(a)}\n    big batches read ${same(b)}`);
      continue;
    }
    expected.set(c.id, b);
  }
  await reader.close();
  const total = (k: string) => [...rows.values()].reduce((n, r) => n + (r[k] ?? 0), 0);
  summary(
    `fuzz (in-process): ${CASES} cases from ${inputs.length} inputs in ${Date.now() - t0} ms (slowest case ${slowest.id}: ${slowest.ms} ms); ` +
      `clean ${total('ok')}, damage ${total('damage')}, refused at open ${total('open')}, crashes ${total('crash')}, hangs ${total('hang')}, inconsistent ${total('inconsistent')}`,
    rows,
    ['cases', 'ok', 'damage', 'open', 'crash', 'hang', 'inconsistent'],
  );
  const mine = failures.filter((f) => f.kind !== 'cli');
  assert.equal(mine.length, 0, `${mine.length} failures:\n${mine.slice(0, 10).map((f) => `  ${f.kind}: ${f.detail}`).join('\n')}`);
});

/** Run the CLI without blocking, so a few run at once; killed after the time limit. */
function riffAsync(args: string[], input?: Buffer, limit = CLI_TIMEOUT_MS): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, TZ: 'UTC' },
      stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limit);
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    if (input) {
      child.stdin!.on('error', () => {}); // riff may stop reading at the damage
      child.stdin!.end(input);
    }
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err, timedOut });
    });
  });
}

test(`CLI: ${CLI_CASES} mutated captures through riff -q --lua count.lua`, { timeout: 600_000 }, async (t) => {
  if (CLI_CASES <= 0) return t.skip('RIFF_FUZZ_CLI=0');
  // The filter addon may be missing (no libpcap-dev): then no filter cases.
  const probe = riff(['-q', '--lua', 'fixtures/count.lua', '-r', 'fixtures/http.pcap', 'tcp']);
  const withFilter = probe.code === 0;
  if (!withFilter) t.diagnostic(`filter cases skipped: ${probe.stderr.trim().split('\n').pop()}`);
  // A different stream of cases from the in-process run, read in-process first for the expected answer.
  const seed = (SEED ^ 0xc11c11) >>> 0;
  const sample = [...cases(seed, CLI_CASES, inputs)];
  const reader = new Reader();
  const want = new Map<number, ReadResult>();
  const dir = path.join(work, 'cli');
  fs.mkdirSync(dir);
  for (const c of sample) {
    const file = path.join(dir, `case${c.id}`);
    fs.writeFileSync(file, c.bytes);
    const reply = await reader.read(c.id, file, c.bytes.length, [[1024, 1 << 20]]);
    if (reply && 'reads' in reply) want.set(c.id, reply.reads[0]);
  }
  await reader.close();

  const rows = new Map<string, Record<string, number>>();
  const t0 = Date.now();
  const jobs = Math.max(2, Math.min(4, os.availableParallelism?.() ?? os.cpus().length));
  let next = 0;
  const runOne = async (c: Case) => {
    const file = path.join(dir, `case${c.id}`);
    const filter = withFilter && c.id % 4 === 3;
    const stdin = c.id % 5 === 2;
    const mode = filter ? 'filter tcp' : stdin ? 'stdin' : 'file';
    const name = stdin ? 'standard input' : file;
    const args = ['-q', '--lua', 'fixtures/count.lua', '-r', stdin ? '-' : file, ...(filter ? ['tcp'] : [])];
    const r = await riffAsync(args, stdin ? c.bytes : undefined);
    const row = rows.get(mode) ?? rows.set(mode, {}).get(mode)!;
    row.cases = (row.cases ?? 0) + 1;
    const problems: string[] = [];
    const lines = r.stderr.trimEnd().split('\n');
    const last = lines[lines.length - 1];
    if (r.timedOut) {
      row.hang = (row.hang ?? 0) + 1;
      problems.push(`no exit within ${CLI_TIMEOUT_MS} ms`);
    } else if (r.signal) {
      row.crash = (row.crash ?? 0) + 1;
      problems.push(`killed by ${r.signal}`);
    } else {
      row[`exit ${r.code}`] = (row[`exit ${r.code}`] ?? 0) + 1;
      if (/^\s+at /m.test(r.stderr)) problems.push('stack trace on stderr');
      if (/internal error/i.test(r.stderr)) problems.push('internal error');
      const filterRefused = filter && r.code === 2 && lines.length === 1 && /^riff: filter 'tcp': /.test(last);
      if (r.code !== 0 && r.code !== 1 && !filterRefused) problems.push(`exit code ${r.code}`);
      if (r.code === 1 && !last.startsWith('riff: ')) problems.push('exit 1 without a riff: line last');
      // The CLI agrees with the reader.
      const w = want.get(c.id);
      if (w && !filterRefused) {
        const msg = w.message && w.message.startsWith(`${file}: `) ? w.message.slice(file.length + 2) : w.message;
        if (w.outcome === 'ok') {
          if (r.code !== 0) problems.push(`exit ${r.code} for a file the reader reads cleanly`);
          if (!new RegExp(`^${w.packets} packets read$`, 'm').test(r.stderr)) problems.push(`expected ${w.packets} packets read`);
          if (!filter && !new RegExp(`^${w.packets} packets processed by Lua$`, 'm').test(r.stderr)) problems.push(`expected ${w.packets} packets processed`);
        } else {
          const line = `riff: ${name}: ${msg} at byte offset ${w.offset}; ${w.packets} packets before it were processed`;
          if (last !== line) problems.push(`last line should be\n      ${line}`);
          if (w.outcome === 'damage' && !filter && !new RegExp(`^${w.packets} packets processed by Lua$`, 'm').test(r.stderr))
            problems.push(`expected ${w.packets} packets processed`);
        }
        for (const warning of w.warnings) if (!r.stderr.includes(`riff: ${name}: ${warning}\n`)) problems.push(`warning missing: ${warning}`);
      }
    }
    if (problems.length) {
      row.bad = (row.bad ?? 0) + 1;
      fail(c, 'cli', `case ${c.id} (${mode}): riff ${args.join(' ')}: ${problems.join('; ')}\n    stderr: ${r.stderr.trim().split('\n').slice(-6).join('\n            ')}`);
    }
  };
  await Promise.all(
    Array.from({ length: jobs }, async () => {
      while (next < sample.length) await runOne(sample[next++]);
    }),
  );
  const cats = new Map<string, number>();
  for (const c of sample) cats.set(c.category, (cats.get(c.category) ?? 0) + 1);
  summary(
    `fuzz (CLI): ${sample.length} cases (${[...cats].map(([k, v]) => `${k} ${v}`).join(', ')}) in ${Date.now() - t0} ms, ${jobs} at a time`,
    rows,
    ['cases', 'exit 0', 'exit 1', 'exit 2', 'crash', 'hang', 'bad'],
  );
  const mine = failures.filter((f) => f.kind === 'cli');
  assert.equal(mine.length, 0, `${mine.length} failures:\n${mine.slice(0, 10).map((f) => `  ${f.detail}`).join('\n')}`);
});

// ------------------------------------------------------------------ huge records

/** Link type D-Bus (231): libpcap allows it 128 MiB a packet, so a snaplen of 0 means that. */
const DBUS = 231;

function pcapWith(records: { caplen: number; data: number }[]): Buffer {
  const h = pcapHeader(DBUS, 0);
  const parts = [h];
  records.forEach((r, i) => {
    const rh = Buffer.alloc(16);
    rh.writeUInt32LE(1_500_000_000 + i, 0);
    rh.writeUInt32LE(r.caplen, 8);
    rh.writeUInt32LE(r.caplen, 12);
    parts.push(rh, Buffer.alloc(r.data, 0x61 + i));
  });
  return Buffer.concat(parts);
}

function pcapngWith(records: { caplen: number; data: number; blockLen?: number }[]): Buffer {
  const shb = Buffer.alloc(28);
  shb.writeUInt32LE(0x0a0d0d0a, 0);
  shb.writeUInt32LE(28, 4);
  shb.writeUInt32LE(0x1a2b3c4d, 8);
  shb.writeUInt16LE(1, 12);
  shb.writeBigInt64LE(-1n, 16);
  shb.writeUInt32LE(28, 24);
  const idb = Buffer.alloc(20);
  idb.writeUInt32LE(1, 0);
  idb.writeUInt32LE(20, 4);
  idb.writeUInt16LE(DBUS, 8);
  idb.writeUInt32LE(0, 12); // snaplen 0
  idb.writeUInt32LE(20, 16);
  const parts = [shb, idb];
  records.forEach((r, i) => {
    const padded = (r.caplen + 3) & ~3;
    const len = r.blockLen ?? 32 + padded;
    const head = Buffer.alloc(28);
    head.writeUInt32LE(6, 0);
    head.writeUInt32LE(len >>> 0, 4);
    head.writeUInt32LE(0, 8);
    head.writeUInt32LE(0, 12);
    head.writeUInt32LE(1_000_000 * (i + 1), 16);
    head.writeUInt32LE(r.caplen, 20);
    head.writeUInt32LE(r.caplen, 24);
    parts.push(head, Buffer.alloc(r.data, 0x61 + i));
    // A whole block gets its padding and trailing length; a cut one ends where its data does.
    if (r.data === r.caplen) {
      const tail = Buffer.alloc(padded - r.caplen + 4);
      tail.writeUInt32LE(len >>> 0, tail.length - 4);
      parts.push(tail);
    }
  });
  return Buffer.concat(parts);
}

const MiB = 1 << 20;
const HUGE: { name: string; bytes: () => Buffer; whole: boolean }[] = [
  { name: 'pcap, a 20 MiB record between two small ones', bytes: () => pcapWith([{ caplen: 100, data: 100 }, { caplen: 20 * MiB, data: 20 * MiB }, { caplen: 200, data: 200 }]), whole: true },
  { name: 'pcap, a record claiming 200 MiB, cut after 1 MiB', bytes: () => pcapWith([{ caplen: 100, data: 100 }, { caplen: 200 * MiB, data: MiB }]), whole: false },
  { name: 'pcap, a record claiming 200 MiB, then more records', bytes: () => pcapWith([{ caplen: 100, data: 100 }, { caplen: 200 * MiB, data: 64 }, { caplen: 100, data: 100 }]), whole: false },
  { name: 'pcapng, a 20 MiB block between two small ones', bytes: () => pcapngWith([{ caplen: 100, data: 100 }, { caplen: 20 * MiB, data: 20 * MiB }, { caplen: 200, data: 200 }]), whole: true },
  { name: 'pcapng, a block claiming 200 MiB, cut after 1 MiB', bytes: () => pcapngWith([{ caplen: 100, data: 100 }, { caplen: 200 * MiB, data: MiB }]), whole: false },
  { name: 'pcapng, a block of 256 MiB claimed around a small packet', bytes: () => pcapngWith([{ caplen: 100, data: 100 }, { caplen: 100, data: 100, blockLen: 256 * MiB }]), whole: false },
];

for (const h of HUGE) {
  for (const workers of [1, 2]) {
    for (const stdin of workers === 1 ? [false, true] : [false]) {
      test(`huge records: ${h.name}, ${workers} worker(s)${stdin ? ', from standard input' : ''}: passed or refused with a count and one line, never a hang`, { timeout: 120_000 }, async () => {
        const bytes = h.bytes();
        const file = path.join(work, `huge-${HUGE.indexOf(h)}-${workers}${stdin ? '-stdin' : ''}`);
        if (!stdin) fs.writeFileSync(file, bytes);
        const r = await riffAsync(['-q', '--lua', 'fixtures/count.lua', '--workers', String(workers), '-r', stdin ? '-' : file], stdin ? bytes : undefined, 60_000);
        if (!stdin) fs.rmSync(file, { force: true });
        const ctx = `riff ${stdin ? '-r -' : file}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n${r.stderr}`;
        assert.equal(r.timedOut, false, `no exit within 60 s: ${ctx}`);
        assert.equal(r.signal, null, ctx);
        assert.ok(r.code === 0 || r.code === 1, ctx);
        assert.doesNotMatch(r.stderr, /^\s+at |internal error|RangeError|TypeError/m, ctx);
        const num = (re: RegExp) => Number(re.exec(r.stderr)?.[1] ?? 0);
        const read = num(/^(\d+) packets read$/m);
        const passed = num(/^(\d+) packets passed the filter$/m);
        const skipped = num(/^(\d+) packets? larger than .* skipped/m);
        const accounted =
          num(/^(\d+) packets processed by Lua$/m) + num(/^(\d+) Lua errors/m) + num(/^(\d+) packets lost with /m) + num(/^(\d+) packets not processed/m);
        assert.match(r.stderr, /^\d+ packets read$/m, `a summary: ${ctx}`);
        assert.equal(passed + skipped, read, `every record read passed or was skipped, and said so: ${ctx}`);
        assert.equal(accounted, passed, `every packet passed is accounted for: ${ctx}`);
        if (h.whole) {
          assert.equal(r.code, 0, ctx);
          assert.equal(read, 3, ctx);
        } else {
          // Damage: one riff: line, last, naming the input and the packets before it.
          const last = r.stderr.trimEnd().split('\n').pop()!;
          assert.equal(r.code, 1, ctx);
          assert.match(last, new RegExp(`^riff: ${stdin ? 'standard input' : file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .+; ${read} packets before it were processed$`), ctx);
        }
      });
    }
  }
}
