// Writes batches as a classic pcap file, the way `tcpdump -w` would: microsecond
// timestamps, little-endian, one link type per file.
//
// The file is valid at every moment a JS callback can observe: the header goes
// out at open and records only ever leave the buffer whole. A SIGINT handler
// that calls close() therefore always leaves a readable capture behind.

import fs from 'node:fs';
import { Batch, FLAG_ARRIVAL_TS, FLAG_FILTERED_OUT, HDR, align8 } from '../capture/batch.js';

const FILE_HDR = 24;
const REC_HDR = 16;
const CHUNK = 1 << 20;

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
    this.fd = this.ownsFd ? fs.openSync(path, 'w') : 1;
    this.header();
  }

  private header(): void {
    const { snaplen, linktype } = this;
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

  /** Unfiltered records not written because their link type is not the file's. */
  get skipped(): number {
    return this.nSkipped;
  }

  /** Append every record of `batch` that lacks FLAG_FILTERED_OUT. */
  write(batch: Batch): void {
    if (this.closed) throw new Error(`pcap writer for ${this.path} is closed`);
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
      if (out === this.buf) this.pos = at + need;
      else this.writeAll(out, need);
      this.nWritten++;
    }
  }

  /**
   * logrotate (SIGUSR1): what is buffered goes to the file as it was (moved
   * away by now), then a new file at the same path starts with its own
   * header. Records only leave the buffer whole, so none is cut or doubled.
   * A file that cannot be created keeps riff writing to the old one; the
   * reason is thrown as one line.
   */
  reopen(): void {
    if (this.closed || !this.ownsFd) return;
    this.flush();
    const fd = fs.openSync(this.path, 'w');
    fs.closeSync(this.fd);
    this.fd = fd;
    this.header();
  }

  /** Write out everything buffered and close the file (not stdout). Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.flush();
    } finally {
      if (this.ownsFd) fs.closeSync(this.fd);
      this.fd = -1;
    }
  }

  private flush(): void {
    const n = this.pos;
    this.pos = 0;
    if (n > 0) this.writeAll(this.buf, n);
  }

  private writeAll(b: Buffer, n: number): void {
    let off = 0;
    while (off < n) {
      try {
        off += fs.writeSync(this.fd, b, off, n - off);
      } catch (e) {
        // stdout may be a non-blocking pipe shared with the event loop.
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        Atomics.wait(sleeper, 0, 0, 1);
      }
    }
  }
}
