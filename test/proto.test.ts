// riff's Lua protocol decoders (lua/proto/: packet, dns, http) checked
// against tshark, packet by packet. fixtures/proto/dump.lua prints what the
// decoders find in columns named after tshark fields; the expected values
// are tshark's, saved by scripts/gen-proto-expected.ts as
// fixtures/proto/<capture>.tsv (tshark is not needed here). Also: malformed
// and truncated input never raises a Lua error, and the DNS/HTTP edge cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { riff, tree, tmpdir, FIXTURES, CORPUS } from './helpers.js';

const PROTO = path.join(FIXTURES, 'proto');
// The expectations: fixtures/proto, or a directory written by
// gen-proto-expected --all (every corpus capture).
const EXPECT = process.env.PROTO_EXPECT_DIR ?? PROTO;
const DUMP = path.join(PROTO, 'dump.lua');

type Row = Record<string, string>;

function parseTsv(text: string): { cols: string[]; rows: Row[] } {
  const lines = text.split('\n').filter((l) => l !== '');
  const cols = lines[0].split('\t');
  const rows = lines.slice(1).map((l) => {
    const v = l.split('\t');
    const r: Row = {};
    cols.forEach((c, i) => (r[c] = v[i] ?? ''));
    return r;
  });
  return { cols, rows };
}

function locate(name: string): string | undefined {
  for (const dir of [PROTO, FIXTURES, CORPUS]) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

// ------------------------------------------------------------------ normalization
//
// tshark and riff legitimately differ in these ways; expected() turns tshark's
// row into what riff should print:
//
// * tshark follows tunnels and quoted packets (ICMP errors carry the start of
//   the offending IP packet; GRE, IP-in-IP...), so a field can occur several
//   times, outermost first. riff decodes the outer headers only: the expected
//   value is the first occurrence, and for a layer tshark found only inside a
//   quoted/tunnelled packet (after icmp/icmpv6/gre or a second IP header in
//   frame.protocols) the expected value is empty.
// * tshark puts 802.1ad tags in ieee8021ad.id and 802.1Q tags in vlan.id;
//   riff lists all tags outermost first. The order comes from frame.protocols.
// * tshark's tcp.len is what the IP length implies; riff's payload is what was
//   captured. They are compared only for packets riff does not call truncated.
// * tshark names the root "<Root>"; riff ".".
// * IPv6 extension headers: riff lists their numbers; tshark shows them as
//   protocols (ipv6.hopopts, ipv6.routing, ipv6.fraghdr, ipv6.dstopts, ah).
// * riff decodes the transport header of a first fragment (MF set, offset 0);
//   tshark with reassembly off shows it as data. Transport columns are
//   skipped for those packets.
// * DNS: tshark stops at records it cannot decode and prints placeholders
//   ("<Name too long>"...); riff reports malformed. DNS columns are compared
//   only for messages riff parsed without complaint. tshark shows the rcode of
//   responses only, and gives SRV owner names as service/proto/name fields
//   rather than dns.resp.name (riff's SRV owner names are left out).
// * A header the capture cut short: tshark shows the fields that were
//   captured; riff has a layer only when its fixed header is all there (and
//   sets truncated). Empty riff columns of a truncated packet are not compared.
// * tshark prints ip.frag_offset in 8-byte units, riff in bytes; tshark
//   prints the bytes of tcp.options.sack_perm, riff a flag; for an IPv4 total
//   length of 0 (TSO) tshark shows the captured length, riff the header's 0.
// * An impossible IPv4 header length or total length: tshark then shows only
//   ip.hdr_len; riff keeps the header's fields and sets malformed. The
//   other ip.* columns are not compared for those packets.
// * IPv6 payload length 0 without a Jumbo option: riff takes the captured
//   length (as for TSO/BIG TCP captures) and decodes what follows; tshark
//   treats the payload as empty. (No test capture has this.)
// * SLL protocol: tshark files it under sll.etype, sll.gretype (ARPHRD 778)
//   or sll.ltype (values below 0x600); riff has one protocol field.

const TUNNEL_TOKENS = new Set(['icmp', 'icmpv6', 'gre', 'vxlan', 'geneve', 'erspan', 'mpls', 'teredo', 'gtp', 'l2tp', 'ipcomp']);
const EXT_TOKENS: Record<string, string> = { 'ipv6.hopopts': '0', 'ipv6.routing': '43', 'ipv6.fraghdr': '44', 'ipv6.dstopts': '60', ah: '51', 'ipv6.shim6': '140' };
const DNS_TOKENS = new Set(['dns', 'mdns', 'llmnr']);

const group = (col: string): string => {
  if (col.startsWith('riff.')) return 'riff';
  if (col === 'ieee8021ad.id') return 'vlan';
  return col.split('.')[0];
};

function outerProtocols(protocols: string): string[] {
  const toks = protocols.split(':');
  let ips = 0;
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (t === 'ip' || t === 'ipv6') {
      ips++;
      if (ips > 1) return toks.slice(0, i);
    }
    if (TUNNEL_TOKENS.has(t)) return toks.slice(0, i + 1);
  }
  return toks;
}

