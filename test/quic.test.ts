// QUIC's server name: riff.quic_initial opens a client Initial (RFC 9001 5:
// keys from the Destination Connection ID) in TypeScript, apps.matchers.quic
// gathers the CRYPTO frames' ClientHello (also split over two Initials) and
// plugin.app_id looks its SNI up in the host lists. Anchored on RFC 9001
// Appendix A (v1: keys and the whole protected client Initial) and RFC 9369
// Appendix A.1 (v2 keys); packets of other versions are sealed here. Then
// on real exchanges between real implementations (fixtures/corpus/quic-*.pcap,
// ngtcp2 0.12 and quic-go 0.29, made by scripts/quic-captures).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { riff, tree, tmpdir, FIXTURES, CORPUS } from './helpers.js';
import { PcapFileWriter, ETHERTYPE, IPPROTO, ethernet, ipv4, udp, framesInTurn } from '../scripts/lib/craft.js';
import { clientInitialKeys, openClientInitial, quicVersion } from '../src/vm/quic.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const A2 = hex(fs.readFileSync(path.join(FIXTURES, 'quic', 'rfc9001-a2-client-initial.hex'), 'utf8'));
const A2_DCID = hex('8394c8f03e515708');

/** A ClientHello handshake message (no record header) naming `sni`, padded by a padding extension to `pad` bytes of extensions. */
function clientHelloMsg(sni: string, pad = 0): Buffer {
  const name = Buffer.from(sni, 'latin1');
  const sniExt = Buffer.concat([u16(0), u16(name.length + 5), u16(name.length + 3), Buffer.from([0]), u16(name.length), name]);
  const padExt = pad ? Buffer.concat([u16(21), u16(pad), Buffer.alloc(pad)]) : Buffer.alloc(0);
  const exts = Buffer.concat([hex('002b0003020304'), padExt, sniExt]);
  const body = Buffer.concat([hex('0303'), Buffer.alloc(32, 0x42), Buffer.from([0]), u16(2), hex('1301'), hex('0100'), u16(exts.length), exts]);
  return Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
}
const crypto_frame = (off: number, data: Buffer) => Buffer.concat([Buffer.from([0x06]), varint(off), varint(data.length), data]);
function varint(n: number): Buffer {
  if (n < 64) return Buffer.from([n]);
  if (n < 16384) return Buffer.from([0x40 | (n >> 8), n & 0xff]);
  return Buffer.from([0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
}

/** A client Initial of `version` sealed as RFC 9001 5.3-5.4 says, padded to 1200 bytes. */
function sealInitial(version: number, dcid: Buffer, frames: Buffer, pn = 0, keyDcid = dcid, pnLen = 2): Buffer {
  const v = quicVersion(version)!;
  const k = clientInitialKeys(v, keyDcid);
  const first = 0xc0 | (v.initialType << 4) | (pnLen - 1);
  const head = Buffer.concat([Buffer.from([first]), Buffer.from([version >>> 24, (version >> 16) & 0xff, (version >> 8) & 0xff, version & 0xff]),
    Buffer.from([dcid.length]), dcid, Buffer.from([0]), Buffer.from([0])]);
  const padded = Buffer.concat([frames, Buffer.alloc(Math.max(0, 1200 - head.length - 2 - pnLen - 16 - frames.length))]);
  const len = pnLen + padded.length + 16;
  const pnBytes = Buffer.alloc(pnLen);
  for (let i = 0; i < pnLen; i++) pnBytes[pnLen - 1 - i] = (pn >>> (8 * i)) & 0xff;
  const header = Buffer.concat([head, Buffer.from([0x40 | (len >> 8), len & 0xff]), pnBytes]);
  const nonce = Buffer.from(k.iv);
  for (let i = 0; i < pnLen; i++) nonce[11 - i] ^= pnBytes[pnLen - 1 - i];
  const gcm = crypto.createCipheriv('aes-128-gcm', k.key, nonce);
  gcm.setAAD(header);
  const ct = Buffer.concat([gcm.update(padded), gcm.final(), gcm.getAuthTag()]);
  const pnOff = header.length - pnLen;
  const mask = crypto.createCipheriv('aes-128-ecb', k.hp, null).update(ct.subarray(4 - pnLen, 20 - pnLen));
  const out = Buffer.concat([header, ct]);
  out[0] ^= mask[0] & 0x0f;
  for (let i = 0; i < pnLen; i++) out[pnOff + i] ^= mask[1 + i];
  return out;
}

describe('QUIC Initial unprotection (src/vm/quic.ts)', () => {
  test('RFC 9001 A.1 keys and A.2: the protected client Initial opens to its CRYPTO frame', () => {
    const k = clientInitialKeys(quicVersion(1)!, A2_DCID);
    assert.deepEqual([k.key, k.iv, k.hp].map((b) => b.toString('hex')), ['1f369613dd76d5467730efcbe3b1a22d', 'fa044b2f42a3fd3b46fb255c', '9f50449e04a0e810283a1e9933adedd2']);
    const v2 = clientInitialKeys(quicVersion(0x6b3343cf)!, A2_DCID); // RFC 9369 A.1
    assert.deepEqual([v2.key, v2.iv, v2.hp].map((b) => b.toString('hex')), ['8b1a0bc121284290a29e0971b5cd045d', '91f73e2351d8fa91660e909f', '45b95e15235d6f45a6b19cbcb0294ba9']);
    assert.equal(A2.length, 1200);
    const plain = openClientInitial(A2);
    assert.ok(plain instanceof Uint8Array, String(plain));
    assert.equal(Buffer.from(plain).subarray(0, 12).toString('hex'), '060040f1010000ed0303ebf8');
    assert.equal(plain.length, 1162);
    // sealed here (packet number 2 in 4 bytes, as A.2) to the same 1200 bytes: the test's sealer is the RFC's
    const resealed = sealInitial(1, A2_DCID, Buffer.from(plain), 2, A2_DCID, 4);
    assert.equal(resealed.toString('hex'), A2.toString('hex'));
  });

  test('a changed byte, another connection ID, a short header, an unknown version: refused with a reason', () => {
    const bad = Buffer.from(A2);
    bad[600] ^= 1;
    assert.match(String(openClientInitial(bad)), /authentication failed/);
    assert.match(String(openClientInitial(A2, hex('0102030405060708'))), /authentication failed/);
    assert.match(String(openClientInitial(A2.subarray(0, 40))), /truncated/);
    assert.match(String(openClientInitial(Buffer.from([0x43, 1, 2, 3, 4, 5, 6, 7]))), /not a QUIC long header/);
    const grease = Buffer.from(A2);
    grease.writeUInt32BE(0x1a2a3a4a, 1);
    assert.match(String(openClientInitial(grease)), /version 0x1a2a3a4a/);
  });
});

const CLIENT = { mac: '02:00:00:00:00:0a', ip: '10.7.0.1' };
const SERVER = { mac: '02:00:00:00:00:50', ip: '10.7.0.2' };
function writeFlows(file: string, flows: Array<{ cport: number; sport?: number; msgs: Array<['c2s' | 's2c', Buffer]> }>) {
  const w = new PcapFileWriter(file);
  const put = framesInTurn(w);
  for (const f of flows) {
    for (const [dir, b] of f.msgs) {
      const [a, z] = dir === 'c2s' ? [CLIENT, SERVER] : [SERVER, CLIENT];
      const [ap, zp] = dir === 'c2s' ? [f.cport, f.sport ?? 443] : [f.sport ?? 443, f.cport];
      put(ethernet({ src: a.mac, dst: z.mac, type: ETHERTYPE.IPV4 }, ipv4({ src: a.ip, dst: z.ip, proto: IPPROTO.UDP }, udp({ src: a.ip, dst: z.ip, sport: ap, dport: zp }, b))));
    }
  }
  w.close();
}
function appRecords(lua: string, file: string) {
  const dir = tree({ 'test.lua': lua });
  const r = riff(['-q', '--workers', '1', '--lua', path.join(dir, 'test.lua'), '-r', file, '-o', 'json:-']);
  assert.equal(r.code, 0, r.stderr);
  return { recs: r.stdout.toString().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)), stderr: r.stderr };
}

