// tcpdump's everyday flags, checked and turned into what riff's live
// capture and pcap writer take: -s -p -B -Q -y -F -Z -U -C -G -W,
// --immediate-mode, --time-stamp-precision. A flag that cannot apply says so
// in one line (FlagError), as riff does for any bad option.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { PcapWriterOptions } from './outputs/pcap-writer.js';

export class FlagError extends Error {
  constructor(
    message: string,
    readonly code: 1 | 2,
  ) {
    super(message);
  }
}

export interface TcpdumpArgs {
  i?: string;
  r?: string;
  w?: string;
  s?: number;
  p?: boolean;
  B?: number;
  Q?: string;
  y?: string;
  F?: string;
  Z?: string;
  U?: boolean;
  C?: string;
  G?: number;
  W?: number;
  'immediate-mode'?: boolean;
  'time-stamp-precision'?: string;
}

export interface Flags {
  /** -F's expression, comments blanked as tcpdump does. */
  filterFile: string;
  precision: 'micro' | 'nano' | null;
  direction: number | undefined;
  snaplen: number;
  /** -B: live capture's kernel buffer. */
  bufferKiB: number;
  rotation: PcapWriterOptions;
}

const LIVE_ONLY: [keyof TcpdumpArgs, string][] = [
  ['s', '-s'],
  ['B', '-B'],
  ['p', '-p'],
  ['Q', '-Q'],
  ['y', '-y'],
  ['immediate-mode', '--immediate-mode'],
];

/** Parse C's -C: a count of 1,000,000 bytes, or with k/m/g 1024-based units (tcpdump 4.99). */
function rotateBytes(v: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(v.trim());
  if (!m || Number(m[1]) < 1) throw new FlagError(`-C: '${v}' is not a file size (a number of million bytes, or with k, m or g)`, 2);
  const unit = { '': 1_000_000, k: 1024, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * unit;
}

export function tcpdumpFlags(a: TcpdumpArgs): Flags {
  if (a.r !== undefined) {
    for (const [k, name] of LIVE_ONLY)
      if (a[k] !== undefined && a[k] !== false) throw new FlagError(`${name} applies to live capture (-i IFACE), not to -r`, 2);
  }
  const snaplen = a.s ?? 262144;
  if (!Number.isInteger(snaplen) || snaplen < 0 || snaplen > 262144) throw new FlagError(`-s: '${a.s}' is not a snapshot length (0 to 262144; 0 means 262144)`, 2);
  const bufferKiB = a.B ?? 32768;
  if (!Number.isInteger(bufferKiB) || bufferKiB < 1) throw new FlagError(`-B: '${a.B}' is not a buffer size in KiB`, 2);
  let direction: number | undefined;
  if (a.Q !== undefined) {
    direction = { inout: 0, in: 1, out: 2 }[a.Q];
    if (direction === undefined) throw new FlagError(`-Q: '${a.Q}' is not a direction; give in, out or inout`, 2);
  }
  const tp = a['time-stamp-precision'];
  if (tp !== undefined && tp !== 'micro' && tp !== 'nano')
    throw new FlagError(`--time-stamp-precision: '${tp}' is not a precision; give micro or nano`, 2);
  let filterFile = '';
  if (a.F !== undefined) {
    try {
      filterFile = fs.readFileSync(a.F, 'utf8');
    } catch (e) {
      throw new FlagError(`-F ${a.F}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 2);
    }
    // tcpdump blanks '#' to the end of the line.
    filterFile = filterFile.replace(/#[^\n]*/g, ' ').replace(/\s+/g, ' ').trim();
  }
  const rotation: PcapWriterOptions = {};
  if (a.C !== undefined) rotation.rotateBytes = rotateBytes(String(a.C));
  if (a.G !== undefined) {
    if (!Number.isInteger(a.G) || a.G < 1) throw new FlagError(`-G: '${a.G}' is not a number of seconds`, 2);
    rotation.rotateSeconds = a.G;
  }
  if (a.W !== undefined) {
    if (!Number.isInteger(a.W) || a.W < 1) throw new FlagError(`-W: '${a.W}' is not a file count`, 2);
    if (a.C === undefined && a.G === undefined) throw new FlagError('-W needs -C or -G: it counts rotated -w files', 2);
    rotation.files = a.W;
  }
  if ((a.C !== undefined || a.G !== undefined) && a.w === undefined) throw new FlagError(`${a.C !== undefined ? '-C' : '-G'} rotates -w files: give -w FILE`, 2);
  if ((a.C !== undefined || a.G !== undefined) && a.w === '-') throw new FlagError('-C and -G rotate files; -w - is standard output', 2);
  if (a.Z !== undefined) userOf(a.Z);
  return { filterFile, precision: (tp as 'micro' | 'nano' | undefined) ?? null, direction, snaplen: snaplen || 262144, bufferKiB, rotation };
}

/** uid, gid of a user by name (getent: local files, LDAP, whatever NSS knows). */
function userOf(user: string): { uid: number; gid: number } {
  let line = '';
  try {
    // child_process (and the sockets it loads) only for -Z.
    const { execFileSync } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
    line = execFileSync('getent', ['passwd', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    throw new FlagError(`-Z ${user}: no such user`, 2);
  }
  const f = line.trim().split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** -Z: give up root once the capture is open, as tcpdump does (the -w file is opened after, so it is USER's). */
export function dropPrivileges(user: string | undefined): void {
  if (user === undefined) return;
  const { uid, gid } = userOf(user);
  try {
    const posix = process as unknown as { initgroups(u: string, g: number): void; setgid(g: number): void; setuid(u: number): void };
    posix.initgroups(user, gid);
    posix.setgid(gid);
    posix.setuid(uid);
  } catch (e) {
    throw new FlagError(`-Z ${user}: cannot change to that user (${(e as Error).message}); it needs root`, 1);
  }
}

/** A microsecond pcap (its magic says so): -w keeps microseconds. Anything else (nanosecond pcap, pcapng, stdin) is written in nanoseconds, never rounded. */
export function microPcap(file: string): boolean {
  if (file === '-') return false;
  try {
    const fd = fs.openSync(file, 'r');
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 0);
    fs.closeSync(fd);
    return b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32BE(0) === 0xa1b2c3d4;
  } catch {
    return false;
  }
}


/** tcpdump's three counter lines, then riff's own: what became of every packet the kernel's filter passed. */
export function kernelLines(k: LiveStatsLike, captured: number, loopback: boolean): string[] {
  const lines = [
    `${k.received} packets received by filter`,
    `${k.droppedByKernel} packets dropped by kernel`,
    `${k.droppedByInterface} packets dropped by interface`,
  ];
  const unread = k.received - k.droppedByKernel - captured;
  // On loopback the kernel counts each packet twice, as its outgoing and its
  // incoming copy, and libpcap drops the outgoing one (tcpdump shows the same).
  if (loopback) lines.push('(on a loopback interface the kernel counts each packet twice: sent and received)');
  else if (unread > 0) lines.push(`${unread} packets received but not read (riff stopped first)`);
  return lines;
}

export interface LiveStatsLike {
  received: number;
  droppedByKernel: number;
  droppedByInterface: number;
}
