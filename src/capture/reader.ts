// What pcap.ts and pcapng.ts share: the buffered Source they decode from,
// the CaptureFile they implement, the error they throw, and libpcap's
// snapshot-length rules. file.ts picks between the readers; both sides import
// this module, so neither imports the other.

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { Batch } from './batch.js';

/** An open or read of a capture file that failed, in words (the code kept for searches), not Node's text. */
export function openErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  const words: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EPERM: 'permission denied', EISDIR: 'a directory', EIO: 'I/O error', ELOOP: 'too many symbolic links', ENOTDIR: 'a path through something that is not a directory', ENAMETOOLONG: 'name too long' };
  return code && words[code] ? `${words[code]} (${code})` : String((e as Error).message).split('\n')[0];
}

export class CaptureFileError extends Error {
  constructor(
    message: string,
    readonly offset: number,
    /** The file could not be opened or read at all (no damage at an offset to report). */
    readonly unreadable = false,
  ) {
    super(message);
    this.name = 'CaptureFileError';
  }
}

/**
 * A pipe or FIFO has no more bytes yet: the reader stopped before the record
 * it needs them for; await `more()` and call again. Never a damage report.
 */
export class WouldBlock extends Error {}
const WOULD_BLOCK = new WouldBlock('no data yet');

export interface CaptureFile {
  readonly path: string;
  readonly container: 'pcap' | 'pcapng';
  /** pcap: the header's link type; pcapng: the first interface's (-1 if none yet). */
  readonly linktype: number;
  readonly snaplen: number;
  /** Bytes consumed so far. */
  readonly offset: number;
  /** Oddities tolerated the way libpcap tolerates them, each once, with a count. */
  readonly warnings: string[];
  /**
   * Append packets until `max` were added, the batch is full or the file ends.
   * Returns the number appended; 0 means clean end of file. At least one packet
   * is appended per call if there is one (the batch grows), so 0 is never a
   * full batch. On damage, the packets before it are returned first and the
   * next call throws CaptureFileError (and so does every call after it).
   */
  fill(batch: Batch, max: number): number;
  /**
   * Records skipped because their captured length is over the largest
   * riff hands on (see openCaptureFile's maxRecord); counted, never decoded.
   */
  readonly skipped: number;
  /** Pipes and FIFOs: wait (without blocking the thread) until more bytes came, or the end. */
  more(): Promise<void>;
  close(): void;
}

/**
 * CaptureFile.fill around a reader's packet loop `read` (which appends up to
 * `max` packets): a damaged file keeps failing, damage met after good packets
 * is thrown by the next call, and copies the batch deferred settle before the
 * read buffer moves and before the batch is handed on.
 */
export function fillFrom(
  reader: { failure: CaptureFileError | null },
  src: Source,
  batch: Batch,
  max: number,
  read: () => void,
): number {
  if (reader.failure) throw reader.failure;
  if (!(max >= 1)) throw new RangeError(`fill: max must be at least 1 (got ${max})`);
  const before = batch.count;
  batch.deferCopies = true;
  src.onMove = batch.settle;
  try {
    read();
  } catch (e) {
    if (e instanceof WouldBlock) {
      if (batch.count === before) throw e;
      return batch.count - before;
    }
    if (!(e instanceof CaptureFileError)) throw e;
    reader.failure = e;
    if (batch.count === before) throw e;
  } finally {
    batch.settle();
    batch.deferCopies = false;
    src.onMove = null;
  }
  return batch.count - before;
}

const INITIAL_BUFFER = 1 << 20;
// The largest thing ever held at once is one pcapng block or one pcap record,
// both bounded by the link type's maximum snapshot length (128 MiB for D-Bus)
// plus headers, so this cap only stops a bug from eating memory.
const MAX_BUFFER = 160 << 20;
const nap = new Int32Array(new SharedArrayBuffer(4));

/**
 * A file descriptor read sequentially through one reusable buffer, so regular
 * files and pipes behave alike and memory stays flat whatever the file size.
 * Decoders read `buf`/`view` directly between `pos` and `end`.
 */
export class Source {
  buf: Buffer = Buffer.allocUnsafe(INITIAL_BUFFER);
  view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  pos = 0;
  end = 0;
  /** File offset of buf[0]. */
  private base = 0;
  /** Run before buffered bytes move: a batch's deferred copies still point at them. */
  onMove: (() => void) | null = null;
  private eof = false;
  private closed = false;
  /** Pipes and FIFOs are read through the event loop (a libuv pipe), never a blocked thread: a thread-pool read of an idle pipe would even keep process.exit waiting. */
  private sock: Socket | null = null;
  private chunks: Buffer[] = [];
  private sockDone = false;
  private sockError: Error | null = null;
  private waiter: (() => void) | null = null;