const first = (v: string) => (v === '' ? '' : v.split('|')[0]);

/** What riff should print for each column (undefined: not compared). */
function expected(t: Row, r: Row, cols: string[]): Record<string, string | undefined> {
  const outer = outerProtocols(t['frame.protocols']);
  const has = (tok: string) => outer.includes(tok);
  const e: Record<string, string | undefined> = {};
  const firstFragment = r['ip.flags.mf'] === '1' && r['ip.frag_offset'] === '0' || r['riff.ipv6.ext'].split('|').includes('44');
  for (const c of cols) {
    const g = group(c);
    const tv = t[c] ?? '';
    if (g === 'riff' || c === 'frame.number') continue;
    if (g === 'dns') {
      if (r['riff.dns.malformed'] !== '' || ![...DNS_TOKENS].some(has)) {
        e[c] = undefined;
        continue;
      }
      e[c] = tv.replace(/<Root>/g, '.');
      continue;
    }
    if (g === 'http') {
      e[c] = has('http') ? tv : '';
      continue;
    }
    if ((g === 'tcp' || g === 'udp') && firstFragment) {
      e[c] = undefined;
      continue;
    }
    if (['eth', 'sll', 'null', 'ip', 'ipv6', 'tcp', 'udp', 'icmp', 'icmpv6'].includes(g)) {
      e[c] = has(g) ? first(tv) : '';
      continue;
    }
    e[c] = tv;
  }
  // VLAN tags in wire order.
  const v = t['vlan.id'] ? t['vlan.id'].split('|') : [];
  const ad = t['ieee8021ad.id'] ? t['ieee8021ad.id'].split('|') : [];
  const tags: string[] = [];
  for (const tok of outer) {
    if (tok === 'vlan' && v.length) tags.push(v.shift()!);
    if (tok === 'ieee8021ad' && ad.length) tags.push(ad.shift()!);
  }
  e['vlan.id'] = tags.join('|');
  delete e['ieee8021ad.id'];
  // tcp.len only when riff saw the whole packet; no partial headers.
  if (r['riff.truncated'] !== '') {
    e['tcp.len'] = undefined;
    for (const c of Object.keys(e)) if ((r[c] ?? '') === '') e[c] = undefined;
  }
  if (t['dns.flags.response'] === '0') e['dns.flags.rcode'] = undefined;
  if (/^IPv4 (header|total) length/.test(r['riff.malformed'])) {
    for (const c of Object.keys(e)) if (c.startsWith('ip.') && c !== 'ip.hdr_len') e[c] = undefined;
  }
  if (e['ip.frag_offset']) e['ip.frag_offset'] = String(Number(e['ip.frag_offset']) * 8);
  if (e['tcp.options.sack_perm']) e['tcp.options.sack_perm'] = '1';
  if (r['ip.len'] === '0') e['ip.len'] = undefined;
  if (has('sll')) e['sll.etype'] = first(t['sll.etype'] || t['sll.gretype'] || t['sll.ltype'] || '');
  // Extension header chain of the outer IPv6 header.
  if (has('ipv6')) {
    const i = outer.indexOf('ipv6');
    const chain: string[] = [];
    for (const tok of outer.slice(i + 1)) {
      if (!(tok in EXT_TOKENS)) break;
      chain.push(EXT_TOKENS[tok]);
    }
    e['riff.ipv6.ext'] = chain.join('|');
  }
  return e;
}

// ------------------------------------------------------------------ the comparison

const tsvFiles = fs.existsSync(EXPECT) ? fs.readdirSync(EXPECT).filter((f) => f.endsWith('.tsv')).sort() : [];

interface Mismatch {
  file: string;
  frame: string;
  col: string;
  tshark: string;
  riff: string;
}

