// Packets travel through riff in batches: one Buffer holding records laid end
// to end, each a fixed 40-byte header followed by the captured bytes, padded
// to 8 bytes. Every stage speaks this one layout — readers and live capture
// fill it, the filter marks it, the worker ring carries it, and the VM copies
// it into WebAssembly memory in a single set() — so packet bytes are never
// re-encoded on the way to Lua.
//
// Header (little-endian):
//   0  u32 seconds, low word      4  i32 seconds, high word (i64 in Lua)
//   8  u32 nanoseconds            12 u32 captured length
//   16 u32 wire length            20 u32 linktype (LINKTYPE_*, as in the file)
//   24 u32 interface index        28 u32 flags (FLAG_*)
//   32 u32 packet id: its number among the packets that passed the filter,
//          stamped by the capture thread so ids stay global across workers
//   36 u32 clock lag: how far the packet's time lies behind the capture's
//          clock, the latest time so far (0 in order): the top 2 bits its
//          unit (ns, us, ms, 4 s: the finest that holds it in 30 bits), the
//          count rounded up, so the clock never steps back; stamped with
//          the id (riff.packet.clock; clockOf reads it)

import { CopyList, nativeOrNull } from './native.js';

export const HDR = 40;
export const FLAG_ARRIVAL_TS = 1; // live: stamped on arrival, wire length unknown
export const FLAG_FILTERED_OUT = 2; // set by the filter; skipped downstream
export const FLAG_ELSEWHERE = 4; // in worker 0's ring slot, but sharded to another worker: worker 0 skips it
export const FLAG_OVERHEARD = 8; // another worker's flow, given to this one too for the script's overhear phase only

export const align8 = (n: number): number => (n + 7) & ~7;

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
function wordsOf(b: Buffer): Uint32Array | null {
  return LITTLE && b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2) : null;
}

export class Batch {
  buf: Buffer;
  view: DataView;
  count = 0;
  bytes = 0;

  /** Word view of buf when it is 4-byte aligned and the host is little-endian. */
  private words: Uint32Array | null = null;

  constructor(capacity = 1 << 20, buf?: Buffer) {
    this.buf = buf ?? Buffer.allocUnsafe(capacity);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.words = wordsOf(this.buf);
  }

  /** A batch over memory someone else owns (a ring slot); it grows out of it only if it must. */
  static over(buf: Buffer): Batch {
    return new Batch(0, buf);
  }

  reset(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Room for one more packet of `caplen` bytes? An empty batch always takes one (it grows). */
  fits(caplen: number): boolean {
    return this.bytes + HDR + align8(caplen) <= this.buf.length;
  }

  /**
   * While set, push() queues its byte copies for settle(), which makes them
   * all in one addon call: V8 writes into a SharedArrayBuffer (a ring slot)
   * with relaxed atomics at a third of memcpy's speed. Whoever sets it
   * settles before anything reads the batch and before a pushed `src`
   * changes (capture/file.ts fillFrom does, for the file readers).
   */
  deferCopies = false;
  private readonly pending = new CopyList();
  private pendingSrc: Uint8Array | null = null;

  /**
   * Append a packet. `src[start, start+caplen)` are the captured bytes.
   * Callers check fits() to close a batch; a packet that does not fit grows it.
   */
  push(
    sec: number,
    nsec: number,
    src: Uint8Array,
    start: number,
    caplen: number,
    wirelen: number,
    linktype: number,
    iface: number,
    flags = 0,
  ): void {
    if (!this.fits(caplen)) this.grow(HDR + align8(caplen));
    const o = this.bytes;
    const w = this.words;
    if (w) {
      // Aligned little-endian host: plain word stores beat DataView calls
      // (this runs once per packet on the capture thread).
      const i = o >>> 2;
      w[i] = sec >>> 0;
      w[i + 1] = Math.floor(sec / 4294967296);
      w[i + 2] = nsec;
      w[i + 3] = caplen;
      w[i + 4] = wirelen;
      w[i + 5] = linktype;
      w[i + 6] = iface;
      w[i + 7] = flags;
      w[i + 8] = 0;
      w[i + 9] = 0;
    } else {
      const v = this.view;
      v.setUint32(o, sec >>> 0, true);
      v.setInt32(o + 4, Math.floor(sec / 4294967296), true);
      v.setUint32(o + 8, nsec, true);
      v.setUint32(o + 12, caplen, true);
      v.setUint32(o + 16, wirelen, true);
      v.setUint32(o + 20, linktype, true);
      v.setUint32(o + 24, iface, true);
      v.setUint32(o + 28, flags, true);
      v.setUint32(o + 32, 0, true);
      v.setUint32(o + 36, 0, true);
    }
    this.bytes = o + HDR + align8(caplen);
    this.count++;
    if (this.deferCopies && nativeOrNull()) this.queue(src, start, o + HDR, caplen);
    // Buffer.copy takes offsets: no view object per packet on the hot path.
    else if (Buffer.isBuffer(src)) src.copy(this.buf, o + HDR, start, start + caplen);
    else this.buf.set(src.subarray(start, start + caplen), o + HDR);
  }

  private queue(src: Uint8Array, from: number, to: number, len: number): void {
    if (src !== this.pendingSrc) {
      this.settle();
      this.pendingSrc = src;
    }
    this.pending.add(from, to, len);
  }

  /** Make the copies push() queued. A bound function, so a Source can call it before it moves its bytes. */
  readonly settle = (): void => {
    if (this.pending.n) this.pending.run(this.buf, this.pendingSrc!);
    this.pendingSrc = null;
  };

  private grow(need: number): void {
    this.settle();
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.bytes + need));
    this.buf.copy(next, 0, 0, this.bytes);
    this.buf = next;
    this.view = new DataView(next.buffer, next.byteOffset, next.byteLength);
    this.words = wordsOf(next);
  }

  /** Byte offset of every record, in order. */
  offsets(): number[] {
    const out: number[] = [];
    for (let o = 0, i = 0; i < this.count; i++) {
      out.push(o);
      o += HDR + align8(this.view.getUint32(o + 12, true));
    }
    return out;
  }
}

