// riff end to end, as a user runs it: the CLI over fixture captures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Batch, recordAt } from '../src/capture/batch.js';
import { openCaptureFile } from '../src/capture/file.js';
import { compileFilter, filterAvailable } from '../src/capture/filter.js';
import { riff, riffAsync, tree, tmpdir, FIXTURES, CLI, reportIds, pcapHeader } from './helpers.js';

process.env.TZ = 'UTC';

/** The suite runs with RIFF_WORKERS=1 and =2 (npm test does both). */
const workers = () => Number(process.env.RIFF_WORKERS ?? 1);

interface Pkt {
  data: Buffer;
  sec: number;
  nsec: number;
  caplen: number;
  wirelen: number;
  passed: boolean;
}

function readAll(file: string, filter?: string): Pkt[] {
  const f = openCaptureFile(file);
  const out: Pkt[] = [];
  const b = new Batch();
  const flt = filter ? compileFilter(filter, f.linktype) : null;
  while (true) {
    b.reset();
    if (f.fill(b, 1000) === 0) break;
    flt?.apply(b);
    for (const o of b.offsets()) {
      const r = recordAt(b, o);
      out.push({ data: Buffer.from(r.data), sec: r.sec, nsec: r.nsec, caplen: r.caplen, wirelen: r.wirelen, passed: !(r.flags & 2) });
    }
  }
  f.close();
  return out;
}

function ctime(sec: number): string {
  // watch.c's ctime(): "Fri Sep  8 06:00:00 2017"
  const d = new Date(sec * 1000);
  const day = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()];
  const mon = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][d.getUTCMonth()];
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${day} ${mon} ${String(d.getUTCDate()).padStart(2, ' ')} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

const BANNER = '###########[ OK ]#############\n';

// With several workers packets' output interleaves (each packet's lines stay
// together); ids are global. Key each packet's output, report included, by id.
function byId(stdout: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  const re = /id: (\d+)\nPacket length: \d+\nNumber of bytes: \d+\nRecieved time: [^\n]*\n\n\n/g;
  const text = stdout.toString('latin1');
  let from = 0;
  for (const m of text.matchAll(re)) {
    const end = m.index! + m[0].length;
    out.set(Number(m[1]), stdout.subarray(from, end));
    from = end;
  }
  assert.equal(from, stdout.length, 'output after the last report block');
  return out;
}
const HTTP = path.join(FIXTURES, 'http.pcap');
const noFilter = filterAvailable() ? false : 'the libpcap filter addon is not built';

test('the seed scripts, laid out as an original riff tree, run unchanged: banner exactly for packets holding "pcap", bytes exact', { skip: noFilter }, () => {
  const r = riff(['--lua', 'pipeline.lua', '-r', '../http.pcap'], { cwd: path.join(FIXTURES, 'original-riff') });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /filter from config\.lua: dst port 80/);
  const pkts = readAll(HTTP, 'dst port 80').filter((p) => p.passed);
  assert.ok(pkts.length > 10);
  const expected = new Map<number, Buffer>();
  pkts.forEach((p, i) => {
    const parts = [p.data, Buffer.from('\n')];
    if (p.data.includes('pcap')) parts.push(Buffer.from(BANNER));
    parts.push(
      Buffer.from(`id: ${i + 1}\nPacket length: ${p.wirelen}\nNumber of bytes: ${p.caplen}\nRecieved time: ${ctime(p.sec)}\n\n\n`),
    );
    expected.set(i + 1, Buffer.concat(parts));
  });
  const got = byId(r.stdout);
  assert.deepEqual([...got.keys()].sort((a, b) => a - b), [...expected.keys()]);
  for (const [id, want] of expected) assert.deepEqual(got.get(id), want, `packet ${id}`);
  if (workers() === 1) assert.deepEqual(r.stdout, Buffer.concat([...expected.values()]));
  // fixtures/http.pcap.txt lists which packets hold "pcap": the client's request does, and passes dst port 80.
  assert.equal(r.stdout.toString('latin1').split(BANNER).length - 1, pkts.filter((p) => p.data.includes('pcap')).length);
  assert.match(r.stderr, new RegExp(`^${pkts.length} packets passed the filter$`, 'm'));
});

