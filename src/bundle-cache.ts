// riff's bundles (dist/cli.cjs on the capture thread, dist/worker.cjs in each
// Lua worker) run from V8's code cache: the bytecode of every function a
// run calls, made by the build (scripts/bundle.ts runs riff over
// fixtures/http.pcap, once for each bundle, and the thread that runs it
// saves its cache beside it, dist/*.cjs.cache). Compiled from source, the
// command line cost the capture thread ~20 ms of CPU (V8 parsing 420 KB,
// then compiling yargs's functions as they were first called) in the very
// window where the workers boot on the same two cores, and a worker
// compiled the runtime's functions on its way to its first packet
// (README, Start-up).
//
// V8 takes a code cache only when its own version and flags are those that
// made it, and checks the source by its length alone: the cache's first line
// names the bundle's size and modification time, and a cache for another
// file is never offered. A cache that V8 refuses (another Node, a V8 flag on
// the command line) costs nothing but the compile it would have saved.
// The flags differ by thread: the command line is compiled at riff's first
// moment, under V8's defaults; a worker compiles worker.cjs once riff's
// flags for the Lua module are set (src/vm/worker-entry.ts), so its cache
// is made under them.
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

const CACHE = '.cache';
const MAGIC = 'riff-code-cache';

/**
 * The build's own runs (scripts/bundle.ts): RIFF_CODE_CACHE=cli makes the
 * command line's cache, in a run that sets no V8 flag (a cache records the
 * flags it was made under, and V8 refuses it under others); =worker makes
 * the worker's, in a run with riff's flags. The thread saves its bundle's
 * cache at its end.
 */
type Role = 'cli' | 'worker';
const MAKING = process.env.RIFF_CODE_CACHE as Role | undefined;
/** The command line's cache is being made: no V8 flag may be set. */
export const NO_V8_FLAGS = MAKING === 'cli';

// The bundles this thread has run, by file: shared by every copy of this
// module in the thread (the worker's entry and worker.cjs each bundle one).
const KEY = Symbol.for('riff.bundles');
const loaded: Map<string, vm.Script> = ((globalThis as Record<symbol, unknown>)[KEY] ??= new Map()) as Map<string, vm.Script>;

/** The cache's first line: which file (its size, its modification time to the millisecond) under which Node. */
function stamp(file: string): string {
  const st = fs.statSync(file);
  return `${MAGIC} ${st.size} ${Math.round(st.mtimeMs)} ${process.version}\n`;
}

/** The cache beside `file` when it was made for this very file, else undefined. */
function cacheFor(file: string): Buffer | undefined {
  let data: Buffer;
  try {
    data = fs.readFileSync(file + CACHE);
  } catch {
    return undefined;
  }
  const nl = data.indexOf(10);
  if (nl < 0 || data.toString('latin1', 0, nl + 1) !== stamp(file)) return undefined;
  return data.subarray(nl + 1);
}

/** `file` wrapped as Node wraps a CommonJS module, compiled (from `cachedData` when V8 takes it). */
function compile(file: string, cachedData: Buffer | undefined): vm.Script {
  let source = fs.readFileSync(file, 'utf8');
  // A #! line is a comment only at a script's start, not inside the wrapper.
  if (source.startsWith('#!')) source = '//' + source.slice(2);
  return new vm.Script(Module.wrap(source), { filename: file, cachedData });
}

/**
 * Run the CommonJS bundle `file` as require() would (its own module, require,
 * __filename and __dirname), compiled from its code cache when there is one
 * for it. Returns its exports.
 */
export function runBundle(file: string, role: Role): unknown {
  const script = compile(file, MAKING === role ? undefined : cacheFor(file));
  loaded.set(file, script);
  const m = new Module(file);
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
  (Module as unknown as { _cache: Record<string, unknown> })._cache[file] = m;
  const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
  wrapper.call(m.exports, m.exports, Module.createRequire(file), m, file, path.dirname(file));
  m.loaded = true;
  return m.exports;
}

/**
 * Whether V8 takes `file`'s code cache, compiling it here (not running it):
 * for the tests, in a process of their own (V8's flags as riff's start has them).
 */
export function codeCacheTaken(file: string): boolean {
  const cachedData = cacheFor(file);
  return cachedData !== undefined && !compile(file, cachedData).cachedDataRejected;
}

/**
 * The build's run for `role`: save each bundle this thread ran, with what it
 * compiled. A cache that cannot be written is left out (the build says which).
 */
export function saveCodeCaches(role: Role): void {
  if (MAKING !== role) return;
  for (const [file, script] of loaded) {
    try {
      fs.writeFileSync(file + CACHE, Buffer.concat([Buffer.from(stamp(file), 'latin1'), script.createCachedData()]));
    } catch {
      // not ours to write here: riff runs on, compiling from source next time
    }
  }
}
