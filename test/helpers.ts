// Shared by the tests: run the riff CLI as a user would, find fixtures.
import { spawnSync, spawn, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ETHERTYPE, IPPROTO, PcapFileWriter, ethernet, framesInTurn, ipv4, ipv6, tcp, udp } from '../scripts/lib/craft.js';

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

/**
 * A capture of TCP and UDP flows (IPv4 and IPv6) whose two directions are
 * carried differently: plain, VLAN, QinQ, MPLS, PPPoE, GRE, IP in IP (6in4),
 * VXLAN and Geneve (a new outer source port for every packet), every other
 * IPv6 flow with a destination options header one way. A flow is what the
 * decoder keys it on, the innermost IP header and its ports; a switch that
 * tags one side, labels or a tunnel one way only, a VXLAN endpoint's
 * source port all differ outside it. Returns how many flows.
 */
export function writeEncapCapture(file: string): number {
  const w = new PcapFileWriter(file);
  const put = framesInTurn(w);
  const M = { dst: '02:00:00:00:00:02', src: '02:00:00:00:00:01' };
  const eth = (type: number, p: Uint8Array, vlan?: number | { id: number; tpid: number }) => ethernet({ ...M, type, vlan }, p);
  const cat = (...p: Uint8Array[]) => Buffer.concat(p);
  const hdr = (...b: number[]) => Buffer.from(b);
  let outerPort = 20000;
  // Outer headers: each takes an inner IP packet (v4 or v6) and gives an Ethernet frame.
  const ET = (v6: boolean) => (v6 ? 0x86dd : ETHERTYPE.IPV4);
  const wraps: Record<string, (ip: Buffer, v6: boolean) => Buffer> = {
    plain: (ip, v6) => eth(ET(v6), ip),
    vlan: (ip, v6) => eth(ET(v6), ip, 100),
    qinq: (ip, v6) => eth(0x8100, cat(hdr(0, 200, ...(v6 ? [0x86, 0xdd] : [8, 0])), ip), { id: 300, tpid: 0x88a8 }),
    mpls: (ip) => eth(0x8847, cat(hdr(0, 1, 0x00, 64, 0, 2, 0x01, 64), ip)),
    pppoe: (ip, v6) => eth(0x8864, cat(hdr(0x11, 0, 0, 7, (ip.length + 2) >> 8, (ip.length + 2) & 255, 0, v6 ? 0x57 : 0x21), ip)),
    gre: (ip, v6) => eth(ETHERTYPE.IPV4, ipv4({ src: '192.0.2.1', dst: '192.0.2.2', proto: 47 }, cat(hdr(0, 0, ...(v6 ? [0x86, 0xdd] : [8, 0])), ip))),
    ipip: (ip, v6) => eth(ETHERTYPE.IPV4, ipv4({ src: '192.0.2.3', dst: '192.0.2.4', proto: v6 ? 41 : 4 }, ip)),
    vxlan: (ip, v6) => {
      const o = { src: '192.0.2.5', dst: '192.0.2.6', sport: outerPort++, dport: 4789 };
      return eth(ETHERTYPE.IPV4, ipv4({ ...o, proto: IPPROTO.UDP }, udp(o, cat(hdr(8, 0, 0, 0, 0, 0, 42, 0), eth(ET(v6), ip)))));
    },
    geneve: (ip, v6) => {
      const o = { src: '192.0.2.7', dst: '192.0.2.8', sport: outerPort++, dport: 6081 };
      return eth(ETHERTYPE.IPV4, ipv4({ ...o, proto: IPPROTO.UDP }, udp(o, cat(hdr(0, 0, 0x65, 0x58, 0, 0, 43, 0), eth(ET(v6), ip)))));
    },
  };
  const kinds = Object.keys(wraps);
  let flows = 0;
  for (const v6 of [false, true])
    for (const there of kinds)
      for (const back of kinds) {
        if (there === back && there !== 'vxlan' && there !== 'geneve') continue;
        const i = flows++;
        const c = v6 ? `2001:db8::${(i + 1).toString(16)}` : `10.1.${i >> 8}.${i & 255}`;
        const s = v6 ? `2001:db8:1::${(i + 1).toString(16)}` : `10.2.${i >> 8}.${i & 255}`;
        const cp = 30000 + i;
        const sp = i % 2 ? 80 : 53;
        // TCP to port 80, UDP to 53; every other IPv6 flow with a destination options header one way.
        const l4 = (src: string, dst: string, a: number, b: number) =>
          sp === 80 ? tcp({ src, dst, sport: a, dport: b, seq: 1, flags: 0x18 }, hdr(1, 2, 3)) : udp({ src, dst, sport: a, dport: b }, hdr(1, 2, 3));
        const ip = (src: string, dst: string, a: number, b: number, ext: boolean) => {
          const p = l4(src, dst, a, b);
          if (!v6) return ipv4({ src, dst, proto: sp === 80 ? IPPROTO.TCP : IPPROTO.UDP }, p);
          if (!ext) return ipv6({ src, dst, nextHeader: sp === 80 ? IPPROTO.TCP : IPPROTO.UDP }, p);
          return ipv6({ src, dst, nextHeader: 60 }, cat(hdr(sp === 80 ? IPPROTO.TCP : IPPROTO.UDP, 0, 1, 4, 0, 0, 0, 0), p));
        };
        for (let k = 0; k < 3; k++) {
          put(wraps[there](ip(c, s, cp, sp, v6 && i % 2 === 0), v6));
          put(wraps[back](ip(s, c, sp, cp, false), v6));
        }
      }
  w.close();
  return flows;
}
