// pcapng, read the way libpcap's sf-pcapng.c reads it, with two deliberate
// extensions: interfaces may differ in link type and snapshot length (libpcap
// refuses such files; tshark and riff's per-packet link type handle them), and
// each section may have its own byte order.

import type { Batch } from './batch.js';
import { CaptureFileError, Warnings, fillFrom, adjustSnaplen, maxSnaplen, plural, type CaptureFile, type Source } from './reader.js';

/** First four bytes of every pcapng file (the SHB type, the same in both byte orders). */
export const PCAPNG_MAGIC = 0x0a0d0d0a;

const BT_SHB = PCAPNG_MAGIC;
const BT_IDB = 1;
const BT_PB = 2; // obsolete Packet Block
const BT_SPB = 3;
const BT_NRB = 4;
const BT_ISB = 5;
const BT_EPB = 6;
const BT_DSB = 10;
const BT_CB_COPY = 0x00000bad;
const BT_CB_NOCOPY = 0x40000bad;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

// Smallest legal total length of each block type: header, fixed part, trailer.
const MIN_BLOCK = 12;
const MIN_SHB = 28;
const MIN_IDB = 20;
const MIN_SPB = 16;
const MIN_EPB = 32; // the obsolete PB has the same fixed size
// libpcap's limits: the first SHB may not exceed 1 MiB (BT_SHB_INSANE_MAX), any
// block 16 MiB, raised for link types whose packets may be larger.
const MAX_FIRST_SHB = 1024 * 1024;
const MAX_BLOCK = 16 * 1024 * 1024;
const maxBlockFor = (linktype: number): number => Math.max(MAX_BLOCK, 8 + 20 + maxSnaplen(linktype) + 131072 + 4);

const TWO32 = 4294967296;

class Iface {
  constructor(
    readonly linktype: number,
    readonly snaplen: number,
    /** Ticks per second (if_tsresol): 10^d or 2^b. */
    readonly ticks: number,
    /** ns = floor(frac * mul / div), exact in doubles when ticks <= 2^32. */
    readonly mul: number,
    readonly div: number,
    /** Seconds added to every time stamp (if_tsoffset). */
    readonly tsoffset: number,
  ) {}
  /** Past 2^32 ticks/s the double arithmetic would round: use BigInt (rare: sub-ns resolutions). */
  get big(): boolean {
    return this.ticks > TWO32;
  }
}

export class PcapngFile implements CaptureFile {
  readonly container = 'pcapng';
  linktype = -1;
  snaplen = 0;
  private le = true;
  private readonly ifaces: Iface[] = [];
  /** Global index of this section's interface 0; interfaces declared in it. */
  private sectionBase = 0;
  private sectionCount = 0;
  private sections = 0;
  private maxBlock = MAX_BLOCK;
  /** Length of the block at src.pos, set by block(). */
  private blen = 0;
  private packets = 0;
  private readonly warn = new Warnings();
  failure: CaptureFileError | null = null;
  // Time stamp of the packet being decoded, written by stamp().
  private sec = 0;
  private nsec = 0;