// Packets riff must flag (file -> frame -> column that must be non-empty).
const MUST_FLAG: Record<string, Record<string, string>> = {
  'ipv4_invalid_hdr_length.pcap': { 1: 'riff.malformed' },
  'ipv4_invalid_total_length.pcap': { 1: 'riff.truncated' },
  'ip-misc.pcap': { 4: 'riff.fragment', 9: 'riff.fragment', 13: 'riff.truncated', 14: 'riff.truncated' },
  'afs.pcap': { 126: 'riff.fragment' },
};

const summary: string[] = [];
const perColumn = new Map<string, number>();

for (const tsv of tsvFiles) {
  const name = tsv.slice(0, -4);
  const capture = locate(name);
  test(`proto decoders agree with tshark on ${name}`, () => {
    assert.ok(capture, `${name} is in none of ${PROTO}, ${FIXTURES}, ${CORPUS}`);
    const want = parseTsv(fs.readFileSync(path.join(EXPECT, tsv), 'utf8'));
    const run = riff(['-q', '--lua', DUMP, '-r', capture!]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^0 Lua errors$/m);
    const got = parseTsv(run.stdout.toString('utf8'));
    assert.equal(got.rows.length, want.rows.length, 'one line per packet');
    const bad: Mismatch[] = [];
    let compared = 0;
    for (let i = 0; i < want.rows.length; i++) {
      const t = want.rows[i];
      const r = got.rows[i];
      assert.equal(r['frame.number'], t['frame.number']);
      assert.equal(r['riff.reuse'], '', `frame ${t['frame.number']}: decode.reusable() disagrees with decode()`);
      // SRV owner names: see above.
      const types = r['dns.resp.type'].split('|');
      if (types.includes('33')) r['dns.resp.name'] = r['dns.resp.name'].split('|').filter((_, k) => types[k] !== '33').join('|');
      const e = expected(t, r, got.cols.filter((c) => c in t || c === 'riff.ipv6.ext'));
      for (const [c, v] of Object.entries(e)) {
        if (v === undefined) continue;
        if (v !== '') {
          compared++;
          perColumn.set(c, (perColumn.get(c) ?? 0) + 1);
        }
        if ((r[c] ?? '') !== v) bad.push({ file: name, frame: t['frame.number'], col: c, tshark: v, riff: r[c] ?? '' });
      }
    }
    for (const [frame, col] of Object.entries(MUST_FLAG[name] ?? {})) {
      assert.notEqual(got.rows[Number(frame) - 1][col], '', `${name} frame ${frame}: ${col} should be set`);
    }
    summary.push(`${name}: ${want.rows.length} packets, ${compared} non-empty values, ${bad.length} differences`);
    if (process.env.PROTO_DEBUG) for (const b of bad) console.error(JSON.stringify(b));
    assert.deepEqual(bad.slice(0, 20), [], `${bad.length} differences from tshark`);
  });
}

test('summary of the tshark comparison', { skip: tsvFiles.length === 0 }, () => {
  // Printed for the record (node --test shows diagnostics).
  for (const s of summary) console.log(`# ${s}`);
  console.log(`# non-empty values compared per column: ${[...perColumn].map(([c, n]) => `${c}=${n}`).join(' ')}`);
  // Each column is really exercised somewhere.
  for (const c of ['eth.src', 'vlan.id', 'sll.pkttype', 'sll.ifindex', 'null.family', 'ip.src', 'ip.frag_offset', 'ipv6.src',
    'tcp.seq_raw', 'tcp.options.mss_val', 'tcp.options.timestamp.tsval', 'tcp.len', 'udp.length', 'icmp.type', 'icmpv6.type',
    'dns.qry.name', 'dns.a', 'dns.aaaa', 'dns.cname', 'dns.ptr.domain_name', 'dns.ns', 'dns.mx.mail_exchange', 'dns.txt',
    'dns.soa.mname', 'http.request.method', 'http.host', 'http.user_agent', 'http.response.code', 'riff.ipv6.ext']) {
    assert.ok((perColumn.get(c) ?? 0) > 0, `no ${c} value compared`);
  }
});

// ------------------------------------------------------------------ never an error

