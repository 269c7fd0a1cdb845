#!/usr/bin/env node
// riff's throughput benchmark: one capture, timed under tcpdump (the libpcap
// ceiling), tshark with a Lua tap (the nearest existing tool), riff's own
// pipelines and, optionally, scapy; then optionally the same pipelines live on
// a veth pair fed by tcpreplay. Run through scripts/bench; --help for options.
//
// Every count riff prints is checked against one this script computes itself
// from the file, so a fast but wrong riff cannot win the table.

import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { MariaDbServer, mariadbUnavailable } from './lib/mariadb-server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The `riff` command as installed (package.json's bin): the build's bundle.
const RIFF = path.join(ROOT, 'dist', 'riff.cjs');
const GEN = path.join(ROOT, 'dist', 'scripts', 'gen-bench-capture.js');
const SEED = path.join(ROOT, 'fixtures', 'original-riff', 'elements.lua');
const COUNT = path.join(ROOT, 'fixtures', 'count.lua');
const TRAFFIC = path.join(ROOT, 'lua', 'examples', 'traffic.lua');
const TIME = '/usr/bin/time';
// The node running this script runs riff too, whatever node is first on PATH.
const NODE = process.execPath;
// How riff is started: by this node, or (--shebang) through riff.cjs's #!
// line as `riff` on the PATH and the systemd unit start it, with the
// environment that line gives (MALLOC_ARENA_MAX) and the node that env finds.
let riffCmd = NODE;
let riffPre = [RIFF];
// Debian's interpreter, not whatever python3 is first on PATH: python3-scapy
// installs for it.
const PY = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

const USAGE = `usage: scripts/bench [options]

Times packet processing on one capture file and prints a table: tcpdump -w
/dev/null (the libpcap ceiling), tshark with a Lua tap doing
string.find(data, "pcap", 1, true) per packet, riff with an empty pipeline, the
seed pipeline (fixtures/original-riff/elements.lua, with its config.lua
filter and, as "every packet", without it), fixtures/count.lua,
the TrafficAnalyzer-style pipeline (lua/examples/traffic.lua into SQLite,
and into MariaDB through -o mysql:// on a server started here when
mariadbd is installed) and, when riff has --workers, the seed and traffic pipelines with --workers
2; tshark -z conv,tcp (a full dissection into TCP conversations) beside the
tap; with --python, scapy running TrafficAnalyzer's per-packet session work.
riff runs use -q and default settings. Counts are checked against the file's
own.

Capture:
  --packets N          packets to generate (default 1000000, about 1 GB)
  --capture FILE       benchmark this pcap file instead of generating one
  --dir DIR            where the generated capture lives
                       (default: $TMPDIR/riff-bench); reused when present
                       with the size recorded at generation
  --keep               keep the generated capture for the next run to reuse
                       (otherwise it is deleted at exit)

Offline runs:
  --runs N             timed runs per tool (default 3); min and median kept
  --tshark-packets N   tshark is slow: time it on a prefix of this many
                       packets (default 200000; 0 = whole file)
  --no-tshark          skip tshark
  --traffic-only       only the traffic pipeline rows (SQLite, MariaDB) and
                       riff's startup
  --tshark             with --traffic-only, time tshark too (the ratios' reference)
  --shebang            run riff through dist/riff.cjs's #! line, as
                       \`riff\` on the PATH does (its node flags in the
                       figures), not as node dist/riff.cjs
  --python             also time scapy (python3-scapy) on a prefix
  --python-packets N   scapy's prefix (default 50000)

Start-up (every run but --live-only ends with it; needs no generated capture):
  --startup-only       only the start-up table: node -e 0, riff -q -r
                       fixtures/http.pcap and tcpdump -r fixtures/http.pcap,
                       runs taking turns, min and median, riff's ratio to node
  --startup-runs N     runs of each (default 10)

Live (root only; traffic stays in two network namespaces made and deleted
here, joined by a veth pair):
  --live               also replay a capture prefix with tcpreplay at rising
                       rates and count what riff (seed pipeline, and empty
                       pipeline) and tcpdump see
  --live-only          only the live part
  --live-packets N     most packets sent per step (default 200000)
  --live-seconds S     each rate step sends rate*S packets, at most
                       --live-packets (default 4)
  --pps LIST           rates, comma-separated, k/M suffixes, "top" for
                       tcpreplay --topspeed
                       (default 10k,50k,100k,200k,400k,top)
  --topspeed           add a top-speed step to a --pps list lacking one

  -h, --help           this text

Missing tools (tcpdump, tshark, tcpreplay, GNU time, python3-scapy) are
installed with apt-get when running as root.`;

// ---------------------------------------------------------------- options

interface Opts {
  packets: number;
  capture: string | null;
  dir: string;
  keep: boolean;
  runs: number;
  tsharkPackets: number;
  tshark: boolean;
  python: boolean;
  pythonPackets: number;
  live: boolean;
  liveOnly: boolean;
  livePackets: number;
  liveSeconds: number;
  pps: (number | 'top')[];
  topspeed: boolean;
  trafficOnly: boolean;
  startupOnly: boolean;
  startupRuns: number;
}

function die(msg: string, code = 2): never {
  console.error(`bench: ${msg}`);
  process.exit(code);
}

function parseCount(v: string | undefined, name: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(v ?? '');
  if (!m) die(`${name}: expected a number (k and M suffixes allowed), got '${v ?? ''}'`);
  return Math.round(Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]) ? 1e3 : 1e6));
}

function parseOpts(argv: string[]): Opts {
  const o: Opts = {
    packets: 1_000_000,
    capture: null,
    dir: path.join(os.tmpdir(), 'riff-bench'),
    keep: false,
    runs: 3,
    tsharkPackets: 200_000,
    tshark: true,
    python: false,
    pythonPackets: 50_000,
    live: false,
    liveOnly: false,
    livePackets: 200_000,
    liveSeconds: 4,
    pps: [10e3, 50e3, 100e3, 200e3, 400e3, 'top'],
    topspeed: false,
    trafficOnly: false,
    startupOnly: false,
    startupRuns: 10,
  };
  let ppsGiven = false;
  let tsharkAsked = false;
  for (let i = 0; i < argv.length; i++) {
    let k = argv[i];
    let v: string | undefined;
    if (k.startsWith('--') && k.includes('=')) [k, v] = [k.slice(0, k.indexOf('=')), k.slice(k.indexOf('=') + 1)];
    const take = () => v ?? argv[++i];
    switch (k) {
      case '--packets': o.packets = parseCount(take(), k); break;
      case '--capture': o.capture = take() ?? die('--capture needs a file'); break;
      case '--dir': o.dir = take() ?? die('--dir needs a directory'); break;
      case '--keep': o.keep = true; break;
      case '--runs': o.runs = Math.max(1, parseCount(take(), k)); break;
      case '--tshark-packets': o.tsharkPackets = parseCount(take(), k); break;
      case '--no-tshark': o.tshark = false; break;
      case '--traffic-only': o.trafficOnly = true; break;
      case '--shebang': riffCmd = RIFF; riffPre = []; break;
      case '--tshark': tsharkAsked = true; break;
      case '--startup-only': o.startupOnly = true; break;
      case '--startup-runs': o.startupRuns = Math.max(1, parseCount(take(), k)); break;
      case '--python': o.python = true; break;
      case '--python-packets': o.pythonPackets = Math.max(1, parseCount(take(), k)); break;
      case '--live': o.live = true; break;
      case '--live-only': o.live = o.liveOnly = true; break;
      case '--live-packets': o.livePackets = Math.max(1, parseCount(take(), k)); break;
      case '--live-seconds': {
        const s = Number(take());
        if (!(s > 0)) die('--live-seconds: expected a positive number');
        o.liveSeconds = s;
        break;
      }
      case '--pps': {
        ppsGiven = true;
        o.pps = (take() ?? '').split(',').filter(Boolean).map((r) => (/^(top|max|topspeed)$/i.test(r) ? 'top' : Math.max(1, parseCount(r, k))));
        if (o.pps.length === 0) die('--pps: expected a list of rates');
        break;
      }
      case '--topspeed': o.topspeed = true; break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
      default:
        die(`unknown argument '${argv[i]}' (see --help)`);
    }
  }
  if (o.packets < 1) die('--packets must be at least 1');
  if (o.trafficOnly && !tsharkAsked) o.tshark = false;
  if (o.topspeed && !o.pps.includes('top')) o.pps.push('top');
  // Rising order, top speed last, whatever order they were given in.
  if (ppsGiven) o.pps = [...new Set(o.pps)].sort((a, b) => (a === 'top' ? 1 : b === 'top' ? -1 : a - b));
  return o;
}

