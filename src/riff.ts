#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS MALLOC_ARENA_MAX=2 node
// MALLOC_ARENA_MAX=2: glibc gives threads their own malloc arenas (up to 8
// per core), and riff's threads come and go (a worker at every reload, V8's
// compiler and GC threads, libuv's pool, the capture thread), each arena
// keeping its own high-water mark that malloc_trim does not give back: the
// C library's heap climbed 4-5 MiB over a soak's first minutes and stayed
// (README, Soak). glibc reads it once, at process start, so it has to be in
// the environment before node starts: env -S sets it here.
// -u NODE_EXTRA_CA_CERTS: Node parses every certificate in that file before
// the first line of any program (~40 ms for Debian's bundle, a third of
// riff's start-up where shells set it for other tools); riff verifies no
// certificate (no output speaks TLS), so it does not pay for a store it
// never reads, nor print Node's warning when the file is missing. An output
// that one day speaks TLS reads the CA file itself.
// No V8 flag here: with any V8 flag off its default, Node compiles its own
// modules without their cache (README, Start-up). The young generation is
// held at run time instead (src/vm/prestart.ts holdYoungGeneration).
// riff's entry point. The Lua workers start booting first (then the Lua
// WebAssembly module compiles) — Node's worker bootstrap and the Lua VM
// are most of riff's start-up (src/vm/prestart.ts) — and the command
// line (src/cli.ts) loads and is parsed meanwhile, on another core.
// Signals are heard from the first moment (src/signals.ts): riff's only
// static import, so nothing else of riff's loads before its handlers are in place.
import './signals.js';
import { fileURLToPath } from 'node:url';

/**
 * How many workers the command line asks for, read ahead of yargs so they all
 * boot at once. Only a guess: cli.ts parses and checks --workers for real, and
 * the pool starts whatever the guess missed and stops what it overshot.
 */
function workersAsked(argv: string[]): number {
  let v: string | undefined = process.env.RIFF_WORKERS || undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') break;
    if (argv[i] === '--workers') v = argv[i + 1];
    else if (argv[i].startsWith('--workers=')) v = argv[i].slice(10);
  }
  const n = Number(v ?? 1);
  return Number.isInteger(n) && n >= 1 ? Math.min(n, 8) : 1;
}

declare const RIFF_BUNDLED: boolean | undefined;

// No top-level await: the build bundles this file as CommonJS (scripts/bundle.ts).
void (async () => {
  const { prestartWorkers } = await import('./vm/prestart.js');
  prestartWorkers(workersAsked(process.argv.slice(2)));
  // Bundled, the command line runs from its code cache (src/bundle-cache.ts).
  if (typeof RIFF_BUNDLED === 'boolean') (await import('./bundle-cache.js')).runBundle(fileURLToPath(new URL('../cli.cjs', import.meta.url)));
  else await import('./cli.js');
})();
