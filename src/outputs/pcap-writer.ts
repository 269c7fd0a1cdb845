// Writes batches as a classic pcap file, the way `tcpdump -w` would: microsecond
// timestamps, little-endian, one link type per file.
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
import { Batch, FLAG_ARRIVAL_TS, FLAG_FILTERED_OUT, HDR, align8 } from '../capture/batch.js';

const FILE_HDR = 24;
const REC_HDR = 16;
const CHUNK = 1 << 20;

/** -w cannot go on: the message is one line naming the file and what to do. */
export class PcapWriteError extends Error {}

const ERRNO_TEXT: Record<string, string> = {
  ENOSPC: 'disk full', EDQUOT: 'disk quota exceeded', EFBIG: 'file too large', EIO: 'I/O error',
  EROFS: 'read-only file system', EACCES: 'permission denied', EPERM: 'permission denied',
  ENOENT: 'no such directory', EISDIR: 'is a directory', ENOTDIR: 'a parent is not a directory',
};
function errText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return ERRNO_TEXT[code] ? `${ERRNO_TEXT[code]} (${code})` : String((e as Error)?.message ?? e);
}

// Sleeping without a busy loop while a non-blocking stdout drains.
const sleeper = new Int32Array(new SharedArrayBuffer(4));

export class PcapWriter {
  readonly path: string;
  readonly linktype: number;
  readonly snaplen: number;
  private fd: number;
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

  /** `path` '-' writes to stdout (left open by close()). */
  constructor(path: string, linktype: number, snaplen = 262144) {
    if (!Number.isInteger(linktype) || linktype < 0 || linktype > 0xffffffff) {
      throw new RangeError(`linktype must be a 32-bit unsigned integer, got ${linktype}`);
    }
    if (!Number.isInteger(snaplen) || snaplen <= 0 || snaplen > 0x7fffffff) {
      throw new RangeError(`snaplen must be a positive integer, got ${snaplen}`);
    }
    this.path = path;
    this.linktype = linktype;
    this.snaplen = snaplen;
    this.ownsFd = path !== '-';
    try {
      this.fd = this.ownsFd ? fs.openSync(path, 'w') : 1;
    } catch (e) {
      throw new PcapWriteError(`-w ${path}: cannot create it: ${errText(e)}; name a writable file`);
    }

    const h = this.buf;
    h.writeUInt32LE(0xa1b2c3d4, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeInt32LE(0, 8); // thiszone
    h.writeUInt32LE(0, 12); // sigfigs
    h.writeUInt32LE(snaplen, 16);
    h.writeUInt32LE(linktype, 20);
    this.pos = FILE_HDR;
    this.flush();
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
      const usec = Math.floor((nsec % 1e9) / 1000);

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
      out.writeUInt32LE(usec, at + 4);
      out.writeUInt32LE(incl, at + 8);
      out.writeUInt32LE(orig, at + 12);
      src.copy(out, at + REC_HDR, rec + HDR, rec + HDR + incl);
      this.nWritten++;
      if (out === this.buf) {
        this.pos = at + need;
        this.nBuffered++;
      } else this.writeAll(out, need, 1);
    }
  }

  /** Write out everything buffered and close the file (not stdout). Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.flush();
    } finally {
      if (this.ownsFd && this.fd >= 0) fs.closeSync(this.fd);
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

  /** Write n bytes holding `records` whole records (the file header counts as none). */
  private writeAll(b: Buffer, n: number, records: number): void {
    let start = -1;
    if (this.ownsFd) {
      try {
        start = fs.fstatSync(this.fd).size;
      } catch {}
    }
    let off = 0;
    while (off < n) {
      try {
        off += fs.writeSync(this.fd, b, off, n - off);
      } catch (e) {
        // stdout may be a non-blocking pipe shared with the event loop.
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(sleeper, 0, 0, 1);
          continue;
        }
        // Cut the file back to what was whole before this write, so it stays readable.
        if (start >= 0) {
          try {
            fs.ftruncateSync(this.fd, start);
          } catch {}
        }
        this.nWritten -= records;
        this.nLost += records;
        this.failure = errText(e);
        this.closed = true;
        if (this.ownsFd) {
          try {
            fs.closeSync(this.fd);
          } catch {}
        }
        this.fd = -1;
        const where = this.ownsFd ? this.path : 'standard output';
        throw new PcapWriteError(
          `-w ${this.path}: ${this.failure} writing ${where}; the ${this.nWritten} packets written before are kept, the rest are counted as not written; free space or write elsewhere`,
        );
      }
    }
  }
}
