// Capture filters are libpcap's own: the expression is compiled by
// pcap_compile and matched by libpcap's BPF interpreter, inside the riff_pcap
// addon, so a filter selects exactly what `tcpdump -r FILE EXPR` selects. The
// addon walks a whole batch per call; JS never touches individual packets.

import { Batch, HDR, align8 } from './batch.js';
import { loadNative, type Native } from './native.js';

/** The expression does not compile; the message is libpcap's, prefixed with the expression. */
export class FilterError extends Error {
  readonly expr: string;
  readonly pcapMessage: string;
  constructor(expr: string, pcapMessage: string) {
    super(`filter '${expr}': ${pcapMessage}`);
    this.name = 'FilterError';
    this.expr = expr;
    this.pcapMessage = pcapMessage;
  }
}

/** The riff_pcap addon cannot be loaded, so no filter can be compiled. */
export class FilterUnavailable extends Error {
  constructor(reason: string) {
    super(
      `packet filters need the riff_pcap addon, which could not be loaded (${reason}); ` +
        `build it with: apt-get install libpcap-dev && npm run build`,
    );
    this.name = 'FilterUnavailable';
  }
}

export interface PacketFilter {
  readonly expr: string;
  /**
   * Marks every record of `batch` the expression rejects with FLAG_FILTERED_OUT
   * and returns how many of the records not already marked passed.
   */
  apply(batch: Batch): number;
  /**
   * Link types met in records that the expression cannot be compiled for
   * (pcapng mixing interfaces), with libpcap's reason. Their packets are
   * filtered out; a CLI may want to say so once.
   */
  readonly unsupported: ReadonlyMap<number, string>;
}

export interface FilterOptions {
  /**
   * The packets come from a capture file (or pcapng section) written on a
   * machine of the other byte order. Only DLT_NULL and DLT_ENC care: their
   * link header holds an AF_ value in the capturing host's byte order, and
   * tcpdump -r compiles "ip", "ip6" etc. for such a file byte-swapped.
   */
  swapped?: boolean;
}

function addon(): Native {
  try {
    return loadNative();
  } catch (e) {
    throw new FilterUnavailable((e as Error).message);
  }
}

/** Whether filters can be compiled here (the addon is built and libpcap loads). */
export function filterAvailable(): boolean {
  try {
    addon();
    return true;
  } catch {
    return false;
  }
}

/** libpcap's version string, or null when the addon is unavailable. */
export function libpcapVersion(): string | null {
  return filterAvailable() ? addon().version() : null;
}

// "ret #0": what a link type the expression cannot be compiled for gets, so
// its packets are rejected rather than passed unexamined.
const REJECT_ALL = Buffer.from([0x06, 0, 0, 0, 0, 0, 0, 0]);

// Distinct other link types the addon reports per call; a batch with more
// falls back to a walk in JS.
const OTHERS_CAP = 16;

class CompiledFilter implements PacketFilter {
  readonly expr: string;
  private readonly linktype: number;
  private readonly snaplen: number;
  private readonly swapped: boolean;
  private readonly programs = new Map<number, Buffer>();
  private readonly rejected = new Map<number, string>();
  private readonly others = new Uint32Array(OTHERS_CAP + 1);

  constructor(expr: string, linktype: number, snaplen: number, swapped: boolean) {
    this.expr = expr;
    this.linktype = linktype;
    this.snaplen = snaplen;
    this.swapped = swapped;
    // The primary link type compiles eagerly so a bad expression fails before capture starts.
    this.programs.set(linktype, compileProgram(expr, linktype, snaplen, swapped));
  }

  get unsupported(): ReadonlyMap<number, string> {
    return this.rejected;
  }

  apply(batch: Batch): number {
    if (batch.count === 0) return 0;
    const n = addon();
    const others = this.others;
    const primary = this.programs.get(this.linktype)!;
    let passed = n.apply(primary, batch.buf, batch.count, batch.bytes, this.linktype, others);
    const found = others[0];
    if (found === 0) return passed;
    const rest =
      found > OTHERS_CAP ? otherLinktypes(batch, this.linktype) : Array.from(others.subarray(1, 1 + found));
    for (const lt of rest) {
      passed += n.apply(this.programFor(lt), batch.buf, batch.count, batch.bytes, lt);
    }
    return passed;
  }

  private programFor(linktype: number): Buffer {
    let prog = this.programs.get(linktype);
    if (!prog) {
      try {
        prog = compileProgram(this.expr, linktype, this.snaplen, this.swapped);
      } catch (e) {
        if (!(e instanceof FilterError)) throw e;
        this.rejected.set(linktype, e.pcapMessage);
        prog = REJECT_ALL;
      }
      this.programs.set(linktype, prog);
    }
    return prog;
  }
}

function compileProgram(expr: string, linktype: number, snaplen: number, swapped: boolean): Buffer {
  const n = addon();
  try {
    return n.compile(expr, linktype, snaplen, true, swapped);
  } catch (e) {
    // Argument errors are ours; a plain Error carries libpcap's complaint.
    if (e instanceof TypeError || e instanceof RangeError || !(e instanceof Error)) throw e;
    throw new FilterError(expr, e.message);
  }
}

function otherLinktypes(batch: Batch, except: number): number[] {
  const seen = new Set<number>();
  const v = batch.view;
  for (let o = 0, i = 0; i < batch.count; i++) {
    const lt = v.getUint32(o + 20, true);
    if (lt !== except) seen.add(lt);
    o += HDR + align8(v.getUint32(o + 12, true));
  }
  return [...seen];
}

/**
 * Compile `expr` for packets of `linktype` (a LINKTYPE_* value as stored in
 * capture files). Records of other link types met later (pcapng with mixed
 * interfaces) get their own program, compiled on first sight.
 * Throws FilterError for a bad expression, FilterUnavailable without the addon.
 */
export function compileFilter(
  expr: string,
  linktype: number,
  snaplen = 262144,
  options: FilterOptions = {},
): PacketFilter {
  if (!Number.isInteger(linktype) || linktype < 0 || linktype > 0xffffffff) {
    throw new RangeError(`linktype must be a 32-bit unsigned integer, got ${linktype}`);
  }
  const snap = snaplen > 0 ? snaplen : 262144;
  return new CompiledFilter(expr, linktype, snap, options.swapped === true);
}
