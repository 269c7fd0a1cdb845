// Flow-by-flow accuracy of plugin.app_id against nDPI (ndpiReader).
//
//   npm run build:ts && node dist/scripts/dpi-compare.js DIR_OR_FILE... [options]
//   node dist/scripts/dpi-compare.js fixtures/corpus /path/to/more/captures
//
// For every capture (.pcap, .pcapng, .cap; directories are walked), runs
//   ndpiReader -i FILE -v 2          (one line per flow: 5-tuple, [proto: M.A/Master.App], [Confidence: ...])
//   riff -q --lua scripts/dpi-compare.lua -r FILE -o json:-   (plugin.app_id's "app" records)
// (riff only where nDPI found TCP/UDP flows), matches the flows by protocol and the two endpoints
// (either order), and reports:
//   reference   TCP/UDP flows nDPI names (not Unknown)
//   named       of those, flows riff names
//   right       of those, flows where riff's name is nDPI's: riff's app or master equals nDPI's
//               app or master (TLS.Google against Google/TLS, or TLS against TLS.Google), after
//               the aliases below; "exact" counts riff's app equal to nDPI's most specific name
//   recall      right / reference          precision   right / named
// then the misses and the wrong names as nDPI name -> riff name (or "-") with counts and an
// example file, and the flows riff names where nDPI says Unknown (not counted either way).
//
// Options:
//   --dpi-only        reference = flows nDPI named by DPI only (not "Match by port" guesses)
//   --ndpi PATH       ndpiReader to run (default: ndpiReader on PATH; Debian: libndpi-bin)
//   --jobs N          captures processed at once (default 2)
//   --json FILE       every flow compared, as JSON lines, for a closer look
//   --top N           lines of each confusion list (default 40)
// Exit status 0 when the comparison ran (whatever the figures), 2 on bad arguments.
//
// The aliases: where riff spells an application differently from nDPI 4.2 (Debian's libndpi-bin),
// nDPI's name on the left, riff's on the right. README.md lists them.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RIFF = path.join(ROOT, 'dist', 'riff.cjs');
const SCRIPT = path.join(ROOT, 'scripts', 'dpi-compare.lua');

/** nDPI 4.2's name -> riff's name, where they differ. */
export const ALIASES: Record<string, string> = {
  IPsec: 'IPSec', // renamed after 4.2; riff spells it as nDPI does now
  Hotmail: 'Outlook', // nDPI 4.3 folded Hotmail into Outlook
  DCE_RPC: 'DCERPC', // renamed after 4.2; riff spells it as nDPI does now
  SkypeCall: 'Skype_Teams', // later nDPI: Skype_TeamsCall; riff names the service
  Starcraft: 'Blizzard', // later nDPI names Battle.net's traffic Blizzard
  LotusNotes: 'HCL_Notes', // renamed after 4.2; riff spells it as nDPI does now
  'Z39.50': 'Z3950', // renamed after 4.2
  Collectd: 'collectd', // renamed after 4.2
  s7comm: 'S7Comm', // renamed after 4.2
};

interface Flow { key: string; app: string; master: string; confidence?: string; file: string; tuple: string }

function usage(msg: string): never {
  process.stderr.write(`dpi-compare: ${msg}\n`);
  process.exit(2);
}

function norm(name: string): string { return ALIASES[name] ?? name; }

// One address in a comparable spelling: ndpiReader's. It prints IPv6 as
// inet_ntop does (the longest run of two or more zero groups as "::"),
// then turns every remaining ":0:" into "::" (ndpi_patchIPv6Address), so
// fc00:502:400:0:10:32:0:69 reads fc00:502:400::10:32::69, which no parser
// takes back. riff's addresses are written the same way; nDPI's own with
// more than one "::" are already in that spelling.
export function addr(a: string): string {
  a = a.replace(/^\[|\]$/g, '').toLowerCase();
  if (!a.includes(':') || a.includes('.') || a.split('::').length > 2) return a;
  let s: string;
  try {
    // The URL standard writes IPv6 as inet_ntop does (RFC 5952).
    s = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  } catch {
    return a;
  }
  return s.replaceAll(':0:', '::');
}

function key(proto: string, a: string, ap: number, b: string, bp: number): string {
  const x = `${addr(a)}#${ap}`, y = `${addr(b)}#${bp}`;
  return `${proto.toLowerCase()}|${x < y ? x + '|' + y : y + '|' + x}`;
}

