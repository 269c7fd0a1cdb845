// `npm test`: runs node's test runner once per argument and lists every
// skipped test with its reason, so a green run with skips is visible.
//
//   node dist/scripts/run-tests.js '--test-concurrency=1 dist/test/' 'RIFF_WORKERS=2 --test-concurrency=1 dist/test/cli.test.js'
//
// Each argument is one run: leading NAME=VALUE words are set in its
// environment, the rest are passed to `node --test`. Runs stop at the first
// that fails, as `a && b` would. The output is node's own (spec on a
// terminal, TAP otherwise); the skip list is printed just before the last
// run's summary lines, so the output still ends with them. With CI set (CI
// runs as root after scripts/setup, so every test can run there), any skip
// fails the run.
//
// The same file is the reporter that collects the skips: node loads it with
// --test-reporter and it writes one JSON line per skipped test.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Skip {
  file: string;
  name: string;
  reason: string;
}

interface TestEvent {
  type: string;
  data: { name?: string; file?: string; skip?: string | boolean };
}

/** node --test reporter: one JSON line per skipped test or suite. */
export default async function* skipReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  for await (const ev of source) {
    if ((ev.type === 'test:pass' || ev.type === 'test:fail') && ev.data.skip !== undefined && ev.data.skip !== false) {
      const reason = typeof ev.data.skip === 'string' && ev.data.skip !== '' ? ev.data.skip : 'no reason given';
      yield JSON.stringify({ file: ev.data.file ?? '', name: ev.data.name ?? '', reason } satisfies Skip) + '\n';
    }
  }
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// node's summary: "# tests 12" (TAP) or "ℹ tests 12" (spec).
const SUMMARY = /^(# |ℹ )(tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /;

function parseRun(arg: string): { env: Record<string, string>; args: string[] } {
  const words = arg.trim().split(/\s+/).filter(Boolean);
  const env: Record<string, string> = {};
  while (words.length && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
    const w = words.shift()!;
    env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
  }
  return { env, args: words };
}

/** One node --test run; its summary lines are held back when `holdSummary`, and returned. */
function run(arg: string, skipsFile: string, holdSummary: boolean): Promise<{ code: number; held: string[] }> {
  const { env, args } = parseRun(arg);
  const tty = process.stdout.isTTY === true;
  const child = spawn(
    process.execPath,
    [
      '--test',
      `--test-reporter=${tty ? 'spec' : 'tap'}`,
      '--test-reporter-destination=stdout',
      `--test-reporter=${pathToFileURL(fileURLToPath(import.meta.url)).href}`,
      `--test-reporter-destination=${skipsFile}`,
      ...args,
    ],
    { cwd: ROOT, env: { ...process.env, ...(tty ? { FORCE_COLOR: '1' } : {}), ...env }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const held: string[] = [];
  let partial = '';
  const line = (l: string) => {
    // Summary lines are the run's last; anything after them means they were not.
    if (holdSummary && SUMMARY.test(l.replace(/\x1b\[[0-9;]*m/g, ''))) {
      held.push(l);
      return;
    }
    for (const h of held.splice(0)) process.stdout.write(h + '\n');
    process.stdout.write(l + '\n');
  };
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    lines.forEach(line);
  });
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      if (partial) line(partial);
      resolve({ code: code ?? (signal ? 1 : 0), held });
    }),
  );
}

function readSkips(file: string): Skip[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Skip);
}

async function main(): Promise<number> {
  const runs = process.argv.slice(2);
  if (runs.length === 0) {
    process.stderr.write("run-tests: no runs given; each argument is one run, e.g. '--test-concurrency=1 dist/test/'\n");
    return 2;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-test-skips-'));
  const ci = !!process.env.CI && !['0', 'false'].includes(process.env.CI.toLowerCase());
  const mark = process.stdout.isTTY ? 'ℹ' : '#';
  try {
    const skips: Skip[] = [];
    let code = 0;
    let held: string[] = [];
    for (let i = 0; i < runs.length; i++) {
      const file = path.join(dir, `run-${i}.jsonl`);
      const last = i === runs.length - 1;
      const r = await run(runs[i], file, true);
      skips.push(...readSkips(file));
      code = r.code;
      if (!last && code === 0) {
        for (const h of r.held) process.stdout.write(h + '\n');
        continue;
      }
      held = r.held;
      break;
    }
    const out: string[] = [];
    if (skips.length) {
      out.push(`${mark} skipped, with the reason given (tests and suites): ${skips.length}`);
      for (const s of skips) out.push(`${mark}   ${path.relative(ROOT, s.file) || '?'}: ${s.name}: ${s.reason}`);
      if (ci) {
        out.push(`${mark} CI is set: every test must run here (root, scripts/setup done), so a skip fails the run`);
        if (code === 0) code = 1;
      }
    } else {
      out.push(`${mark} nothing skipped`);
    }
    for (const l of [...out, ...held]) process.stdout.write(l + '\n');
    return code;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((code) => (process.exitCode = code));
}
