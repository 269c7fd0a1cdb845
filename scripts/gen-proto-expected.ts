// Regenerates fixtures/proto/: the expectations test/proto.test.ts checks
// riff's Lua protocol decoders (lua/proto/) against.
//
//   npx tsc -p . && node dist/scripts/gen-proto-expected.js
//
// 1. Writes small synthetic captures for what the tcpdump corpus lacks:
//    SLL2 (converted from SLL files), OpenBSD LOOP and big-endian BSD NULL
//    (converted from NULL files), QinQ/802.1ad/SNAP carrying IP, IPv4
//    options/fragments, IPv6 extension header chains and AH, TCP options with
//    SACK, truncated and padded frames, and DNS messages with MX, TXT, SOA, PTR,
//    CNAME, NS, SRV, AAAA records and name compression (UDP and TCP).
// 2. For each capture the test uses, runs tshark with reassembly off (the test
//    compares packet by packet) and saves its per-packet fields as
//    fixtures/proto/<capture>.tsv, first line the field names. Fields with
//    several occurrences are joined with "|".
//
// tshark is needed here only; the test reads the saved files.
//
//   node dist/scripts/gen-proto-expected.js --all DIR
// writes expectations for every capture in fixtures/corpus to DIR instead (not
// committed; for a wider check: PROTO_EXPECT_DIR=DIR node --test dist/test/proto.test.js).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PcapFileWriter, ethernet, ipv4, ipv6, tcp, udp, icmpEcho, icmp6Echo, ipv6Addr, TCP_FLAGS } from './lib/craft.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = path.join(ROOT, 'fixtures', 'proto');
// tcpdump's captures, carried in the repository (fixtures/corpus/README.md).
const CORPUS = path.join(ROOT, 'fixtures', 'corpus');

/** Corpus captures the test uses, and what each one covers. */
export const CORPUS_FILES: Record<string, string> = {
  'accecn_handshake.pcap': 'Ethernet, TCP options (MSS, SACK-permitted, timestamps, wscale), AccECN flags, HTTP request',
  'ipv4_tcp_http_xml.pcap': '802.1Q VLAN, HTTP response',
  'ipv4_tcp_http_xml_tso.pcap': 'IPv4 total length 0 (TSO), HTTP request',
  'ldp-common-session.pcap': '802.1Q VLAN, TCP and UDP',
  '802.1ad_QinQ.pcap': '802.1ad + 802.1Q tags (ARP inside)',
  'babel.pcap': 'Linux SLL, IPv6 hop-by-hop options, UDP',
  'dns-badcookie.pcap': 'BSD NULL (little-endian family), DNS with SOA and EDNS',
  'icmpv6-RFC2894-RR.pcap': 'BSD NULL with IPv6 (family 28), ICMPv6',
  'LINKTYPE_RAW_ipv4.pcap': 'raw IP (101), IPv4, DNS',
  'LINKTYPE_IPV4.pcap': 'raw IPv4 (228), DNS',
  'LINKTYPE_IPV6.pcap': 'raw IPv6 (229), DNS',
  'HDLC.pcap': 'Cisco HDLC (104), IPv4, ICMP',
  'icmp-rfc5837.pcap': 'PPP (9), ICMP error quoting an IP packet',
  'IGMP_V2.pcap': 'IPv4 options (router alert)',
  'afs.pcap': 'IPv4 fragments, UDP',
  'dhcp-rfc4388.pcap': 'ICMP errors quoting IP/UDP, DHCP over UDP',
  'icmp-rfc8335.pcap': 'ICMP',
  'icmpv6.pcap': 'IPv6 hop-by-hop options, ICMPv6',
  'ipv6-routing-header.pcap': 'IPv6 routing header, ICMPv6 and UDP',
  'ipv6_jumbogram_1.pcap': 'IPv6 jumbogram (payload length 0, hop-by-hop Jumbo option)',
  'dns_udp.pcap': 'DNS over UDP: A, AAAA, NS, EDNS',
  'dns_tcp.pcap': 'DNS over TCP (length prefix)',
  'dnssec.pcap': 'DNS with DNSSEC records (RRSIG, DS)',
  'edns-opts.pcap': 'DNS with EDNS options',
  'ipv4_invalid_total_length.pcap': 'IPv4 total length past the capture',
  'ipv4_invalid_hdr_length.pcap': 'IPv4 header length < 20 (malformed)',
};