// ---------------------------------------------------------------- processes

const children = new Set<ChildProcess>();
const cleanups: (() => void)[] = [];
let cleanedUp = false;

function cleanup(): void {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const f of cleanups.reverse()) {
    try {
      f();
    } catch {
      /* best effort: we are on the way out */
    }
  }
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}, cleaning up`);
    cleanup();
    process.exit(130);
  });
}

function log(s = ''): void {
  process.stderr.write(s + '\n');
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

interface Done {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  secs: number;
}

interface RunOpts {
  /** 'null': stdout to /dev/null; 'keep': collected; a function: fed the stream. */
  stdout?: 'null' | 'keep' | ((s: Readable) => void);
  /** Called once the child exists (to watch its stderr, find its pid...). */
  started?: (c: ChildProcess) => void;
}

/** Runs a command to completion; wall time measured around spawn and exit. */
function run(cmd: string, args: string[], ro: RunOpts = {}): Promise<Done> {
  return new Promise((resolve, reject) => {
    let nullFd: number | null = null;
    const stdio: StdioOptions = ['ignore', 'pipe', 'pipe'];
    if (ro.stdout === 'null' || ro.stdout === undefined) stdio[1] = nullFd = fs.openSync('/dev/null', 'w');
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio });
    children.add(c);
    let out = '';
    let err = '';
    if (typeof ro.stdout === 'function') ro.stdout(c.stdout!);
    else if (ro.stdout === 'keep') c.stdout!.on('data', (d: Buffer) => (out += d.toString('latin1')));
    c.stderr!.on('data', (d: Buffer) => (err += d.toString('latin1')));
    ro.started?.(c);
    c.on('error', (e) => {
      children.delete(c);
      if (nullFd !== null) fs.closeSync(nullFd);
      reject(e);
    });
    c.on('close', (code, signal) => {
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      children.delete(c);
      if (nullFd !== null) fs.closeSync(nullFd);
      resolve({ code, signal, stdout: out, stderr: err, secs });
    });
  });
}

function sh(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- installs

const isRoot = process.getuid?.() === 0;
let aptUpdated = false;

/** Installs the Debian packages whose check fails; false for any still missing after. */
function ensurePackages(wants: { pkg: string; present: () => boolean }[]): Set<string> {
  const missing = wants.filter((w) => !w.present());
  if (missing.length === 0) return new Set();
  const names = missing.map((m) => m.pkg);
  const sudo = isRoot ? [] : spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0 ? ['sudo', '-n'] : null;
  if (!sudo) {
    log(`bench: missing ${names.join(', ')}, and not root to apt-get install them: those parts are skipped`);
    return new Set(names);
  }
  const as = (argv: string[]) => [...sudo, ...argv];
  log(`bench: installing ${names.join(' ')} (apt-get install)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (names.includes('tshark')) {
    // wireshark-common asks whether non-root users may capture; answer now so
    // the install cannot stop on a prompt.
    const [c, ...a] = as(['debconf-set-selections']);
    spawnSync(c, a, { input: 'wireshark-common wireshark-common/install-setuid boolean false\n', env, stdio: ['pipe', 'ignore', 'inherit'] });
  }
  if (!aptUpdated) {
    const [c, ...a] = as(['apt-get', 'update', '-qq']);
    spawnSync(c, a, { env, stdio: ['ignore', 'ignore', 'inherit'] });
    aptUpdated = true;
  }
  const [c, ...a] = as(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...names]);
  const r = spawnSync(c, a, { env, encoding: 'utf8' });
  if (r.status !== 0) log(`bench: apt-get install ${names.join(' ')} failed:\n${(r.stderr || r.stdout).trim()}`);
  return new Set(missing.filter((m) => !m.present()).map((m) => m.pkg));
}

// ---------------------------------------------------------------- pcap scanning

interface Scan {
  packets: number;
  matches: number;
  maxLen: number;
}

/**
 * Counts the records of a classic pcap stream and those containing `needle`:
 * the reference every tool's count is checked against. Only pcap (what the
 * generator and tcpdump -w write); pcapng gets null.
 */
function scanPcap(src: Readable, needle = Buffer.from('pcap')): Promise<Scan | null> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let le = true;
    let headerDone = false;
    let bad = false;
    const s: Scan = { packets: 0, matches: 0, maxLen: 0 };
    src.on('data', (chunk: Buffer) => {
      if (bad) return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      let off = 0;
      if (!headerDone) {
        if (buf.length < 24) return;
        const magic = buf.readUInt32LE(0);
        if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
        else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
        else {
          bad = true;
          src.resume();
          return;
        }
        headerDone = true;
        off = 24;
      }
      while (buf.length - off >= 16) {
        const caplen = le ? buf.readUInt32LE(off + 8) : buf.readUInt32BE(off + 8);
        if (buf.length - off - 16 < caplen) break;
        const body = buf.subarray(off + 16, off + 16 + caplen);
        s.packets++;
        if (caplen > s.maxLen) s.maxLen = caplen;
        if (body.indexOf(needle) >= 0) s.matches++;
        off += 16 + caplen;
      }
      buf = buf.subarray(off);
    });
    src.on('end', () => resolve(bad ? null : s));
    src.on('error', reject);
  });
}

const scanFile = (f: string) => scanPcap(fs.createReadStream(f, { highWaterMark: 4 << 20 }));

/** Packets of `file` passing a BPF filter, and how many of those contain "pcap" (by tcpdump, not riff). */
async function scanFiltered(file: string, filter: string): Promise<Scan | null> {
  let scan: Promise<Scan | null> = Promise.resolve(null);
  const r = await run('tcpdump', ['-r', file, '-w', '-', filter], { stdout: (s) => (scan = scanPcap(s)) });
  return r.code === 0 ? scan : null;
}

/** The first n packets of file, made once by tcpdump -c. */
const prefixes = new Map<number, string>();
async function prefix(file: string, total: number, n: number, dir: string): Promise<string> {
  if (n <= 0 || n >= total) return file;
  const have = prefixes.get(n);
  if (have) return have;
  const out = path.join(dir, `prefix-${n}.pcap`);
  const r = await run('tcpdump', ['-r', file, '-c', String(n), '-w', out]);
  if (r.code !== 0) throw new Error(`tcpdump -c ${n} failed: ${r.stderr.trim()}`);
  prefixes.set(n, out);
  return out;
}

// ---------------------------------------------------------------- timing

interface Row {
  tool: string;
  packets: number;
  secs: number[];
  rssKb: (number | null)[];
  note?: string;
  /** Startup-only row: no rate. */
  noRate?: boolean;
}

const min = (a: number[]) => Math.min(...a);
function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

let workDir = '';
/** Timed commands that failed: reported with the checks, and the exit code says so. */
const failures: string[] = [];
let haveTime = false;

/**
 * Times `runs` runs of a command. GNU time wraps each one only for its peak
 * RSS: it forks once more, which costs about a millisecond, while the wall
 * clock is ours.
 */
async function timeRuns(
  tool: string,
  packets: number,
  runs: number,
  cmd: string,
  args: string[],
  stdout: 'null' | 'keep',
  check: (d: Done) => string | null,
): Promise<{ row: Row; last: Done } | null> {
  const row: Row = { tool, packets, secs: [], rssKb: [] };
  let last: Done | null = null;
  process.stderr.write(`  ${tool.padEnd(34)}`);
  for (let i = 0; i < runs; i++) {
    const rssFile = path.join(workDir, 'rss');
    const d = haveTime
      ? await run(TIME, ['-f', '%M', '-o', rssFile, cmd, ...args], { stdout })
      : await run(cmd, args, { stdout });
    // A crash's first lines name the error; its last ones are node's stack.
    const problem = d.code !== 0 ? `exit ${d.code ?? d.signal}: ${d.stderr.trim().split('\n').filter((l) => l.trim()).slice(0, 4).join(' / ').slice(0, 400)}` : check(d);
    if (problem) {
      log(` failed: ${problem}`);
      failures.push(`${tool}: ${problem}`);
      return null;
    }
    row.secs.push(d.secs);
    let rss: number | null = null;
    if (haveTime) {
      rss = Number(fs.readFileSync(rssFile, 'utf8').trim().split('\n').pop());
      if (!Number.isFinite(rss)) rss = null;
    }
    row.rssKb.push(rss);
    process.stderr.write(` ${d.secs.toFixed(3)}s`);
    last = d;
  }
  log();
  return { row, last: last! };
}

