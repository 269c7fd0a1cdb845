// A Lua worker's entry in riff's bundles. It says it has booted at once
// (the capture thread then sets V8's flags for the Lua module and starts its
// compile, src/vm/prestart.ts), waits until those flags are set, then runs
// dist/worker.cjs (vm/worker.ts and its modules) from its code cache, made
// under the same flags (src/bundle-cache.ts): reading that cache is then
// done while the Lua module compiles, not before the compile can start.
// First: 'booted'.
import './worker-boot.js';
import { fileURLToPath } from 'node:url';
import { workerData } from 'node:worker_threads';
import { runBundle } from '../bundle-cache.js';

const flags = (workerData as { flags?: SharedArrayBuffer } | null)?.flags;
if (flags) {
  const word = new Int32Array(flags);
  while (Atomics.load(word, 0) === 0) Atomics.wait(word, 0, 0);
}
runBundle(fileURLToPath(new URL('../../worker.cjs', import.meta.url)), 'worker');
