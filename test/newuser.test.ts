// What a new user meets first: the command on the PATH, the README's plugin
// template as printed, and a word when a plugin would never be called.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { riff, tmpdir, CLI, ROOT } from './helpers.js';

test('after setup, `riff` runs from any directory and is this checkout', () => {
  const elsewhere = tmpdir('riff-path-');
  const which = spawnSync('sh', ['-c', 'command -v riff'], { cwd: elsewhere, encoding: 'utf8' });
  assert.equal(which.status, 0, 'riff is not on the PATH: run bash scripts/setup');
  assert.equal(fs.realpathSync(which.stdout.trim()), fs.realpathSync(CLI), 'riff on the PATH is another checkout: run bash scripts/setup here');
  const r = spawnSync('riff', ['--version'], { cwd: elsewhere, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(r.stdout.trim(), pkg.version);
});

test("a script returning one plugin (README's plugin.base template) runs it", () => {
  const dir = tmpdir();
  const file = path.join(dir, 'mine.lua');
  fs.writeFileSync(
    file,
    `local mine = require("plugin.base").plugin { name = "mine", ver = "1" }
function mine.action(self, stream)
  if stream.data:find("GET", 1, true) then print("get", riff.packet.id) end
end
return mine
`,
  );
  const r = riff(['-q', '--lua', file, '-r', 'fixtures/http.pcap']);
  assert.equal(r.code, 0, r.stderr);
  // Workers interleave their packets' output: compare as a set.
  assert.deepEqual(r.stdout.toString().trim().split('\n').sort(), ['get\t10', 'get\t20', 'get\t40']);
});

test('a plugin riff would never call is named once at load, with the phases riff knows', () => {
  const dir = tmpdir();
  const file = path.join(dir, 'odd.lua');
  fs.writeFileSync(
    file,
    `local a = { name = "lonely" }
function a:action(s) print("x") end
local b = {}
function b:init() end
function b:mathc(p) print("never") end
local c = {}
function c:helper() end
function c:push(s) end
return { a, b, c }
`,
  );
  const r = riff(['-q', '--lua', file, '-r', 'fixtures/http.pcap']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('riff: plugin'));
  // Said once, whatever --workers is (only worker 1 speaks).
  assert.equal(lines.length, 2, r.stderr);
  assert.ok(lines.some((l) => /^riff: plugin 1 \(lonely\): it has action but no match .*riff calls the phases init, push, match, action, setup, deinit/.test(l)), r.stderr);
  assert.ok(lines.some((l) => /^riff: plugin 2: 'mathc' looks like the phase 'match' misspelled/.test(l)), r.stderr);
  assert.equal(r.stdout.length, 0);
});

test('a repeated option or an unreadable number is one line naming what was typed', () => {
  const cases: [string[], RegExp][] = [
    [['-r', 'fixtures/http.pcap', '-r', 'fixtures/http.pcap'], /^riff: -r given 2 times \(fixtures\/http\.pcap, fixtures\/http\.pcap\); give it once$/],
    [['--lua', 'fixtures/count.lua', '--lua', 'x.lua', '-r', 'fixtures/http.pcap'], /^riff: --lua given 2 times \(fixtures\/count\.lua, x\.lua\); give it once$/],
    [['-c', 'abc', '-r', 'fixtures/http.pcap'], /^riff: -c: 'abc' is not a number/],
    [['--count=x1', '-r', 'fixtures/http.pcap'], /^riff: --count: 'x1' is not a number/],
    [['-B', 'big', '-i', 'lo'], /^riff: -B: 'big' is not a number/],
    [['-s', '1k', '-i', 'lo'], /^riff: -s: '1k' is not a number/],
    [['--workers', 'two', '-r', 'fixtures/http.pcap'], /^riff: --workers: 'two' is not/],
    [['--stats', 'often', '-r', 'fixtures/http.pcap'], /^riff: --stats: 'often' is not/],
    [['--lua-budget', '1e3x', '-r', 'fixtures/http.pcap'], /^riff: --lua-budget: '1e3x' is not/],
  ];
  for (const [args, want] of cases) {
    const r = riff(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], want);
    assert.doesNotMatch(r.stderr, /NaN|internal error|Array/);
  }
});

test("an option's value is the next word, as with tcpdump's getopt: a missing one is refused, never skipped", () => {
  const H = 'fixtures/http.pcap';
  const cases: [string[], RegExp][] = [
    // At the end of the line: named, not ignored (the run would read everything).
    [['-r', H, '-c'], /^riff: -c needs a value/],
    [['-r', H, '-o'], /^riff: -o needs a value/],
    [['-r', H, '--lua-memory'], /^riff: --lua-memory needs a value/],
    [['-r'], /^riff: -r needs a value/],
    [['-r', H, '-qw'], /^riff: -w needs a value/],
    // An empty value is none: yargs would have read '' as 0 (no limit).
    [['-r', H, '--lua-timeout', ''], /^riff: --lua-timeout needs a value/],
    [['-r', H, '--count='], /^riff: --count needs a value/],
    // A bundle's value is named as typed.
    [['-qc', 'abc', '-r', H], /^riff: -c: 'abc' is not a number/],
    // Followed by another option: that word is the value, and refused as one.
    [['-c', '-q', '-r', H], /^riff: -c: '-q' is not a number/],
    [['-r', H, '--lua-memory', '-5M'], /^riff: --lua-memory: '-5M' is not a size/],
    [['-r', H, '-c', '0'], /^riff: -c: '0' is not a packet count \(a whole number >= 1\)/],
    [['-r', H, '--lua-memory', '64k'], /^riff: --lua-memory: 64k is below riff's minimum of 1M/],
    [['-r', H, '--lua-memory', '100G'], /^riff: --lua-memory: 100G is more than a Lua VM can hold/],
    // Live capture's own flags say so with a file, as -p and -Q do.
    [['-r', H, '-s', '100'], /^riff: -s applies to live capture \(-i IFACE\), not to -r$/],
    [['-r', H, '-B', '1024'], /^riff: -B applies to live capture \(-i IFACE\), not to -r$/],
  ];
  for (const [args, want] of cases) {
    const r = riff(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(lines[0], want, args.join(' '));
  }
  // -o takes one word: a filter after it is the filter.
  const o = riff(['-q', '-r', H, '-o', 'json:-', 'tcp', 'port', '80']);
  assert.equal(o.code, 0, o.stderr);
  assert.match(o.stderr, /^39 packets passed the filter$/m);
  // Bundled and attached values still read as tcpdump users type them.
  for (const args of [['-qc', '3'], ['-qc3'], ['-q', '-c3'], ['-q', '--count', '3'], ['-q', '--count=3']]) {
    const r = riff([...args, '-r', H]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^3 packets passed the filter$/m, args.join(' '));
  }
});

test('RIFF_WORKERS that is not a number is named as the environment, not as --workers', () => {
  const r = riff(['-q', '-r', 'fixtures/http.pcap'], { env: { ...process.env, RIFF_WORKERS: 'abc' } });
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr, 'riff: RIFF_WORKERS=abc: not a number of workers from 1 to 64; fix or unset it, or give --workers N\n');
  // --workers on the line is what riff runs with, and what a bad one names.
  assert.equal(riff(['-q', '--workers', '1', '-r', 'fixtures/http.pcap'], { env: { ...process.env, RIFF_WORKERS: 'abc' } }).code, 0);
  assert.match(riff(['-q', '--workers', '0', '-r', 'fixtures/http.pcap']).stderr, /^riff: --workers: '0' is not a number of workers/);
});

test('no file riff writes is one it reads or another output writes', () => {
  const dir = tmpdir();
  const input = path.join(dir, 'in.pcap');
  fs.copyFileSync(path.join(ROOT, 'fixtures', 'http.pcap'), input);
  const size = fs.statSync(input).size;
  fs.symlinkSync(input, path.join(dir, 'link.pcap'));
  const script = path.join(dir, 's.lua');
  fs.copyFileSync(path.join(ROOT, 'fixtures', 'count.lua'), script);
  const j = path.join(dir, 'a.json');
  const rot1 = path.join(dir, 'rot1');
  fs.copyFileSync(input, rot1);
  const cases: [string[], RegExp][] = [
    [['-r', input, '-w', input], /^riff: -w .*in\.pcap: the same file as -r .*in\.pcap; writing it would destroy that, give another file$/],
    // Another spelling, or a link to it, is the same file.
    [['-r', input, '-w', path.join(dir, '.', '..', path.basename(dir), 'in.pcap')], /^riff: -w .*: the same file as -r /],
    [['-r', path.join(dir, 'link.pcap'), '-w', input], /^riff: -w .*: the same file as -r /],
    [['-r', input, '--lua', script, '-w', script], /^riff: -w .*s\.lua: the same file as --lua /],
    [['-r', input, '-o', `json:${input}`], /^riff: -o json:.*in\.pcap: the same file as -r /],
    [['-r', input, '-o', `json:${j}`, '-o', `json:${j}`], /^riff: -o json:.*a\.json and -o json:.*a\.json write the same file; give each its own$/],
    [['-r', input, '-w', j, '-o', `sqlite:${j}`], /^riff: -w .*a\.json and -o sqlite:.*a\.json write the same file/],
    [['-r', input, '-o', 'json:-', '-o', 'json:-'], /^riff: -o json:- and -o json:- write the same stream; give each its own$/],
    [['-r', input, '-w', '-', '-o', 'json:-'], /^riff: -w - and -o json:- write the same stream/],
    // -C writes FILE1, FILE2...; -G a name made by strftime: each name it may make is checked.
    [['-r', rot1, '-w', path.join(dir, 'rot'), '-C', '1k'], /^riff: -w .*rot: the same file as -r .*rot1;/],
    [['-r', input, '-w', path.join(dir, 'i%m.pcap'), '-G', '60'], /^riff: -w .*i%m\.pcap: the same file as -r /],
    // A -w that cannot be created is said before anything runs.
    [['-r', input, '-w', path.join(dir, 'no', 'x.pcap')], /^riff: -w .*x\.pcap: cannot create it: no such directory \(ENOENT\); name a writable file$/],
  ];
  for (const [args, want] of cases) {
    const r = riff(['-q', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr.trimEnd(), want, args.join(' '));
  }
  // A character device takes any number of writers; -C with -W writes FILE0.. only, never FILE itself.
  assert.equal(riff(['-q', '-r', input, '-w', '/dev/null', '-o', 'json:/dev/null', '-o', 'json:/dev/null']).code, 0);
  const ring = path.join(dir, 'ring.pcap');
  fs.copyFileSync(input, ring);
  const w = riff(['-q', '-r', ring, '-w', ring, '-C', '1k', '-W', '3']);
  assert.equal(w.code, 0, w.stderr);
  assert.equal(fs.statSync(ring).size, size);
  // config.lua's outputs are checked as the command line's are, once the workers have read them.
  fs.writeFileSync(path.join(dir, 'config.lua'), 'function outputs() return { "json:in.pcap" } end\n');
  const c = riff(['-q', '--lua', script, '-r', input]);
  assert.equal(c.code, 2, c.stderr);
  assert.match(c.stderr, /^riff: -o json:.*in\.pcap: the same file as -r /m);
  // Nothing was opened for writing: the capture and the script are whole, no output file appeared.
  assert.equal(fs.statSync(input).size, size);
  assert.equal(fs.readFileSync(script, 'utf8'), fs.readFileSync(path.join(ROOT, 'fixtures', 'count.lua'), 'utf8'));
  assert.ok(!fs.existsSync(j));
});

test("-w of a file keeps the file's snapshot length in its header, as tcpdump -w does", () => {
  const dir = tmpdir();
  const out = path.join(dir, 'o.pcap');
  const src = fs.readFileSync(path.join(ROOT, 'fixtures', 'allbytes.pcap'));
  const r = riff(['-q', '-r', 'fixtures/allbytes.pcap', '-w', out]);
  assert.equal(r.code, 0, r.stderr);
  const w = fs.readFileSync(out);
  assert.equal(w.readUInt32LE(16), src.readUInt32LE(16));
  assert.notEqual(w.readUInt32LE(16), 262144);
});

test("riff stops when standard output's reader goes away, and says so", () => {
  // A capture with no end (-r - from a writer that keeps going): only the reader's going away ends riff.
  const dir = tmpdir();
  const one = fs.readFileSync(path.join(ROOT, 'fixtures', 'http.pcap'));
  fs.writeFileSync(path.join(dir, 'head.pcap'), one);
  fs.writeFileSync(path.join(dir, 'records'), one.subarray(24));
  const r = spawnSync('sh', ['-c', `(cat head.pcap; while cat records; do :; done) | node ${CLI} -r - | head -1 >/dev/null`], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, null, 'riff did not stop');
  assert.match(r.stderr, /^stopped early: standard output's reader went away; the rest of the input was not read$/m, r.stderr);
  assert.doesNotMatch(r.stderr, /EPIPE|Error|^\s+at /m);
  assert.ok(Number(/^(\d+) packets read$/m.exec(r.stderr)?.[1]) > 0, r.stderr);
});

test('-w to a path riff cannot create is one line saying why; no internal error', () => {
  const dir = tmpdir();
  const cases: [string, RegExp][] = [
    [path.join(dir, "no", "such", "x.pcap"), /no such directory/],
    [dir, /is a directory/],
  ];
  for (const [target, why] of cases) {
    const r = riff(['-q', '-r', 'fixtures/http.pcap', '-w', target]);
    // Bad input, as an -o that cannot be opened: one line, exit 2, no summary of a run that did not start.
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^riff: -w ${target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot create it: `));
    assert.match(r.stderr, why);
    assert.doesNotMatch(r.stderr, /internal error|^\s+at /m);
  }
});

test('a file riff names from / keeps its leading slash', () => {
  const tree = tmpdir('riff-orig-');
  fs.cpSync(path.join(ROOT, 'fixtures', 'original-riff'), tree, { recursive: true });
  const r = riff(['-q', '--lua', path.join(tree, 'pipeline.lua'), '-r', path.join(ROOT, 'fixtures', 'http.pcap')], { cwd: '/' });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stderr.includes(`(${path.join(tree, 'buffer.lua')} -> elements.lua)`), r.stderr);
});

test('--progress (the default on a terminal) shows packets, rate, % of the file and time left, cleared at the end; a pipe gets none unless asked', async () => {
  const { progressLine } = await import('../src/cli/progress.js');
  assert.equal(progressLine(500_000, 50, 100, 2), 'riff: 500k packets, 250k/s, 50% of 100 B, 0:02 left');
  assert.equal(progressLine(42, 0, 0, 1), 'riff: 42 packets, 42/s');
  // --progress on a non-terminal: the line, then cleared before the summary.
  const big = path.join(tmpdir(), 'big.pcap');
  const one = fs.readFileSync(path.join(ROOT, 'fixtures', 'http.pcap'));
  const recs = one.subarray(24);
  fs.writeFileSync(big, Buffer.concat([one.subarray(0, 24), ...Array(4000).fill(recs)]));
  const slow = path.join(tmpdir(), 'slow.lua');
  // Slow enough (a second or two) for the line's first draw at 250 ms.
  fs.writeFileSync(slow, 'buffer = function(p) for i = 1, 1500 do end end\n');
  const shown = riff(['-q', '--progress', '--lua', slow, '-r', big]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stderr, /\rriff: [\d.]+[kM]? packets, [\d.]+[kM]?\/s, [\d.]+% of [\d.]+ (KiB|MiB), \d+:\d\d left\x1b\[K/);
  // Cleared, and the summary after it on a line of its own.
  const last = shown.stderr.lastIndexOf('\rriff: ');
  assert.ok(shown.stderr.indexOf('\r\x1b[K', last) > last, 'the line is cleared');
  // The summary starts where the cleared line was.
  assert.ok(shown.stderr.includes('\r\x1b[K180000 packets read\n'), shown.stderr);
  const piped = riff(['-q', '--lua', slow, '-r', big]);
  assert.doesNotMatch(piped.stderr, /\r|\x1b/);
});

test("the script's output that cannot be written (a full disk) is one line, and riff stops with exit 1; no worker is restarted", () => {
  const full = fs.openSync('/dev/full', 'w');
  try {
    const r = riff(['-r', path.join(ROOT, 'fixtures', 'http.pcap')], { stdio: ['ignore', full, 'pipe'] });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^riff: standard output: disk full \(ENOSPC\) writing the script's output; .*redirect it elsewhere$/m);
    assert.doesNotMatch(r.stderr, /died|restarted|internal error/);
  } finally {
    fs.closeSync(full);
  }
});

test('-w - whose reader goes away ends quietly: exit 0, and the summary counts what the reader got and what it did not', () => {
  const capture = path.join(tmpdir('riff-wpipe-'), 'big.pcap');
  const gen = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js'), capture, '--packets', '5000'], { encoding: 'utf8' });
  assert.equal(gen.status, 0, gen.stderr);
  // A reader that takes 100 bytes and closes the pipe (`riff -w - | head -c 100`).
  const sh = spawnSync('bash', ['-c', '"$0" "$1" -q -r "$2" -w - 2>"$3" | head -c 100 >/dev/null; echo "${PIPESTATUS[0]}"', process.execPath, CLI, capture, capture + '.err'], { encoding: 'utf8' });
  const stderr = fs.readFileSync(capture + '.err', 'utf8');
  assert.equal(sh.stdout.trim(), '0', stderr);
  assert.doesNotMatch(stderr, /free space|internal error/);
  const read = Number(/(\d+) packets read/.exec(stderr)?.[1]);
  const m = /(\d+) packets written to standard output, (\d+) not written: the reader closed it \(EPIPE\)/.exec(stderr);
  assert.ok(m, stderr);
  // What the pipe took before the reader left counts as written; what riff read after, as not.
  assert.ok(Number(m[1]) > 0 && Number(m[2]) > 0, stderr);
  assert.equal(Number(m[1]) + Number(m[2]), read);
  // A reader gone before the file's header (`riff -w - | true`): as quiet.
  const gone = spawnSync('bash', ['-c', 'sleep 0 | "$0" "$1" -q -r "$2" -w - 2>"$3" | true; echo "${PIPESTATUS[1]}"', process.execPath, CLI, capture, capture + '.err2'], { encoding: 'utf8' });
  const said = fs.readFileSync(capture + '.err2', 'utf8');
  assert.equal(gone.stdout.trim(), '0', said);
  assert.doesNotMatch(said, /internal error|^riff: /m);
});

test('-r - from an empty or closed standard input, or -r of a device, is one line naming it; no internal error', () => {
  for (const [args, stdin, said] of [
    [['-r', '-'], 'ignore', /^riff: standard input: empty file; expected a pcap or pcapng capture file/],
    [['-r', '/dev/null'], 'ignore', /^riff: \/dev\/null: empty file; expected a pcap or pcapng capture file/],
    [['-r', '/dev/zero'], 'ignore', /^riff: \/dev\/zero: not a pcap or pcapng file/],
  ] as const) {
    const r = riff([...args], { stdio: [stdin, 'pipe', 'pipe'] });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, said);
    assert.doesNotMatch(r.stderr, /internal error/);
  }
  // Closed outright (`riff -r - <&-`): Node gives the process /dev/null in its place.
  const closed = spawnSync('sh', ['-c', 'exec "$0" "$1" -r - <&-', process.execPath, CLI], { encoding: 'utf8' });
  assert.equal(closed.status, 1, closed.stderr);
  assert.match(closed.stderr, /^riff: standard input: empty file/);
});

test("config.lua's filter is the script's: one of more than 100 and/or terms is refused before libpcap's optimizer could hold riff for minutes", () => {
  const dir = tmpdir();
  fs.copyFileSync(path.join(ROOT, 'fixtures', 'count.lua'), path.join(dir, 's.lua'));
  const ports = (n: number) => Array.from({ length: n }, (_, i) => `port ${i + 1}`).join(' or ');
  fs.writeFileSync(path.join(dir, 'config.lua'), `function format() return "${ports(600)}" end\n`);
  const t0 = Date.now();
  const r = riff(['-q', '--lua', path.join(dir, 's.lua'), '-r', 'fixtures/http.pcap']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^riff: config\.lua's format\(\) gives a filter of 600 and\/or terms; riff takes up to 100 from a script/m);
  assert.ok(Date.now() - t0 < 20_000);
  // Up to 100 it is the filter; the same expression on the command line is the user's, and taken.
  fs.writeFileSync(path.join(dir, 'config.lua'), `function format() return "${ports(100)}" end\n`);
  assert.equal(riff(['-q', '--lua', path.join(dir, 's.lua'), '-r', 'fixtures/http.pcap']).code, 0);
  const own = riff(['-q', '--lua', path.join(dir, 's.lua'), '-r', 'fixtures/http.pcap', ports(120)]);
  assert.equal(own.code, 0, own.stderr);
});
