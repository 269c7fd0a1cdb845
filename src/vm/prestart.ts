// The head start of riff's start-up: the Lua workers begin booting (Node's
// worker bootstrap, the Lua VM: most of start-up) at riff's first moment;
// the capture thread then takes the Lua WebAssembly module from the build's
// cache of its machine code (or, without one, has V8 compile it once the
// workers have booted), and loads and parses the command line. Kept apart
// from pool.ts so that nothing heavy loads before the workers start.
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { cachedLua, compiledLua, requireCjs, setWasmFlags } from './wasm.js';
import { openSerializer, TRAINING } from './wasm-cache.js';
import { NO_V8_FLAGS } from '../bundle-cache.js';

// In riff's bundles (scripts/bundle.ts) the worker is dist/worker.cjs, one
// CommonJS file; unbundled (tests that start a pool themselves), tsc's worker.js.
declare const RIFF_WORKER_BUNDLE: string | undefined;
export const WORKER_URL = new URL(typeof RIFF_WORKER_BUNDLE === 'string' ? RIFF_WORKER_BUNDLE : './worker.js', import.meta.url);

/**
 * Each worker's heap limits: a young generation of 1 MiB semi-spaces (and as
 * much again for large objects), V8's starting size, which it never grows.
 * Records and batches pass through a worker briefly; a young generation
 * grown by a burst would stay (see holdYoungGeneration).
 */
export const workerLimits: ResourceLimits = { maxYoungGenerationSizeMb: 3 };

/**
 * The capture thread's young generation, held at its size: V8 doubles a
 * thread's young generation (up to 16 MiB a semi-space) each time as many
 * bytes have survived its scavenges as it holds, and gives it back only when
 * the thread is nearly idle. Records live here until the outputs write them,
 * and a reload's deinit hands over a burst of them, so riff's resident
 * memory climbed in steps at reloads, up to 32 MiB more (README, Soak).
 * V8 reads the growth factor each time it would grow, so factor 1 holds the
 * size. But each new isolate's heap set-up (V8's Heap::ConfigureHeap)
 * raises a factor under 2 to 2: it is set again as each worker says it has
 * booted, before that worker is given any packets (a reload's burst of
 * records comes after its new workers are ready). A start-up flag
 * (--max-semi-space-size) would hold it from the first moment, but any V8
 * flag set when Node starts has it compile its own modules without their
 * cache, ~10-20 ms of every start (README, Start-up).
 */
export function holdYoungGeneration(): void {
  if (NO_V8_FLAGS || TRAINING) return;
  (requireCjs('node:v8') as typeof import('node:v8')).setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * A worker's stdout and stderr as streams of its own, which the pool reads
 * and forwards (pool.ts forwardStdio): left to Node, `new Worker` pipes them
 * into process.stdout and process.stderr, creating both streams as it
 * spawns the thread, and for a pipe that loads Node's net module: ~2.5 ms
 * before the thread starts, its first line ~4 ms later (README, Start-up).
 */
export const OWN_STDIO = { stdout: true, stderr: true } as const;

/** Workers started before the pool exists; start() hands them their orders by message instead of workerData. */
export const early: { worker: Worker; error: Error | null }[] = [];

// V8's flags for the Lua module (src/vm/wasm.ts setWasmFlags) are set once
// the early workers have booted, and the module is compiled then. Node
// compiles a worker's own JavaScript (its bootstrap, some 30 ms) from a
// cache that V8 accepts only while every V8 flag has its default value: set
// before, any flag made each worker start ~30 ms slower (README, Start-up).
// Nothing waits for a pool started without early workers (tests).
let flagsSet: Promise<void> = Promise.resolve();

/**
 * Post the Lua module to a worker: at once when it came from the build's
 * cache, else once it is compiled. Every worker instantiates the same code.
 * null (the compile failed, or the module could not be posted) has the
 * worker compile its own, which then reports why.
 */
export function sendModule(worker: Worker): void {
  const send = (module: unknown) => {
    for (const m of [module, null]) {
      try {
        worker.postMessage({ type: 'wasm', module: m });
        return;
      } catch {
        // not cloneable here: the worker compiles its own; a worker already gone takes nothing
      }
    }
  };
  const cached = cachedLua();
  if (cached) send(cached);
  else flagsSet.then(compiledLua).then(send, () => send(null));
}

/**
 * Spawn n workers, then, while they boot, read the Lua module's code from
 * the build's cache (src/vm/wasm-cache.ts) on this thread, before it loads
 * the command line. Without a cache V8's flags are set and the module
 * compiled once each worker has said it booted (its first message, before
 * its modules load: src/vm/worker-boot.ts), or failed.
 */
export function prestartWorkers(n: number): void {
  const booting: Promise<void>[] = [];
  while (early.length < n) {
    const worker = new Worker(WORKER_URL, { workerData: null, resourceLimits: workerLimits, ...OWN_STDIO });
    const e = { worker, error: null as Error | null };
    early.push(e);
    worker.on('error', (err) => (e.error = err));
    // Not needed after all (--help, a bad argument): it must not keep riff alive.
    worker.unref();
    booting.push(
      new Promise<void>((resolve) => {
        worker.once('message', () => resolve());
        worker.once('error', () => resolve());
        worker.once('exit', () => resolve());
      }),
    );
  }
  // After the spawn: opening the serializer loads node:v8 (~4 ms), which
  // would hold up the workers' start.
  const cached = !NO_V8_FLAGS && !TRAINING && openSerializer() ? cachedLua() : undefined;
  flagsSet = Promise.all(booting).then(() => {
    // The flags say how to compile the module; with the cache taken nothing compiles it.
    if (!cached) setWasmFlags();
    holdYoungGeneration();
  });
  for (const e of early) sendModule(e.worker);
}