// Every packet of the corpus, with its own link type and every other one, cut
// at every length up to 96 bytes (then every 97th), and with bytes flipped:
// decode must return, and so must dns.parse / dns.parse_tcp / http.parse on
// the payloads and on arbitrary slices.
const FUZZ_LUA = `
local decode = require "proto.packet"
local dns = require "proto.dns"
local http = require "proto.http"
local LTS = { 1, 113, 276, 0, 108, 101, 12, 14, 228, 229, 9, 50, 104, 0x30000001, 0x04000001 | (2 << 28), -1, 1.5, 2^70 }
local errors, calls, layers = 0, 0, 0
local function touch(pkt)
  -- read every lazy field, so the builders run too
  for _, k in ipairs { "eth", "vlan", "sll", "null", "ip", "ip4", "ip6", "tcp", "udp", "icmp", "icmp6", "payload" } do
    local v = pkt[k]
    if type(v) == "table" then
      layers = layers + 1
      for _, f in ipairs { "src", "dst", "src_raw", "dst_raw", "options", "ext", "hlen", "frag_offset", "mf", "frag_id", "jumbo" } do local _ = v[f] end
    end
  end
  local p = pkt.payload
  if p then
    dns.parse(p) dns.parse_tcp(p) http.parse(p)
    dns.parse(pkt.data, pkt.payload_offset, pkt.payload_end)
    http.parse(pkt.data, pkt.payload_offset, pkt.payload_end)
  end
end
local function try(d, lt)
  calls = calls + 1
  local ok, e = pcall(function() touch(decode(d, lt)) end)
  if not ok then
    errors = errors + 1
    if errors <= 5 then io.stderr:write("fuzz: ", tostring(e), " (linktype ", tostring(lt), ", ", #d, " bytes)\\n") end
  end
end
buffer = function(p)
  local lt = riff.packet.linktype
  for _, l in ipairs(LTS) do try(p, l) end
  local n = #p
  local i = 0
  while i < n do
    try(p:sub(1, i), lt)
    i = i + (i < 96 and 1 or 97)
  end
  -- flip bytes in the first 64, one at a time
  for k = 1, (n < 64 and n or 64) do
    local b = p:byte(k)
    try(p:sub(1, k - 1) .. string.char(b ~ (k % 2 == 0 and 0xff or 0x0f)) .. p:sub(k + 1), lt)
  end
  -- DNS and HTTP parsers on every suffix of the first 48 bytes
  for k = 1, (n < 48 and n or 48) do
    local ok1 = pcall(dns.parse, p, k)
    local ok2 = pcall(dns.parse_tcp, p, k)
    local ok3 = pcall(http.parse, p, k)
    calls = calls + 3
    if not (ok1 and ok2 and ok3) then errors = errors + 1 end
  end
end
function deinit() print("calls", calls, "errors", errors, "layers", layers) end
`;

/** All classic-pcap and pcapng packets of the corpus as one pcapng, one interface per link type. */
function corpusAsPcapng(out: string): number {
  const idb = new Map<number, number>();
  const blocks: Buffer[] = [];
  const shb = Buffer.alloc(28);
  shb.writeUInt32LE(0x0a0d0d0a, 0);
  shb.writeUInt32LE(28, 4);
  shb.writeUInt32LE(0x1a2b3c4d, 8);
  shb.writeUInt16LE(1, 12);
  shb.writeBigInt64LE(-1n, 16);
  shb.writeUInt32LE(28, 24);
  blocks.push(shb);
  const iface = (lt: number): number => {
    let id = idb.get(lt);
    if (id === undefined) {
      id = idb.size;
      idb.set(lt, id);
      const b = Buffer.alloc(20);
      b.writeUInt32LE(1, 0);
      b.writeUInt32LE(20, 4);
      b.writeUInt16LE(lt & 0xffff, 8);
      b.writeUInt32LE(0, 12); // snaplen: unlimited
      b.writeUInt32LE(20, 16);
      blocks.push(b);
    }
    return id;
  };
  let packets = 0;
  const epb = (ifc: number, data: Buffer) => {
    const pad = (4 - (data.length % 4)) % 4;
    const len = 32 + data.length + pad;
    const b = Buffer.alloc(len);
    b.writeUInt32LE(6, 0);
    b.writeUInt32LE(len, 4);
    b.writeUInt32LE(ifc, 8);
    b.writeUInt32LE(data.length, 20);
    b.writeUInt32LE(data.length, 24);
    data.copy(b, 28);
    b.writeUInt32LE(len, len - 4);
    blocks.push(b);
    packets++;
  };
  for (const f of fs.readdirSync(CORPUS).sort()) {
    const buf = fs.readFileSync(path.join(CORPUS, f));
    if (buf.length < 24) continue;
    const m = buf.readUInt32LE(0);
    const le = m === 0xa1b2c3d4 || m === 0xa1b23c4d;
    const be = buf.readUInt32BE(0) === 0xa1b2c3d4 || buf.readUInt32BE(0) === 0xa1b23c4d;
    if (!le && !be) continue; // pcapng files: their packets are few; skipped here
    const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
    const ifc = iface(u32(20));
    for (let o = 24; o + 16 <= buf.length; ) {
      const caplen = u32(o + 8);
      if (caplen > 262144 || o + 16 + caplen > buf.length) break;
      epb(ifc, buf.subarray(o + 16, o + 16 + caplen));
      o += 16 + caplen;
    }
  }
  fs.writeFileSync(out, Buffer.concat(blocks));
  return packets;
}

