// A Lua worker's first word, said before its other modules load: the main
// thread sets V8's flags for the Lua module, and compiles it, once the
// workers it spawned at riff's start have booted (src/vm/prestart.ts).
import { parentPort } from 'node:worker_threads';

parentPort?.postMessage({ type: 'booted' });
