#!/usr/bin/env node
// riff's command line: parse, open the capture, start the Lua runtime, move
// batches from one to the other, and account for every packet at the end.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type yargsType from 'yargs';
import { Batch, FLAG_FILTERED_OUT, HDR, align8, stampIds } from './capture/batch.js';
import { openCaptureFileAsync, CaptureFileError, WouldBlock, tooLarge, type CaptureFile } from './capture/file.js';
import { compileFilter, FilterError, FilterUnavailable, type PacketFilter } from './capture/filter.js';
import { LiveCapture, datalinks, listDevices, liveUnavailable, type LiveStats } from './capture/live.js';
import { PcapWriter, PcapWriteError, type PcapWriterOptions } from './outputs/pcap-writer.js';
import { FlagError, dropPrivileges, kernelLines, microPcap, tcpdumpFlags } from './tcpdump-flags.js';
import { openOutputs, recordSink as makeRecordSink, resolveSpec, OutputSet, OutputSpecError, STDOUT_CLOSED } from './outputs/output.js';
import { TextOutput } from './outputs/text-output.js';
import { stdout, stderr } from './outputs/fd-sink.js';
import { ScriptError } from './vm/runtime.js';
import { LuaPool, type Ready } from './vm/pool.js';
import { onSecondInterrupt, whenReload, whenReopen, whenSignalled } from './signals.js';

// yargs's CommonJS build: its ES module build wraps help text with a plain
// hard wrap that cuts words in half ("L / ua-scriptable"); the CommonJS one
// wraps at spaces (wrap-ansi).
const require = createRequire(import.meta.url);
const yargs = require('yargs') as typeof yargsType;
const { hideBin } = require('yargs/helpers') as { hideBin(argv: string[]): string[] };

const PKG = JSON.parse(
  fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8'),
) as { version: string };

/** A problem the user can fix: printed as one line, exit code attached. */
class Fail extends Error {
  constructor(
    message: string,
    readonly code: 1 | 2,
  ) {
    super(message);
  }
}

function note(line: string): void {
  stderr.text(`riff: ${line}\n`);
}

function parseSize(v: string | number, what: string): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$/i.exec(v.trim());
  if (!m) throw new Fail(`${what}: '${v}' is not a size (e.g. 256M, 1G, 0 for unlimited)`, 2);
  const mult = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Math.floor(Number(m[1]) * mult);
}