/** Captures this script writes into fixtures/proto/. */
export const SYNTHETIC_FILES: Record<string, string> = {
  'sll2.pcap': 'Linux SLL2 (276), from SLL captures: IPv6/UDP, IPv4/UDP, IPv4/TCP, ICMP',
  'loop.pcap': 'OpenBSD LOOP (108): family in network byte order, IPv4 and IPv6',
  'null-be.pcap': 'BSD NULL (0) with big-endian families 2 and 30, and little-endian 24',
  'vlan-ip.pcap': '802.1ad+802.1Q, triple tags, 802.1Q with IPv6, 802.3 LLC/SNAP with IPv4',
  'ip-misc.pcap': 'IPv4 options, fragments, IPv6 extension chains, AH, TCP SACK, ICMP echo, padding, truncation',
  'dns-records.pcap': 'DNS MX, TXT, SOA, PTR, CNAME, NS, SRV, AAAA with compression; DNS over TCP and IPv6',
};

/** OTHER_FILES: riff's own fixtures. */
export const OTHER_FILES: Record<string, string> = {
  'http.pcap': 'riff fixture: HTTP requests and responses, DNS, ARP',
};

export const FIELDS = [
  'frame.number', 'frame.protocols', 'eth.src', 'eth.dst', 'vlan.id', 'ieee8021ad.id',
  'sll.pkttype', 'sll.hatype', 'sll.etype', 'sll.gretype', 'sll.ltype', 'sll.ifindex', 'null.family',
  'ip.src', 'ip.dst', 'ip.proto', 'ip.ttl', 'ip.id', 'ip.hdr_len', 'ip.flags.df', 'ip.flags.mf', 'ip.frag_offset', 'ip.len',
  'ipv6.src', 'ipv6.dst', 'ipv6.nxt', 'ipv6.hlim', 'ipv6.plen',
  'tcp.srcport', 'tcp.dstport', 'tcp.seq_raw', 'tcp.ack_raw', 'tcp.flags', 'tcp.window_size_value', 'tcp.hdr_len',
  'tcp.len', 'tcp.options.mss_val', 'tcp.options.wscale.shift', 'tcp.options.sack_perm',
  'tcp.options.timestamp.tsval', 'tcp.options.timestamp.tsecr',
  'udp.srcport', 'udp.dstport', 'udp.length',
  'icmp.type', 'icmp.code', 'icmpv6.type', 'icmpv6.code',
  'dns.id', 'dns.flags.response', 'dns.flags.opcode', 'dns.flags.rcode',
  'dns.count.queries', 'dns.count.answers', 'dns.count.auth_rr', 'dns.count.add_rr',
  'dns.qry.name', 'dns.qry.type', 'dns.resp.name', 'dns.resp.type', 'dns.resp.ttl',
  'dns.a', 'dns.aaaa', 'dns.cname', 'dns.ptr.domain_name', 'dns.ns', 'dns.mx.preference', 'dns.mx.mail_exchange',
  'dns.txt', 'dns.soa.mname', 'dns.soa.rname', 'dns.soa.serial_number',
  'http.request.method', 'http.request.uri', 'http.request.version', 'http.response.code', 'http.response.phrase',
  'http.host', 'http.user_agent', 'http.content_length_header',
];

