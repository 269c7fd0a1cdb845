#!/usr/bin/env node
// riff's command line, top to bottom: the options (cli/args.ts), the Lua
// workers, the record outputs, the signals, the capture session that moves
// batches from the capture to the workers (cli/session.ts), and the summary
// that accounts for every packet (cli/summary.ts).
import path from 'node:path';
import { datalinks, listDevices, liveUnavailable } from './capture/live.js';
import { nativeOrNull } from './capture/native.js';
import { FlagError } from './tcpdump-flags.js';
import { recordSink as makeRecordSink, resolveSpec, OutputSet } from './outputs/output-set.js';
import { OutputSpecError } from './outputs/types.js';
import { TextOutput } from './outputs/text-output.js';
import { stdout, stderr } from './outputs/fd-sink.js';
import { ScriptError } from './vm/runtime.js';
import { LuaPool, type Ready } from './vm/pool.js';
import { onSecondInterrupt, whenReload, whenReopen, whenSignalled } from './signals.js';
import { Fail, PKG, checkArgs, checkRepeats, hideBin, note, parseArgs, type Args } from './cli/args.js';
import { CaptureSession } from './cli/session.js';
import { summarize } from './cli/summary.js';
import { saveCodeCaches } from './bundle-cache.js';
import { saveTrainedLua } from './vm/wasm.js';

/** -D and -L: list, then exit (null: neither was given). */
function listings(args: Args): number | null {
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
  return null;
}

async function main(): Promise<number> {
  const args = parseArgs(hideBin(process.argv));
  checkRepeats(args);
  const listed = listings(args);
  if (listed !== null) return listed;
  const { flags, budget, memoryLimit, timeout, workers, sensor, statsEvery } = checkArgs(args);

  const writeToStdout = args.w === '-';
  // Records as JSON lines on stdout (-o json:-) own stdout as -w - does: the
  // report lines are off and the script's own output goes to stderr, so
  // `riff ... -o json:- | jq` reads JSON only.
  const recordsToStdout = (args.output ?? []).some((sp) => String(sp) === 'json:-');
  const stdoutTaken = writeToStdout || recordsToStdout;
  const session = new CaptureSession(args, flags);
  const { halt } = session;
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
      onStop: (why, message) => {
        // One line, once, even when every worker's write failed.
        if (why === 'output-failed' && !session.outputFailed) {
          note(message ?? why);
          session.outputFailed = true;
        }
        halt();
      },
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
  session.pool = pool;
  session.filterExpr = filterExpr;
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
    // The registry loads every kind of output (crypto, sockets): only when one is named.
    outputs = specs.length
      ? await (await import('./outputs/output.js')).openOutputs(specs, { sensor })
      : new OutputSet([new TextOutput('text:-', writeToStdout ? stderr : stdout)]);
  } catch (e) {
    if (e instanceof OutputSpecError) throw new Fail(e.message, 2);
    throw e;
  }
  // One error path for every output: its line at once, then riff stops as
  // after Ctrl-C (what is in flight still reaches the other outputs), prints
  // the summary and exits 1.
  outputs.onFault = (line) => {
    note(line);
    session.outputFailed = true;
    halt();
  };
  for (const o of outputs.outputs) o.onNotice = note;
  recordSink = makeRecordSink(outputs);
  for (const [b, at] of earlyRecords.splice(0)) recordSink(b, at);

  // A signal that came earlier (even before the workers were up) is acted on here.
  whenSignalled(() => {
    session.interrupted = true;
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
      session.writer?.reopen();
    } catch (e) {
      note(`-w ${args.w}: cannot open it anew (${(e as Error).message}); still writing to the file opened before`);
    }
  });

  // SIGHUP: the script and config.lua again, in fresh VMs (src/vm/pool.ts
  // reload()); a changed config.lua filter applies from the batch where the
  // new VMs take over. The session's `refilter` compiles one for the open capture.
  const script = args.lua ?? 'the bundled pipeline';
  const prepare = (m: Ready): string | (() => void) => {
    const steps: (() => void)[] = [];
    const expr = m.filter ?? '';
    const refilter = session.refilter;
    if (!filterFromCommandLine && expr !== session.filterExpr && refilter) {
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
    if (session.stopping) return;
    note(`SIGHUP: reloading ${script}`);
    void pool.reload(prepare).then((why) => why && note(why));
  });

  // --stats counts records as the summary does: emitted by Lua, written by each output.
  if (statsEvery)
    session.startStats(statsEvery, () => {
      const accounts = outputs.stats();
      if (!outputs.emitted && !accounts.some((a) => a.stats.written)) return '';
      return `${outputs.emitted} records emitted (${accounts.map((a) => `${a.spec}: ${a.stats.written} written`).join(', ')})`;
    });
  if (args.r !== undefined) await session.readFile();
  else await session.captureLive();
  session.stop();
  const s = await pool.finish();
  await outputs.close();
  const { counters, kernel, loopback, skipped, writer, writerFailed, writerMissed, outputFailed, liveFailure, interrupted, damage, named } = session;
  return summarize({ args, counters, pool, s, outputs, kernel, loopback, skipped, reopens, writer, writerFailed, writerMissed, outputFailed, liveFailure, interrupted, damage, named });
}

/**
 * End riff with `code`. Everything riff writes (stdout, stderr, -w, the
 * outputs, closed by now) is written synchronously, so the process can end
 * at once: process.exit() would first wait for V8's compiler threads to
 * finish the functions they are compiling and for the workers' threads to be
 * torn down, tens of ms of every run. The 'exit' handlers (the outputs'
 * safety nets) still run; without the addon, process.exit() it is.
 */
function exit(code: number): never {
  saveCodeCaches();
  saveTrainedLua();
  const n = nativeOrNull();
  if (!n?.exitNow) process.exit(code);
  process.exitCode = code;
  process.emit('exit', code);
  return n.exitNow(code);
}

main().then(
  (code) => exit(code),
  (e) => {
    if (e instanceof Fail || e instanceof FlagError) {
      note(e.message);
      exit(e.code);
    }
    // A bug in riff, not bad input: the stack is for the bug report.
    note(`internal error: ${process.env.RIFF_DEBUG ? (e as Error)?.stack : (e as Error)?.message ?? e} (RIFF_DEBUG=1 shows the stack)`);
    exit(1);
  },
);
