#!/usr/bin/env node
// riff's command line, top to bottom: the options (cli/args.ts), the Lua
// workers, the record outputs, the signals, the capture session that moves
// batches from the capture to the workers (cli/session.ts), and the summary
// that accounts for every packet (cli/summary.ts).
import path from 'node:path';
import { datalinks, listDevices, liveUnavailable } from './capture/live.js';
import { nativeOrNull, notifyManager } from './capture/native.js';
import { FlagError } from './tcpdump-flags.js';
import { recordSink as makeRecordSink, resolveSpec, OutputSet } from './outputs/output-set.js';
import { OutputSpecError } from './outputs/types.js';
import { TextOutput } from './outputs/text-output.js';
import { stdout, stderr, StoppedWaiting, stopWaitingForReaders, writeWithoutWaiting } from './outputs/fd-sink.js';
import { ScriptError } from './vm/runtime.js';
import { LuaPool, type Ready } from './vm/pool.js';
import { interruptsHeard, leaveWith, onSecondInterrupt, whenReload, whenReopen, whenSignalled } from './signals.js';
import { Fail, PKG, checkArgs, checkRepeats, filesApart, hideBin, note, parseArgs, type Args } from './cli/args.js';
import { CaptureSession, interfaceOf } from './cli/session.js';
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
    const { name } = interfaceOf(args.i);
    let dl;
    try {
      dl = datalinks(name);
    } catch (e) {
      throw new Fail(`-i ${args.i}: ${(e as Error).message}`, 1);
    }
    // tcpdump's wording, so scripts that read it keep working.
    stdout.text(`Data link types for ${name} (use option -y to set):\n`);
    for (const d of dl) stdout.text(d.name ? `  ${d.name} (${d.description ?? `DLT ${d.dlt}`})\n` : `  DLT ${d.dlt}\n`);
    return 0;
  }
  return null;
}

type Checked = ReturnType<typeof checkArgs>;

/**
 * Who owns stdout. -w - (the pcap) and records as JSON lines on stdout
 * (-o json:-) take it, as tcpdump's -w - does: the report lines are off and
 * the script's own output goes to stderr, so `riff ... -o json:- | jq`
 * reads JSON only.
 */
function stdoutOwner(args: Args): { pcap: boolean; taken: boolean } {
  const pcap = args.w === '-';
  return { pcap, taken: pcap || (args.output ?? []).some((sp) => String(sp) === 'json:-') };
}

/**
 * riff.emit's records on their way to the outputs: a script's setup can
 * emit before the outputs are open (they depend on config.lua, which the
 * workers read), so records wait here until they are.
 */
function recordRelay() {
  const waiting: [Uint8Array, number][] = [];
  let sink: ((bytes: Uint8Array, at: number) => void) | null = null;
  return {
    take: (bytes: Uint8Array, at: number): void => void (sink ? sink(bytes, at) : waiting.push([bytes, at])),
    open(to: (bytes: Uint8Array, at: number) => void): void {
      sink = to;
      for (const [b, at] of waiting.splice(0)) to(b, at);
    },
  };
}

/** The Lua workers, running the script (its load and setup included); a script that cannot start is riff's error line. */
async function startLua(args: Args, c: Checked, session: CaptureSession, onRecord: (bytes: Uint8Array, at: number) => void): Promise<LuaPool> {
  const { taken } = stdoutOwner(args);
  try {
    return await LuaPool.start({
      workers: c.workers,
      runtime: {
        script: args.lua,
        quiet: args.q || taken,
        verbose: args.verbose,
        strict: args.strict,
        budget: c.budget,
        setupBudget: c.budget === 0 ? 0 : Math.max(c.budget * 100, 1_000_000_000),
        memoryLimit: c.memoryLimit,
        version: PKG.version,
      },
      // With stdout taken the script's output goes to stderr.
      outFd: taken ? 2 : 1,
      onRecord,
      // A file only needs enough ring to keep the worker busy; live capture
      // wants slack for bursts (the ring is bounded memory either way).
      ringBytes: (args.i !== undefined ? 64 : 16) << 20,
      limits: { packetMs: c.timeout * 1000, scriptMs: c.timeout * 10_000 },
      onStop: (why, message) => {
        if (why === 'stdout-closed') return session.stdoutClosed();
        // One line, once, even when every worker's write failed.
        if (why === 'output-failed' && !session.outputFailed) {
          note(message ?? why);
          session.outputFailed = true;
        }
        session.halt();
      },
      onNote: note,
      // SIGINT/SIGTERM while the script loads or runs setup: it is stopped within a second (handleSignals takes over once the run is up).
      onStarting: (pool) => whenSignalled((sig) => stopRun(session, pool, sig)),
    });
  } catch (e) {
    if (e instanceof ScriptError) throw new Fail(e.message, 1);
    throw e;
  }
}

