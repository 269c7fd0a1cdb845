// The protocol toolkit: flow.tcp / flow.udp tracking and reassembly, the
// sessions, dns_log, app_id and http_requests plugins, and the
// TrafficAnalyzer-style example, end to end through the CLI. Expectations
// come from the captures themselves (parsed here in TypeScript), from
// tshark's conversation table saved in fixtures/toolkit/, or from captures
// crafted here with scripts/lib/craft.ts where the answer is known by
// construction.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { riff, tree, tmpdir, FIXTURES, CORPUS, ROOT, hasCommand } from './helpers.js';
import {
  PcapFileWriter,
  TcpFlow,
  TCP_FLAGS,
  ETHERTYPE,
  IPPROTO,
  ethernet,
  ipv4,
  udp,
  dns,
  type CraftedPacket,
} from '../scripts/lib/craft.js';

process.env.TZ = 'UTC';

// ---------------------------------------------------------------- helpers

interface Frame {
  /** capture time in microseconds */
  us: number;
  data: Buffer;
}

type Rec = Record<string, any> & { type: string; ts: number };

function readPcap(file: string): Frame[] {
  const b = fs.readFileSync(file);
  const magic = b.readUInt32LE(0);
  assert.ok(magic === 0xa1b2c3d4 || magic === 0xa1b23c4d, `${file}: little-endian pcap expected`);
  const nano = magic === 0xa1b23c4d;
  const out: Frame[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const sec = b.readUInt32LE(o);
    const frac = b.readUInt32LE(o + 4);
    const cap = b.readUInt32LE(o + 8);
    out.push({ us: sec * 1e6 + (nano ? Math.floor(frac / 1000) : frac), data: b.subarray(o + 16, o + 16 + cap) });
    o += 16 + cap;
  }
  return out;
}

function writePcap(file: string, frames: Frame[]): string {
  const w = new PcapFileWriter(file);
  for (const f of frames) w.write(Math.floor(f.us / 1e6), f.us % 1e6, f.data);
  w.close();
  return file;
}

/** Frames of crafted packets, `stepUs` apart from `startUs`. */
function timed(pkts: CraftedPacket[], startUs: number, stepUs = 1000): Frame[] {
  return pkts.map((p, i) => ({ us: startUs + i * stepUs, data: p.frame }));
}