describe('plugin.app_id: QUIC server names', () => {
  test('v1 (RFC 9001 A.2), draft-29, v2, a ClientHello split over two Initials, a server reply between', () => {
    const file = path.join(tmpdir(), 'quic-sni.pcap');
    const dcid = hex('0011223344556677');
    const big = clientHelloMsg('rr1---sn-abc.googlevideo.com', 1400);
    const cut = 900;
    const serverInitial = Buffer.concat([hex('c1'), hex('00000001'), hex('00'), hex('08'), hex('8899aabbccddeeff'), Buffer.alloc(200, 0x5c)]);
    writeFlows(file, [
      { cport: 50001, msgs: [['c2s', A2]] },
      { cport: 50002, msgs: [['c2s', sealInitial(0xff00001d, dcid, crypto_frame(0, clientHelloMsg('www.facebook.com')))]] },
      { cport: 50003, msgs: [['c2s', sealInitial(0x6b3343cf, dcid, crypto_frame(0, clientHelloMsg('www.netflix.com')))]] },
      // Chrome's ClientHello with its key shares does not fit one Initial.
      { cport: 50004, msgs: [['c2s', sealInitial(1, dcid, crypto_frame(0, big.subarray(0, cut)))], ['s2c', serverInitial],
        ['c2s', sealInitial(1, hex('8899aabbccddeeff'), crypto_frame(cut, big.subarray(cut)), 1, dcid)]] },
      // CRYPTO frames out of order inside one Initial, after PING and ACK frames
      { cport: 50005, msgs: [['c2s', sealInitial(1, dcid, Buffer.concat([hex('01'), hex('0200000000'), crypto_frame(40, clientHelloMsg('discord.com').subarray(40)), crypto_frame(0, clientHelloMsg('discord.com').subarray(0, 40))]))]] },
      // the second half never comes: QUIC all the same, at the first short-header packet
      { cport: 50006, msgs: [['c2s', sealInitial(1, dcid, crypto_frame(0, big.subarray(0, cut)))], ['c2s', Buffer.concat([hex('43'), Buffer.alloc(60, 1)])], ['c2s', Buffer.concat([hex('43'), Buffer.alloc(60, 2)])]] },
    ]);
    const { recs } = appRecords('return { require "plugin.sessions", require "plugin.app_id" }', file);
    const apps = recs.filter((r) => r.type === 'app').map((r) => [r.client_port, r.app, r.master ?? null, r.server_name ?? null, r.packet]);
    assert.deepEqual(apps.sort(), [
      [50001, 'QUIC', null, 'example.com', 1],
      [50002, 'Facebook', 'QUIC', 'www.facebook.com', 1],
      [50003, 'NetFlix', 'QUIC', 'www.netflix.com', 1],
      [50004, 'YouTube', 'QUIC', 'rr1---sn-abc.googlevideo.com', 2],
      [50005, 'Discord', 'QUIC', 'discord.com', 1],
      [50006, 'QUIC', null, null, 2],
    ].sort());
  });

  test('riff.quic_initial: junk arguments are a Lua error, never a crash', () => {
    const file = path.join(tmpdir(), 'quic-one.pcap');
    writeFlows(file, [{ cport: 50001, msgs: [['c2s', A2]] }]);
    const lua = `
      local current = require "proto.current"
      local p = { }
      function p:push(s)
        local pkt = current.get(s)
        if not pkt then return end
        local d, a = pkt.data, pkt.payload_offset
        local q = riff.quic_initial
        local out = {}
        for i, args in ipairs {
          { }, { 1, 2, 3 }, { d, "a", 3 }, { d, 0, 5 }, { d, 1, #d + 1 }, { d, 5, 4 }, { d, 1.5, 4 }, { d, a, #d, {} },
          { d, a, #d, string.rep("x", 21) }, { string.rep("\\0", 70000), 1, 70000 },
        } do
          local ok, err = pcall(q, table.unpack(args, 1, 4))
          out[#out + 1] = ok and "ok" or "err"
        end
        local frames, why = q(d, a, #d)
        local junk, reason = q(d, 1, 40)
        riff.emit("r", { calls = table.concat(out, ","), crypto = frames and frames:byte(1) or -1, reason = reason or "" })
      end
      return { p }`;
    const { recs } = appRecords(lua, file);
    const r = recs.find((x) => x.type === 'r');
    assert.ok(r, 'the script ran');
    assert.equal(r.calls, 'err,err,err,err,err,err,err,err,err,err');
    assert.equal(r.crypto, 6); // a CRYPTO frame first
    assert.match(r.reason, /^(not a QUIC long header|truncated)/);
  });
});

