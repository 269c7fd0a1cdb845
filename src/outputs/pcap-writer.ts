// Writes batches as a classic pcap file, the way `tcpdump -w` would:
// little-endian, one link type per file, microsecond timestamps, or
// nanosecond ones (magic a1b23c4d) when the source has them, so time is
// never rounded. -C/-G/-W rotate the file with tcpdump's names and rules.
//
// The file is valid at every moment a JS callback can observe: the header goes
// out at open and records only ever leave the buffer whole. A SIGINT handler
// that calls close() therefore always leaves a readable capture behind.
//
// A write that fails (disk full, device error) throws PcapWriteError, one line
// naming the file and what to do; the file is cut back to the records that
// were whole before, the records that did not make it are counted (lost), and
// the writer takes no more.

import fs from 'node:fs';
import { errnoText, stillNames } from './types.js';
import { FdWriter, openForWriting, StoppedWaiting } from './fd-sink.js';
import { Batch, FLAG_ARRIVAL_TS, FLAG_FILTERED_OUT, HDR, align8 } from '../capture/batch.js';

const FILE_HDR = 24;
const REC_HDR = 16;
const CHUNK = 1 << 20;

export interface PcapWriterOptions {
  snaplen?: number;
  /** Nanosecond timestamps (magic a1b23c4d); else microsecond (a1b2c3d4). */
  nano?: boolean;
  /** -C: start a new file before a packet when this one holds more than this many bytes. */
  rotateBytes?: number;
  /** -G: start a new file once a packet is this many seconds past the file's start (by packet time). */
  rotateSeconds?: number;
  /** -W: with -C, reuse this many names in a ring (with -G too, in each period); with -G alone, stop after this many files. */
  files?: number;
  /**
   * -G: the time (seconds) the first file's name and period start from
   * (live: now). Unset, the first file opens at the first packet, named by
   * its time (a capture file keeps its own time).
   */
  start?: number;
  /** -G with -W (no -C): the last file's period ended; riff stops writing (tcpdump exits). */
  onLimit?: () => void;
}

