// riff's command line as options: yargs's definitions and help, then the
// checks that turn each bad value into one line naming the option.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type yargsType from 'yargs/yargs';
import { tcpdumpFlags, type Flags } from '../tcpdump-flags.js';
import { namesWritten } from '../outputs/pcap-writer.js';
import { errnoText } from '../outputs/types.js';
import { stderr, terminal } from '../outputs/fd-sink.js';

// yargs's CommonJS build: its ES module build wraps help text with a plain
// hard wrap that cuts words in half ("L / ua-scriptable"); the CommonJS one
// wraps at spaces (wrap-ansi). The command line's bundle holds it
// (scripts/bundle.ts makes these two calls its own require). yargs/yargs is
// the parser without the singleton that require('yargs') builds as it loads
// (a whole parser set up, and package.json looked for, never used here).
const requireCjs = createRequire(import.meta.url);
const yargs = requireCjs('yargs/yargs') as typeof yargsType;
export const { hideBin } = requireCjs('yargs/helpers') as { hideBin(argv: string[]): string[] };

export const PKG = JSON.parse(
  fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json'), 'utf8'),
) as { version: string };

/** A problem the user can fix: printed as one line, exit code attached. */
export class Fail extends Error {
  constructor(
    message: string,
    readonly code: 1 | 2,
  ) {
    super(message);
  }
}

export function note(line: string): void {
  stderr.text(`riff: ${line}\n`);
}

const MIN_LUA_MEMORY = 1 << 20;

function parseSize(v: string | number, what: string): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$/i.exec(v.trim());
  if (!m) throw new Fail(`${what}: '${v}' is not a size (e.g. 256M, 1G, 0 for unlimited)`, 2);
  const mult = { '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Math.floor(Number(m[1]) * mult);
}

export function parseArgs(argv: string[]) {
  const parser = yargs()
    .scriptName('riff')
    .usage('$0 [--lua FILE] (-i IFACE | -r CAPTURE) [filter expression...]\n\nA sandboxed, Lua-scriptable packet sniffer.')
    .option('lua', { type: 'string', describe: 'Lua script: sets buffer(packet), returns a pipeline or a list of plugins (default: the bundled pipeline)' })
    .option('i', { alias: 'interface', type: 'string', describe: 'capture live on this interface (any, lo, eth0...)' })
    .option('r', { alias: 'read', type: 'string', describe: 'read packets from a pcap or pcapng file (- for stdin)' })
    .option('c', { alias: 'count', type: 'number', describe: 'stop after this many packets (that passed the filter)' })
    .option('w', { alias: 'write', type: 'string', describe: 'also write the packets riff read (after the filter) to this pcap file (- for stdout)' })
    .option('B', { alias: 'buffer-size', type: 'number', describe: "live capture: libpcap's kernel buffer in KiB, as tcpdump -B (riff's default 32768 = 32 MiB)" })
    .option('s', { alias: 'snapshot-length', type: 'number', describe: 'live capture: bytes kept of each packet (0 = 262144, as tcpdump)' })
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
    .option('output', { alias: 'o', type: 'string', array: true, nargs: 1, describe: 'where riff.emit records go, repeatable: json:-, json:FILE, sqlite:FILE, syslog:udp://HOST:PORT, syslog:tcp://HOST:PORT[?options], mysql://USER:PASS@HOST:PORT/DB[?options] (default: text lines on stdout)' })
    .option('sensor', { type: 'string', describe: 'name of this riff in shared databases (mysql:// outputs): the sensor column (default: the host name)' })
    .option('workers', { type: 'number', default: Number(process.env.RIFF_WORKERS || 1), describe: 'Lua workers (VMs); packets are shared out by flow, both directions of a connection to the same worker' })
    .option('stats', { type: 'number', describe: 'print a counters line on stderr every SECONDS' })
    .option('progress', { type: 'boolean', describe: 'reading a file: a progress line on stderr (packets, rate, % of the file, time left); default on a terminal only, --no-progress for never' })
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
    .wrap(Math.min(110, terminal(1)?.columns || 80));
  return parser.parseSync(withValues(argv, parser));
}

/**
 * An option that takes a value takes the next word, whatever it is, as
 * tcpdump's getopt does: `-c -q` is a count of '-q' (refused as one), and
 * `--lua-memory -5M` a size of '-5M', where yargs would read another option
 * and leave -c without a value, silently. Each such pair is handed to yargs
 * as --name=value; an option at the end of the line with no value is
 * refused here, naming it. Short options may be bundled (`-qc 5`, `-c5`).
 */
