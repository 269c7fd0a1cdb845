#!/usr/bin/env node
// riff left running: a steady replay into a veth pair for N minutes through
// lua/examples/traffic.lua with its outputs on, the script reloaded (SIGHUP)
// and the JSON output rotated (move + SIGUSR1) once a minute. Every sample
// (default each 10 s) reads riff's resident memory (and how much of it is
// the Lua VMs' WebAssembly memories) and open descriptors from /proc, its
// Lua heap and records written from its --stats line, live sessions from
// traffic.lua's status line; at the end it checks that every record riff
// emitted is in the JSON files and in SQLite, once. A benchmark-style
// script (root, tcpreplay), not a CI test:
//
//   scripts/soak [--minutes 10] [--pps 2000] [--reload-every 60] [--sample-every 10] [--warm-up 60] [--workers 1]
//
// It prints one row per sample and the growth of memory and descriptors
// after the warm-up (least-squares slope; target: under 1% over the run).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { isVmMemory, mappings } from './lib/proc-maps.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RIFF = path.join(ROOT, 'dist', 'riff.cjs');
const GEN = path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js');
const TRAFFIC = path.join(ROOT, 'lua', 'examples', 'traffic.lua');

interface Opts {
  minutes: number;
  pps: number;
  reloadEvery: number;
  sampleEvery: number;
  warmUp: number;
  workers: number;
}

