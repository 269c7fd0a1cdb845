// The head start of riff's start-up: the Lua workers begin booting (Node's
// worker bootstrap, the Lua VM: most of start-up) at riff's first
// moment, and the Lua WebAssembly module compiles on V8's background threads
// as soon as they have booted, while the capture thread loads and parses the
// command line. Kept apart from pool.ts so that nothing heavy loads before
// the workers start.
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { compiledLua, requireCjs, setWasmFlags } from './wasm.js';

// In riff's bundles (scripts/bundle.ts) the worker is dist/worker.cjs, one
// CommonJS file; unbundled (tests that start a pool themselves), tsc's worker.js.
declare const RIFF_WORKER_BUNDLE: string | undefined;
export const WORKER_URL = new URL(typeof RIFF_WORKER_BUNDLE === 'string' ? RIFF_WORKER_BUNDLE : './worker.js', import.meta.url);

/**
 * Each worker's heap limits: the young generation riff's #! line gives
 * every thread (--max-semi-space-size, src/riff.ts), once
 * youngGenerationFromFlag() has taken that flag back.
 */
export const workerLimits: ResourceLimits = {};

/**
 * The #! line's --max-semi-space-size=N sized this thread's young generation
 * when its heap was made, and that stays; as a V8 flag it would also cost
 * every worker ~30 ms of its start (Node's cache of its own code needs every
 * flag at its default, see flagsSet). So it is put back to its default before
 * any worker starts, and the workers get the same young generation (two
 * semi-spaces and as much again for large objects: 3N MiB) as a resource limit.
 */
function youngGenerationFromFlag(): void {
  const flag = process.execArgv.map((a) => /^--max[-_]semi[-_]space[-_]size=(\d+)$/.exec(a)).find((m) => m !== null);
  if (!flag || Number(flag[1]) <= 0) return;
  const v8 = requireCjs('node:v8') as typeof import('node:v8');
  v8.setFlagsFromString('--max-semi-space-size=0');
  workerLimits.maxYoungGenerationSizeMb = 3 * Number(flag[1]);
}

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
 * Post the compiled Lua module to a worker once it is compiled: every worker
 * instantiates the same code. null (the compile failed, or the module could
 * not be posted) has the worker compile its own, which then reports why.
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
  flagsSet.then(compiledLua).then(send, () => send(null));
}

/**
 * Spawn n workers; V8's flags are set and the Lua module compiled once each
 * has said it booted (its first message, before its modules load:
 * src/vm/worker-boot.ts), or failed.
 */
export function prestartWorkers(n: number): void {
  youngGenerationFromFlag();
  const booting: Promise<void>[] = [];
  while (early.length < n) {
    const worker = new Worker(WORKER_URL, { workerData: null, resourceLimits: workerLimits });
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
  flagsSet = Promise.all(booting).then(setWasmFlags);
  for (const e of early) sendModule(e.worker);
}