function endpoint(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [], err: Buffer[] = [];
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => err.push(b));
    p.on('error', (e) => resolve({ code: -1, out: '', err: String(e) }));
    p.on('close', (code) => resolve({ code, out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString() }));
  });
}

const LINE = /^\s*\d+\s+(TCP|UDP)\s+(\S+)\s+<?->\s+(\S+)\s.*?\[proto: [\d.]+\/([^\]]+)\](?:.*?\[Confidence: ([^\]]+)\])?/;

export function parseNdpi(text: string, file: string): Flow[] {
  const flows: Flow[] = [];
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const [a, ap] = endpoint(m[2]), [b, bp] = endpoint(m[3]);
    const parts = m[4].split('.');
    const app = norm(parts[parts.length - 1]), master = norm(parts.length > 1 ? parts[0] : parts[0]);
    flows.push({ key: key(m[1], a, ap, b, bp), app, master, confidence: m[5], file, tuple: `${m[1]} ${m[2]} ${m[3]}` });
  }
  return flows;
}

export function parseRiff(text: string, file: string): Flow[] {
  const flows: Flow[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let r: Record<string, unknown>;
    try { r = JSON.parse(line); } catch { continue; }
    if (r.type !== 'app') continue;
    const app = String(r.app), master = r.master ? String(r.master) : app;
    flows.push({
      key: key(String(r.proto), String(r.client_ip), Number(r.client_port), String(r.server_ip), Number(r.server_port)),
      app, master, file, tuple: `${r.proto} ${r.client_ip}:${r.client_port} ${r.server_ip}:${r.server_port}`,
    });
  }
  return flows;
}

function captures(args: string[]): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) usage(`${p}: no such file or directory (give capture files or directories of them)`);
    if (st.isDirectory()) {
      for (const e of fs.readdirSync(p).sort()) walk(path.join(p, e));
    } else if (/\.(pcap|pcapng|cap)$/i.test(p)) out.push(p);
  };
  for (const a of args) walk(a);
  return out;
}

class Count extends Map<string, { n: number; example: string }> {
  add(k: string, example: string) {
    const c = this.get(k);
    if (c) c.n++; else this.set(k, { n: 1, example });
  }
  lines(top: number): string[] {
    return [...this].sort((a, b) => b[1].n - a[1].n || (a[0] < b[0] ? -1 : 1)).slice(0, top)
      .map(([k, v]) => `  ${String(v.n).padStart(5)}  ${k}   (e.g. ${v.example})`);
  }
}