const num = (re: RegExp, s: string): number | null => {
  const m = re.exec(s);
  return m ? Number(m[1]) : null;
};

// ---------------------------------------------------------------- table

function fmtRate(r: number): string {
  if (r >= 1e6) return `${(r / 1e6).toFixed(2)}M`;
  if (r >= 1e3) return `${(r / 1e3).toFixed(1)}k`;
  return r.toFixed(0);
}

function fmtRatio(r: number): string {
  return r >= 10 ? `${r.toFixed(1)}x` : r >= 0.1 ? `${r.toFixed(2)}x` : `${r.toFixed(4)}x`;
}

function table(head: string[], rows: string[][], leftCols = 1): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < leftCols ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

const pps = (r: Row) => r.packets / min(r.secs);

function offlineTable(rows: Row[]): string {
  const tcpdump = rows.find((r) => r.tool.startsWith('tcpdump'));
  const tshark = rows.find((r) => r.tool.startsWith('tshark'));
  const body = rows.map((r) => {
    const rss = r.rssKb.filter((x): x is number => x !== null);
    return [
      r.tool,
      String(r.packets),
      min(r.secs).toFixed(3),
      median(r.secs).toFixed(3),
      r.noRate ? '-' : fmtRate(pps(r)),
      r.noRate || !tcpdump ? '-' : fmtRatio(pps(r) / pps(tcpdump)),
      r.noRate || !tshark ? '-' : fmtRatio(pps(r) / pps(tshark)),
      rss.length ? `${Math.round(Math.max(...rss) / 1024)} MB` : '-',
    ];
  });
  return table(['tool', 'packets', 'min s', 'median s', 'packets/s', 'vs tcpdump', 'vs tshark', 'peak RSS'], body);
}

// ---------------------------------------------------------------- capture

interface Capture {
  file: string;
  packets: number;
  /** Packets containing "pcap", counted here. */
  matches: number;
  maxLen: number;
  /** What the generator said it wrote, when we generated it. */
  genMatches: number | null;
}

async function getCapture(o: Opts): Promise<Capture> {
  if (o.capture) {
    if (!fs.existsSync(o.capture)) die(`--capture ${o.capture}: no such file`);
    log(`capture: ${o.capture} (given)`);
    const s = await scanFile(o.capture);
    if (!s) die(`--capture ${o.capture}: not a classic pcap file (the benchmark counts packets itself and reads only pcap)`);
    return { file: path.resolve(o.capture), packets: s.packets, matches: s.matches, maxLen: s.maxLen, genMatches: null };
  }
  fs.mkdirSync(o.dir, { recursive: true });
  const file = path.join(o.dir, `capture-${o.packets}.pcap`);
  const metaFile = file.replace(/\.pcap$/, '.json');
  let meta: { bytes: number; packets: number; genMatches: number | null; line: string } | null = null;
  try {
    meta = JSON.parse(fs.readFileSync(metaFile, 'utf8'));
    if (!meta || fs.statSync(file).size !== meta.bytes || meta.packets !== o.packets) meta = null;
  } catch {
    meta = null;
  }
  let generated = false;
  if (meta) {
    log(`capture: reusing ${file} (${(meta.bytes / 1e9).toFixed(2)} GB, the size recorded when it was generated)`);
  } else {
    if (!fs.existsSync(GEN)) die(`${GEN} is missing: build riff first (npx tsc -p .)`);
    log(`capture: generating ${o.packets} packets into ${file}`);
    // Written under a temporary name so an interrupted run leaves nothing that looks reusable.
    const tmp = `${file}.${process.pid}.tmp`;
    cleanups.push(() => fs.rmSync(tmp, { force: true }));
    const r = await run(NODE, [GEN, tmp, '--packets', String(o.packets)], { stdout: 'keep' });
    if (r.code !== 0) die(`capture generator failed: ${r.stderr.trim()}`, 1);
    const line = r.stdout.trim();
    log(`  ${line.replace(tmp, path.basename(file))}`);
    fs.renameSync(tmp, file);
    meta = { bytes: fs.statSync(file).size, packets: o.packets, genMatches: num(/(\d+) packets containing "pcap"/, line), line };
    fs.writeFileSync(metaFile, JSON.stringify(meta) + '\n');
    generated = true;
  }
  if (!o.keep && generated) {
    cleanups.push(() => {
      fs.rmSync(file, { force: true });
      fs.rmSync(metaFile, { force: true });
      try {
        fs.rmdirSync(o.dir);
      } catch {
        /* not empty: someone else's captures are there too */
      }
    });
  }
  // Also pulls the file into the page cache, so the first timed run is not the only one reading the disk.
  const s = await scanFile(file);
  if (!s) die(`${file}: not a pcap file`, 1);
  return { file, packets: s.packets, matches: s.matches, maxLen: s.maxLen, genMatches: meta.genMatches };
}

// ---------------------------------------------------------------- offline

const TAP_LUA = `-- tshark's nearest equivalent of fixtures/count.lua: a frame tap finding "pcap".
local n, seen = 0, 0
local find = string.find
local tap = Listener.new("frame")
function tap.packet(pinfo, tvb)
  seen = seen + 1
  if find(tvb:raw(), "pcap", 1, true) then n = n + 1 end
end
function tap.draw()
  print("packets\\t" .. seen)
  print("matches\\t" .. n)
end
function tap.reset() n, seen = 0, 0 end
`;

const SCAPY_PY = `# scapy's nearest equivalent of fixtures/count.lua.
import sys
from scapy.all import sniff
n = 0
seen = 0
def each(p):
    global n, seen
    seen += 1
    # The bytes as read (original), not a re-serialisation of the dissection.
    raw = p.original if getattr(p, "original", None) is not None else bytes(p)
    if raw.find(b"pcap") >= 0:
        n += 1
sniff(offline=sys.argv[1], prn=each, store=False)
print("packets\\t%d" % seen)
print("matches\\t%d" % n)
`;