  constructor(
    readonly path: string,
    private readonly src: Source,
    /** Records with more captured bytes are skipped and counted. */
    private readonly maxRecord = Infinity,
  ) {
    // libpcap reads up to the first IDB before returning from open; the link
    // type is then known to whoever opens the file.
    while (this.ifaces.length === 0) {
      const type = this.block();
      if (type < 0) throw new CaptureFileError(`${src.name}: pcapng file has no Interface Description Block`, src.offset);
      if (type === BT_EPB || type === BT_SPB || type === BT_PB) {
        throw new CaptureFileError(`packet block before any Interface Description Block`, src.offset);
      }
      this.control(type);
      src.pos += this.blen;
    }
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
    let n = 0;
    while (n < max) {
      const type = this.block();
      if (type < 0) break;
      const p = s.pos;
      const len = this.blen;
      const v = s.view;
      const le = this.le;
      let id: number;
      let caplen: number;
      let wirelen: number;
      let hi = 0;
      let lo = 0;
      let room: number;
      if (type === BT_EPB || type === BT_PB) {
        if (len < MIN_EPB) throw this.tooShort(type, len, MIN_EPB);
        // The PB's interface id is 16 bits, followed by a drops count.
        id = type === BT_EPB ? v.getUint32(p + 8, le) : v.getUint16(p + 8, le);
        hi = v.getUint32(p + 12, le);
        lo = v.getUint32(p + 16, le);
        caplen = v.getUint32(p + 20, le);
        wirelen = v.getUint32(p + 24, le);
        room = len - MIN_EPB;
      } else if (type === BT_SPB) {
        if (len < MIN_SPB) throw this.tooShort(type, len, MIN_SPB);
        id = 0;
        wirelen = v.getUint32(p + 8, le);
        caplen = wirelen; // narrowed to the snapshot length below, once the interface is known
        room = len - MIN_SPB;
      } else {
        this.control(type);
        s.pos = p + len;
        continue;
      }
      if (id >= this.sectionCount) {
        throw new CaptureFileError(
          `packet ${this.packets + 1}: ${type === BT_SPB ? 'simple packet block' : 'packet'} on interface ${id}, ` +
            `but section ${this.sections} declares ${plural(this.sectionCount, 'interface')}`,
          s.offset,
        );
      }
      const g = this.sectionBase + id;
      const ifc = this.ifaces[g];
      if (type === BT_SPB && caplen > ifc.snaplen) caplen = ifc.snaplen; // an SPB's captured length is implied
      let keep = caplen;
      if (keep > ifc.snaplen) keep = ifc.snaplen;
      if (type === BT_SPB) {
        if (keep > room) keep = room;
      } else if (keep > room) {
        throw new CaptureFileError(
          `packet ${this.packets + 1}: captured length ${keep} exceeds the ${room} bytes its block holds`,
          s.offset,
        );
      }
      if (keep > this.maxRecord) {
        // The block is already whole in the buffer (block() checked it).
        s.pos = p + len;
        this.skipped++;
        this.packets++;
        continue;
      }
      if (n > 0 && !batch.fits(keep)) break;
      if (type !== BT_SPB) this.stamp(ifc, hi, lo);
      else {
        // No time stamp in an SPB; libpcap reports 0 plus the interface offset.
        this.sec = ifc.tsoffset;
        this.nsec = 0;
      }
      batch.push(this.sec, this.nsec, s.buf, p + (type === BT_SPB ? 12 : 28), keep, wirelen, ifc.linktype, g, 0);
      s.pos = p + len;
      this.packets++;
      n++;
      if (keep !== caplen) this.noteCut(type, caplen, keep, ifc);
    }
  }

  close(): void {
    this.src.close();
  }

  /**
   * Validate the block at src.pos and make all of it available in the buffer.
   * Returns its type, or -1 at a clean end of file; its length is left in blen.
   */
  private block(): number {
    const s = this.src;
    let avail = s.end - s.pos;
    if (avail < 12) {
      avail = s.need(12);
      if (avail === 0) return -1;
      // 8..11 bytes could still be a valid 12-byte block, checked below.
      if (avail < 8) throw new CaptureFileError(`truncated block header (${avail} of 8 bytes before end of file)`, s.offset);
    }
    let p = s.pos;
    let v = s.view;
    const type = v.getUint32(p, this.le);
    if (type === BT_SHB) {
      // Each section declares its own byte order, and the length field is
      // written in it, so read the magic before trusting the length.
      if (avail < 12) throw new CaptureFileError(`truncated section header block (${avail} bytes before end of file)`, s.offset);
      const bom = v.getUint32(p + 8, true);
      if (bom === BYTE_ORDER_MAGIC) this.le = true;
      else if (bom === 0x4d3c2b1a) this.le = false;
      else {
        throw new CaptureFileError(
          `section header block has a bad byte-order magic 0x${bom.toString(16).padStart(8, '0')}`,
          s.at(p + 8),
        );
      }
    }
    const le = this.le;
    const len = v.getUint32(p + 4, le);
    const what = type === BT_SHB ? 'section header block' : `block of type 0x${type.toString(16)}`;
    if (len === 0) throw new CaptureFileError(`${what} has a total length of 0`, s.offset);
    if (len < MIN_BLOCK) throw new CaptureFileError(`${what} has a total length of ${len} < the minimum ${MIN_BLOCK}`, s.offset);
    if (len % 4 !== 0) throw new CaptureFileError(`${what} has a total length of ${len}, not a multiple of 4`, s.offset);
    const limit = type === BT_SHB && this.sections === 0 ? MAX_FIRST_SHB : this.maxBlock;
    if (len > limit) throw new CaptureFileError(`${what} has an absurd total length of ${len} (maximum ${limit})`, s.offset);
    if (avail < len) {
      avail = s.need(len);
      if (avail < len) {
        throw new CaptureFileError(
          `truncated ${what}: total length ${len} but only ${avail} bytes before end of file`,
          s.offset,
        );
      }
      p = s.pos;
      v = s.view;
    }
    const trail = v.getUint32(p + len - 4, le);
    // libpcap does not check the first section header's trailing length
    // (it reads the header's fields and skips to its end): neither does riff,
    // so it reads every file libpcap reads.
    if (trail !== len && !(type === BT_SHB && this.sections === 0)) {
      throw new CaptureFileError(`${what} has trailing total length ${trail} not equal to the leading ${len}`, s.offset);
    }
    this.blen = len;
    return type;
  }