function withValues(argv: string[], parser: object): string[] {
  // yargs's own account of its options (not in its type declarations).
  const o = (parser as { getOptions(): Record<'string' | 'number' | 'array', string[]> }).getOptions();
  const valued = new Set([...o.string, ...o.number, ...o.array]);
  // An empty value ('', or --count=) is no value either: yargs would read it as 0.
  const need = (flag: string, i: number, v = argv[i]): string => {
    if (i >= argv.length || v === '') throw new Fail(`${flag} needs a value (riff --help says what it takes)`, 2);
    return v;
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (a.startsWith('--') && valued.has(a.slice(2).split('=')[0])) {
      const eq = a.indexOf('=');
      out.push(eq < 0 ? `${a}=${need(a, ++i)}` : `${a.slice(0, eq)}=${need(a.slice(0, eq), i, a.slice(eq + 1))}`);
      continue;
    }
    if (/^-[^-]/.test(a)) {
      // A bundle: flags up to the first option that takes a value, which takes the bundle's rest or the next word.
      let j = 1;
      while (j < a.length && !valued.has(a[j])) j++;
      if (j < a.length) {
        if (j > 1) out.push(a.slice(0, j));
        out.push(`--${a[j]}=${j + 1 < a.length ? need(`-${a[j]}`, i, a.slice(j + 1).replace(/^=/, '')) : need(`-${a[j]}`, ++i)}`);
        continue;
      }
    }
    out.push(a);
  }
  given = out;
  return out;
}

/** The command line as yargs read it (withValues): every option's value as --name=value. */
let given: string[] | null = null;

/**
 * Every option is given at most once (yargs makes a repeated one an array)
 * and numbers are named as typed: yargs has turned 'abc' into NaN by now,
 * so the text comes from the command line itself.
 */
export function checkRepeats(args: Record<string, unknown>): void {
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
export function typed(value: number, names: string[], argv: string[] = given ?? hideBin(process.argv)): string {
  if (!Number.isNaN(value)) return String(value);
  let text = String(value);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    for (const n of names) {
      const flag = n.length === 1 ? `-${n}` : `--${n}`;
      if (a === flag && i + 1 < argv.length) text = argv[i + 1];
      else if (a.startsWith(flag + '=')) text = a.slice(flag.length + 1);
      else if (a.startsWith(`--${n}=`)) text = a.slice(n.length + 3);
      else if (n.length === 1 && a.startsWith(flag) && a.length > 2 && !a.startsWith('--')) text = a.slice(2);
    }
  }
  return text;
}

export type Args = ReturnType<typeof parseArgs>;

/** The checks of the values given, in the order the user sees their errors; the values riff runs with. */
export function checkArgs(args: Args) {
  if (args.i !== undefined && args.r !== undefined) throw new Fail('give either -i IFACE or -r FILE, not both', 2);
  const flags = tcpdumpFlags(args);
  if (args.i === undefined && args.r === undefined)
    throw new Fail('nothing to read: give -i IFACE to capture live or -r FILE to read a capture (riff --help)', 2);
  // As tcpdump: -c 0 is refused, not a run that reads nothing.
  if (args.c !== undefined && (!Number.isInteger(args.c) || args.c < 1))
    throw new Fail(`-c: '${typed(args.c, ['c', 'count'])}' is not a packet count (a whole number >= 1)`, 2);
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
  // The runtime itself (riff's Lua modules, the driver) takes ~200 KiB; a
  // WebAssembly VM's memory ends below 4 GiB, so a larger limit is none.
  if (memoryLimit > 0 && memoryLimit < MIN_LUA_MEMORY)
    throw new Fail(`--lua-memory: ${args['lua-memory']} is below riff's minimum of 1M (its Lua runtime alone takes ~200K); give 1M or more, or 0 for no limit`, 2);
  if (memoryLimit >= 2 ** 32)
    throw new Fail(`--lua-memory: ${args['lua-memory']} is more than a Lua VM can hold (its WebAssembly memory ends below 4G); give less, or 0 for no limit`, 2);
  const timeout = args['lua-timeout'];
  if (!(timeout >= 0) || timeout > 86400) throw new Fail(`--lua-timeout: '${timeout}' is not a number of seconds (0 = no limit)`, 2);

  const workers = args.workers;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    // Not given on the command line: the number came from the environment.
    if (!hideBin(process.argv).some((a) => a === '--workers' || a.startsWith('--workers='))) throw new Fail(`RIFF_WORKERS=${process.env.RIFF_WORKERS}: not a number of workers from 1 to 64; fix or unset it, or give --workers N`, 2);
    throw new Fail(`--workers: '${typed(workers, ['workers'])}' is not a number of workers from 1 to 64`, 2);
  }
  const sensor = args.sensor;
  if (sensor !== undefined && !/^[^\x00-\x1f\x7f]{1,64}$/u.test(sensor))
    throw new Fail(`--sensor: '${sensor}' is not a sensor name (1 to 64 characters, no control characters)`, 2);
  const statsEvery = args.stats;
  if (statsEvery !== undefined && !(statsEvery > 0)) throw new Fail(`--stats: '${typed(statsEvery, ['stats'])}' is not a number of seconds`, 2);
  filesApart(args, flags);
  return { flags, budget, memoryLimit, timeout, workers, sensor, statsEvery };
}

