// The capture thread's side of a run: read a file or capture live, filter,
// -c, -w, number and count each batch, hand it to the Lua workers, and keep
// what the summary needs. Stopping (Ctrl-C, -c, a failed output or -w, a
// failed interface) goes through halt(), from anywhere.
import fs from 'node:fs';
import { Batch, FLAG_FILTERED_OUT, HDR, align8, stampIds, type Clock } from '../capture/batch.js';
import { openCaptureFileAsync, CaptureFileError, WouldBlock, type CaptureFile } from '../capture/file.js';
import { compileFilter, FilterError, FilterUnavailable, type PacketFilter } from '../capture/filter.js';
import { LiveCapture, listDevices, liveUnavailable, type LiveStats } from '../capture/live.js';
import { PcapWriter, PcapWriteError, type PcapWriterOptions } from '../outputs/pcap-writer.js';
import { dropPrivileges, microPcap, type tcpdumpFlags } from '../tcpdump-flags.js';
import type { LuaPool } from '../vm/pool.js';
import { Fail, note, type Args } from './args.js';
import type { Counters } from './summary.js';
import { Progress } from './progress.js';
import { terminal } from '../outputs/fd-sink.js';

/** In place of a file that was still opening when riff was told to stop. */
const NO_FILE: CaptureFile = {
  path: '',
  container: 'pcap',
  linktype: 1,
  snaplen: 0,
  offset: 0,
  warnings: [],
  skipped: 0,
  fill: () => 0,
  more: async () => {},
  close: () => {},
};

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The Lua heap for --stats: the total, each worker's when there are several, and what VMs retired by a reload still hold. */
function luaHeap(h: { workers: number[]; retiring: number; js: number[] }, verbose: boolean): string {
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const each = (xs: number[]) => (xs.length > 1 ? ` (${xs.map((b) => (b / 2 ** 20).toFixed(1)).join(' + ')} per worker)` : '');
  const lua = `Lua heap ${mib(sum(h.workers))}${each(h.workers)}${h.retiring ? `, ${mib(h.retiring)} in VMs a reload retired` : ''}`;
  if (!verbose) return lua;
  // --verbose: V8's heaps too, the capture thread's and the workers', for telling a leak's place.
  const m = process.memoryUsage();
  return `${lua}, JS heap ${mib(m.heapUsed)} here (${mib(m.external)} external) and ${mib(sum(h.js))} in the workers${each(h.js)}`;
}

/** Keep only the first `left` passed packets of the batch; returns how many records were kept. */
function cutAt(batch: Batch, left: number): void {
  let seen = 0;
  let o = 0;
  let kept = 0;
  for (let i = 0; i < batch.count; i++) {
    const caplen = batch.view.getUint32(o + 12, true);
    const flags = batch.view.getUint32(o + 28, true);
    if (seen >= left) break;
    if (!(flags & FLAG_FILTERED_OUT)) seen++;
    o += HDR + align8(caplen);
    kept++;
  }
  batch.count = kept;
  batch.bytes = o;
}

export class CaptureSession {
  stopping = false;
  interrupted = false;
  /** Standard output's reader went away (`riff | head`): riff stopped there, quietly, as tcpdump does; the summary says so. */
  readerGone = false;
  /** -r: the file was read to its end. */
  endOfInput = false;
  readonly stdoutClosed = (): void => {
    this.readerGone = true;
    this.halt();
  };
  onStop: () => void = () => {};
  private wake: () => void = () => {};
  // Resolves once riff is to stop: ends a wait on an idle pipe.
  readonly stopped = new Promise<void>((r) => (this.wake = r));
  readonly halt = () => {
    this.stopping = true;
    this.wake();
    this.onStop();
  };
  /** Set once the Lua workers run. */
  pool!: LuaPool;
  readonly counters: Counters = { read: 0, passed: 0 };
  /** The filter in force (the command line's, -F's, or config.lua's). */
  filterExpr = '';
  // SIGHUP: compiles a changed config.lua filter for the open capture; the
  // step it returns puts it in force.
  refilter: ((expr: string) => () => void) | null = null;
  outputFailed = false;
  writer: PcapWriter | null = null;
  writerFailed = false;
  writerMissed = 0;
  damage: CaptureFileError | null = null;
  skipped = 0;
  capture: LiveCapture | null = null;
  kernel: LiveStats | null = null;
  loopback = false;
  liveFailure: string | null = null;
  private readonly limit: number | undefined;
  private nextId = 1;
  /** The capture's clock, stamped into every packet with its id (batch.ts stampIds). */
  private readonly clock: Clock = { sec: -Infinity, nsec: 0 };
  private source = '';

