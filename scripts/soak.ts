#!/usr/bin/env node
// riff left running: a steady replay into a veth pair for N minutes through
// lua/examples/traffic.lua with its outputs on, the script reloaded (SIGHUP)
// and the JSON output rotated (move + SIGUSR1) once a minute. Every sample
// (default each 10 s) reads riff's resident memory and open descriptors from
// /proc, its Lua heap and live sessions from its --stats and status lines,
// and at the end it checks that every record riff says it wrote is in the
// files. A benchmark-style script (root, tcpreplay), not a CI test:
//
//   scripts/soak [--minutes 10] [--pps 2000] [--reload-every 60] [--sample-every 10] [--workers 1]
//
// It prints one row per sample and a verdict: growth of memory and
// descriptors after the first minute (target: under 1% over the run).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RIFF = path.join(ROOT, 'dist', 'src', 'riff.js');
const GEN = path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js');
const TRAFFIC = path.join(ROOT, 'lua', 'examples', 'traffic.lua');

interface Opts {
  minutes: number;
  pps: number;
  reloadEvery: number;
  sampleEvery: number;
  workers: number;
}

function parse(argv: string[]): Opts {
  const o: Opts = { minutes: 10, pps: 2000, reloadEvery: 60, sampleEvery: 10, workers: 1 };
  const keys: Record<string, keyof Opts> = {
    '--minutes': 'minutes',
    '--pps': 'pps',
    '--reload-every': 'reloadEvery',
    '--sample-every': 'sampleEvery',
    '--workers': 'workers',
  };
  for (let i = 0; i < argv.length; i++) {
    const k = keys[argv[i]];
    const v = Number(argv[i + 1]);
    if (argv[i] === '--help' || argv[i] === '-h') {
      process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 13).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    }
    if (!k || !(v > 0)) {
      process.stderr.write(`soak: '${argv[i]} ${argv[i + 1] ?? ''}' is not an option with a positive number (--help)\n`);
      process.exit(2);
    }
    o[k] = v;
    i++;
  }
  return o;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => void)[] = [];
function cleanup(): void {
  for (const f of cleanups.splice(0).reverse()) {
    try {
      f();
    } catch {
      // best effort on the way out
    }
  }
}
process.on('exit', cleanup);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));