// ------------------------------------------------------------ real captures

interface Rec { head: Buffer; data: Buffer }
/** The records of a little-endian classic pcap: 16-byte header, frame. */
function pcapRecords(file: string): { fileHeader: Buffer; recs: Rec[] } {
  const b = fs.readFileSync(file);
  assert.equal(b.readUInt32LE(0), 0xa1b2c3d4, `${file}: a little-endian microsecond pcap`);
  const recs: Rec[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const cl = b.readUInt32LE(o + 8);
    recs.push({ head: b.subarray(o, o + 16), data: b.subarray(o + 16, o + 16 + cl) });
    o += 16 + cl;
  }
  return { fileHeader: b.subarray(0, 24), recs };
}
/** UDP source port and payload of an Ethernet frame (IPv4 or IPv6 without extension headers). */
function udpOf(frame: Buffer): { sport: number; payload: Buffer } {
  const v6 = frame.readUInt16BE(12) === ETHERTYPE.IPV6;
  const l4 = 14 + (v6 ? 40 : (frame[14] & 0x0f) * 4);
  assert.equal(frame[v6 ? 14 + 6 : 14 + 9], IPPROTO.UDP);
  return { sport: frame.readUInt16BE(l4), payload: frame.subarray(l4 + 8) };
}
const SERVER_PORTS = new Set([443, 4433]);

