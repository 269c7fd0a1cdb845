// The head start of riff's start-up: the Lua workers begin booting (Node's
// worker bootstrap, wasmoon, the Lua VM: most of start-up) and the Lua
// WebAssembly module begins compiling on V8's background threads at riff's
// first moment, while the capture thread loads and parses the command line.
// Kept apart from pool.ts so that nothing heavy loads before the workers start.
import { Worker } from 'node:worker_threads';
import { compiledLua } from './wasm.js';

export const WORKER_URL = new URL('./worker.js', import.meta.url);

/** Workers started before the pool exists; start() hands them their orders by message instead of workerData. */
export const early: { worker: Worker; error: Error | null }[] = [];

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
  compiledLua().then(send, () => send(null));
}

export function prestartWorkers(n: number): void {
  while (early.length < n) {
    const worker = new Worker(WORKER_URL, { workerData: null });
    const e = { worker, error: null as Error | null };
    early.push(e);
    worker.on('error', (err) => (e.error = err));
    // Not needed after all (--help, a bad argument): it must not keep riff alive.
    worker.unref();
    sendModule(worker);
  }
}
