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
// file is never offered. A cache that V8 refuses (another Node, a V8 flag on
// the command line) costs nothing but the compile it would have saved. The
// command line is compiled at riff's first moment, under V8's defaults, so
// the build's run sets no V8 flag.
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

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
 * whole or not at all (a file of its own, synced, then renamed): V8 refuses
 * a short cache, but one whose bytes are damaged past its header makes V8
 * abort the process at every start, and a build cut short must not leave
 * one.
 */
export function saveCodeCaches(): void {
  if (!NO_V8_FLAGS) return;
  for (const [file, script] of loaded) {
    const tmp = `${file}${CACHE}.${process.pid}`;
    try {
      const fd = fs.openSync(tmp, 'w');
      try {
        fs.writeFileSync(fd, Buffer.concat([Buffer.from(stamp(file), 'latin1'), script.createCachedData()]));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, file + CACHE);
    } catch {
      // not ours to write here: riff runs on, compiling from source next time
      fs.rmSync(tmp, { force: true });
    }
  }
}
