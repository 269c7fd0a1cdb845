#!/usr/bin/env node
// riff's command line: parse, open the capture, start the Lua runtime, move
// batches from one to the other, and account for every packet at the end.
import path from 'node:path';
import { Batch, FLAG_FILTERED_OUT, HDR, align8, stampIds } from './capture/batch.js';
import { openCaptureFileAsync, CaptureFileError, WouldBlock, type CaptureFile } from './capture/file.js';
import { compileFilter, FilterError, FilterUnavailable, type PacketFilter } from './capture/filter.js';
import { LiveCapture, datalinks, listDevices, liveUnavailable, type LiveStats } from './capture/live.js';
import { PcapWriter, PcapWriteError, type PcapWriterOptions } from './outputs/pcap-writer.js';
import { FlagError, dropPrivileges, microPcap } from './tcpdump-flags.js';
import { openOutputs, recordSink as makeRecordSink, resolveSpec, OutputSet, OutputSpecError } from './outputs/output.js';
import { TextOutput } from './outputs/text-output.js';
import { stdout, stderr } from './outputs/fd-sink.js';
import { ScriptError } from './vm/runtime.js';
import { LuaPool, type Ready } from './vm/pool.js';
import { onSecondInterrupt, whenReload, whenReopen, whenSignalled } from './signals.js';
import { Fail, PKG, checkArgs, checkRepeats, hideBin, note, parseArgs } from './cli/args.js';
import { summarize, type Counters } from './cli/summary.js';

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

