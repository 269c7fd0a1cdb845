// Which worker a packet belongs to: both directions of a flow map to the
// same worker, so a plugin's per-flow state lives in one VM. A flow is what
// the decoder keys it on: the innermost IP header lua/proto/packet.lua's walk
// reaches and its TCP/UDP ports, so the walk below steps through the same
// link layers, shims and tunnels by the same rules (a key read from an outer
// header would split a flow whose directions differ outside it: a VXLAN
// endpoint's source port, MPLS labels one way only). Packets with no IP
// header go to worker 0. Only headers are read; nothing is decoded for Lua.
// The addon's shard_of (riff_pcap.c) is the same function, line for line.
import { FLAG_ELSEWHERE, FLAG_FILTERED_OUT, FLAG_OVERHEARD, HDR, align8 } from './batch.js';
import type { Native } from './native.js';

const MAX_DEPTH = 8;
const MAX_EXT = 16;

/** What the walk found: the innermost IP header, and the transport header whose ports key the flow. */
interface FlowKey {
  ip: number;
  v: number;
  /** 6 or 17 when the decoder reads TCP/UDP ports at l4, 132 for SCTP's, else 0. */
  tp: number;
  l4: number;
}

/** The walk over one record: d its bytes from 0 (offsets below are into d), n how many to look at. */
class Walk {
  constructor(
    readonly d: DataView,
    readonly base: number,
  ) {}
  u8(o: number): number {
    return this.d.getUint8(this.base + o);
  }
  u16(o: number): number {
    return this.d.getUint16(this.base + o, false);
  }
  u32(o: number): number {
    return this.d.getUint32(this.base + o, false);
  }

  /** VLAN tags from o: [EtherType, offset] after them, or null when one is cut short or there are more than 8. */
  vlans(n: number, et: number, o: number): [number, number] | null {
    for (let k = 0; et === 0x8100 || et === 0x88a8 || et === 0x9100 || et === 0x9200; k++) {
      if (o + 4 > n || k >= 8) return null;
      et = this.u16(o + 2);
      o += 4;
    }
    return [et, o];
  }

  innerEth(n: number, o: number): [number, number] | null {
    if (o + 14 > n) return null;
    const r = this.vlans(n, this.u16(o + 12), o + 14);
    return r && r[0] > 1500 ? r : null;
  }

  ppp(n: number, q: number): [number, number] | null {
    if (q + 2 <= n && this.u8(q) === 0xff && this.u8(q + 1) === 3) q += 2;
    if (q >= n) return null;
    let pp = this.u8(q);
    if (pp & 1) q += 1;
    else {
      if (q + 2 > n) return null;
      pp = this.u16(q);
      q += 2;
    }
    if (pp === 0x21) return [0x0800, q];
    if (pp === 0x57) return [0x86dd, q];
    if (pp === 0x281 || pp === 0x283) return [0x8847, q];
    return null;
  }

  /** One shim by EtherType: what it carries, null when nothing decodable, undefined when et is no shim. */
  shim(n: number, et: number, o: number): [number, number] | null | undefined {
    const known = (e: number) => e === 0x0800 || e === 0x86dd || e === 0x0806 || e === 0x8100 || e === 0x88a8 || e === 0x8847 || e === 0x8864;
    if (et === 0x8864) return o + 6 <= n ? this.ppp(n, o + 6) : null;
    if (et === 0x8847 || et === 0x8848) {
      let q = o;
      for (let i = 0; i < 16; i++) {
        if (q + 4 > n) return null;
        const bos = this.u8(q + 2) & 1;
        q += 4;
        if (bos) {
          if (q >= n) return null;
          const v = this.u8(q) >> 4;
          if (v === 4) return [0x0800, q];
          if (v === 6) return [0x86dd, q];
          if (v === 0 && q + 18 <= n && !known(this.u16(q + 12)) && known(this.u16(q + 16))) q += 4;
          return this.innerEth(n, q);
        }
      }
      return null;
    }
    if (et === 0x88e5) {
      if (o + 6 > n) return null;
      const tci = this.u8(o);
      if (tci & 0x0c) return null;
      const q = o + 6 + (tci & 0x20 ? 8 : 0);
      if (q + 2 > n) return null;
      return [this.u16(q), q + 2];
    }
    if (et === 0x894f) {
      if (o + 8 > n) return null;
      const hl = (this.u8(o + 1) & 0x3f) * 4;
      const np = this.u8(o + 3);
      if (hl < 8) return null;
      const q = o + hl;
      if (np === 1) return [0x0800, q];
      if (np === 2) return [0x86dd, q];
      if (np === 5) return [0x8847, q];
      if (np === 4) return [0x894f, q];
      if (np === 3) return this.innerEth(n, q);
      return null;
    }
    if (et === 0x6558) return this.innerEth(n, o);
    if (et === 0x880b) return this.ppp(n, o);
    if (et === 0x88be || et === 0x22eb) {
      let hl = 8;
      if (et === 0x22eb) {
        if (o + 12 > n) return null;
        hl = 12 + (this.u8(o + 11) & 1 ? 8 : 0);
      }
      return this.innerEth(n, o + hl);
    }
    return undefined;
  }

