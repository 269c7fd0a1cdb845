// The Lua module's machine code, made by the build and read at every start
// (src/vm/prestart.ts), so that no run compiles it.
//
// Compiled at start-up, the module cost the critical path ~16 ms (its eager
// compile, which waits for the workers' bootstrap: V8 flags), and the first
// packets ran in V8's baseline code (Liftoff). Deserialized, it is in the
// workers' hands as they boot, and in optimized code (TurboFan) from the
// first packet (README, Start-up). The build makes it in a training run
// (scripts/bundle.ts: riff runs scripts/train.lua, the plugins riff ships,
// over a generated capture with RIFF_WASM_CACHE=make): the functions that
// run hot there are optimized with V8's inlining guided by that run's calls,
// as a long run would tier them up; functions it never made hot are not in
// the cache, and V8 compiles them when first called, as it does without one.
//
// V8 reaches its serializer for WebAssembly (the one Chrome's code cache
// uses) from JavaScript only through two runtime functions
// (%SerializeWasmModule, %DeserializeWasmModule), which parse only while
// --allow-natives-syntax is set: the flag is set for the moment of parsing
// them and put back. V8 takes a cache only under its own version, the CPU
// features and the flags that made it (it returns nothing otherwise, and riff
// compiles the module as before): the build saves it with every flag back at
// its default, and a run reads it before setting any. It does not check that
// the code belongs to the module's bytes: the cache's first line names the
// module file's size and modification time, and a cache for another file is
// never offered.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const SUFFIX = '.cache';
const MAGIC = 'riff-wasm-cache';

/** The build's training run (scripts/bundle.ts): riff saves the Lua module's code at its end. */
export const TRAINING = process.env.RIFF_WASM_CACHE === 'make';

interface Natives {
  serialize(module: object): ArrayBuffer | undefined;
  deserialize(code: ArrayBuffer, wire: Uint8Array): object | undefined;
}
let natives: Natives | null | undefined;

const v8 = (): typeof import('node:v8') => createRequire(import.meta.url)('node:v8') as typeof import('node:v8');

/**
 * Make V8's two functions, once. The flag is on for the parse alone (~0.3
 * ms); a worker booting then compiles whatever of Node's own code it loads in
 * that moment without Node's cache, and nothing else changes. False when
 * this V8 has no such functions (riff compiles the module then).
 */
export function openSerializer(): boolean {
  if (natives !== undefined) return natives !== null;
  const flags = v8();
  flags.setFlagsFromString('--allow-natives-syntax');
  try {
    natives = {
      serialize: new Function('m', 'return %SerializeWasmModule(m)') as Natives['serialize'],
      deserialize: new Function('c', 'w', 'return %DeserializeWasmModule(c, w)') as Natives['deserialize'],
    };
  } catch {
    natives = null;
  } finally {
    flags.setFlagsFromString('--no-allow-natives-syntax');
  }
  return natives !== null;
}

/** Whether openSerializer has opened it. */
export const serializerOpen = (): boolean => !!natives;

/** The cache's first line: for which module file (size, modification time in ms), under which Node, on which machine. */
function stamp(wasmFile: string): string {
  const st = fs.statSync(wasmFile);
  return `${MAGIC} ${st.size} ${Math.round(st.mtimeMs)} ${process.version} ${process.arch}\n`;
}

/**
 * The module compiled from `wire` (the bytes of `wasmFile`) out of the cache
 * beside that file, when there is one for it and V8 takes it; else undefined.
 */
export function readCache(wasmFile: string, wire: Uint8Array): object | undefined {
  if (!natives) return undefined;
  let fd: number;
  try {
    fd = fs.openSync(wasmFile + SUFFIX, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    const head = stamp(wasmFile);
    if (!st.isFile() || st.size <= head.length) return undefined;
    const got = Buffer.alloc(head.length);
    if (fs.readSync(fd, got, 0, got.length, 0) !== got.length || got.toString('latin1') !== head) return undefined;
    // V8 takes the code as an ArrayBuffer of its own.
    const code = new ArrayBuffer(st.size - head.length);
    if (fs.readSync(fd, new Uint8Array(code), 0, code.byteLength, head.length) !== code.byteLength) return undefined;
    return natives.deserialize(code, wire) ?? undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The training run's end: save `module`'s code beside `wasmFile`, with V8's
 * flags put back at their defaults first (`defaults`: the flags the run
 * changed), whole or not at all (a file of its own, synced, renamed: a
 * damaged cache could make V8 abort riff at start). Returns the code's size,
 * or 0 when nothing was saved.
 */
export function saveCache(wasmFile: string, module: object, defaults: string[]): number {
  if (!openSerializer()) return 0;
  const flags = v8();
  for (const f of defaults) flags.setFlagsFromString(f);
  const code = natives!.serialize(module);
  if (!code) return 0;
  const tmp = `${wasmFile}${SUFFIX}.${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeFileSync(fd, Buffer.from(stamp(wasmFile), 'latin1'));
      fs.writeFileSync(fd, new Uint8Array(code));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, wasmFile + SUFFIX);
    return code.byteLength;
  } catch {
    fs.rmSync(tmp, { force: true });
    return 0;
  }
}
