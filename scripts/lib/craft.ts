// Packet crafting for fixtures and benchmark captures. Everything here builds
// exact wire bytes (checksums included) so the files it writes can be checked
// against tcpdump/tshark. TcpFlow builds each frame in a single allocation and
// the writers batch output into large write(2)s, because the benchmark
// generator needs about a million packets in a few seconds.

import { closeSync, openSync, writeSync } from 'node:fs';

export type Addr = string | Uint8Array;

export const ETHERTYPE = { IPV4: 0x0800, ARP: 0x0806, VLAN: 0x8100, IPV6: 0x86dd } as const;
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;
export const LINKTYPE = { ETHERNET: 1, RAW: 101, LINUX_SLL: 113 } as const;
export const TCP_FLAGS = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

// ---------------------------------------------------------------- addresses

export function mac(a: Addr): Uint8Array {
  if (typeof a !== 'string') return a;
  const parts = a.split(/[:-]/);
  if (parts.length !== 6) throw new Error(`bad MAC address: ${a}`);
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

export function ipv4Addr(a: Addr): Uint8Array {
  if (typeof a !== 'string') return a;
  const parts = a.split('.');
  if (parts.length !== 4) throw new Error(`bad IPv4 address: ${a}`);
  return Uint8Array.from(parts.map((p) => Number(p)));
}

export function ipv6Addr(a: Addr): Uint8Array {
  if (typeof a !== 'string') return a;
  const out = new Uint8Array(16);
  let s = a;
  // A dotted-quad tail (::ffff:1.2.3.4) takes the last two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let tail: number[] = [];
  if (v4) {
    const b = ipv4Addr(v4[1]);
    tail = [(b[0] << 8) | b[1], (b[2] << 8) | b[3]];
    s = s.slice(0, -v4[1].length);
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1);
  }
  const [head, rest] = s.includes('::') ? s.split('::') : [s, undefined];
  const hs = head ? head.split(':').filter((x) => x !== '').map((x) => parseInt(x, 16)) : [];
  const rs = rest ? rest.split(':').filter((x) => x !== '').map((x) => parseInt(x, 16)) : [];
  const groups = rest === undefined ? [...hs, ...tail] : [...hs, ...new Array(8 - hs.length - rs.length - tail.length).fill(0), ...rs, ...tail];
  if (groups.length !== 8) throw new Error(`bad IPv6 address: ${a}`);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** IPv4 or IPv6 by its spelling (or by byte length). */
export function ipAddr(a: Addr): Uint8Array {
  if (typeof a !== 'string') return a;
  return a.includes(':') ? ipv6Addr(a) : ipv4Addr(a);
}

// ---------------------------------------------------------------- checksums

/**
 * Adds big-endian 16-bit words of b[start, end) to a running ones'-complement
 * sum (unfolded). Pieces must start at even offsets of the checksummed data.
 */
export function checksumAdd(b: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  const last = end - 1;
  // Summing in two lanes keeps each add a small-integer op; the lanes never
  // get near 2^53 for any packet size.
  let s0 = 0;
  let s1 = 0;
  for (; i < last - 2; i += 4) {
    s0 += (b[i] << 8) | b[i + 1];
    s1 += (b[i + 2] << 8) | b[i + 3];
  }
  for (; i < last; i += 2) s0 += (b[i] << 8) | b[i + 1];
  if (i < end) s0 += b[i] << 8;
  return sum + s0 + s1;
}

/** Folds a running sum to 16 bits and complements it. */
export function checksumFinish(sum: number): number {
  while (sum > 0xffff) sum = (sum % 65536) + Math.floor(sum / 65536);
  return ~sum & 0xffff;
}

export function internetChecksum(b: Uint8Array, start = 0, end = b.length): number {
  return checksumFinish(checksumAdd(b, start, end));
}

/** Sum of the TCP/UDP pseudo-header for IPv4 (4-byte) or IPv6 (16-byte) addresses. */
export function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  let s = checksumAdd(src, 0, src.length) + checksumAdd(dst, 0, dst.length);
  if (src.length === 16) s += Math.floor(len / 65536) + (len & 0xffff) + proto;
  else s += proto + len;
  return s;
}

// ---------------------------------------------------------------- link layers

export interface VlanTag {
  id: number;
  pcp?: number;
  dei?: boolean;
  /** 0x8100 unless you want 802.1ad (0x88a8). */
  tpid?: number;
}

export interface EthernetOpts {
  dst: Addr;
  src: Addr;
  type: number;
  vlan?: number | VlanTag;
  /** Pad the frame with zeros to this many bytes (60 = minimum frame without FCS). */
  padTo?: number;
}

const vlanTci = (v: number | VlanTag): [number, number] => {
  if (typeof v === 'number') return [ETHERTYPE.VLAN, v & 0xfff];
  return [v.tpid ?? ETHERTYPE.VLAN, ((v.pcp ?? 0) << 13) | (v.dei ? 0x1000 : 0) | (v.id & 0xfff)];
};

export const ethernetHeaderLength = (vlan?: number | VlanTag): number => (vlan === undefined ? 14 : 18);

/** Writes an Ethernet II header (with an optional 802.1Q tag); returns the offset after it. */
export function writeEthernet(
  buf: Uint8Array,
  off: number,
  dst: Uint8Array,
  src: Uint8Array,
  type: number,
  vlan?: number | VlanTag,
): number {
  buf.set(dst, off);
  buf.set(src, off + 6);
  off += 12;
  if (vlan !== undefined) {
    const [tpid, tci] = vlanTci(vlan);
    buf[off] = tpid >> 8;
    buf[off + 1] = tpid;
    buf[off + 2] = tci >> 8;
    buf[off + 3] = tci;
    off += 4;
  }
  buf[off] = type >> 8;
  buf[off + 1] = type;
  return off + 2;
}

export function ethernet(o: EthernetOpts, payload: Uint8Array): Buffer {
  const h = ethernetHeaderLength(o.vlan);
  const out = Buffer.alloc(Math.max(h + payload.length, o.padTo ?? 0));
  writeEthernet(out, 0, mac(o.dst), mac(o.src), o.type, o.vlan);
  out.set(payload, h);
  return out;
}