  jumbo(n: number, pos: number): number {
    if (pos + 2 > n) return -1;
    let e = pos + (this.u8(pos + 1) + 1) * 8;
    if (e > n) e = n;
    for (let p = pos + 2; p < e; ) {
      if (this.u8(p) === 0) {
        p++;
        continue;
      }
      if (p + 2 > e) return -1;
      const l = this.u8(p + 1);
      if (this.u8(p) === 0xc2 && l === 4 && p + 6 <= e) return this.u32(p + 2);
      p += 2 + l;
    }
    return -1;
  }

  /** The network layer onwards from EtherType et at o: the flow's key, or null when no IP header is reached. */
  net(n: number, et: number, o: number, depth: number): FlowKey | null {
    while (et !== 0x0800 && et !== 0x86dd) {
      const s = this.shim(n, et, o);
      if (!s || depth >= MAX_DEPTH) return null;
      [et, o] = s;
      depth++;
    }
    const k: FlowKey = { ip: o, v: 0, tp: 0, l4: 0 };
    let cend: number;
    let o4: number;
    let proto: number;
    if (et === 0x0800) {
      if (o + 20 > n || this.u8(o) >> 4 !== 4) return null;
      k.v = 4;
      const hl = (this.u8(o) & 15) * 4;
      const tlen = this.u16(o + 2);
      proto = this.u8(o + 9);
      if (hl < 20) return k;
      if (tlen === 0) cend = n; // TSO: the capture is the length
      else if (tlen < hl) return k;
      else cend = o + tlen;
      o4 = o + hl;
      if (o4 > n || o4 > cend) return k;
      if (this.u16(o + 6) & 0x1fff) return k; // a later fragment: no ports
    } else {
      if (o + 40 > n || this.u8(o) >> 4 !== 6) return null;
      k.v = 6;
      const plen = this.u16(o + 4);
      let nh = this.u8(o + 6);
      if (plen === 0 && nh !== 59) {
        const j = nh === 0 ? this.jumbo(n, o + 40) : -1;
        cend = j >= 0 ? o + 40 + j : n;
      } else {
        cend = o + 40 + plen;
      }
      // Extension headers, as the decoder's v6chain: any damage or a later fragment leaves no ports.
      let pos = o + 40;
      for (let x = 0; ; ) {
        if (!(nh === 0 || nh === 43 || nh === 60 || nh === 139 || nh === 140 || nh === 253 || nh === 254 || nh === 51 || nh === 44)) break;
        if (++x > MAX_EXT || (nh === 0 && x > 1) || pos + 2 > cend || pos + 2 > n) return k;
        const hl = nh === 44 ? 8 : nh === 51 ? (this.u8(pos + 1) + 2) * 4 : (this.u8(pos + 1) + 1) * 8;
        const later = nh === 44 && pos + 8 <= n && pos + 8 <= cend && (this.u16(pos + 2) & 0xfff8) !== 0;
        if (pos + hl > cend || pos + hl > n) return k;
        nh = this.u8(pos);
        pos += hl;
        if (later) return k;
      }
      proto = nh;
      o4 = pos;
    }
    const stop = cend < n ? cend : n;
    if (depth < MAX_DEPTH && (proto === 4 || proto === 41 || proto === 47)) {
      let e2 = 0;
      let q = o4;
      let into = true;
      if (proto === 4) e2 = 0x0800;
      else if (proto === 41) e2 = 0x86dd;
      else if (o4 + 4 > stop) into = false;
      else {
        const fl = this.u16(o4);
        e2 = this.u16(o4 + 2);
        q = o4 + 4;
        if ((fl & 7) === 0) {
          if (fl & 0x4000) into = false; // routing present (RFC 1701): not followed
          if (fl & 0x8000) q += 4;
          if (fl & 0x2000) q += 4;
          if (fl & 0x1000) q += 4;
          if (e2 === 0x88be && !(fl & 0x1000)) e2 = 0x6558; // ERSPAN type I: no ERSPAN header
        } else if ((fl & 7) === 1) {
          q += 4;
          if (fl & 0x1000) q += 4;
          if (fl & 0x0080) q += 4;
        } else {
          into = false;
        }
        if (q > stop) into = false;
      }
      const inner = into ? this.net(stop, e2, q, depth + 1) : null;
      if (inner) return inner;
    }
    if (proto === 6) {
      if (o4 + 20 <= cend && o4 + 20 <= n) k.tp = 6;
    } else if (proto === 17) {
      if (o4 + 8 > cend || o4 + 8 > n) return k;
      k.tp = 17;
      const ulen = this.u16(o4 + 4);
      const ue = o4 + ulen;
      const dp = this.u16(o4 + 2);
      if (ulen >= 8 && ue <= cend && ue <= n && depth < MAX_DEPTH && (dp === 4789 || dp === 6081) && o4 + 16 <= ue) {
        const b = o4 + 8;
        const b0 = this.u8(b);
        const inner =
          dp === 4789
            ? b0 & 0x08
              ? this.net(ue, 0x6558, b + 8, depth + 1)
              : null
            : b0 >> 6 === 0
              ? this.net(ue, this.u16(b + 2), b + 8 + (b0 & 0x3f) * 4, depth + 1)
              : null;
        if (inner) return inner;
      }
    } else if (proto === 132 && o4 + 4 <= stop) {
      k.tp = 132;
    }
    k.l4 = o4;
    return k;
  }