function parse(argv: string[]): Opts {
  const o: Opts = { minutes: 10, pps: 2000, reloadEvery: 60, sampleEvery: 10, warmUp: 60, workers: 1 };
  const keys: Record<string, keyof Opts> = {
    '--minutes': 'minutes',
    '--pps': 'pps',
    '--reload-every': 'reloadEvery',
    '--sample-every': 'sampleEvery',
    '--warm-up': 'warmUp',
    '--workers': 'workers',
  };
  for (let i = 0; i < argv.length; i++) {
    const k = keys[argv[i]];
    const v = Number(argv[i + 1]);
    if (argv[i] === '--help' || argv[i] === '-h') {
      process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 15).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
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

/**
 * Resident memory by where it lies (/proc/PID/smaps), to tell a growth's
 * place: the Lua VMs' WebAssembly memories (isVmMemory); V8's heap pages (anonymous mappings V8
 * places at random addresses below 2^47 - 2^44, where neither the kernel's
 * mmap area nor the program is); the C library's heap (the program break and
 * its per-thread arenas, anonymous mappings aligned to their 64 MiB
 * reservation); the capture's ring (libpcap's mapping of the packet socket);
 * and the rest (code and data of node and the libraries, thread stacks,
 * malloc's own large blocks).
 */
interface Places {
  wasm: number;
  v8: number;
  malloc: number;
  ring: number;
  other: number;
}
function places(pid: number): Places {
  const maps = mappings(pid, true);
  const p: Places = { wasm: 0, v8: 0, malloc: 0, ring: 0, other: 0 };
  const ARENA = 64n << 20n;
  for (let i = 0; i < maps.length; i++) {
    const a = maps[i];
    const b = maps[i + 1];
    if (a.name === '[heap]') p.malloc += a.rss;
    else if (a.name.startsWith('socket:')) p.ring += a.rss;
    else if (a.name) p.other += a.rss;
    else if (isVmMemory(a, b)) p.wasm += a.rss;
    else if (a.lo < 0x7000_0000_0000n && !a.perms.includes('x')) p.v8 += a.rss;
    else if (a.perms.startsWith('rw') && a.lo % ARENA === 0n && a.hi - a.lo <= ARENA) p.malloc += a.rss;
    else p.other += a.rss;
  }
  return p;
}

const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
const MiB = (b: number) => (b / 2 ** 20).toFixed(1);

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
    ['netns', 'exec', ns.rx, RIFF, '-q', '--verbose', '--lua', TRAFFIC, '-i', 'vrx', '--workers', String(o.workers), '-o', `json:${json}`, '-o', `sqlite:${db}`, '--stats', String(o.sampleEvery)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  cleanups.push(() => riff.kill('SIGKILL'));
  let err = '';
  riff.stderr!.on('data', (d: Buffer) => (err += d));
  const closed = new Promise<number | null>((r) => riff.on('close', (code) => r(code)));
  for (let i = 0; i < 200 && !/listening on vrx/.test(err); i++) await sleep(50);
  if (!/listening on vrx/.test(err)) throw new Error(`riff did not start: ${err}`);
  // `ip netns exec` execs riff in its own place (same pid); were it a parent, riff would be its child.
  const child = spawnSync('pgrep', ['-P', String(riff.pid), '-f', 'riff.cjs'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
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
  interface Sample {
    t: number;
    rss: number;
    /** Resident memory by place (places()). */
    wasm: number;
    v8: number;
    malloc: number;
    ring: number;
    other: number;
    fds: number;
    heap: number;
    /** V8's heaps: the capture thread's (and its external memory), the workers'. */
    jsMain: number;
    jsExt: number;
    jsWorkers: number;
    sessions: number;
    records: number;
  }
  const samples: Sample[] = [];
  const load0 = loadavg();
  process.stdout.write(`soak: ${o.minutes} min at ${o.pps} packets/s, reload and rotate every ${o.reloadEvery} s, ${o.workers} worker(s), warm-up ${o.warmUp} s; load average ${load0}\n`);
  process.stdout.write('   time    RSS MiB: Lua VMs    V8 malloc  ring other  fds  Lua heap  JS heap: main (ext)  workers  sessions  records\n');
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
    const heap = Number(/Lua heap ([\d.]+) MiB/.exec(stats)?.[1] ?? NaN) * 2 ** 20;
    const js = /JS heap ([\d.]+) MiB here \(([\d.]+) MiB external\) and ([\d.]+) MiB in the workers/.exec(stats)?.slice(1).map((x) => Number(x) * 2 ** 20) ?? [NaN, NaN, NaN];
    const records = Number(/(\d+) records emitted/.exec(stats)?.[1] ?? 0);
    const st = [...err.matchAll(/TCP sess: (\d+), UDP sess: (\d+)/g)].pop();
    const s: Sample = { t: (now - t0) / 1000, rss: rss(pid), ...places(pid), fds: fds(pid), heap, jsMain: js[0], jsExt: js[1], jsWorkers: js[2], sessions: st ? Number(st[1]) + Number(st[2]) : NaN, records };
    samples.push(s);
    const col = (x: number, w: number) => MiB(x).padStart(w);
    process.stdout.write(
      `${s.t.toFixed(0).padStart(6)} s ${col(s.rss, 6)} ${col(s.wasm, 9)} ${col(s.v8, 5)} ${col(s.malloc, 6)} ${col(s.ring, 5)} ${col(s.other, 5)} ${String(s.fds).padStart(4)} ${MiB(s.heap).padStart(5)} MiB ${MiB(s.jsMain).padStart(9)} (${MiB(s.jsExt).padStart(5)}) MiB ${MiB(s.jsWorkers).padStart(6)} MiB ${String(s.sessions).padStart(9)} ${String(s.records).padStart(8)}\n`,
    );
  }
  replaying = false;
  await replay;
  await sleep(2000);
  process.kill(pid, 'SIGTERM');
  const code = await closed;
  const summary = err.slice(err.lastIndexOf('packets captured') - 20);
  const files = [json, ...Array.from({ length: rotations }, (_, i) => `${json}.${i + 1}`)].filter((f) => fs.existsSync(f));
  const lines = files.reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length, 0);
  // The summary: records emitted by Lua, then each output's own account.
  const emitted = Number(/^(\d+) records emitted$/m.exec(err)?.[1] ?? NaN);
  const writtenBy = (kind: string) => Number(new RegExp(`^output ${kind}:.*?: (\\d+) written`, 'm').exec(err)?.[1] ?? NaN);
  // better-sqlite3's own types are a separate package (as in src/outputs/sqlite-output.ts).
  type Db = { prepare(sql: string): { all(): unknown[]; get(): unknown }; close(): void };
  const Database = createRequire(import.meta.url)('better-sqlite3') as new (file: string, o: { readonly: boolean }) => Db;
  const sqlite = new Database(db, { readonly: true });
  const tables = sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
  const rows = tables.reduce((n, t) => n + (sqlite.prepare(`SELECT count(*) AS n FROM "${t.name.replace(/"/g, '""')}"`).get() as { n: number }).n, 0);
  sqlite.close();
  const accounted = lines === emitted && rows === emitted && writtenBy('json') === emitted && writtenBy('sqlite') === emitted;
  const warm = samples.filter((s) => s.t >= o.warmUp);
  /** Least-squares growth over the samples after the warm-up: per hour, and over that span as a share of their mean. */
  type Key = 'rss' | 'fds' | 'wasm' | 'v8' | 'malloc' | 'ring' | 'other' | 'heap' | 'jsMain' | 'jsWorkers' | 'sessions';
  const growth = (k: Key) => {
    if (warm.length < 2) return { perHour: NaN, share: NaN };
    const per = slope(warm.map((s) => s.t), warm.map((s) => s[k]));
    const mean = warm.reduce((a, s) => a + s[k], 0) / warm.length;
    return { perHour: per * 3600, share: (per * (warm[warm.length - 1].t - warm[0].t)) / mean };
  };
  const range = (k: Key, f: (x: number) => string) => {
    const v = warm.map((s) => s[k]);
    return `${f(warm[0]?.[k])} at ${warm[0]?.t.toFixed(0)} s, ${f(warm[warm.length - 1]?.[k])} at the end, ${f(Math.min(...v))}-${f(Math.max(...v))}`;
  };
  const g = { rss: growth('rss'), fds: growth('fds'), wasm: growth('wasm'), heap: growth('heap'), jsMain: growth('jsMain'), jsWorkers: growth('jsWorkers') };
  const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
  process.stdout.write(
    [
      `riff exited ${code}; ${sent} packets sent; ${rotations} rotations and reloads; load average ${load0} at the start, ${loadavg()} at the end`,
      `records: ${emitted} emitted; json ${writtenBy('json')} written, ${lines} lines in ${files.length} files; sqlite ${writtenBy('sqlite')} written, ${rows} rows: ${accounted ? 'every record in both, once' : 'MISMATCH'}`,
      `after the ${o.warmUp} s warm-up (${warm.length} samples):`,
      `  resident memory ${range('rss', (x) => `${MiB(x)} MiB`)}; growth ${pct(g.rss.share)} over the run (${MiB(g.rss.perHour)} MiB/h)`,
      `  of it the Lua VMs' memories ${range('wasm', (x) => `${MiB(x)} MiB`)}; growth ${pct(g.wasm.share)}`,
      `  Lua heap ${range('heap', (x) => `${MiB(x)} MiB`)}; growth ${pct(g.heap.share)}`,
      `  JS heap of the capture thread ${range('jsMain', (x) => `${MiB(x)} MiB`)}; growth ${pct(g.jsMain.share)}`,
      `  JS heap of the workers ${range('jsWorkers', (x) => `${MiB(x)} MiB`)}; growth ${pct(g.jsWorkers.share)}`,
      `  V8's heap pages (every thread's) ${range('v8', (x) => `${MiB(x)} MiB`)}; growth ${pct(growth('v8').share)}`,
      `  the C library's heap (malloc: SQLite, libpcap, Node's buffers) ${range('malloc', (x) => `${MiB(x)} MiB`)}; growth ${pct(growth('malloc').share)}`,
      `  the capture's ring ${range('ring', (x) => `${MiB(x)} MiB`)}; the rest (code, stacks) ${range('other', (x) => `${MiB(x)} MiB`)}; growth ${pct(growth('other').share)}`,
      `  open descriptors ${range('fds', String)}; growth ${pct(g.fds.share)}`,
      `  live sessions ${range('sessions', String)}`,
      `verdict: memory ${g.rss.share < 0.01 ? 'flat' : 'NOT flat'}, descriptors ${g.fds.share < 0.01 ? 'flat' : 'NOT flat'} (target: under 1% over the run), records ${accounted ? 'all accounted for' : 'NOT accounted for'}`,
      `summary:\n${summary.trim()}`,
    ].join('\n') + '\n',
  );
}

main().catch((e) => {
  process.stderr.write(`soak: ${(e as Error).message}\n`);
  process.exit(1);
});