/** Linux "cooked" capture header (LINKTYPE_LINUX_SLL, 16 bytes). */
export function sll(
  o: { packetType?: number; arphrd?: number; addr?: Addr; protocol: number },
  payload: Uint8Array,
): Buffer {
  const out = Buffer.alloc(16 + payload.length);
  out.writeUInt16BE(o.packetType ?? 0, 0); // 0 = to us, 4 = sent by us
  out.writeUInt16BE(o.arphrd ?? 1, 2);
  const a = o.addr === undefined ? new Uint8Array(0) : mac(o.addr);
  out.writeUInt16BE(a.length, 4);
  out.set(a.subarray(0, 8), 6);
  out.writeUInt16BE(o.protocol, 14);
  out.set(payload, 16);
  return out;
}

// ---------------------------------------------------------------- IP

export interface IPv4Opts {
  src: Addr;
  dst: Addr;
  proto: number;
  id?: number;
  ttl?: number;
  tos?: number;
  /** Don't Fragment; set by default like a modern stack. */
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in bytes (a multiple of 8). */
  fragOffset?: number;
  /** Raw IP options, padded to 4 bytes by the caller. */
  options?: Uint8Array;
}

/** Writes an IPv4 header with its checksum; returns the offset after it. */
export function writeIPv4Header(
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
  payloadLen: number,
  id = 0,
  ttl = 64,
  tos = 0,
  flagsFrag = 0x4000,
  options?: Uint8Array,
): number {
  const hl = 20 + (options ? options.length : 0);
  const total = hl + payloadLen;
  buf[off] = 0x40 | (hl >> 2);
  buf[off + 1] = tos;
  buf[off + 2] = total >> 8;
  buf[off + 3] = total;
  buf[off + 4] = id >> 8;
  buf[off + 5] = id;
  buf[off + 6] = flagsFrag >> 8;
  buf[off + 7] = flagsFrag;
  buf[off + 8] = ttl;
  buf[off + 9] = proto;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  buf.set(src, off + 12);
  buf.set(dst, off + 16);
  if (options) buf.set(options, off + 20);
  const c = internetChecksum(buf, off, off + hl);
  buf[off + 10] = c >> 8;
  buf[off + 11] = c;
  return off + hl;
}