function parseArgs(argv: string[]) {
  return yargs(argv)
    .scriptName('riff')
    .usage('$0 [--lua FILE] (-i IFACE | -r CAPTURE) [filter expression...]\n\nA sandboxed, Lua-scriptable packet sniffer.')
    .option('lua', { type: 'string', describe: 'Lua script: sets buffer(packet), returns a pipeline or a list of plugins (default: the bundled pipeline)' })
    .option('i', { alias: 'interface', type: 'string', describe: 'capture live on this interface (any, lo, eth0...)' })
    .option('r', { alias: 'read', type: 'string', describe: 'read packets from a pcap or pcapng file (- for stdin)' })
    .option('c', { alias: 'count', type: 'number', describe: 'stop after this many packets (that passed the filter)' })
    .option('w', { alias: 'write', type: 'string', describe: 'also write the packets riff read (after the filter) to this pcap file (- for stdout)' })
    .option('B', { alias: 'buffer-size', type: 'number', default: 32768, describe: "live capture: libpcap's kernel buffer in KiB, as tcpdump -B (riff's default 32768 = 32 MiB)" })
    .option('s', { alias: 'snapshot-length', type: 'number', default: 262144, describe: 'live capture: bytes kept of each packet (0 = 262144, as tcpdump)' })
    .option('p', { alias: 'no-promiscuous-mode', type: 'boolean', describe: "live capture: don't put the interface into promiscuous mode" })
    .option('immediate-mode', { type: 'boolean', describe: "live capture: hand each packet over at once (default: within libpcap's 10 ms buffer timeout)" })
    .option('time-stamp-precision', { type: 'string', describe: 'micro or nano (default: nano where the kernel gives it; -w writes what the source has)' })
    .option('Q', { alias: 'direction', type: 'string', describe: 'live capture: in, out or inout (default)' })
    .option('y', { alias: 'linktype', type: 'string', describe: 'live capture: the data link type to capture with (a name from -L, e.g. EN10MB, LINUX_SLL)' })
    .option('L', { alias: 'list-data-link-types', type: 'boolean', describe: "list the interface's data link types (for -y), then exit" })
    .option('F', { type: 'string', describe: 'read the filter expression from FILE (# starts a comment); a filter on the command line is then ignored, as in tcpdump' })
    .option('n', { type: 'boolean', describe: 'accepted for tcpdump users: riff never resolves names' })
    .option('U', { alias: 'packet-buffered', type: 'boolean', describe: '-w: write out each batch of packets as it comes, not in 1 MiB chunks' })
    .option('Z', { alias: 'relinquish-privileges', type: 'string', describe: 'after opening the capture, run as USER (-w files then belong to USER)' })
    .option('C', { type: 'string', describe: '-w: start a new file once one exceeds this many million bytes (k, m, g suffixes: KiB, MiB, GiB), named FILE, FILE1, FILE2...' })
    .option('G', { type: 'number', describe: '-w: start a new file every SECONDS of packet time; FILE may hold strftime conversions (%Y-%m-%d_%H:%M:%S)' })
    .option('W', { type: 'number', describe: '-w: with -C, a ring of COUNT files; with -G alone, stop after COUNT files' })
    .option('D', { alias: 'list-interfaces', type: 'boolean', describe: 'list the interfaces riff can capture on, then exit' })
    .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: "don't print the per-packet report lines (id, length, time)" })
    .option('verbose', { type: 'boolean', default: false, describe: 'full Lua tracebacks for script errors' })
    .option('strict', { type: 'boolean', default: false, describe: 'stop at the first Lua error (exit 1)' })
    .option('lua-budget', { type: 'number', default: 10_000_000, describe: 'Lua instructions allowed per packet once it runs long (0 = unlimited)' })
    .option('output', { alias: 'o', type: 'string', array: true, describe: 'where riff.emit records go, repeatable: json:-, json:FILE, sqlite:FILE, syslog:udp://HOST:PORT, syslog:tcp://HOST:PORT[?options], mysql://USER:PASS@HOST:PORT/DB[?options] (default: text lines on stdout)' })
    .option('sensor', { type: 'string', describe: 'name of this riff in shared databases (mysql:// outputs): the sensor column (default: the host name)' })
    .option('workers', { type: 'number', default: Number(process.env.RIFF_WORKERS || 1), describe: 'Lua workers (VMs); packets are shared out by flow, both directions of a connection to the same worker' })
    .option('stats', { type: 'number', describe: 'print a counters line on stderr every SECONDS' })
    .option('lua-memory', { type: 'string', default: '256M', describe: 'Lua heap limit (e.g. 64M, 1G; 0 = unlimited)' })
    .option('lua-timeout', { type: 'number', default: 5, describe: 'wall-clock SECONDS one packet may take in Lua (loading the script, setup and deinit: 10x); a worker over it is ended and restarted (0 = no limit)' })
    .example('$0 -r fixtures/http.pcap', 'the bundled pipeline over a capture file')
    .example('$0 --lua pipeline.lua -i eth1', 'run an original riff tree live on eth1')
    .example("$0 --lua watch.lua -i any -c 100 'tcp port 8080'", 'first 100 packets to or from port 8080')
    .example('$0 -q --lua count.lua -r big.pcapng -w http.pcap tcp port 80', 'filter a file, run a script, keep what matched')
    .version(PKG.version)
    .alias('version', 'V')
    .help()
    .alias('help', 'h')
    .strictOptions()
    .parserConfiguration({ 'unknown-options-as-args': false })
    .fail((msg, err) => {
      throw new Fail(msg ?? err?.message ?? 'bad command line', 2);
    })
    .wrap(Math.min(110, process.stdout.columns || 80))
    .parseSync();
}

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

/**
 * Every option is given at most once (yargs makes a repeated one an array)
 * and numbers are named as typed: yargs has turned 'abc' into NaN by now,
 * so the text comes from the command line itself.
 */
