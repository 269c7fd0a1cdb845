// Shared by the tests: run the riff CLI as a user would, find fixtures.
import { spawnSync, spawn, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The `riff` command as installed: the build's bundle (scripts/bundle.ts).
export const CLI = path.join(ROOT, 'dist', 'riff.cjs');
export const FIXTURES = path.join(ROOT, 'fixtures');
// Captures from tcpdump's test suite, carried in the repository (fixtures/corpus/README.md):
// a test that needs another one copies it here, with its EXPECTED.tsv row.
export const CORPUS = path.join(FIXTURES, 'corpus');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export function riff(args: string[], opts: SpawnSyncOptions = {}): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, TZ: 'UTC' },
    maxBuffer: 256 << 20,
    timeout: 120_000,
    ...opts,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout as Buffer, stderr: String(r.stderr) };
}

/** Start riff in the background (live capture, signals). */
export function riffAsync(args: string[], opts: Parameters<typeof spawn>[2] = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, TZ: 'UTC' },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...opts,
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  const done = new Promise<Run>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err })),
  );
  return { child, done, stderr: () => err };
}

// Every test file runs in its own process: what it made under /tmp goes when it exits.
const made: string[] = [];
process.on('exit', () => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

export function tmpdir(prefix = 'riff-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Write files (path → content) under a fresh directory; returns it. */
export function tree(files: Record<string, string | Buffer>): string {
  const dir = tmpdir();
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), content);
  }
  return dir;
}

export const isRoot = process.getuid?.() === 0;

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Lines of the report riff prints per packet, parsed from stdout. */
export function reportIds(stdout: Buffer): number[] {
  return [...stdout.toString('latin1').matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
}

/** A classic pcap file header (little-endian, microseconds). */
export function pcapHeader(linktype = 1, snaplen = 65535): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeUInt32LE(snaplen, 16);
  h.writeUInt32LE(linktype, 20);
  return h;
}