export function ipv4(o: IPv4Opts, payload: Uint8Array): Buffer {
  const hl = 20 + (o.options?.length ?? 0);
  const out = Buffer.allocUnsafe(hl + payload.length);
  const ff = ((o.df ?? true) ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | (((o.fragOffset ?? 0) >> 3) & 0x1fff);
  writeIPv4Header(out, 0, ipv4Addr(o.src), ipv4Addr(o.dst), o.proto, payload.length, o.id ?? 0, o.ttl ?? 64, o.tos ?? 0, ff, o.options);
  out.set(payload, hl);
  return out;
}

export interface IPv6Opts {
  src: Addr;
  dst: Addr;
  nextHeader: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

export function writeIPv6Header(
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
  nextHeader: number,
  payloadLen: number,
  hopLimit = 64,
  trafficClass = 0,
  flowLabel = 0,
): number {
  buf[off] = 0x60 | (trafficClass >> 4);
  buf[off + 1] = ((trafficClass & 0xf) << 4) | ((flowLabel >> 16) & 0xf);
  buf[off + 2] = flowLabel >> 8;
  buf[off + 3] = flowLabel;
  buf[off + 4] = payloadLen >> 8;
  buf[off + 5] = payloadLen;
  buf[off + 6] = nextHeader;
  buf[off + 7] = hopLimit;
  buf.set(src, off + 8);
  buf.set(dst, off + 24);
  return off + 40;
}

export function ipv6(o: IPv6Opts, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(40 + payload.length);
  writeIPv6Header(out, 0, ipv6Addr(o.src), ipv6Addr(o.dst), o.nextHeader, payload.length, o.hopLimit, o.trafficClass, o.flowLabel);
  out.set(payload, 40);
  return out;
}

// ---------------------------------------------------------------- TCP / UDP / ICMP

export interface TcpOptions {
  mss?: number;
  sackPermitted?: boolean;
  timestamps?: { val: number; ecr: number };
  wscale?: number;
  sack?: Array<[number, number]>;
}

/** Encodes TCP options in the order Linux uses, NOP-padded to 4 bytes. */
export function tcpOptions(o: TcpOptions): Uint8Array {
  const b: number[] = [];
  const u32 = (v: number) => b.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  if (o.mss !== undefined) b.push(2, 4, (o.mss >> 8) & 0xff, o.mss & 0xff);
  if (o.sackPermitted && o.timestamps) b.push(4, 2);
  else if (o.sackPermitted) b.push(1, 1, 4, 2);
  if (o.timestamps) {
    if (!o.sackPermitted) b.push(1, 1);
    b.push(8, 10);
    u32(o.timestamps.val);
    u32(o.timestamps.ecr);
  }
  if (o.sack && o.sack.length) {
    b.push(1, 1, 5, 2 + 8 * o.sack.length);
    for (const [l, r] of o.sack) {
      u32(l);
      u32(r);
    }
  }
  if (o.wscale !== undefined) b.push(1, 3, 3, o.wscale);
  while (b.length % 4) b.push(1);
  if (b.length > 40) throw new Error('TCP options exceed 40 bytes');
  return Uint8Array.from(b);
}

/**
 * Writes a TCP header, options and payload with a correct checksum over the
 * pseudo-header of src/dst (4 or 16 bytes each); returns the end offset.
 */
export function writeTcp(
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
  sport: number,
  dport: number,
  seq: number,
  ack: number,
  flags: number,
  window: number,
  options: Uint8Array | undefined,
  payload: Uint8Array | undefined,
  urgent = 0,
): number {
  const ol = options ? options.length : 0;
  const hl = 20 + ol;
  const pl = payload ? payload.length : 0;
  buf[off] = sport >> 8;
  buf[off + 1] = sport;
  buf[off + 2] = dport >> 8;
  buf[off + 3] = dport;
  buf[off + 4] = seq >>> 24;
  buf[off + 5] = seq >>> 16;
  buf[off + 6] = seq >>> 8;
  buf[off + 7] = seq;
  buf[off + 8] = ack >>> 24;
  buf[off + 9] = ack >>> 16;
  buf[off + 10] = ack >>> 8;
  buf[off + 11] = ack;
  buf[off + 12] = (hl >> 2) << 4;
  buf[off + 13] = flags;
  buf[off + 14] = window >> 8;
  buf[off + 15] = window;
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf[off + 18] = urgent >> 8;
  buf[off + 19] = urgent;
  if (options) buf.set(options, off + 20);
  if (payload) buf.set(payload, off + hl);
  const end = off + hl + pl;
  const c = checksumFinish(checksumAdd(buf, off, end, pseudoHeaderSum(src, dst, IPPROTO.TCP, hl + pl)));
  buf[off + 16] = c >> 8;
  buf[off + 17] = c;
  return end;
}

export interface TcpOpts extends TcpOptions {
  /** Addresses for the pseudo-header checksum. */
  src: Addr;
  dst: Addr;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  urgent?: number;
}

export function tcp(o: TcpOpts, payload?: Uint8Array): Buffer {
  const opts = tcpOptions(o);
  const out = Buffer.allocUnsafe(20 + opts.length + (payload?.length ?? 0));
  writeTcp(out, 0, ipAddr(o.src), ipAddr(o.dst), o.sport, o.dport, o.seq >>> 0, (o.ack ?? 0) >>> 0, o.flags, o.window ?? 65535, opts.length ? opts : undefined, payload, o.urgent);
  return out;
}

export function udp(o: { src: Addr; dst: Addr; sport: number; dport: number }, payload: Uint8Array): Buffer {
  const len = 8 + payload.length;
  const out = Buffer.allocUnsafe(len);
  out.writeUInt16BE(o.sport, 0);
  out.writeUInt16BE(o.dport, 2);
  out.writeUInt16BE(len, 4);
  out.writeUInt16BE(0, 6);
  out.set(payload, 8);
  let c = checksumFinish(checksumAdd(out, 0, len, pseudoHeaderSum(ipAddr(o.src), ipAddr(o.dst), IPPROTO.UDP, len)));
  if (c === 0) c = 0xffff; // 0 means "no checksum" in UDP
  out.writeUInt16BE(c, 6);
  return out;
}

export function icmpEcho(o: { reply?: boolean; id: number; seq: number }, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(8 + payload.length);
  out[0] = o.reply ? 0 : 8;
  out.writeUInt16BE(o.id, 4);
  out.writeUInt16BE(o.seq, 6);
  out.set(payload, 8);
  out.writeUInt16BE(internetChecksum(out), 2);
  return out;
}

export function icmp6Echo(
  o: { src: Addr; dst: Addr; reply?: boolean; id: number; seq: number },
  payload: Uint8Array = new Uint8Array(0),
): Buffer {
  const out = Buffer.alloc(8 + payload.length);
  out[0] = o.reply ? 129 : 128;
  out.writeUInt16BE(o.id, 4);
  out.writeUInt16BE(o.seq, 6);
  out.set(payload, 8);
  const s = pseudoHeaderSum(ipv6Addr(o.src), ipv6Addr(o.dst), IPPROTO.ICMPV6, out.length);
  out.writeUInt16BE(checksumFinish(checksumAdd(out, 0, out.length, s)), 2);
  return out;
}

export function arp(o: {
  op: 'request' | 'reply' | number;
  senderMac: Addr;
  senderIp: Addr;
  targetMac?: Addr;
  targetIp: Addr;
}): Buffer {
  const out = Buffer.alloc(28);
  out.writeUInt16BE(1, 0); // Ethernet
  out.writeUInt16BE(ETHERTYPE.IPV4, 2);
  out[4] = 6;
  out[5] = 4;
  out.writeUInt16BE(o.op === 'request' ? 1 : o.op === 'reply' ? 2 : o.op, 6);
  out.set(mac(o.senderMac), 8);
  out.set(ipv4Addr(o.senderIp), 14);
  out.set(o.targetMac === undefined ? new Uint8Array(6) : mac(o.targetMac), 18);
  out.set(ipv4Addr(o.targetIp), 24);
  return out;
}

// ---------------------------------------------------------------- DNS

export const DNS_TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28 } as const;
export type DnsType = keyof typeof DNS_TYPE | number;

export interface DnsQuestion {
  name: string;
  type: DnsType;
  class?: number;
}

export interface DnsRecord {
  name: string;
  type: DnsType;
  ttl?: number;
  class?: number;
  /** A/AAAA: an address; CNAME/NS/PTR: a name (compressed); otherwise raw rdata. */
  data: string | Uint8Array;
}

export interface DnsMessageOpts {
  id: number;
  response?: boolean;
  opcode?: number;
  aa?: boolean;
  tc?: boolean;
  rd?: boolean;
  ra?: boolean;
  rcode?: number;
  questions?: DnsQuestion[];
  answers?: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
}

const dnsType = (t: DnsType): number => (typeof t === 'number' ? t : DNS_TYPE[t]);

/** A DNS message with RFC 1035 name compression (names and CNAME-like rdata). */
export function dns(o: DnsMessageOpts): Buffer {
  const b: number[] = [];
  const seen = new Map<string, number>();
  const u16 = (v: number) => b.push((v >> 8) & 0xff, v & 0xff);
  const u32 = (v: number) => b.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  const name = (n: string) => {
    const labels = n.replace(/\.$/, '').split('.').filter((l) => l.length);
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase();
      const at = seen.get(suffix);
      if (at !== undefined) {
        u16(0xc000 | at);
        return;
      }
      if (b.length < 0x3fff) seen.set(suffix, b.length);
      const l = Buffer.from(labels[i], 'latin1');
      if (l.length > 63) throw new Error(`DNS label too long: ${labels[i]}`);
      b.push(l.length, ...l);
    }
    b.push(0);
  };
  const rr = (r: DnsRecord) => {
    const t = dnsType(r.type);
    name(r.name);
    u16(t);
    u16(r.class ?? 1);
    u32(r.ttl ?? 300);
    const lenAt = b.length;
    u16(0);
    if (typeof r.data !== 'string') b.push(...r.data);
    else if (t === DNS_TYPE.A) b.push(...ipv4Addr(r.data));
    else if (t === DNS_TYPE.AAAA) b.push(...ipv6Addr(r.data));
    else if (t === DNS_TYPE.CNAME || t === DNS_TYPE.NS || t === DNS_TYPE.PTR) name(r.data);
    else b.push(...Buffer.from(r.data, 'latin1'));
    const len = b.length - lenAt - 2;
    b[lenAt] = len >> 8;
    b[lenAt + 1] = len & 0xff;
  };
  const qs = o.questions ?? [];
  const an = o.answers ?? [];
  const ns = o.authorities ?? [];
  const ar = o.additionals ?? [];
  u16(o.id);
  u16(
    (o.response ? 0x8000 : 0) |
      ((o.opcode ?? 0) << 11) |
      (o.aa ? 0x400 : 0) |
      (o.tc ? 0x200 : 0) |
      ((o.rd ?? true) ? 0x100 : 0) |
      (o.ra ? 0x80 : 0) |
      (o.rcode ?? 0),
  );
  u16(qs.length);
  u16(an.length);
  u16(ns.length);
  u16(ar.length);
  for (const q of qs) {
    name(q.name);
    u16(dnsType(q.type));
    u16(q.class ?? 1);
  }
  an.forEach(rr);
  ns.forEach(rr);
  ar.forEach(rr);
  return Buffer.from(b);
}

