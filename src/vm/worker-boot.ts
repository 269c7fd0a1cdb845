// A Lua worker's first word, said before its other modules load: the main
// thread sets V8's flags for the Lua module, and compiles it, once the
// workers it spawned at riff's start have booted (src/vm/prestart.ts).
// Said once per thread: the bundles' worker entry (worker-entry.ts) says
// it, and worker.cjs, which holds this module too, then does not.
import { parentPort } from 'node:worker_threads';

const SAID = Symbol.for('riff.booted');
const thread = globalThis as Record<symbol, unknown>;
if (!thread[SAID]) {
  thread[SAID] = true;
  parentPort?.postMessage({ type: 'booted' });
}