function checkRepeats(args: Record<string, unknown>): void {
  for (const [key, v] of Object.entries(args)) {
    if (key === '_' || key === 'output' || key === 'o' || key === '$0' || !Array.isArray(v)) continue;
    const flag = key.length === 1 ? `-${key}` : `--${key}`;
    throw new Fail(`${flag} given ${v.length} times (${v.join(', ')}); give it once`, 2);
  }
  // A number yargs could not read is NaN here: say what was typed, for every
  // numeric option at once (their own checks then see only real numbers).
  const unread = Object.keys(args).filter((k) => Number.isNaN(args[k]) && !/[A-Z]/.test(k.slice(1)));
  for (const key of unread) {
    const text = typed(NaN, [key]);
    if (text === 'NaN') continue; // an alias of what the user typed
    const flag = key.length === 1 ? `-${key}` : `--${key}`;
    throw new Fail(`${flag}: '${text}' is not a number`, 2);
  }
}

/** What the user typed for a numeric option whose value yargs could not read. */
function typed(value: number, names: string[], argv: string[] = hideBin(process.argv)): string {
  if (!Number.isNaN(value)) return String(value);
  let text = String(value);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    for (const n of names) {
      const flag = n.length === 1 ? `-${n}` : `--${n}`;
      if (a === flag && i + 1 < argv.length) text = argv[i + 1];
      else if (a.startsWith(flag + '=')) text = a.slice(flag.length + 1);
      else if (n.length === 1 && a.startsWith(flag) && a.length > 2 && !a.startsWith('--')) text = a.slice(2);
    }
  }
  return text;
}

/** Counted on the capture thread; what Lua did comes from the workers. */
interface Counters {
  read: number;
  passed: number;
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
  if (args.i !== undefined && args.r !== undefined) throw new Fail('give either -i IFACE or -r FILE, not both', 2);
  const flags = tcpdumpFlags(args);
  if (args.i === undefined && args.r === undefined)
    throw new Fail('nothing to read: give -i IFACE to capture live or -r FILE to read a capture (riff --help)', 2);
  if (args.c !== undefined && (!Number.isInteger(args.c) || args.c < 0))
    throw new Fail(`-c: '${typed(args.c, ['c', 'count'])}' is not a packet count (a whole number >= 0)`, 2);
  if (args.lua !== undefined) {
    let st: fs.Stats;
    try {
      st = fs.statSync(args.lua);
    } catch {
      throw new Fail(`--lua ${args.lua}: no such file; give the path of your Lua script`, 2);
    }
    if (!st.isFile()) throw new Fail(`--lua ${args.lua}: not a file; give the path of your Lua script`, 2);
    try {
      fs.accessSync(args.lua, fs.constants.R_OK);
    } catch {
      throw new Fail(`--lua ${args.lua}: cannot read it (permission denied)`, 2);
    }
  }
  const budget = args['lua-budget'];
  if (!Number.isInteger(budget) || budget < 0) throw new Fail(`--lua-budget: '${typed(budget, ['lua-budget'])}' is not a whole number >= 0`, 2);
  const memoryLimit = parseSize(args['lua-memory'], '--lua-memory');
  const timeout = args['lua-timeout'];
  if (!(timeout >= 0) || timeout > 86400) throw new Fail(`--lua-timeout: '${timeout}' is not a number of seconds (0 = no limit)`, 2);