// TrafficAnalyzer's per-packet work (dns.py, tcp.py, udp.py, app.py) in
// scapy, for the "scapy TrafficAnalyzer-style" row: DNS records and reverse
// cache, TCP sessions from SYN to FIN/FIN or RST with its duplicate-seq
// lists, UDP flows, app byte features on client packets. Records are
// counted, not written to MySQL.
const SCAPY_TA_PY = `import sys
from scapy.all import sniff
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

FEATURES = [("TLS", [(0, 0x16), (1, 0x03), (5, 0x01)]), ("SSH", [(0, 0x53), (1, 0x53), (2, 0x48), (3, 0x2d)]),
            ("HTTP", [(0, 0x47), (1, 0x45), (2, 0x54), (3, 0x20)]), ("HTTP", [(0, 0x50), (1, 0x4f), (2, 0x53), (3, 0x54)])]
tcp_sessions, udp_sessions, app_sessions, rev = {}, {}, {}, {}
st = {"packets": 0, "closed": 0, "apps": 0}

def clean(s):
    s = s.decode() if isinstance(s, bytes) else str(s)
    return s[:-1] if s.endswith(".") else s

def dns_read(pkt, ts):
    if not pkt.haslayer(DNS):
        return False
    if DNSQR in pkt and pkt.dport == 53:
        return True
    if DNSRR in pkt and pkt.sport == 53:
        d = pkt[DNS]
        for i in range(d.ancount):
            rev[clean(d.an[i].rdata)] = clean(d.an[i].rrname)
        return True
    return False

def tcp_read(pkt, ts):
    if not (pkt.haslayer(IP) and pkt.haslayer(TCP)):
        return False
    ip, t = pkt[IP], pkt[TCP]
    key, rkey = (ip.src, t.sport, ip.dst, t.dport), (ip.dst, t.dport, ip.src, t.sport)
    flags = str(t.flags)
    if key in tcp_sessions:
        d = 1
        if flags == "S":
            tcp_sessions.pop(key)
            st["closed"] += 1
            return tcp_read(pkt, ts)
    elif rkey in tcp_sessions:
        key, d = rkey, 2
        if flags == "S":
            tcp_sessions.pop(key)
            st["closed"] += 1
            return tcp_read(pkt, ts)
    elif flags == "S":
        d = 1
        tcp_sessions[key] = {"mac": pkt[Ether].src, "start": ts, "end": ts, "host": rev.get(ip.dst, ip.dst),
                             "len": 0, "seq1": [], "seq2": [], "fin1": 0, "fin2": 0, "pkts": []}
    else:
        return True
    s = tcp_sessions[key]
    load = bytes(t.payload)
    if d == 1 and "app" not in s and load:
        for name, dic in FEATURES:
            if all(o < len(load) and load[o] == v for o, v in dic):
                s["app"] = name
                app_sessions[(s["mac"], name)] = ts
                st["apps"] += 1
                break
    if t.seq in s["seq%d" % d]:
        return True
    s["len"] += len(load)
    s["seq%d" % d].append(t.seq)
    s["end"] = ts
    s["pkts"].append({"d": d, "l": len(load), "f": flags, "t": ts - s["start"]})
    if "R" in flags:
        tcp_sessions.pop(key)
        st["closed"] += 1
        return True
    if s["fin%d" % d] == 1:
        s["fin%d" % d] = 2
    if "F" in flags:
        s["fin%d" % d] = 1
    if s["fin1"] == 2 and s["fin2"] == 2:
        tcp_sessions.pop(key)
        st["closed"] += 1
    return True

def udp_read(pkt, ts):
    if not (pkt.haslayer(IP) and pkt.haslayer(UDP)):
        return False
    ip, u = pkt[IP], pkt[UDP]
    key, rkey = (ip.src, u.sport, ip.dst, u.dport), (ip.dst, u.dport, ip.src, u.sport)
    if key not in udp_sessions and rkey not in udp_sessions:
        udp_sessions[key] = {"start": ts, "len": 0}
    s = udp_sessions.get(key) or udp_sessions[rkey]
    s["len"] += len(bytes(u.payload))
    s["end"] = ts
    return True

def deal(pkt):
    st["packets"] += 1
    ts = float(pkt.time)
    try:
        if not dns_read(pkt, ts):
            udp_read(pkt, ts)
            tcp_read(pkt, ts)
    except Exception as e:
        print("[deal_pkt]", e, file=sys.stderr)

sniff(offline=sys.argv[1], prn=deal, store=False)
print("packets\\t%d" % st["packets"])
print("sessions\\t%d" % (st["closed"] + len(tcp_sessions)))
print("apps\\t%d" % st["apps"])
`;

interface Checks {
  lines: string[];
  failed: number;
}

function check(c: Checks, what: string, got: number | null, want: number | null, wantFrom: string): void {
  if (got === null || want === null) {
    c.lines.push(`  ?    ${what}: ${got ?? 'no count'} (reference ${want ?? 'unavailable'} from ${wantFrom})`);
    return;
  }
  const ok = got === want;
  if (!ok) c.failed++;
  c.lines.push(`  ${ok ? 'ok  ' : 'FAIL'} ${what}: ${got}${ok ? ` = ${wantFrom}` : `, but ${wantFrom} says ${want}`}`);
}