  /** Everything but packets: sections, interfaces, and blocks that carry nothing for riff. */
  private control(type: number): void {
    switch (type) {
      case BT_SHB:
        return this.section();
      case BT_IDB:
        return this.iface();
      case BT_NRB:
      case BT_ISB:
      case BT_DSB:
      case BT_CB_COPY:
      case BT_CB_NOCOPY:
        return; // name resolution, statistics, secrets, custom data: metadata riff does not use
      default: {
        const hex = `0x${type.toString(16).padStart(8, '0')}`;
        const kind = type >= 0x80000000 ? 'local-use' : 'unknown';
        this.warn.note(`block ${hex}`, (k) => `skipped ${plural(k, 'block')} of ${kind} type ${hex}`);
      }
    }
  }

  private section(): void {
    const s = this.src;
    const p = s.pos;
    if (this.blen < MIN_SHB) throw this.tooShort(BT_SHB, this.blen, MIN_SHB);
    const major = s.view.getUint16(p + 12, this.le);
    const minor = s.view.getUint16(p + 14, this.le);
    // libpcap accepts 1.0, and 1.2 which a few writers used while the spec
    // briefly said so; later sections are only held to the major version.
    if (major !== 1 || (this.sections === 0 && minor !== 0 && minor !== 2)) {
      throw new CaptureFileError(`unsupported pcapng version ${major}.${minor}`, s.offset);
    }
    this.sections++;
    this.sectionBase = this.ifaces.length;
    this.sectionCount = 0;
  }

