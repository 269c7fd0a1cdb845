// A Lua worker's first word, said before its other modules load: without
// the build's cache of the Lua module, the main thread sets V8's flags for
// it, and compiles it, once the workers it spawned at riff's start have
// booted (src/vm/prestart.ts).
import { parentPort } from 'node:worker_threads';

parentPort?.postMessage({ type: 'booted' });