async function offline(o: Opts, cap: Capture, checks: Checks): Promise<Row[]> {
  const rows: Row[] = [];
  const emptyLua = path.join(workDir, 'empty.lua');
  fs.writeFileSync(emptyLua, '-- The empty pipeline: riff does everything but Lua does nothing.\nbuffer = function(p) end\n');
  const riffHelp = sh(riffCmd, [...riffPre, '--help']).out;
  const hasWorkers = /--workers\b/.test(riffHelp);
  const N = cap.packets;
  const F = cap.file;

  const how = riffPre.length ? `node ${path.relative(ROOT, RIFF)}` : `${path.relative(ROOT, RIFF)} (its #! line: ${fs.readFileSync(RIFF, 'utf8').split('\n')[0]})`;
  log(`\ntimed runs (${o.runs} each), ${N} packets; riff run as ${how}:`);

  const tcpdump = await timeRuns('tcpdump -w /dev/null', N, o.runs, 'tcpdump', ['-r', F, '-w', '/dev/null'], 'null', () => null);
  if (tcpdump) rows.push(tcpdump.row);

  if (o.tshark && has('tshark')) {
    const n = o.tsharkPackets > 0 ? Math.min(o.tsharkPackets, N) : N;
    const pf = await prefix(F, N, n, workDir);
    const tap = path.join(workDir, 'tap.lua');
    fs.writeFileSync(tap, TAP_LUA);
    const label = `tshark Lua tap${n < N ? ` (first ${fmtRate(n)})` : ''}`;
    const t = await timeRuns(label, n, o.runs, 'tshark', ['-r', pf, '-q', '-X', `lua_script:${tap}`], 'keep', (d) =>
      /matches\t\d+/.test(d.stdout) ? null : `no count printed (is tshark's Lua enabled?): ${d.stderr.trim().slice(0, 300)}`,
    );
    if (t) {
      rows.push(t.row);
      const seen = num(/packets\t(\d+)/, t.last.stdout);
      const m = num(/matches\t(\d+)/, t.last.stdout);
      const ref = await scanFile(pf);
      check(checks, `tshark saw packets (first ${n})`, seen, ref?.packets ?? null, 'the file');
      check(checks, `tshark "pcap" matches (first ${n})`, m, ref?.matches ?? null, 'this script\'s scan');
      // riff on tshark's prefix: the cross-tool check the table alone cannot give.
      const r = await run(riffCmd, [...riffPre, '-q', '-r', pf, '--lua', COUNT], { stdout: 'keep' });
      check(checks, `riff count.lua on tshark's ${n} packets`, num(/matches\t(\d+)/, r.stdout), m, 'tshark');
    }
    // A full dissection into TCP conversations: the tshark side of the
    // traffic pipeline below.
    const cl = `tshark -z conv,tcp${n < N ? ` (first ${fmtRate(n)})` : ''}`;
    const conv = await timeRuns(cl, n, o.runs, 'tshark', ['-r', pf, '-q', '-z', 'conv,tcp'], 'keep', (d) =>
      /TCP Conversations/.test(d.stdout) ? null : `no conversation table: ${d.stderr.trim().slice(0, 300)}`,
    );
    if (conv) {
      rows.push(conv.row);
      let frames = 0;
      for (const m of conv.last.stdout.matchAll(/<->\s+\S+\s+\d+ \S+ \w+\s+\d+ \S+ \w+\s+(\d+) /g)) frames += Number(m[1]);
      const ref = await scanFiltered(pf, 'tcp');
      check(checks, `tshark conv,tcp frames (first ${n})`, frames, ref?.packets ?? null, "tcpdump 'tcp'");
    }
  } else if (o.tshark) {
    log('  tshark: not installed, skipped');
  }

  // Startup alone (node, wasm, Lua state): what every riff row below pays once.
  const start = await timeRuns('riff startup (-c 1, empty)', 1, o.runs, riffCmd, [...riffPre, '-q', '-r', F, '-c', '1', '--lua', emptyLua], 'null', () => null);
  if (start) {
    start.row.noRate = true;
    rows.push(start.row);
  }

  const processed = (d: Done) => num(/(\d+) packets processed by Lua/, d.stderr);
  const passed = (d: Done) => num(/(\d+) packets passed the filter/, d.stderr);
  const allProcessed = (d: Done) => (processed(d) === N ? null : `Lua processed ${processed(d)} of ${N} packets`);
  if (o.trafficOnly) {
    await trafficRows(o, cap, checks, rows, allProcessed, hasWorkers);
    return rows;
  }

  const empty = await timeRuns('riff empty pipeline', N, o.runs, riffCmd, [...riffPre, '-q', '-r', F, '--lua', emptyLua], 'null', allProcessed);
  if (empty) {
    rows.push(empty.row);
    check(checks, 'riff empty pipeline: packets processed by Lua', processed(empty.last), N, 'the file');
  }

  // The seed pipeline's config.lua brings its own BPF filter: its rate is
  // still counted over every packet read, as tcpdump's is.
  const seedRuns: { label: string; extra: string[] }[] = [{ label: 'riff seed pipeline', extra: [] }];
  if (hasWorkers) seedRuns.push({ label: 'riff seed pipeline --workers 2', extra: ['--workers', '2'] });
  else log('  (riff --help has no --workers: the --workers 2 row is skipped)');
  let seedFilter: string | null = null;
  let seedRef: Scan | null = null;
  for (const s of seedRuns) {
    const t = await timeRuns(s.label, N, o.runs, riffCmd, [...riffPre, '-q', '-r', F, '--lua', SEED, ...s.extra], 'null', (d) =>
      num(/(\d+) packets read/, d.stderr) === N ? null : `read ${num(/(\d+) packets read/, d.stderr)} of ${N} packets`,
    );
    if (!t) continue;
    rows.push(t.row);
    seedFilter ??= /filter from config\.lua: (.*)/.exec(t.last.stderr)?.[1]?.trim() ?? '';
    if (seedFilter) {
      seedRef ??= await scanFiltered(F, seedFilter);
      check(checks, `${s.label}: packets passing '${seedFilter}'`, passed(t.last), seedRef?.packets ?? null, 'tcpdump');
      check(checks, `${s.label}: packets processed by Lua`, processed(t.last), seedRef?.packets ?? null, 'tcpdump');
    } else {
      check(checks, `${s.label}: packets processed by Lua`, processed(t.last), N, 'the file');
    }
  }
  // The same pipeline on every packet: the seed's tree without config.lua,
  // so Lua sees all the traffic tshark's tap sees.
  const everyDir = path.join(workDir, 'seed-every');
  fs.rmSync(everyDir, { recursive: true, force: true });
  fs.cpSync(path.dirname(SEED), everyDir, { recursive: true });
  fs.rmSync(path.join(everyDir, 'config.lua'), { force: true });
  // The hard wall-clock limit's cost (issue: at most 3%): the same row with
  // the limit off (--lua-timeout 0), when this riff has the option.
  const timeoutOff = /--lua-timeout\b/.test(riffHelp) ? [['--lua-timeout', '0']] : [];
  for (const extra of hasWorkers ? [[], ...timeoutOff, ['--workers', '2']] : [[], ...timeoutOff]) {
    const label = `riff seed pipeline, every packet${extra.length ? ` ${extra.join(' ')}` : ''}`;
    const t = await timeRuns(label, N, o.runs, riffCmd, [...riffPre, '-q', '-r', F, '--lua', path.join(everyDir, 'elements.lua'), ...extra], 'null', allProcessed);
    if (!t) continue;
    rows.push(t.row);
    check(checks, `${label}: packets processed by Lua`, processed(t.last), N, 'the file');
  }
  if (seedRuns.length) {
    // The seed's filter plugin prints a banner for each packet holding "pcap":
    // counting them needs its stdout in a pipe, so this is an untimed run, on
    // a prefix to keep it short.
    const n = Math.min(N, 200_000);
    const pf = await prefix(F, N, n, workDir);
    let banners = 0;
    let carry = '';
    await run(riffCmd, [...riffPre, '-q', '-r', pf, '--lua', SEED], {
      stdout: (st) =>
        st.on('data', (d: Buffer) => {
          const s = carry + d.toString('latin1');
          banners += s.split('[ OK ]').length - 1;
          carry = s.slice(-8);
        }),
    });
    const ref = seedFilter ? await scanFiltered(pf, seedFilter) : await scanFile(pf);
    check(checks, `riff seed pipeline: "[ OK ]" banners (first ${n})`, banners, ref?.matches ?? null, `tcpdump${seedFilter ? ` '${seedFilter}'` : ''} + scan for "pcap"`);
  }

  const count = await timeRuns('riff count.lua', N, o.runs, riffCmd, [...riffPre, '-q', '-r', F, '--lua', COUNT], 'keep', allProcessed);
  if (count) {
    rows.push(count.row);
    const m = num(/matches\t(\d+)/, count.last.stdout);
    check(checks, 'riff count.lua matches', m, cap.matches, "this script's scan of the file");
    if (cap.genMatches !== null) check(checks, 'riff count.lua matches', m, cap.genMatches, 'the generator');
  }

  await trafficRows(o, cap, checks, rows, allProcessed, hasWorkers);

  if (o.python) {
    if (sh(PY, ['-c', 'import scapy.all']).ok) {
      const n = Math.min(o.pythonPackets, N);
      const pf = await prefix(F, N, n, workDir);
      const py = path.join(workDir, 'count_scapy.py');
      fs.writeFileSync(py, SCAPY_PY);
      const t = await timeRuns(`scapy (first ${fmtRate(n)})`, n, o.runs, PY, [py, pf], 'keep', (d) => (/matches\t\d+/.test(d.stdout) ? null : 'no count printed'));
      if (t) {
        rows.push(t.row);
        const ref = await scanFile(pf);
        check(checks, `scapy "pcap" matches (first ${n})`, num(/matches\t(\d+)/, t.last.stdout), ref?.matches ?? null, "this script's scan");
      }
      const ta = path.join(workDir, 'traffic_scapy.py');
      fs.writeFileSync(ta, SCAPY_TA_PY);
      const t2 = await timeRuns(`scapy TrafficAnalyzer-style (first ${fmtRate(n)})`, n, o.runs, PY, [ta, pf], 'keep', (d) =>
        /packets\t\d+/.test(d.stdout) ? null : 'no count printed',
      );
      if (t2) {
        rows.push(t2.row);
        const ref = await scanFile(pf);
        check(checks, `scapy TrafficAnalyzer-style packets (first ${n})`, num(/packets\t(\d+)/, t2.last.stdout), ref?.packets ?? null, 'the file');
      }
    } else {
      log('  scapy: python3-scapy not importable, skipped');
    }
  }

  if (start) {
    const s0 = min(start.row.secs);
    const net = rows
      .filter((r) => r.tool.startsWith('riff') && !r.noRate && min(r.secs) > s0)
      .map((r) => `${r.tool.replace(/^riff /, '')} ${fmtRate(r.packets / (min(r.secs) - s0))}/s`);
    if (net.length) checks.lines.push(`  riff without its ${s0.toFixed(2)} s startup: ${net.join(', ')}`);
  }
  return rows;
}