  private iface(): void {
    const s = this.src;
    const v = s.view;
    const le = this.le;
    const p = s.pos;
    const len = this.blen;
    if (len < MIN_IDB) throw this.tooShort(BT_IDB, len, MIN_IDB);
    const linktype = v.getUint16(p + 8, le);
    const snaplen = adjustSnaplen(linktype, v.getUint32(p + 12, le));
    let resol = -1;
    let offset: bigint | null = null;
    const bad = (why: string, at: number) => new CaptureFileError(`interface description block: ${why}`, s.at(at));
    // Options run to the trailer; libpcap rejects malformed ones, so do we.
    for (let o = p + 16, stop = p + len - 4; o < stop; ) {
      if (stop - o < 4) throw bad('truncated option header', o);
      const code = v.getUint16(o, le);
      const olen = v.getUint16(o + 2, le);
      const padded = (olen + 3) & ~3;
      if (padded > stop - o - 4) throw bad(`option ${code} of length ${olen} runs past the end of the block`, o);
      if (code === 0) {
        if (olen !== 0) throw bad(`opt_endofopt has length ${olen}, not 0`, o);
        break;
      }
      if (code === 9) {
        if (olen !== 1) throw bad(`if_tsresol has length ${olen}, not 1`, o);
        if (resol >= 0) throw bad('more than one if_tsresol', o);
        resol = v.getUint8(o + 4);
        if (resol & 0x80 ? (resol & 0x7f) > 63 : resol > 19) {
          throw bad(`if_tsresol ${resol & 0x80 ? '2' : '10'}^-${resol & 0x7f} is too fine to represent`, o);
        }
      } else if (code === 14) {
        if (olen !== 8) throw bad(`if_tsoffset has length ${olen}, not 8`, o);
        if (offset !== null) throw bad('more than one if_tsoffset', o);
        offset = v.getBigInt64(o + 4, le);
      }
      o += 4 + padded;
    }
    if (resol < 0) resol = 6; // default: microseconds
    let ticks: number;
    let mul: number;
    let div: number;
    if (resol & 0x80) {
      const b = resol & 0x7f;
      ticks = 2 ** b;
      // frac * 1e9 / 2^b = frac * 5^9 / 2^(b-9): below 2^53 while b <= 32.
      mul = 1953125;
      div = 2 ** (b - 9);
    } else {
      ticks = 10 ** resol;
      mul = resol <= 9 ? 10 ** (9 - resol) : 1;
      div = 1;
    }
    const ifc = new Iface(linktype, snaplen, ticks, mul, div, offset === null ? 0 : Number(offset));
    this.ifaces.push(ifc);
    this.sectionCount++;
    if (this.linktype < 0) {
      this.linktype = linktype;
      this.snaplen = snaplen;
    }
    this.maxBlock = Math.max(this.maxBlock, maxBlockFor(linktype));
  }

  /** Split a 64-bit tick count into seconds and nanoseconds, exactly (truncating, as libpcap does). */
  private stamp(ifc: Iface, hi: number, lo: number): void {
    const R = ifc.ticks;
    let sec: number;
    let frac: number;
    if (hi < 0x200000) {
      // The whole count fits a double's 53 bits: one exact remainder.
      const t = hi * TWO32 + lo;
      frac = t % R;
      sec = (t - frac) / R;
    } else if (!ifc.big) {
      // Long division in 16-bit digits keeps every intermediate below 2^48.
      const q1 = Math.floor(hi / R);
      let r = hi - q1 * R;
      let cur = r * 65536 + (lo >>> 16);
      const q2 = Math.floor(cur / R);
      r = cur - q2 * R;
      cur = r * 65536 + (lo & 0xffff);
      const q3 = Math.floor(cur / R);
      frac = cur - q3 * R;
      sec = q1 * TWO32 + q2 * 65536 + q3;
    } else return this.stampBig(ifc, hi, lo);
    if (R > TWO32) {
      // Finer than 2^-32 s but a small count: the fraction may not scale exactly.
      const ns = (BigInt(frac) * 1000000000n) / BigInt(R);
      this.nsec = Number(ns);
    } else {
      this.nsec = Math.floor((frac * ifc.mul) / ifc.div);
    }
    this.sec = sec + ifc.tsoffset;
  }

  private stampBig(ifc: Iface, hi: number, lo: number): void {
    const t = (BigInt(hi) << 32n) | BigInt(lo);
    const R = BigInt(ifc.ticks);
    this.sec = Number(t / R) + ifc.tsoffset;
    this.nsec = Number(((t % R) * 1000000000n) / R);
  }

  private tooShort(type: number, len: number, min: number): CaptureFileError {
    const names: Record<number, string> = {
      [BT_SHB]: 'section header block',
      [BT_IDB]: 'interface description block',
      [BT_PB]: 'packet block',
      [BT_SPB]: 'simple packet block',
      [BT_EPB]: 'enhanced packet block',
    };
    return new CaptureFileError(`${names[type]} has a total length of ${len} < the minimum ${min} for its type`, this.src.offset);
  }

  private noteCut(type: number, caplen: number, keep: number, ifc: Iface): void {
    if (type !== BT_SPB) {
      this.warn.note(
        `over-snaplen ${ifc.snaplen}`,
        (k) => `${plural(k, 'packet')} longer than the interface snapshot length ${ifc.snaplen} (cut to it; libpcap stops reading such a file at the first)`,
      );
    } else {
      this.warn.note('short spb', (k) => `${plural(k, 'simple packet block')} shorter than the packet (cut to the block)`);
    }
  }
}