async function main(): Promise<number> {
  const args = parseArgs(hideBin(process.argv));
  checkRepeats(args);
  if (args.D) {
    const why = liveUnavailable();
    if (why) throw new Fail(why, 1);
    listDevices().forEach((d, i) => {
      const addrs = d.addresses.join(', ');
      stdout.text(`${i + 1}.${d.name}${d.description ? ` (${d.description})` : ''}${addrs ? ` [${addrs}]` : ''}\n`);
    });
    return 0;
  }
  if (args.L) {
    if (args.i === undefined) throw new Fail('-L lists the data link types of an interface: give -i IFACE', 2);
    const why = liveUnavailable();
    if (why) throw new Fail(why, 1);
    let dl;
    try {
      dl = datalinks(args.i);
    } catch (e) {
      throw new Fail(`-i ${args.i}: ${(e as Error).message}`, 1);
    }
    // tcpdump's wording, so scripts that read it keep working.
    stdout.text(`Data link types for ${args.i} (use option -y to set):\n`);
    for (const d of dl) stdout.text(d.name ? `  ${d.name} (${d.description ?? `DLT ${d.dlt}`})\n` : `  DLT ${d.dlt}\n`);
    return 0;
  }
  const { flags, budget, memoryLimit, timeout, workers, sensor, statsEvery } = checkArgs(args);

  const writeToStdout = args.w === '-';
  // Records as JSON lines on stdout (-o json:-) own stdout as -w - does: the
  // report lines are off and the script's own output goes to stderr, so
  // `riff ... -o json:- | jq` reads JSON only.
  const recordsToStdout = (args.output ?? []).some((sp) => String(sp) === 'json:-');
  const stdoutTaken = writeToStdout || recordsToStdout;
  let stopping = false;
  let interrupted = false;
  let onStop: () => void = () => {};
  let wake: () => void = () => {};
  // Resolves once riff is to stop: ends a wait on an idle pipe.
  const stopped = new Promise<void>((r) => (wake = r));
  const halt = () => {
    stopping = true;
    wake();
    onStop();
  };
  // Records can arrive while the outputs are still being opened (setup runs at once).
  const earlyRecords: [Uint8Array, number][] = [];
  let recordSink: ((bytes: Uint8Array, at: number) => void) | null = null;
  let pool: LuaPool;
  try {
    pool = await LuaPool.start({
      workers,
      runtime: {
        script: args.lua,
        quiet: args.q || stdoutTaken,
        verbose: args.verbose,
        strict: args.strict,
        budget,
        setupBudget: budget === 0 ? 0 : Math.max(budget * 100, 1_000_000_000),
        memoryLimit,
        version: PKG.version,
      },
      // With -w - the pcap owns stdout; the script's output goes to stderr.
      outFd: stdoutTaken ? 2 : 1,
      onRecord: (bytes, at) => (recordSink ? recordSink(bytes, at) : earlyRecords.push([bytes, at])),
      // A file only needs enough ring to keep the worker busy; live capture
      // wants slack for bursts (the ring is bounded memory either way).
      ringBytes: (args.i !== undefined ? 64 : 16) << 20,
      limits: { packetMs: timeout * 1000, scriptMs: timeout * 10_000 },
      onStop: halt,
      onNote: note,
    });
  } catch (e) {
    if (e instanceof ScriptError) throw new Fail(e.message, 1);
    throw e;
  }

  let filterExpr = (args._ as (string | number)[]).map(String).join(' ').trim();
  if (args.F !== undefined) {
    if (filterExpr) note(`-F ${args.F}: the filter on the command line is ignored, as tcpdump does`);
    filterExpr = flags.filterFile;
  }
  const filterFromCommandLine = filterExpr !== '';
  if (!filterExpr && pool.filter) {
    filterExpr = pool.filter;
    note(`filter from config.lua: ${filterExpr}`);
  }
  if (args.verbose) note(`script: ${args.lua ?? 'bundled default pipeline'} (${pool.rule}), ${workers} Lua worker${workers > 1 ? 's' : ''}`);

  // Where riff.emit records go: --output, else config.lua's outputs(), else text lines on stdout.
  // config.lua's outputs are announced like its filter, and its relative
  // paths are beside config.lua, as require and riff.read find files there.
  let specs = args.output?.length ? args.output.map(String) : pool.outputs;
  if (!args.output?.length && specs.length) {
    const dir = path.dirname(path.resolve(args.lua ?? '.'));
    specs = specs.map((sp) => resolveSpec(sp, dir));
    note(`outputs from config.lua: ${specs.join(' ')}`);
  }
  let outputs: OutputSet;
  try {
    if (writeToStdout && specs.some((sp) => /^(json|text):-$/.test(sp)))
      throw new OutputSpecError('--output: standard output is taken by -w -; send records to a file, SQLite or syslog');
    // config.lua's outputs are known only once the workers run: JSON on a
    // stdout that carries report lines or the script's output would be
    // unreadable, so it is refused there.
    if (!args.output?.length && !args.q && specs.includes('json:-'))
      throw new OutputSpecError("config.lua's outputs(): json:- would mix records with riff's report lines on stdout; give -q, or -o json:- on the command line, or a file");
    outputs = specs.length ? await openOutputs(specs, { sensor }) : new OutputSet([new TextOutput('text:-', writeToStdout ? stderr : stdout)]);
  } catch (e) {
    if (e instanceof OutputSpecError) throw new Fail(e.message, 2);
    throw e;
  }
  // One error path for every output: its line at once, then riff stops as
  // after Ctrl-C (what is in flight still reaches the other outputs), prints
  // the summary and exits 1.
  let outputFailed = false;
  outputs.onFault = (line) => {
    note(line);
    outputFailed = true;
    halt();
  };
  for (const o of outputs.outputs) o.onNotice = note;
  recordSink = makeRecordSink(outputs);
  for (const [b, at] of earlyRecords.splice(0)) recordSink(b, at);

  const counters: Counters = { read: 0, passed: 0 };
  // A signal that came earlier (even before the workers were up) is acted on here.
  whenSignalled(() => {
    interrupted = true;
    pool.abandon();
    halt();
  });
  stdout.onClose = halt;
  onSecondInterrupt(() => pool.abandoning());

  // SIGUSR1 (logrotate): -w and json:FILE are opened anew at their paths,
  // between two records (both come to this thread), so none is cut or doubled.
  let reopens = 0;
  whenReopen(() => {
    reopens++;
    try {
      outputs.reopen?.();
    } catch (e) {
      note((e as Error).message);
    }
    try {
      writer?.reopen();
    } catch (e) {
      note(`-w ${args.w}: cannot open it anew (${(e as Error).message}); still writing to the file opened before`);
    }
  });

  // SIGHUP: the script and config.lua again, in fresh VMs (src/vm/pool.ts
  // reload()); a changed config.lua filter applies from the batch where the
  // new VMs take over. `refilter` compiles one for the open capture.
  let refilter: ((expr: string) => () => void) | null = null;
  const script = args.lua ?? 'the bundled pipeline';
  const prepare = (m: Ready): string | (() => void) => {
    const steps: (() => void)[] = [];
    const expr = m.filter ?? '';
    if (!filterFromCommandLine && expr !== filterExpr && refilter) {
      try {
        steps.push(refilter(expr));
      } catch (e) {
        return `config.lua's new filter: ${(e as Error).message}`;
      }
    }
    if (!args.output?.length && m.outputs.join('\n') !== pool.outputs.join('\n'))
      steps.push(() => note("config.lua's outputs() changed; riff keeps the outputs it opened at start (restart riff to change them)"));
    return () => {
      note(`reloaded ${script} (reload ${pool.reloads}); packets go to the new Lua VMs from here, the old ones finish what they hold`);
      for (const step of steps) step();
    };
  };
  whenReload(() => {
    if (stopping) return;
    note(`SIGHUP: reloading ${script}`);
    void pool.reload(prepare).then((why) => why && note(why));
  });

  let writer: PcapWriter | null = null;
  let writerFailed = false;
  let writerMissed = 0;
  // -w failing (disk full, device error) takes the same path as a record output.
  const writerFault = (e: PcapWriteError) => {
    writerFailed = true;
    outputFailed = true;
    note(e.message);
    halt();
  };
  const startWriter = (linktype: number, o: PcapWriterOptions) => {
    try {
      writer = new PcapWriter(args.w!, linktype, o);
    } catch (e) {
      if (!(e instanceof PcapWriteError)) throw e;
      writerFault(e);
    }
  };
  const limit = args.c;
  let damage: CaptureFileError | null = null;
  let skipped = 0;

  // Filter, -c, -w and counting happen here, on the capture thread; Lua runs in the workers.
  let nextId = 1;
  const account = (batch: Batch, filter: PacketFilter | null) => {
    const passed = filter ? filter.apply(batch) : batch.count;
    if (limit !== undefined && counters.passed + passed >= limit) {
      cutAt(batch, limit - counters.passed);
      stopping = true;
    }
    counters.read += batch.count;
    // Numbering the packets that passed also counts them.
    const first = nextId;
    nextId = stampIds(batch, nextId);
    counters.passed += nextId - first;
    if (writer && !writerFailed) {
      const w = writer as PcapWriter;
      const before = w.written + w.lost + w.skipped;
      try {
        w.write(batch);
      } catch (e) {
        if (!(e instanceof PcapWriteError)) throw e;
        // The batch's packets the writer did not get to are not written either.
        writerMissed += nextId - first - (w.written + w.lost + w.skipped - before);
        writerFault(e);
      }
    } else if (writerFailed) writerMissed += nextId - first; // read before the stop took hold
    if (args.U && writer && !writerFailed) (writer as PcapWriter).sync();
  };
  let statsTimer: NodeJS.Timeout | null = null;
  let capture: LiveCapture | null = null;
  let kernel: LiveStats | null = null;
  let loopback = false;
  let liveFailure: string | null = null;
  if (statsEvery) {
    statsTimer = setInterval(() => {
      const p = pool.progress();
      const k = capture && !capture.closed ? capture.stats() : null;
      const kernel = k ? `, ${k.received} received by filter, ${k.droppedByKernel} dropped by kernel, ${k.droppedByInterface} dropped by interface` : '';
      note(`stats: ${counters.read} ${args.r !== undefined ? 'read' : 'captured'}${kernel}, ${counters.passed} passed the filter, ${pool.dropped} dropped at the ring, ${p.processed - p.errors} processed, ${p.errors} Lua errors${pool.ended ? `, ${pool.lost} lost with ${pool.ended} ended Lua workers (${pool.restarted} restarted)` : ''}`);
    }, statsEvery * 1000);
    statsTimer.unref();
  }

  let source = '';
  // Reader messages name the file for some problems; say it once either way.
  const named = (msg: string) => (msg.startsWith(source) ? msg : `${source}: ${msg}`);
  if (args.r !== undefined) {
    source = args.r === '-' ? 'standard input' : args.r;
    let file: CaptureFile;
    try {
      // Records larger than a quarter of the ring could wait for room forever.
      const opening = openCaptureFileAsync(args.r, { maxRecord: pool.maxRecord });
      const f = await Promise.race([opening, stopped.then(() => null)]);
      if (!f) {
        opening.then((late) => late.close(), () => {});
        file = NO_FILE;
      } else file = f;
    } catch (e) {
      if (!(e instanceof CaptureFileError)) throw e;
      // Damage before the first packet (header, first blocks) says where, like
      // damage further in; a file that cannot be opened or read has no offset.
      const unreadable = /^(cannot (open|read) |standard input is a terminal)/.test(e.message);
      throw new Fail(named(e.message) + (unreadable ? '' : ` at byte offset ${e.offset}; 0 packets before it were processed`), 1);
    }
    let filter: PacketFilter | null = null;
    refilter = (expr) => {
      const f = expr ? compileFilter(expr, file.linktype < 0 ? 1 : file.linktype) : null;
      return () => {
        filter = f;
        filterExpr = expr;
        note(`filter from config.lua: ${expr || '(none)'}`);
      };
    };
    if (filterExpr) {
      try {
        filter = compileFilter(filterExpr, file.linktype < 0 ? 1 : file.linktype);
      } catch (e) {
        if (e instanceof FilterError || e instanceof FilterUnavailable) throw new Fail(e.message, 2);
        throw e;
      }
    }
    dropPrivileges(args.Z);
    if (args.w !== undefined)
      startWriter(file.linktype < 0 ? 1 : file.linktype, { ...flags.rotation, onLimit: halt, nano: flags.precision ? flags.precision === 'nano' : !microPcap(args.r) });
    let sinceYield = 0;
    // Every wait here is asynchronous (ring room, an idle pipe, a worker's
    // restart), so signals, the watchdog and --stats keep running.
    while (!stopping && limit !== 0) {
      const batch = pool.reserve();
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
          try {
            await Promise.race([file.more(), stopped]);
            continue;
          } catch (err) {
            if (!(err instanceof CaptureFileError)) throw err;
            damage = err;
            break;
          }
        }
        if (!(e instanceof CaptureFileError)) throw e;
        damage = e;
      }
      if (got === 0) {
        pool.unreserve();
        break;
      }
      account(batch, filter);
      await pool.commit(batch);
      // Let signals and pipe closes in between batches.
      if (++sinceYield >= 8) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
    for (const w of file.warnings) note(named(w));
    skipped = file.skipped;
    counters.read += skipped;
    file.close();
  } else {
    const device = args.i!;
    source = device;
    const why = liveUnavailable();
    if (why) throw new Fail(why, 1);
    const devices = listDevices();
    const names = devices.map((d) => d.name);
    loopback = devices.some((d) => d.name === device && d.loopback);
    if (!names.includes(device)) {
      throw new Fail(`-i ${device}: no such interface; riff -D lists them (${names.slice(0, 8).join(', ')})`, 2);
    }
    let live: LiveCapture;
    // A filter config.lua changed on reload: the device stays open with the
    // filter it was opened with, and riff applies the new one itself to what
    // that one lets through.
    let liveFilter: PacketFilter | null = null;
    const opened = filterExpr;
    const liveRefilter = (expr: string) => {
      const f = expr && expr !== opened ? compileFilter(expr, live.linktype) : null;
      return () => {
        liveFilter = f;
        filterExpr = expr;
        note(
          `filter from config.lua: ${expr || '(none)'}` +
            (opened && expr !== opened
              ? ` (riff applies it to what the capture's own filter '${opened}' passes: a reload never reopens the device)`
              : ''),
        );
      };
    };
    try {
      live = new LiveCapture(
        {
          device,
          snaplen: flags.snaplen,
          promisc: !args.p,
          bufferBytes: args.B * 1024,
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
            if (stopping) b.count = b.bytes = 0;
            else if (b.count) account(b, liveFilter);
            pool.commitNow(b);
            if (stopping) onStop();
          },
          failed: (e) => {
            liveFailure = `-i ${device}: ${e.message}`;
            halt();
          },
        },
      );
    } catch (e) {
      const msg = (e as Error).message;
      const stage = (e as { stage?: string }).stage;
      if (/permission|not permitted|denied/i.test(msg))
        throw new Fail(`-i ${device}: no permission to capture (${msg}); run as root or grant CAP_NET_RAW (setcap cap_net_raw,cap_net_admin+eip $(which node))`, 1);
      if (stage === 'filter') throw new Fail(`filter '${filterExpr}': ${msg}`, 2);
      if (stage === 'linktype') throw new Fail(`-y ${args.y}: ${msg}; riff -L -i ${device} lists the types`, 2);
      if (stage === 'direction') throw new Fail(`-Q ${args.Q}: ${msg}`, 2);
      throw new Fail(`-i ${device}: ${msg}`, 1);
    }
    capture = live;
    refilter = liveRefilter;
    if (live.warning) note(`-i ${device}: ${live.warning}`);
    note(
      `listening on ${device}, link-type ${live.dltName}, snapshot length ${live.snaplen} bytes${filterExpr ? `, filter '${filterExpr}'` : ''}` +
        ` (kernel timestamps, ${live.nano ? 'nanosecond' : 'microsecond'})`,
    );
    dropPrivileges(args.Z);
    if (args.w !== undefined)
      startWriter(live.linktype, { ...flags.rotation, snaplen: live.snaplen, nano: live.nano, start: Math.floor(Date.now() / 1000), onLimit: halt });
    await new Promise<void>((resolve) => {
      onStop = resolve;
      if (limit === 0 || stopping) resolve();
      else live.start();
    });
    // After Ctrl-C, what the kernel still holds is read (the ring permitting) so the counts close.
    kernel = await live.close(interrupted);
  }

  if (statsTimer) clearInterval(statsTimer);
  if (writer && !writerFailed) {
    try {
      (writer as PcapWriter).close();
    } catch (e) {
      if (!(e instanceof PcapWriteError)) throw e;
      writerFault(e);
    }
  }
  const s = await pool.finish();
  await outputs.close();
  return summarize({
    args,
    counters,
    pool,
    s,
    outputs,
    kernel,
    loopback,
    skipped,
    reopens,
    writer,
    writerFailed,
    writerMissed,
    outputFailed,
    liveFailure,
    interrupted,
    damage,
    named,
  });
}

main().then(
  (code) => process.exit(code),
  (e) => {
    if (e instanceof Fail || e instanceof FlagError) {
      note(e.message);
      process.exit(e.code);
    }
    // A bug in riff, not bad input: the stack is for the bug report.
    note(`internal error: ${process.env.RIFF_DEBUG ? (e as Error)?.stack : (e as Error)?.message ?? e} (RIFF_DEBUG=1 shows the stack)`);
    process.exit(1);
  },
);