  constructor(
    private readonly args: Args,
    private readonly flags: ReturnType<typeof tcpdumpFlags>,
  ) {
    this.limit = args.c;
  }

  // Reader messages name the file for some problems; say it once either way.
  readonly named = (msg: string) => (msg.startsWith(this.source) ? msg : `${this.source}: ${msg}`);

  // -w failing (disk full, device error) takes the same path as a record output.
  private writerFault(e: PcapWriteError): void {
    // Its reader gone (`-w - | head -c 100`): riff ends quietly, as when a
    // reader closes the script's stdout; the summary counts what was not written.
    if (e.readerClosed) return this.stdoutClosed();
    this.writerFailed = true;
    if (!e.stalled) this.outputFailed = true;
    note(e.message);
    this.halt();
  }

  /**
   * SIGUSR1: -w opens its path anew if its file was moved away ('opened'),
   * else keeps it ('kept', also with no -w). One that cannot be created is
   * said in one line and riff writes on to the file it has; a new file
   * whose header cannot be written ends -w as any failed write does (both
   * 'failed').
   */
  reopenWriter(): 'opened' | 'kept' | 'failed' {
    const w = this.writer;
    if (!w || this.writerFailed) return 'kept';
    try {
      return w.reopen() ? 'opened' : 'kept';
    } catch (e) {
      if (!(e instanceof PcapWriteError)) throw e;
      if (!e.cannotCreate) this.writerFault(e);
      else note(`${e.message.replace(/; name a writable file$/, '')}; still writing to the file opened before`);
      return 'failed';
    }
  }

  // Opened before the first packet: a -w that cannot be created is bad
  // input, refused in one line as an -o that cannot be opened is.
  private startWriter(linktype: number, o: PcapWriterOptions): void {
    try {
      this.writer = new PcapWriter(this.args.w!, linktype, o);
    } catch (e) {
      if (!(e instanceof PcapWriteError)) throw e;
      // A device that fails the header (`-w /dev/full`), or `-w - | true`: as a write later on.
      if (!e.cannotCreate) return this.writerFault(e);
      // A signal while riff waited for a FIFO's reader: as one during loading.
      if (e.interrupted) throw new Fail(e.message, 1);
      throw new Fail(this.args.Z !== undefined ? `${e.message} (riff runs as ${this.args.Z} by then, -Z)` : e.message, 2);
    }
  }

  // Filter, -c, -w and counting happen here, on the capture thread; Lua runs in the workers.
  private account(batch: Batch, filter: PacketFilter | null): void {
    const { limit, counters, writer } = this;
    const passed = filter ? filter.apply(batch) : batch.count;
    if (limit !== undefined && counters.passed + passed >= limit) {
      cutAt(batch, limit - counters.passed);
      this.stopping = true;
    }
    counters.read += batch.count;
    // Numbering the packets that passed also counts them.
    const first = this.nextId;
    this.nextId = stampIds(batch, this.nextId, this.clock);
    counters.passed += this.nextId - first;
    if (writer && !this.writerFailed) {
      const w = writer;
      const before = w.written + w.lost + w.skipped;
      try {
        w.write(batch);
      } catch (e) {
        if (!(e instanceof PcapWriteError)) throw e;
        // The batch's packets the writer did not get to are not written either.
        this.writerMissed += this.nextId - first - (w.written + w.lost + w.skipped - before);
        this.writerFault(e);
      }
    } else if (this.writerFailed) this.writerMissed += this.nextId - first; // read before the stop took hold
    if (this.args.U && this.writer && !this.writerFailed) this.writer.sync();
  }

  /**
   * --stats: a counters line on stderr every `every` seconds, until stop();
   * `records` says what the outputs wrote so far ('' for none).
   */
  statsTimer: NodeJS.Timeout | null = null;
  startStats(every: number, records: () => string = () => ''): void {
    const { args, counters, pool } = this;
    let lastRead = 0;
    let lastAt = performance.now();
    this.statsTimer = setInterval(() => {
      const p = pool.progress();
      const now = performance.now();
      const rate = Math.round(((counters.read - lastRead) * 1000) / Math.max(1, now - lastAt));
      lastRead = counters.read;
      lastAt = now;
      const capture = this.capture;
      const k = capture && !capture.closed ? capture.stats() : null;
      const kernel = k ? `, ${k.received} received by filter, ${k.droppedByKernel} dropped by kernel, ${k.droppedByInterface} dropped by interface` : '';
      const rec = records();
      note(`stats: ${counters.read} ${args.r !== undefined ? 'read' : 'captured'} (${rate}/s)${kernel}, ${counters.passed} passed the filter, ${pool.dropped} dropped at the ring, ${p.processed - p.errors} processed, ${p.errors} Lua errors${pool.ended ? `, ${pool.lost} lost with ${pool.ended} ended Lua workers (${pool.restarted} restarted)` : ''}, ${luaHeap(pool.luaHeap(), !!args.verbose)}${rec ? `, ${rec}` : ''}`);
    }, every * 1000);
    this.statsTimer.unref();
  }

