// Synchronous, byte-exact writes to a file descriptor (stdout, stderr). riff
// writes whole buffers as the Lua side flushes them, so order is the order
// of the packets. A closed reader (`riff ... | head -1`) is not an error: the
// sink notes it and riff winds down quietly. Other errors are thrown with
// bytesWritten: how much of this buffer went out before the error.
import fs from 'node:fs';
import { constants } from 'node:os';

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** At most this much per write(2): a reader taking 16 KiB a second is reading. */
const PIECE = 16 << 10;
/** After SIGTERM, a reader that takes less than 16 KiB in this long is given up on (a worker's output too: pool.ts). */
export const STALL_AFTER_SIGTERM_MS = 1000;

/**
 * How the capture thread writes (cli.ts hands it the addon's calls once the
 * addon is loaded). Node hears SIGINT and SIGTERM on this thread's event
 * loop, so a write(2) blocked on a reader that stopped reading held riff
 * past SIGTERM, and past a second Ctrl-C, for as long as the reader slept.
 * With these, no write waits in the kernel, and the wait for room counts
 * the signals that came meanwhile. A worker's sinks never have them: a
 * worker blocked writing is ended by the pool's watchdog, and riff leaves
 * without joining its thread.
 */
export interface NoWait {
  /** How to write to fd without waiting: [how, the descriptor to write to] (a twin with O_NONBLOCK for a pipe, FIFO or terminal). */
  noWaitOpen(fd: number): [number, number];
  /** A twin noWaitOpen opened. */
  noWaitClose(wfd: number): void;
  /** Bytes wfd took without waiting, or -errno (-EAGAIN: no room now). */
  writeNow(wfd: number, buffer: Uint8Array, offset: number, length: number, how: number): number;
  /** Wait up to ms for room (or an error to report, or a signal). */
  waitWritable(fd: number, ms: number): void;
  /** SIGINT and SIGTERM received so far, counted as they arrive. */
  interrupts(): [number, number];
  /** SIGINTs and SIGTERMs riff's handlers have acted on (src/signals.ts). */
  heard(): [number, number];
}
let noWait: (NoWait & { base: [number, number] }) | null = null;

export function writeWithoutWaiting(w: NoWait): void {
  const counted = w.interrupts(); // starts the count: from here every interrupt is in it
  const heard = w.heard();
  noWait = { ...w, base: [heard[0] - counted[0], heard[1] - counted[1]] };
}

/** Interrupts that came which riff's handlers have not acted on yet (SIGINTs, SIGTERMs), and all they have (the C count starts at writeWithoutWaiting). */
function unheard(w: NoWait & { base: [number, number] }): { ints: number; terms: number; heard: number } {
  const [i, t] = w.interrupts();
  const [hi, ht] = w.heard();
  return { ints: i + w.base[0] - hi, terms: t + w.base[1] - ht, heard: hi + ht };
}

let errnoNames: Map<number, string> | null = null;
/** -errno from writeNow as the error fs would have thrown. */
function errnoError(errno: number, bytesWritten: number): NodeJS.ErrnoException {
  errnoNames ??= new Map(Object.entries(constants.errno).map(([k, v]) => [v, k]));
  const code = errnoNames.get(errno) ?? `E${errno}`;
  return Object.assign(new Error(`${code}: write failed`), { code, errno: -errno, syscall: 'write', bytesWritten });
}

/** When riff was told to stop by SIGTERM, as its handler heard it (0: not yet). */
let stoppedAt = 0;

/**
 * Once riff has been told to stop by SIGTERM (a service manager; nobody to
 * press twice), every writer of this thread gives up on a reader that takes
 * less than 16 KiB in a second: stdout, stderr, json:FILE, -w. Until then
 * riff waits for its readers as long as they take (riff | less, Ctrl-C).
 */
export function stopWaitingForReaders(): void {
  stoppedAt ||= Date.now();
}

/** riff was told to stop while it waited for a FIFO's reader (openForWriting). */
export class StoppedWaiting extends Error {}

/**
 * fs.openSync(path, flags) ('a' or 'w'), but a FIFO on the capture thread
 * is opened without waiting in the kernel for its reader (open(2) would,
 * deaf to SIGTERM, for as long as nobody reads): riff tries again every
 * 50 ms, and an interrupt ends the wait (StoppedWaiting). The descriptor
 * is then non-blocking (FdWriter writes it so anyway).
 */
export function openForWriting(path: string, flags: 'a' | 'w'): number {
  const w = noWait;
  let fifo = false;
  try {
    fifo = fs.statSync(path).isFIFO();
  } catch {
    // not there yet: a file to create
  }
  if (!w || !fifo) return fs.openSync(path, flags);
  const { O_WRONLY, O_NONBLOCK, O_APPEND } = fs.constants;
  for (;;) {
    try {
      return fs.openSync(path, O_WRONLY | O_NONBLOCK | (flags === 'a' ? O_APPEND : 0));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
    }
    const u = unheard(w);
    if (u.heard + u.ints + u.terms > 0) throw new StoppedWaiting('riff was told to stop before a reader opened this FIFO');
    Atomics.wait(sleeper, 0, 0, 50);
  }
}

/**
 * Writes to one descriptor, for its owner (FdSink, PcapWriter), who calls
 * release() before closing it. On the capture thread (writeWithoutWaiting)
 * none of its writes waits in the kernel; elsewhere (a worker, no addon)
 * they are fs.writeSync's.
 */