  const workers = args.workers;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new Fail(`--workers: '${typed(workers, ['workers'])}' is not a number of workers from 1 to 64`, 2);
  const sensor = args.sensor;
  if (sensor !== undefined && !/^[^\x00-\x1f\x7f]{1,64}$/u.test(sensor))
    throw new Fail(`--sensor: '${sensor}' is not a sensor name (1 to 64 characters, no control characters)`, 2);
  const statsEvery = args.stats;
  if (statsEvery !== undefined && !(statsEvery > 0)) throw new Fail(`--stats: '${typed(statsEvery, ['stats'])}' is not a number of seconds`, 2);

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
  // passed = dropped + processed + packets that ended in an error (+ any left when --strict stopped)
  const lines = [
    `${counters.read} packets ${args.r !== undefined ? 'read' : 'captured'}`,
    `${counters.passed} packets passed the filter`,
  ];
  if (kernel) lines.splice(1, 0, ...kernelLines(kernel, counters.read, loopback));
  if (args.i !== undefined) lines.push(`${pool.dropped} packets dropped at the ring (Lua could not keep up)`);
  lines.push(
    `${s.processed - s.packetErrors} packets processed by Lua`,
    // Errors outside packets (setup, deinit, report, __gc) are said apart:
    // only packets' errors take part in the packet accounting.
    `${s.errors} Lua errors${s.errors ? ` (${[...s.byScript].map(([k, v]) => `${k}: ${v}`).join(', ')}${s.errors > s.packetErrors ? `; ${s.errors - s.packetErrors} of them outside packets: setup, deinit, report, __gc` : ''})` : ''}`,
  );
  if (skipped) lines.push(tooLarge(skipped, pool.maxRecord));
  if (pool.reloads) lines.push(`${pool.reloads} reload${pool.reloads > 1 ? 's' : ''} (SIGHUP): the counts above are over all ${pool.reloads + 1} generations of the script`);
  if (reopens) lines.push(`${reopens} reopen${reopens > 1 ? 's' : ''} of the output files (SIGUSR1)`);
  if (pool.ended)
    lines.push(`${pool.lost} packets lost with ${pool.ended} Lua worker${pool.ended > 1 ? 's' : ''} ended (over --lua-timeout, or died); ${pool.restarted} restarted`);
  // passed = processed + errors + dropped + lost (+ not processed)
  const unprocessed = counters.passed - pool.dropped - pool.lost - s.processed;
  if (unprocessed > 0) lines.push(`${unprocessed} packets not processed (stopped early)`);
  // Records: how many Lua emitted, then each output's own account (with
  // several outputs a record is written once per output).
  const accounts = outputs.stats();
  if (outputs.emitted || accounts.some((a) => a.stats.written || a.stats.dropped)) {
    lines.push(`${outputs.emitted} records emitted`);
    for (const { spec, stats: st } of accounts) {
      const lost = Object.entries(st.lost).map(([why, n]) => `${n} not written: ${why}`);
      lines.push(`output ${spec}: ${[`${st.written} written`, ...lost].join(', ')}`);
    }
  }
  // A reader that went away (riff | head) chose to stop: counted above, not a failure.
  const recordsLost = accounts.some((a) => a.stats.dropped > (a.stats.lost[STDOUT_CLOSED] ?? 0));
  if (args.verbose) lines.push(`peak memory ${(process.resourceUsage().maxRSS / 1024).toFixed(1)} MiB resident`);
  const w = writer as PcapWriter | null;
  if (w) {
    const lost = w.lost + writerMissed;
    const to = args.w === '-' ? 'standard output' : new Set(w.files).size > 1 ? `${new Set(w.files).size} files (${w.files[0]} ... ${w.current})` : w.current || args.w;
    lines.push(`${w.written} packets written to ${to}${w.skipped ? `, ${w.skipped} not written (link type differs from the file's)` : ''}${w.left ? `, ${w.left} not written (-W ${args.W}: the last -G file had ended)` : ''}${lost ? `, ${lost} not written (${w.failure})` : ''}`);
  } else if (writerFailed) lines.push(`0 packets written to ${args.w}${writerMissed ? `, ${writerMissed} not written` : ''}`);
  stderr.text(lines.join('\n') + '\n');
  if (liveFailure) {
    // The interface went away or failed: the summary above still counts what came before.
    note(liveFailure);
    return 1;
  }
  const failed = outputFailed || recordsLost;
  if (interrupted) return failed ? 1 : 0;
  if (damage) {
    note(`${named(damage.message)} at byte offset ${damage.offset}; ${counters.read} packets before it were processed`);
    return 1;
  }
  if (failed) return 1;
  if (args.strict && (s.errors > 0 || pool.ended > 0)) return 1;
  // A worker lost for good (its setup hung, or it could not be restarted): the run did not do its job.
  if (pool.ended > pool.restarted) return 1;
  return 0;
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
