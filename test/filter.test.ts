// Filters must select exactly what tcpdump selects. The expected counts below
// were produced once with tcpdump 4.99.3 / libpcap 1.10.3
// (`tcpdump -r FILE --count 'EXPR'`; a string is tcpdump's compile error) and
// are hardcoded so the test runs where tcpdump is not installed. --count is
// used rather than `| wc -l` because several dissectors print more than one
// line per packet (arp-oobr.pcap, forces3.pcap).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { endianness, tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Batch, FLAG_ARRIVAL_TS, FLAG_ELSEWHERE, FLAG_FILTERED_OUT, HDR, align8, recordAt } from '../src/capture/batch.js';
import { jsSharding, shardOf } from '../src/capture/flow.js';
import { loadNative } from '../src/capture/native.js';
import { FilterError, compileFilter, filterAvailable, libpcapVersion } from '../src/capture/filter.js';
import { PcapWriter } from '../src/outputs/pcap-writer.js';
import { openCaptureFile } from '../src/capture/file.js';
import { CORPUS, tmpdir as scratchDir, writeEncapCapture } from './helpers.js';

const haveAddon = filterAvailable();
const noAddon = haveAddon ? false : 'riff_pcap addon not built (apt-get install libpcap-dev && npm run build)';
const noBoth = noAddon;
const haveTcpdump = (() => {
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
// Without tcpdump the PcapWriter tests check the files with their own reader only, and say so.
const noTcpdump = 'tcpdump is not installed (bash scripts/setup installs it): not compared with tcpdump';

const EXPRS = [
  'tcp port 80',
  'udp',
  'vlan',
  'ip6',
  'icmp',
  'icmp6',
  'arp',
  'ip',
  'not ip',
  'tcp',
  'port 53',
  'host 1.2.3.4',
  'host 131.151.32.21 or host 192.168.1.2 or host 10.0.0.1 or host 192.168.10.17 or net 10.80.131.0/24',
  'len > 100',
  'greater 200',
  'less 64',
  'tcp[tcpflags] & tcp-syn != 0',
  'ether broadcast',
  'ip broadcast',
  'ip6 and udp port 6696',
  'ip[8] < 64',
  'vlan and tcp',
  'ether[0] & 1 = 1',
  'iso',
];

// file -> per EXPRS entry: packets tcpdump keeps, or the error it prints.
const EXPECTED: Record<string, (number | string)[]> = {
   "afs.pcap": [0, 576, 0, 0, 25, 0, 0, 601, 0, 0, 0, 0, 589, 529, 376, 0, 0, 0, 0, 0, 0, 0, 0, 0],
   "AoE_Linux.pcap": [0, 0, 0, 0, 0, 0, 0, 0, 186, 0, 0, 0, 0, 83, 83, 103, 0, 13, 0, 0, 0, 0, 13, 0],
   "accecn_handshake.pcap": [6, 0, 0, 0, 0, 0, 0, 6, 0, 6, 0, 0, 0, 2, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0],
   "ldp-common-session.pcap": [0, 4, 5, 0, 0, 0, 0, 17, 5, 13, 0, 0, 0, 4, 4, 5, 1, 0, 0, 0, 4, 0, 9, 0],
   "802.1ad_QinQ.pcap": [0, 0, 2, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 1, 0],
   "ipv4_tcp_http_xml.pcap": [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0],
   "arcnet-rfc1201-arp-icmp-http.pcap": [14, 4, "no VLAN support for Linux ARCNET", 0, 4, 0, 4, 22, 4, 14, 4, 0, 22, 4, 3, 13, 2, 1, 0, 0, 9, "no VLAN support for Linux ARCNET", 0, "expression rejects all packets"],
   "dhcp-rfc4388.pcap": [0, 36, 0, 0, 6, 0, 12, 42, 12, 0, 0, 0, 0, 36, 36, 15, 0, 1, 0, 0, 0, 0, 1, 0],
   "bootp_asan.pcap": [0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
   "arp-oobr.pcap": [0, 0, 0, 0, 0, 0, 2282, 0, 2282, 0, 0, 0, 0, 0, 0, 2282, 0, 2005, 0, 0, 0, 0, 2234, 0],
   "forces3.pcap": [0, 0, "no VLAN support for Linux cooked v1", 0, 0, 0, 0, 154, 0, 0, 0, 0, 0, 25, 12, 45, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Linux cooked v1", 0, 0],
   "babel.pcap": [0, 24, "no VLAN support for Linux cooked v1", 25, 0, 0, 0, 0, 25, 0, 0, 0, 0, 11, 3, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Linux cooked v1", 0, 0],
   "babel_rtt.pcap": [0, 9, "no VLAN support for Raw IP", 9, 0, 0, "expression rejects all packets", 0, 9, 0, 0, 0, 0, 1, 0, 0, 0, "not a broadcast link", 0, 9, 0, "no VLAN support for Raw IP", 0, "expression rejects all packets"],
   "gquic.pcap": [0, 1, "no VLAN support for Raw IP", 0, 0, 0, "expression rejects all packets", 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Raw IP", 1, "expression rejects all packets"],
   "LINKTYPE_RAW_ipv4.pcap": [0, 1, "no VLAN support for Raw IP", 0, 0, 0, "expression rejects all packets", 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Raw IP", 1, "expression rejects all packets"],
   "ikev2four.pcap": [0, 21, "no VLAN support for BSD loopback", 0, 0, 0, "expression rejects all packets", 21, 0, 0, 0, 0, 21, 20, 16, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for BSD loopback", 0, "expression rejects all packets"],
   "icmpv6-RFC2894-RR.pcap": [0, 0, "no VLAN support for BSD loopback", 6, 0, 6, "expression rejects all packets", 0, 6, 0, 0, 0, 0, 6, 0, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for BSD loopback", 0, "expression rejects all packets"],
   "ahcp.pcapng": [0, 8, 0, 8, 0, 0, 0, 0, 8, 0, 0, 0, 0, 8, 4, 0, 0, 0, 0, 0, 0, 0, 4, 0],
   "bgp-role.pcapng": [0, 0, "no VLAN support for Linux cooked v1", 0, 0, 0, 0, 9, 0, 9, 0, 0, 9, 2, 1, 0, 0, "not a broadcast link", 0, 0, 9, "no VLAN support for Linux cooked v1", 0, 0],
   "hdlc_slarp.pcapng": [0, 0, "no VLAN support for Cisco HDLC", 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 7, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Cisco HDLC", 7, 0],
   "ikev2pI2-segfault.pcapng": [0, 1, "no VLAN support for BSD loopback", 0, 0, 0, "expression rejects all packets", 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for BSD loopback", 0, "expression rejects all packets"],
   "HDLC.pcap": [0, 0, "no VLAN support for Cisco HDLC", 0, 10, 0, 0, 10, 28, 0, 0, 0, 10, 14, 4, 24, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Cisco HDLC", 38, 0],
   "lspping-fec-ldp.pcap": [0, 5, "no VLAN support for PPP", 0, 0, 0, 0, 5, 8, 0, 0, 0, 0, 0, 0, 6, 0, "not a broadcast link", 0, 0, 5, "no VLAN support for PPP", 13, 0],
   "esis_snpa_asan-4.pcap": [0, 0, "no VLAN support for Frame Relay", 0, 0, 0, "expression rejects all packets", 0, 5, 0, 0, 0, 0, 5, 5, 0, 0, "not a broadcast link", 0, 0, 0, "no VLAN support for Frame Relay", 1, 0],
};

// --- A small capture-file loader, so this test does not depend on the reader
// being written alongside it. It follows libpcap where it matters for counts:
// a record longer than the file's snaplen is cut to it.

interface Capture {
  linktype: number; // of the first interface
  snaplen: number;
  swapped: boolean; // written in the other byte order than this host's
  batch: Batch;
}

const HOST_LE = endianness() === 'LE';

function loadCapture(file: string): Capture {
  const b = readFileSync(file);
  const magicLE = b.readUInt32LE(0);
  return magicLE === 0x0a0d0d0a ? loadPcapng(b) : loadPcap(b);
}

function loadPcap(b: Buffer): Capture {
  const m = b.readUInt32LE(0);
  let le: boolean;
  let nano: boolean;
  if (m === 0xa1b2c3d4 || m === 0xa1b23c4d) [le, nano] = [true, m === 0xa1b23c4d];
  else if (b.readUInt32BE(0) === 0xa1b2c3d4 || b.readUInt32BE(0) === 0xa1b23c4d)
    [le, nano] = [false, b.readUInt32BE(0) === 0xa1b23c4d];
  else throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const snaplen = u32(16);
  const linktype = u32(20);
  const batch = new Batch(1 << 16);
  for (let o = 24; o + 16 <= b.length; ) {
    const caplen = u32(o + 8);
    const keep = Math.min(caplen, snaplen);
    if (o + 16 + caplen > b.length) break;
    batch.push(u32(o), nano ? u32(o + 4) : u32(o + 4) * 1000, b, o + 16, keep, u32(o + 12), linktype, 0);
    o += 16 + caplen;
  }
  return { linktype, snaplen, swapped: le !== HOST_LE, batch };
}

function loadPcapng(b: Buffer): Capture {
  let le = true;
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u16 = (o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  let ifaces: { linktype: number; snaplen: number; perSec: bigint }[] = [];
  const batch = new Batch(1 << 16);
  const push = (iface: number, ts: bigint, data: number, caplen: number, wirelen: number) => {
    const i = ifaces[iface];
    const sec = ts / i.perSec;
    const nsec = ((ts % i.perSec) * 1_000_000_000n) / i.perSec;
    const keep = i.snaplen > 0 ? Math.min(caplen, i.snaplen) : caplen;
    batch.push(Number(sec), Number(nsec), b, data, keep, wirelen, i.linktype, iface);
  };
  for (let o = 0; o + 12 <= b.length; ) {
    if (b.readUInt32LE(o) === 0x0a0d0d0a) {
      le = b.readUInt32LE(o + 8) === 0x1a2b3c4d;
      ifaces = [];
    }
    const type = u32(o);
    const len = u32(o + 4);
    if (len < 12 || o + len > b.length) break;
    const body = o + 8;
    if (type === 1) {
      let perSec = 1_000_000n;
      for (let p = body + 8; p + 4 <= o + len - 4; ) {
        const code = u16(p);
        const olen = u16(p + 2);
        if (code === 0) break;
        if (code === 9) {
          const r = b[p + 4];
          perSec = r & 0x80 ? 1n << BigInt(r & 0x7f) : 10n ** BigInt(r);
        }
        p += 4 + ((olen + 3) & ~3);
      }
      ifaces.push({ linktype: u16(body), snaplen: u32(body + 4), perSec });
    } else if (type === 6) {
      const ts = (BigInt(u32(body + 4)) << 32n) | BigInt(u32(body + 8));
      push(u32(body), ts, body + 20, u32(body + 12), u32(body + 16));
    } else if (type === 3) {
      const wirelen = u32(body);
      push(0, 0n, body + 4, Math.min(wirelen, len - 16), wirelen);
    }
    o += len;
  }
  return {
    linktype: ifaces[0]?.linktype ?? 1,
    snaplen: ifaces[0]?.snaplen ?? 262144,
    swapped: le !== HOST_LE,
    batch,
  };
}

const cache = new Map<string, Capture>();
function capture(name: string): Capture {
  let c = cache.get(name);
  if (!c) {
    c = loadCapture(path.resolve(CORPUS, name));
    cache.set(name, c);
  }
  return c;
}

/** A copy of a batch, so each filter starts from unmarked records. */
function copyBatch(src: Batch): Batch {
  const b = new Batch(Math.max(src.bytes, 8));
  src.buf.copy(b.buf, 0, 0, src.bytes);
  b.count = src.count;
  b.bytes = src.bytes;
  return b;
}

function kept(b: Batch): number {
  let n = 0;
  for (const o of b.offsets()) if (!(recordAt(b, o).flags & FLAG_FILTERED_OUT)) n++;
  return n;
}

/** Every record of `srcs`, interleaved round-robin, in one batch. */
function interleave(srcs: Batch[]): Batch {
  const out = new Batch(1 << 16);
  const offs = srcs.map((s) => s.offsets());
  for (let i = 0; offs.some((l) => i < l.length); i++) {
    srcs.forEach((s, k) => {
      if (i >= offs[k].length) return;
      const r = recordAt(s, offs[k][i]);
      out.push(r.sec, r.nsec, r.data, 0, r.caplen, r.wirelen, r.linktype, r.iface, r.flags);
    });
  }
  return out;
}

describe('loader sanity (guards the expected counts below)', () => {
  // EXPECTED.tsv is how libpcap reads each file; a loader bug would otherwise
  // show up as a filter mismatch.
  const tsv = readFileSync(path.join(CORPUS, 'EXPECTED.tsv'), 'utf8');
  const truth = new Map(
    tsv
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => l.split('\t'))
      .map((f) => [f[0], { linktype: Number(f[2]), packets: Number(f[3]), bytes: Number(f[4]) }]),
  );
  for (const name of Object.keys(EXPECTED)) {
    test(name, () => {
      const c = capture(name);
      const t = truth.get(name)!;
      let bytes = 0;
      for (const o of c.batch.offsets()) bytes += recordAt(c.batch, o).caplen;
      assert.deepEqual(
        { linktype: c.linktype, packets: c.batch.count, bytes },
        { linktype: t.linktype, packets: t.packets, bytes: t.bytes },
      );
    });
  }
});

describe('compile errors', { skip: noAddon }, () => {
  test('carry libpcap\'s message, prefixed with the expression', () => {
    assert.throws(
      () => compileFilter('tcp prt 80', 1),
      (e: unknown) =>
        e instanceof FilterError &&
        e.message === "filter 'tcp prt 80': can't parse filter expression: syntax error" &&
        e.pcapMessage === "can't parse filter expression: syntax error" &&
        e.expr === 'tcp prt 80',
    );
  });

  test('link-type specific errors are libpcap\'s too', () => {
    const cases: [string, number, string][] = [
      ['vlan', 101, 'no VLAN support for Raw IP'],
      ['vlan', 113, 'no VLAN support for Linux cooked v1'],
      ['arp', 101, 'expression rejects all packets'],
      ['ether broadcast', 0, 'not a broadcast link'],
      ['ether host 1.2.3.4', 1, 'illegal link layer address'],
      ['port 99999', 1, 'illegal port number 99999 > 65535'],
    ];
    for (const [expr, lt, msg] of cases) {
      assert.throws(
        () => compileFilter(expr, lt),
        (e: unknown) => e instanceof FilterError && e.pcapMessage === msg && e.message === `filter '${expr}': ${msg}`,
        `${expr} on linktype ${lt}`,
      );
    }
  });

  test('an empty expression passes everything, as with no filter', () => {
    const b = new Batch();
    b.push(0, 0, Buffer.alloc(60), 0, 60, 60, 1, 0);
    assert.equal(compileFilter('', 1).apply(b), 1);
  });

  test('libpcap version is reported', () => {
    assert.match(libpcapVersion() ?? '', /libpcap version \d/);
  });
});

describe('filters count what tcpdump counts', { skip: noBoth }, () => {
  for (const [name, row] of Object.entries(EXPECTED)) {
    test(name, () => {
      const c = capture(name);
      for (let i = 0; i < EXPRS.length; i++) {
        const expr = EXPRS[i];
        const want = row[i];
        if (typeof want === 'string') {
          assert.throws(
            () => compileFilter(expr, c.linktype, c.snaplen, { swapped: c.swapped }),
            (e: unknown) => e instanceof FilterError && e.pcapMessage === want,
            `${name}: '${expr}' should fail with "${want}"`,
          );
          continue;
        }
        const b = copyBatch(c.batch);
        const passed = compileFilter(expr, c.linktype, c.snaplen, { swapped: c.swapped }).apply(b);
        assert.equal(passed, want, `${name}: '${expr}'`);
        assert.equal(kept(b), want, `${name}: '${expr}' marks`);
      }
    });
  }
});

describe('filters over batches from the project reader (capture/file.ts)', { skip: noBoth }, () => {
  // The loader above is this test's own; riff reads files with openCaptureFile.
  // Every corpus file here is little-endian, so `swapped` is false on a
  // little-endian host (the reader does not report byte order).
  for (const [name, row] of Object.entries(EXPECTED)) {
    test(name, () => {
      const f = openCaptureFile(path.join(CORPUS, name));
      const all = new Batch();
      try {
        while (f.fill(all, 1 << 20) > 0);
      } finally {
        f.close();
      }
      assert.equal(all.count, capture(name).batch.count, 'packets read');
      for (let i = 0; i < EXPRS.length; i++) {
        const want = row[i];
        if (typeof want === 'string') continue;
        const b = copyBatch(all);
        const passed = compileFilter(EXPRS[i], f.linktype, f.snaplen, { swapped: !HOST_LE }).apply(b);
        assert.equal(passed, want, `${name}: '${EXPRS[i]}'`);
      }
    });
  }
});

/** test/helpers.ts writeEncapCapture's flows, made once: tunnels and shims one way only, VXLAN's ports. */
let encapPath = '';
function encapFile(): string {
  if (!encapPath) writeEncapCapture((encapPath = path.join(scratchDir(), 'encap.pcap')));
  return encapPath;
}

describe('sharding by flow in the addon (--workers N) is flow.ts\'s, record for record', { skip: noBoth }, () => {
  for (const [label, impl] of [['the addon', () => loadNative()], ['its JS twin (no addon)', () => jsSharding]] as const)
  test(`${label}: every corpus file, 2, 3 and 7 workers, with filtered records among them`, () => {
    const native = impl();
    let checked = 0;
    for (const name of [...Object.keys(EXPECTED), encapFile()]) {
      const src = capture(name).batch;
      if (!src.count) continue;
      for (const n of [2, 3, 7]) {
        const b = copyBatch(src);
        const offs = b.offsets();
        offs.forEach((o, i) => i % 5 === 4 && b.view.setUint32(o + 28, b.view.getUint32(o + 28, true) | FLAG_FILTERED_OUT, true));
        const shards = new Uint8Array(b.count);
        const bytes = new Uint32Array(n);
        const before = Buffer.from(b.buf.subarray(0, b.bytes));
        native.shardPlan(b.buf, b.count, n, shards, bytes, true);
        const want = new Uint32Array(n);
        offs.forEach((o, i) => {
          const flags = before.readUInt32LE(o + 28);
          const w = flags & FLAG_FILTERED_OUT ? 255 : shardOf(new DataView(before.buffer, before.byteOffset, before.length), o, n);
          assert.equal(shards[i], w, `${name}, ${n} workers, record ${i}`);
          if (w !== 255) want[w] += HDR + align8(before.readUInt32LE(o + 12));
          // Records for other workers are flagged in place; nothing else changes.
          assert.equal(b.view.getUint32(o + 28, true), w !== 255 && w !== 0 ? flags | FLAG_ELSEWHERE : flags, `${name} flags ${i}`);
        });
        assert.deepEqual([...bytes], [...want], `${name}, ${n} workers: bytes per worker`);
        for (let w = 0; w < n; w++) {
          const dst = Buffer.alloc(bytes[w] + 16, 0xee);
          const k = native.shardCopy(b.buf, b.count, shards, w, dst, 8);
          let at = 8;
          let m = 0;
          offs.forEach((o, i) => {
            if (shards[i] !== w) return;
            const size = HDR + align8(before.readUInt32LE(o + 12));
            assert.ok(dst.subarray(at, at + size).equals(before.subarray(o, o + size)), `${name}: worker ${w}'s record ${m}`);
            at += size;
            m++;
          });
          assert.equal(k, m);
          assert.equal(dst.readUInt32LE(bytes[w] + 8), 0xeeeeeeee, 'nothing written past the records');
          checked += k;
        }
      }
    }
    assert.ok(checked > 5000, `${checked} records checked`);
  });
});

describe('overheard packets and sharding by service: the addon and its JS twin agree', { skip: noBoth }, () => {
  test('every corpus file, 3 workers: the same plan, flags, ends and copies; overheard copies reach every worker', () => {
    const hear = new Uint8Array(8192);
    for (const p of [53, 21, 69]) hear[p >> 3] |= 1 << (p & 7);
    let heard = 0;
    const DNS = ['dns_udp.pcap', 'dns_tcp.pcap', 'dnssec.pcap', 'edns-opts.pcap', 'dns-badcookie.pcap'];
    for (const name of new Set([...Object.keys(EXPECTED), ...DNS, encapFile()])) {
      const src = capture(name).batch;
      if (!src.count) continue;
      for (const byService of [false, true]) {
        const n = 3;
        const runs = [loadNative(), jsSharding].map((impl) => {
          const b = copyBatch(src);
          const shards = new Uint8Array(b.count);
          const bytes = new Uint32Array(n + 2);
          impl.shardPlan(b.buf, b.count, n, shards, bytes, true, hear, byService);
          const copies = [0, 1, 2].map((w) => {
            const dst = Buffer.alloc(bytes[w] + 8);
            const k = impl.shardCopy(b.buf, b.count, shards, w, dst, 0);
            return { k, dst: dst.toString('hex') };
          });
          return { shards: [...shards], bytes: [...bytes], flags: Buffer.from(b.buf.subarray(0, b.bytes)).toString('hex'), copies };
        });
        assert.deepEqual(runs[1], runs[0], `${name}, byService ${byService}`);
        const b = runs[0].shards.filter((x) => x !== 255 && x & 0x80).length;
        // An overheard record is in every worker's copy: n copies, once each.
        assert.equal(runs[0].copies.reduce((t, c) => t + c.k, 0), runs[0].shards.filter((x) => x !== 255).length + b * (n - 1), name);
        heard += b;
      }
    }
    assert.ok(heard > 100, `${heard} overheard records`);
  });
});

describe('filter semantics', { skip: noBoth }, () => {
  test('records already filtered out are left alone and not counted', () => {
    const b = copyBatch(capture('afs.pcap').batch);
    assert.equal(compileFilter('udp', 1).apply(b), 576);
    // 'icmp' alone keeps 25; after 'udp' none of those remain.
    assert.equal(compileFilter('icmp', 1).apply(b), 0);
    assert.equal(kept(b), 0);
    const c = copyBatch(capture('afs.pcap').batch);
    compileFilter('ip', 1).apply(c);
    assert.equal(compileFilter('greater 200', 1).apply(c), 376);
  });

  test('a batch mixing link types is filtered per link type', () => {
    const names = ['afs.pcap', 'forces3.pcap', 'babel_rtt.pcap', 'ikev2four.pcap', 'ahcp.pcapng', 'HDLC.pcap'];
    const mixed = interleave(names.map((n) => capture(n).batch));
    for (const expr of ['udp', 'ip', 'ip6', 'len > 100', 'icmp']) {
      const col = EXPRS.indexOf(expr);
      const want = names.reduce((s, n) => s + (EXPECTED[n][col] as number), 0);
      const b = copyBatch(mixed);
      assert.equal(compileFilter(expr, 1).apply(b), want, expr);
      assert.equal(kept(b), want, `${expr} marks`);
    }
  });

  test('link types an expression cannot apply to are rejected and reported', () => {
    const names = ['ldp-common-session.pcap', 'forces3.pcap', 'babel_rtt.pcap'];
    const b = interleave(names.map((n) => capture(n).batch));
    const f = compileFilter('vlan', 1);
    assert.equal(f.apply(b), 5);
    assert.equal(kept(b), 5);
    assert.deepEqual(
      [...f.unsupported].sort((x, y) => x[0] - y[0]),
      [
        [101, 'no VLAN support for Raw IP'],
        [113, 'no VLAN support for Linux cooked v1'],
      ],
    );
  });

  test('many distinct link types in one batch', () => {
    // More link types than the addon reports per call exercises the JS fallback.
    const b = new Batch();
    const pkt = Buffer.alloc(64);
    for (let i = 0; i < 80; i++) b.push(0, 0, pkt, 0, 64, 64, 147 + (i % 40), 0);
    b.push(0, 0, pkt, 0, 64, 64, 0x04000001, 0); // Ethernet with an FCS length: a link type of its own
    assert.equal(compileFilter('len >= 64', 1).apply(copyBatch(b)), 81);
    assert.equal(compileFilter('len > 64', 1).apply(copyBatch(b)), 0);
  });

  test('reserved link-type bits are refused, as tcpdump -r refuses them', () => {
    assert.throws(
      () => compileFilter('tcp', 0x10001),
      (e: unknown) => e instanceof FilterError && /^unknown data link type 65537\b/.test(e.pcapMessage),
    );
  });

  test('DLT_NULL captured on a machine of the other byte order needs `swapped`', () => {
    // The AF_ word of DLT_NULL is in the capturing host's byte order. These
    // batches are what a reader hands over for the corpus files rewritten as
    // big-endian captures (header, records and AF_ word swapped); tcpdump -r
    // on those files counts: ip6 6/0, ip 0/21, udp 0/21.
    const asBigEndianCapture = (name: string) => {
      const b = copyBatch(capture(name).batch);
      for (const o of b.offsets()) b.buf.subarray(o + HDR, o + HDR + 4).reverse();
      return b;
    };
    const v6 = asBigEndianCapture('icmpv6-RFC2894-RR.pcap');
    const v4 = asBigEndianCapture('ikev2four.pcap');
    const count = (expr: string, b: Batch, swapped: boolean) =>
      compileFilter(expr, 0, 65535, { swapped }).apply(copyBatch(b));
    const swapped = HOST_LE; // a big-endian file is swapped on a little-endian host
    assert.deepEqual(
      [count('ip6', v6, swapped), count('ip6', v4, swapped), count('ip', v6, swapped), count('ip', v4, swapped)],
      [6, 0, 0, 21],
    );
    assert.equal(count('udp', v4, swapped), 21);
    // Compiled for the wrong byte order, IPv4 matches nothing.
    assert.equal(count('ip', v4, !swapped), 0);
  });

  test('wire length: taken from the header, or caplen for arrival-stamped records', () => {
    const b = new Batch();
    b.push(0, 0, Buffer.alloc(60), 0, 60, 1500, 1, 0);
    b.push(0, 0, Buffer.alloc(60), 0, 60, 1500, 1, 0, FLAG_ARRIVAL_TS);
    assert.equal(compileFilter('len > 100', 1).apply(b), 1);
    assert.equal(recordAt(b, b.offsets()[1]).flags, FLAG_ARRIVAL_TS | FLAG_FILTERED_OUT);
  });

  test('an empty batch', () => {
    assert.equal(compileFilter('tcp', 1).apply(new Batch(64)), 0);
  });

  test('a batch whose records run past its byte count is refused untouched', () => {
    const b = copyBatch(capture('afs.pcap').batch);
    const before = Buffer.from(b.buf.subarray(0, b.bytes));
    b.bytes -= 8;
    assert.throws(() => compileFilter('tcp', 1).apply(b), RangeError);
    assert.deepEqual(b.buf.subarray(0, before.length), before);
    b.bytes = b.buf.length + 8;
    assert.throws(() => compileFilter('tcp', 1).apply(b), RangeError);
    // Sharding (the addon's and its JS twin) checks the same way before flagging anything.
    const short = b.buf.subarray(0, before.length - 8);
    for (const sharding of [loadNative(), jsSharding]) {
      assert.throws(() => sharding.shardPlan(short, b.count, 2, new Uint8Array(b.count), new Uint32Array(2), true), /shardPlan: record \d+ .*runs past/);
      assert.deepEqual(b.buf.subarray(0, before.length), before);
      assert.throws(() => sharding.shardCopy(short, b.count, new Uint8Array(b.count), 0, Buffer.alloc(before.length), 0), /shardCopy: record/);
    }
  });

  test('the addon refuses a program it cannot validate', () => {
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
    const native = createRequire(import.meta.url)(
      path.join(root, 'src/capture/native/build/Release/riff_pcap.node'),
    ) as { apply(p: Buffer, b: Buffer, c: number, n: number): number };
    const b = new Batch();
    b.push(0, 0, Buffer.alloc(60), 0, 60, 60, 1, 0);
    // A jump past the end of the program.
    const bad = Buffer.from([0x05, 0, 0, 0, 100, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0, 0]);
    assert.throws(() => native.apply(bad, b.buf, 1, b.bytes), TypeError);
    assert.throws(() => native.apply(Buffer.alloc(7), b.buf, 1, b.bytes), TypeError);
  });
});

// --- PcapWriter

const tmp = mkdtempSync(path.join(tmpdir(), 'riff-filter-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function readPcap(file: string) {
  const c = loadPcap(readFileSync(file));
  let bytes = 0;
  const recs = c.batch.offsets().map((o) => recordAt(c.batch, o));
  for (const r of recs) bytes += r.caplen;
  return { ...c, recs, bytes };
}

describe('PcapWriter', () => {
  test('the file is a valid empty capture as soon as it is opened', () => {
    const out = path.join(tmp, 'empty.pcap');
    const w = new PcapWriter(out, 113, 65535);
    const h = readFileSync(out);
    assert.equal(h.length, 24);
    assert.equal(h.readUInt32LE(0), 0xa1b2c3d4);
    assert.deepEqual([h.readUInt16LE(4), h.readUInt16LE(6)], [2, 4]);
    assert.deepEqual([h.readUInt32LE(16), h.readUInt32LE(20)], [65535, 113]);
    w.close();
    w.close();
    assert.equal(statSync(out).size, 24);
    assert.throws(() => w.write(new Batch(64)));
  });

  test('records: µs timestamps, caplen and wirelen kept, snaplen cut, link type checked', () => {
    const out = path.join(tmp, 'records.pcap');
    const b = new Batch();
    const data = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
    b.push(1700000000, 123456789, data, 0, 100, 1514, 1, 0);
    b.push(1700000001, 999, data, 0, 50, 50, 1, 0, FLAG_FILTERED_OUT);
    b.push(1700000002, 5000, data, 0, 60, 999, 1, 0, FLAG_ARRIVAL_TS);
    b.push(1700000003, 0, data, 0, 60, 60, 113, 0);
    b.push(1700000004, 1000, data, 0, 200, 300, 1, 0);
    const w = new PcapWriter(out, 1, 128);
    w.write(b);
    w.close();
    assert.equal(w.written, 3);
    assert.equal(w.skipped, 1);
    const r = readPcap(out).recs;
    assert.deepEqual(
      r.map((x) => [x.sec, x.nsec, x.caplen, x.wirelen]),
      [
        [1700000000, 123456000, 100, 1514],
        [1700000002, 5000, 60, 60],
        [1700000004, 1000, 128, 300],
      ],
    );
    assert.deepEqual(r[0].data, data.subarray(0, 100));
    assert.deepEqual(r[2].data, data.subarray(0, 128));
  });

  test('records larger than the write buffer', () => {
    const out = path.join(tmp, 'big.pcap');
    const big = Buffer.alloc(3 << 20, 7);
    const b = new Batch();
    b.push(1, 0, big, 0, 1000, 1000, 1, 0);
    b.push(2, 0, big, 0, big.length, big.length, 1, 0);
    b.push(3, 0, big, 0, 1000, 1000, 1, 0);
    const w = new PcapWriter(out, 1, 0x7fffffff);
    w.write(b);
    w.close();
    assert.deepEqual(
      readPcap(out).recs.map((x) => x.caplen),
      [1000, big.length, 1000],
    );
  });

  test('round trip: filtered packets written, read back', { skip: noBoth }, (t) => {
    const c = capture('afs.pcap');
    const b = copyBatch(c.batch);
    const passed = compileFilter('udp', c.linktype, c.snaplen).apply(b);
    let bytes = 0;
    for (const o of b.offsets()) {
      const r = recordAt(b, o);
      if (!(r.flags & FLAG_FILTERED_OUT)) bytes += r.caplen;
    }
    const out = path.join(tmp, 'afs-udp.pcap');
    const w = new PcapWriter(out, c.linktype, c.snaplen);
    // In several writes, as a capture would deliver them.
    const offs = b.offsets();
    for (let i = 0; i < offs.length; i += 100) {
      const part = new Batch();
      const end = i + 100 < offs.length ? offs[i + 100] : b.bytes;
      b.buf.copy(part.buf, 0, offs[i], end);
      part.count = Math.min(100, offs.length - i);
      part.bytes = end - offs[i];
      w.write(part);
    }
    w.close();
    assert.equal(w.written, passed);
    const back = readPcap(out);
    assert.equal(back.recs.length, 576);
    assert.equal(back.bytes, bytes);
    assert.equal(back.linktype, 1);

    if (!haveTcpdump) return t.skip(noTcpdump);
    const count = execFileSync('tcpdump', ['-r', out, '--count'], { stdio: ['ignore', 'pipe', 'ignore'] });
    assert.equal(count.toString().trim(), '576 packets');
    // tcpdump -w writes the same file, byte for byte.
    const ref = path.join(tmp, 'afs-udp-tcpdump.pcap');
    execFileSync('tcpdump', ['-r', path.join(CORPUS, 'afs.pcap'), '-w', ref, 'udp'], { stdio: 'ignore' });
    assert.ok(readFileSync(out).equals(readFileSync(ref)), 'identical to tcpdump -w');
  });

  test('stays valid when a SIGINT handler closes it', async (t) => {
    const out = path.join(tmp, 'sigint.pcap');
    const writerUrl = new URL('../src/outputs/pcap-writer.js', import.meta.url).href;
    const batchUrl = new URL('../src/capture/batch.js', import.meta.url).href;
    // The child writes continuously; the handler closes the writer mid-stream.
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `
        import { PcapWriter } from ${JSON.stringify(writerUrl)};
        import { Batch } from ${JSON.stringify(batchUrl)};
        const w = new PcapWriter(process.argv[1], 1);
        process.on('SIGINT', () => { w.close(); console.log(w.written); process.exit(0); });
        const b = new Batch();
        const pkt = Buffer.alloc(333, 1);
        for (let i = 0; i < 1000; i++) b.push(i, i * 1000, pkt, 0, 333, 400, 1, 0);
        let ticks = 0;
        const tick = () => { w.write(b); if (++ticks === 3) console.log('ready'); setImmediate(tick); };
        tick();
        `,
        out,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let stdout = '';
    const done = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve) =>
      child.stdout.on('data', (d: Buffer) => {
        stdout += d;
        if (stdout.includes('ready')) resolve();
      }),
    );
    child.kill('SIGINT');
    assert.equal(await done, 0);
    const written = Number(stdout.trim().split('\n').pop());
    const back = readPcap(out);
    assert.ok(written >= 3000);
    assert.equal(back.recs.length, written);
    assert.equal(statSync(out).size, 24 + written * (16 + 333));
    if (!haveTcpdump) return t.skip(noTcpdump);
    const count = execFileSync('tcpdump', ['-r', out, '--count'], { stdio: ['ignore', 'pipe', 'ignore'] });
    assert.equal(count.toString().trim(), `${written} packets`);
  });
});