// ---------------------------------------------------------------- randomness

/** sfc32: fast, seedable, good enough for traffic that must merely look varied. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d = 1;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }

  u32(): number {
    let t = (this.a + this.b) | 0;
    this.d = (this.d + 1) | 0;
    t = (t + this.d) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(a: readonly T[]): T {
    return a[Math.floor(this.next() * a.length)];
  }

  fill(b: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= b.length; i += 4) {
      const v = this.u32();
      b[i] = v;
      b[i + 1] = v >>> 8;
      b[i + 2] = v >>> 16;
      b[i + 3] = v >>> 24;
    }
    for (; i < b.length; i++) b[i] = this.u32();
    return b;
  }
}

// ---------------------------------------------------------------- file output

/** Collects small writes into a big chunk so the kernel sees few, large write(2)s. */
class ChunkedFile {
  private fd: number;
  buf: Buffer;
  pos = 0;
  written = 0;

  constructor(path: string, chunkSize: number) {
    this.fd = openSync(path, 'w');
    this.buf = Buffer.allocUnsafe(chunkSize);
  }

  /** Makes room for n bytes and returns where they go in `buf`. */
  reserve(n: number): number {
    if (this.pos + n > this.buf.length) {
      this.flush();
      if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    }
    const at = this.pos;
    this.pos += n;
    this.written += n;
    return at;
  }

  flush(): void {
    let o = 0;
    while (o < this.pos) o += writeSync(this.fd, this.buf, o, this.pos - o);
    this.pos = 0;
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}

export interface PcapWriterOptions {
  linktype?: number;
  snaplen?: number;
  /** Nanosecond timestamps (magic a1b23c4d) instead of microseconds. */
  nanos?: boolean;
  bigEndian?: boolean;
  chunkSize?: number;
}

/** Classic libpcap file writer, streaming. */
export class PcapFileWriter {
  private out: ChunkedFile;
  readonly snaplen: number;
  readonly nanos: boolean;
  readonly bigEndian: boolean;
  packets = 0;

  constructor(path: string, o: PcapWriterOptions = {}) {
    this.out = new ChunkedFile(path, o.chunkSize ?? 8 << 20);
    this.snaplen = o.snaplen ?? 262144;
    this.nanos = o.nanos ?? false;
    this.bigEndian = o.bigEndian ?? false;
    const at = this.out.reserve(24);
    const b = this.out.buf;
    this.u32(b, at, this.nanos ? 0xa1b23c4d : 0xa1b2c3d4);
    this.u16(b, at + 4, 2);
    this.u16(b, at + 6, 4);
    this.u32(b, at + 8, 0); // thiszone
    this.u32(b, at + 12, 0); // sigfigs
    this.u32(b, at + 16, this.snaplen);
    this.u32(b, at + 20, o.linktype ?? LINKTYPE.ETHERNET);
  }

  private u32(b: Buffer, at: number, v: number): void {
    if (this.bigEndian) b.writeUInt32BE(v >>> 0, at);
    else b.writeUInt32LE(v >>> 0, at);
  }

  private u16(b: Buffer, at: number, v: number): void {
    if (this.bigEndian) b.writeUInt16BE(v, at);
    else b.writeUInt16LE(v, at);
  }

  /** `frac` is microseconds or nanoseconds, per the file's resolution. Data beyond snaplen is cut. */
  write(sec: number, frac: number, data: Uint8Array, wirelen = data.length): void {
    const caplen = Math.min(data.length, this.snaplen);
    const at = this.out.reserve(16 + caplen);
    const b = this.out.buf;
    this.u32(b, at, sec);
    this.u32(b, at + 4, frac);
    this.u32(b, at + 8, caplen);
    this.u32(b, at + 12, wirelen);
    b.set(caplen === data.length ? data : data.subarray(0, caplen), at + 16);
    this.packets++;
  }

  /** Bytes written so far, header included. */
  get bytes(): number {
    return this.out.written;
  }

