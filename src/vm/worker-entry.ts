// A Lua worker's entry in riff's bundles: dist/worker.cjs (vm/worker.ts and
// its modules), compiled from its code cache (src/bundle-cache.ts). Node
// would compile a worker's main file from source; this file is a few lines.
import { fileURLToPath } from 'node:url';
import { runBundle } from '../bundle-cache.js';

runBundle(fileURLToPath(new URL('../../worker.cjs', import.meta.url)));