// Per-packet comparison: no reassembly of any kind, raw sequence numbers.
const TSHARK_PREFS = [
  'tcp.desegment_tcp_streams:FALSE',
  'tcp.analyze_sequence_numbers:FALSE',
  'tcp.relative_sequence_numbers:FALSE',
  'ip.defragment:FALSE',
  'ipv6.defragment:FALSE',
  'http.desegment_headers:FALSE',
  'http.desegment_body:FALSE',
  'dns.desegment_dns_messages:FALSE',
];

// ---------------------------------------------------------------- classic pcap I/O

interface Rec {
  sec: number;
  usec: number;
  data: Buffer;
  wirelen: number;
}

function readPcap(file: string): { linktype: number; recs: Rec[] } {
  const b = fs.readFileSync(file);
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && b.readUInt32BE(0) !== 0xa1b2c3d4 && b.readUInt32BE(0) !== 0xa1b23c4d) throw new Error(`${file}: not a classic pcap`);
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const linktype = u32(20) & 0xffff;
  const recs: Rec[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const caplen = u32(o + 8);
    recs.push({ sec: u32(o), usec: u32(o + 4), wirelen: u32(o + 12), data: b.subarray(o + 16, o + 16 + caplen) });
    o += 16 + caplen;
  }
  return { linktype, recs };
}

function writePcap(name: string, linktype: number, recs: Rec[]): void {
  const w = new PcapFileWriter(path.join(OUT, name), { linktype });
  for (const r of recs) w.write(r.sec, r.usec, r.data, Math.max(r.wirelen, r.data.length));
  w.close();
}

const corpus = (name: string) => readPcap(path.join(CORPUS, name));

// ---------------------------------------------------------------- link-layer conversions

/** SLL (16-byte header) to SLL2 (20 bytes). */
function sllToSll2(d: Buffer, ifindex: number): Buffer {
  const out = Buffer.alloc(d.length + 4);
  out.writeUInt16BE(d.readUInt16BE(14), 0); // protocol
  out.writeUInt16BE(0, 2); // reserved
  out.writeUInt32BE(ifindex, 4);
  out.writeUInt16BE(d.readUInt16BE(2), 8); // ARPHRD
  out[10] = d.readUInt16BE(0); // packet type
  out[11] = Math.min(d.readUInt16BE(4), 8); // address length
  d.copy(out, 12, 6, 14); // address
  d.copy(out, 20, 16);
  return out;
}

/** NULL header rewritten with the given family and byte order. */
function withFamily(d: Buffer, family: number, bigEndian: boolean): Buffer {
  const out = Buffer.from(d);
  if (bigEndian) out.writeUInt32BE(family, 0);
  else out.writeUInt32LE(family, 0);
  return out;
}

const isV6 = (d: Buffer, off: number) => d[off] >> 4 === 6;

// ---------------------------------------------------------------- crafted packets

const MAC_A = '02:00:00:00:00:0a';
const MAC_B = '02:00:00:00:00:0b';
const V4_A = '192.0.2.10';
const V4_B = '198.51.100.20';
const V6_A = '2001:db8::a';
const V6_B = '2001:db8:0:1::b';

const eth = (type: number, payload: Uint8Array, padTo?: number) => ethernet({ dst: MAC_B, src: MAC_A, type, padTo }, payload);

/** Ethernet header with an arbitrary stack of tags (tpid, tci). */
function ethTags(tags: Array<[number, number]>, type: number, payload: Uint8Array): Buffer {
  const h = Buffer.alloc(12 + 4 * tags.length + 2);
  Buffer.from(MAC_B.split(':').map((x) => parseInt(x, 16))).copy(h, 0);
  Buffer.from(MAC_A.split(':').map((x) => parseInt(x, 16))).copy(h, 6);
  let o = 12;
  for (const [tpid, tci] of tags) {
    h.writeUInt16BE(tpid, o);
    h.writeUInt16BE(tci, o + 2);
    o += 4;
  }
  h.writeUInt16BE(type, o);
  return Buffer.concat([h, payload]);
}