  close(): void {
    this.out.close();
  }
}

/** A writer's frames one after another, `stepUs` apart from 1_700_000_000 s on: crafted captures whose times do not matter. */
export function framesInTurn(w: PcapFileWriter, stepUs = 1000): (frame: Buffer) => void {
  let us = 1_700_000_000 * 1e6;
  return (frame) => {
    w.write(Math.floor(us / 1e6), us % 1e6, frame);
    us += stepUs;
  };
}

// ---------------------------------------------------------------- pcapng

export interface PcapngOption {
  code: number;
  value: Uint8Array | string;
}

export const PCAPNG = {
  SHB: 0x0a0d0d0a,
  IDB: 0x00000001,
  PB: 0x00000002,
  SPB: 0x00000003,
  EPB: 0x00000006,
  OPT_COMMENT: 1,
  IF_NAME: 2,
  IF_TSRESOL: 9,
  IF_TSOFFSET: 14,
  SHB_USERAPPL: 4,
  EPB_FLAGS: 2,
} as const;

/** Raw-timestamp units per second for an if_tsresol byte (10^-n, or 2^-n when the top bit is set). */
export function tsUnitsPerSecond(tsresol: number): bigint {
  return tsresol & 0x80 ? 1n << BigInt(tsresol & 0x7f) : 10n ** BigInt(tsresol);
}

/** Absolute time to a raw pcapng timestamp (fractions truncated to the interface resolution). */
export function pcapngRawTimestamp(sec: number, nsec: number, tsresol = 6, tsoffset = 0): bigint {
  const u = tsUnitsPerSecond(tsresol);
  return BigInt(sec - tsoffset) * u + (BigInt(nsec) * u) / 1_000_000_000n;
}

/** What a reader should report for a raw timestamp: integer math, nanoseconds truncated. */
export function pcapngTimestampToSecNsec(raw: bigint, tsresol = 6, tsoffset = 0): { sec: number; nsec: number } {
  const u = tsUnitsPerSecond(tsresol);
  return { sec: Number(raw / u) + tsoffset, nsec: Number(((raw % u) * 1_000_000_000n) / u) };
}

export interface PcapngInterface {
  linktype: number;
  snaplen?: number;
  tsresol?: number;
  tsoffset?: number;
  name?: string;
  options?: PcapngOption[];
}

const pad4 = (n: number): number => (n + 3) & ~3;

/**
 * Minimal pcapng writer: sections, interfaces, EPB/SPB/obsolete PB and any
 * other block verbatim. Each section may have its own byte order.
 */
export class PcapngWriter {
  private out: ChunkedFile;
  private le = true;
  private ifaces: Required<Pick<PcapngInterface, 'linktype' | 'snaplen' | 'tsresol' | 'tsoffset'>>[] = [];
  packets = 0;

  constructor(path: string, o: { chunkSize?: number } = {}) {
    this.out = new ChunkedFile(path, o.chunkSize ?? 8 << 20);
  }

  private u16(at: number, v: number): void {
    if (this.le) this.out.buf.writeUInt16LE(v & 0xffff, at);
    else this.out.buf.writeUInt16BE(v & 0xffff, at);
  }

  private u32(at: number, v: number): void {
    if (this.le) this.out.buf.writeUInt32LE(v >>> 0, at);
    else this.out.buf.writeUInt32BE(v >>> 0, at);
  }

  private i64(at: number, v: bigint): void {
    if (this.le) this.out.buf.writeBigInt64LE(v, at);
    else this.out.buf.writeBigInt64BE(v, at);
  }

  private encodeOptions(opts: PcapngOption[]): Buffer[] {
    if (!opts.length) return [];
    const parts: Buffer[] = [];
    for (const o of opts) {
      const v = typeof o.value === 'string' ? Buffer.from(o.value, 'utf8') : o.value;
      const p = Buffer.alloc(4 + pad4(v.length));
      if (this.le) {
        p.writeUInt16LE(o.code, 0);
        p.writeUInt16LE(v.length, 2);
      } else {
        p.writeUInt16BE(o.code, 0);
        p.writeUInt16BE(v.length, 2);
      }
      p.set(v, 4);
      parts.push(p);
    }
    parts.push(Buffer.alloc(4)); // opt_endofopt
    return parts;
  }

  /**
   * Writes a block: `fixed` is the body before the options (already in the
   * section's byte order), `data` is padded to 4 bytes after it.
   */
  private block(type: number, fixed: Uint8Array, data?: Uint8Array, options: PcapngOption[] = []): void {
    const opts = this.encodeOptions(options);
    const olen = opts.reduce((n, p) => n + p.length, 0);
    const dlen = data ? pad4(data.length) : 0;
    const total = 12 + fixed.length + dlen + olen;
    const at = this.out.reserve(total);
    const b = this.out.buf;
    this.u32(at, type);
    this.u32(at + 4, total);
    b.set(fixed, at + 8);
    let o = at + 8 + fixed.length;
    if (data) {
      b.set(data, o);
      b.fill(0, o + data.length, o + dlen);
      o += dlen;
    }
    for (const p of opts) {
      b.set(p, o);
      o += p.length;
    }
    this.u32(o, total);
  }

  private fixed(n: number, fill: (f: Buffer, le: boolean) => void): Buffer {
    const f = Buffer.alloc(n);
    fill(f, this.le);
    return f;
  }

  /** Starts a section (resets interface numbering, as the format does). */
  section(o: { bigEndian?: boolean; options?: PcapngOption[] } = {}): void {
    this.le = !o.bigEndian;
    this.ifaces = [];
    const f = this.fixed(16, (f, le) => {
      if (le) {
        f.writeUInt32LE(0x1a2b3c4d, 0);
        f.writeUInt16LE(1, 4);
        f.writeUInt16LE(0, 6);
        f.writeBigInt64LE(-1n, 8);
      } else {
        f.writeUInt32BE(0x1a2b3c4d, 0);
        f.writeUInt16BE(1, 4);
        f.writeUInt16BE(0, 6);
        f.writeBigInt64BE(-1n, 8);
      }
    });
    this.block(PCAPNG.SHB, f, undefined, o.options ?? []);
  }

  /** Adds an interface to the current section; returns its section-local id. */
  addInterface(i: PcapngInterface): number {
    const opts: PcapngOption[] = [];
    if (i.name !== undefined) opts.push({ code: PCAPNG.IF_NAME, value: i.name });
    if (i.tsresol !== undefined) opts.push({ code: PCAPNG.IF_TSRESOL, value: Uint8Array.of(i.tsresol) });
    if (i.tsoffset !== undefined) {
      const v = Buffer.alloc(8);
      if (this.le) v.writeBigInt64LE(BigInt(i.tsoffset));
      else v.writeBigInt64BE(BigInt(i.tsoffset));
      opts.push({ code: PCAPNG.IF_TSOFFSET, value: v });
    }
    opts.push(...(i.options ?? []));
    const snaplen = i.snaplen ?? 262144;
    const f = this.fixed(8, (f, le) => {
      if (le) {
        f.writeUInt16LE(i.linktype, 0);
        f.writeUInt32LE(snaplen, 4);
      } else {
        f.writeUInt16BE(i.linktype, 0);
        f.writeUInt32BE(snaplen, 4);
      }
    });
    this.block(PCAPNG.IDB, f, undefined, opts);
    this.ifaces.push({ linktype: i.linktype, snaplen, tsresol: i.tsresol ?? 6, tsoffset: i.tsoffset ?? 0 });
    return this.ifaces.length - 1;
  }

