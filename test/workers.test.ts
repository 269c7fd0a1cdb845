// One answer from N workers: collect/merge/report and riff.counter give a
// script the whole run's figures whatever --workers says, and a script that
// would print one worker's share is told so at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { riff, tmpdir, tree, ROOT, writeEncapCapture } from './helpers.js';
import { ETHERTYPE, IPPROTO, PcapFileWriter, ethernet, framesInTurn, ipv4, tcp, udp } from '../scripts/lib/craft.js';

const dir = tmpdir('riff-workers-');
function script(name: string, src: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, src);
  return file;
}

// A capture of many flows (the bench's generator, small), made once.
const BIG = path.join(dir, 'web.pcap');
const gen = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js'), BIG, '--packets', '20000', '--flows', '400'], { encoding: 'utf8' });
assert.equal(gen.status, 0, gen.stderr);

const run = (args: string[], workers: number) => {
  const r = riff(['-q', '--workers', String(workers), ...args], { env: { ...process.env, TZ: 'UTC', RIFF_WORKERS: '' } });
  assert.equal(r.code, 0, r.stderr);
  return r;
};

test('fixtures/count.lua prints one total, the same with 1, 2 and 3 workers', () => {
  const outs = [1, 2, 3].map((w) => run(['--lua', 'fixtures/count.lua', '-r', BIG], w).stdout.toString());
  assert.match(outs[0], /^matches\t\d+\n$/);
  assert.notEqual(outs[0], 'matches\t0\n');
  assert.equal(outs[1], outs[0]);
  assert.equal(outs[2], outs[0]);
});

test('collect/report: a per-port table merges by key; merge(a, b) overrides; riff.worker says where it runs', () => {
  const file = script(
    'ports.lua',
    `local ports, seen = {}, 0
local function u16(s, i) local a, b = s:byte(i, i + 1) return a * 256 + b end
buffer = function(p)
  if #p >= 38 and p:byte(13) == 8 and p:byte(14) == 0 and p:byte(24) == 6 then
    local ihl = (p:byte(15) & 15) * 4
    local port = u16(p, 15 + ihl + 2)
    ports[port] = (ports[port] or 0) + 1
  end
  seen = seen + 1
end
function collect() return { ports = ports, seen = seen, workers = { [riff.worker.index] = true }, count = riff.worker.count } end
function merge(a, b)
  for k, v in pairs(b.ports) do a.ports[k] = (a.ports[k] or 0) + v end
  for k in pairs(b.workers) do a.workers[k] = true end
  a.seen = a.seen + b.seen
  return a
end
function report(t)
  local keys = {}
  for k in pairs(t.ports) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do print(k, t.ports[k]) end
  local w = 0
  for _ in pairs(t.workers) do w = w + 1 end
  print("seen", t.seen, "workers", w, t.count)
end
`,
  );
  const one = run(['--lua', file, '-r', BIG], 1).stdout.toString();
  const lines = one.trim().split('\n');
  assert.ok(lines.length > 3, one);
  assert.equal(lines[lines.length - 1], 'seen\t20000\tworkers\t1\t1');
  for (const w of [2, 3]) {
    const out = run(['--lua', file, '-r', BIG], w).stdout.toString().trim().split('\n');
    assert.deepEqual(out.slice(0, -1), lines.slice(0, -1), `--workers ${w}`);
    assert.equal(out[out.length - 1], `seen\t20000\tworkers\t${w}\t${w}`);
  }
});