/** The capture filter: the command line's (or -F's file), else config.lua's; and whether it came from the command line (a reload's config.lua does not replace that one). */
function chooseFilter(args: Args, c: Checked, pool: LuaPool): { expr: string; fromCommandLine: boolean } {
  let expr = (args._ as (string | number)[]).map(String).join(' ').trim();
  if (args.F !== undefined) {
    if (expr) note(`-F ${args.F}: the filter on the command line is ignored, as tcpdump does`);
    expr = c.flags.filterFile;
  }
  const fromCommandLine = expr !== '';
  if (!expr && pool.filter) {
    expr = pool.filter;
    note(`filter from config.lua: ${expr}`);
    const problem = scriptFilterProblem(expr);
    if (problem) throw new Fail(problem, 2);
  }
  return { expr, fromCommandLine };
}

/**
 * A filter from config.lua is the script's, not the user's: libpcap's
 * optimizer takes time that grows steeply with its and/or terms (a second
 * at 200 ports, minutes at 1000; tcpdump alike), and it runs on the capture
 * thread, where nothing else runs meanwhile, signals included. riff takes
 * up to SCRIPT_FILTER_TERMS from a script; the command line and -F, the
 * user's own, have no limit.
 */
const SCRIPT_FILTER_TERMS = 100;
function scriptFilterProblem(expr: string, which = 'format()'): string | null {
  const terms = (expr.match(/\b(?:and|or)\b|&&|\|\|/g) ?? []).length + 1;
  if (terms <= SCRIPT_FILTER_TERMS) return null;
  return `config.lua's ${which} gives a filter of ${terms} and/or terms; riff takes up to ${SCRIPT_FILTER_TERMS} from a script (libpcap's optimizer takes seconds to minutes past that); give it on the command line or with -F`;
}

/**
 * Where riff.emit records go: --output, else config.lua's outputs(), else
 * text lines on stdout. config.lua's outputs are announced like its filter,
 * and its relative paths are beside config.lua, as require and riff.read
 * find files there. A fault in any output is one line, then riff stops as
 * after Ctrl-C (what is in flight still reaches the other outputs), prints
 * the summary and exits 1.
 */
async function openRecordOutputs(args: Args, c: Checked, pool: LuaPool, session: CaptureSession): Promise<OutputSet> {
  const { pcap } = stdoutOwner(args);
  let specs = args.output?.length ? args.output.map(String) : pool.outputs;
  if (!args.output?.length && specs.length) {
    const dir = path.dirname(path.resolve(args.lua ?? '.'));
    specs = specs.map((sp) => resolveSpec(sp, dir));
    note(`outputs from config.lua: ${specs.join(' ')}`);
    // The command line's were checked with it; these only now.
    filesApart(args, c.flags, specs);
  }
  let outputs: OutputSet;
  try {
    if (pcap && specs.some((sp) => /^(json|text):-$/.test(sp)))
      throw new OutputSpecError('--output: standard output is taken by -w -; send records to a file, SQLite or syslog');
    // config.lua's outputs are known only once the workers run: JSON on a
    // stdout that carries report lines or the script's output would be
    // unreadable, so it is refused there.
    if (!args.output?.length && !args.q && specs.includes('json:-'))
      throw new OutputSpecError("config.lua's outputs(): json:- would mix records with riff's report lines on stdout; give -q, or -o json:- on the command line, or a file");
    // The registry loads every kind of output (crypto, sockets): only when one is named.
    outputs = specs.length
      ? await (await import('./outputs/output.js')).openOutputs(specs, { sensor: c.sensor })
      : new OutputSet([new TextOutput('text:-', pcap ? stderr : stdout)]);
  } catch (e) {
    if (e instanceof OutputSpecError) throw new Fail(e.message, 2);
    // A signal while riff waited for a FIFO's reader: as one during loading.
    if (e instanceof StoppedWaiting) throw new Fail(e.message, 1);
    throw e;
  }
  outputs.onFault = (line) => {
    note(line);
    session.outputFailed = true;
    session.halt();
  };
  for (const o of outputs.outputs) o.onNotice = note;
  return outputs;
}

/** SIGINT/SIGTERM: the capture ends, the workers skip what is queued and go to deinit. */
function stopRun(session: CaptureSession, pool: LuaPool, sig: 'SIGINT' | 'SIGTERM'): void {
  session.interrupted = true;
  // SIGTERM (a service manager; nobody to press twice): a reader that
  // stopped reading holds riff no longer than a script would
  // (graceAfterSignal). Ctrl-C (riff | less): the output waits for the
  // reader as tcpdump's does, and a second Ctrl-C leaves at once.
  const stalls = sig === 'SIGTERM';
  notifyManager('STOPPING=1');
  if (stalls) stopWaitingForReaders();
  pool.abandon(stalls);
  session.halt();
}

