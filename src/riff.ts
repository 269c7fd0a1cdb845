#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1
// MALLOC_ARENA_MAX=2: glibc gives threads their own malloc arenas (up to 8
// per core), and riff's threads come and go (a worker at every reload, V8's
// compiler and GC threads, libuv's pool, the capture thread), each arena
// keeping its own high-water mark that malloc_trim does not give back: the
// C library's heap climbed 4-5 MiB over a soak's first minutes and stayed
// (README, Soak). glibc reads it once, at process start, so it has to be in
// the environment before node starts: env -S sets it here.
// --max-semi-space-size=1 (MiB; V8's initial size, so it never grows):
// V8 doubles this thread's young generation each time as many bytes have
// survived scavenges as it holds, and gives it back only when the thread is
// nearly idle. Records survive here until the outputs write them (a
// reload's deinit hands over a burst of them), so riff's resident memory
// climbed in steps with every reload, up to 32 MiB more (scripts/soak).
// Only a startup flag sets it (v8.setFlagsFromString is too late for this
// thread's heap). --semi-space-growth-factor=1 set at run time holds it,
// but only until the next worker is created: each new isolate's heap
// set-up (V8's Heap::ConfigureHeap) raises a factor under 2 to 2, and riff
// starts a worker at every reload (README, Soak). The workers get the same
// young generation as a resource limit, and the flag is put back to its
// default before they start: as a V8 flag it would slow each worker's
// start (src/vm/prestart.ts).
// riff's entry point. The Lua workers start booting first (then the Lua
// WebAssembly module compiles) — Node's worker bootstrap and the Lua VM
// are most of riff's start-up (src/vm/prestart.ts) — and the command
// line (src/cli.ts) loads and is parsed meanwhile, on another core.
// Signals are heard from the first moment (src/signals.ts): the only static
// import, so nothing else is loaded before its handlers are in place.
import './signals.js';

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

// No top-level await: the build bundles this file as CommonJS (scripts/bundle.ts).
void (async () => {
  const { prestartWorkers } = await import('./vm/prestart.js');
  prestartWorkers(workersAsked(process.argv.slice(2)));
  await import('./cli.js');
})();