/** Packets of the batch the filter let through. */
export function countPassed(b: Batch): number {
  let n = 0;
  for (let i = 0, o = 0; i < b.count; i++) {
    if (!(b.view.getUint32(o + 28, true) & FLAG_FILTERED_OUT)) n++;
    o += HDR + align8(b.view.getUint32(o + 12, true));
  }
  return n;
}

const LAG_MAX = 0x3fffffff;
/** Units of a clock lag per second, by its top 2 bits (ns, us, ms; the last unit is 4 s: 136 years, any 32-bit time). */
const LAG_PER_SEC = [1e9, 1e6, 1e3];

/**
 * How far (sec, nsec; nsec in [0, 1e9)) a time lies behind the clock, as
 * field 36 holds it: exact below 2^30 ns (~1.07 s), else rounded up to the
 * unit, so the clock the packet reads is never behind the one before.
 */
function lagWord(s: number, ns: number): number {
  const n0 = s * 1e9 + ns;
  if (n0 <= LAG_MAX) return n0;
  const n1 = s * 1e6 + Math.ceil(ns / 1e3);
  if (n1 <= LAG_MAX) return (0x40000000 + n1) >>> 0;
  const n2 = s * 1e3 + Math.ceil(ns / 1e6);
  if (n2 <= LAG_MAX) return (0x80000000 + n2) >>> 0;
  return (0xc0000000 + Math.min(Math.ceil((s + (ns > 0 ? 1 : 0)) / 4), LAG_MAX)) >>> 0;
}

/**
 * A record's clock, [sec, nsec]: its time plus its lag (field 36), in
 * integers, as lua/riff/driver.lua computes riff.packet.clock, so both
 * give the same float.
 */
export function clockOf(sec: number, nsec: number, lag: number): [number, number] {
  const n = lag & LAG_MAX;
  if (lag >>> 30 === 3) return [sec + n * 4, nsec];
  const perSec = LAG_PER_SEC[lag >>> 30];
  const t = nsec + (n % perSec) * (1e9 / perSec);
  return [sec + Math.floor(n / perSec) + Math.floor(t / 1e9), t % 1e9];
}

/** The latest packet time so far, in capture order: the capture's clock. */
export interface Clock {
  sec: number;
  nsec: number;
}

/**
 * Number the packets that passed the filter, continuing from `next`, and
 * stamp each with its clock lag (field 36) against `clock`, which moves on;
 * returns the next id. A capture's times may step back (merged or
 * multi-interface files, a clock set back): flows are judged idle by the
 * capture's clock, and it is stamped here, in capture order, so every
 * worker reads the same clock at the same packet whatever share it sees.
 */
export function stampIds(b: Batch, next: number, clock: Clock = { sec: -Infinity, nsec: 0 }): number {
  const v = b.view;
  for (let i = 0, o = 0; i < b.count; i++) {
    if (!(v.getUint32(o + 28, true) & FLAG_FILTERED_OUT)) {
      v.setUint32(o + 32, next++, true);
      const sec = v.getUint32(o, true) + v.getInt32(o + 4, true) * 4294967296;
      const nsec = v.getUint32(o + 8, true);
      let lag = 0;
      if (sec > clock.sec || (sec === clock.sec && nsec >= clock.nsec)) (clock.sec = sec), (clock.nsec = nsec);
      else {
        let s = clock.sec - sec;
        let ns = clock.nsec - nsec;
        if (ns < 0) (s -= 1), (ns += 1e9);
        lag = lagWord(s, ns);
        // The clock is what this packet reads (past the latest time by less
        // than a unit when the lag is over a second): so it never steps back.
        [clock.sec, clock.nsec] = clockOf(sec, nsec, lag);
      }
      v.setUint32(o + 36, lag, true);
    }
    o += HDR + align8(v.getUint32(o + 12, true));
  }
  return next;
}

/** Read one record's header fields (for tests, writers and the filter; not the hot path). */
export function recordAt(b: Batch, o: number) {
  const v = b.view;
  return {
    sec: v.getUint32(o, true) + v.getInt32(o + 4, true) * 4294967296,
    nsec: v.getUint32(o + 8, true),
    caplen: v.getUint32(o + 12, true),
    wirelen: v.getUint32(o + 16, true),
    linktype: v.getUint32(o + 20, true),
    iface: v.getUint32(o + 24, true),
    flags: v.getUint32(o + 28, true),
    id: v.getUint32(o + 32, true),
    data: b.buf.subarray(o + HDR, o + HDR + v.getUint32(o + 12, true)),
  };
}
