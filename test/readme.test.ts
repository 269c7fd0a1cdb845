// README.md's commands run as printed. Every `riff` line of a ```sh block
// that needs only what the repository carries (fixtures/, lua/, and the
// files earlier lines or ```lua blocks named "-- NAME.lua" create) is run in
// a scratch directory beside them: it must succeed without an internal error,
// and `-o json:-` must give JSON lines only. An output block marked
// `<!-- readme-test: COMMAND -->` must be what COMMAND prints, line for line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, CLI, tmpdir } from './helpers.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

interface Block {
  lang: string;
  body: string;
  /** The readme-test marker right above it, if any. */
  marker: string | null;
}

function blocks(md: string): Block[] {
  const out: Block[] = [];
  const re = /(?:<!-- readme-test: (.*?) -->\n)?^```(\w*)\n([\s\S]*?)^```$/gm;
  for (let m; (m = re.exec(md)); ) out.push({ marker: m[1] ?? null, lang: m[2], body: m[3] });
  return out;
}

/** A scratch directory where README's relative paths resolve: fixtures/ and lua/ linked in. */
function scratch(): string {
  const d = tmpdir('riff-readme-');
  for (const sub of ['fixtures', 'lua', 'scripts']) fs.symlinkSync(path.join(ROOT, sub), path.join(d, sub));
  return d;
}

/** Runs a shell line with `riff` meaning this checkout's riff. */
function sh(line: string, cwd: string) {
  const bin = path.join(cwd, '.bin');
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'riff'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`, { mode: 0o755 });
  }
  return spawnSync('sh', ['-c', line], {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, TZ: 'UTC', PATH: `${bin}:${process.env.PATH}` },
    maxBuffer: 64 << 20,
    timeout: 60_000,
  });
}

const all = blocks(README);

/** Files a README line may use: those the repository has, or an earlier line made. */
function runnable(line: string, made: Set<string>, cwd: string): boolean {
  if (!/^riff\s/.test(line)) return false;
  if (/\s-i\s|\s-D\b|syslog:|mysql:/.test(line)) return false; // live capture and network outputs: not on bundled files
  const words = line.replace(/\s+#.*$/, '').match(/'[^']*'|"[^"]*"|\S+/g) ?? [];
  for (const w of words) {
    const f = w.replace(/^-\w+=?|^(json|sqlite|text):/, '');
    if (!/\.(pcap|pcapng|lua)$/.test(f)) continue;
    if (!made.has(f) && !fs.existsSync(path.join(cwd, f))) return false;
  }
  return true;
}

test('README has commands to check', () => {
  assert.ok(all.filter((b) => b.lang === 'sh').length >= 5);
  assert.ok(all.some((b) => b.marker));
});

test('every README command on bundled files runs as printed', () => {
  const cwd = scratch();
  const made = new Set<string>();
  let ran = 0;
  for (const b of all) {
    if (b.lang === 'lua') {
      const name = /^-- ([\w-]+\.lua)\b/.exec(b.body)?.[1];
      if (name) {
        fs.writeFileSync(path.join(cwd, name), b.body);
        made.add(name);
      }
      continue;
    }
    if (b.lang !== 'sh') continue;
    for (const raw of b.body.split('\n')) {
      const line = raw.trim();
      const echo = /^echo .*> ([\w.-]+)$/.exec(line);
      if (echo) {
        assert.equal(sh(line, cwd).status, 0, line);
        made.add(echo[1]);
        continue;
      }
      if (!runnable(line, made, cwd)) continue;
      const r = sh(line, cwd);
      ran++;
      const ctx = `${line}\n--- stderr:\n${r.stderr}`;
      assert.equal(r.status, 0, ctx);
      assert.doesNotMatch(r.stderr, /internal error|^\s+at /m, ctx);
      if (/-o json:-/.test(line)) {
        const lines = r.stdout.split('\n').filter(Boolean);
        assert.ok(lines.length > 0, ctx);
        for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not a JSON line: ${l}\n${ctx}`);
      }
    }
  }
  assert.ok(ran >= 5, `only ${ran} README commands ran`);
});

test('README output blocks are what their command prints', () => {
  const cwd = scratch();
  for (const b of all.filter((x) => x.marker)) {
    const r = sh(b.marker!, cwd);
    assert.equal(r.status, 0, `${b.marker}\n${r.stderr}`);
    const got = (r.stdout + r.stderr).split('\n');
    let at = 0;
    for (const want of b.body.trimEnd().split('\n')) {
      const i = got.indexOf(want, at);
      assert.ok(i >= 0, `README shows a line ${b.marker} does not print (in order):\n${want}\n--- it printed:\n${got.join('\n')}`);
      at = i + 1;
    }
  }
});