/** Digits tcpdump pads file numbers to for -W COUNT. */
function wDigits(w: number): number {
  let c = 0;
  for (let x = w - 1; x > 0; x = Math.floor(x / 10)) c++;
  return c;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** strftime(3) in local time, for -G file names: the conversions tcpdump users put in them. */
export function strftime(fmt: string, sec: number): string {
  const d = new Date(sec * 1000);
  const p = (n: number, w = 2, c = '0') => String(n).padStart(w, c);
  const jan1 = new Date(d.getFullYear(), 0, 1);
  const yday = Math.round((new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime() - jan1.getTime()) / 864e5) + 1;
  const off = -d.getTimezoneOffset();
  const conv: Record<string, () => string> = {
    Y: () => String(d.getFullYear()),
    y: () => p(d.getFullYear() % 100),
    C: () => p(Math.floor(d.getFullYear() / 100)),
    m: () => p(d.getMonth() + 1),
    d: () => p(d.getDate()),
    e: () => p(d.getDate(), 2, ' '),
    H: () => p(d.getHours()),
    I: () => p(d.getHours() % 12 || 12),
    M: () => p(d.getMinutes()),
    S: () => p(d.getSeconds()),
    p: () => (d.getHours() < 12 ? 'AM' : 'PM'),
    j: () => p(yday, 3),
    s: () => String(Math.floor(sec)),
    a: () => DAYS[d.getDay()].slice(0, 3),
    A: () => DAYS[d.getDay()],
    b: () => MONTHS[d.getMonth()].slice(0, 3),
    h: () => MONTHS[d.getMonth()].slice(0, 3),
    B: () => MONTHS[d.getMonth()],
    u: () => String(d.getDay() || 7),
    w: () => String(d.getDay()),
    F: () => `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`,
    T: () => `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`,
    R: () => `${p(d.getHours())}:${p(d.getMinutes())}`,
    D: () => `${p(d.getMonth() + 1)}/${p(d.getDate())}/${p(d.getFullYear() % 100)}`,
    z: () => `${off < 0 ? '-' : '+'}${p(Math.floor(Math.abs(off) / 60))}${p(Math.abs(off) % 60)}`,
    n: () => '\n',
    t: () => '\t',
    '%': () => '%',
  };
  return fmt.replace(/%([A-Za-z%])/g, (all, c: string) => (conv[c] ? conv[c]() : all));
}

/**
 * Every file a writer of `path` with these options may create, as a pattern
 * over `path`: the name itself, or with -G its strftime conversions as any
 * text; then -C's numbers (FILE, FILE1, ...; with -W, FILE0... padded to
 * -W's digits), as nameFor() makes them.
 */
export function namesWritten(path: string, o: PcapWriterOptions): RegExp {
  const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const base = o.rotateSeconds ? path.split(/%./s).map(esc).join('.*') : esc(path);
  if (!o.rotateBytes) return new RegExp(`^${base}$`, 's');
  const digits = o.files ? wDigits(o.files) : 0;
  return new RegExp(`^${base}${digits ? `\\d{${digits},}` : '\\d*'}$`, 's');
}

/**
 * -w cannot go on: the message is one line naming the file and what to do.
 * readerClosed: the pipe's reader went away (`riff -w - | head -c 100`),
 * which ends the run quietly, as a closed stdout does.
 */
export class PcapWriteError extends Error {
  readerClosed = false;
  /** The file could not be created at all (a path, not a device, at fault). */
  cannotCreate = false;
  /** Why, in words (errno's text). */
  reason = '';
  /** riff was told to stop while it waited for a FIFO's reader to open it. */
  interrupted = false;
  /** The reader took too little while riff was stopping (fd-sink.ts FdWriter): its choice, as a closed reader's, not a fault. */
  stalled = false;
}

export class PcapWriter {
  readonly path: string;
  readonly linktype: number;
  readonly snaplen: number;
  private fd = -1;
  private readonly ownsFd: boolean;
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private pos = 0;
  private closed = false;
  private nWritten = 0;
  private nSkipped = 0;
  /** Records in buf, not yet handed to the kernel. */
  private nBuffered = 0;
  private nLost = 0;
  /** Why the writer stopped, once it has. */
  failure: string | null = null;
  /** Writes to fd (stdout's, or the current file's). */
  private out: FdWriter | null = null;

  /** `path` '-' writes to stdout (left open by close()). */
  constructor(path: string, linktype: number, snaplenOrOptions: number | PcapWriterOptions = {}) {
    const o: PcapWriterOptions = typeof snaplenOrOptions === 'number' ? { snaplen: snaplenOrOptions } : snaplenOrOptions;
    const snaplen = o.snaplen ?? 262144;
    if (!Number.isInteger(linktype) || linktype < 0 || linktype > 0xffffffff) {
      throw new RangeError(`linktype must be a 32-bit unsigned integer, got ${linktype}`);
    }
    if (!Number.isInteger(snaplen) || snaplen <= 0 || snaplen > 0x7fffffff) {
      throw new RangeError(`snaplen must be a positive integer, got ${snaplen}`);
    }
    this.path = path;
    this.linktype = linktype;
    this.snaplen = snaplen;
    this.nano = o.nano ?? false;
    this.opts = o;
    this.ownsFd = path !== '-';
    this.rotating = this.ownsFd && !!(o.rotateBytes || o.rotateSeconds);
    this.digits = o.files ? wDigits(o.files) : 0;
    if (!o.rotateSeconds) this.open(this.nameFor(0, !!o.rotateBytes, 0));
    else if (o.start !== undefined) this.open(this.nameFor(0, !!o.rotateBytes, o.start), o.start);
  }

  readonly nano: boolean;
  private readonly opts: PcapWriterOptions;
  private readonly rotating: boolean;
  private readonly digits: number;
  /** Bytes in the current file, buffered ones included (tcpdump's pcap_dump_ftell). */
  private fileBytes = 0;
  private cCount = 0;
  private gCount = 0;
  /** -G: when the current file's period started; NaN before the first file. */
  private gTime = NaN;
  private stopped = false;
  /** Every file opened, in order (a -W ring reopens names: listed again). */
  readonly files: string[] = [];

  /** tcpdump's MakeFilename: strftime with -G, then the number padded to -W's digits (none for the very first file without -W). */
  private nameFor(count: number, numbered: boolean, t: number): string {
    if (!this.ownsFd) return '-';
    const base = this.opts.rotateSeconds ? strftime(this.path, t) : this.path;
    if (!numbered || (count === 0 && this.digits === 0)) return base;
    return base + String(count).padStart(this.digits, '0');
  }

  private open(name: string, t = NaN): void {
    try {
      this.fd = this.ownsFd ? openForWriting(name, 'w') : 1;
    } catch (e) {
      const err = new PcapWriteError(e instanceof StoppedWaiting ? `-w ${name}: ${e.message}` : `-w ${name}: cannot create it: ${errnoText(e)}; name a writable file`);
      err.interrupted = e instanceof StoppedWaiting;
      err.cannotCreate = true;
      err.reason = errnoText(e);
      throw err;
    }
    this.current = name;
    this.files.push(name);
    this.gTime = t;
    const h = this.buf;
    h.writeUInt32LE(this.nano ? 0xa1b23c4d : 0xa1b2c3d4, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeInt32LE(0, 8); // thiszone
    h.writeUInt32LE(0, 12); // sigfigs
    h.writeUInt32LE(this.snaplen, 16);
    h.writeUInt32LE(this.linktype, 20);
    this.pos = FILE_HDR;
    this.fileBytes = FILE_HDR;
    this.flush();
  }

  /** -C/-G: the next file of the rotation. */
  private next(name: string, t: number): void {
    this.flush();
    this.closeFd(this.fd);
    this.fd = -1;
    this.openOrStop(name, t);
  }

  /**
   * A file of the rotation (-C, -G) that cannot be created ends the writer
   * as a failed write does: the reason, in words, names that file.
   */
  private openOrStop(name: string, t: number): void {
    try {
      this.open(name, t);
    } catch (e) {
      if (e instanceof PcapWriteError && e.cannotCreate && !this.failure) {
        this.failure = `cannot create ${name}: ${e.reason}`;
        this.closed = true;
      }
      throw e;
    }
  }

  /** The file being written. */
  current = '';

  /**
   * tcpdump's order before each packet: -G first (a new period, or the end
   * with -W), then -C. False: the packet is not to be written (-G -W ended).
   */
  private rotate(sec: number): boolean {
    const o = this.opts;
    if (o.rotateSeconds) {
      if (Number.isNaN(this.gTime)) {
        if (this.fd < 0) this.openOrStop(this.nameFor(0, !!o.rotateBytes, sec), sec);
        else this.gTime = sec;
      } else if (sec - this.gTime >= o.rotateSeconds) {
        this.gCount++;
        // tcpdump: -W stops the capture with -G alone; with -C too, it only
        // makes the ring of names each period's -C files go round.
        if (o.files && !o.rotateBytes && this.gCount >= o.files) {
          this.stopped = true;
          o.onLimit?.();
          return false;
        }
        this.cCount = 0;
        this.next(this.nameFor(0, !!o.rotateBytes, sec), sec);
      }
    }
    if (o.rotateBytes && this.fileBytes > o.rotateBytes) {
      this.cCount++;
      if (o.files && this.cCount >= o.files) this.cCount = 0;
      this.next(this.nameFor(this.cCount, true, this.gTime), this.gTime);
    }
    return true;
  }

  /** Records written so far (buffered ones included). */
  get written(): number {
    return this.nWritten;
  }

  /** Records not written because a write failed. */
  get lost(): number {
    return this.nLost;
  }

  /** Unfiltered records not written because their link type is not the file's. */
  get skipped(): number {
    return this.nSkipped;
  }

  /** Append every record of `batch` that lacks FLAG_FILTERED_OUT. */
  write(batch: Batch): void {
    if (this.closed || this.failure) throw new Error(`pcap writer for ${this.path} is closed`);
    const v = batch.view;
    const src = batch.buf;
    const lt = this.linktype;
    const snaplen = this.snaplen;
    for (let o = 0, i = 0; i < batch.count; i++) {
      const caplen = v.getUint32(o + 12, true);
      const rec = o;
      o += HDR + align8(caplen);
      const flags = v.getUint32(rec + 28, true);
      if (flags & FLAG_FILTERED_OUT) continue;
      if (v.getUint32(rec + 20, true) !== lt) {
        this.nSkipped++;
        continue;
      }
      // A record longer than the header's snaplen would be cut or refused by
      // libpcap on reading; cut it here, as capturing with -s would.
      const incl = caplen > snaplen ? snaplen : caplen;
      const orig = flags & FLAG_ARRIVAL_TS ? caplen : v.getUint32(rec + 16, true);
      const nsec = v.getUint32(rec + 8, true);
      const sec = v.getUint32(rec, true) + Math.floor(nsec / 1e9);
      const frac = this.nano ? nsec % 1e9 : Math.floor((nsec % 1e9) / 1000);
      if (this.rotating && (this.stopped || !this.rotate(sec))) {
        this.nLeft++;
        continue;
      }

      const need = REC_HDR + incl;
      let out = this.buf;
      let at = this.pos;
      if (at + need > out.length) {
        this.flush();
        at = 0;
        // Too big for the chunk: give it a buffer of its own, still written in one call.
        if (need > out.length) out = Buffer.allocUnsafe(need);
      }
      out.writeUInt32LE(sec >>> 0, at);
      out.writeUInt32LE(frac, at + 4);
      out.writeUInt32LE(incl, at + 8);
      out.writeUInt32LE(orig, at + 12);
      src.copy(out, at + REC_HDR, rec + HDR, rec + HDR + incl);
      this.nWritten++;
      if (out === this.buf) {
        this.pos = at + need;
        this.nBuffered++;
      } else this.writeAll(out, need, 1);
      this.fileBytes += need;
    }
  }

  /** Packets not written because -G -W's last file had ended. */
  get left(): number {
    return this.nLeft;
  }
  private nLeft = 0;

  /** -U: write out what is buffered now (riff calls it after each batch). */
  sync(): void {
    if (!this.closed) this.flush();
  }

  /**
   * logrotate (SIGUSR1): what is buffered goes to the file as it was (moved
   * away by now), then a new file at the same path starts with its own
   * header. Records only leave the buffer whole, so none is cut or doubled.
   * A file still at its path (same device and inode: not rotated) is kept
   * and written on, never truncated. A file that cannot be created keeps
   * riff writing to the old one; the reason is thrown as one line. True
   * when a new file was opened.
   */
  reopen(): boolean {
    if (this.closed || !this.ownsFd || this.failure || this.fd < 0) return false;
    this.flush();
    if (stillNames(this.current, this.fd)) return false;
    const old = this.fd;
    try {
      this.open(this.current, this.gTime);
    } finally {
      // Created (or its header failed, the writer then ended): the moved file is done with.
      if (this.fd !== old) this.closeFd(old);
    }
    return true;
  }

  /** Write out everything buffered and close the file (not stdout). Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // -G over a capture file with no packet at all: the one file, named by the clock.
    if (this.fd < 0 && this.ownsFd) this.open(this.nameFor(0, !!this.opts.rotateBytes, Date.now() / 1000));
    try {
      this.flush();
    } finally {
      if (this.ownsFd && this.fd >= 0) this.closeFd(this.fd);
      this.fd = -1;
    }
  }

  private flush(): void {
    const n = this.pos;
    const records = this.nBuffered;
    this.pos = 0;
    this.nBuffered = 0;
    if (n > 0) this.writeAll(this.buf, n, records);
  }

  /** Close one of its files (not stdout), and what writes to it. */
  private closeFd(fd: number): void {
    if (this.out?.fd === fd) {
      this.out.release();
      this.out = null;
    }
    fs.closeSync(fd);
  }

  /** Write n bytes holding `records` whole records (the file header counts as none). */
  private writeAll(b: Buffer, n: number, records: number): void {
    // A file is cut back to what was whole before this write on an error; a FIFO cannot be.
    let start = -1;
    if (this.ownsFd) {
      try {
        const st = fs.fstatSync(this.fd);
        if (st.isFile()) start = st.size;
      } catch {}
    }
    if (this.out?.fd !== this.fd) this.out = new FdWriter(this.fd);
    let off: number;
    let error: NodeJS.ErrnoException | null = null;
    try {
      off = this.out.write(b, 0, n);
    } catch (e) {
      error = e as NodeJS.ErrnoException;
      off = (e as { bytesWritten?: number }).bytesWritten ?? 0;
    }
    if (error || off < n) {
      // Without an error the reader was given up on while riff was stopping (out.short says why).
      const stalled = !error;
      // Cut the file back to what was whole before this write, so it stays readable.
      if (start >= 0) {
        try {
          fs.ftruncateSync(this.fd, start);
        } catch {}
      }
      // What went out before the error and was not cut back (a pipe) was
      // written: the whole records in its first `off` bytes.
      let delivered = 0;
      for (let p = 0; start < 0 && p + REC_HDR <= off; delivered++) {
        p += REC_HDR + b.readUInt32LE(p + 8);
        if (p > off) break;
      }
      this.nWritten -= records - delivered;
      this.nLost += records - delivered;
      this.failure = error ? errnoText(error) : this.out.short;
      this.closed = true;
      if (this.ownsFd) {
        try {
          this.closeFd(this.fd);
        } catch {}
      }
      this.fd = -1;
      const where = this.ownsFd ? this.current || this.path : 'standard output';
      const err = new PcapWriteError(
        `-w ${this.path}: ${this.failure} writing ${where}; the ${this.nWritten} packets written before are kept, the rest are counted as not written${stalled ? '' : '; free space or write elsewhere'}`,
      );
      err.readerClosed = error?.code === 'EPIPE';
      err.stalled = stalled;
      throw err;
    }
  }
}
