// riff's command line (dist/cli.cjs, 420 KB with yargs) runs from V8's code
// cache: the bytecode of every function a run calls, made by the build
// (scripts/bundle.ts runs riff once over fixtures/http.pcap, and the
// capture thread saves the cache beside the bundle, dist/cli.cjs.cache).
// Compiled from source, the command line cost the capture thread ~20 ms of
// CPU (V8 parsing the whole file, then compiling yargs's functions as they
// were first called) in the very window where the workers boot on the same
// two cores (README, Start-up). The workers' bundle is not cached: its
// cache cost ~8 MiB of the C library's heap for good (README, Start-up).
//
// V8 takes a code cache only when its own version and flags are those that
// made it, and checks the source by its length alone: the cache's first line
// names the bundle's size and modification time, and a cache for another
// file is never offered. Nor is one damaged after the build: V8 does not
// check a cache's bytes either (one damaged past its header made it abort
// the process at every start), so that line also holds the rest's length
// and checksum (src/vm/wasm-cache.ts readStamped). A cache that V8 refuses (another Node, a V8 flag on
// the command line) costs nothing but the compile it would have saved. The
// command line is compiled at riff's first moment, under V8's defaults, so
// the build's run sets no V8 flag.
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { readStamped, stampFor, writeStamped } from './vm/wasm-cache.js';

const CACHE = '.cache';
const MAGIC = 'riff-code-cache';

/**
 * The build's own run (scripts/bundle.ts, RIFF_CODE_CACHE=make): it sets
 * no V8 flag (a cache records the flags it was made under, and V8 refuses
 * it under others), and saves the cache at its end.
 */
export const NO_V8_FLAGS = process.env.RIFF_CODE_CACHE === 'make';

// The bundles this thread has run, by file.
const loaded = new Map<string, vm.Script>();

const stamp = (file: string): string => stampFor(MAGIC, file);

/** The cache beside `file` when it was made for this very file and is whole, else undefined. */
function cacheFor(file: string): Buffer | undefined {
  try {
    const data = readStamped(file + CACHE, stamp(file));
    return data && Buffer.from(data);
  } catch {
    return undefined;
  }
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
export function runBundle(file: string): unknown {
  const script = compile(file, NO_V8_FLAGS ? undefined : cacheFor(file));
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

/** Whether V8 takes `file`'s code cache, compiling it here (not running it): for the tests, in a process of their own. */
export function codeCacheTaken(file: string): boolean {
  const cachedData = cacheFor(file);
  return cachedData !== undefined && !compile(file, cachedData).cachedDataRejected;
}

/**
 * The build's run: save each bundle this thread ran, with what it compiled.
 * A cache that cannot be written is left out (the build says so). Written
 * whole or not at all (a file of its own, synced, then renamed): a build cut
 * short must not leave a damaged one.
 */
export function saveCodeCaches(): void {
  if (!NO_V8_FLAGS) return;
  // One that cannot be written is not ours to write here: riff runs on, compiling from source next time.
  for (const [file, script] of loaded) writeStamped(file + CACHE, stamp(file), script.createCachedData());
}
