// Live capture through `cap` (libpcap). cap hands each packet over in one
// reused Buffer with its length only — no timestamp, no wire length — so
// riff stamps packets on arrival and flags them (FLAG_ARRIVAL_TS); the wire
// length is the captured length unless cap says it truncated.
import { createRequire } from 'node:module';
import { Batch, FLAG_ARRIVAL_TS } from './batch.js';

const require = createRequire(import.meta.url);

interface CapHandle {
  open(device: string, filter: string, bufSize: number, buffer: Buffer): string;
  close(): void;
  on(ev: 'packet', fn: (nbytes: number, truncated: boolean) => void): void;
  setMinBytes?(n: number): void;
}
interface CapModule {
  Cap: { new (): CapHandle; deviceList(): Device[] };
}
export interface Device {
  name: string;
  description?: string;
  addresses: { addr: string }[];
  flags?: string;
}

/** Why live capture cannot work here, as one line; null when cap loads. */
let capError: string | null = null;
let cap: CapModule | null = null;
function loadCap(): CapModule | null {
  if (cap || capError) return cap;
  try {
    cap = require('cap') as CapModule;
  } catch (e) {
    capError =
      `live capture is unavailable: the 'cap' module did not load (${(e as Error).message.split('\n')[0]}); ` +
      'install libpcap (apt-get install libpcap-dev) and rebuild it (npm rebuild cap), or read a file with -r';
  }
  return cap;
}

export function liveUnavailable(): string | null {
  loadCap();
  return capError;
}

export function listDevices(): Device[] {
  const c = loadCap();
  if (!c) throw new Error(capError!);
  return c.Cap.deviceList();
}

// cap names a few link types and reports the rest as "Unknown linktype N"
// with libpcap's DLT number; riff speaks LINKTYPE_* values, as files do.
const CAP_LINKTYPES: Record<string, number> = {
  NULL: 0,
  ETHERNET: 1,
  IEEE802_11_RADIO: 127,
  LINKTYPE_LINUX_SLL: 113,
  RAW: 101,
};
const DLT_TO_LINKTYPE: Record<number, number> = { 12: 101, 14: 101, 11: 100 };

export function linktypeOf(capName: string): number {
  if (capName in CAP_LINKTYPES) return CAP_LINKTYPES[capName];
  const m = /(\d+)/.exec(capName);
  const dlt = m ? Number(m[1]) : -1;
  return DLT_TO_LINKTYPE[dlt] ?? dlt;
}

export const SNAPLEN = 65535; // what cap sets; riff's buffer matches it

export class LiveCapture {
  readonly linktype: number;
  private readonly handle: CapHandle;
  private readonly buf = Buffer.alloc(SNAPLEN);
  private readonly batch = new Batch(1 << 20);
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.timeOrigin;
  /** Packets cap handed over. */
  received = 0;
  closed = false;

  /**
   * Opens the device; throws with libpcap's message (bad filter, permission).
   * onBatch gets batches of packets as they fill, or every `flushMs` when traffic is slow.
   */
  constructor(
    readonly device: string,
    filter: string,
    private readonly onBatch: (b: Batch) => void,
    bufferBytes = 32 << 20,
    private readonly batchPackets = 512,
    flushMs = 20,
  ) {
    const c = loadCap();
    if (!c) throw new Error(capError!);
    this.handle = new c.Cap();
    const lt = this.handle.open(device, filter, bufferBytes, this.buf);
    this.linktype = linktypeOf(lt);
    this.handle.on('packet', (nbytes, truncated) => this.arrive(nbytes, truncated));
    this.timer = setInterval(() => this.flush(), flushMs);
  }

  private arrive(nbytes: number, truncated: boolean): void {
    if (this.closed) return;
    this.received++;
    const ms = this.t0 + performance.now();
    const sec = Math.floor(ms / 1000);
    const nsec = Math.floor((ms - sec * 1000) * 1e6);
    // Truncated by cap's buffer: the wire length is at least one byte more, but unknown.
    this.batch.push(sec, nsec, this.buf, 0, nbytes, truncated ? nbytes + 1 : nbytes, this.linktype, 0, FLAG_ARRIVAL_TS);
    if (this.batch.count >= this.batchPackets) this.flush();
  }

  flush(): void {
    if (this.batch.count === 0) return;
    // Consumers handle a batch synchronously (or copy it), so one is reused.
    this.onBatch(this.batch);
    this.batch.reset();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    try {
      this.handle.close();
    } catch {
      /* already closed */
    }
    // What arrived before the stop still goes to the consumer.
    this.flush();
  }
}