const bytes = (n: number, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
const text = (s: string) => Buffer.from(s, 'latin1');

/** A generic IPv6 extension header: next header, length, then data padded to 8n. */
function ext6(next: number, body: number[]): Buffer {
  const total = Math.ceil((body.length + 2) / 8) * 8;
  const b = Buffer.alloc(total);
  b[0] = next;
  b[1] = total / 8 - 1;
  Buffer.from(body).copy(b, 2);
  // pad with PadN
  const pad = total - 2 - body.length;
  if (pad === 1) b[2 + body.length] = 0;
  else if (pad >= 2) {
    b[2 + body.length] = 1;
    b[3 + body.length] = pad - 2;
  }
  return b;
}

function frag6(next: number, offset: number, mf: boolean, id: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = next;
  b.writeUInt16BE((offset & 0xfff8) | (mf ? 1 : 0), 2);
  b.writeUInt32BE(id, 4);
  return b;
}

function routing6(next: number, addrs: string[]): Buffer {
  // Type 0 style layout (segments left 0 so nothing is rewritten), RFC 2460.
  const b = Buffer.alloc(8 + 16 * addrs.length);
  b[0] = next;
  b[1] = addrs.length * 2;
  b[2] = 2; // type 2 (mobile IPv6) needs one address; use type 0 semantics for several
  if (addrs.length !== 1) b[2] = 0;
  b[3] = 0;
  addrs.forEach((a, i) => Buffer.from(ipv6Addr(a)).copy(b, 8 + 16 * i));
  return b;
}

function ah(next: number, icv: number): Buffer {
  const b = Buffer.alloc(12 + icv);
  b[0] = next;
  b[1] = (12 + icv) / 4 - 2;
  b.writeUInt32BE(0x1000, 4); // SPI
  b.writeUInt32BE(7, 8); // sequence
  return b;
}

function ipMisc(): Rec[] {
  const out: Buffer[] = [];
  // IPv4 options (NOP, Record Route with 2 slots, EOL) + TCP SYN with options.
  const rr = Buffer.from([1, 7, 11, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
  const syn = tcp({ src: V4_A, dst: V4_B, sport: 40000, dport: 80, seq: 1000, flags: TCP_FLAGS.SYN, mss: 1460, sackPermitted: true, timestamps: { val: 11, ecr: 0 }, wscale: 7 });
  out.push(eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 6, id: 0x1234, ttl: 63, options: rr }, syn)));
  // TCP ACK with SACK blocks and a few payload bytes.
  const sack = tcp({ src: V4_B, dst: V4_A, sport: 80, dport: 40000, seq: 5000, ack: 1001, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, timestamps: { val: 12, ecr: 11 }, sack: [[2000, 3000], [4000, 4500]] }, text('hello'));
  out.push(eth(0x0800, ipv4({ src: V4_B, dst: V4_A, proto: 6, id: 2 }, sack)));
  // IPv4 fragments of one UDP datagram: first (MF, offset 0), then offset 24.
  const dgram = udp({ src: V4_A, dst: V4_B, sport: 5000, dport: 6000 }, bytes(40));
  out.push(eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 17, id: 77, df: false, mf: true }, dgram.subarray(0, 24))));
  out.push(eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 17, id: 77, df: false, fragOffset: 24 }, dgram.subarray(24))));
  // A short UDP datagram in a padded (60-byte) frame: the padding is not payload.
  out.push(eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 17, id: 3 }, udp({ src: V4_A, dst: V4_B, sport: 1234, dport: 4321 }, text('hi'))), 60));
  // ICMP echo request and reply.
  out.push(eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 1, id: 4 }, icmpEcho({ id: 0x42, seq: 1 }, bytes(16)))));
  out.push(eth(0x0800, ipv4({ src: V4_B, dst: V4_A, proto: 1, id: 5 }, icmpEcho({ reply: true, id: 0x42, seq: 1 }, bytes(16)))));
  // IPv6: hop-by-hop, destination options, routing, fragment (first), UDP.
  const u6 = udp({ src: V6_A, dst: V6_B, sport: 7000, dport: 7001 }, bytes(20));
  const chain = Buffer.concat([ext6(60, [5, 2, 0, 0]), ext6(43, [1, 4, 1, 2, 3, 4]), routing6(44, ['2001:db8::1', '2001:db8::2']), frag6(17, 0, true, 0xabcd), u6]);
  out.push(eth(0x86dd, ipv6({ src: V6_A, dst: V6_B, nextHeader: 0 }, chain)));
  // IPv6 non-first fragment.
  out.push(eth(0x86dd, ipv6({ src: V6_A, dst: V6_B, nextHeader: 44 }, Buffer.concat([frag6(17, 32, false, 0xabcd), bytes(16)]))));
  // IPv6 AH then TCP.
  const t6 = tcp({ src: V6_A, dst: V6_B, sport: 443, dport: 50000, seq: 0xfffffff0, ack: 7, flags: TCP_FLAGS.ACK | TCP_FLAGS.FIN });
  out.push(eth(0x86dd, ipv6({ src: V6_A, dst: V6_B, nextHeader: 51, hopLimit: 255 }, Buffer.concat([ah(6, 12), t6]))));
  // IPv6 destination options then ICMPv6 echo; mapped-looking addresses.
  const src6 = '::ffff:192.0.2.1';
  const dst6 = 'fe80::1:0:0:1';
  out.push(eth(0x86dd, ipv6({ src: src6, dst: dst6, nextHeader: 60 }, Buffer.concat([ext6(58, [1, 0]), icmp6Echo({ src: src6, dst: dst6, id: 9, seq: 10 }, bytes(8))]))));
  // IPv6 with "no next header".
  out.push(eth(0x86dd, ipv6({ src: '2001:db8:0:0:1::1', dst: '2001:0:0:1::1', nextHeader: 59 }, Buffer.alloc(0))));
  const recs: Rec[] = out.map((data, i) => ({ sec: 1_600_000_000 + i, usec: 0, data, wirelen: data.length }));
  // Truncated: a TCP packet captured to 60 of its bytes (snaplen).
  const big = eth(0x0800, ipv4({ src: V4_A, dst: V4_B, proto: 6, id: 9 }, tcp({ src: V4_A, dst: V4_B, sport: 40001, dport: 80, seq: 1, ack: 1, flags: TCP_FLAGS.ACK, timestamps: { val: 1, ecr: 2 } }, bytes(200))));
  recs.push({ sec: 1_600_000_100, usec: 0, data: big.subarray(0, 60), wirelen: big.length });
  // Truncated inside the TCP header.
  recs.push({ sec: 1_600_000_101, usec: 0, data: big.subarray(0, 44), wirelen: big.length });
  return recs;
}

