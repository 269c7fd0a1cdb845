// Which worker a packet belongs to: both directions of an IP 5-tuple map to
// the same worker, so a plugin's per-flow state lives in one VM. Non-IP
// packets go to worker 0. Only headers are read; nothing is decoded for Lua.
import { FLAG_ELSEWHERE, FLAG_FILTERED_OUT, FLAG_OVERHEARD, HDR, align8 } from './batch.js';
import type { Native } from './native.js';

function u16(d: DataView, o: number): number {
  return d.getUint16(o, false);
}

/** Hash one endpoint (address bytes + port); combined with + so direction does not matter. */
function endpoint(d: DataView, addr: number, len: number, port: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ d.getUint8(addr + i), 0x01000193);
  h = Math.imul(h ^ port, 0x01000193);
  return h >>> 0;
}

/** In a shard plan: the record goes to every worker; its owner in the low bits. */
export const BROADCAST = 0x80;

/** The TCP/UDP ports (src << 16 | dst) shardOf last read, or -1. */
let lastPorts = -1;

/**
 * Worker index in [0, n) for the record at byte offset `o` of a batch's view.
 * `byService`: a TCP/UDP packet goes by its lower-port endpoint alone (the
 * service: a client's port is ephemeral), so every connection to one
 * service lands on one worker (a script's riff.shard("service")).
 */
export function shardOf(d: DataView, o: number, n: number, byService = false): number {
  lastPorts = -1;
  if (n <= 1) return 0;
  const caplen = d.getUint32(o + 12, true);
  const lt = d.getUint32(o + 20, true) & 0xffff;
  const p = o + HDR;
  const end = p + caplen;
  let l3 = -1;
  let v = 0; // 4 or 6
  const byType = (type: number, at: number) => {
    if (type === 0x0800) (v = 4), (l3 = at);
    else if (type === 0x86dd) (v = 6), (l3 = at);
  };
  if (lt === 1) {
    let at = p + 12;
    if (at + 2 > end) return 0;
    let type = u16(d, at);
    while ((type === 0x8100 || type === 0x88a8 || type === 0x9100) && at + 6 <= end) {
      at += 4;
      type = u16(d, at);
    }
    byType(type, at + 2);
  } else if (lt === 113) {
    if (p + 16 > end) return 0;
    byType(u16(d, p + 14), p + 16);
  } else if (lt === 276) {
    if (p + 20 > end) return 0;
    byType(u16(d, p), p + 20);
  } else if (lt === 0 || lt === 108) {
    if (p + 4 > end) return 0;
    const le = d.getUint32(p, true);
    const fam = le > 0xffff ? d.getUint32(p, false) : le;
    if (fam === 2) (v = 4), (l3 = p + 4);
    else if (fam === 24 || fam === 28 || fam === 30 || fam === 10) (v = 6), (l3 = p + 4);
  } else if (lt === 101 || lt === 12 || lt === 14 || lt === 228 || lt === 229) {
    if (p + 1 > end) return 0;
    const ver = d.getUint8(p) >> 4;
    if (ver === 4 || ver === 6) (v = ver), (l3 = p);
  }
  if (l3 < 0) return 0;
  let a: number;
  let b: number;
  if (v === 4) {
    if (l3 + 20 > end) return 0;
    const ihl = (d.getUint8(l3) & 15) * 4;
    const proto = d.getUint8(l3 + 9);
    const frag = u16(d, l3 + 6) & 0x1fff;
    const l4 = l3 + ihl;
    const ports = (proto === 6 || proto === 17 || proto === 132) && frag === 0 && l4 + 4 <= end;
    a = endpoint(d, l3 + 12, 4, ports ? u16(d, l4) : 0);
    b = endpoint(d, l3 + 16, 4, ports ? u16(d, l4 + 2) : 0);
    if (ports && proto !== 132) lastPorts = u16(d, l4) * 65536 + u16(d, l4 + 2);
    if (ports && byService && u16(d, l4) !== u16(d, l4 + 2)) return (u16(d, l4) < u16(d, l4 + 2) ? a : b) % n;
  } else {
    if (l3 + 40 > end) return 0;
    const nh = d.getUint8(l3 + 6);
    const l4 = l3 + 40;
    const ports = (nh === 6 || nh === 17 || nh === 132) && l4 + 4 <= end;
    a = endpoint(d, l3 + 8, 16, ports ? u16(d, l4) : 0);
    b = endpoint(d, l3 + 24, 16, ports ? u16(d, l4 + 2) : 0);
    if (ports && nh !== 132) lastPorts = u16(d, l4) * 65536 + u16(d, l4 + 2);
    if (ports && byService && u16(d, l4) !== u16(d, l4 + 2)) return (u16(d, l4) < u16(d, l4 + 2) ? a : b) % n;
  }
  return ((a + b) >>> 0) % n;
}

