// Live capture through riff's addon (src/capture/native/riff_pcap.c), which
// drives libpcap itself: pcap_create, the options tcpdump sets, pcap_activate,
// then -y, -Q and the filter in the kernel. The handle is non-blocking and
// its descriptor is watched by libuv on this thread's event loop; when the
// kernel has packets, one JS callback moves every ready packet into a batch
// (straight into the worker's ring) in one addon call, with libpcap's header:
// the kernel's timestamp, the captured and the wire length. pcap_stats gives
// the counters tcpdump prints.
//
// Lua falling behind: when the ring has no room, riff stops reading the
// interface until it has, so the backlog waits in the kernel's buffer (-B)
// and what overflows it is counted by the kernel ("dropped by kernel").
import { Batch, HDR, align8 } from './batch.js';
import { loadNative, nativeOrNull, type LiveOpened } from './native.js';

export interface Device {
  name: string;
  description?: string;
  addresses: string[];
  loopback: boolean;
  up: boolean;
  running: boolean;
}

/** Why live capture cannot work here, as one line; null when it can. */
export function liveUnavailable(): string | null {
  if (nativeOrNull()) return null;
  try {
    loadNative();
    return null;
  } catch (e) {
    return (
      `live capture is unavailable: riff's libpcap addon did not load (${(e as Error).message}); ` +
      'install libpcap-dev and run npm run build:native, or read a file with -r'
    );
  }
}

export function listDevices(): Device[] {
  return loadNative().devices();
}

export interface LiveOptions {
  device: string;
  /** -s: bytes kept of each packet (0 = 262144, as tcpdump). */
  snaplen: number;
  /** Not -p. */
  promisc: boolean;
  /** -B in bytes; 0 = libpcap's default. */
  bufferBytes: number;
  /** --immediate-mode: every packet handed over at once (else within TIMEOUT_MS). */
  immediate: boolean;
  /** --time-stamp-precision nano (the default) or micro. */
  nano: boolean;
  /** -y: a data link type by libpcap's name (EN10MB, LINUX_SLL...). */
  linktypeName?: string;
  /** -Q: 0 inout, 1 in, 2 out. */
  direction?: number;
  filter: string;
}

/** libpcap's packet buffer timeout: without immediate mode, the longest a packet waits in the kernel before riff sees it. */
export const TIMEOUT_MS = 10;

/** The link types a device offers (tcpdump -L). */
export function datalinks(device: string): { dlt: number; name?: string; description?: string }[] {
  const r = loadNative().liveOpen({ device, listOnly: true, snaplen: 262144 });
  return r.datalinks ?? [];
}

/** A libpcap error with the step that failed (open, activate, linktype, direction, filter, read). */
export class LiveError extends Error {
  constructor(
    message: string,
    readonly stage: string,
  ) {
    super(message);
  }
}

export interface LiveSink {
  /** A batch with room for `min` bytes (in the worker's ring), or null while Lua is behind. */
  reserve(min: number): Batch | null;
  /** The batch filled (possibly empty): hand it on. */
  deliver(b: Batch): void;
  /** libpcap failed while reading (the device went away). */
  failed(e: LiveError): void;
}

export interface LiveStats {
  /** "packets received by filter" */
  received: number;
  /** "packets dropped by kernel" */
  droppedByKernel: number;
  /** "packets dropped by interface" */
  droppedByInterface: number;
}

export class LiveCapture {
  readonly linktype: number;
  readonly snaplen: number;
  /** Timestamps are nanosecond (else microsecond). */
  readonly nano: boolean;
  readonly dltName: string;
  /** libpcap's activation warning or a precision fallback, said once at start. */
  readonly warning: string | null;
  /** Packets read from libpcap. */
  read = 0;
  closed = false;
  private readonly handle: unknown;
  private readonly io = new Uint32Array(2);
  private readonly minBytes: number;
  private retry: NodeJS.Timeout | null = null;
  private last: LiveStats = { received: 0, droppedByKernel: 0, droppedByInterface: 0 };

  /** Opens and activates the device; throws LiveError with libpcap's message. */
  constructor(
    readonly opts: LiveOptions,
    private readonly sink: LiveSink,
    private readonly batchPackets = 4096,
  ) {
    let r: LiveOpened;
    try {
      r = loadNative().liveOpen({ ...opts, timeoutMs: TIMEOUT_MS, snaplen: opts.snaplen || 262144 });
    } catch (e) {
      throw new LiveError((e as Error).message, (e as { stage?: string }).stage ?? 'open');
    }
    this.handle = r.handle;
    this.linktype = r.linktype;
    this.snaplen = r.snaplen;
    this.nano = r.nano;
    this.dltName = r.dltName ?? `DLT ${r.dlt}`;
    this.warning = r.warning ?? null;
    this.minBytes = HDR + align8(this.snaplen);
  }

  /** Start delivering. */
  start(): void {
    loadNative().liveWatch(this.handle, this.ready);
  }

  /** The kernel has packets: take a few batches' worth, then let the loop run (it calls again while there are more). */
  private readonly ready = (): void => {
    for (let k = 0; k < 8 && !this.closed; k++) {
      const n = this.readBatch();
      if (n < 0) return this.pause();
      if (n < this.batchPackets) return;
    }
  };

  /** One batch from libpcap into the sink; -1 when the sink had no room. */
  private readBatch(): number {
    const b = this.sink.reserve(this.minBytes);
    if (!b) return -1;
    this.io[0] = b.bytes;
    this.io[1] = this.batchPackets - b.count;
    let n = 0;
    try {
      n = loadNative().liveRead(this.handle, b.buf, this.io);
    } catch (e) {
      this.sink.deliver(b);
      this.pause(false);
      this.sink.failed(new LiveError((e as Error).message, 'read'));
      return 0;
    }
    b.count += n;
    b.bytes = this.io[0];
    this.read += n;
    this.sink.deliver(b);
    return n;
  }

  /** Lua is behind: stop reading (the kernel buffers) and look again shortly. */
  private pause(retry = true): void {
    loadNative().liveWatch(this.handle, null);
    if (!retry || this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.closed) this.start();
    }, 2);
  }

  /** pcap_stats: cumulative since the capture opened. */
  stats(): LiveStats {
    if (this.closed) return this.last;
    try {
      const [received, droppedByKernel, droppedByInterface] = loadNative().liveStats(this.handle);
      this.last = { received, droppedByKernel, droppedByInterface };
    } catch {
      // The device is gone: the last counters read are the best there are.
    }
    return this.last;
  }

  /**
   * Stop: with `drain`, first wait out libpcap's buffer timeout and read
   * what the kernel still holds (as far as the ring has room); then take
   * the final counters and close.
   */
  async close(drain: boolean): Promise<LiveStats> {
    if (this.closed) return this.last;
    if (this.retry) clearTimeout(this.retry);
    loadNative().liveWatch(this.handle, null);
    if (drain) {
      await new Promise((r) => setTimeout(r, this.opts.immediate ? 1 : TIMEOUT_MS + 5));
      for (let k = 0; k < 64; k++) if (this.readBatch() <= 0) break;
    }
    this.stats();
    this.closed = true;
    loadNative().liveClose(this.handle);
    return this.last;
  }
}