function vlanIp(): Rec[] {
  const dnsQ = dnsMessage({ id: 0x1111, rd: true, questions: [['example.com', 1]] });
  const v4udp = ipv4({ src: V4_A, dst: V4_B, proto: 17, id: 10 }, udp({ src: V4_A, dst: V4_B, sport: 33333, dport: 53 }, dnsQ));
  const v6tcp = ipv6({ src: V6_A, dst: V6_B, nextHeader: 6 }, tcp({ src: V6_A, dst: V6_B, sport: 2222, dport: 22, seq: 42, ack: 43, flags: TCP_FLAGS.ACK }, bytes(10)));
  const v4icmp = ipv4({ src: V4_B, dst: V4_A, proto: 1, id: 11 }, icmpEcho({ id: 1, seq: 2 }));
  const snap = Buffer.concat([Buffer.from([0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]), v4icmp]);
  const llc = ethernet({ dst: MAC_B, src: MAC_A, type: snap.length }, snap);
  const packets = [
    ethTags([[0x88a8, 100], [0x8100, 200]], 0x0800, v4udp),
    ethTags([[0x8100, (5 << 13) | 5]], 0x86dd, v6tcp),
    ethTags([[0x9100, 7], [0x88a8, 8], [0x8100, 9]], 0x0800, v4icmp),
    llc,
  ];
  return packets.map((data, i) => ({ sec: 1_600_001_000 + i, usec: 0, data, wirelen: data.length }));
}