  /** -r: the file pump, until the file ends, it is damaged, or riff stops. */
  async readFile(): Promise<void> {
    const { args, flags, pool, stopped, limit, counters, halt, named } = this;
    this.source = args.r === '-' ? 'standard input' : args.r!;
    let file: CaptureFile;
    try {
      // Records larger than a quarter of the ring could wait for room forever.
      const opening = openCaptureFileAsync(args.r!, { maxRecord: pool.maxRecord });
      const f = await Promise.race([opening, stopped.then(() => null)]);
      if (!f) {
        opening.then((late) => late.close(), () => {});
        file = NO_FILE;
      } else file = f;
    } catch (e) {
      if (!(e instanceof CaptureFileError)) throw e;
      // Damage before the first packet (header, first blocks) says where, like
      // damage further in; a file that cannot be opened or read has no offset.
      throw new Fail(named(e.message) + (e.unreadable ? '' : ` at byte offset ${e.offset}; 0 packets before it were processed`), 1);
    }
    let filter: PacketFilter | null = null;
    this.refilter = (expr) => {
      const f = expr ? compileFilter(expr, file.linktype < 0 ? 1 : file.linktype) : null;
      return () => {
        filter = f;
        this.filterExpr = expr;
        note(`filter from config.lua: ${expr || '(none)'}`);
      };
    };
    if (this.filterExpr) {
      try {
        filter = compileFilter(this.filterExpr, file.linktype < 0 ? 1 : file.linktype);
      } catch (e) {
        if (e instanceof FilterError || e instanceof FilterUnavailable) throw new Fail(e.message, 2);
        throw e;
      }
    }
    dropPrivileges(args.Z);
    if (args.w !== undefined)
      // The file's snapshot length, as tcpdump's -w keeps it (libpcap's pcap_snapshot()).
      this.startWriter(file.linktype < 0 ? 1 : file.linktype, { ...flags.rotation, ...(file.snaplen > 0 && { snaplen: file.snaplen }), onLimit: halt, nano: flags.precision ? flags.precision === 'nano' : !microPcap(args.r!) });
    let sinceYield = 0;
    // On a terminal (or with --progress): where the reading is, a few times a second.
    let total = 0;
    try {
      if (args.r !== '-') total = fs.statSync(args.r!).size;
    } catch {
      // a pipe or a file gone: the line shows packets and rate only
    }
    const progress =
      (args.progress ?? terminal(2) !== null) ? new Progress(() => ({ packets: counters.read, done: file.offset }), total) : null;
    progress?.start();
    // Every wait here is asynchronous (ring room, an idle pipe, a worker's
    // restart), so signals, the watchdog and --stats keep running.
    // Held in this frame across its waits: a batch (a view of its VM's
    // memory, in which the ring lies) kept from before a reload kept the
    // retired VM's memory mapped until the pipe had more.
    let batch: Batch | null = null;
    while (!this.stopping && limit !== 0) {
      batch = pool.reserve();
      if (!batch) {
        // Lua is behind and the ring is full.
        await Promise.race([pool.room(), stopped]);
        continue;
      }
      let got = 0;
      try {
        got = file.fill(batch, 1024);
      } catch (e) {
        if (e instanceof WouldBlock) {
          pool.unreserve();
          batch = null;
          try {
            await Promise.race([file.more(), stopped]);
            continue;
          } catch (err) {
            if (!(err instanceof CaptureFileError)) throw err;
            this.damage = err;
            break;
          }
        }
        if (!(e instanceof CaptureFileError)) throw e;
        this.damage = e;
      }
      if (got === 0) {
        pool.unreserve();
        this.endOfInput = true;
        break;
      }
      this.account(batch, filter);
      await pool.commit(batch);
      // Let signals and pipe closes in between batches.
      if (++sinceYield >= 8) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
    progress?.stop();
    for (const w of file.warnings) note(named(w));
    this.skipped = file.skipped;
    counters.read += this.skipped;
    file.close();
  }

  /** -i: live capture straight into the ring, until riff stops or the interface fails. */
  async captureLive(): Promise<void> {
    const { args, flags, pool, limit, halt } = this;
    const { name: device, loopback } = interfaceOf(args.i!);
    this.source = device;
    this.loopback = loopback;
    let live: LiveCapture;
    // A filter config.lua changed on reload: the device stays open with the
    // filter it was opened with, and riff applies the new one itself to what
    // that one lets through.
    let liveFilter: PacketFilter | null = null;
    const opened = this.filterExpr;
    const liveRefilter = (expr: string) => {
      const f = expr && expr !== opened ? compileFilter(expr, live.linktype) : null;
      return () => {
        liveFilter = f;
        this.filterExpr = expr;
        note(
          `filter from config.lua: ${expr || '(none)'}` +
            (opened && expr !== opened
              ? ` (riff applies it to what the capture's own filter '${opened}' passes: a reload never reopens the device)`
              : ''),
        );
      };
    };
    const filterExpr = this.filterExpr;
    try {
      live = new LiveCapture(
        {
          device,
          snaplen: flags.snaplen,
          promisc: !args.p,
          bufferBytes: flags.bufferKiB * 1024,
          immediate: !!args['immediate-mode'],
          nano: flags.precision !== 'micro',
          linktypeName: args.y,
          direction: flags.direction,
          filter: filterExpr,
        },
        {
          // Straight into worker 0's ring; null while it is full: riff then leaves packets in the kernel's buffer.
          reserve: (min) => pool.reserve(min),
          deliver: (b) => {
            if (this.stopping) b.count = b.bytes = 0;
            else if (b.count) this.account(b, liveFilter);
            pool.commitNow(b);
            if (this.stopping) this.onStop();
          },
          failed: (e) => {
            this.liveFailure = `-i ${device}: ${e.message}`;
            halt();
          },
        },
      );
    } catch (e) {
      const msg = (e as Error).message;
      const stage = (e as { stage?: string }).stage;
      if (/permission|not permitted|denied/i.test(msg))
        throw new Fail(`-i ${device}: no permission to capture (${msg}); run as root (with -Z USER to give root up once the capture is open), or as a service with CAP_NET_RAW (README: Running as a service)`, 1);
      if (stage === 'filter') throw new Fail(`filter '${filterExpr}': ${msg}`, 2);
      if (stage === 'linktype') throw new Fail(`-y ${args.y}: ${msg}; riff -L -i ${device} lists the types`, 2);
      if (stage === 'direction') throw new Fail(`-Q ${args.Q}: ${msg}`, 2);
      throw new Fail(`-i ${device}: ${msg}`, 1);
    }
    this.capture = live;
    this.refilter = liveRefilter;
    if (live.warning) note(`-i ${device}: ${live.warning}`);
    dropPrivileges(args.Z);
    if (args.w !== undefined)
      this.startWriter(live.linktype, { ...flags.rotation, snaplen: live.snaplen, nano: live.nano, start: Math.floor(Date.now() / 1000), onLimit: halt });
    // As tcpdump: said once the -w file is open too, so a -w that fails is the only line.
    note(
      `listening on ${device}, link-type ${live.dltName}, snapshot length ${live.snaplen} bytes${filterExpr ? `, filter '${filterExpr}'` : ''}` +
        ` (kernel timestamps, ${live.nano ? 'nanosecond' : 'microsecond'})`,
    );
    await new Promise<void>((resolve) => {
      this.onStop = resolve;
      if (limit === 0 || this.stopping) resolve();
      else live.start();
    });
    // After Ctrl-C, what the kernel still holds is read (the ring permitting) so the counts close.
    this.kernel = await live.close(this.interrupted);
  }

  /** After the capture: the --stats timer off, -w closed (a failure there is a -w failure like any other). */
  stop(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    if (this.writer && !this.writerFailed) {
      try {
        this.writer.close();
      } catch (e) {
        if (!(e instanceof PcapWriteError)) throw e;
        this.writerFault(e);
      }
    }
  }
}

/**
 * -i's interface: a name, or as in tcpdump the number -D gives it (when no
 * interface has that name). Refused in one line when there is none, or
 * when live capture is unavailable.
 */
export function interfaceOf(given: string): { name: string; loopback: boolean } {
  const why = liveUnavailable();
  if (why) throw new Fail(why, 1);
  const devices = listDevices();
  let d = devices.find((x) => x.name === given);
  if (!d && /^[1-9]\d*$/.test(given)) d = devices[Number(given) - 1];
  if (!d) throw new Fail(`-i ${given}: no such interface; riff -D lists them (${devices.slice(0, 8).map((x) => x.name).join(', ')})`, 2);
  return { name: d.name, loopback: !!d.loopback };
}