  /** The link layer of link type lt: [EtherType (or one made up), network header's offset], or null. */
  link(n: number, lt: number): [number, number] | null {
    switch (lt) {
      case 1: {
        if (n < 14) return null;
        const r = this.vlans(n, this.u16(12), 14);
        if (!r || r[0] > 1500) return r;
        // 802.3 length: IP only behind LLC/SNAP with an EtherType OUI.
        const q = r[1];
        if (!(q + 8 <= n && this.u8(q) === 0xaa && this.u8(q + 1) === 0xaa && this.u8(q + 2) === 3 && this.u8(q + 3) === 0 && this.u8(q + 4) === 0 && (this.u8(q + 5) === 0 || this.u8(q + 5) === 0xf8))) return null;
        return [this.u16(q + 6), q + 8];
      }
      case 113:
        if (n < 16 || this.u16(2) === 824) return null; // 824: netlink
        return this.vlans(n, this.u16(14), 16);
      case 276:
        if (n < 20 || this.u16(8) === 824) return null;
        return this.vlans(n, this.u16(0), 20);
      case 0:
      case 108: {
        if (n < 4) return null;
        let fam = this.d.getUint32(this.base, true);
        if (fam > 0xffff) fam = this.u32(0);
        if (fam === 2) return [0x0800, 4];
        if (fam === 24 || fam === 28 || fam === 30 || fam === 10) return [0x86dd, 4];
        if (fam > 1500 && fam <= 0xffff) return [fam, 4]; // some old captures put an EtherType there
        return null;
      }
      case 101:
      case 12:
      case 14: {
        if (n < 1) return null;
        const v = this.u8(0) >> 4;
        return v === 4 ? [0x0800, 0] : v === 6 ? [0x86dd, 0] : null;
      }
      case 228:
        return [0x0800, 0];
      case 229:
        return [0x86dd, 0];
      case 9:
      case 50:
      case 166:
      case 204:
        return this.ppp(n, lt === 166 || lt === 204 ? 1 : 0);
      case 51:
        return [0x8864, 0];
      case 239: {
        // NFLOG: TLVs in the capturing host's byte order; type 9 holds the packet.
        if (n < 4) return null;
        const fam = this.u8(0);
        for (let q = 4; q + 4 <= n; ) {
          let len = this.d.getUint16(this.base + q, true);
          let ty = this.d.getUint16(this.base + q + 2, true);
          if (len < 4 || q + len > n + 3) (len = this.u16(q)), (ty = this.u16(q + 2));
          if (len < 4) return null;
          if ((ty & 0x7fff) === 9) {
            const o = q + 4;
            if (fam === 2) return [0x0800, o];
            if (fam === 10) return [0x86dd, o];
            const v = o < n ? this.u8(o) >> 4 : 0;
            return v === 4 ? [0x0800, o] : v === 6 ? [0x86dd, o] : null;
          }
          q += (len + 3) & ~3;
        }
        return null;
      }
      case 107: {
        // Frame Relay: Q.922 address, then RFC 2427 (03, NLPID) or Cisco's EtherType.
        if (n < 4) return null;
        let q = this.u8(1) & 1 ? 2 : 3;
        if (this.u8(q) === 3) {
          q++;
          if (q < n && this.u8(q) === 0) q++;
          if (q >= n) return null;
          const nl = this.u8(q);
          if (nl === 0xcc) return [0x0800, q + 1];
          if (nl === 0x8e) return [0x86dd, q + 1];
          if (nl === 0x80 && q + 6 <= n) return [this.u16(q + 4), q + 6];
          return null;
        }
        if (q + 2 > n) return null;
        return [this.u16(q), q + 2];
      }
      case 104:
        return n < 4 ? null : [this.u16(2), 4];
      case 242: // IP over InfiniBand
        return n < 44 ? null : [this.u16(40), 44];
      case 226: {
        // Solaris ipnet
        if (n < 24) return null;
        const fam = this.u8(1);
        return fam === 2 ? [0x0800, 24] : fam === 26 ? [0x86dd, 24] : null;
      }
    }
    return null;
  }
}