  /** The raw timestamp an interface of this section would store for an absolute time. */
  rawTimestamp(iface: number, sec: number, nsec: number): bigint {
    const i = this.ifaces[iface];
    return pcapngRawTimestamp(sec, nsec, i.tsresol, i.tsoffset);
  }

  /** Enhanced Packet Block with a raw timestamp in the interface's units. */
  epb(iface: number, ts: bigint, data: Uint8Array, wirelen = data.length, options: PcapngOption[] = []): void {
    const f = Buffer.alloc(20);
    const hi = Number(ts >> 32n);
    const lo = Number(ts & 0xffffffffn);
    const w = this.le ? 'writeUInt32LE' : 'writeUInt32BE';
    f[w](iface, 0);
    f[w](hi, 4);
    f[w](lo, 8);
    f[w](data.length, 12);
    f[w](wirelen, 16);
    this.block(PCAPNG.EPB, f, data, options);
    this.packets++;
  }

  /** EPB stamped with an absolute time, converted to the interface's resolution. */
  epbAt(iface: number, sec: number, nsec: number, data: Uint8Array, wirelen = data.length, options: PcapngOption[] = []): void {
    this.epb(iface, this.rawTimestamp(iface, sec, nsec), data, wirelen, options);
  }

  /** Simple Packet Block: interface 0, no timestamp; the captured length is implied by the block length. */
  spb(data: Uint8Array, wirelen = data.length): void {
    const f = Buffer.alloc(4);
    if (this.le) f.writeUInt32LE(wirelen);
    else f.writeUInt32BE(wirelen);
    this.block(PCAPNG.SPB, f, data);
    this.packets++;
  }

  /** The obsolete Packet Block (type 2), which some old writers still emit. */
  obsoletePacket(iface: number, ts: bigint, data: Uint8Array, wirelen = data.length, drops = 0, options: PcapngOption[] = []): void {
    const f = Buffer.alloc(20);
    const w32 = this.le ? 'writeUInt32LE' : 'writeUInt32BE';
    const w16 = this.le ? 'writeUInt16LE' : 'writeUInt16BE';
    f[w16](iface, 0);
    f[w16](drops, 2);
    f[w32](Number(ts >> 32n), 4);
    f[w32](Number(ts & 0xffffffffn), 8);
    f[w32](data.length, 12);
    f[w32](wirelen, 16);
    this.block(PCAPNG.PB, f, data, options);
    this.packets++;
  }

  /** Any block, body verbatim (padded to 4 bytes) — for types a reader must skip. */
  rawBlock(type: number, body: Uint8Array): void {
    this.block(type, new Uint8Array(0), body);
  }

  close(): void {
    this.out.close();
  }
}

// ---------------------------------------------------------------- TCP flows

export type Side = 'client' | 'server';

export interface TcpEndpoint {
  mac: Addr;
  ip: Addr;
  port: number;
  /** Initial sequence number. */
  isn: number;
  /** Receive window in bytes. */
  window?: number;
  /** Window scale shift advertised on SYN; undefined to leave the option out. */
  wscale?: number;
  /** MSS advertised on SYN. */
  mss?: number;
  ttl?: number;
  /** First IPv4 id this side uses; incremented per packet. */
  ipId?: number;
}

export interface TcpFlowOpts {
  client: TcpEndpoint;
  server: TcpEndpoint;
  vlan?: number | VlanTag;
  /** Add TCP timestamps (RFC 7323) to every segment; data segments shrink by 12 bytes. */
  timestamps?: boolean;
  sackPermitted?: boolean;
  /** Delay suggested between packets in the same direction. */
  gapUs?: number;
  /** Round trip; half of it is suggested when the direction changes. */
  rttUs?: number;
}

export interface CraftedPacket {
  from: Side;
  frame: Buffer;
  /** Suggested time since the previous packet of the flow. */
  delayUs: number;
}

interface Peer {
  mac: Uint8Array;
  ip: Uint8Array;
  port: number;
  seq: number;
  window: number;
  wscale: number | undefined;
  mss: number;
  ttl: number;
  ipId: number;
  lastTsVal: number;
  tsBase: number;
}

const peer = (e: TcpEndpoint): Peer => ({
  mac: mac(e.mac),
  ip: ipAddr(e.ip),
  port: e.port,
  seq: e.isn >>> 0,
  window: e.window ?? 64240,
  wscale: e.wscale,
  mss: e.mss ?? 1460,
  ttl: e.ttl ?? 64,
  ipId: e.ipId ?? 0,
  lastTsVal: 0,
  tsBase: (e.isn * 2654435761) >>> 0,
});

/**
 * One TCP connection's packets, built in order so every seq/ack is what a
 * real stack would send with no loss or reordering.
 */
export class TcpFlow {
  readonly c: Peer;
  readonly s: Peer;
  private vlan: number | VlanTag | undefined;
  private ts: boolean;
  private sackOk: boolean;
  private gap: number;
  private rtt: number;
  private last: Side | undefined;
  private clockUs = 0;

  constructor(o: TcpFlowOpts) {
    this.c = peer(o.client);
    this.s = peer(o.server);
    if (this.c.ip.length !== this.s.ip.length) throw new Error('client and server must both be IPv4 or IPv6');
    this.vlan = o.vlan;
    this.ts = o.timestamps ?? false;
    this.sackOk = o.sackPermitted ?? true;
    this.gap = o.gapUs ?? 10;
    this.rtt = o.rttUs ?? 1000;
  }

  private scaled(): boolean {
    return this.c.wscale !== undefined && this.s.wscale !== undefined;
  }

  /** Largest payload `from` may put in one segment. */
  segmentSize(from: Side): number {
    const other = from === 'client' ? this.s : this.c;
    return other.mss - (this.ts ? 12 : 0);
  }