test('decoders never raise on the whole corpus, cut short, with bytes flipped and wrong link types', { timeout: 600_000 }, () => {
  const dir = tmpdir('riff-proto-fuzz-');
  const cap = path.join(dir, 'corpus.pcapng');
  const n = corpusAsPcapng(cap);
  // Every packet of every classic pcap carried (pcapng files are left out above), as libpcap counts them.
  const want = fs.readFileSync(path.join(CORPUS, 'EXPECTED.tsv'), 'utf8').trim().split('\n').slice(1)
    .map((l) => l.split('\t'))
    .filter((r) => r[1] === 'pcap')
    .reduce((sum, r) => sum + Number(r[3]), 0);
  assert.ok(want > 3000, `classic-pcap packets in ${CORPUS}/EXPECTED.tsv: ${want}`);
  assert.equal(n, want, 'corpus packets');
  fs.writeFileSync(path.join(dir, 'fuzz.lua'), FUZZ_LUA);
  const run = riff(['-q', '--lua-budget', '0', '--lua', path.join(dir, 'fuzz.lua'), '-r', cap], { timeout: 600_000 });
  assert.equal(run.code, 0, run.stderr);
  const m = /calls\t(\d+)\terrors\t(\d+)\tlayers\t(\d+)/.exec(run.stdout.toString());
  assert.ok(m, run.stdout.toString() + run.stderr);
  assert.equal(Number(m![2]), 0, run.stderr);
  assert.ok(Number(m![1]) > 1_000_000);
  assert.match(run.stderr, /^0 Lua errors$/m);
  fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ unit cases

/** Runs Lua assertions once (at load) through the CLI; returns stdout. */
function luaUnit(src: string): string {
  const dir = tree({ 'unit.lua': `${src}\nbuffer = function() end\n` });
  const run = riff(['-q', '--lua', path.join(dir, 'unit.lua'), '-r', path.join(FIXTURES, 'http.pcap'), '-c', '1']);
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr.includes('riff: '), false, run.stderr);
  return run.stdout.toString();
}

const LUA_HELPERS = `
local function hex(s) return (s:gsub("%s", ""):gsub("..", function(h) return string.char(tonumber(h, 16)) end)) end
local function eq(a, b, what) if a ~= b then error((what or "value") .. ": expected " .. tostring(b) .. ", got " .. tostring(a), 2) end end
`;

test('packet: layers, lazy payload, offsets, address text, truncation and malformed flags', () => {
  const out = luaUnit(`${LUA_HELPERS}
local decode = require "proto.packet"
-- Ethernet, 802.1ad + 802.1Q, IPv4 with options, TCP with options, 3 payload bytes, 4 padding bytes
local ip = hex"46000043 1234 4000 40 06 0000 c0000201 c6336414 01010000" -- IHL 6: NOP NOP EOL EOL
local tcp = hex"9c40 0050 00000001 00000002 a012 ffff 0000 0000 020405b4 0402080a 0000000b 00000000 01030307"
local f = hex"ffffffffffff 020000000001 88a8 0064 8100 a0c8 0800" .. ip .. tcp .. "abc" .. hex"00000000"
local p = decode(f, 1)
eq(p.eth.src, "02:00:00:00:00:01") eq(p.eth.dst, "ff:ff:ff:ff:ff:ff") eq(p.eth.type, 0x88a8)
eq(#p.vlan, 2) eq(p.vlan[1], 100) eq(p.vlan[2], 200) eq(p.vlan.pcp[2], 5)
eq(p.ethertype, 0x0800) eq(p.l3_offset, 23)
eq(p.ip.version, 4) eq(p.ip.ihl, 6) eq(p.ip.hlen, 24) eq(p.ip.src, "192.0.2.1") eq(p.ip.dst, "198.51.100.20")
eq(p.ip.options, hex"01010000") eq(p.ip.df, true) eq(p.ip.mf, false) eq(p.ip.ttl, 64) eq(p.ip.id, 0x1234)
eq(p.ip.len, 0x43) eq(p.ip.fragment, false) eq(p.ip4, p.ip) eq(p.ip6, nil)
eq(p.tcp.sport, 40000) eq(p.tcp.dport, 80) eq(p.tcp.seq, 1) eq(p.tcp.ack_seq, 2)
eq(p.tcp.syn, true) eq(p.tcp.ack, true) eq(p.tcp.fin, false) eq(p.tcp.flags, 0x012) eq(p.tcp.hlen, 40)
eq(p.tcp.options.mss, 1460) eq(p.tcp.options.sack_perm, true) eq(p.tcp.options.wscale, 7)
eq(p.tcp.options.ts.val, 11) eq(p.tcp.options.ts.ecr, 0)
eq(p.payload, "abc") eq(p.payload_end - p.payload_offset + 1, 3)
eq(p.truncated, nil) eq(p.malformed, nil) eq(p.udp, nil) eq(p.sll, nil)
eq(rawget(p, "tcp") ~= nil, true) -- cached after the first read
eq(rawget(p, "udp"), nil)
-- the same, cut in the TCP options: truncated, tcp present, payload empty
local q = decode(f:sub(1, 23 + 24 + 25), 1)
eq(q.truncated, true) eq(q.tcp.dport, 80) eq(q.payload, "") eq(q.tcp.options.mss, 1460)
-- cut in the IP header: no ip
local r = decode(f:sub(1, 30), 1)
eq(r.truncated, true) eq(r.ip, nil) eq(r.ethertype, 0x0800)
-- IHL 4: malformed
local bad = f:sub(1, 22) .. "\\x44" .. f:sub(24)
eq(decode(bad, 1).malformed, "IPv4 header length 16 < 20") eq(decode(bad, 1).tcp, nil)
-- IPv6 in raw IP (101): hop-by-hop, fragment (first), UDP
local v6 = hex"60000000 0020 00 40 20010db8000000000000000000000001 20010db8000000000000000000000002"
  .. hex"2c00 0102 00000000" .. hex"1100 0001 deadbeef" .. hex"1388 1389 0010 0000" .. "12345678"
local s = decode(v6, 101)
eq(s.ip.version, 6) eq(s.ip.src, "2001:db8::1") eq(s.ip.dst, "2001:db8::2") eq(s.ip.next_header, 0)
eq(s.proto, 17) eq(s.ip.proto, 17) eq(table.concat(s.ip.ext, ","), "0,44") eq(s.ip.hlen, 56)
eq(s.ip.frag_offset, 0) eq(s.ip.mf, true) eq(s.ip.frag_id, 0xdeadbeef) eq(s.fragment, nil)
eq(s.udp.sport, 5000) eq(s.udp.len, 16) eq(s.payload, "12345678")
-- non-first fragment: no UDP, payload is what follows the fragment header
local nf = v6:sub(1, 50) .. "\\x00\\x08" .. v6:sub(53)
local t = decode(nf, 229)
eq(t.fragment, true) eq(t.ip.fragment, true) eq(t.udp, nil) eq(t.ip.frag_offset, 8) eq(#t.payload, 16)
-- loopback, both byte orders; SLL; SLL2
local v4 = hex"45000020 0000 0000 40 11 0000 7f000001 7f000001 0035 0035 000c 0000 41424344"
eq(decode(hex"02000000" .. v4, 0).ip.src, "127.0.0.1") eq(decode(hex"00000002" .. v4, 108).udp.dport, 53)
eq(decode(hex"1e000000" .. v6, 0).ip.version, 6) eq(decode(hex"00000018" .. v6, 108).null.family, 24)
local sll = decode(hex"0004 0001 0006 020000000001 0000 0800" .. v4, 113)
eq(sll.sll.pkttype, 4) eq(sll.sll.addr, "02:00:00:00:00:01") eq(sll.sll.protocol, 0x0800) eq(sll.udp.sport, 53)
local sll2 = decode(hex"86dd 0000 00000007 0001 00 06 020000000001 0000" .. v6, 276)
eq(sll2.sll.version, 2) eq(sll2.sll.ifindex, 7) eq(sll2.ip.dst, "2001:db8::2")
-- address text (RFC 5952)
local A = require "proto.addr"
eq(A.ip6(hex"20010db8000000000001000000000001"), "2001:db8::1:0:0:1")
eq(A.ip6(hex"20010db8000000010000000000000001"), "2001:db8:0:1::1")
eq(A.ip6(hex"00000000000000000000000000000000"), "::")
eq(A.ip6(hex"00000000000000000000000000000001"), "::1")
eq(A.ip6(hex"00000000000000000000ffffc0000201"), "::ffff:192.0.2.1")
eq(A.ip6(hex"fe800000000000000000000000000000"), "fe80::")
eq(A.ip6(hex"20010db8000100010001000100010001"), "2001:db8:1:1:1:1:1:1")
eq(A.ip4("abcd", 1.5), nil) eq(A.mac("abcdef", "x"), nil) eq(A.hex("ab", 1, 2), "61:62") eq(A.ip4(nil), nil)
-- the walk without tables
local et, o3, ver, o4, proto, l4, po, pe = decode.walk(f, 1)
eq(et, 0x0800) eq(ver, 4) eq(o4, 47) eq(proto, 6) eq(l4, 6) eq(f:sub(po, pe), "abc")
-- nonsense in, no error out
eq(decode(nil).malformed, "packet is not a string") eq(decode("", 1).truncated, true)
eq(decode("x", 12345).ip, nil) eq(decode("", 101).truncated, true)
print("ok")
`);
  assert.equal(out.trim(), 'ok');
});

test('dns: records, compression, loops, truncation, DNS over TCP', () => {
  const out = luaUnit(`${LUA_HELPERS}
local dns = require "proto.dns"
-- response: question www.example.com A; answer CNAME (compressed) then A
local m = hex"abcd 8180 0001 0002 0000 0000"
  .. hex"03777777 076578616d706c65 03636f6d 00 0001 0001"         -- 12: www.example.com
  .. hex"c00c 0005 0001 0000012c 0006 03636476 c010"          -- cdv.example.com
  .. hex"c02d 0001 0001 0000003c 0004 c0000201"
local r = dns.parse(m)
eq(r.id, 0xabcd) eq(r.qr, true) eq(r.rd, true) eq(r.ra, true) eq(r.rcode, 0) eq(r.opcode, 0)
eq(r.questions[1].name, "www.example.com") eq(r.questions[1].type, dns.types.A)
eq(r.answers[1].data, "cdv.example.com") eq(r.answers[2].name, "cdv.example.com")
eq(r.answers[2].data, "192.0.2.1") eq(r.answers[2].ttl, 60) eq(r.malformed, nil) eq(r.length, #m)
eq(dns.types[28], "AAAA") eq(dns.types.SOA, 6) eq(dns.classes[1], "IN")
for _, n in ipairs { "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "OPT", "RRSIG", "HTTPS", "CAA", "ANY" } do
  eq(dns.types[dns.types[n]], n, n)
end
-- slice of a bigger string: pointers count from the slice's start
local r2 = dns.parse("JUNK" .. m .. "TAIL", 5, 4 + #m)
eq(r2.answers[2].data, "192.0.2.1") eq(r2.malformed, nil)
-- pointer to itself, forward pointer, pointer loop: malformed, no hang
local self = hex"0001 0100 0001 0000 0000 0000 c00c 0001 0001"
eq(dns.parse(self).malformed, "question 1: compression pointer does not point backwards")
local fwd = hex"0001 0100 0001 0000 0000 0000 c012 0001 0001 0161 00"
eq(dns.parse(fwd).malformed ~= nil, true)
local loop = hex"0001 0100 0001 0000 0000 0000 0161 c00c"
eq(dns.parse(loop).malformed ~= nil, true)
-- counts larger than the data: partial result, truncated
local short = m:sub(1, 40)
local p = dns.parse(short)
eq(p.truncated, true) eq(#p.questions, 1) eq(#p.answers, 0) eq(p.malformed ~= nil, true)
eq(dns.parse("abc").malformed, "shorter than a DNS header")
-- MX, TXT, SOA, escaped label, root
local mx = hex"0002 8400 0000 0004 0000 0000"
  .. hex"00 000f 0001 00000e10 0004 000a c00c"                    -- MX 10 "." (pointer to 12 = root)
  .. hex"00 0010 0001 00000e10 0008 0361 6263 0278 79 00"        -- TXT "abc" "xy" ""
  .. hex"00 0006 0001 00000e10 001a 0161 00 0162 00 00000001 00000002 00000003 00000004 00000005"
  .. hex"00 0001 0001 00000001 0004 01020304"
local q = dns.parse(mx)
eq(q.answers[1].name, ".") eq(q.answers[1].data.pref, 10) eq(q.answers[1].data.exchange, ".")
eq(#q.answers[2].data, 3) eq(q.answers[2].data[1], "abc") eq(q.answers[2].data[2], "xy") eq(q.answers[2].data[3], "")
eq(q.answers[3].data.mname, "a") eq(q.answers[3].data.rname, "b") eq(q.answers[3].data.serial, 1) eq(q.answers[3].data.minimum, 5)
eq(q.aa, true) eq(q.malformed, nil)
local esc = dns.parse(hex"0003 0000 0001 0000 0000 0000 03612e62 02 0a5c 00 0001 0001")
eq(esc.questions[1].name, "a\\\\.b.\\\\010\\\\\\\\")
-- DNS over TCP: two messages in one stream, then a cut one
local stream = string.pack(">s2", m) .. string.pack(">s2", mx) .. hex"0100" .. m:sub(1, 20)
local a, n1 = dns.parse_tcp(stream)
eq(a.id, 0xabcd) eq(a.malformed, nil)
local b, n2 = dns.parse_tcp(stream, n1)
eq(b.id, 2) eq(b.answers[2].data[1], "abc")
local c = dns.parse_tcp(stream, n2)
eq(c.truncated, true) eq(c.id, 0xabcd)
eq(dns.parse_tcp("x").malformed, "no DNS-over-TCP length prefix")
print("ok")
`);
  assert.equal(out.trim(), 'ok');
});

test('http: requests, responses, partial heads, folding, not HTTP', () => {
  const out = luaUnit(`${LUA_HELPERS}
local http = require "proto.http"
local req = "GET /a/b?c=1 HTTP/1.1\\r\\nHost: example.com\\r\\nUser-Agent: curl/8.0\\r\\nAccept: */*\\r\\nX-A: 1\\r\\nx-a:  2 \\r\\n\\r\\nBODY"
local h = http.parse(req)
eq(h.request, true) eq(h.method, "GET") eq(h.uri, "/a/b?c=1") eq(h.version, "1.1")
eq(h.host, "example.com") eq(h.user_agent, "curl/8.0") eq(h.headers["x-a"], "1, 2")
eq(h.names[1], "Host") eq(h.values[2], "curl/8.0") eq(#h.names, 5)
eq(h.complete, true) eq(h.partial, nil) eq(req:sub(h.header_end), "BODY") eq(h.body_length, 4)
local r = http.parse("HTTP/1.0 404 Not Found\\nContent-Length: 12\\nTransfer-Encoding: gzip, chunked\\nX: a\\n  b\\n\\n")
eq(r.response, true) eq(r.status, 404) eq(r.reason, "Not Found") eq(r.version, "1.0")
eq(r.content_length, 12) eq(r.chunked, true) eq(r.headers.x, "a b") eq(r.complete, true)
-- a head cut short by the end of the segment
local p = http.parse("POST /x HTTP/1.1\\r\\nHost: h\\r\\nContent-Le")
eq(p.partial, true) eq(p.host, "h") eq(p.headers["content-le"], nil) eq(p.header_end, nil)
eq(http.parse("GET /very/long/uri").partial, true)
-- slice: the same request inside a bigger string
local s = "xxxx" .. req .. "yyyy"
local q = http.parse(s, 5, 4 + #req)
eq(q.host, "example.com") eq(s:sub(q.header_end, 4 + #req), "BODY")
-- not HTTP
eq(http.parse("\\x16\\x03\\x01 binary"), nil) eq(http.parse("hello world"), nil) eq(http.parse(""), nil)
eq(http.parse("SSH-2.0-OpenSSH\\r\\n"), nil) eq(http.parse(nil), nil)
local bad = http.parse("GET / HTTP/1.1\\r\\nno colon here\\r\\n\\r\\n")
eq(bad.malformed, "bad header line")
eq(http.parse("HTTP/1.1 200 OK\\r\\nContent-Length: x1\\r\\n\\r\\n").content_length, nil)
print("ok")
`);
  assert.equal(out.trim(), 'ok');
});