/** JSON-lines records from riff's stdout. */
function records(stdout: Buffer): Rec[] {
  return stdout
    .toString('utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Rec);
}

function run(args: string[]) {
  const r = riff(['-q', '--workers', '1', ...args]);
  assert.equal(r.code, 0, `riff ${args.join(' ')} failed:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /[1-9]\d* Lua errors/, r.stderr);
  return { ...r, recs: records(r.stdout) };
}

const ofType = (recs: Rec[], type: string) => recs.filter((r) => r.type === type);
const byKey = (recs: Rec[]) => new Map(recs.map((r) => [`${r.client_ip}:${r.client_port}-${r.server_ip}:${r.server_port}`, r]));

interface DirCount {
  pkts: number;
  bytes: number;
}

/**
 * Per TCP connection of an Ethernet/IPv4 capture, independently of the Lua:
 * packets and payload bytes each way. The client is the SYN sender, else the
 * side talking to a port below 1024, else the higher port.
 */
function tcpCounts(frames: Frame[]): Map<string, { c2s: DirCount; s2c: DirCount }> {
  const out = new Map<string, { c2s: DirCount; s2c: DirCount; client: string }>();
  for (const { data: d } of frames) {
    if (d.readUInt16BE(12) !== ETHERTYPE.IPV4 || d[23] !== IPPROTO.TCP) continue;
    const ihl = (d[14] & 15) * 4;
    const tlen = d.readUInt16BE(16);
    const t = 14 + ihl;
    const thl = (d[t + 12] >> 4) * 4;
    const flags = d[t + 13];
    const src = `${d[26]}.${d[27]}.${d[28]}.${d[29]}:${d.readUInt16BE(t)}`;
    const dst = `${d[30]}.${d[31]}.${d[32]}.${d[33]}:${d.readUInt16BE(t + 2)}`;
    const key = [src, dst].sort().join('|');
    let e = out.get(key);
    if (!e) {
      const sp = d.readUInt16BE(t);
      const dp = d.readUInt16BE(t + 2);
      const srcIsClient =
        flags & TCP_FLAGS.SYN ? !(flags & TCP_FLAGS.ACK) : dp < 1024 && sp >= 1024 ? true : sp < 1024 && dp >= 1024 ? false : sp >= dp;
      e = { client: srcIsClient ? src : dst, c2s: { pkts: 0, bytes: 0 }, s2c: { pkts: 0, bytes: 0 } };
      out.set(key, e);
    }
    const dir = src === e.client ? e.c2s : e.s2c;
    dir.pkts++;
    dir.bytes += tlen - ihl - thl;
  }
  return new Map([...out.values()].map((e) => {
    const [a, b] = [...out.entries()].find(([, v]) => v === e)![0].split('|');
    const server = a === e.client ? b : a;
    return [`${e.client}-${server}`, { c2s: e.c2s, s2c: e.s2c }];
  }));
}

/** A temp dir with a Lua script (and optional extra files); returns the script's path. */
function script(src: string, extra: Record<string, string | Buffer> = {}): string {
  const dir = tree({ 'test.lua': src, ...extra });
  return path.join(dir, 'test.lua');
}

const CLIENT = { mac: '02:00:00:00:00:0a', ip: '192.0.2.10' };
const SERVER = { mac: '02:00:00:00:00:50', ip: '198.51.100.80' };

function flow(cport: number, sport: number, isn = 1000, o: { sip?: string; cip?: string } = {}): TcpFlow {
  return new TcpFlow({
    client: { ...CLIENT, ip: o.cip ?? CLIENT.ip, port: cport, isn },
    server: { ...SERVER, ip: o.sip ?? SERVER.ip, port: sport, isn: isn * 7 + 13 },
  });
}

/** A UDP datagram between CLIENT and SERVER (or reversed). */
function udpFrame(sport: number, dport: number, payload: Buffer, reverse = false, sip = SERVER.ip): Buffer {
  const [a, b] = reverse ? [{ ...SERVER, ip: sip }, CLIENT] : [CLIENT, { ...SERVER, ip: sip }];
  return ethernet(
    { dst: b.mac, src: a.mac, type: ETHERTYPE.IPV4 },
    ipv4({ src: a.ip, dst: b.ip, proto: IPPROTO.UDP }, udp({ src: a.ip, dst: b.ip, sport, dport }, payload)),
  );
}

// A flow.tcp harness: every connection's delivered streams (gaps shown as
// <gap N>) and counters as one "conn" record at close, the stats at the end.
const REASSEMBLY_LUA = (opts: string) => `
local tcp = require "flow.tcp"
local current = require "proto.current"
local T
local p = {}
function p:setup()
  T = tcp.new{ reassemble = true, ${opts}
    on_open = function(c) c.user.c2s, c.user.s2c = {}, {} end,
    on_data = function(c, dir, data) local t = c.user[dir] t[#t + 1] = data end,
    on_gap = function(c, dir, n)
      local t = c.user[dir] t[#t + 1] = "<gap " .. n .. ">"
      riff.emit("gap", { key = c.key, dir = dir, missing = n, at = riff.packet.id })
    end,
    on_close = function(c, reason)
      riff.emit("conn", { key = c.key, reason = reason, midstream = c.midstream,
        c2s = table.concat(c.user.c2s), s2c = table.concat(c.user.s2c),
        pkts_c2s = c.pkts.c2s, pkts_s2c = c.pkts.s2c, bytes_c2s = c.bytes.c2s, bytes_s2c = c.bytes.s2c,
        retrans_c2s = c.retrans.c2s, retrans_s2c = c.retrans.s2c })
    end }
end
function p:push(s) T:packet(current.get(s), current.ts()) end
function p:deinit() T:flush() riff.emit("stats", T.stats) end
return { p }
`;

const text = (n: number, seed = 0) => {
  let s = '';
  for (let i = 0; s.length < n; i++) s += `line ${seed}.${i} of the stream\n`;
  return Buffer.from(s.slice(0, n));
};

// ---------------------------------------------------------------- sessions

describe('sessions (flow.tcp, flow.udp, plugin.sessions)', () => {
  const SESSIONS = 'return { require "plugin.dns_log", require "plugin.sessions" }';

  test('fixtures/http.pcap: one record per connection, counts as tshark and the capture say', () => {
    const { recs } = run(['--lua', script(SESSIONS), '-r', path.join(FIXTURES, 'http.pcap'), '-o', 'json:-']);
    const tcp = ofType(recs, 'tcp_session');
    assert.equal(tcp.length, 4);
    // tshark -q -z conv,tcp (saved): "<-" is frames to the first address, "->" from it.
    const conv = fs.readFileSync(path.join(FIXTURES, 'toolkit', 'http.pcap.conv.txt'), 'utf8');
    const tsharkFrames = new Map<string, { c2s: number; s2c: number }>();
    for (const m of conv.matchAll(/^(\S+):(\d+)\s+<-> (\S+):(\d+)\s+(\d+) \d+ \w+\s+(\d+) /gm)) {
      tsharkFrames.set(`${m[1]}:${m[2]}-${m[3]}:${m[4]}`, { s2c: Number(m[5]), c2s: Number(m[6]) });
    }
    const mine = tcpCounts(readPcap(path.join(FIXTURES, 'http.pcap')));
    const got = byKey(tcp);
    assert.deepEqual([...got.keys()].sort(), [...mine.keys()].sort());
    for (const [key, want] of mine) {
      const r = got.get(key)!;
      assert.equal(r.pkts_c2s, want.c2s.pkts, key);
      assert.equal(r.pkts_s2c, want.s2c.pkts, key);
      assert.equal(r.bytes_c2s, want.c2s.bytes, key);
      assert.equal(r.bytes_s2c, want.s2c.bytes, key);
      assert.deepEqual({ c2s: r.pkts_c2s, s2c: r.pkts_s2c }, tsharkFrames.get(key), `${key} vs tshark`);
      // Every connection: full handshake, FIN both ways, nothing lost.
      assert.equal(r.handshake, true, key);
      assert.equal(r.midstream, false, key);
      assert.equal(r.reason, 'fin', key);
      assert.equal(r.retrans_c2s + r.retrans_s2c, 0, key);
      assert.equal(r.flags_c2s, 'FSP.');
      assert.equal(r.flags_s2c, 'FSP.');
      assert.equal(r.client_mac.length, 17);
      assert.ok(r.duration > 0 && r.duration < 0.02, key);
      // Closed by the packet that acknowledged the last FIN: stamped with its time.
      assert.equal(r.ts.toFixed(6), r.time_end.toFixed(6));
      // The DNS answers for www.lua.ren came first: the server is named.
      assert.equal(r.server_name, 'www.lua.ren', key);
    }
    const flows = ofType(recs, 'udp_flow');
    assert.equal(flows.length, 2);
    for (const f of flows) {
      assert.equal(f.server_port, 53);
      assert.equal(f.pkts_c2s, 1);
      assert.equal(f.pkts_s2c, 1);
      assert.equal(f.reason, 'end');
    }
  });

  test('a capture that starts mid-connection: picked up as midstream, server on the well-known port', () => {
    const frames = readPcap(path.join(FIXTURES, 'http.pcap'));
    // Packets 1-9 are ARP, DNS and the first connection's handshake.
    const cut = writePcap(path.join(tmpdir(), 'cut.pcap'), frames.slice(9));
    const { recs } = run(['--lua', script(SESSIONS), '-r', cut, '-o', 'json:-']);
    const tcp = byKey(ofType(recs, 'tcp_session'));
    const mine = tcpCounts(frames.slice(9));
    assert.equal(tcp.size, 4);
    const first = tcp.get('10.0.0.11:49210-10.0.0.80:80')!;
    assert.ok(first, 'the first connection, client and server the right way round');
    assert.equal(first.midstream, true);
    assert.equal(first.handshake, false);
    assert.equal(first.reason, 'fin');
    assert.equal(first.server_name, undefined, 'the DNS exchange was cut off too');
    assert.deepEqual(
      { c2s: first.pkts_c2s, s2c: first.pkts_s2c, bc: first.bytes_c2s, bs: first.bytes_s2c },
      { c2s: mine.get('10.0.0.11:49210-10.0.0.80:80')!.c2s.pkts, s2c: mine.get('10.0.0.11:49210-10.0.0.80:80')!.s2c.pkts,
        bc: 77, bs: 271 },
    );
    for (const [k, r] of tcp) if (k !== '10.0.0.11:49210-10.0.0.80:80') assert.equal(r.midstream, false, k);
  });

  test('retransmissions: duplicates and re-sent data counted per direction; reordering and keep-alives are not', () => {
    const f = flow(40000, 80);
    const hs = f.handshake();
    const data = f.send('client', text(3000), { ackEvery: 0 }); // 1460 + 1460 + 80
    // The server answers; then re-sends its answer (a retransmission with a new IP id).
    const s0 = f.s.seq;
    const resp = f.send('server', text(100, 1), { ackEvery: 0 });
    f.s.seq = s0;
    const resp2 = f.send('server', text(100, 1), { ackEvery: 0 });
    // A keep-alive: one byte at next-1.
    f.c.seq = (f.c.seq - 1) >>> 0;
    const ka = f.segment('client', TCP_FLAGS.ACK, Buffer.from([0]));
    const fin = f.close();
    const pkts = [...hs, data[0], data[1], data[0] /* exact duplicate */, data[2], ...resp, ...resp2, ka, ...fin];
    // A second connection with two segments swapped: out of order, not retransmitted.
    const g = flow(40001, 80, 5000);
    const ghs = g.handshake();
    const gd = g.send('client', text(3000, 2), { ackEvery: 0 });
    const gpk = [...ghs, gd[1], gd[0], gd[2], ...g.close()];
    const file = writePcap(path.join(tmpdir(), 'retrans.pcap'), [...timed(pkts, 1_600_000_000e6), ...timed(gpk, 1_600_000_100e6)]);
    const { recs } = run(['--lua', script(SESSIONS), '-r', file, '-o', 'json:-']);
    const s = byKey(ofType(recs, 'tcp_session'));
    const a = s.get(`${CLIENT.ip}:40000-${SERVER.ip}:80`)!;
    assert.equal(a.retrans_c2s, 1);
    assert.equal(a.retrans_s2c, 1);
    assert.equal(a.bytes_c2s, 3000 + 1460 + 1);
    assert.equal(a.bytes_s2c, 200);
    assert.equal(a.pkts_c2s, pkts.filter((p) => p.from === 'client').length);
    assert.equal(a.reason, 'fin');
    const b = s.get(`${CLIENT.ip}:40001-${SERVER.ip}:80`)!;
    assert.equal(b.retrans_c2s, 0);
    assert.equal(b.retrans_s2c, 0);
    assert.equal(b.bytes_c2s, 3000);
  });

  test('idle timeout runs on capture time: same records on every run', () => {
    const T0 = 1_700_000_000e6;
    const s = (x: number) => T0 + x * 1e6;
    // A: opens and sends at t=0..1, then falls silent (times out while C is still talking).
    const A = flow(41000, 80, 100);
    const a = [...A.handshake(), ...A.send('client', text(50), { finalAck: true })];
    // C: a packet every 200 s (under the 300 s timeout), then a clean close.
    const C = flow(41001, 80, 200);
    const c = [...C.handshake(), ...C.send('client', text(10)), C.ack('server'), ...C.send('client', text(10)), ...C.close()];
    // D: silent for 500 s in the middle: timed out, then picked up again mid-stream.
    const D = flow(41002, 80, 300);
    const d = [...D.handshake(), ...D.send('client', text(20), { finalAck: true })];
    const d2 = [...D.send('client', text(20)), ...D.close()];
    const frames: Frame[] = [
      ...timed(a, s(0), 100_000),
      ...timed(c.slice(0, 4), s(0.5), 100_000),
      ...timed(d, s(0.8), 10_000),
      ...timed(c.slice(4, 6), s(200), 1000),
      ...timed(c.slice(6, 8), s(400), 1000),
      ...timed(d2, s(500), 1000),
      ...timed(c.slice(8), s(600), 1000),
    ].sort((x, y) => x.us - y.us);
    const file = writePcap(path.join(tmpdir(), 'idle.pcap'), frames);
    const once = () => run(['--lua', script(SESSIONS), '-r', file, '-o', 'json:-']);
    const r1 = once();
    const r2 = once();
    const strip = (recs: Rec[]) => recs.map((r) => JSON.stringify({ ...r, ts: r.reason === 'end' ? 0 : r.ts }));
    assert.deepEqual(strip(r1.recs), strip(r2.recs), 'the same records, in the same order');
    const tcp = ofType(r1.recs, 'tcp_session');
    const recA = tcp.find((r) => r.client_port === 41000)!;
    assert.equal(recA.reason, 'timeout');
    // Closed by the expiry pass at the first packet more than 300 s after its last one (C's, at t=400).
    assert.ok(recA.ts >= s(400) / 1e6 && recA.ts < s(401) / 1e6, `A closed at ${recA.ts}`);
    const recC = tcp.filter((r) => r.client_port === 41001);
    assert.deepEqual(recC.map((r) => r.reason), ['fin']);
    const recD = tcp.filter((r) => r.client_port === 41002);
    assert.deepEqual(recD.map((r) => [r.reason, r.midstream]), [['timeout', false], ['fin', true]]);
  });

  test('max_sessions: the oldest idle connection is evicted, and counted', () => {
    const conns = [0, 1, 2, 3, 4].map((i) => flow(42000 + i, 80, 10 + i));
    const frames: Frame[] = [];
    conns.forEach((f, i) => frames.push(...timed(f.handshake(), 1_650_000_000e6 + i * 1e6, 1000)));
    // The survivors close normally.
    conns.slice(2).forEach((f, i) => frames.push(...timed(f.close(), 1_650_000_010e6 + i * 1e6, 1000)));
    const file = writePcap(path.join(tmpdir(), 'evict.pcap'), frames);
    const lua = `
local sessions = require "plugin.sessions"
local shared = require "flow.shared"
sessions.max_sessions = 3
return { sessions, { push = function() end, deinit = function()
  riff.emit("stats", shared.tcp().stats) end } }`;
    const { recs } = run(['--lua', script(lua), '-r', file, '-o', 'json:-']);
    const st = ofType(recs, 'stats')[0];
    const tcp = ofType(recs, 'tcp_session');
    const evicted = tcp.filter((r) => r.reason === 'evicted');
    assert.deepEqual(evicted.map((r) => r.client_port).sort(), [42000, 42001]);
    assert.equal(st.evicted, 2);
    assert.deepEqual(tcp.filter((r) => r.reason === 'fin').map((r) => r.client_port), [42002, 42003, 42004]);
  });

  test('IPv6: sessions keyed and counted the same way', () => {
    const f = new TcpFlow({
      client: { mac: CLIENT.mac, ip: '2001:db8::10', port: 48000, isn: 9 },
      server: { mac: SERVER.mac, ip: '2001:db8::80', port: 443, isn: 99 },
    });
    const pkts = [...f.handshake(), ...f.send('client', text(2000)), ...f.send('server', text(300), { finalAck: true }), ...f.close('server')];
    const file = writePcap(path.join(tmpdir(), 'v6.pcap'), timed(pkts, 1_650_000_000e6));
    const { recs } = run(['--lua', script(SESSIONS), '-r', file, '-o', 'json:-']);
    const [r] = ofType(recs, 'tcp_session');
    assert.deepEqual(
      [r.client_ip, r.client_port, r.server_ip, r.server_port, r.bytes_c2s, r.bytes_s2c, r.reason, r.handshake],
      ['2001:db8::10', 48000, '2001:db8::80', 443, 2000, 300, 'fin', true],
    );
    assert.equal(r.pkts_c2s + r.pkts_s2c, pkts.length);
  });

  test('a lone RST and a port scan: closed "rst", with the side that reset', () => {
    const f = flow(43000, 22, 77);
    const syn = f.segment('client', TCP_FLAGS.SYN);
    const rst = f.segment('server', TCP_FLAGS.RST | TCP_FLAGS.ACK);
    const file = writePcap(path.join(tmpdir(), 'rst.pcap'), timed([syn, rst], 1_650_000_000e6));
    const { recs } = run(['--lua', script(SESSIONS), '-r', file, '-o', 'json:-']);
    const [r] = ofType(recs, 'tcp_session');
    assert.deepEqual([r.reason, r.rst_from, r.pkts_c2s, r.pkts_s2c, r.handshake], ['rst', 'server', 1, 1, false]);
  });
});

// ---------------------------------------------------------------- reassembly

describe('flow.tcp reassembly', () => {
  const REQ = text(5000, 7);
  const RESP = text(2000, 8);

  /** A connection with the request in 500-byte segments, handed to `mangle` before the response. */
  function conversation(mangle: (segs: CraftedPacket[], f: TcpFlow) => CraftedPacket[], cport = 44000) {
    const f = new TcpFlow({
      client: { ...CLIENT, port: cport, isn: 0xfffff000, mss: 500 }, // wraps around 2^32 mid-request
      server: { ...SERVER, port: 80, isn: 1, mss: 500 },
    });
    const hs = f.handshake();
    const req = mangle(f.send('client', REQ, { ackEvery: 0 }), f);
    const ack = f.ack('server');
    const resp = f.send('server', RESP, { finalAck: true });
    return [...hs, ...req, ack, ...resp, ...f.close()];
  }

  function reassemble(pkts: CraftedPacket[], opts = '') {
    const file = writePcap(path.join(tmpdir(), 'r.pcap'), timed(pkts, 1_650_000_000e6, 10));
    const { recs } = run(['--lua', script(REASSEMBLY_LUA(opts)), '-r', file, '-o', 'json:-']);
    return { conns: ofType(recs, 'conn'), gaps: ofType(recs, 'gap'), stats: ofType(recs, 'stats')[0] };
  }

  test('in order: each byte once, both directions', () => {
    const { conns, gaps } = reassemble(conversation((s) => s));
    assert.equal(conns.length, 1);
    assert.equal(conns[0].c2s, REQ.toString());
    assert.equal(conns[0].s2c, RESP.toString());
    assert.equal(gaps.length, 0);
  });

  test('shuffled, duplicated and overlapping segments: each byte once, in order', () => {
    const { conns, gaps, stats } = reassemble(
      conversation((segs, f) => {
        // An overlapping re-send: bytes 250..1249 as one segment (spans segments 0-2).
        const save = f.c.seq;
        f.c.seq = (save - 5000 + 250) >>> 0;
        const overlap = f.segment('client', TCP_FLAGS.ACK, REQ.subarray(250, 1250));
        f.c.seq = save;
        const order = [3, 1, 0, 9, 2, 5, 4, 8, 7, 6];
        return [segs[2], overlap, ...order.map((i) => segs[i]), segs[5], segs[0]];
      }),
    );
    assert.equal(conns[0].c2s, REQ.toString());
    assert.equal(conns[0].s2c, RESP.toString());
    assert.equal(gaps.length, 0);
    assert.equal(stats.delivered, REQ.length + RESP.length);
    assert.equal(stats.buffered, 0);
  });

  test('a lost segment: reported as a gap of its size when the peer acknowledges past it', () => {
    const { conns, gaps } = reassemble(conversation((segs) => segs.filter((_, i) => i !== 4)));
    assert.equal(conns[0].c2s, REQ.subarray(0, 2000).toString() + '<gap 500>' + REQ.subarray(2500).toString());
    assert.equal(gaps.length, 1);
    assert.deepEqual([gaps[0].dir, gaps[0].missing], ['c2s', 500]);
    assert.equal(conns[0].s2c, RESP.toString());
  });

  test('a lost segment with no acknowledgement: the gap is reported at close', () => {
    const f = new TcpFlow({ client: { ...CLIENT, port: 44100, isn: 5, mss: 500 }, server: { ...SERVER, port: 80, isn: 9, mss: 500 } });
    const segs = f.send('client', REQ.subarray(0, 1500), { ackEvery: 0 });
    const pkts = [segs[0], segs[2]]; // midstream, no ACKs, then the run ends
    const { conns, gaps } = reassemble(pkts);
    assert.equal(conns[0].midstream, true);
    assert.equal(conns[0].reason, 'end');
    assert.equal(conns[0].c2s, REQ.subarray(0, 500).toString() + '<gap 500>' + REQ.subarray(1000, 1500).toString());
    assert.equal(gaps.length, 1);
  });

  test('max_stream_bytes: out-of-order bytes beyond the cap are given up as a gap at once', () => {
    // Segment 0 lost; the cap (1200 bytes) is passed at the fourth waiting segment.
    const pkts = conversation((segs) => segs.slice(1));
    const { conns, gaps } = reassemble(pkts, 'max_stream_bytes = 1200,');
    assert.equal(conns[0].c2s, '<gap 500>' + REQ.subarray(500).toString());
    assert.equal(gaps.length, 1);
    // Handshake (3) + segments 1, 2, 3: the gap came with the packet that passed the cap.
    assert.equal(gaps[0].at, 3 + 3);
  });

  test('max_total_bytes: the cap over all connections holds too', () => {
    const a = conversation((segs) => segs.slice(1), 44200);
    const { gaps, stats } = reassemble(a, 'max_total_bytes = 2000,');
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].at, 3 + 4 + 1, 'the fifth waiting segment passed 2000 bytes');
    assert.equal(stats.buffered, 0);
  });

  test('snap length: bytes the capture cut off are a gap, the rest is delivered', () => {
    const pkts = conversation((s) => s);
    const frames = timed(pkts, 1_650_000_000e6, 10).map((f) => ({ ...f, data: f.data.subarray(0, 54 + 100) }));
    const file = writePcap(path.join(tmpdir(), 'snap.pcap'), frames);
    const { recs } = run(['--lua', script(REASSEMBLY_LUA('')), '-r', file, '-o', 'json:-']);
    const [c] = ofType(recs, 'conn');
    const want = Array.from({ length: 10 }, (_, i) => REQ.subarray(i * 500, i * 500 + 100).toString() + '<gap 400>').join('');
    assert.equal(c.c2s, want);
    assert.equal(c.bytes_c2s, 5000, 'counters use the wire length');
  });
});

// ---------------------------------------------------------------- DNS

describe('plugin.dns_log', () => {
  test('queries and answers from fixtures/http.pcap, with the reverse cache filled', () => {
    const lua = `
local dnscache = require "flow.dnscache"
return { require "plugin.dns_log", { push = function() end, deinit = function()
  local n4, r4 = dnscache.lookup("10.0.0.80")
  local n6 = dnscache.lookup("2001:db8::80")
  riff.emit("cache", { v4 = n4, v4_rr = r4, v6 = n6, miss = dnscache.lookup("10.9.9.9") or "none" }) end } }`;
    const { recs } = run(['--lua', script(lua), '-r', path.join(FIXTURES, 'http.pcap'), '-o', 'json:-']);
    const q = ofType(recs, 'dns_query');
    const a = ofType(recs, 'dns_response');
    assert.deepEqual(q.map((r) => [r.domain, r.qtype, r.id, r.client_ip, r.server_ip, r.client_mac]), [
      ['www.lua.ren', 'A', 11338, '10.0.0.11', '10.0.0.1', '02:00:00:00:00:0b'],
      ['www.lua.ren', 'AAAA', 11339, '10.0.0.11', '10.0.0.1', '02:00:00:00:00:0b'],
    ]);
    assert.equal(a.length, 2);
    assert.equal(a[0].rcode, 'NOERROR');
    assert.equal(a[0].client_ip, '10.0.0.11');
    assert.deepEqual(a[0].answers.map((x: any) => [x.type, x.data]), [['CNAME', 'lua.ren'], ['A', '10.0.0.80']]);
    assert.ok(Math.abs(a[0].rtt - 0.010567) < 1e-5, `rtt ${a[0].rtt}`);
    const [c] = ofType(recs, 'cache');
    assert.deepEqual([c.v4, c.v4_rr, c.v6, c.miss], ['www.lua.ren', 'lua.ren', 'www.lua.ren', 'none']);
  });

  test('DNS over TCP (corpus dns_tcp.pcap) and over UDP (dns_udp.pcap)', () => {
    const lua = 'return { require "plugin.dns_log" }';
    const tcpRun = run(['--lua', script(lua), '-r', path.join(CORPUS, 'dns_tcp.pcap'), '-o', 'json:-']);
    const q = ofType(tcpRun.recs, 'dns_query');
    const a = ofType(tcpRun.recs, 'dns_response');
    assert.deepEqual(q.map((r) => [r.transport, r.domain, r.qtype]), [['tcp', 'www.tcpdump.org', 'A']]);
    assert.deepEqual(a[0].answers.map((x: any) => x.data), ['192.139.46.66', '198.199.88.104']);
    const udpRun = run(['--lua', script(lua), '-r', path.join(CORPUS, 'dns_udp.pcap'), '-o', 'json:-']);
    assert.equal(ofType(udpRun.recs, 'dns_query')[0].transport, 'udp');
    assert.equal(ofType(udpRun.recs, 'dns_response')[0].domain, ofType(udpRun.recs, 'dns_query')[0].domain);
  });

  test('the reverse cache names a later session, and stays bounded', () => {
    const resp = dns({
      id: 7, response: true, ra: true,
      questions: [{ name: 'shop.example.org', type: 'A' }],
      answers: [{ name: 'shop.example.org', type: 'A', data: SERVER.ip }],
    });
    const frames: Frame[] = [{ us: 1_650_000_000e6, data: udpFrame(53, 33333, resp, true, '192.0.2.53') }];
    // 40 more answers, for a cache of 8: the oldest are forgotten.
    for (let i = 0; i < 40; i++) {
      const r = dns({ id: 100 + i, response: true, questions: [{ name: `n${i}.example`, type: 'A' }], answers: [{ name: `n${i}.example`, type: 'A', data: `203.0.113.${i}` }] });
      frames.push({ us: 1_650_000_000e6 + 1000 + i, data: udpFrame(53, 33333, r, true, '192.0.2.53') });
    }
    const f = flow(45000, 443, 3);
    frames.push(...timed([...f.handshake(), ...f.close()], 1_650_000_001e6));
    const g = flow(45001, 443, 4, { sip: '203.0.113.39' });
    frames.push(...timed([...g.handshake(), ...g.close()], 1_650_000_002e6));
    const file = writePcap(path.join(tmpdir(), 'dns-cache.pcap'), frames);
    const lua = `
local dns_log = require "plugin.dns_log"
dns_log.cache_size = 8
local dnscache = require "flow.dnscache"
return { dns_log, require "plugin.sessions", { push = function() end, deinit = function()
  riff.emit("cache", { size = dnscache.size(), evicted = dnscache.evicted() }) end } }`;
    const { recs } = run(['--lua', script(lua), '-r', file, '-o', 'json:-']);
    const s = byKey(ofType(recs, 'tcp_session'));
    assert.equal(s.get(`${CLIENT.ip}:45000-${SERVER.ip}:443`)!.server_name, undefined, 'evicted from a cache of 8');
    assert.equal(s.get(`${CLIENT.ip}:45001-203.0.113.39:443`)!.server_name, 'n39.example');
    const [c] = ofType(recs, 'cache');
    assert.deepEqual([c.size, c.evicted], [8, 33]);
  });
});

// ---------------------------------------------------------------- app_id

/** A TLS 1.2-style ClientHello record with an SNI extension. */
function clientHello(sni: string): Buffer {
  const name = Buffer.from(sni);
  const sniExt = Buffer.concat([
    Buffer.from([0, 0]),
    u16(name.length + 5),
    u16(name.length + 3),
    Buffer.from([0]),
    u16(name.length),
    name,
  ]);
  const other = Buffer.from([0, 0x0b, 0, 2, 1, 0]); // ec_point_formats
  const exts = Buffer.concat([other, sniExt]);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 0x42),
    Buffer.from([32]),
    Buffer.alloc(32, 0x17),
    u16(4), Buffer.from([0x13, 0x01, 0xc0, 0x2f]),
    Buffer.from([1, 0]),
    u16(exts.length), exts,
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
}
function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
/** A QUIC v1 Initial-like long-header datagram (padded to 1200 bytes). */
function quicInitial(): Buffer {
  const b = Buffer.alloc(1200, 0x5a);
  Buffer.from([0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0x9a]).copy(b);
  return b;
}

describe('plugin.app_id', () => {
  function crafted(): string {
    const frames: Frame[] = [];
    let t = 1_660_000_000e6;
    const add = (pkts: CraftedPacket[]) => {
      frames.push(...timed(pkts, t));
      t += 1e6;
    };
    const tls = flow(46000, 443, 1);
    add([...tls.handshake(), ...tls.send('client', clientHello('api.example.org')), ...tls.close()]);
    const ssh = flow(46001, 22, 2);
    add([...ssh.handshake(), ...ssh.send('server', Buffer.from('SSH-2.0-OpenSSH_9.2p1\r\n')),
      ...ssh.send('client', Buffer.from('SSH-2.0-OpenSSH_9.6\r\n')), ...ssh.close()]);
    const web = flow(46002, 8080, 3);
    add([...web.handshake(), ...web.send('client', Buffer.from('GET /x HTTP/1.1\r\nHost: www.example.net:8080\r\n\r\n')), ...web.close()]);
    const other = flow(46003, 9999, 4);
    add([...other.handshake(), ...other.send('client', Buffer.from('hello')), ...other.send('server', Buffer.from('world')), ...other.close()]);
    frames.push({ us: t, data: udpFrame(50000, 443, quicInitial()) });
    frames.push({ us: t + 1, data: udpFrame(50001, 53, dns({ id: 1, questions: [{ name: 'example.com', type: 'A' }] })) });
    return writePcap(path.join(tmpdir(), 'apps.pcap'), frames);
  }

  test('TLS ClientHello (SNI), SSH (server first), HTTP, QUIC v1 and DNS, each session once', () => {
    const lua = 'return { require "plugin.sessions", require "plugin.app_id" }';
    const { recs } = run(['--lua', script(lua), '-r', crafted(), '-o', 'json:-']);
    const apps = ofType(recs, 'app');
    assert.deepEqual(apps.map((r) => [r.proto, r.server_port, r.app, r.direction, r.server_name ?? null]), [
      ['tcp', 443, 'TLS', 'c2s', 'api.example.org'],
      ['tcp', 22, 'SSH', 's2c', null],
      ['tcp', 8080, 'HTTP', 'c2s', 'www.example.net:8080'],
      ['udp', 443, 'QUIC', 'c2s', null],
      ['udp', 53, 'DNS', 'c2s', null],
    ]);
    const s = byKey(ofType(recs, 'tcp_session'));
    assert.equal(s.get(`${CLIENT.ip}:46000-${SERVER.ip}:443`)!.app, 'TLS');
    assert.equal(s.get(`${CLIENT.ip}:46000-${SERVER.ip}:443`)!.server_name, 'api.example.org');
    assert.equal(s.get(`${CLIENT.ip}:46003-${SERVER.ip}:9999`)!.app, undefined);
    assert.equal(apps[0].client_mac, CLIENT.mac);
  });

  test('a signature file beside the script: host and byte tests, -1 = last byte', () => {
    const lua = `
local app_id = require "plugin.app_id"
app_id.signatures = "my-apps.txt"
return { require "plugin.sessions", app_id }`;
    const sigs = [
      '# ports, host, first and last bytes',
      '1001 Example TLS: [tcp; ; 443; example.org; 00:16|01:03]',
      'Greeting: [tcp;;9999;;00:68|-1:6f]',
      'Echo: [udp;;443;;]',
    ].join('\n');
    const { recs } = run(['--lua', script(lua, { 'my-apps.txt': sigs }), '-r', crafted(), '-o', 'json:-']);
    assert.deepEqual(ofType(recs, 'app').map((r) => [r.server_port, r.app]), [[443, 'Example TLS'], [9999, 'Greeting'], [443, 'Echo']]);
  });

  test('a bad signature line stops the run at setup, naming file and line', () => {
    const lua = 'local a = require "plugin.app_id" a.signatures = "bad.txt" return { a }';
    const r = riff(['-q', '--strict', '--lua', script(lua, { 'bad.txt': 'Fine: [tcp;;80;;]\nBroken: [tcp;;;;00:zz]\n' }), '-r', path.join(FIXTURES, 'http.pcap')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /bad\.txt:2: bad byte test '00:zz'/);
  });

  test('corpus captures: SSH over IP-over-InfiniBand (ipoib.pcap), HTTP (accecn_handshake.pcap), DNS (dns_udp.pcap)', () => {
    const lua = 'return { require "plugin.sessions", require "plugin.app_id" }';
    const want: Array<[string, string, number]> = [['ipoib.pcap', 'SSH', 22], ['accecn_handshake.pcap', 'HTTP', 80], ['dns_udp.pcap', 'DNS', 53]];
    for (const [file, app, port] of want) {
      const { recs } = run(['--lua', script(lua), '-r', path.join(CORPUS, file), '-o', 'json:-']);
      const apps = ofType(recs, 'app');
      assert.ok(apps.some((r) => r.app === app && r.server_port === port), `${file}: ${JSON.stringify(apps)}`);
    }
  });

  test('lua/apps/signatures.txt parses, and every shipped app has a test here or a port', () => {
    const lua = `
local app_id = require "plugin.app_id"
return { app_id, { push = function() end, deinit = function() riff.emit("n", { n = app_id.count }) end } }`;
    const { recs } = run(['--lua', script(lua), '-r', path.join(FIXTURES, 'http.pcap'), '-o', 'json:-']);
    assert.ok(ofType(recs, 'n')[0].n >= 30);
  });
});

// ---------------------------------------------------------------- http_requests

test('plugin.http_requests prints each whole request once, reordered segments and all', () => {
  const body = text(3000, 9);
  const head = Buffer.from(`POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: ${body.length}\r\n\r\n`);
  const f = new TcpFlow({ client: { ...CLIENT, port: 47000, isn: 1 }, server: { ...SERVER, port: 8080, isn: 2, mss: 600 } });
  const hs = f.handshake();
  const segs = f.send('client', Buffer.concat([head, body, Buffer.from('GET /next HTTP/1.1\r\nHost: svc\r\n\r\n')]), { ackEvery: 0 });
  const order = [0, 2, 1, 1, 3, 5, 4];
  assert.equal(segs.length, 6);
  const pkts = [...hs, ...order.map((i) => segs[i]), f.ack('server'), ...f.close()];
  const file = writePcap(path.join(tmpdir(), 'http-req.pcap'), timed(pkts, 1_650_000_000e6));
  const lua = 'local h = require "plugin.http_requests" h.port = 8080 return { h }';
  const r = run(['--lua', script(lua), '-r', file]);
  const out = r.stdout.toString('latin1');
  const parts = out.split(/^=== HTTP request \d+\.\d+ .*\n/m).slice(1);
  assert.equal(parts.length, 2, out);
  assert.equal(parts[0], Buffer.concat([head, body]).toString('latin1') + '\n');
  assert.equal(parts[1], 'GET /next HTTP/1.1\r\nHost: svc\r\n\r\n\n');
  assert.match(out, /^=== HTTP request \d+\.1 192\.0\.2\.10:47000 -> 198\.51\.100\.80:8080 at 2022-04-15 05:20:00\.00\d{4} UTC$/m);
  assert.match(out, /^=== HTTP request \d+\.2 192\.0\.2\.10:47000 -> /m);
});

// ---------------------------------------------------------------- the example

describe('lua/examples/traffic.lua', () => {
  const EXAMPLE = path.join(ROOT, 'lua', 'examples', 'traffic.lua');

  test('JSON lines: DNS, apps, sessions, flows; status lines on stderr', () => {
    const r = run(['--lua', EXAMPLE, '-r', path.join(FIXTURES, 'http.pcap'), '-o', 'json:-']);
    const count = (t: string) => ofType(r.recs, t).length;
    assert.deepEqual(
      [count('dns_query'), count('dns_response'), count('app'), count('tcp_session'), count('udp_flow')],
      [2, 2, 6, 4, 2],
    );
    assert.ok(ofType(r.recs, 'tcp_session').every((s) => s.app === 'HTTP' && s.server_name === 'www.lua.ren'));
    assert.match(r.stderr, /^queue size: 45, TCP sess: 0, UDP sess: 0, APP sess: 4$/m);
  });

  test('status lines follow capture time: one per 10 s boundary passed', () => {
    const frames: Frame[] = [];
    for (let i = 0; i < 30; i++) frames.push({ us: 1_650_000_000e6 + i * 1e6, data: udpFrame(40000 + (i % 3), 53, dns({ id: i, questions: [{ name: 'a.example', type: 'A' }] })) });
    const file = writePcap(path.join(tmpdir(), 'status.pcap'), frames);
    const r = run(['--lua', EXAMPLE, '-r', file]);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('queue size'));
    assert.deepEqual(lines, [
      'queue size: 10, TCP sess: 0, UDP sess: 3, APP sess: 1',
      'queue size: 10, TCP sess: 0, UDP sess: 3, APP sess: 1',
      'queue size: 10, TCP sess: 0, UDP sess: 0, APP sess: 1',
    ]);
  });

  test('-o sqlite: tables the sqlite3 CLI can query', (t) => {
    if (!hasCommand('sqlite3')) return t.skip('sqlite3 not installed');
    const db = path.join(tmpdir(), 'traffic.db');
    run(['--lua', EXAMPLE, '-r', path.join(FIXTURES, 'http.pcap'), '-o', `sqlite:${db}`]);
    const q = (sql: string) => spawnSync('sqlite3', [db, sql], { encoding: 'utf8' }).stdout.trim();
    assert.equal(q('select count(*), sum(pkts_c2s + pkts_s2c), group_concat(distinct reason) from tcp_session'), '4|39|fin');
    assert.equal(q("select domain, qtype from dns_query order by id"), 'www.lua.ren|A\nwww.lua.ren|AAAA');
    assert.equal(q("select count(*) from app where app = 'HTTP'"), '4');
    assert.equal(q("select server_name from tcp_session group by 1"), 'www.lua.ren');
  });
});