  /** One segment from `from` with the given flags; seq/ack come from the flow state. */
  segment(from: Side, flags: number, payload?: Uint8Array): CraftedPacket {
    const a = from === 'client' ? this.c : this.s;
    const b = from === 'client' ? this.s : this.c;
    const delayUs = this.last === undefined ? 0 : this.last === from ? this.gap : this.rtt / 2;
    this.last = from;
    this.clockUs += delayUs;
    const syn = (flags & TCP_FLAGS.SYN) !== 0;
    let opts: Uint8Array | undefined;
    if (syn || this.ts) {
      const tsv = this.ts ? { val: (a.tsBase + Math.floor(this.clockUs / 1000)) >>> 0, ecr: b.lastTsVal } : undefined;
      if (tsv) a.lastTsVal = tsv.val;
      opts = syn
        ? tcpOptions({ mss: a.mss, sackPermitted: this.sackOk, timestamps: tsv, wscale: a.wscale })
        : tcpOptions({ timestamps: tsv });
    }
    const window = syn ? Math.min(a.window, 65535) : this.scaled() ? a.window >> (a.wscale as number) : Math.min(a.window, 65535);
    const pl = payload ? payload.length : 0;
    const tcpLen = 20 + (opts ? opts.length : 0) + pl;
    const v6 = a.ip.length === 16;
    const ipLen = v6 ? 40 : 20;
    const eh = ethernetHeaderLength(this.vlan);
    const frame = Buffer.allocUnsafe(eh + ipLen + tcpLen);
    let o = writeEthernet(frame, 0, b.mac, a.mac, v6 ? ETHERTYPE.IPV6 : ETHERTYPE.IPV4, this.vlan);
    o = v6
      ? writeIPv6Header(frame, o, a.ip, b.ip, IPPROTO.TCP, tcpLen, a.ttl)
      : writeIPv4Header(frame, o, a.ip, b.ip, IPPROTO.TCP, tcpLen, a.ipId, a.ttl);
    a.ipId = (a.ipId + 1) & 0xffff;
    const ack = flags & TCP_FLAGS.ACK ? b.seq : 0;
    writeTcp(frame, o, a.ip, b.ip, a.port, b.port, a.seq, ack, flags, window, opts, payload);
    a.seq = (a.seq + pl + (syn ? 1 : 0) + (flags & TCP_FLAGS.FIN ? 1 : 0)) >>> 0;
    return { from, frame, delayUs };
  }

  handshake(): CraftedPacket[] {
    return [
      this.segment('client', TCP_FLAGS.SYN),
      this.segment('server', TCP_FLAGS.SYN | TCP_FLAGS.ACK),
      this.segment('client', TCP_FLAGS.ACK),
    ];
  }

  ack(from: Side): CraftedPacket {
    return this.segment(from, TCP_FLAGS.ACK);
  }

  /**
   * `data` from one side, split at the MSS, PSH on the last segment. The
   * receiver ACKs every `ackEvery` segments (delayed ACK; 0 = never) and,
   * with `finalAck`, once more at the end if anything is still unacked —
   * leave it off when the receiver's reply will carry the ACK.
   */
  send(from: Side, data: Uint8Array, o: { ackEvery?: number; finalAck?: boolean } = {}): CraftedPacket[] {
    const ackEvery = o.ackEvery ?? 2;
    const to: Side = from === 'client' ? 'server' : 'client';
    const mss = this.segmentSize(from);
    const out: CraftedPacket[] = [];
    let unacked = 0;
    for (let i = 0; i < data.length; i += mss) {
      const end = Math.min(i + mss, data.length);
      out.push(this.segment(from, TCP_FLAGS.ACK | (end === data.length ? TCP_FLAGS.PSH : 0), data.subarray(i, end)));
      if (ackEvery > 0 && ++unacked >= ackEvery) {
        out.push(this.ack(to));
        unacked = 0;
      }
    }
    if (o.finalAck && unacked > 0) out.push(this.ack(to));
    return out;
  }