// ---------------------------------------------------------------- DNS

type RData = Buffer | ((name: (n: string) => void, u16: (v: number) => void, u32: (v: number) => void, raw: (b: Buffer) => void) => void);
interface RR {
  name: string;
  type: number;
  ttl?: number;
  data: RData;
}
interface Msg {
  id: number;
  response?: boolean;
  aa?: boolean;
  rd?: boolean;
  ra?: boolean;
  rcode?: number;
  questions?: Array<[string, number]>;
  answers?: RR[];
  authority?: RR[];
  additional?: RR[];
}

/** A DNS message with name compression everywhere a name appears. */
function dnsMessage(m: Msg): Buffer {
  const b: number[] = [];
  const seen = new Map<string, number>();
  const u16 = (v: number) => b.push((v >> 8) & 0xff, v & 0xff);
  const u32 = (v: number) => b.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  const raw = (x: Buffer) => b.push(...x);
  const name = (n: string) => {
    const labels = n === '.' ? [] : n.split('.');
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase();
      const at = seen.get(suffix);
      if (at !== undefined) return u16(0xc000 | at);
      seen.set(suffix, b.length);
      const l = Buffer.from(labels[i], 'latin1');
      b.push(l.length, ...l);
    }
    b.push(0);
  };
  const rr = (r: RR) => {
    name(r.name);
    u16(r.type);
    u16(1);
    u32(r.ttl ?? 3600);
    const at = b.length;
    u16(0);
    if (Buffer.isBuffer(r.data)) raw(r.data);
    else r.data(name, u16, u32, raw);
    const len = b.length - at - 2;
    b[at] = len >> 8;
    b[at + 1] = len & 0xff;
  };
  u16(m.id);
  u16((m.response ? 0x8000 : 0) | (m.aa ? 0x400 : 0) | (m.rd ? 0x100 : 0) | (m.ra ? 0x80 : 0) | (m.rcode ?? 0));
  u16(m.questions?.length ?? 0);
  u16(m.answers?.length ?? 0);
  u16(m.authority?.length ?? 0);
  u16(m.additional?.length ?? 0);
  for (const [n, t] of m.questions ?? []) {
    name(n);
    u16(t);
    u16(1);
  }
  (m.answers ?? []).forEach(rr);
  (m.authority ?? []).forEach(rr);
  (m.additional ?? []).forEach(rr);
  return Buffer.from(b);
}

const A = (a: string): RData => Buffer.from(a.split('.').map(Number));
const AAAA = (a: string): RData => Buffer.from(ipv6Addr(a));
const NAME = (n: string): RData => (name) => name(n);
const MX = (pref: number, n: string): RData => (name, u16) => {
  u16(pref);
  name(n);
};
const TXT = (...parts: string[]): RData => (_n, _u16, _u32, raw) => {
  for (const p of parts) raw(Buffer.concat([Buffer.from([p.length]), text(p)]));
};
const SOA = (mname: string, rname: string, serial: number): RData => (name, _u16, u32) => {
  name(mname);
  name(rname);
  for (const v of [serial, 7200, 3600, 1209600, 300]) u32(v);
};
const SRV = (pri: number, w: number, port: number, target: string): RData => (name, u16) => {
  u16(pri);
  u16(w);
  u16(port);
  name(target);
};