// What scripts/quic-captures made: the client's first version, whether the
// server answered with Version Negotiation, and per flow the app riff must
// name and the server name the client was given (its host argument).
const REAL: Array<{ file: string; version: number; vn: boolean; flows: Array<[string, string | null, string]>; packet?: number }> = [
  { file: 'quic-v1-sni.pcap', version: 1, vn: false, flows: [['YouTube', 'QUIC', 'www.youtube.com']] },
  { file: 'quic-v2draft.pcap', version: 0x709a50c4, vn: false, flows: [['QUIC', null, 'quic.example.net']] },
  { file: 'quic-vn-grease.pcap', version: 0x1a2a3a4a, vn: true, flows: [['Facebook', 'QUIC', 'www.facebook.com'], ['Facebook', 'QUIC', 'www.facebook.com']] },
  { file: 'quic-vn-unknown.pcap', version: 0x0a1b2c3d, vn: true, flows: [['QUIC', null, 'quic.example.net']] },
  { file: 'quic-retry.pcap', version: 1, vn: false, flows: [['GoogleDrive', 'QUIC', 'drive.google.com']] },
  { file: 'quic-split-clienthello.pcap', version: 1, vn: false, flows: [['Google', 'QUIC', 'www.google.com']], packet: 2 },
  { file: 'quic-resume-0rtt-ipv6.pcap', version: 1, vn: false, flows: [['NetFlix', 'QUIC', 'www.netflix.com'], ['NetFlix', 'QUIC', 'www.netflix.com']] },
  { file: 'quic-draft29.pcap', version: 0xff00001d, vn: false, flows: [['Discord', 'QUIC', 'discord.com']] },
  { file: 'quic-vn-draft29-to-v1.pcap', version: 0xff00001d, vn: true, flows: [['Wikipedia', 'QUIC', 'www.wikipedia.org']] },
];