  /** FIN/ACK from the initiator, FIN/ACK back, final ACK. */
  close(initiator: Side = 'client'): CraftedPacket[] {
    const other: Side = initiator === 'client' ? 'server' : 'client';
    return [
      this.segment(initiator, TCP_FLAGS.FIN | TCP_FLAGS.ACK),
      this.segment(other, TCP_FLAGS.FIN | TCP_FLAGS.ACK),
      this.segment(initiator, TCP_FLAGS.ACK),
    ];
  }
}

export interface TcpConversationOpts extends TcpFlowOpts {
  /** One request/response, or several over the same (keep-alive) connection. */
  request?: Uint8Array;
  response?: Uint8Array;
  exchanges?: Array<{ request: Uint8Array; response: Uint8Array }>;
  closeBy?: Side;
}

/**
 * A complete connection: handshake, each request (split at the MSS), its
 * response (client ACKing every second segment), then FIN/ACK teardown.
 */
export function tcpConversation(o: TcpConversationOpts): CraftedPacket[] {
  const f = new TcpFlow(o);
  const ex = o.exchanges ?? [{ request: o.request ?? new Uint8Array(0), response: o.response ?? new Uint8Array(0) }];
  const out = f.handshake();
  for (const { request, response } of ex) {
    out.push(...f.send('client', request, { finalAck: response.length === 0 }));
    out.push(...f.send('server', response, { finalAck: true }));
  }
  out.push(...f.close(o.closeBy ?? 'client'));
  return out;
}

// ---------------------------------------------------------------- encapsulations

export interface EncapSample {
  name: string;
  linktype: number;
  frame: Buffer;
  /** what riff's proto.packet lists in pkt.encap ('' for none) */
  encap: string;
  /** the inner packet: IP source and TCP ports */
  src: string;
  sport: number;
  dport: number;
  /** false: left out of the tshark comparison (tshark decodes it otherwise) */
  tshark?: boolean;
}

/**
 * One frame per encapsulation riff's proto.packet steps through, each
 * carrying a TCP SYN between distinct ports, built from the headers'
 * specifications: PPPoE (RFC 2516), MPLS (RFC 3032, 4385), GRE (RFC 2784,
 * 2890, 2637), ERSPAN, VXLAN (RFC 7348), Geneve (RFC 8926), IP-in-IP, 6in4,
 * 4in6, NFLOG, Frame Relay (RFC 2427, Cisco), MACsec (802.1AE), NSH
 * (RFC 8300), PPP carrying MPLS.
 */
export function encapSamples(): EncapSample[] {
  const A = '192.0.2.1', Z = '198.51.100.2', A6 = '2001:db8::1', Z6 = '2001:db8::2';
  const C = '02:00:00:00:00:0a', S = '02:00:00:00:00:50';
  const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
  const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
  const cat = (...b: Buffer[]) => Buffer.concat(b);
  const syn4 = (sport: number, dport: number) => ipv4({ src: A, dst: Z, proto: IPPROTO.TCP }, tcp({ src: A, dst: Z, sport, dport, seq: 1, flags: TCP_FLAGS.SYN }));
  const syn6 = (sport: number, dport: number) => ipv6({ src: A6, dst: Z6, nextHeader: IPPROTO.TCP }, tcp({ src: A6, dst: Z6, sport, dport, seq: 1, flags: TCP_FLAGS.SYN }));
  const eth = (type: number, payload: Buffer, vlan?: number) => ethernet({ src: C, dst: S, type, vlan }, payload);
  const outer4 = (proto: number, payload: Buffer) => ipv4({ src: '203.0.113.1', dst: '203.0.113.2', proto }, payload);
  const outerUdp = (dport: number, payload: Buffer) => outer4(IPPROTO.UDP, udp({ src: '203.0.113.1', dst: '203.0.113.2', sport: 40000, dport }, payload));
  const innerEth = (p: Buffer) => ethernet({ src: '02:00:00:00:01:01', dst: '02:00:00:00:01:02', type: ETHERTYPE.IPV4 }, p);
  const mpls = (label: number, bos: boolean) => u32((label << 12) | (bos ? 0x100 : 0) | 64);
  const pppoe = (ppp: number, p: Buffer) => cat(hex('1100 1234'), u16(p.length + 2), u16(ppp), p);
  const nflogTlv = (type: number, value: Buffer) => {
    const len = 4 + value.length;
    const b = Buffer.alloc((len + 3) & ~3);
    b.writeUInt16LE(len, 0);
    b.writeUInt16LE(type, 2);
    value.copy(b, 4);
    return b;
  };
  const s = (name: string, linktype: number, frame: Buffer, encap: string, src: string, sport: number, dport: number): EncapSample =>
    ({ name, linktype, frame, encap, src, sport, dport });
  return [
    s('PPPoE session', 1, eth(0x8864, pppoe(0x21, syn4(1001, 80))), 'pppoe', A, 1001, 80),
    s('PPPoE link type 51, IPv6', 51, pppoe(0x57, syn6(1002, 443)), 'pppoe', A6, 1002, 443),
    s('MPLS two labels, IPv4', 1, eth(0x8847, cat(mpls(100, false), mpls(200, true), syn4(1003, 179))), 'mpls', A, 1003, 179),
    s('MPLS, IPv6', 1, eth(0x8847, cat(mpls(300, true), syn6(1004, 22))), 'mpls', A6, 1004, 22),
    // tshark's pseudowire heuristic takes this for something else: not in the tshark comparison.
    { ...s('MPLS pseudowire: control word, Ethernet', 1, eth(0x8847, cat(mpls(16, true), u32(0), innerEth(syn4(1005, 25)))), 'mpls', A, 1005, 25), tshark: false },
    s('GRE', 1, eth(ETHERTYPE.IPV4, outer4(47, cat(hex('0000 0800'), syn4(1006, 80)))), 'gre', A, 1006, 80),
    s('GRE with key and sequence', 1, eth(ETHERTYPE.IPV4, outer4(47, cat(hex('3000 0800'), u32(7), u32(9), syn4(1007, 80)))), 'gre', A, 1007, 80),
    s('GRE v1 (PPTP) carrying PPP', 1, eth(ETHERTYPE.IPV4, outer4(47, cat(hex('3001 880b'), u16(syn4(0, 0).length + 4), u16(5), u32(1), hex('ff03 0021'), syn4(1008, 80)))), 'gre,ppp', A, 1008, 80),
    s('GRE bridging Ethernet', 1, eth(ETHERTYPE.IPV4, outer4(47, cat(hex('0000 6558'), innerEth(syn4(1009, 80))))), 'gre,eth', A, 1009, 80),
    s('ERSPAN type II', 1, eth(ETHERTYPE.IPV4, outer4(47, cat(hex('1000 88be'), u32(1), hex('1001 0000 0000 0000'), innerEth(syn4(1010, 80))))), 'gre,erspan', A, 1010, 80),
    s('VXLAN', 1, eth(ETHERTYPE.IPV4, outerUdp(4789, cat(hex('0800 0000 0013 8800'), innerEth(syn4(1011, 443))))), 'vxlan,eth', A, 1011, 443),
    s('Geneve', 1, eth(ETHERTYPE.IPV4, outerUdp(6081, cat(hex('0000 6558 0000 0100'), innerEth(syn4(1012, 443))))), 'geneve,eth', A, 1012, 443),
    s('IP in IP', 1, eth(ETHERTYPE.IPV4, outer4(4, syn4(1013, 80))), 'ipip', A, 1013, 80),
    s('6in4', 1, eth(ETHERTYPE.IPV4, outer4(41, syn6(1014, 80))), 'ip6in', A6, 1014, 80),
    s('4in6', 1, eth(ETHERTYPE.IPV6, ipv6({ src: '2001:db8:ff::1', dst: '2001:db8:ff::2', nextHeader: 4 }, syn4(1015, 80))), 'ipip', A, 1015, 80),
    s('NFLOG', 239, cat(hex('02 00 0000'), nflogTlv(1, hex('0800 0300')), nflogTlv(10, Buffer.from('prefix\0')), nflogTlv(9, syn4(1016, 80))), '', A, 1016, 80),
    s('Frame Relay (RFC 2427 NLPID)', 107, cat(hex('1841 03 cc'), syn4(1017, 80)), '', A, 1017, 80),
    s('Frame Relay (Cisco)', 107, cat(hex('1841 0800'), syn4(1018, 80)), '', A, 1018, 80),
    s('MACsec integrity only, with SCI', 1, eth(0x88e5, cat(hex('20 00'), u32(1), Buffer.alloc(8, 0x11), hex('0800'), syn4(1019, 80), Buffer.alloc(16, 0x99))), 'macsec', A, 1019, 80),
    s('NSH carrying IPv4', 1, eth(0x894f, cat(hex('0FC2 0201'), u32(0x00000aff), syn4(1020, 80))), 'nsh', A, 1020, 80),
    s('PPP carrying MPLS', 9, cat(hex('ff03 0281'), mpls(17, true), syn4(1021, 80)), 'mpls', A, 1021, 80),
    s('PPPoE, VLAN-tagged', 1, eth(0x8864, pppoe(0x21, syn4(1022, 80)), 10), 'pppoe', A, 1022, 80),
  ];
}
