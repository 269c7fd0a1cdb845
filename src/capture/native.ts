// riff's addon (src/capture/native/riff_pcap.c): libpcap's filter compiler and
// interpreter, and a plain memcpy into shared memory. It is built by
// `npm run build`; without it riff still reads files, unfiltered.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Native {
  compile(expr: string, linktype: number, snaplen: number, optimize: boolean, swapped?: boolean): Buffer;
  apply(program: Buffer, batch: Buffer, count: number, bytes: number, linktype?: number, others?: Uint32Array): number;
  dlt(linktype: number): number;
  version(): string;
  /** memcpy(dst + t[3i+1], src + t[3i], t[3i+2]) for i < n, bounds-checked. */
  copy(dst: Uint8Array, src: Uint8Array, triples: Uint32Array, n: number): void;
  /**
   * Plain classic-pcap records appended to a batch buffer in one call (see
   * riff_pcap.c). params: le, record header, snaplen, max caplen, linktype,
   * ticks/s, ns/tick. io in: pos, end, dstBytes, maxCount; out: pos, dstBytes.
   */
  pcapRecords(dst: Uint8Array, src: Uint8Array, params: Uint32Array, io: Uint32Array): number;
  /**
   * Each record's worker (src/capture/flow.ts's shardOf; 255 when filtered
   * out) into shards, each worker's bytes into bytes; with `elsewhere`, flag
   * records for other workers FLAG_ELSEWHERE in place. `overhear`: a bitmap
   * of ports whose TCP/UDP records go to every worker (owner | BROADCAST in
   * shards; FLAG_OVERHEARD in the copies of workers that do not own them).
   * `byService`: TCP/UDP by the lower-port endpoint alone (shardOf).
   * With n + 2 words in bytes: bytes[n] and bytes[n + 1] are 1 + the offset
   * of the last record that passed the filter and of the last TCP/UDP one.
   */
  shardPlan(batch: Uint8Array, count: number, n: number, shards: Uint8Array, bytes: Uint32Array, elsewhere: boolean, overhear?: Uint8Array | null, byService?: boolean): void;
  /** Worker w's records, and the overheard ones, copied to dst from `at`; returns how many. */
  shardCopy(batch: Uint8Array, count: number, shards: Uint8Array, w: number, dst: Uint8Array, at: number): number;
  /** Live capture (src/capture/live.ts): create, set options, activate, -y, -Q, filter; throws an Error with .stage. */
  liveOpen(opts: Record<string, unknown>): LiveOpened;
  /** Call onready whenever the kernel has packets; null pauses. */
  liveWatch(handle: unknown, onready: (() => void) | null): void;
  /** Ready packets appended to dst. io in: dstBytes, maxCount; out: dstBytes. Returns how many. */
  liveRead(handle: unknown, dst: Uint8Array, io: Uint32Array): number;
  /** pcap_stats: received by filter, dropped by kernel, dropped by interface. */
  liveStats(handle: unknown): [number, number, number];
  liveClose(handle: unknown): void;
  /** End the process now with `code` (_exit): no wait for V8's compiler threads or the workers' teardown. Missing in an addon built before it. */
  exitNow?(code: number): never;
  /** systemd's sd_notify: `state` to $NOTIFY_SOCKET; false when there is none. Missing in an addon built before it. */
  notify?(state: string): boolean;
  /** The C library's free pages back to the system (malloc_trim); false where there is none. Missing in an addon built before it. */
  trimMemory?(): boolean;
  /** SIGINT and SIGTERM received so far, counted in C as they arrive (the first call starts counting). Missing in an addon built before it. */
  interrupts?(): [number, number];
  /** How to write to fd without waiting: [how, the descriptor to write to] (fd, or a twin with O_NONBLOCK to close with noWaitClose). */
  noWaitOpen?(fd: number): [number, number];
  noWaitClose?(wfd: number): void;
  /** Bytes of buffer[offset, offset+length) wfd took without waiting, or -errno (-EAGAIN: no room now). */
  writeNow?(wfd: number, buffer: Uint8Array, offset: number, length: number, how: number): number;
  /** Wait up to ms for fd to have room (or an error to report, or a signal). */
  waitWritable?(fd: number, ms: number): void;
  /** pcap_findalldevs. */
  devices(): { name: string; description?: string; addresses: string[]; loopback: boolean; up: boolean; running: boolean }[];
}