test('report without collect, or a collect that returns nothing: report gets nil with any N, and no error', () => {
  const none = script('report-only.lua', `buffer = function() end\nfunction report(s) print("report", s) end\n`);
  const empty = script('collect-nil.lua', `buffer = function() end\nfunction collect() end\nfunction report(s) print("report", s) end\n`);
  for (const file of [none, empty])
    for (const w of [1, 2]) {
      const r = run(['--lua', file, '-r', BIG], w);
      assert.equal(r.stdout.toString(), 'report\tnil\n', `${path.basename(file)}, --workers ${w}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /cannot be merged|Lua errors?: [1-9]|[1-9]\d* Lua errors/, `${path.basename(file)}, --workers ${w}`);
    }
});

test('riff.counter: totals over every worker, read during the run and in the report', () => {
  const file = script(
    'counter.lua',
    `local c = riff.counter("pkts")
local bytes = riff.counter("bytes")
local mid
buffer = function(p)
  c:add(1)
  bytes:add(#p)
  if riff.worker.index == 1 and c:value() == 1000 then mid = c:total() end
end
function collect() return { n = c:value(), b = bytes:value(), mid_ok = mid == nil or mid >= 1000 } end
function report(t) print(t.n, t.b, t.mid_ok) end
`,
  );
  const outs = [1, 2, 3].map((w) => run(['--lua', file, '-r', BIG], w).stdout.toString());
  assert.match(outs[0], /^20000\t\d+\ttrue\n$/);
  assert.equal(outs[1], outs[0]);
  assert.equal(outs[2], outs[0]);
});

test('with N > 1, a deinit that prints one worker\'s share is named once at start; one worker says nothing', () => {
  const file = script('halves.lua', `local n = 0\nbuffer = function() n = n + 1 end\nfunction deinit() print("packets", n) end\n`);
  const two = run(['--lua', file, '-r', BIG], 2);
  const notes = two.stderr.split('\n').filter((l) => /deinit runs in each worker/.test(l));
  assert.equal(notes.length, 1, two.stderr);
  assert.match(notes[0], /^riff: with --workers 2 the script's deinit runs in each worker on its share of the flows; for whole-run figures give it collect\/report/);
  const one = run(['--lua', file, '-r', BIG], 1);
  assert.doesNotMatch(one.stderr, /deinit runs in each worker/);
  // count.lua has a report: no note.
  assert.doesNotMatch(run(['--lua', 'fixtures/count.lua', '-r', BIG], 2).stderr, /deinit runs in each worker/);
});

test("traffic.lua: its status lines add up to the whole run and its last line's sessions are the same with 1, 2 and 3 workers", () => {
  const copy = script('traffic.lua', fs.readFileSync(path.join(ROOT, 'lua', 'examples', 'traffic.lua'), 'utf8').replace('interval = 10,', 'interval = 0.05,'));
  const finals: string[] = [];
  for (const w of [1, 2, 3]) {
    const r = run(['--lua', copy, '-r', BIG, '-o', `json:${path.join(dir, `t${w}.json`)}`], w);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('queue size:'));
    assert.ok(lines.length >= 3, r.stderr);
    const sum = lines.reduce((s, l) => s + Number(/queue size: (\d+)/.exec(l)![1]), 0);
    assert.equal(sum, 20000, `--workers ${w}: ${r.stderr}`);
    // What the last line's "queue size" counts from depends on when worker 1
    // printed the line before it; the sessions are the run's.
    finals.push(lines[lines.length - 1].replace(/^queue size: \d+, /, ''));
  }
  assert.equal(finals[1], finals[0]);
  assert.equal(finals[2], finals[0]);
});

test('bundled plugins give the same records with 1 and 3 workers (traffic.lua over the bench capture)', () => {
  const strip = (f: string) =>
    fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => l.replace(/^\{"ts":[0-9.]+,/, '{')).sort();
  const a = strip(path.join(dir, 't1.json'));
  const c = strip(path.join(dir, 't3.json'));
  assert.ok(a.length > 100);
  assert.deepEqual(c, a);
});

// (writeEncapCapture: the ways a flow's two directions may differ outside it.)
test('every packet of a flow reaches one worker, whatever carries it each way (VLAN, QinQ, MPLS, PPPoE, GRE, IP in IP, 6in4, VXLAN, Geneve, IPv6 extension headers)', () => {
  const dir = tmpdir();
  const file = path.join(dir, 'encap.pcap');
  const flows = writeEncapCapture(file);
  const lua = path.join(dir, 'where.lua');
  fs.writeFileSync(
    lua,
    `local decode = require "proto.packet"
buffer = function(p)
  local pkt = decode(p)
  local t = pkt.tcp or pkt.udp
  if not (pkt.ip and t) then print("undecoded", pkt.encap) return end
  local a, b = pkt.ip.src .. "/" .. t.sport, pkt.ip.dst .. "/" .. t.dport
  if a > b then a, b = b, a end
  print(a .. " " .. b, riff.worker.index)
end
`,
  );
  const r = riff(['-q', '--workers', '3', '--lua', lua, '-r', file]);
  assert.equal(r.code, 0, r.stderr);
  const where = new Map<string, Set<string>>();
  for (const line of String(r.stdout).trim().split('\n')) {
    const [key, worker] = line.split('\t');
    assert.notEqual(key, 'undecoded', line);
    if (!where.has(key)) where.set(key, new Set());
    where.get(key)!.add(worker);
  }
  assert.equal(where.size, flows, 'one key per flow, as crafted');
  const split = [...where].filter(([, ws]) => ws.size > 1).map(([k, ws]) => `${k}: workers ${[...ws].join(',')}`);
  assert.deepEqual(split, [], `${split.length} of ${flows} flows split between workers`);
  const used = new Set([...where.values()].flatMap((ws) => [...ws]));
  assert.equal(used.size, 3, 'the flows spread over every worker');
});

test('connections between two hosts spread over the workers (Linux picks even client ports)', () => {
  const dir = tmpdir();
  const file = path.join(dir, 'pair.pcap');
  const w = new PcapFileWriter(file);
  const put = framesInTurn(w);
  const M = { dst: '02:00:00:00:00:02', src: '02:00:00:00:00:01' };
  for (let i = 0; i < 256; i++) {
    const cp = 40000 + 2 * i;
    put(ethernet({ ...M, type: ETHERTYPE.IPV4 }, ipv4({ src: '10.0.0.1', dst: '10.0.0.2', proto: IPPROTO.TCP }, tcp({ src: '10.0.0.1', dst: '10.0.0.2', sport: cp, dport: 8080, seq: 1, flags: 0x02 }))));
    put(ethernet({ ...M, type: ETHERTYPE.IPV4 }, ipv4({ src: '10.0.0.2', dst: '10.0.0.1', proto: IPPROTO.TCP }, tcp({ src: '10.0.0.2', dst: '10.0.0.1', sport: 8080, dport: cp, seq: 1, flags: 0x12 }))));
  }
  w.close();
  const lua = path.join(dir, 'who.lua');
  fs.writeFileSync(lua, 'buffer = function() print(riff.worker.index) end\n');
  for (const n of [2, 4]) {
    const r = riff(['-q', '--workers', String(n), '--lua', lua, '-r', file]);
    assert.equal(r.code, 0, r.stderr);
    const per = new Array(n).fill(0);
    for (const line of String(r.stdout).trim().split('\n')) per[Number(line) - 1]++;
    // 512 packets, 256 flows: each worker's share at least half the fair one.
    for (const k of per) assert.ok(k >= 512 / n / 2, `--workers ${n}: packets per worker ${per.join(', ')}`);
  }
});

test("a worker whose collect fails: its error is shown, the report runs over the other workers' shares and says whose is missing", () => {
  const dir = tree({
    'buf.lua': `local n = 0
buffer = function() n = n + 1 end
function collect() if riff.worker.index == 2 then error("no state here") end return n end
function report(t) print("report", t) end
`,
    'plug.lua': `local P = { n = 0 }
function P:push() self.n = self.n + 1 end
function P:collect() if riff.worker.index == 2 then error("no plugin state here") end return self.n end
function P:report(t) print("plugin report", t) end
return { P }
`,
  });
  for (const [file, msg, out] of [['buf.lua', 'no state here', /^report\t\d+$/m], ['plug.lua', 'no plugin state here', /^plugin report\t\d+$/m]] as const) {
    const r = riff(['-q', '--workers', '2', '--lua', path.join(dir, file), '-r', path.join(ROOT, 'fixtures', 'http.pcap')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${file}:\\d+: ${msg} \\(collect\\)`), 'the error itself, with its line');
    assert.match(r.stderr, /the report covers 1 of 2 workers: worker 2 \(its collect failed\) left out/);
    assert.match(String(r.stdout), out);
    assert.doesNotMatch(r.stderr, /pipeline\.lua/, "no error of riff's own pipeline");
    assert.match(r.stderr, /1 Lua errors/);
  }
});