function dnsRecords(): Rec[] {
  const msgs: Msg[] = [
    { id: 0x0101, rd: true, questions: [['example.org', 15]] },
    {
      id: 0x0101, response: true, rd: true, ra: true, questions: [['example.org', 15]],
      answers: [{ name: 'example.org', type: 15, data: MX(10, 'mail.example.org') }, { name: 'example.org', type: 15, data: MX(20, 'mx2.backup.example.net') }],
      additional: [{ name: 'mail.example.org', type: 1, data: A('192.0.2.25') }, { name: 'mail.example.org', type: 28, data: AAAA('2001:db8::25') }],
    },
    {
      id: 0x0202, response: true, rd: true, ra: true, questions: [['example.org', 16]],
      answers: [{ name: 'example.org', type: 16, data: TXT('v=spf1 -all') }, { name: 'example.org', type: 16, data: TXT('first', 'second string', '') }],
    },
    {
      id: 0x0303, response: true, aa: true, rcode: 3, questions: [['nowhere.example.org', 1]],
      authority: [{ name: 'example.org', type: 6, ttl: 300, data: SOA('ns1.example.org', 'hostmaster.example.org', 2024010101) }],
    },
    {
      id: 0x0404, response: true, rd: true, ra: true, questions: [['10.2.0.192.in-addr.arpa', 12]],
      answers: [{ name: '10.2.0.192.in-addr.arpa', type: 12, data: NAME('host10.example.org') }],
    },
    {
      id: 0x0505, response: true, rd: true, ra: true, questions: [['www.example.org', 1]],
      answers: [
        { name: 'www.example.org', type: 5, data: NAME('web.example.org') },
        { name: 'web.example.org', type: 5, data: NAME('edge.cdn.example.net') },
        { name: 'edge.cdn.example.net', type: 1, ttl: 20, data: A('203.0.113.7') },
        { name: 'edge.cdn.example.net', type: 1, ttl: 20, data: A('203.0.113.8') },
      ],
    },
    {
      id: 0x0606, response: true, questions: [['example.org', 2]],
      answers: [{ name: 'example.org', type: 2, data: NAME('ns1.example.org') }, { name: 'example.org', type: 2, data: NAME('ns2.example.net') }],
      additional: [{ name: 'ns1.example.org', type: 1, data: A('192.0.2.53') }, { name: 'ns2.example.net', type: 28, data: AAAA('2001:db8:53::2') }],
    },
    {
      id: 0x0707, response: true, questions: [['_sip._udp.example.org', 33]],
      answers: [{ name: '_sip._udp.example.org', type: 33, data: SRV(10, 60, 5060, 'sip.example.org') }],
    },
    {
      id: 0x0808, response: true, questions: [['.', 2]],
      answers: [{ name: '.', type: 2, ttl: 518400, data: NAME('a.root-servers.net') }],
    },
  ];
  const recs: Rec[] = [];
  let t = 1_600_002_000;
  for (const m of msgs) {
    const q = !m.response;
    const [sa, da, sp, dp] = q ? [V4_A, V4_B, 40053, 53] : [V4_B, V4_A, 53, 40053];
    const d = eth(0x0800, ipv4({ src: sa, dst: da, proto: 17, id: m.id }, udp({ src: sa, dst: da, sport: sp, dport: dp }, dnsMessage(m))));
    recs.push({ sec: t++, usec: 0, data: d, wirelen: d.length });
  }
  // Over IPv6.
  const m6 = dnsMessage({ id: 0x0909, response: true, questions: [['v6.example.org', 28]], answers: [{ name: 'v6.example.org', type: 28, data: AAAA('2001:db8::1:0:0:1') }] });
  const d6 = eth(0x86dd, ipv6({ src: V6_B, dst: V6_A, nextHeader: 17 }, udp({ src: V6_B, dst: V6_A, sport: 53, dport: 40054 }, m6)));
  recs.push({ sec: t++, usec: 0, data: d6, wirelen: d6.length });
  // Over TCP: one length-prefixed message in one segment.
  const mt = dnsMessage({ id: 0x0a0a, response: true, questions: [['big.example.org', 16]], answers: [{ name: 'big.example.org', type: 16, data: TXT('x'.repeat(200), 'y'.repeat(50)) }] });
  const seg = Buffer.concat([Buffer.from([mt.length >> 8, mt.length & 0xff]), mt]);
  const dt = eth(0x0800, ipv4({ src: V4_B, dst: V4_A, proto: 6, id: 0x0a0a }, tcp({ src: V4_B, dst: V4_A, sport: 53, dport: 40055, seq: 100, ack: 200, flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH }, seg)));
  recs.push({ sec: t++, usec: 0, data: dt, wirelen: dt.length });
  return recs;
}