describe('plugin.app_id on real QUIC exchanges (fixtures/corpus/quic-*.pcap)', () => {
  test('every flow of every capture is QUIC, by its SNI where the host lists have it; the SNI read back as the client sent it', () => {
    const bad: string[] = [];
    for (const c of REAL) {
      const file = path.join(CORPUS, c.file);
      // the capture holds what its row says: the client's first version, a Version Negotiation or none
      const udps = pcapRecords(file).recs.map((r) => udpOf(r.data));
      const first = udps.find((u) => !SERVER_PORTS.has(u.sport))!.payload;
      assert.equal(first.readUInt32BE(1), c.version, `${c.file}: the client's first version`);
      const vn = udps.some((u) => SERVER_PORTS.has(u.sport) && u.payload[0] & 0x80 && u.payload.readUInt32BE(1) === 0);
      assert.equal(vn, c.vn, `${c.file}: a Version Negotiation packet`);
      const { recs } = appRecords('return { require "plugin.sessions", require "plugin.app_id" }', file);
      const flows = recs.filter((r) => r.type === 'udp_flow');
      const apps = recs.filter((r) => r.type === 'app');
      const got = apps.map((r) => [r.app, r.master ?? null, r.server_name ?? null]).sort();
      if (JSON.stringify(got) !== JSON.stringify([...c.flows].sort())) bad.push(`${c.file}: ${JSON.stringify(got)}`);
      if (flows.length !== c.flows.length || flows.some((f) => f.app !== c.flows[0][0])) bad.push(`${c.file}: flows ${JSON.stringify(flows.map((f) => f.app))}`);
      if (apps.some((r) => r.direction !== 'c2s' || r.packet !== (c.packet ?? 1))) bad.push(`${c.file}: named at ${JSON.stringify(apps.map((r) => [r.direction, r.packet]))}`);
    }
    assert.deepEqual(bad, []);
  });

  test('a Version Negotiation alone is QUIC; a greased Initial alone gives its SNI (sealed with draft-29\'s keys)', () => {
    const dir = tmpdir();
    const pick = (src: string, out: string, keep: (u: { sport: number; payload: Buffer }) => boolean) => {
      const { fileHeader, recs } = pcapRecords(path.join(CORPUS, src));
      const chosen = recs.filter((r) => keep(udpOf(r.data)));
      assert.ok(chosen.length > 0);
      fs.writeFileSync(path.join(dir, out), Buffer.concat([fileHeader, ...chosen.flatMap((r) => [r.head, r.data])]));
      return path.join(dir, out);
    };
    const isVN = (u: { payload: Buffer }) => (u.payload[0] & 0x80) !== 0 && u.payload.readUInt32BE(1) === 0;
    for (const src of ['quic-vn-grease.pcap', 'quic-vn-unknown.pcap', 'quic-vn-draft29-to-v1.pcap']) {
      const { recs } = appRecords('return { require "plugin.app_id" }', pick(src, 'vn.pcap', isVN));
      assert.deepEqual(recs.filter((r) => r.type === 'app').map((r) => r.app), ['QUIC'], src);
    }
    const grease = pick('quic-vn-grease.pcap', 'grease.pcap', (u) => u.payload.length >= 1200 && u.payload.readUInt32BE(1) === 0x1a2a3a4a);
    const g = appRecords('return { require "plugin.app_id" }', grease).recs.filter((r) => r.type === 'app');
    assert.deepEqual(g.map((r) => [r.app, r.master, r.server_name]), [['Facebook', 'QUIC', 'www.facebook.com']]);
    const opened = openClientInitial(udpOf(pcapRecords(grease).recs[0].data).payload);
    assert.ok(opened instanceof Uint8Array, String(opened));
  });

  test('an unknown version is QUIC only when its Initial opens: one flipped byte, and it is not', () => {
    const { fileHeader, recs } = pcapRecords(path.join(CORPUS, 'quic-vn-unknown.pcap'));
    const initial = recs.find((r) => !SERVER_PORTS.has(udpOf(r.data).sport))!;
    const flipped = Buffer.from(initial.data);
    flipped[flipped.length - 100] ^= 0x01; // inside the AEAD's ciphertext (riff reads UDP checksums, never drops by them)
    const dir = tmpdir();
    const good = path.join(dir, 'good.pcap'), bad = path.join(dir, 'bad.pcap');
    fs.writeFileSync(good, Buffer.concat([fileHeader, initial.head, initial.data]));
    fs.writeFileSync(bad, Buffer.concat([fileHeader, initial.head, flipped]));
    assert.match(String(openClientInitial(udpOf(flipped).payload)), /version 0x0a1b2c3d has no Initial keys riff knows.*authentication failed/);
    const named = (f: string) => {
      const { recs } = appRecords('return { require "plugin.sessions", require "plugin.app_id" }', f);
      assert.equal(recs.filter((r) => r.type === 'udp_flow').length, 1, 'the flow is seen');
      return recs.filter((r) => r.type === 'app').map((r) => [r.app, r.server_name ?? null]);
    };
    assert.deepEqual(named(good), [['QUIC', 'quic.example.net']]);
    assert.deepEqual(named(bad), []);
  });
});