async function main() {
  const argv = process.argv.slice(2);
  const dirs: string[] = [];
  let ndpi = 'ndpiReader', jobs = 2, top = 40, dpiOnly = false, jsonOut: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { const v = argv[++i]; if (v === undefined) usage(`${a} needs a value`); return v; };
    if (a === '--ndpi') ndpi = val();
    else if (a === '--jobs') jobs = Number(val());
    else if (a === '--top') top = Number(val());
    else if (a === '--json') jsonOut = val();
    else if (a === '--dpi-only') dpiOnly = true;
    else if (a.startsWith('--')) usage(`unknown option ${a} (--dpi-only, --ndpi PATH, --jobs N, --json FILE, --top N)`);
    else dirs.push(a);
  }
  if (!dirs.length) usage('give capture files or directories (e.g. fixtures/corpus)');
  if (!(jobs >= 1 && jobs <= 64) || !(top >= 0)) usage('--jobs takes 1-64, --top a count');
  if (!fs.existsSync(RIFF)) usage(`${RIFF} missing: run npm run build:ts first`);
  const files = captures(dirs);
  if (!files.length) usage('no .pcap/.pcapng/.cap files under ' + dirs.join(' '));
  const probe = await run(ndpi, ['-h']);
  if (probe.code === -1) usage(`cannot run ${ndpi} (apt-get install libndpi-bin, or --ndpi PATH)`);

  const ref: Flow[] = [], mine: Flow[] = [];
  const failed: string[] = [];
  let next = 0, skipped = 0;
  const worker = async () => {
    while (next < files.length) {
      const f = files[next++];
      const n = await run(ndpi, ['-i', f, '-v', '2']);
      const flows = parseNdpi(n.out, f);
      ref.push(...flows);
      // A capture where nDPI sees no TCP/UDP flow has nothing to compare: riff is not run on it.
      if (!flows.length) { skipped++; continue; }
      const r = await run(process.execPath, [RIFF, '-q', '--lua', SCRIPT, '-r', f, '-o', 'json:-']);
      mine.push(...parseRiff(r.out, f));
      if (r.code !== 0) failed.push(`${f}: riff exit ${r.code}: ${r.err.trim().split('\n')[0] ?? ''}`);
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));

  // Flows by file and key; the first record of a key in a file stands for it.
  const byKey = new Map<string, Flow>();
  for (const f of mine) { const k = f.file + '\0' + f.key; if (!byKey.has(k)) byKey.set(k, f); }
  const refKeys = new Set(ref.map((f) => f.file + '\0' + f.key));
  const seen = new Set<string>();
  let reference = 0, named = 0, right = 0, exact = 0, refUnknown = 0;
  const misses = new Count(), wrong = new Count(), extra = new Count(), perApp = new Map<string, [number, number]>();
  const json: string[] = [];
  for (const f of ref) {
    const k = f.file + '\0' + f.key;
    if (seen.has(k)) continue;
    seen.add(k);
    const r = byKey.get(k);
    const known = f.app !== 'Unknown' && !(dpiOnly && f.confidence !== 'DPI');
    if (!known) {
      if (f.app === 'Unknown' && r) { refUnknown++; extra.add(r.app, `${path.basename(f.file)} ${f.tuple}`); }
      continue;
    }
    reference++;
    const label = f.master !== f.app ? `${f.master}.${f.app}` : f.app;
    const pa = perApp.get(label) ?? [0, 0];
    pa[0]++;
    let ok = false;
    if (r) {
      named++;
      ok = [r.app, r.master].some((x) => x === f.app || x === f.master);
      if (ok) { right++; pa[1]++; if (r.app === f.app) exact++; }
      else wrong.add(`${label} -> ${r.app}${r.master !== r.app ? '/' + r.master : ''}`, `${path.basename(f.file)} ${f.tuple}`);
    } else misses.add(`${label} -> -`, `${path.basename(f.file)} ${f.tuple}`);
    perApp.set(label, pa);
    if (jsonOut) json.push(JSON.stringify({ file: f.file, flow: f.tuple, ndpi: label, confidence: f.confidence, riff: r ? r.app : null, riff_master: r?.master ?? null, right: ok }));
  }
  let orphan = 0;
  for (const k of byKey.keys()) if (!refKeys.has(k)) orphan++;
  if (jsonOut) fs.writeFileSync(jsonOut, json.join('\n') + '\n');

  const pct = (a: number, b: number) => (b ? (100 * a / b).toFixed(1) + '%' : 'n/a');
  const out = [
    `captures ${files.length} (${skipped} without TCP/UDP flows for nDPI, not given to riff; ${failed.length} riff runs failed); flows nDPI names${dpiOnly ? ' by DPI' : ''}: ${reference}`,
    `riff names ${named} of them, ${right} the same (${exact} with nDPI's most specific name)`,
    `recall ${pct(right, reference)}  precision ${pct(right, named)}  (exact: recall ${pct(exact, reference)})`,
    `riff also names ${refUnknown} flows nDPI calls Unknown, and ${orphan} flows nDPI has not as TCP/UDP flows`,
    '', 'misses (nDPI name -> riff unnamed):', ...misses.lines(top),
    '', 'wrong (nDPI name -> riff name):', ...wrong.lines(top),
    '', 'riff names, nDPI Unknown:', ...extra.lines(top),
    '', 'per nDPI name (flows, riff right):',
    ...[...perApp].sort((a, b) => b[1][0] - a[1][0]).slice(0, top).map(([k, [n, ok]]) => `  ${String(n).padStart(5)} ${String(ok).padStart(5)}  ${k}`),
  ];
  if (failed.length) out.push('', 'riff runs that failed:', ...failed.slice(0, top).map((l) => '  ' + l));
  process.stdout.write(out.join('\n') + '\n');
}

// Run as a script, not when a test imports the parsers.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => { process.stderr.write(`dpi-compare: ${e instanceof Error ? e.message : e}\n`); process.exit(1); });
}
