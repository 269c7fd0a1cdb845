// The bundled plugins give one answer whatever --workers says: on the same
// file, their printed lines, their totals and their records (as multisets:
// with N workers the order in which workers emit is not defined) are those
// of one worker. The captures: corpus files with TCP, UDP, DNS and HTTP, and
// the bench's generator with DNS lookups before its connections, whose
// answers name servers that later connections (other flows, hence often
// other workers) use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { riff, tmpdir, ROOT } from './helpers.js';
import { PcapFileWriter, TcpFlow, ETHERTYPE, IPPROTO, ethernet, ipv4, udp, framesInTurn } from '../scripts/lib/craft.js';

const dir = tmpdir('riff-workers-plugins-');
const script = (name: string, src: string) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, src);
  return file;
};

// Every answer names its server anew (s10-17.example.com...), so a session
// named from the wrong answer, or from none, shows.
const BENCH = path.join(dir, 'web-dns.pcap');
const gen = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js'), BENCH, '--packets', '12000', '--flows', '300', '--dns-rate', '0.5'], { encoding: 'utf8' });
assert.equal(gen.status, 0, gen.stderr);

const SCRIPTS = {
  sessions: script('sessions.lua', 'return { require "plugin.dns_log", require "plugin.sessions" }\n'),
  dns_log: script('dns_log.lua', 'return { require "plugin.dns_log" }\n'),
  app_id: script('app_id.lua', 'return { require "plugin.dns_log", require "plugin.sessions", require "plugin.app_id" }\n'),
  http_requests: script('http_requests.lua', 'local h = require "plugin.http_requests"\nh.record = "http_request"\nreturn { h }\n'),
  all: script('all.lua', 'local h = require "plugin.http_requests"\nh.record = "http_request"\nreturn { require "plugin.dns_log", require "plugin.sessions", require "plugin.app_id", h }\n'),
  'service-watch': path.join(ROOT, 'lua', 'examples', 'service-watch.lua'),
};

interface Run {
  records: string[];
  stdout: string[];
  stderr: string[];
}

