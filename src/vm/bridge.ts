// riff's own WebAssembly functions, linked into a Lua instance's memory
// and function table beside wasmoon's code: Lua's allocator, the batch fill,
// the coroutine note and the stdout buffer. Their source is
// src/vm/wasm/bridge.wat (what each does and why it is WebAssembly), which
// the build assembles into dist/src/vm/wasm/bridge.wasm (scripts/build-wasm.ts);
// this module loads it and names its interface. A function added there is
// exported there and named in Bridge here. Also here: host functions (JS) as
// Lua C functions, through src/vm/wasm/host.wat.
import { readFileSync } from 'node:fs';
import { WebAssemblyAPI, type WasmGlobal, type WasmMemory } from './wasm.js';

export interface BridgeImports {
  memory: WasmMemory;
  realloc: (...a: never[]) => unknown;
  free: (...a: never[]) => unknown;
  lua_pushlstring: (...a: never[]) => unknown;
  lua_rawseti: (...a: never[]) => unknown;
  lua_tothread: (...a: never[]) => unknown;
  lua_gettop: (...a: never[]) => unknown;
  lua_type: (...a: never[]) => unknown;
  lua_tolstring: (...a: never[]) => unknown;
  lua_pushinteger: (...a: never[]) => unknown;
  lua_gethook: (...a: never[]) => unknown;
  lua_gethookmask: (...a: never[]) => unknown;
  lua_gethookcount: (...a: never[]) => unknown;
  lua_sethook: (...a: never[]) => unknown;
  /** Write bytes [p, p + len) of WebAssembly memory to stdout, now. */
  out_js: (p: number, len: number) => void;
  /** The allocator is about to refuse growing block `ptr` (0: a fresh block); called inside Lua's allocation, so it may only read memory. */
  refused: (ptr: number) => void;
}

export interface Bridge {
  /** The allocator, to be placed in the instance's function table. */
  alloc: (ud: number, ptr: number, osize: number, nsize: number) => number;
  /** Push a batch's packets at `base` into T (stack top) as T[1..n], skipping those filtered out or sharded elsewhere; returns n. */
  fill: (L: number, base: number, count: number, meta: number) => number;
  /** lua_CFunction: stores lua_tothread(L, 1) at the address in `slot`, and gives it L's hook when that counts. */
  enter: (L: number) => number;
  /** Where enter() writes (an address in WebAssembly memory; 0 = nowhere yet). */
  slot: WasmGlobal;
  /** lua_CFunction: appends its leading string arguments to the output buffer; returns the index of the first other one, or 0. */
  out_write: (L: number) => number;
  /** lua_CFunction: returns the bytes buffered. */
  out_pending: (L: number) => number;
  /** lua_CFunction: hands the buffer to out_js and empties it. */
  out_flush: (L: number) => number;
  /** The output buffer: address (the bytes used are the 32-bit word below it), capacity; and 8 bytes of scratch for lua_tolstring's length. */
  out: WasmGlobal;
  outCap: WasmGlobal;
  scratch: WasmGlobal;
  /** Bytes Lua holds now. */
  used: WasmGlobal;
  /** Cap in bytes, 0 = none (unsigned 32-bit: WebAssembly memory is below 4 GiB). */
  limit: WasmGlobal;
  /** The allocator's free-list heads: SIZE_CLASSES zeroed words, set before Lua allocates. */
  heads: WasmGlobal;
}

// The allocator's free lists: one per 8-byte class of blocks up to 2048
// bytes (SMALL in bridge.wat), each head a word of `heads`.
export const SIZE_CLASSES = (2048 >> 3) + 1;

/** The build's modules (src/vm/wasm/*.wat), each compiled once per thread. */
const compiled = new Map<string, object>();

function module(name: 'bridge.wasm' | 'host.wasm'): object {
  let m = compiled.get(name);
  if (m) return m;
  const file = new URL(`./wasm/${name}`, import.meta.url);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch {
    throw new Error(`${file.pathname} is missing: run npm run build (it assembles src/vm/wasm/*.wat)`);
  }
  m = new WebAssemblyAPI.Module(bytes);
  compiled.set(name, m);
  return m;
}

export function linkBridge(env: BridgeImports): Bridge {
  const inst = new WebAssemblyAPI.Instance(module('bridge.wasm'), { env: env as unknown as Record<string, unknown> });
  return inst.exports as unknown as Bridge;
}

/** `fn` as a WebAssembly function of lua_CFunction's type, for a function table (src/vm/wasm/host.wat). */
export function hostFunction(fn: (L: number) => number): (L: number) => number {
  const inst = new WebAssemblyAPI.Instance(module('host.wasm'), { env: { f: fn } });
  return inst.exports.f as (L: number) => number;
}