describe('scripts/dpi-compare: ndpiReader and riff flows meet by 5-tuple', () => {
  test('either direction, IPv6 spelled either way, nDPI 4.2 names through the aliases', async () => {
    const { parseNdpi, parseRiff } = await import('../scripts/dpi-compare.js');
    const ndpi = [
      '\t1\tUDP [2001:db8::1]:12345 -> [2620:fe::9]:53 [proto: 5/DNS][ClearText][Confidence: DPI][cat: Network/14]',
      '\t2\tTCP 10.0.14.4:179 -> 10.0.14.1:63656 [VLAN: 14][proto: 13/BGP][ClearText][Confidence: Match by port]',
      '\t3\tUDP 10.7.0.3:38824 <-> 216.58.195.67:443 [proto: 188.126/QUIC.Google][Encrypted][Confidence: DPI]',
      '\t4\tUDP 10.1.0.1:500 <-> 10.1.0.2:500 [proto: 79/IPsec][Encrypted][Confidence: DPI]',
    ].join('\n');
    const n = parseNdpi(ndpi, 'f');
    assert.deepEqual(n.map((f) => [f.master, f.app, f.confidence]), [['DNS', 'DNS', 'DPI'], ['BGP', 'BGP', 'Match by port'], ['QUIC', 'Google', 'DPI'], ['IPSec', 'IPSec', 'DPI']]);
    const riffOut = [
      JSON.stringify({ type: 'app', proto: 'udp', client_ip: '2001:0db8:0:0:0:0:0:1', client_port: 12345, server_ip: '2620:fe::9', server_port: 53, app: 'DNS' }),
      JSON.stringify({ type: 'app', proto: 'tcp', client_ip: '10.0.14.1', client_port: 63656, server_ip: '10.0.14.4', server_port: 179, app: 'BGP' }),
      JSON.stringify({ type: 'app', proto: 'udp', client_ip: '10.7.0.3', client_port: 38824, server_ip: '216.58.195.67', server_port: 443, app: 'GoogleServices', master: 'QUIC' }),
      'not json', JSON.stringify({ type: 'session' }),
    ].join('\n');
    const r = parseRiff(riffOut, 'f');
    assert.equal(r.length, 3);
    assert.deepEqual(r.map((f) => f.key), n.slice(0, 3).map((f) => f.key));
    assert.equal(r[2].master, 'QUIC');
  });
});