// The TrafficAnalyzer-style pipeline as a user runs it: DNS log, sessions
// and app labels into SQLite, and into MariaDB (a server started here, on
// loopback). Each run starts from an empty database (riff appends to an
// existing one); sh execs node, so the time is riff's.
async function trafficRows(
  o: Opts,
  cap: Capture,
  checks: Checks,
  rows: Row[],
  allProcessed: (d: Done) => string | null,
  hasWorkers: boolean,
): Promise<void> {
  if (!fs.existsSync(TRAFFIC)) return;
  const N = cap.packets;
  const F = cap.file;
  // The summary says "N records emitted", then each output's account
  // ("output SPEC: N written[, M not written: why]").
  const records = (d: Done) => num(/^output \S+: (\d+) written/m, d.stderr);
  // Every record stored: a run that lost some is not a rate.
  const allStored = (d: Done) => allProcessed(d) ?? (/^output \S+: \d+ written, \d+ not written/m.test(d.stderr) ? `records lost: ${/^output \S+: \d+ written, .*/m.exec(d.stderr)?.[0]}` : null);
  const db = path.join(workDir, 'traffic.db');
  const fresh = `rm -f "$DB" "$DB-wal" "$DB-shm"; exec "$@"`;
  const trafficRuns: { label: string; extra: string[] }[] = [{ label: 'riff traffic pipeline', extra: [] }];
  if (hasWorkers) trafficRuns.push({ label: 'riff traffic pipeline --workers 2', extra: ['--workers', '2'] });
  let tcpRef: Scan | null = null;
  let lite: { row: Row; last: Done } | null = null;
  for (const s of trafficRuns) {
    const args = ['-c', fresh.replaceAll('$DB', db), 'sh', riffCmd, ...riffPre, '-q', '-r', F, '--lua', TRAFFIC, '-o', `sqlite:${db}`, ...s.extra];
    const t = await timeRuns(s.label, N, o.runs, 'sh', args, 'null', allStored);
    if (!t) continue;
    if (!s.extra.length) lite = t;
    rows.push(t.row);
    // The generated capture is all TCP, none of it after a connection
    // closed: every packet lands in exactly one session record.
    if (cap.genMatches !== null && has('sqlite3')) {
      tcpRef ??= await scanFiltered(F, 'tcp');
      const q = sh('sqlite3', [db, 'select coalesce(sum(pkts_c2s + pkts_s2c), 0) from tcp_session']);
      check(checks, `${s.label}: packets in tcp_session records`, q.ok ? Number(q.out.trim()) : null, tcpRef?.packets ?? null, "tcpdump 'tcp'");
    }
  }

  const label = 'riff traffic pipeline into MariaDB';
  const why = mariadbUnavailable();
  if (why) {
    log(`  ${label}: ${why}; skipped`);
    return;
  }
  const server = await MariaDbServer.create();
  cleanups.push(() => server.dispose());
  try {
    const reset = `mariadb --no-defaults -S '${server.socket}' -uroot -e 'DROP DATABASE IF EXISTS traffic; CREATE DATABASE traffic' && exec "$@"`;
    const t = await timeRuns(label, N, o.runs, 'sh', ['-c', reset, 'sh', riffCmd, ...riffPre, '-q', '-r', F, '--lua', TRAFFIC, '-o', server.spec('traffic')], 'null', allStored);
    if (!t) return;
    rows.push(t.row);
    if (cap.genMatches !== null) {
      tcpRef ??= await scanFiltered(F, 'tcp');
      const got = Number(server.sql('SELECT COALESCE(SUM(pkts_c2s + pkts_s2c), 0) FROM tcp_session', 'traffic').trim());
      check(checks, `${label}: packets in tcp_session records`, Number.isFinite(got) ? got : null, tcpRef?.packets ?? null, "tcpdump 'tcp'");
    }
    if (lite) {
      check(checks, `${label}: records stored`, records(t.last), records(lite.last), 'the SQLite run');
      const rate = (x: { row: Row; last: Done }) => `${fmtRate((records(x.last) ?? 0) / min(x.row.secs))} records/s, ${fmtRate(pps(x.row))} packets/s`;
      const ratio = pps(t.row) / pps(lite.row);
      checks.lines.push(
        `  ${ratio >= 0.8 ? 'ok  ' : 'SLOW'} traffic pipeline into MariaDB: ${rate(t)}, ${fmtRatio(ratio)} the rate into SQLite (${rate(lite)}; target >= 0.8x)`,
      );
    }
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------- live

interface LiveResult {
  rate: number | 'top';
  tool: string;
  sent: number;
  actualPps: number | null;
  delivered: number;
  expected: number;
  /** The expectation is an estimate (the veth itself dropped some). */
  estimated: boolean;
  seen: number;
  /** The tool's own drop count, as it words it. */
  drops: string;
}

interface Netns {
  tx: string;
  rx: string;
}

function makeNetns(mtu: number): Netns {
  const ns = { tx: `riffbench-tx-${process.pid}`, rx: `riffbench-rx-${process.pid}` };
  // Registered first: a half-made setup is torn down too. Deleting a namespace
  // destroys the veth end inside it, and with it the pair.
  cleanups.push(() => {
    spawnSync('ip', ['netns', 'del', ns.tx], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', ns.rx], { stdio: 'ignore' });
  });
  const step = (args: string[]) => {
    const r = sh(args[0], args.slice(1));
    if (!r.ok) throw new Error(`${args.join(' ')}: ${r.out.trim()}`);
  };
  step(['ip', 'netns', 'add', ns.tx]);
  step(['ip', 'netns', 'add', ns.rx]);
  for (const n of [ns.tx, ns.rx]) {
    // No IPv6 means no router solicitations or DAD probes: the only packets
    // on the wire are the replayed ones, so counts compare exactly.
    step(['ip', 'netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
  step(['ip', '-n', ns.tx, 'link', 'add', 'vtx', 'type', 'veth', 'peer', 'name', 'vrx', 'netns', ns.rx]);
  step(['ip', '-n', ns.tx, 'link', 'set', 'vtx', 'mtu', String(mtu), 'up']);
  step(['ip', '-n', ns.rx, 'link', 'set', 'vrx', 'mtu', String(mtu), 'up']);
  return ns;
}

function rxPackets(ns: Netns): number {
  const r = sh('ip', ['-n', ns.rx, '-s', '-j', 'link', 'show', 'vrx']);
  return Number(JSON.parse(r.out)[0].stats64.rx.packets);
}

/** CPU ticks the process used so far; null once it is gone. */
function cpuTicks(pid: number): number | null {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return null;
  }
}

/**
 * Waits until a capturing process has worked through what the kernel
 * buffered: it is idle once its CPU time stops growing. Stopping it earlier
 * would count packets it was still going to read as lost.
 */
async function waitIdle(pid: number, maxMs = 30_000): Promise<void> {
  const t0 = Date.now();
  let last = cpuTicks(pid);
  let quiet = 0;
  while (Date.now() - t0 < maxMs && last !== null) {
    await sleep(200);
    const now = cpuTicks(pid);
    if (now === null) return;
    // A tick or so per poll is timers, not work.
    quiet = now - last <= 1 ? quiet + 1 : 0;
    last = now;
    if (quiet >= 3) return;
  }
}

interface LiveTool {
  name: string;
  argv: string[];
  /** Packets the tool says it saw, and its own drop figures. */
  parse: (stderr: string) => { seen: number | null; drops: string };
  /** BPF filter the tool applies (its expectation counts only matching packets). */
  filter: string | null;
}

async function liveStep(ns: Netns, tool: LiveTool, rate: number | 'top', file: string, sent: number, filtered: Scan | null): Promise<LiveResult> {
  const t0 = Date.now();
  let ready: () => void = () => {};
  const listening = new Promise<void>((r) => (ready = r));
  let child: ChildProcess | null = null;
  let err = '';
  const done = run('ip', ['netns', 'exec', ns.rx, ...tool.argv], {
    stdout: 'null',
    started: (c) => {
      child = c;
      c.stderr!.on('data', (d: Buffer) => {
        err += d.toString('latin1');
        if (/listening on/.test(err)) ready();
      });
    },
  });
  const timeout = sleep(60_000).then(() => 'timeout');
  if ((await Promise.race([listening.then(() => 'ok'), done.then(() => 'exited'), timeout])) !== 'ok') {
    (child as ChildProcess | null)?.kill('SIGKILL');
    const d = await done;
    throw new Error(`${tool.name} did not start listening: ${d.stderr.trim().slice(0, 400)}`);
  }
  const pid = (child as unknown as ChildProcess).pid!;
  const dbg = process.env.BENCH_DEBUG ? (what: string) => log(`    [${tool.name}] ${what} at ${(Date.now() - t0) / 1000}s`) : () => {};
  dbg('listening');
  const rx0 = rxPackets(ns);
  const rep = await run('ip', ['netns', 'exec', ns.tx, 'tcpreplay', '-i', 'vtx', rate === 'top' ? '--topspeed' : `--pps=${rate}`, file], { stdout: 'keep' });
  const repOut = rep.stdout + rep.stderr;
  if (rep.code !== 0) throw new Error(`tcpreplay failed: ${repOut.trim().slice(0, 400)}`);
  dbg('sent');
  // tcpdump reads TPACKET_V3 blocks, handed over when full or after libpcap's
  // 1 s timeout; stopped sooner, it never reads the last partial block.
  await sleep(1500);
  await waitIdle(pid);
  dbg('idle');
  const delivered = rxPackets(ns) - rx0;
  (child as unknown as ChildProcess).kill('SIGINT');
  const d = await done;
  dbg('exited');
  const { seen, drops } = tool.parse(d.stderr);
  const ok = num(/Successful packets:\s+(\d+)/, repOut) ?? sent;
  // With a filter, expect the matching packets among those delivered; when
  // the veth dropped some, which ones is unknown, so scale.
  let expected = delivered;
  let estimated = false;
  if (tool.filter && filtered) {
    estimated = delivered !== sent;
    expected = estimated ? Math.round((filtered.packets * delivered) / sent) : filtered.packets;
  }
  return {
    rate,
    tool: tool.name,
    sent: ok,
    actualPps: num(/Rated:.*?([\d.]+) pps/, repOut),
    delivered,
    expected,
    estimated,
    seen: seen ?? -1,
    drops,
  };
}

/**
 * Wire to Lua: riff prints each packet's kernel timestamp from Lua as it
 * runs, and the bench notes when the line arrives; the difference bounds
 * the delay from the kernel stamping the packet on vrx to Lua seeing it
 * (it includes the stdout pipe back to the bench).
 */
async function liveLatency(ns: Netns, file: string, immediate: boolean): Promise<number[]> {
  const lua = path.join(workDir, 'latency.lua');
  fs.writeFileSync(lua, "function buffer(p) io.write(riff.packet.sec, ' ', riff.packet.nsec, '\\n') end\n");
  const lags: number[] = [];
  let ready: () => void = () => {};
  const listening = new Promise<void>((r) => (ready = r));
  let child: ChildProcess | null = null;
  let pend = '';
  const done = run('ip', ['netns', 'exec', ns.rx, riffCmd, ...riffPre, '-q', '-i', 'vrx', '--lua', lua, ...(immediate ? ['--immediate-mode'] : [])], {
    stdout: (out) =>
      out.on('data', (d: Buffer) => {
        const now = (performance.timeOrigin + performance.now()) / 1000;
        pend += d.toString('latin1');
        const lines = pend.split('\n');
        pend = lines.pop()!;
        for (const l of lines) {
          const [sec, nsec] = l.split(' ').map(Number);
          lags.push((now - (sec + nsec / 1e9)) * 1000);
        }
      }),
    started: (c) => {
      child = c;
      c.stderr!.on('data', (d: Buffer) => /listening on/.test(d.toString()) && ready());
    },
  });
  await Promise.race([listening, sleep(30_000)]);
  await run('ip', ['netns', 'exec', ns.tx, 'tcpreplay', '-i', 'vtx', '--pps=20', '--limit=60', file]);
  await sleep(500);
  (child as ChildProcess | null)?.kill('SIGINT');
  await done;
  return lags.sort((a, b) => a - b);
}

async function live(o: Opts, cap: Capture): Promise<string | null> {
  log('\nlive:');
  if (!isRoot) {
    log('  skipped: needs root (network namespaces, veth, raw capture)');
    return null;
  }
  const missing = ensurePackages([
    { pkg: 'tcpreplay', present: () => has('tcpreplay') },
    { pkg: 'iproute2', present: () => has('ip') },
    { pkg: 'procps', present: () => has('sysctl') },
  ]);
  if (missing.size) {
    log(`  skipped: ${[...missing].join(', ')} missing`);
    return null;
  }
  let ns: Netns;
  try {
    ns = makeNetns(Math.max(1500, Math.min(65535, cap.maxLen - 14)));
  } catch (e) {
    log(`  skipped: could not set up the namespaces: ${(e as Error).message}`);
    return null;
  }
  log(`  veth vtx (netns ${ns.tx}) -> vrx (netns ${ns.rx}); tcpreplay sends on vtx, the tools capture on vrx`);

  const emptyLua = path.join(workDir, 'empty.lua');
  if (!fs.existsSync(emptyLua)) fs.writeFileSync(emptyLua, 'buffer = function(p) end\n');
  const riffParse = (s: string) => {
    const ring = num(/(\d+) packets dropped at the ring/, s);
    const kernel = num(/(\d+) packets dropped by kernel/, s);
    const drops = [kernel === null ? '' : `${kernel} by kernel`, ring === null ? '' : `${ring} at riff's ring`].filter(Boolean).join(', ');
    return { seen: num(/(\d+) packets captured/, s), drops };
  };
  // The seed's config.lua sets a BPF filter, applied in the kernel: find it
  // with a one-packet run so the expectation counts only what it passes.
  const probe = await run(riffCmd, [...riffPre, '-q', '-r', cap.file, '-c', '1', '--lua', SEED]);
  const seedFilter = /filter from config\.lua: (.*)/.exec(probe.stderr)?.[1]?.trim() || null;
  const tools: LiveTool[] = [
    { name: 'riff seed', argv: [riffCmd, ...riffPre, '-q', '-i', 'vrx', '--lua', SEED], parse: riffParse, filter: seedFilter },
    { name: 'riff empty', argv: [riffCmd, ...riffPre, '-q', '-i', 'vrx', '--lua', emptyLua], parse: riffParse, filter: null },
    {
      name: 'tcpdump',
      argv: ['tcpdump', '-i', 'vrx', '-w', '/dev/null'],
      parse: (s) => {
        const k = num(/(\d+) packets? dropped by kernel/, s);
        return { seen: num(/(\d+) packets? captured/, s), drops: k === null ? '' : `${k} by kernel` };
      },
      filter: null,
    },
  ];

  const results: LiveResult[] = [];
  const filteredBy = new Map<string, Scan | null>();
  try {
    for (const rate of o.pps) {
      const n = Math.min(cap.packets, rate === 'top' ? o.livePackets : Math.max(1000, Math.min(o.livePackets, Math.round(rate * o.liveSeconds))));
      const pf = await prefix(cap.file, cap.packets, n, workDir);
      if (seedFilter && !filteredBy.has(pf)) filteredBy.set(pf, await scanFiltered(pf, seedFilter));
      for (const t of tools) {
        const r = await liveStep(ns, t, rate, pf, n, t.filter ? filteredBy.get(pf) ?? null : null);
        results.push(r);
        const lost = r.expected - r.seen;
        log(
          `  ${(rate === 'top' ? 'top speed' : `${fmtRate(rate)} pps`).padEnd(11)} ${t.name.padEnd(11)} sent ${r.sent} at ${r.actualPps !== null ? fmtRate(r.actualPps) : '?'} pps, ` +
            `seen ${r.seen} of ${r.estimated ? '~' : ''}${r.expected}${lost ? `, lost ${lost}` : ''}${r.drops ? ` (${r.drops})` : ''}`,
        );
      }
    }
  } catch (e) {
    log(`  stopped: ${(e as Error).message}`);
  }
  if (results.length === 0) return null;
  const lat: string[] = [];
  try {
    const pf = await prefix(cap.file, cap.packets, 1000, workDir);
    for (const immediate of [false, true]) {
      const l = await liveLatency(ns, pf, immediate);
      if (!l.length) continue;
      const q = (f: number) => l[Math.min(l.length - 1, Math.floor(f * l.length))].toFixed(2);
      lat.push(`wire to Lua${immediate ? ' with --immediate-mode' : ' (default, libpcap timeout 10 ms)'}: median ${q(0.5)} ms, 90% ${q(0.9)} ms, max ${l[l.length - 1].toFixed(2)} ms over ${l.length} packets at 20/s`);
      log(`  ${lat[lat.length - 1]}`);
    }
  } catch (e) {
    log(`  latency not measured: ${(e as Error).message}`);
  }

  const rows = results.map((r) => {
    const lost = r.expected - r.seen;
    return [
      r.rate === 'top' ? 'top' : fmtRate(r.rate),
      r.tool,
      String(r.sent),
      r.actualPps !== null ? fmtRate(r.actualPps) : '?',
      `${r.estimated ? '~' : ''}${r.expected}`,
      String(r.seen),
      String(lost),
      `${((100 * Math.max(0, lost)) / Math.max(1, r.expected)).toFixed(2)}%`,
      r.delivered === r.sent ? '' : `veth dropped ${r.sent - r.delivered}`,
      r.drops,
    ];
  });
  const lines = [
    table(['rate', 'tool', 'sent', 'actual pps', 'expected', 'seen', 'lost', 'loss', 'wire', 'own drop count'], rows, 2),
    '',
    `expected: packets delivered to vrx${seedFilter ? `; for riff seed only those passing its config.lua filter '${seedFilter}'` : ''}`,
    "own drop count: libpcap's kernel drop counter (both tools) and riff's ring to the Lua workers; 'lost' counts against what reached vrx",
  ];
  for (const t of tools) {
    const mine = results.filter((r) => r.tool === t.name);
    // Loss comes from stalls that overflow a buffer, so it is not monotonic in
    // the rate: claim a rate only when every slower step was clean too.
    const paced = mine.filter((r) => r.rate !== 'top');
    const firstLoss = paced.findIndex((r) => r.seen !== r.expected);
    const upTo = (firstLoss < 0 ? paced : paced.slice(0, firstLoss)).map((r) => r.actualPps ?? (r.rate as number));
    const laterClean = firstLoss < 0 ? [] : paced.slice(firstLoss + 1).filter((r) => r.seen === r.expected);
    const top = mine.find((r) => r.rate === 'top');
    lines.push(
      `${t.name.padEnd(11)} highest rate with zero loss: ${upTo.length ? `${fmtRate(Math.max(...upTo))} pps` : 'none of those tried'}` +
        (laterClean.length ? ` (then loss at ${fmtRate(paced[firstLoss].rate as number)}, none again at ${laterClean.map((r) => fmtRate(r.rate as number)).join(', ')})` : '') +
        (top ? `; at top speed (${top.actualPps !== null ? fmtRate(top.actualPps) : '?'} pps) lost ${top.expected - top.seen} of ${top.expected} (${((100 * Math.max(0, top.expected - top.seen)) / Math.max(1, top.expected)).toFixed(2)}%)` : ''),
    );
  }
  return [...lines, ...lat].join('\n');
}

// ---------------------------------------------------------------- start-up

const STARTUP_FILE = path.join(ROOT, 'fixtures', 'http.pcap');

/**
 * What a short run costs before and after its packets: riff on a 45-packet
 * file beside node doing nothing (node -e 0: the floor any Node program
 * pays) and tcpdump reading the same file. The commands take turns, run by
 * run, so a machine busy with something else slows each alike; min and
 * median of each, and riff's ratio to node -e 0 from both. riff's count of
 * packets processed is checked against the file's.
 */
async function startup(o: Opts, checks: Checks): Promise<string | null> {
  const rel = path.relative(ROOT, STARTUP_FILE);
  const cmds: { label: string; cmd: string; args: string[]; secs: number[]; failed?: string }[] = [
    { label: 'node -e 0', cmd: NODE, args: ['-e', '0'], secs: [] },
    // As users run it: the bin through its #! line (env, node's start-up flag).
    { label: `riff -q -r ${rel}`, cmd: RIFF, args: ['-q', '-r', STARTUP_FILE], secs: [] },
    { label: `node dist/riff.cjs -q -r ${rel}`, cmd: NODE, args: [RIFF, '-q', '-r', STARTUP_FILE], secs: [] },
    { label: `tcpdump -r ${rel}`, cmd: 'tcpdump', args: ['-r', STARTUP_FILE], secs: [] },
  ];
  // Node parses NODE_EXTRA_CA_CERTS's certificates before any program's
  // first line, node -e 0's too; riff's #! line unsets it (src/riff.ts). Where
  // it is set, the floor without it is shown as well, so neither figure hides.
  const caSet = !!process.env.NODE_EXTRA_CA_CERTS;
  if (caSet) cmds.splice(1, 0, { label: 'node -e 0, NODE_EXTRA_CA_CERTS unset', cmd: 'env', args: ['-u', 'NODE_EXTRA_CA_CERTS', NODE, '-e', '0'], secs: [] });
  const want = (await scanFile(STARTUP_FILE))?.packets ?? null;
  log(`
start-up (${rel}, ${want ?? '?'} packets), ${o.startupRuns} runs each, taking turns:`);
  for (let i = 0; i < o.startupRuns; i++) {
    for (const c of cmds) {
      if (c.failed) continue;
      const d = await run(c.cmd, c.args, { stdout: 'null' });
      if (d.code !== 0) {
        c.failed = `exit ${d.code ?? d.signal}: ${d.stderr.trim().split('\n').slice(0, 2).join(' / ').slice(0, 300)}`;
        failures.push(`${c.label}: ${c.failed}`);
        continue;
      }
      if ((c.cmd === RIFF || c.args[0] === RIFF) && i === 0) check(checks, `${c.label}: packets processed`, num(/(\d+) packets processed by Lua/, d.stderr), want, 'the file');
      c.secs.push(d.secs);
    }
  }
  const node = cmds[0];
  if (node.failed || !node.secs.length) return null;
  const rows = cmds
    .filter((c) => c.secs.length)
    .map((c) => [c.label, `${min(c.secs).toFixed(3)}s`, `${median(c.secs).toFixed(3)}s`, fmtRatio(min(c.secs) / min(node.secs)), fmtRatio(median(c.secs) / median(node.secs))]);
  for (const r of rows) log(`  ${r[0].padEnd(34)} min ${r[1]}, median ${r[2]}, ${r[3]} node -e 0`);
  const text = table(['command', 'min', 'median', 'min / node', 'median / node'], rows);
  const bare = cmds[1];
  if (!caSet || !bare.secs.length) return text;
  const riffRow = cmds.find((c) => c.cmd === RIFF && c.secs.length);
  return `${text}
NODE_EXTRA_CA_CERTS is set here (${process.env.NODE_EXTRA_CA_CERTS}): node -e 0 parses its certificates
at every start (${((min(node.secs) - min(bare.secs)) * 1000).toFixed(0)} ms at the min); riff's #! line unsets it (riff verifies no certificate).${
    riffRow ? `\nAgainst node -e 0 without it: riff ${fmtRatio(min(riffRow.secs) / min(bare.secs))} from the min, ${fmtRatio(median(riffRow.secs) / median(bare.secs))} from the median.` : ''
  }`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  if (!fs.existsSync(RIFF)) die(`${RIFF} is missing: build riff first (npm run build:ts)`);
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'riff-bench-run-'));
  cleanups.push(() => fs.rmSync(workDir, { recursive: true, force: true }));

  const missing = ensurePackages([
    { pkg: 'tcpdump', present: () => has('tcpdump') },
    { pkg: 'time', present: () => fs.existsSync(TIME) },
    ...(o.tshark && !o.liveOnly && !o.startupOnly ? [{ pkg: 'tshark', present: () => has('tshark') }] : []),
    ...(o.python && !o.liveOnly && !o.startupOnly ? [{ pkg: 'python3-scapy', present: () => sh(PY, ['-c', 'import scapy.all']).ok }] : []),
  ]);
  if (missing.has('tcpdump')) die('tcpdump is needed (for prefixes, filtered counts and the baseline) and could not be installed', 1);
  haveTime = fs.existsSync(TIME);
  if (!haveTime) log('bench: no GNU time: peak RSS is not reported');

  const checks: Checks = { lines: [], failed: 0 };
  let rows: Row[] = [];
  let liveText: string | null = null;
  let cap: Capture | null = null;
  if (!o.startupOnly) {
    cap = await getCapture(o);
    log(`  ${cap.packets} packets, ${cap.matches} containing "pcap", largest ${cap.maxLen} bytes`);
    rows = o.liveOnly ? [] : await offline(o, cap, checks);
    liveText = o.live ? await live(o, cap) : null;
  }
  const startText = o.liveOnly ? null : await startup(o, checks);

  const out: string[] = [];
  for (const f of failures) checks.lines.unshift(`  FAIL ${f}`);
  if (checks.lines.length) out.push('checks:', ...checks.lines, '');
  if (checks.failed || failures.length) {
    // Said before the tables, so the output still ends with the table.
    out.push(`bench: ${checks.failed} count check(s) and ${failures.length} run(s) FAILED (see checks above)`, '');
    process.exitCode = 1;
  }
  if (liveText) out.push(`live (tcpreplay into a veth pair, per step at most ${o.livePackets} packets):`, liveText, '');
  if (startText) {
    out.push(`start-up: ${o.startupRuns} runs of each, taking turns; ratios to node -e 0 from the min and from the median`, startText, '');
  }
  if (rows.length && cap) {
    out.push(
      `offline, ${cap.packets} packets (${path.basename(cap.file)}), ${o.runs} run${o.runs > 1 ? 's' : ''} each; packets/s from the min; ` +
        'ratios are packets/s over tcpdump\'s and tshark\'s; peak RSS by GNU time',
      offlineTable(rows),
    );
  }
  console.log('\n' + out.join('\n'));
}

main().catch((e) => {
  console.error(`bench: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
});