// ---------------------------------------------------------------- main

function synthesize(): void {
  // SLL2 from several SLL captures.
  const sll2: Rec[] = [];
  for (const [f, n, ifindex] of [['babel.pcap', 6, 2], ['ldp-infinite-loop.pcap', 3, 3], ['bgp-infinite-loop.pcap', 3, 4], ['icmp-cksum-oobr-1.pcap', 1, 5]] as const) {
    for (const r of corpus(f).recs.slice(0, n)) sll2.push({ ...r, data: sllToSll2(r.data, ifindex), wirelen: r.wirelen + 4 });
  }
  writePcap('sll2.pcap', 276, sll2);

  // LOOP (network byte order) and big-endian NULL from NULL captures.
  const nul = [...corpus('dns-badcookie.pcap').recs, ...corpus('icmpv6-RFC2894-RR.pcap').recs.slice(0, 3)];
  writePcap('loop.pcap', 108, nul.map((r) => ({ ...r, data: withFamily(r.data, isV6(r.data, 4) ? 24 : 2, true) })));
  writePcap('null-be.pcap', 0, nul.map((r, i) => ({
    ...r,
    data: isV6(r.data, 4) ? withFamily(r.data, i % 2 ? 30 : 24, i % 2 === 1) : withFamily(r.data, 2, true),
  })));

  writePcap('vlan-ip.pcap', 1, vlanIp());
  writePcap('ip-misc.pcap', 1, ipMisc());
  writePcap('dns-records.pcap', 1, dnsRecords());
}

function locate(name: string): string {
  for (const dir of [OUT, path.join(ROOT, 'fixtures'), CORPUS]) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`${name}: not found in fixtures/proto, fixtures or the corpus`);
}

function expectations(name: string, outDir = OUT, file = locate(name), lenient = false): void {
  const args = ['-r', file, '-n'];
  for (const p of TSHARK_PREFS) args.push('-o', p);
  args.push('-T', 'fields', '-E', 'separator=/t', '-E', 'header=y', '-E', 'occurrence=a', '-E', 'aggregator=|');
  for (const f of FIELDS) args.push('-e', f);
  const r = spawnSync('tshark', args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    if (!lenient) throw new Error(`tshark on ${name} failed: ${r.stderr}`);
    console.error(`skipped ${name}: ${r.stderr.trim().split('\n').pop()}`);
    return;
  }
  fs.writeFileSync(path.join(outDir, `${name}.tsv`), r.stdout);
}

const main = () => {
  const all = process.argv.indexOf('--all');
  if (all >= 0) {
    const dir = process.argv[all + 1];
    if (!dir) throw new Error('--all needs a directory');
    fs.mkdirSync(dir, { recursive: true });
    const files = fs.readdirSync(CORPUS).filter((f) => /\.pcap(ng)?$/.test(f));
    for (const f of files) expectations(f, dir, path.join(CORPUS, f), true);
    console.log(`${dir}: ${files.length} expectation files`);
    return;
  }
  fs.mkdirSync(OUT, { recursive: true });
  synthesize();
  const names = [...Object.keys(CORPUS_FILES), ...Object.keys(SYNTHETIC_FILES), ...Object.keys(OTHER_FILES)];
  let total = 0;
  for (const n of names) {
    expectations(n);
    total += fs.statSync(path.join(OUT, `${n}.tsv`)).size;
  }
  const ver = spawnSync('tshark', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0];
  console.log(`fixtures/proto: ${names.length} expectation files, ${total} bytes (${ver})`);
};

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