test('all 256 byte values pass through the CLI byte-exact (pcap µs and big-endian ns)', () => {
  const dir = tree({ 'echo.lua': 'buffer = function(p) io.write(p) end' });
  for (const f of ['allbytes.pcap', 'ns-be.pcap']) {
    // Byte-exact concatenation needs packet order: one worker.
    const r = riff(['-q', '--workers', '1', '--lua', path.join(dir, 'echo.lua'), '-r', path.join(FIXTURES, f)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout, Buffer.concat(readAll(path.join(FIXTURES, f)).map((p) => p.data)));
  }
});

test('timestamps, lengths, linktype and interface reach Lua (pcapng, several sections and interfaces)', () => {
  const dir = tree({
    'meta.lua': `buffer = function(p)
      local k = riff.packet
      print(k.iface, k.linktype, k.sec, k.nsec, k.caplen, k.len, #p)
    end`,
  });
  const r = riff(['-q', '--lua', path.join(dir, 'meta.lua'), '-r', path.join(FIXTURES, 'multi.pcapng')]);
  assert.equal(r.code, 0, r.stderr);
  const want = fs
    .readFileSync(path.join(FIXTURES, 'multi.pcapng.txt'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const [iface, lt, sec, nsec, caplen, wirelen] = l.split('\t');
      return [iface, lt, sec, nsec, caplen, wirelen, caplen].join('\t');
    });
  const lines = r.stdout.toString().trim().split('\n');
  assert.deepEqual(workers() === 1 ? lines : lines.sort(), workers() === 1 ? want : want.sort());
});

test('-c N stops after N packets that passed the filter, and deinit still runs', { skip: noFilter }, () => {
  const r = riff(['-q', '--lua', path.join(FIXTURES, 'count.lua'), '-r', HTTP, '-c', '3', 'tcp']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^matches\t\d+$/m);
  assert.match(r.stderr, /^3 packets passed the filter$/m);
  assert.match(r.stderr, /^3 packets processed by Lua$/m);
  const all = riff(['--lua', path.join(FIXTURES, 'count.lua'), '-r', HTTP, '-c', '5']);
  assert.deepEqual(reportIds(all.stdout).sort(), [1, 2, 3, 4, 5]);
});

test('-w writes the packets that passed the filter to a valid pcap', { skip: noFilter }, () => {
  const out = path.join(tmpdir(), 'out.pcap');
  const r = riff(['-q', '-r', HTTP, '-w', out, 'udp or arp']);
  assert.equal(r.code, 0, r.stderr);
  const want = readAll(HTTP, 'udp or arp').filter((p) => p.passed);
  const got = readAll(out);
  assert.equal(got.length, want.length);
  assert.deepEqual(got.map((p) => p.data), want.map((p) => p.data));
  assert.deepEqual(got.map((p) => [p.sec, Math.floor(p.nsec / 1000)]), want.map((p) => [p.sec, Math.floor(p.nsec / 1000)]));
  assert.match(r.stderr, new RegExp(`^${want.length} packets written to `, 'm'));
});

test('a filter means the same for -r as for tcpdump: libpcap syntax, libpcap messages', { skip: noFilter }, () => {
  const ok = riff(['-q', '-r', HTTP, 'tcp', 'and', 'dst', 'port', '80']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, new RegExp(`^${readAll(HTTP, 'tcp and dst port 80').filter((p) => p.passed).length} packets passed the filter$`, 'm'));
  const bad = riff(['-q', '-r', HTTP, 'tcp', 'prt', '80']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  assert.match(bad.stderr, /^riff: filter 'tcp prt 80': .*syntax error/);
});

test('a runtime error in a plugin skips that packet and the capture goes on', () => {
  const dir = tree({
    'plugin/bad.lua': `local b = {}
function b:match(d)
  if #d > 1000 then local t = nil; return t.x end
  io.write('ok ', #d, '\\n')
end
return b`,
    'list.lua': 'return { require "plugin.bad" }',
  });
  const r = riff(['-q', '--lua', path.join(dir, 'list.lua'), '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  const big = readAll(HTTP).filter((p) => p.data.length > 1000).length;
  assert.equal(r.stdout.toString().split('\n').filter((l) => l.startsWith('ok ')).length, 45 - big);
  assert.match(r.stderr, /riff: .*plugin\/bad\.lua:3: attempt to index a nil value/);
  assert.match(r.stderr, new RegExp(`^${big} Lua errors \\(.*plugin/bad\\.lua: ${big}\\)$`, 'm'));
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  const strict = riff(['-q', '--strict', '--lua', path.join(dir, 'list.lua'), '-r', HTTP]);
  assert.equal(strict.code, 1);
});

test('runaway Lua in a worker is stopped by its budget, also inside pcall and coroutines; the capture goes on', () => {
  const dir = tree({
    'loop.lua': `buffer = function(p)
  local id = riff.packet.id
  if id == 2 then while true do end end
  if id == 4 then while true do pcall(function() while true do end end) end end
  if id == 6 then print(coroutine.resume(coroutine.create(function() while true do end end))) end
  if id == 8 then local x = 0 for i = 1, 20000000 do x = x + i end end
  io.write('ok ', id, '\\n')
end`,
  });
  const r = riff(['-q', '--lua-budget', '1000000', '--lua', path.join(dir, 'loop.lua'), '-r', HTTP, '-c', '10']);
  assert.equal(r.code, 0, r.stderr);
  const ok = r.stdout.toString().split('\n').filter((l) => l.startsWith('ok ')).map((l) => Number(l.slice(3)));
  assert.deepEqual(ok.sort((a, b) => a - b), [1, 3, 5, 7, 9, 10]);
  for (const [line, id] of [[3, 2], [4, 4], [5, 6], [6, 8]]) {
    assert.match(r.stderr, new RegExp(`loop\\.lua:${line}: budget exceeded \\(1000000 Lua instructions; [^\\n]*\\(packet ${id}\\)`));
  }
  assert.match(r.stderr, /^4 Lua errors \(.*loop\.lua: 4\)$/m);
});

test('the budget reaches code running in frames allocated after the Lua heap grew', () => {
  // setup fills the heap well past its size when the watchdog first saw it,
  // so the loop's call frames sit beyond that.
  const dir = tree({
    'grown.lua': `local keep = {}
function setup() for i = 1, 2500000 do keep[i] = {} end end
buffer = function(p)
  local id = riff.packet.id
  if id == 2 then print(coroutine.resume(coroutine.create(function() while true do end end))) end
  io.write('ok ', id, '\\n')
end`,
  });
  const r = riff(['-q', '--lua', path.join(dir, 'grown.lua'), '-r', HTTP, '-c', '3'], { timeout: 60_000 });
  assert.equal(r.signal, null, 'riff hung');
  assert.equal(r.code, 0, r.stderr);
  // With two workers the two lines may come in either order.
  assert.deepEqual(r.stdout.toString().split('\n').filter(Boolean).sort(), ['ok 1', 'ok 3']);
  assert.match(r.stderr, /grown\.lua:5: budget exceeded \(10000000 Lua instructions; [^\n]*\(packet 2\)/);
});

test('bad input: one line on stderr, the right exit code, no stack trace', () => {
  const syntax = tree({ 'bad.lua': 'buffer = function(p)\n  return p +\nend\n' });
  const cases: [string[], number, RegExp][] = [
    [[], 2, /^riff: nothing to read: give -i IFACE .* or -r FILE/],
    [['-i', 'lo', '-r', HTTP], 2, /^riff: give either -i IFACE or -r FILE, not both/],
    [['--lua', '/nonexistent/x.lua', '-r', HTTP], 2, /^riff: --lua \/nonexistent\/x\.lua: no such file/],
    [['--lua', path.join(syntax, 'bad.lua'), '-r', HTTP], 1, /^riff: .*bad\.lua:3: unexpected symbol near 'end'/],
    [['-r', '/nonexistent.pcap'], 1, /^riff: \/nonexistent\.pcap: cannot open it: no such file \(ENOENT\)$/],
    [['-r', path.join(FIXTURES, 'count.lua')], 1, /^riff: .*not a pcap or pcapng file/],
    [['-r', HTTP, '--bogus'], 2, /^riff: Unknown argument: bogus/],
    [['-r', HTTP, '-c', 'x'], 2, /^riff: /],
  ];
  for (const [args, code, re] of cases) {
    const r = riff(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], re);
  }
});

test('an unknown interface is refused before libpcap sees it', () => {
  const r = riff(['-i', 'nosuchdev0']);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  if (/live capture is unavailable/.test(r.stderr)) {
    assert.equal(r.code, 1);
    assert.match(lines[0], /apt-get install libpcap-dev/);
  } else {
    assert.equal(r.code, 2);
    assert.match(lines[0], /^riff: -i nosuchdev0: no such interface; riff -D lists them/);
  }
});

test('-i takes the number riff -D gives an interface, as tcpdump does; -L names the interface once if there is none', { skip: process.getuid?.() !== 0 ? 'needs root to open an interface' : false }, () => {
  const d = riff(['-D']);
  if (d.code !== 0) return; // no libpcap here: the unknown-interface test covers the message
  const lo = /^(\d+)\.lo\b/m.exec(d.stdout.toString())?.[1];
  assert.ok(lo, d.stdout.toString());
  const l = riff(['-i', lo, '-L']);
  assert.equal(l.code, 0, l.stderr);
  assert.match(l.stdout.toString(), /^Data link types for lo \(use option -y to set\):$/m);
  const none = riff(['-i', 'nosuchdev0', '-L']);
  assert.equal(none.code, 2);
  assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
  assert.match(none.stderr, /^riff: -i nosuchdev0: no such interface; riff -D lists them/);
});

test('--help shows usage with examples; --version the version', () => {
  const h = riff(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout.toString(), /riff \[--lua FILE\] \(-i IFACE \| -r CAPTURE\) \[filter expression\.\.\.\]/);
  assert.match(h.stdout.toString(), /Examples:/);
  const v = riff(['--version']);
  assert.equal(v.code, 0);
  assert.equal(v.stdout.toString().trim(), JSON.parse(fs.readFileSync(path.join(FIXTURES, '..', 'package.json'), 'utf8')).version);
});

test("yargs's messages and headings in the user's language, from its catalogues (which the bundle must find)", () => {
  const env = (lang: Record<string, string>) => ({ env: { ...process.env, LANG: undefined, LC_ALL: undefined, LC_MESSAGES: undefined, LANGUAGE: undefined, ...lang } });
  const de = riff(['--bogus'], env({ LANG: 'de_DE.UTF-8' }));
  assert.equal(de.code, 2);
  assert.equal(de.stderr.toString(), 'riff: Unbekanntes Argument: bogus\n');
  const fr = riff(['--help'], env({ LC_ALL: 'fr' }));
  assert.equal(fr.code, 0);
  assert.match(fr.stdout.toString(), /^Options :$/m);
  assert.match(fr.stdout.toString(), /^Exemples :$/m);
  assert.equal(riff(['--bogus'], env({ LANG: 'C.UTF-8' })).stderr.toString(), 'riff: Unknown argument: bogus\n');
});

test('riff ... | head -1 ends quietly when the pipe closes', () => {
  const r = spawnSync('sh', ['-c', `node ${CLI} -r ${HTTP} | head -1; echo "status \${PIPESTATUS:-}"`], { encoding: 'utf8' });
  assert.equal(r.stdout.split('\n').length, 3, r.stdout);
  assert.doesNotMatch(r.stderr, /EPIPE|Error|^\s+at /m);
});

test('--verbose shows a full Lua traceback for a script error', () => {
  const dir = tree({
    'plugin/deep.lua': `local d = {}
local function inner(x) return x.missing.field end
function d:match(p) local v = inner({}) return v end
return d`,
    'list.lua': 'return { require "plugin.deep" }',
  });
  const r = riff(['-q', '--verbose', '--lua', path.join(dir, 'list.lua'), '-r', HTTP, '-c', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /plugin\/deep\.lua:2: attempt to index a nil value \(field 'missing'\)\nstack traceback:/);
  assert.match(r.stderr, /plugin\/deep\.lua:3: in (method|function) /);
  assert.match(r.stderr, /riff\/lua\/pipeline\.lua:\d+: in function 'pipeline\.run'/);
});

test('no permission to capture: one line saying to run as root or as a service with CAP_NET_RAW (not to give node itself the capability)', { skip: process.getuid?.() !== 0 ? 'needs root to drop to an unprivileged user' : false }, () => {
  const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, CLI, '-i', 'lo', '-c', '1'], { encoding: 'utf8' });
  if (r.error || /unavailable/.test(r.stderr)) return; // no setpriv or no libpcap here
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^riff: -i lo: no permission to capture .*run as root \(with -Z USER.*\), or as a service with CAP_NET_RAW \(README: Running as a service\)$/m);
  // setcap on node would hand raw sockets to every Node program on the host.
  assert.doesNotMatch(r.stderr, /setcap/);
});

test('--stats says the Lua heap (in total and per worker) and the records each output wrote so far', async () => {
  // Standard input held open: the line comes while riff waits for more packets.
  const dir = tree({
    'emit.lua': `big = string.rep("x", 3 << 20) -- every worker's heap holds 3 MiB and more
function buffer(p) riff.emit("seen", { n = #p }) end`,
  });
  const json = path.join(dir, 'out.json');
  const run = riffAsync(['-q', '--workers', '2', '--lua', path.join(dir, 'emit.lua'), '-r', '-', '-o', `json:${json}`, '--stats', '0.1'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const frame = Buffer.alloc(60);
  frame.writeUInt16BE(0x0800, 12);
  frame[14] = 0x45;
  const rec = Buffer.alloc(16);
  rec.writeUInt32LE(60, 8);
  rec.writeUInt32LE(60, 12);
  run.child.stdin!.write(Buffer.concat([pcapHeader(), ...Array.from({ length: 10 }, () => [rec, frame]).flat()]));
  const want = new RegExp(`^riff: stats: 10 read .*, Lua heap ([\\d.]+) MiB \\(([\\d.]+) \\+ ([\\d.]+) per worker\\), 10 records emitted \\(json:${json.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: 10 written\\)$`, 'm');
  let m: RegExpExecArray | null = null;
  for (let i = 0; i < 300 && !(m = want.exec(run.stderr())); i++) await new Promise((r) => setTimeout(r, 50));
  run.child.stdin!.end();
  const r = await run.done;
  assert.ok(m, r.stderr);
  const [total, a, b] = m!.slice(1).map(Number);
  assert.ok(a >= 3 && b >= 3 && a < 16 && b < 16, m![0]);
  assert.ok(Math.abs(total - a - b) <= 0.11, m![0]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.readFileSync(json, 'utf8').trim().split('\n').length, 10);
});