/** A batch's record sizes, checked to lie within it before anything is touched (as the addon checks). */
function recordSizes(batch: Uint8Array, d: DataView, count: number, what: string): number[] {
  const sizes: number[] = [];
  for (let i = 0, o = 0; i < count; i++) {
    if (batch.length - o < HDR) throw new RangeError(`${what}: record ${i} header at offset ${o} runs past ${batch.length} bytes`);
    const size = HDR + align8(d.getUint32(o + 12, true));
    if (size > batch.length - o) throw new RangeError(`${what}: record ${i} at offset ${o} runs past ${batch.length} bytes`);
    sizes.push(size);
    o += size;
  }
  return sizes;
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Sharding a batch among workers: the addon's shardPlan and shardCopy, or jsSharding. */
export type Sharding = Pick<Native, 'shardPlan' | 'shardCopy'>;

/** The addon's shardPlan and shardCopy (riff_pcap.c), for when it is not built: the same records go to the same workers. */
export const jsSharding: Sharding = {
  shardPlan(batch, count, n, shards, bytes, elsewhere, overhear, byService) {
    const has = (port: number) => !!overhear && ((overhear[port >> 3] >> (port & 7)) & 1) === 1;
    const d = view(batch);
    const sizes = recordSizes(batch, d, count, 'shardPlan');
    const ends = bytes.length >= n + 2;
    bytes.fill(0, 0, ends ? n + 2 : n);
    for (let i = 0, o = 0; i < count; o += sizes[i], i++) {
      const flags = d.getUint32(o + 28, true);
      if (flags & FLAG_FILTERED_OUT) {
        shards[i] = 255;
        continue;
      }
      const w = shardOf(d, o, n, !!byService);
      if (ends) {
        bytes[n] = o + 1;
        if (lastPorts >= 0) bytes[n + 1] = o + 1;
      }
      if (lastPorts >= 0 && (has(lastPorts >>> 16) || has(lastPorts & 0xffff))) {
        shards[i] = w | BROADCAST;
        for (let k = 0; k < n; k++) bytes[k] += sizes[i];
        if (elsewhere && w !== 0) d.setUint32(o + 28, flags | FLAG_OVERHEARD, true);
        continue;
      }
      shards[i] = w;
      bytes[w] += sizes[i];
      if (elsewhere && w !== 0) d.setUint32(o + 28, flags | FLAG_ELSEWHERE, true);
    }
  },
  shardCopy(batch, count, shards, w, dst, at) {
    const d = view(batch);
    const out = view(dst);
    const sizes = recordSizes(batch, d, count, 'shardCopy');
    let copied = 0;
    for (let i = 0, o = 0; i < count; o += sizes[i], i++) {
      const s = shards[i];
      if (s !== w && (s === 255 || !(s & BROADCAST))) continue;
      if (at + sizes[i] > dst.length) throw new RangeError('shardCopy: dst too small');
      dst.set(batch.subarray(o, o + sizes[i]), at);
      const f = d.getUint32(o + 28, true) & ~(FLAG_ELSEWHERE | FLAG_OVERHEARD);
      out.setUint32(at + 28, (s & ~BROADCAST) === w ? f : f | FLAG_OVERHEARD, true);
      at += sizes[i];
      copied++;
    }
    return copied;
  },
};
