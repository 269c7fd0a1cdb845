// The tests carry their own data: nothing under test/ or scripts/ reads a path
// outside the clone, and fixtures/corpus (tcpdump's captures) is complete:
// every capture has its libpcap ground truth row and every row its capture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CORPUS, FIXTURES, ROOT } from './helpers.js';

const SELF = path.basename(fileURLToPath(import.meta.url), '.js');

function filesUnder(dir: string, ext: RegExp): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && ext.test(e.name))
    .map((e) => path.join(e.parentPath ?? e.path, e.name));
}

// Ways a path leaves the clone, as they appear in source and in tsc's output.
// Built from pieces so this file does not match itself.
const Q = `['"\`]`;
const OUTSIDE: [RegExp, string][] = [
  [new RegExp(`${Q}\\.\\.${Q}\\s*,\\s*${Q}shared${Q}`), "'..', 'shared'"],
  [new RegExp(`\\.\\.\\/` + 'shared\\b'), '../shared'],
  [new RegExp(`${Q}/(work|home|root|mnt|srv|opt)/`), 'an absolute path into a home or work directory'],
  [new RegExp(`\\b(ROOT|process\\.cwd\\(\\))\\s*,\\s*${Q}\\.\\.${Q}`), "a path resolved above the clone's root"],
];

test('nothing under test/ or scripts/ reads a path outside the clone (sources and compiled)', () => {
  const files = [
    ...filesUnder(path.join(ROOT, 'test'), /\.ts$/),
    ...filesUnder(path.join(ROOT, 'scripts'), /\.(ts|sh)$|^[^.]+$/),
    ...filesUnder(path.join(ROOT, 'dist', 'test'), /\.js$/),
    ...filesUnder(path.join(ROOT, 'dist', 'scripts'), /\.js$/),
  ].filter((f) => path.basename(f).replace(/\.(ts|js)$/, '') !== SELF);
  assert.ok(files.length > 10, `found ${files.length} files to check`);
  const found: string[] = [];
  for (const f of files) {
    const lines = fs.readFileSync(f, 'utf8').split('\n');
    lines.forEach((l, i) => {
      for (const [re, what] of OUTSIDE) if (re.test(l)) found.push(`${path.relative(ROOT, f)}:${i + 1}: ${what}: ${l.trim()}`);
    });
  }
  assert.deepEqual(found, [], 'copy what a test needs into fixtures/ (captures from tcpdump into fixtures/corpus)');
  for (const [name, dir] of Object.entries({ CORPUS, FIXTURES })) {
    const rel = path.relative(ROOT, dir);
    assert.ok(rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel), `${name} (${dir}) is outside ${ROOT}`);
  }
});

test('fixtures/corpus: every capture has its EXPECTED.tsv row, every row its capture, and the licence goes with them', () => {
  const rows = fs.readFileSync(path.join(CORPUS, 'EXPECTED.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t')[0]);
  assert.equal(new Set(rows).size, rows.length, 'one row per file');
  const captures = fs.readdirSync(CORPUS).filter((f) => !['EXPECTED.tsv', 'README.md', 'LICENSE'].includes(f));
  const noRow = captures.filter((f) => !rows.includes(f));
  assert.deepEqual(noRow, [], "captures without a row: copy each one's row from the tcpdump corpus's EXPECTED.tsv");
  assert.deepEqual(rows.filter((f) => !captures.includes(f)), [], 'rows without a capture');
  assert.ok(captures.length >= 90, `${captures.length} captures`);
  assert.match(fs.readFileSync(path.join(CORPUS, 'LICENSE'), 'utf8'), /^License: BSD\b/);
  assert.match(fs.readFileSync(path.join(CORPUS, 'README.md'), 'utf8'), /tcpdump/);
});
