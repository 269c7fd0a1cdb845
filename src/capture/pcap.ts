// Classic pcap savefiles, read the way libpcap's sf-pcap.c reads them.

import type { Batch } from './batch.js';
import { nativeOrNull } from './native.js';
import { CaptureFileError, Warnings, fillFrom, adjustSnaplen, maxSnaplen, plural, type CaptureFile, type Source } from './reader.js';

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
// Alexey Kuznetzov's patched libpcap: 8 more bytes per record header
// (ifindex, protocol, packet type). libpcap still reads these; so do we.
const MAGIC_KUZNETZOV = 0xa1b2cd34;
const FILE_HEADER = 24;
const LT_FCS_LENGTH_PRESENT = 0x04000000;

const swap32 = (x: number): number => (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
const known = (m: number): boolean => m === MAGIC_US || m === MAGIC_NS || m === MAGIC_KUZNETZOV;

/** `magic` is the first four bytes read big-endian. */
export const isPcapMagic = (magic: number): boolean => known(magic) || known(swap32(magic));

// Pre-2.4 writers put the wire length where the captured length belongs.
const LENGTHS_OK = 0;
const LENGTHS_SWAPPED = 1;
const LENGTHS_MAYBE_SWAPPED = 2; // 2.3: swapped only where caplen > len gives it away

export class PcapFile implements CaptureFile {
  readonly container = 'pcap';
  readonly linktype: number;
  readonly snaplen: number;
  private readonly le: boolean;
  private readonly nsPerTick: number; // 1000 for µs files, 1 for ns files
  private readonly ticksPerSec: number;
  private readonly recHeader: number;
  private readonly maxCaplen: number;
  private readonly lengths: number;
  private readonly warn = new Warnings();
  private packets = 0;
  private readonly params: Uint32Array;
  private readonly io = new Uint32Array(4);
  failure: CaptureFileError | null = null;

  constructor(
    readonly path: string,
    private readonly src: Source,
    /** Records with more captured bytes are skipped and counted. */
    private readonly maxRecord = Infinity,
  ) {
    const got = src.need(FILE_HEADER);
    if (got < FILE_HEADER) throw new CaptureFileError(`${src.name}: truncated pcap file header (${got} of ${FILE_HEADER} bytes)`, 0);
    const v = src.view;
    let magic = v.getUint32(0, true);
    this.le = known(magic);
    if (!this.le) magic = v.getUint32(0, false);
    const le = this.le;
    const major = v.getUint16(4, le);
    const minor = v.getUint16(6, le);
    if (major < 2) throw new CaptureFileError(`${src.name}: archaic pcap format version ${major}.${minor}`, 4);
    // 543.0 is DG/UX tcpdump's, otherwise 2.4 layout; libpcap accepts exactly these.
    if (!((major === 2 && minor <= 4) || (major === 543 && minor === 0))) {
      throw new CaptureFileError(`${src.name}: unsupported pcap version ${major}.${minor}`, 4);
    }
    this.lengths = major === 543 || minor <= 2 ? LENGTHS_SWAPPED : minor === 3 ? LENGTHS_MAYBE_SWAPPED : LENGTHS_OK;
    const rawSnap = v.getUint32(16, le);
    const raw = v.getUint32(20, le);
    // The upper bits only carry FCS information when the FCS-present bit says
    // so; otherwise they are junk (fuzzed files), and the link type is the low 16.
    this.linktype = raw & LT_FCS_LENGTH_PRESENT ? raw : raw & 0xffff;
    const dlt = raw & 0xffff;
    this.maxCaplen = maxSnaplen(dlt);
    let snap = adjustSnaplen(dlt, rawSnap);
    this.recHeader = 16;
    if (magic === MAGIC_KUZNETZOV) {
      this.recHeader = 24;
      // libpcap assumes a cooked capture there, which adds a fake 14-byte
      // Ethernet header past the snapshot length.
      if (dlt === 1) snap += 14;
    }
    this.snaplen = snap;
    this.nsPerTick = magic === MAGIC_NS ? 1 : 1000;
    this.ticksPerSec = magic === MAGIC_NS ? 1e9 : 1e6;
    this.params = Uint32Array.from([le ? 1 : 0, this.recHeader, snap, this.maxCaplen, this.linktype, this.ticksPerSec, this.nsPerTick]);
    src.pos = FILE_HEADER;
  }

  get offset(): number {
    return this.src.offset;
  }

  get warnings(): string[] {
    return this.warn.list;
  }

  skipped = 0;

  more(): Promise<void> {
    return this.src.more();
  }

  fill(batch: Batch, max: number): number {
    return fillFrom(this, this.src, batch, max, () => this.read(batch, max));
  }

  private read(batch: Batch, max: number): void {
    const s = this.src;
    const le = this.le;
    const hs = this.recHeader;
    const snap = this.snaplen;
    const lt = this.linktype;
    const tps = this.ticksPerSec;
    const nspt = this.nsPerTick;
    // The addon takes plain records in bulk; this loop does the rest (buffer
    // ends, oddities, no addon), one record at a time.
    const fast = this.lengths === LENGTHS_OK ? nativeOrNull() : null;
    const params = this.params;
    const io = this.io;
    let n = 0;
    while (n < max) {
      if (fast) {
        io[0] = s.pos;
        io[1] = s.end;
        io[2] = batch.bytes;
        io[3] = max - n;
        const k = fast.pcapRecords(batch.buf, s.buf, params, io);
        if (k) {
          s.pos = io[0];
          batch.bytes = io[1];
          batch.count += k;
          this.packets += k;
          n += k;
          continue;
        }
      }
      let avail = s.end - s.pos;
      if (avail < hs) {
        avail = s.need(hs);
        if (avail === 0) break;
        if (avail < hs) {
          throw new CaptureFileError(
            `packet ${this.packets + 1}: truncated record header (${avail} of ${hs} bytes before end of file)`,
            s.offset,
          );
        }
      }
      let p = s.pos;
      let v = s.view;
      let caplen = v.getUint32(p + 8, le);
      let wirelen = v.getUint32(p + 12, le);
      if (this.lengths !== LENGTHS_OK && (this.lengths === LENGTHS_SWAPPED || caplen > wirelen)) {
        const t = caplen;
        caplen = wirelen;
        wirelen = t;
      }
      if (caplen > this.maxCaplen) {
        throw new CaptureFileError(
          `packet ${this.packets + 1}: captured length ${caplen} exceeds the maximum ${this.maxCaplen}`,
          s.offset,
        );
      }
      // Like libpcap, keep a record longer than the snapshot length (old
      // Solaris writers got the header wrong) but cut it to that length.
      const keep = caplen > snap ? snap : caplen;
      const rec = hs + caplen;
      if (keep > this.maxRecord) {
        const got = s.skip(rec);
        if (got < rec) {
          throw new CaptureFileError(
            `packet ${this.packets + 1}: truncated record (needs ${rec} bytes, ${got} before end of file)`,
            s.at(s.pos) - got,
          );
        }
        this.skipped++;
        this.packets++;
        continue;
      }
      if (n > 0 && !batch.fits(keep)) break;
      if (avail < rec) {
        avail = s.need(rec);
        if (avail < rec) {
          throw new CaptureFileError(
            `packet ${this.packets + 1}: truncated record (needs ${rec} bytes, ${avail} before end of file)`,
            s.offset,
          );
        }
        p = s.pos;
        v = s.view;
      }
      let sec = v.getUint32(p, le);
      let frac = v.getUint32(p + 4, le);
      // Fuzzed and buggy writers put a second's worth or more in the
      // fraction; carry it, which keeps sec*1e6+usec what libpcap reports.
      if (frac >= tps) {
        const carry = Math.floor(frac / tps);
        sec += carry;
        frac -= carry * tps;
      }
      batch.push(sec, frac * nspt, s.buf, p + hs, keep, wirelen, lt, 0, 0);
      s.pos = p + rec;
      this.packets++;
      n++;
      if (keep !== caplen) {
        this.warn.note(
          'over-snaplen',
          (k) => `${plural(k, 'packet')} longer than the snapshot length ${snap} (truncated to it, as libpcap does)`,
        );
      }
    }
  }

  close(): void {
    this.src.close();
  }
}