  constructor(
    private readonly fd: number,
    readonly name: string,
    private readonly owned: boolean,
    /** A pipe or FIFO: need() never reads (it throws WouldBlock); more() reads asynchronously. */
    private readonly async = false,
  ) {
    if (!async) return;
    // Required here: node:net is a few ms of every start, and only a pipe needs it.
    const net = createRequire(import.meta.url)('node:net') as typeof import('node:net');
    const sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock = sock;
    sock.pause();
    const wake = () => this.waiter?.();
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      sock.pause(); // one chunk at a time: the pipe holds the rest (backpressure)
      wake();
    });
    sock.on('end', () => ((this.sockDone = true), wake()));
    sock.on('close', () => ((this.sockDone = true), wake()));
    sock.on('error', (e) => ((this.sockError = e), wake()));
  }

  get offset(): number {
    return this.base + this.pos;
  }

  /** File offset of buffer index `i`. */
  at(i: number): number {
    return this.base + i;
  }

  /** Make `n` bytes available from `pos`; returns how many are (fewer only at end of file). May move the data. */
  need(n: number): number {
    let avail = this.end - this.pos;
    if (avail >= n || this.eof) return avail;
    if (this.async) {
      this.wanted = n;
      throw WOULD_BLOCK;
    }
    if (this.pos + n > this.buf.length) this.makeRoom(n);
    while (avail < n) {
      const got = this.read(this.end, this.buf.length - this.end);
      if (got === 0) {
        this.eof = true;
        break;
      }
      this.end += got;
      avail += got;
    }
    return avail;
  }

  /** What the last need() that threw WouldBlock asked for. */
  private wanted = 0;

  /** Take in what the writer has sent (at least a byte), or note the end; waits on the event loop, so signals are heard meanwhile. */
  async more(): Promise<void> {
    if (!this.sock || this.eof || this.closed) return;
    if (!this.chunks.length && !this.sockDone && !this.sockError) {
      await new Promise<void>((r) => {
        this.waiter = r;
        this.sock!.resume();
      });
      this.waiter = null;
    }
    if (this.chunks.length) {
      const total = this.chunks.reduce((k, c) => k + c.length, 0);
      const want = this.end - this.pos + total;
      if (this.end + total > this.buf.length) this.makeRoom(want);
      for (const c of this.chunks) {
        c.copy(this.buf, this.end);
        this.end += c.length;
      }
      this.chunks = [];
      return;
    }
    if (this.sockError) {
      const off = this.base + this.end;
      throw new CaptureFileError(`cannot read ${this.name} at offset ${off}: ${openErrorText(this.sockError)}`, off, true);
    }
    this.eof = true;
  }

  /**
   * Skip `n` bytes from pos (a record riff does not take), without holding
   * them all at once; returns how many there were (fewer at end of file).
   */
  skip(n: number): number {
    const avail = this.end - this.pos;
    if (avail >= n) {
      this.pos += n;
      return n;
    }
    if (this.async) {
      // Pipes: the record arrives whole in the buffer first (bounded by the reader's limit).
      const k = Math.min(this.need(n), n);
      this.pos += k;
      return k;
    }
    this.onMove?.();
    let left = n - avail;
    this.base += this.end;
    this.pos = this.end = 0;
    while (left > 0) {
      const got = this.read(0, Math.min(left, this.buf.length));
      if (got === 0) {
        this.eof = true;
        break;
      }
      left -= got;
      this.base += got;
    }
    return n - left;
  }

  private makeRoom(n: number): void {
    this.onMove?.();
    const avail = this.end - this.pos;
    let target = this.buf;
    if (n > this.buf.length) {
      if (n > MAX_BUFFER) throw new CaptureFileError(`${this.name}: a ${n}-byte record is beyond the reader's limit`, this.offset);
      target = Buffer.allocUnsafe(Math.min(MAX_BUFFER, Math.max(n, this.buf.length * 2)));
    }
    this.buf.copy(target, 0, this.pos, this.end);
    this.base += this.pos;
    this.pos = 0;
    this.end = avail;
    if (target !== this.buf) {
      this.buf = target;
      this.view = new DataView(target.buffer, target.byteOffset, target.byteLength);
    }
  }

  private read(at: number, len: number): number {
    for (;;) {
      try {
        return fs.readSync(this.fd, this.buf, at, len, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        // A non-blocking stdin (inherited from a shell or a parent process)
        // reports "no data yet" rather than blocking; wait for the writer.
        if (code === 'EAGAIN') {
          Atomics.wait(nap, 0, 0, 2);
          continue;
        }
        if (code === 'EOF') return 0; // Windows pipes report end of data this way
        const off = this.base + at;
        if (code === 'EISDIR') throw new CaptureFileError(`${this.name}: a directory (EISDIR); give a pcap or pcapng capture file`, off, true);
        throw new CaptureFileError(`cannot read ${this.name} at offset ${off}: ${openErrorText(e)}`, off, true);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sock) this.sock.destroy();
    else if (this.owned) fs.closeSync(this.fd);
  }
}

/** Tolerated oddities: one line per kind, its count kept current. */
export class Warnings {
  readonly list: string[] = [];
  private readonly seen = new Map<string, { i: number; n: number; text: (n: number) => string }>();

  note(key: string, text: (n: number) => string): void {
    let w = this.seen.get(key);
    if (!w) {
      w = { i: this.list.length, n: 0, text };
      this.seen.set(key, w);
      this.list.push('');
    }
    w.n++;
    this.list[w.i] = w.text(w.n);
  }
}

/** The one line for records skipped as too large. */
export const tooLarge = (k: number, max: number): string =>
  `${plural(k, 'packet')} larger than ${max >= 1 << 20 ? `${+(max / (1 << 20)).toFixed(1)} MiB` : `${max} bytes`} skipped (riff hands Lua packets up to that size)`;

export const plural = (n: number, one: string, many = one + 's'): string => `${n} ${n === 1 ? one : many}`;

/** libpcap's max_snaplen_for_dlt(): the largest captured length it accepts for a link type. */
export function maxSnaplen(linktype: number): number {
  switch (linktype) {
    case 231: // DBUS: messages can be up to 128 MiB
      return 128 * 1024 * 1024;
    case 279: // EBHSCR
      return 8 * 1024 * 1024;
    case 249: // USBPCAP: isochronous transfers can be large
      return 1024 * 1024;
    default:
      return 262144;
  }
}

/** libpcap's pcap_adjust_snapshot(): 0 or out-of-range snapshot lengths mean "the maximum". */
export function adjustSnaplen(linktype: number, snaplen: number): number {
  const max = maxSnaplen(linktype);
  return snaplen === 0 || snaplen > max ? max : snaplen;
}