/**
 * No file riff writes is one it reads or another output writes: `-r x -w x`
 * would truncate the capture under the reader (with -C, `-w x` writes x1,
 * x2...), `-w` over --lua the script, and two outputs into one file
 * interleave pcap and JSON or write each record twice. Files that exist are
 * compared by device and inode (links, other spellings), new ones by their
 * resolved path, a rotating -w by the names it will make. Character devices
 * (/dev/null, a terminal) take any number of writers; `-` is standard
 * output, and /dev/stdout the same file. `outputs`: the record outputs'
 * specs, the command line's and (once the workers have read it)
 * config.lua's, paths resolved.
 */
export function filesApart(args: Args, flags: Flags, outputs: string[] = (args.output ?? []).map(String)): void {
  interface Named {
    what: string;
    /** Identities: dev:ino, or a path not there yet, or 'standard output'. */
    keys: string[];
    /** The paths it goes by (resolved, real). */
    paths: string[];
    /** A rotating -w: every name it may write. */
    names?: RegExp;
  }
  const identity = (st: fs.Stats): string[] => (st.isCharacterDevice() ? [] : [`${st.dev}:${st.ino}`]);
  const named = (what: string, file: string): Named => {
    if (file === '-') {
      let keys: string[] = [];
      try {
        keys = identity(fs.fstatSync(1));
      } catch {
        // no standard output at all
      }
      return { what, keys: ['standard output', ...keys], paths: [] };
    }
    const abs = path.resolve(file);
    let real = abs;
    try {
      real = path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs));
      real = fs.realpathSync(abs);
    } catch {
      // not there (yet): its directory's real path, or as given
    }
    try {
      return { what, keys: identity(fs.statSync(file)), paths: [abs, real] };
    } catch {
      return { what, keys: [real], paths: [abs, real] };
    }
  };
  const reads: Named[] = [];
  if (args.r !== undefined && args.r !== '-') reads.push(named(`-r ${args.r}`, args.r));
  if (args.lua !== undefined) reads.push(named(`--lua ${args.lua}`, args.lua));
  if (args.F !== undefined) reads.push(named(`-F ${args.F}`, args.F));
  const writes: Named[] = [];
  if (args.w !== undefined) {
    const w = named(`-w ${args.w}`, args.w);
    const o = flags.rotation;
    if (o.rotateBytes || o.rotateSeconds) {
      // The names it makes, over its real directory; the plain name only if one of them.
      w.names = namesWritten(w.paths[1], o);
      if (!w.names.test(w.paths[1])) w.keys = [];
    }
    writes.push(w);
  }
  for (const spec of outputs) {
    const m = /^(?:json|sqlite):(.+)$/.exec(spec);
    if (m) writes.push(named(`-o ${spec}`, m[1]));
  }
  const clash = (a: Named, b: Named) =>
    a.keys.some((k) => b.keys.includes(k)) || b.paths.some((p) => a.names?.test(p)) || a.paths.some((p) => b.names?.test(p));
  writes.forEach((w, i) => {
    const read = reads.find((r) => clash(w, r));
    if (read) throw new Fail(`${w.what}: the same file as ${read.what}; writing it would destroy that, give another file`, 2);
    const other = writes.slice(0, i).find((o) => clash(w, o));
    if (other) throw new Fail(`${other.what} and ${w.what} write the same ${w.keys[0] === 'standard output' ? 'stream' : 'file'}; give each its own`, 2);
  });
  if (args.w !== undefined && args.Z === undefined) creatable(args.w, flags);
}

/**
 * -w is created once the capture is open (after -Z, as tcpdump): a
 * directory that is not there or not writable is said now, before the
 * script starts, in the words the writer would use.
 */
function creatable(w: string, flags: Flags): void {
  if (w === '-' || (flags.rotation.rotateSeconds && w.includes('%'))) return;
  const fail = (code: string) => {
    throw new Fail(`-w ${w}: cannot create it: ${errnoText({ code })}; name a writable file`, 2);
  };
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(w);
  } catch {
    // not there yet: its directory must be
  }
  if (st?.isDirectory()) fail('EISDIR');
  if (st) return;
  const dir = path.dirname(path.resolve(w));
  try {
    if (!fs.statSync(dir).isDirectory()) fail('ENOTDIR');
  } catch (e) {
    if (e instanceof Fail) throw e;
    fail('ENOENT');
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    fail('EACCES');
  }
}
