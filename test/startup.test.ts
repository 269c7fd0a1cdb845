// riff's bundles run from the code caches the build made (src/bundle-cache.ts):
// made, taken by V8 at a start, and never offered for a file that changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, ROOT, riff } from './helpers.js';

const DIST = path.join(ROOT, 'dist');
const BUNDLES = ['cli.cjs', 'worker.cjs'].map((f) => path.join(DIST, f));

/**
 * codeCacheTaken for each bundle, in a process of its own, under V8's flags
 * as riff has them when it compiles that bundle: the command line at its
 * first moment (V8's defaults), a worker's once riff's flags are set.
 */
function taken(): boolean[] {
  const [cli, worker] = BUNDLES.map((f) => JSON.stringify(f));
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const b = require(${JSON.stringify(path.join(DIST, 'boot.cjs'))});
       const cli = b.codeCacheTaken(${cli});
       b.setWasmFlags(); b.holdYoungGeneration();
       console.log(JSON.stringify([cli, b.codeCacheTaken(${worker})]))`,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as boolean[];
}

test('the build makes a code cache for the command line and for the Lua worker, and V8 takes both', () => {
  for (const f of BUNDLES) assert.ok(fs.statSync(f + '.cache').size > 10_000, `${f}.cache`);
  assert.deepEqual(taken(), [true, true]);
});

test('a bundle changed after the build is compiled from its source: its cache is not offered, and riff runs as before', () => {
  const file = BUNDLES[0];
  const { atime, mtimeMs } = fs.statSync(file);
  // Put back to the millisecond (utimes goes through floating-point seconds).
  const mtime = new Date(Math.round(mtimeMs));
  const before = riff(['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
  try {
    // The same bytes, touched: V8 checks a source by its length alone, so the cache's own stamp must refuse it.
    fs.utimesSync(file, atime, new Date(mtime.getTime() + 1000));
    assert.deepEqual(taken(), [false, true]);
    const after = riff(['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(after.stdout, before.stdout);
    assert.equal(after.stderr, before.stderr);
  } finally {
    fs.utimesSync(file, atime, mtime);
  }
  assert.deepEqual(taken(), [true, true]);
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