/**
 * The signals from here on. SIGINT/SIGTERM (even one that came before the
 * workers were up): stop, finish, summarize. SIGUSR1 (logrotate): -w and
 * json:FILE are opened anew at their paths, between two records (both
 * come to this thread), so none is cut or doubled. SIGHUP: the script and
 * config.lua again, in fresh VMs (src/vm/pool.ts reload()); a changed
 * config.lua filter applies from the batch where the new VMs take over (the
 * session's `refilter` compiles one for the open capture). Returns how many
 * reopens there have been.
 */
function handleSignals(args: Args, session: CaptureSession, pool: LuaPool, outputs: OutputSet, filterFromCommandLine: boolean): () => number {
  whenSignalled((sig) => stopRun(session, pool, sig));
  stdout.onClose = session.stdoutClosed;
  // Always a line: the Lua workers still running, the records outputs still hold, and the summary.
  onSecondInterrupt(() => {
    const parts: string[] = [];
    const lua = pool.abandoning();
    if (lua) parts.push(lua);
    for (const a of outputs.stats()) if (a.stats.queued) parts.push(`${a.stats.queued} record${a.stats.queued > 1 ? 's' : ''} queued for --output ${a.spec} (not delivered)`);
    parts.push("the run's summary");
    return parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}` : parts[0];
  });

  // A SIGUSR1 counts as a reopen unless every file it tried to open anew failed.
  let reopens = 0;
  whenReopen(() => {
    let failed = 0;
    let opened = outputs.reopen((e) => {
      failed++;
      note((e as Error).message);
    });
    const w = session.reopenWriter();
    if (w === 'opened') opened++;
    else if (w === 'failed') failed++;
    if (opened || !failed) reopens++;
  });

  const script = args.lua ?? 'the bundled pipeline';
  const prepare = (m: Ready): string | (() => void) => {
    const steps: (() => void)[] = [];
    const expr = m.filter ?? '';
    const refilter = session.refilter;
    if (!filterFromCommandLine && expr !== session.filterExpr && refilter) {
      const problem = scriptFilterProblem(expr, 'new format()');
      if (problem) return problem;
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
    notifyManager('RELOADING=1');
    void pool.reload(prepare).then((why) => {
      if (why) note(why);
      notifyManager('READY=1');
    });
  });
  return () => reopens;
}

async function main(): Promise<number> {
  const args = parseArgs(hideBin(process.argv));
  checkRepeats(args);
  const listed = listings(args);
  if (listed !== null) return listed;
  const checked = checkArgs(args);

  const session = new CaptureSession(args, checked.flags);
  const records = recordRelay();
  const pool = await startLua(args, checked, session, records.take);
  // From here no write of this thread's waits in the kernel for a reader (the addon is loaded by now).
  const n = nativeOrNull();
  if (n?.noWaitOpen && n.noWaitClose && n.writeNow && n.waitWritable && n.interrupts)
    writeWithoutWaiting({ noWaitOpen: n.noWaitOpen, noWaitClose: n.noWaitClose, writeNow: n.writeNow, waitWritable: n.waitWritable, interrupts: n.interrupts, heard: interruptsHeard });
  const filter = chooseFilter(args, checked, pool);
  session.pool = pool;
  session.filterExpr = filter.expr;
  if (args.verbose) note(`script: ${args.lua ?? 'bundled default pipeline'} (${pool.rule}), ${checked.workers} Lua worker${checked.workers > 1 ? 's' : ''}`);
  const outputs = await openRecordOutputs(args, checked, pool, session);
  records.open(makeRecordSink(outputs));
  const reopens = handleSignals(args, session, pool, outputs, filter.fromCommandLine);
  notifyManager('READY=1');

  // --stats counts records as the summary does: emitted by Lua, written by each output.
  if (checked.statsEvery)
    session.startStats(checked.statsEvery, () => {
      const accounts = outputs.stats();
      if (!outputs.emitted && !accounts.some((a) => a.stats.written)) return '';
      return `${outputs.emitted} records emitted (${accounts.map((a) => `${a.spec}: ${a.stats.written} written`).join(', ')})`;
    });
  if (args.r !== undefined) await session.readFile();
  else await session.captureLive();
  session.stop();
  const s = await pool.finish();
  await outputs.close();
  const { counters, kernel, loopback, skipped, writer, writerFailed, writerMissed, outputFailed, liveFailure, interrupted, readerGone, endOfInput, damage, named } = session;
  return summarize({ args, counters, pool, s, outputs, kernel, loopback, skipped, reopens: reopens(), writer, writerFailed, writerMissed, outputFailed, liveFailure, interrupted, readerGone, endOfInput, damage, named });
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
  return leaveNow(code);
}

/** The process ends without waiting for any thread (exit()'s second half; a second interrupt's way out). */
function leaveNow(code: number): never {
  const n = nativeOrNull();
  if (!n?.exitNow) process.exit(code);
  process.exitCode = code;
  process.emit('exit', code);
  return n.exitNow(code);
}
leaveWith(leaveNow);

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