let n = 0;
function run(lua: string, file: string, workers: number): Run {
  const out = path.join(dir, `r${n++}.json`);
  const r = riff(['-q', '--workers', String(workers), '--lua', lua, '-r', file, '-o', `json:${out}`], { env: { ...process.env, TZ: 'UTC', RIFF_WORKERS: '' } });
  assert.equal(r.code, 0, `${path.basename(lua)} on ${file} with ${workers} workers: ${r.stderr}`);
  const text = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
  return {
    // ts is the emitting packet's time: a record emitted at the end carries its worker's last packet's.
    records: text.split('\n').filter(Boolean).map((l) => l.replace(/^\{"ts":[0-9.]+,/, '{')).sort(),
    stdout: r.stdout.toString().split('\n').sort(),
    // The summary's packet counts are whole-run figures too; the output's line names its file.
    stderr: r.stderr.split('\n').filter((l) => !l.startsWith('output json:')).sort(),
  };
}

function same(lua: string, file: string, counts: number[]): Run {
  const one = run(lua, file, 1);
  for (const w of counts) {
    const many = run(lua, file, w);
    const what = `${path.basename(lua)} on ${path.basename(file)}, --workers ${w}`;
    assert.deepEqual(many.records, one.records, `${what}: records`);
    assert.deepEqual(many.stdout, one.stdout, `${what}: printed lines`);
    assert.deepEqual(many.stderr, one.stderr, `${what}: totals and summary`);
  }
  return one;
}

for (const [name, lua] of Object.entries(SCRIPTS)) {
  if (name === 'all') continue;
  test(`${name}: the bench capture with DNS lookups gives the same lines, totals and records with 1, 2 and 3 workers`, () => {
    const one = same(lua, BENCH, [2, 3]);
    if (name === 'sessions') {
      // Most sessions are named by an answer seen in another flow.
      const named = one.records.filter((r) => r.includes('"type":"tcp_session"') && /"server_name":"s\d+-\d+\.example\.com"/.test(r));
      assert.ok(named.length > 100, `${named.length} sessions named from DNS`);
    }
    if (name === 'app_id') assert.equal(one.stderr.filter((l) => l.startsWith('app_id: ')).length, 1);
    if (name === 'http_requests') {
      assert.ok(one.records.length > 300);
      assert.ok(one.records.every((r) => /"flow":\d+/.test(r) && /"request":\d+/.test(r)));
    }
  });
}

// Corpus files where these plugins find flows, DNS (UDP and TCP), HTTP.
const CORPUS = [
  'fixtures/corpus/dns_udp.pcap', 'fixtures/corpus/dns_tcp.pcap', 'fixtures/corpus/dnssec.pcap', 'fixtures/corpus/edns-opts.pcap',
  'fixtures/corpus/dns-badcookie.pcap', 'fixtures/corpus/afs.pcap', 'fixtures/corpus/dhcp-rfc4388.pcap',
  'fixtures/corpus/ipv4_tcp_http_xml.pcap', 'fixtures/corpus/ipv4_tcp_http_xml_tso.pcap', 'fixtures/corpus/isakmp4500.pcap',
  'fixtures/corpus/bgp-infinite-loop.pcap', 'fixtures/corpus/ldp-common-session.pcap', 'fixtures/corpus/gquic.pcap',
  'fixtures/corpus/accecn_handshake.pcap', 'fixtures/http.pcap', 'fixtures/multi.pcapng', 'fixtures/service-watch.pcap',
  // Tunnels (sharded on the inner flow), and flows named as they close (app_id's time: their last packet's).
  'fixtures/proto/encap.pcap', 'fixtures/corpus/geneve.pcap', 'fixtures/corpus/gso-ipv4-vxlan-ipv4.pcap',
];

test('every bundled plugin at once, and the service watch: corpus captures give the same lines, totals and records with 1 and 3 workers', () => {
  let records = 0;
  for (const f of CORPUS) {
    const file = path.join(ROOT, f);
    records += same(SCRIPTS.all, file, [3]).records.length;
  }
  assert.ok(records > 100, `${records} records over the corpus`);
  const watch = same(SCRIPTS['service-watch'], path.join(ROOT, 'fixtures', 'service-watch.pcap'), [2, 3]);
  assert.ok(watch.records.some((r) => r.includes('"type":"service_down"')));
});

// Flows announced by other flows: TFTP data from a new server port, FTP data
// after PASV and PORT. With N workers the data flow is mostly another
// worker's than its control flow's; every worker follows the announcing
// packets (app_id's expect_ports), so each data flow is named "expect".
test('app_id: TFTP and FTP data flows are named from their control flows with 1, 2 and 3 workers', () => {
  const file = path.join(dir, 'expect.pcap');
  const w = new PcapFileWriter(file);
  const put = framesInTurn(w);
  const MAC = '02:00:00:00:00:01';
  const u = (a: string, z: string, ap: number, zp: number, b: Buffer) =>
    put(ethernet({ src: MAC, dst: MAC, type: ETHERTYPE.IPV4 }, ipv4({ src: a, dst: z, proto: IPPROTO.UDP }, udp({ src: a, dst: z, sport: ap, dport: zp }, b))));
  const data = (op: number) => Buffer.concat([Buffer.from([0, op, 0, 1]), Buffer.alloc(512, 0x41)]);
  for (let i = 1; i <= 12; i++) {
    const c = `10.9.0.${i}`, s = `10.9.8.${i}`;
    u(c, s, 40000 + i, 69, Buffer.from('\0\x01boot.img\0octet\0', 'latin1'));
    u(s, c, 50100 + i, 40000 + i, data(3));
    u(c, s, 40000 + i, 50100 + i, Buffer.from([0, 4, 0, 1]));
    const ci = `10.9.1.${i}`, si = `10.9.9.${i}`;
    const ctl = new TcpFlow({ client: { mac: MAC, ip: ci, port: 41000 + i, isn: i }, server: { mac: MAC, ip: si, port: 21, isn: 100 + i } });
    const hi = (50000 + i) >> 8, lo = (50000 + i) & 255;
    for (const p of [...ctl.handshake(), ...ctl.send('server', Buffer.from('220 ready\r\n')), ...ctl.send('client', Buffer.from('PASV\r\n')),
      ...ctl.send('server', Buffer.from(`227 Entering Passive Mode (10,9,9,${i},${hi},${lo})\r\n`))]) put(p.frame);
    const pasv = new TcpFlow({ client: { mac: MAC, ip: ci, port: 42000 + i, isn: 200 + i }, server: { mac: MAC, ip: si, port: 50000 + i, isn: 300 + i } });
    for (const p of [...pasv.handshake(), ...pasv.send('server', Buffer.alloc(300, 0x55)), ...pasv.close(), ...ctl.close()]) put(p.frame);
  }
  w.close();
  const one = same(SCRIPTS.app_id, file, [2, 3]);
  const expect = one.records.filter((r) => r.includes('"type":"app"') && r.includes('"by":"expect"'));
  assert.equal(expect.length, 24, one.records.join('\n'));
});
