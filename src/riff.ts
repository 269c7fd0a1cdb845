#!/usr/bin/env node
// riff's entry point. Lua worker 0 starts booting first — Node, wasmoon and
// the WebAssembly instance are most of riff's start-up — and the command
// line (src/cli.ts) loads and is parsed meanwhile, on the other core.
import { prestartWorker } from './vm/pool.js';

prestartWorker();
await import('./cli.js');