test("a capture whose times step back (merged, multi-interface) gives the same flows with any N: idleness goes by the capture's clock, and no duration is negative", () => {
  const dir = tmpdir();
  const file = path.join(dir, 'back.pcap');
  const w = new PcapFileWriter(file);
  const M = { dst: '02:00:00:00:00:02', src: '02:00:00:00:00:01' };
  const frame = (c: string, cp: number) =>
    ethernet({ ...M, type: ETHERTYPE.IPV4 }, ipv4({ src: c, dst: '10.9.9.9', proto: IPPROTO.UDP }, udp({ src: c, dst: '10.9.9.9', sport: cp, dport: 5353 }, Buffer.from('x'))));
  // Forty flows at t0, one packet each; a packet ten minutes on (another
  // interface's clock, say); then every flow again at t0 + 1 s, and once
  // more far back. With one worker the jump found every flow idle; each
  // worker must judge them by the same clock though it never saw the jump.
  const t0 = 1_700_000_000;
  for (let i = 0; i < 40; i++) w.write(t0, i * 1000, frame(`10.0.0.${i + 1}`, 1000 + i));
  w.write(t0 + 600, 0, frame('10.0.1.1', 999));
  for (let i = 0; i < 40; i++) w.write(t0 + 1, i * 1000, frame(`10.0.0.${i + 1}`, 1000 + i));
  for (let i = 0; i < 40; i += 3) w.write(t0 - 5000, 0, frame(`10.0.0.${i + 1}`, 1000 + i));
  w.close();
  const lua = path.join(dir, 'sess.lua');
  fs.writeFileSync(lua, 'return { require "plugin.sessions" }\n');
  const runs = [1, 2, 3].map((n) => {
    const r = riff(['-q', '--workers', String(n), '--lua', lua, '-r', file, '-o', 'json:-']);
    assert.equal(r.code, 0, r.stderr);
    return String(r.stdout).trim().split('\n').map((l) => l.replace(/"ts":[0-9.]+,/, '')).sort();
  });
  assert.ok(runs[0].length > 80, `${runs[0].length} records`);
  assert.ok(runs[0].some((l) => l.includes('"reason":"timeout"')), 'the jump ended the first flows');
  for (const l of runs[0]) assert.ok(!/"duration":-/.test(l), l);
  assert.deepEqual(runs[1], runs[0], '2 workers');
  assert.deepEqual(runs[2], runs[0], '3 workers');
});