function must(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout || '').trim()}`);
  return r.stdout;
}

/** Two namespaces joined by a veth pair: tcpreplay sends on vtx, riff captures on vrx. */
function netns(): { tx: string; rx: string } {
  const ns = { tx: `riffsoak-tx-${process.pid}`, rx: `riffsoak-rx-${process.pid}` };
  cleanups.push(() => {
    spawnSync('ip', ['netns', 'del', ns.tx], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', ns.rx], { stdio: 'ignore' });
  });
  must('ip', ['netns', 'add', ns.tx]);
  must('ip', ['netns', 'add', ns.rx]);
  for (const n of [ns.tx, ns.rx]) must('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  must('ip', ['-n', ns.tx, 'link', 'add', 'vtx', 'type', 'veth', 'peer', 'name', 'vrx', 'netns', ns.rx]);
  must('ip', ['-n', ns.tx, 'link', 'set', 'vtx', 'mtu', '9000', 'up']);
  must('ip', ['-n', ns.rx, 'link', 'set', 'vrx', 'mtu', '9000', 'up']);
  return ns;
}

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const fds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den ? num / den : 0;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, veth, live capture)');
  if (spawnSync('sh', ['-c', 'command -v tcpreplay']).status !== 0) throw new Error('needs tcpreplay (apt-get install tcpreplay)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-soak-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const capture = path.join(dir, 'traffic.pcap');
  must(process.execPath, [GEN, capture, '--packets', '20000', '--flows', '2000']);
  const ns = netns();
  const json = path.join(dir, 'records.json');
  const db = path.join(dir, 'traffic.db');
  const riff = spawn(
    'ip',
    ['netns', 'exec', ns.rx, process.execPath, RIFF, '-q', '--lua', TRAFFIC, '-i', 'vrx', '--workers', String(o.workers), '-o', `json:${json}`, '-o', `sqlite:${db}`, '--stats', String(o.sampleEvery)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  cleanups.push(() => riff.kill('SIGKILL'));
  let err = '';
  riff.stderr!.on('data', (d: Buffer) => (err += d));
  const closed = new Promise<number | null>((r) => riff.on('close', (code) => r(code)));
  for (let i = 0; i < 200 && !/listening on vrx/.test(err); i++) await sleep(50);
  if (!/listening on vrx/.test(err)) throw new Error(`riff did not start: ${err}`);
  // `ip netns exec` execs riff in its own place (same pid); were it a parent, riff would be its child.
  const child = spawnSync('pgrep', ['-P', String(riff.pid), '-f', 'riff.js'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
  const pid = Number(child) || riff.pid!;

  let replaying = true;
  let sent = 0;
  const replay = (async () => {
    while (replaying) {
      const out = await new Promise<string>((resolve) => {
        const c = spawn('ip', ['netns', 'exec', ns.tx, 'tcpreplay', '-q', '-i', 'vtx', `--pps=${o.pps}`, capture], { stdio: ['ignore', 'pipe', 'pipe'] });
        let text = '';
        c.stdout!.on('data', (d: Buffer) => (text += d));
        c.stderr!.on('data', (d: Buffer) => (text += d));
        c.on('close', () => resolve(text));
      });
      const m = /Actual: (\d+) packets/.exec(out);
      if (m) sent += Number(m[1]);
      else await sleep(1000);
    }
  })();

  const t0 = Date.now();
  const end = t0 + o.minutes * 60_000;
  let nextReload = t0 + o.reloadEvery * 1000;
  let rotations = 0;
  const samples: { t: number; rss: number; fds: number; heap: string; sessions: string }[] = [];
  process.stdout.write(`soak: ${o.minutes} min at ${o.pps} packets/s, reload and rotate every ${o.reloadEvery} s, ${o.workers} worker(s)\n`);
  process.stdout.write('   time      RSS  fds  Lua heap   sessions (TCP/UDP/APP)\n');
  while (Date.now() < end) {
    await sleep(o.sampleEvery * 1000);
    const now = Date.now();
    if (now >= nextReload) {
      nextReload += o.reloadEvery * 1000;
      fs.renameSync(json, `${json}.${++rotations}`);
      process.kill(pid, 'SIGUSR1');
      process.kill(pid, 'SIGHUP');
    }
    const stats = [...err.matchAll(/^riff: stats: .*$/gm)].pop()?.[0] ?? '';
    const heap = /Lua heap ([\d.]+ \w+)/.exec(stats)?.[1] ?? '?';
    const st = [...err.matchAll(/TCP sess: (\d+), UDP sess: (\d+), APP sess: (\d+)/g)].pop();
    const s = { t: (now - t0) / 1000, rss: rss(pid), fds: fds(pid), heap, sessions: st ? `${st[1]}/${st[2]}/${st[3]}` : '?' };
    samples.push(s);
    process.stdout.write(`${s.t.toFixed(0).padStart(6)} s ${(s.rss / 2 ** 20).toFixed(1).padStart(6)} MiB ${String(s.fds).padStart(4)} ${s.heap.padStart(9)}   ${s.sessions}\n`);
  }
  replaying = false;
  await replay;
  await sleep(2000);
  process.kill(pid, 'SIGTERM');
  const code = await closed;
  const summary = err.slice(err.lastIndexOf('packets captured') - 20);
  const files = [json, ...Array.from({ length: rotations }, (_, i) => `${json}.${i + 1}`)].filter((f) => fs.existsSync(f));
  const lines = files.reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length, 0);
  // The summary counts records over both outputs (JSON and SQLite): each should hold half.
  const written = Number(/^(\d+) records written/m.exec(err)?.[1] ?? NaN);
  // better-sqlite3's own types are a separate package (as in src/outputs/sqlite-output.ts).
  type Db = { prepare(sql: string): { all(): unknown[]; get(): unknown }; close(): void };
  const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string, o: { readonly: boolean }) => Db;
  const sqlite = new Database(db, { readonly: true });
  const tables = sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
  const rows = tables.reduce((n, t) => n + (sqlite.prepare(`SELECT count(*) AS n FROM "${t.name.replace(/"/g, '""')}"`).get() as { n: number }).n, 0);
  sqlite.close();
  const warm = samples.filter((s) => s.t >= 60);
  const growth = (k: 'rss' | 'fds') => {
    if (warm.length < 2) return NaN;
    const per = slope(warm.map((s) => s.t), warm.map((s) => s[k]));
    return (per * (warm[warm.length - 1].t - warm[0].t)) / warm[0][k];
  };
  process.stdout.write(
    [
      `riff exited ${code}; ${sent} packets sent; ${rotations} rotations and reloads`,
      `records: riff says ${written} written over 2 outputs; ${lines} lines in ${files.length} JSON files, ${rows} rows in SQLite: ${lines === written / 2 && rows === written / 2 ? 'every record in both, once' : 'MISMATCH'}`,
      `growth after the first minute (least-squares slope over the run): memory ${(growth('rss') * 100).toFixed(2)}%, descriptors ${(growth('fds') * 100).toFixed(2)}%`,
      `summary:\n${summary.trim()}`,
    ].join('\n') + '\n',
  );
}

main().catch((e) => {
  process.stderr.write(`soak: ${(e as Error).message}\n`);
  process.exit(1);
});
