// The raw Lua 5.4 C API, straight from the WebAssembly exports of wasmoon's
// build. wasmoon's own wrappers (cwrap, and the assertion shims on module._*)
// convert strings through UTF-8 and cost a closure and an `arguments` copy per
// call; riff makes several calls per packet and moves binary data, so it talks
// to the exports directly and keeps wasmoon for what it does well: building and
// instantiating the module.
// wasmoon is imported when a VM is made, so the capture thread, which only
// talks to workers, never loads it.
import type { LuaWasm } from 'wasmoon';

// The parts of the WebAssembly JS API riff touches. TypeScript declares them
// in lib.dom, which a Node program does not load.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
export interface WasmTable {
  readonly length: number;
  grow(delta: number): number;
  set(index: number, fn: unknown): void;
}
export interface WasmGlobal {
  value: number;
}
interface WasmInstance {
  exports: Record<string, unknown>;
}
export const WebAssemblyAPI = (globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => object;
    Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => WasmInstance;
    instantiate: (...a: unknown[]) => Promise<unknown>;
  };
}).WebAssembly;

/** lua_State* — an address in WebAssembly memory. */
export type LuaState = number;
/** Address in WebAssembly memory. */
export type Ptr = number;

// Signatures follow lua.h / lauxlib.h. lua_Integer is 64-bit
// and cross the boundary as BigInt.
export interface LuaExports {
  malloc(size: number): Ptr;
  free(p: Ptr): void;
  realloc(p: Ptr, size: number): Ptr;
  lua_newstate(alloc: number, ud: Ptr): LuaState;
  lua_close(L: LuaState): void;
  luaL_openlibs(L: LuaState): void;
  luaL_loadbufferx(L: LuaState, buf: Ptr, size: number, name: Ptr, mode: Ptr): number;
  lua_pcallk(L: LuaState, nargs: number, nresults: number, msgh: number, ctx: number, k: number): number;
  lua_gettop(L: LuaState): number;
  lua_settop(L: LuaState, idx: number): void;
  lua_pushvalue(L: LuaState, idx: number): void;
  lua_type(L: LuaState, idx: number): number;
  lua_pushnil(L: LuaState): void;
  lua_pushnumber(L: LuaState, n: number): void;
  lua_pushinteger(L: LuaState, n: bigint): void;
  lua_pushboolean(L: LuaState, b: number): void;
  lua_pushlstring(L: LuaState, s: Ptr, len: number): Ptr;
  lua_pushcclosure(L: LuaState, fn: number, n: number): void;
  lua_tolstring(L: LuaState, idx: number, len: Ptr): Ptr;
  lua_tonumberx(L: LuaState, idx: number, isnum: Ptr): number;
  lua_toboolean(L: LuaState, idx: number): number;
  lua_createtable(L: LuaState, narr: number, nrec: number): void;
  lua_setfield(L: LuaState, idx: number, k: Ptr): void;
  lua_getfield(L: LuaState, idx: number, k: Ptr): number;
  lua_rawgeti(L: LuaState, idx: number, n: bigint): number;
  lua_rawseti(L: LuaState, idx: number, n: bigint): void;
  lua_setglobal(L: LuaState, name: Ptr): void;
  lua_getglobal(L: LuaState, name: Ptr): number;
  luaL_ref(L: LuaState, t: number): number;
  lua_error(L: LuaState): number;
  lua_sethook(L: LuaState, f: number, mask: number, count: number): void;
  lua_tothread(L: LuaState, idx: number): LuaState;
  luaL_traceback(L: LuaState, L1: LuaState, msg: Ptr, level: number): void;
}

export const LUA_OK = 0;
export const LUA_REGISTRYINDEX = -1001000;
export const LUA_TNIL = 0;
export const LUA_TSTRING = 4;
export const LUA_TTABLE = 5;
export const LUA_TFUNCTION = 6;
export const LUA_MULTRET = -1;

export interface Wasm {
  x: LuaExports;
  memory: WasmMemory;
  table: WasmTable;
  /** Current view of WebAssembly memory (re-read: memory growth replaces the buffer). */
  heap(): Uint8Array;
  addFunction(fn: (...args: number[]) => number | void, sig: string): number;
}

/**
 * The module's bytes with its memory declared shared. Shared memory is what
 * lets another thread reach into a running VM: the capture thread writes
 * packet batches straight into it, and the watchdog (src/vm/watchdog.ts) arms
 * the instruction budget's hook in a VM that has been in one batch too long.
 * Nothing else changes: loads and stores compile the same, and the memory
 * already declares the maximum that shared memory requires.
 */
function shareMemory(input: Uint8Array | ArrayBuffer): Uint8Array {
  const b = Uint8Array.from(input instanceof ArrayBuffer ? new Uint8Array(input) : input);
  let p = 8;
  const uleb = () => {
    let r = 0;
    for (let s = 0; ; s += 7) {
      const x = b[p++];
      r += (x & 0x7f) * 2 ** s;
      if (!(x & 0x80)) return r;
    }
  };
  while (p < b.length) {
    const id = b[p++];
    const len = uleb();
    const end = p + len;
    if (id === 5) {
      // One memory: flags 1 (a maximum) becomes 3 (a maximum, shared).
      if (uleb() !== 1 || b[p] !== 1) break;
      b[p] = 3;
      return b;
    }
    p = end;
  }
  throw new Error('the Lua WebAssembly module does not declare one bounded memory (wasmoon changed its build)');
}

/**
 * Instantiate a fresh Lua WebAssembly module. Each VM gets its own module, so
 * its memory is its own: a runaway plugin can exhaust only its instance.
 */
export async function loadWasm(): Promise<Wasm> {
  // wasmoon keeps the instance's exports in a closure. Catching the instance
  // as it is created is the one seam that reaches the exports unwrapped.
  type Instance = WasmInstance;
  const WA = WebAssemblyAPI;
  const original = WA.instantiate;
  let instance: Instance | undefined;
  WA.instantiate = async function (this: unknown, ...args: unknown[]) {
    if (args[0] instanceof Uint8Array || args[0] instanceof ArrayBuffer) args[0] = shareMemory(args[0]);
    const r = await original.apply(this, args);
    instance = (r as { instance?: Instance }).instance ?? (r as Instance);
    return r;
  };
  const { LuaWasm: Wasmoon } = await import('wasmoon');
  let lw: LuaWasm;
  try {
    lw = await Wasmoon.initialize();
  } finally {
    WA.instantiate = original;
  }
  if (!instance) throw new Error('could not reach the Lua WebAssembly exports (wasmoon changed how it instantiates)');
  const x = instance.exports as unknown as LuaExports;
  const memory = instance.exports.memory as WasmMemory;
  const table = instance.exports.__indirect_function_table as WasmTable;
  const mod = lw.module as unknown as {
    addFunction(fn: (...args: number[]) => number | void, sig: string): number;
  };
  let view = new Uint8Array(memory.buffer);
  return {
    x,
    memory,
    table,
    heap: () => (view.buffer === memory.buffer ? view : (view = new Uint8Array(memory.buffer))),
    addFunction: (fn, sig) => mod.addFunction(fn, sig),
  };
}
