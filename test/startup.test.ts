// riff's command line runs from the code cache the build made
// (src/bundle-cache.ts): made, taken by V8 at a start, and never offered
// for a file that changed. And a worker's own stdio still reaches riff's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, ROOT, riff } from './helpers.js';

const DIST = path.join(ROOT, 'dist');
const CLI_BUNDLE = path.join(DIST, 'cli.cjs');

/** codeCacheTaken, in a process of its own: V8's flags at their defaults, as when riff compiles its command line. */
function taken(): boolean {
  const r = spawnSync(
    process.execPath,
    ['-e', `console.log(JSON.stringify(require(${JSON.stringify(path.join(DIST, 'boot.cjs'))}).codeCacheTaken(${JSON.stringify(CLI_BUNDLE)})))`],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as boolean;
}

test('the build makes a code cache for the command line, and V8 takes it', () => {
  assert.ok(fs.statSync(CLI_BUNDLE + '.cache').size > 10_000);
  assert.equal(taken(), true);
});

test('a bundle changed after the build is compiled from its source: its cache is not offered, and riff runs as before', () => {
  const { atime, mtimeMs } = fs.statSync(CLI_BUNDLE);
  // Put back to the millisecond (utimes goes through floating-point seconds).
  const mtime = new Date(Math.round(mtimeMs));
  const before = riff(['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
  try {
    // The same bytes, touched: V8 checks a source by its length alone, so the cache's own stamp must refuse it.
    fs.utimesSync(CLI_BUNDLE, atime, new Date(mtime.getTime() + 1000));
    assert.equal(taken(), false);
    const after = riff(['-q', '-r', path.join(FIXTURES, 'http.pcap')]);
    assert.equal(after.code, 0, after.stderr);
    assert.deepEqual(after.stdout, before.stdout);
    assert.equal(after.stderr, before.stderr);
  } finally {
    fs.utimesSync(CLI_BUNDLE, atime, mtime);
  }
  assert.equal(taken(), true);
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
