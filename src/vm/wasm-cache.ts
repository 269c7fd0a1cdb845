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
// its default, and a run reads it before setting any. It checks neither the
// code's bytes nor that the code belongs to the module's bytes: the cache's
// first line names the module file's size and modification time (a cache
// for another file is never offered) and the code's length and checksum (a
// damaged one crashed riff at every start, or ran damaged code).
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

// Node's own modules, loaded when first needed (node:v8, node:zlib), not with this one.
const requireNode = createRequire(import.meta.url);
const v8 = (): typeof import('node:v8') => requireNode('node:v8') as typeof import('node:v8');

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

// zlib's CRC-32 (Node 20.15 on), or null where this Node has none.
let crc32: ((bytes: Uint8Array) => number) | null | undefined;

/**
 * A checksum of `bytes` (CRC-32, as hex), for the caches riff reads at
 * start: V8 checks neither the machine code nor the bytecode it is given, and
 * a cache damaged after the build (a short copy, a bad disk) crashed every
 * start or ran damaged code. zlib's CRC-32 reads the bytes where they are:
 * ~0.3 ms for both caches, and ~2 ms to load node:zlib, where riff's own
 * checksum in WebAssembly took ~3 ms a cache in a fresh process (an
 * instance, its memory, and the bytes copied into it). null on a Node
 * without it: no cache is then written or taken.
 */
export function checksum(bytes: Uint8Array): string | null {
  if (crc32 === undefined) crc32 = (requireNode('node:zlib') as { crc32?: (bytes: Uint8Array) => number }).crc32 ?? null;
  return crc32 ? crc32(bytes).toString(16).padStart(8, '0') : null;
}

/**
 * A cache file's bytes after its first line, when that line is `stamp`
 * followed by the rest's length and checksum; else undefined. Read into an
 * ArrayBuffer of its own (V8's deserializer takes one). Only a regular file
 * is read, and opening never waits (a FIFO put in a cache's place hung riff's
 * start past SIGTERM).
 */
export function readStamped(file: string, stamp: string): ArrayBuffer | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return undefined;
    const head = Buffer.alloc(Math.min(st.size, stamp.length + 64));
    const got = fs.readSync(fd, head, 0, head.length, 0);
    const nl = head.subarray(0, got).indexOf(10);
    if (nl < 0) return undefined;
    const [length, sum, ...extra] = head.toString('latin1', stamp.length, nl).split(' ');
    if (head.toString('latin1', 0, stamp.length) !== stamp || extra.length || st.size !== nl + 1 + Number(length)) return undefined;
    const body = new ArrayBuffer(Number(length));
    if (fs.readSync(fd, new Uint8Array(body), 0, body.byteLength, nl + 1) !== body.byteLength) return undefined;
    const actual = checksum(new Uint8Array(body));
    return actual !== null && actual === sum ? body : undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** Write `stamp`, the body's length and checksum, then the body: whole or not at all (a file of its own, synced, renamed). */
export function writeStamped(file: string, stamp: string, body: Uint8Array): boolean {
  const sum = checksum(body);
  if (sum === null) return false;
  const tmp = `${file}.${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeFileSync(fd, Buffer.from(`${stamp}${body.length} ${sum}\n`, 'latin1'));
      fs.writeFileSync(fd, body);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    return true;
  } catch {
    fs.rmSync(tmp, { force: true });
    return false;
  }
}

/**
 * A cache's first line, up to the body's length and checksum (`magic`
 * names the kind): for which file (its size, its modification time to the
 * millisecond), under which Node, on which machine.
 */
export function stampFor(magic: string, file: string): string {
  const st = fs.statSync(file);
  return `${magic} ${st.size} ${Math.round(st.mtimeMs)} ${process.version} ${process.arch} `;
}
/** The first line of the Lua module's cache for `wasmFile` as it is now: taken by the training run when it reads the module, and saved with the code compiled from those bytes. */
export const stamp = (wasmFile: string): string => stampFor(MAGIC, wasmFile);

/**
 * The module compiled from `wire` (the bytes of `wasmFile`) out of the cache
 * beside that file, when there is one for it, whole, and V8 takes it; else
 * undefined.
 */
export function readCache(wasmFile: string, wire: Uint8Array): object | undefined {
  if (!natives) return undefined;
  try {
    const code = readStamped(wasmFile + SUFFIX, stamp(wasmFile));
    return code ? (natives.deserialize(code, wire) ?? undefined) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The training run's end: save `module`'s code beside `wasmFile`, with V8's
 * flags put back at their defaults first (`defaults`: the flags the run
 * changed), whole or not at all (writeStamped), under `madeFrom`: the
 * stamp the file had when the run read the bytes it compiled (not saved
 * when the file has changed since). Returns the code's size, or
 * 0 when nothing was saved.
 */
export function saveCache(wasmFile: string, module: object, defaults: string[], madeFrom: string): number {
  if (!openSerializer()) return 0;
  const flags = v8();
  for (const f of defaults) flags.setFlagsFromString(f);
  const code = natives!.serialize(module);
  if (!code) return 0;
  // lua.wasm rebuilt while the run ran: this code is not the new file's.
  if (stamp(wasmFile) !== madeFrom) return 0;
  return writeStamped(wasmFile + SUFFIX, madeFrom, new Uint8Array(code)) ? code.byteLength : 0;
}
