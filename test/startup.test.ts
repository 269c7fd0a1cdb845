// riff's command line runs from the code cache the build made
// (src/bundle-cache.ts), and the Lua module from the machine code the build
// saved (src/vm/wasm-cache.ts): each made, taken by V8 at a start, and never
// offered for a file that changed. And a worker's own stdio still reaches
// riff's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, ROOT, riff } from './helpers.js';
import { addressSpaceUnlimited } from '../src/vm/vm.js';

const DIST = path.join(ROOT, 'dist');
const CLI_BUNDLE = path.join(DIST, 'cli.cjs');

/**
 * What `expr` says of dist/boot.cjs (as `b`) in a process of its own: V8's
 * flags at their defaults, as when riff reads its caches at its start.
 */
function fresh(expr: string): boolean {
  const r = spawnSync(process.execPath, ['-e', `const b = require(${JSON.stringify(path.join(DIST, 'boot.cjs'))}); process.stdout.write(JSON.stringify(${expr}))`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as boolean;
}
/** Whether V8 takes the command line's code cache. */
const taken = () => fresh(`b.codeCacheTaken(${JSON.stringify(CLI_BUNDLE)})`);

test('the build makes a code cache for the command line, and V8 takes it', () => {
  assert.ok(fs.statSync(CLI_BUNDLE + '.cache').size > 10_000);
  assert.equal(taken(), true);
});

/**
 * `file` touched (the same bytes, a newer time): V8 checks a source by its
 * length alone and a module's code not at all, so the cache's own stamp must
 * refuse it (`isTaken`), and riff's output stays as it was. Put back after.
 */
function touched(file: string, isTaken: () => boolean, args: string[]): void {
  const { atime, mtimeMs } = fs.statSync(file);
  // Put back to the millisecond (utimes goes through floating-point seconds).
  const mtime = new Date(Math.round(mtimeMs));
  const before = riff(args);
  try {
    fs.utimesSync(file, atime, new Date(mtime.getTime() + 1000));
    assert.equal(isTaken(), false);
    const after = riff(args);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(after.stdout, before.stdout);
    assert.equal(after.stderr, before.stderr);
  } finally {
    fs.utimesSync(file, atime, mtime);
  }
  assert.equal(isTaken(), true);
}

test('a bundle changed after the build is compiled from its source: its cache is not offered, and riff runs as before', () => {
  touched(CLI_BUNDLE, taken, ['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
});

const LUA_WASM = path.join(DIST, 'src', 'vm', 'wasm', 'lua.wasm');

/** Whether riff's start takes the Lua module from its cache. */
const luaTaken = () => fresh('(b.openSerializer(), !!b.cachedLua())');

test("the build saves the Lua module's machine code, and a start takes it", () => {
  assert.ok(fs.statSync(LUA_WASM + '.cache').size > 100_000);
  assert.equal(luaTaken(), true);
});

test('the Lua module from its cache runs scripts as the module compiled at the start does', () => {
  // A knob on how the module is compiled (here V8's own tier-up budget) has riff compile it.
  // One worker: two workers' lines interleave differently from run to run.
  const args = ['--workers', '1', '-r', path.join(FIXTURES, 'http.pcap'), '--lua', 'lua/examples/traffic.lua'];
  const cached = riff(args);
  const compiled = riff(args, { env: { ...process.env, TZ: 'UTC', RIFF_WASM_TIERING_BUDGET: '1800000' } });
  assert.equal(cached.code, 0, cached.stderr);
  assert.equal(compiled.code, 0, compiled.stderr);
  assert.ok(cached.stdout.length > 1000);
  assert.deepEqual(cached.stdout, compiled.stdout);
  assert.equal(cached.stderr, compiled.stderr);
});

test('a Lua module changed after the build is compiled at the start: its cache is not offered, and riff runs as before', () => {
  touched(LUA_WASM, luaTaken, ['-r', path.join(FIXTURES, 'http.pcap')]);
});

test('a cache damaged after the build (cut short, a byte changed, a FIFO in its place) is refused, and riff runs as before', () => {
  const args = ['--workers', '1', '-r', path.join(FIXTURES, 'http.pcap'), '--lua', 'lua/examples/traffic.lua'];
  const before = riff(args);
  assert.equal(before.code, 0, before.stderr);
  for (const cache of [LUA_WASM + '.cache', CLI_BUNDLE + '.cache']) {
    const whole = fs.readFileSync(cache);
    const { atime, mtime } = fs.statSync(cache);
    const body = whole.indexOf(10) + 1;
    // The stamp the cache was made with: its first line without the body's length and checksum.
    const stamp = whole.toString('latin1', 0, body - 1).replace(/\d+ [0-9a-f]+$/, '');
    /** Whether riff's reading of the cache (readStamped) gives its body, before V8 sees it. */
    const read = () => fresh(`b.readStamped(${JSON.stringify(cache)}, ${JSON.stringify(stamp)}) !== undefined`);
    assert.equal(read(), true, cache);
    const flipped = Buffer.from(whole);
    flipped[body + 5000] ^= 0x40;
    try {
      // V8 checks neither: each of these crashed riff at start (SIGSEGV, a V8 fatal error) or hung it.
      for (const damage of [() => fs.writeFileSync(cache, whole.subarray(0, body + 1000)), () => fs.writeFileSync(cache, flipped), () => (fs.rmSync(cache, { force: true }), spawnSync('mkfifo', [cache]))]) {
        damage();
        // Refused by riff, not by V8: V8 takes a damaged cache or not depending on where the byte lands, which moves with every build.
        assert.equal(read(), false, cache);
        const after = riff(args, { timeout: 20_000 });
        assert.equal(after.code, 0, `${cache}: ${after.signal ?? ''} ${after.stderr}`);
        assert.deepEqual(after.stdout, before.stdout);
        assert.equal(after.stderr, before.stderr);
        fs.rmSync(cache);
      }
    } finally {
      fs.writeFileSync(cache, whole);
      fs.utimesSync(cache, atime, mtime);
    }
  }
  assert.equal(taken(), true);
  assert.equal(luaTaken(), true);
});

test("a worker's own stdout and stderr (Node's warnings, C-level writes) still reach riff's, its stdout where the script's output goes", () => {
  const run = (outFd: 1 | 2) =>
    spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { Worker } from 'node:worker_threads';
         import { OWN_STDIO } from ${JSON.stringify(path.join(DIST, 'src', 'vm', 'prestart.js'))};
         import { forwardStdio } from ${JSON.stringify(path.join(DIST, 'src', 'vm', 'pool.js'))};
         const w = new Worker("console.log('from the worker'); process.emitWarning('a warning')", { eval: true, ...OWN_STDIO });
         forwardStdio(w, ${outFd});`,
      ],
      { encoding: 'utf8' },
    );
  const a = run(1);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout, 'from the worker\n');
  assert.match(a.stderr, /Warning: a warning/);
  const b = run(2);
  assert.equal(b.stdout, '');
  assert.match(b.stderr, /^from the worker\n[^]*Warning: a warning/);
});

/** `args` run by node under `ulimit -v limit` (KiB, or unlimited). */
const underLimit = (limit: string, args: string[]) =>
  spawnSync('sh', ['-c', `ulimit -v ${limit} && exec "$0" "$@"`, process.execPath, ...args], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } });

test('under a limit on the address space (ulimit -v) riff runs as without one: the start-up warm-up, whose throwaway instance holds ~10 GiB of addresses for seconds, stands aside', () => {
  // 16 GiB: room for riff's own VMs (it ran at 12), not for a throwaway instance's too (that needed 22).
  const limited = underLimit(String(16 << 20), [path.join(DIST, 'riff.cjs'), '--workers', '1', '-r', path.join(FIXTURES, 'http.pcap')]);
  const free = riff(['--workers', '1', '-r', path.join(FIXTURES, 'http.pcap')]);
  assert.equal(free.code, 0, free.stderr);
  assert.equal(limited.status, 0, limited.stderr);
  assert.equal(limited.stdout, free.stdout.toString());
  assert.match(limited.stderr, /45 packets processed by Lua/);
  // Whether the worker's VM meets the throwaway instance's addresses depends on when the capture thread's
  // collector runs; that the warm-up stands aside does not.
  const declines = (limit: string) =>
    underLimit(limit, [
      '--input-type=module',
      '-e',
      `import { warmUp } from ${JSON.stringify(path.join(DIST, 'src', 'vm', 'vm.js'))};
       import { compiledLua } from ${JSON.stringify(path.join(DIST, 'src', 'vm', 'wasm.js'))};
       process.stdout.write(String(warmUp(await compiledLua())));`,
    ]);
  assert.equal(declines(String(16 << 20)).stdout, 'false');
  if (addressSpaceUnlimited()) assert.equal(declines('unlimited').stdout, 'true');
});

test("riff through its #! line does not load NODE_EXTRA_CA_CERTS (Node would parse the whole file before riff's first line): no Node warning for a missing file, the run as without it", () => {
  const bin = path.join(DIST, 'riff.cjs');
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  const withCa = spawnSync(bin, ['-r', path.join(FIXTURES, 'http.pcap')], { encoding: 'utf8', env: { ...env, NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' } });
  const without = spawnSync(bin, ['-r', path.join(FIXTURES, 'http.pcap')], { encoding: 'utf8', env });
  assert.equal(withCa.status, 0, withCa.stderr);
  assert.doesNotMatch(withCa.stderr, /extra certs|Warning/);
  assert.equal(withCa.stdout, without.stdout);
  assert.equal(withCa.stderr, without.stderr);
  // What the line spares riff: node itself, given the same file, warns.
  const node = spawnSync(process.execPath, ['-e', '0'], { encoding: 'utf8', env: { ...env, NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' } });
  assert.match(node.stderr, /Ignoring extra certs from `\/nonexistent\/ca.pem`/);
});