export class FdWriter {
  private how = -1;
  private wfd: number;
  /** While the reader is slow: when riff began waiting on it without 16 KiB taken since, and how much it took meanwhile. */
  private slowSince = 0;
  private slowTaken = 0;
  /** Why the last write() took less than all: the reader, a signal; '' when it wrote all. */
  short = '';

  constructor(readonly fd: number) {
    this.wfd = fd;
  }

  /**
   * buf[off, off + len), in pieces. All of it, unless the reader takes less
   * than 16 KiB in a second after riff was told to stop
   * (stopWaitingForReaders, or, on the capture thread, a SIGTERM that came
   * while it waited), or a second interrupt comes while it waits (riff's
   * handlers then leave at once): then what it took (`short` says why).
   * Errors are thrown with bytesWritten.
   */
  write(buf: Uint8Array, off: number, len: number, onMove?: () => void): number {
    this.short = '';
    const w = noWait;
    if (w && this.how < 0) [this.how, this.wfd] = w.noWaitOpen(this.fd);
    let at = off;
    let waited = false;
    let termAt = 0;
    while (at < off + len) {
      const piece = Math.min(off + len - at, PIECE);
      let n: number;
      if (w) n = w.writeNow(this.wfd, buf, at, piece, this.how);
      else {
        try {
          n = fs.writeSync(this.fd, buf, at, piece);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') {
            (e as { bytesWritten?: number }).bytesWritten = at - off;
            throw e;
          }
          n = -constants.errno.EAGAIN;
        }
      }
      if (n > 0) {
        at += n;
        onMove?.();
        if (this.slowSince && (this.slowTaken += n) >= PIECE) {
          this.slowSince = Date.now(); // 16 KiB in this period: the reader reads
          this.slowTaken = 0;
        }
        continue;
      }
      if (n < 0 && n !== -constants.errno.EAGAIN) throw errnoError(-n, at - off);
      const now = Date.now();
      waited = true;
      this.slowSince ||= now;
      if (!w) {
        // A non-blocking pipe is full (a worker's, or no addon): wait for the reader instead of dropping output.
        Atomics.wait(sleeper, 0, 0, 1);
        continue;
      }
      // Interrupts that came while this thread waited, which its handlers have not heard yet.
      const { ints, terms, heard } = unheard(w);
      if (ints + terms > 0 && heard + ints + terms >= 2) {
        this.short = 'riff was interrupted a second time while its reader took nothing';
        break; // riff's handlers leave at once
      }
      // From the signal on, the reader has a second to take 16 KiB.
      if (terms > 0) termAt ||= now;
      const from = stoppedAt || termAt;
      if (from && now - Math.max(this.slowSince, from) > STALL_AFTER_SIGTERM_MS) {
        this.short = 'its reader took less than 16 KiB in a second after riff was told to stop';
        break;
      }
      w.waitWritable(this.wfd, 50);
    }
    // A write that never waited: the reader keeps up.
    if (!waited) this.slowSince = this.slowTaken = 0;
    return at - off;
  }

  /** Before the owner closes fd. */
  release(): void {
    if (noWait && this.wfd !== this.fd) noWait.noWaitClose(this.wfd);
    this.wfd = this.fd;
    this.how = -1;
  }
}

export class FdSink {
  closed = false;
  bytes = 0;
  onClose: (() => void) | null = null;
  /** Called after every write that took bytes (the watchdog's sign that output moves). */
  onMove: (() => void) | null = null;
  /** The reader took too little while riff was stopping (FdWriter): what came after is counted, not written. */
  gaveUp = false;
  unwritten = 0;
  private readonly out: FdWriter;

  constructor(readonly fd: number) {
    this.out = new FdWriter(fd);
  }

  /** How much of buf went out: all of it, or less once the reader went away or was given up on (closed). */
  write(buf: Uint8Array): number {
    if (this.closed) {
      if (this.gaveUp) this.unwritten += buf.length;
      return 0;
    }
    let n: number;
    try {
      // In pieces: each piece taken is a sign the reader reads (onMove).
      n = this.out.write(buf, 0, buf.length, this.onMove ?? undefined);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'EBADF' || code === 'ECONNRESET') {
        this.closed = true;
        this.onClose?.();
        return (e as { bytesWritten?: number }).bytesWritten ?? 0;
      }
      // The caller may keep what went out whole (e.g. cut a file back to its last whole line).
      throw e;
    }
    if (n < buf.length) {
      this.unwritten += buf.length - n;
      this.closed = this.gaveUp = true;
    }
    this.bytes += n;
    return n;
  }

  text(s: string): number {
    return this.write(Buffer.from(s, 'utf8'));
  }

  /** Before the owner closes fd (a json:FILE reopened or closed). */
  release(): void {
    this.out.release();
  }
}

export const stdout = new FdSink(1);
export const stderr = new FdSink(2);

/**
 * process.stdout or process.stderr when it is a terminal, else null. riff
 * writes through fs (FdSink), so it creates neither stream unless the
 * descriptor may be a terminal: only a character device can be one, and
 * the stream for a pipe loads Node's net module, a few ms of every start
 * (README, Start-up).
 */
export function terminal(fd: 1 | 2): NodeJS.WriteStream | null {
  try {
    if (!fs.fstatSync(fd).isCharacterDevice()) return null;
  } catch {
    return null; // closed: process.stdout would be a stream to nowhere
  }
  const stream = fd === 1 ? process.stdout : process.stderr;
  return stream.isTTY ? stream : null;
}