/** Hash one endpoint (address bytes + port); combined with + so direction does not matter. */
function endpoint(d: DataView, addr: number, len: number, port: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ d.getUint8(addr + i), 0x01000193);
  h = Math.imul(h ^ port, 0x01000193);
  return h >>> 0;
}

/**
 * A worker from a flow's hash. FNV's xor-and-multiply carries only upwards:
 * its low k bits depend on the low k bits of each byte alone, so taken
 * modulo 2 or 4 it put every connection between two hosts on one worker
 * (Linux's connect() picks even ports). Murmur3's finalizer mixes the high
 * bits down first.
 */
function workerOf(h: number, n: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % n;
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
  const lt = d.getUint32(o + 20, true);
  let len = d.getUint32(o + 12, true);
  if (lt & 0x04000000) len = Math.max(0, len - (lt >>> 28) * 2); // the FCS at the end is not the packet's
  const w = new Walk(d, o + HDR);
  const l = w.link(len, lt & 0xffff);
  const k = l && w.net(len, l[0], l[1], 0);
  if (!k) return 0;
  const alen = k.v === 4 ? 4 : 16;
  const src = o + HDR + k.ip + (k.v === 4 ? 12 : 8);
  const ports = k.tp !== 0;
  const sp = ports ? w.u16(k.l4) : 0;
  const dp = ports ? w.u16(k.l4 + 2) : 0;
  const a = endpoint(d, src, alen, sp);
  const b = endpoint(d, src + alen, alen, dp);
  if (k.tp === 6 || k.tp === 17) lastPorts = sp * 65536 + dp;
  if (ports && byService && sp !== dp) return workerOf(sp < dp ? a : b, n);
  return workerOf((a + b) >>> 0, n);
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