export interface LiveOpened {
  handle: unknown;
  linktype: number;
  dlt: number;
  dltName?: string;
  snaplen: number;
  nano: boolean;
  warning?: string;
  datalinks?: { dlt: number; name?: string; description?: string }[];
}

const ADDON = path.join('src', 'capture', 'native', 'build', 'Release', 'riff_pcap.node');

// The module runs from src/ under a TS loader and from dist/src/ once built,
// so the addon is found from the package root rather than from this file.
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

let native: Native | undefined;
let loadFailure: Error | undefined;

/** The addon, or an Error whose message says why it cannot be loaded. */
export function loadNative(): Native {
  if (native) return native;
  if (loadFailure) throw loadFailure;
  try {
    const file = path.join(packageRoot(), ADDON);
    if (!existsSync(file)) throw new Error(`${file} not found`);
    native = createRequire(import.meta.url)(file) as Native;
    return native;
  } catch (e) {
    // A missing libpcap.so shows up here as a dlopen error naming the library.
    loadFailure = new Error(e instanceof Error ? e.message.split('\n')[0] : String(e));
    throw loadFailure;
  }
}

/** The addon when it loads, else null (callers have a slower JS path). Cheap to call per packet. */
export function nativeOrNull(): Native | null {
  if (native) return native;
  if (loadFailure) return null;
  try {
    return loadNative();
  } catch {
    return null;
  }
}

const one = new Uint32Array(3);

/**
 * src[start, end) into dst at `at`: through the addon's memcpy when it loads,
 * since JS writes into a SharedArrayBuffer at a third of memcpy's speed.
 */
export function copyBytes(dst: Buffer, at: number, src: Buffer, start: number, end: number): void {
  const n = nativeOrNull();
  if (!n || end - start < 4096) {
    src.copy(dst, at, start, end);
    return;
  }
  one[0] = start;
  one[1] = at;
  one[2] = end - start;
  n.copy(dst, src, one, 1);
}

/**
 * Copies gathered as (from, to, length) triples and made together in one
 * addon call (memcpy, not V8's relaxed-atomic writes into shared memory): a
 * batch's deferred packet copies, which it gathers only while the addon is
 * loaded.
 */
export class CopyList {
  // Made on first add: most batches over a ring slot never defer a copy.
  private t = new Uint32Array(0);
  private count = 0;

  /** Copies gathered and not yet made. */
  get n(): number {
    return this.count;
  }

  add(from: number, to: number, len: number): void {
    let t = this.t;
    const k = this.count * 3;
    if (k === t.length) {
      t = new Uint32Array(Math.max(3 * 1024, t.length * 2));
      t.set(this.t);
      this.t = t;
    }
    t[k] = from;
    t[k + 1] = to;
    t[k + 2] = len;
    this.count++;
  }

  /** dst[to, to + len) = src[from, from + len) for each; the list is empty after. */
  run(dst: Uint8Array, src: Uint8Array): void {
    loadNative().copy(dst, src, this.t, this.count);
    this.count = 0;
  }
}

/**
 * Tell a Type=notify service manager where riff is ("READY=1" once the
 * Lua workers and the signal handlers are up, "RELOADING=1"/"READY=1" around a
 * reload, "STOPPING=1"): systemd then holds a `systemctl reload` until riff
 * can take it. Nothing without $NOTIFY_SOCKET.
 */
export function notifyManager(state: 'READY=1' | 'RELOADING=1' | 'STOPPING=1'): void {
  if (process.env.NOTIFY_SOCKET) nativeOrNull()?.notify?.(state);
}
