// The raw Lua 5.4 C API, straight from the WebAssembly exports of wasmoon's
// build. wasmoon's own wrappers (cwrap, and the assertion shims on module._*)
// convert strings through UTF-8 and cost a closure and an `arguments` copy per
// call; riff makes several calls per packet and moves binary data, so it talks
// to the exports directly and keeps wasmoon for what it does well: building and
// instantiating the module.
// wasmoon is imported when a VM is made, so the capture thread, which only
// talks to workers, never loads it.
import { createRequire } from 'node:module';
import v8 from 'node:v8';
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
  lua_getupvalue(L: LuaState, funcindex: number, n: number): Ptr;
  lua_upvalueid(L: LuaState, funcindex: number, n: number): Ptr;
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

// The musl memchr in wasmoon 1.16's build (found by the size and FNV-1a hash
// of its body; node:crypto would add its load to every worker's start-up),
// four bytes a step; string.find(packet, "pcap", 1, true) spends most of its
// time in it, a tenth of the seed pipeline's. FAST_MEMCHR does the same job
// sixteen bytes a step with WebAssembly SIMD and never reads past s + n.
const MUSL_MEMCHR = { size: 225, fnv1a: 0x406369bc };
const fnv1a = (b: Uint8Array): number => {
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h;
};
// prettier-ignore
const FAST_MEMCHR = Uint8Array.from([
  0x02, 0x01, 0x7b, 0x01, 0x7f,                   // locals: 3 v128 (c in every lane), 4 i32 (lane mask)
  0x20, 0x01, 0xfd, 0x0f, 0x21, 0x03,             // v = i8x16.splat(c)
  0x02, 0x40, 0x03, 0x40,                         // block, loop: 16 bytes a step
  0x20, 0x02, 0x41, 0x10, 0x49, 0x0d, 0x01,       //   n < 16: to the tail
  0x20, 0x00, 0xfd, 0x00, 0x00, 0x00,             //   v128.load s
  0x20, 0x03, 0xfd, 0x23, 0xfd, 0x64, 0x22, 0x04, //   m = bitmask(eq(bytes, v))
  0x04, 0x40, 0x20, 0x00, 0x20, 0x04, 0x68, 0x6a, 0x0f, 0x0b, // if m: return s + ctz(m)
  0x20, 0x00, 0x41, 0x10, 0x6a, 0x21, 0x00,       //   s += 16
  0x20, 0x02, 0x41, 0x10, 0x6b, 0x21, 0x02,       //   n -= 16
  0x0c, 0x00, 0x0b, 0x0b,                         // again; end loop, block
  0x20, 0x01, 0x41, 0xff, 0x01, 0x71, 0x21, 0x01, // c &= 255
  0x02, 0x40, 0x03, 0x40,                         // block, loop: the last n < 16 bytes
  0x20, 0x02, 0x45, 0x0d, 0x01,                   //   n == 0: done
  0x20, 0x00, 0x2d, 0x00, 0x00, 0x20, 0x01, 0x46, //   *s == c
  0x04, 0x40, 0x20, 0x00, 0x0f, 0x0b,             //   ... return s
  0x20, 0x00, 0x41, 0x01, 0x6a, 0x21, 0x00,       //   s += 1
  0x20, 0x02, 0x41, 0x01, 0x6b, 0x21, 0x02,       //   n -= 1
  0x0c, 0x00, 0x0b, 0x0b,                         // again; end loop, block
  0x41, 0x00, 0x0b,                               // return NULL
]);

// string.find's plain search (lmemfind, inlined in str_find_aux) calls
// memchr for the pattern's first byte, then memcmp for the rest, and starts
// over at every false start: a packet of text has a 'p' every ~50 bytes, so
// string.find(packet, "pcap") made ~17 such round trips a packet. riff gives
// that loop a search of its own instead (FIND): sixteen positions a step,
// keeping only those where the first two pattern bytes both match, each then
// checked with memcmp. It returns the first match, or NULL, so lmemfind's
// own memcmp confirms it and its loop ends; with a one-byte pattern it is
// memchr. Applied when str_find_aux is the one known (size and FNV-1a of its
// body) and holds the call exactly once, as with memchr.
const STR_FIND_AUX = { size: 1277, fnv1a: 0xa6bd2abd };
// memchr(s1, *s2, l1) inside lmemfind's loop: local 4 is s1, 9 the first
// pattern byte, 3 the length left; locals 7 and 8 hold s2 + 1 and l2, the
// rest of the pattern, which the call to FIND passes along.
const LMEMFIND_CALL = [0x20, 0x04, 0x20, 0x09, 0x20, 0x03, 0x10];
const LMEMFIND_ARGS = [0x20, 0x04, 0x20, 0x09, 0x20, 0x03, 0x20, 0x07, 0x20, 0x08, 0x10];

/** FIND(s, c, n, rest, restLen): the first q in [s, s + n) with *q == c and q[1..restLen] == rest; reads nothing past s + n + restLen. */
function findBody(memchr: number, memcmp: number): Uint8Array {
  const call = (f: number) => [0x10, ...uleb(f)];
  // prettier-ignore
  return Uint8Array.from([
    0x02, 0x02, 0x7b, 0x02, 0x7f,                   // locals 5, 6: v128 (c, rest[0] in every lane); 7, 8: i32 (mask, q)
    0x20, 0x04, 0x45, 0x04, 0x40,                   // restLen == 0: it is memchr
      0x20, 0x00, 0x20, 0x01, 0x20, 0x02, ...call(memchr), 0x0f,
    0x0b,
    0x20, 0x01, 0xfd, 0x0f, 0x21, 0x05,             // v1 = splat(c)
    0x20, 0x03, 0x2d, 0x00, 0x00, 0xfd, 0x0f, 0x21, 0x06, // v2 = splat(rest[0])
    0x02, 0x40, 0x03, 0x40,                         // block, loop: 16 positions a step
      0x20, 0x02, 0x41, 0x10, 0x49, 0x0d, 0x01,     //   n < 16: to the tail
      // bytes s..s+15 equal c and bytes s+1..s+16 equal rest[0] (s + 16 < s + n + restLen)
      0x20, 0x00, 0xfd, 0x00, 0x00, 0x00, 0x20, 0x05, 0xfd, 0x23,
      0x20, 0x00, 0xfd, 0x00, 0x00, 0x01, 0x20, 0x06, 0xfd, 0x23,
      0xfd, 0x4e, 0xfd, 0x64, 0x21, 0x07,           //   mask = bitmask(and)
      0x02, 0x40, 0x03, 0x40,                       //   each candidate, lowest first
        0x20, 0x07, 0x45, 0x0d, 0x01,
        0x20, 0x00, 0x20, 0x07, 0x68, 0x6a, 0x21, 0x08, // q = s + ctz(mask)
        0x20, 0x08, 0x41, 0x01, 0x6a, 0x20, 0x03, 0x20, 0x04, ...call(memcmp), 0x45,
        0x04, 0x40, 0x20, 0x08, 0x0f, 0x0b,         //   whole match: return q
        0x20, 0x07, 0x20, 0x07, 0x41, 0x01, 0x6b, 0x71, 0x21, 0x07, // mask &= mask - 1
        0x0c, 0x00,
      0x0b, 0x0b,
      0x20, 0x00, 0x41, 0x10, 0x6a, 0x21, 0x00,     //   s += 16
      0x20, 0x02, 0x41, 0x10, 0x6b, 0x21, 0x02,     //   n -= 16
      0x0c, 0x00,
    0x0b, 0x0b,
    0x20, 0x01, 0x41, 0xff, 0x01, 0x71, 0x21, 0x01, // c &= 255
    0x02, 0x40, 0x03, 0x40,                         // block, loop: the last n < 16 positions
      0x20, 0x02, 0x45, 0x0d, 0x01,
      0x20, 0x00, 0x2d, 0x00, 0x00, 0x20, 0x01, 0x46,
      0x04, 0x40,
        0x20, 0x00, 0x41, 0x01, 0x6a, 0x20, 0x03, 0x20, 0x04, ...call(memcmp), 0x45,
        0x04, 0x40, 0x20, 0x00, 0x0f, 0x0b,
      0x0b,
      0x20, 0x00, 0x41, 0x01, 0x6a, 0x21, 0x00,     //   s += 1
      0x20, 0x02, 0x41, 0x01, 0x6b, 0x21, 0x02,     //   n -= 1
      0x0c, 0x00,
    0x0b, 0x0b,
    0x41, 0x00, 0x0b,                               // return NULL
  ]);
}

/** Unsigned LEB128, as WebAssembly encodes sizes and indices (src/vm/bridge.ts uses it too). */
export const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let x = n % 128;
    n = Math.floor(n / 128);
    if (n) x |= 0x80;
    out.push(x);
  } while (n);
  return out;
};

/** The unsigned LEB128 at buf[at]: its value and the offset after it. */
function readUleb(buf: Uint8Array, at: number): [number, number] {
  let r = 0;
  for (let s = 0; ; s += 7) {
    const x = buf[at++];
    r += (x & 0x7f) * 2 ** s;
    if (!(x & 0x80)) return [r, at];
  }
}

/** Whether this engine runs WebAssembly SIMD (Node 20 does; checked, not assumed). */
let simd: boolean | undefined;
function hasSimd(): boolean {
  // (func (result v128) i32.const 0 i8x16.splat)
  const probe = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 5, 1, 0x60, 0, 1, 0x7b, 3, 2, 1, 0, 10, 8, 1, 6, 0, 0x41, 0, 0xfd, 0x0f, 0x0b];
  simd ??= (WebAssemblyAPI as unknown as { validate(b: Uint8Array): boolean }).validate(Uint8Array.from(probe));
  return simd;
}

/**
 * V8 11 (Node 20) can inline small WebAssembly functions into their callers
 * but leaves it off unless asked; later V8s do it by default. For the Lua
 * interpreter (luaV_execute calling the table and string helpers) it is 5-10%
 * of a script-heavy pipeline's time. RIFF_WASM_INLINING=0 keeps V8's default.
 * Call on the main thread before any module is compiled or worker started.
 */
export function useWasmInlining(): void {
  if (process.versions.v8.startsWith('11.') && process.env.RIFF_WASM_INLINING !== '0') {
    v8.setFlagsFromString('--experimental-wasm-inlining');
  }
}

/** What patchModule did: each is false when the module's function was not the one known (or the engine lacks SIMD). */
export const patched = { memchr: false, find: false };

/**
 * The module's bytes, patched:
 * - its memory declared shared. Shared memory is what lets another thread
 *   reach into a running VM: the watchdog (src/vm/watchdog.ts) arms the
 *   instruction budget's hook in a VM that has been in one batch too long,
 *   and the capture thread writes a worker's batches into its ring there.
 *   Loads and stores compile the same, and the memory already declares the
 *   maximum that shared memory requires.
 * - memchr's body replaced by FAST_MEMCHR, and lmemfind's loop calling FIND
 *   (added as a new function), when they are the known ones and the engine
 *   has SIMD; otherwise left alone.
 */
function patchModule(input: Uint8Array | ArrayBuffer): Uint8Array {
  const b = Uint8Array.from(input instanceof ArrayBuffer ? new Uint8Array(input) : input);
  let p = 8;
  const read = () => {
    const [v, next] = readUleb(b, p);
    p = next;
    return v;
  };
  type Range = { start: number; end: number };
  let shared = false;
  let funcImports = 0;
  let find5: number | null = null; // index of the type (i32 x5) -> i32
  let funcs: Range | null = null;
  let code: (Range & { bodies: [number, number][] }) | null = null;
  while (p < b.length) {
    const sectionStart = p;
    const id = b[p++];
    const len = read();
    const end = p + len;
    if (id === 1) {
      for (let n = read(), i = 0; i < n; i++) {
        if (b[p++] !== 0x60) break;
        const params = read();
        const ps = b.subarray(p, p + params);
        p += params;
        const results = read();
        const rs = b.subarray(p, p + results);
        p += results;
        if (find5 === null && params === 5 && ps.every((t) => t === 0x7f) && results === 1 && rs[0] === 0x7f) find5 = i;
      }
    } else if (id === 2) {
      for (let n = read(); n > 0; n--) {
        for (let k = 0; k < 2; k++) {
          const l = read(); // module, then field name
          p += l;
        }
        const kind = b[p++];
        if (kind === 0) (read(), funcImports++);
        else if (kind === 1) (p++, read() & 1 ? (read(), read()) : read());
        else if (kind === 2) (read() & 1 ? (read(), read()) : read());
        else if (kind === 3) p += 2;
        else break;
      }
    } else if (id === 3) {
      funcs = { start: sectionStart, end };
    } else if (id === 5) {
      // One memory: flags 1 (a maximum) becomes 3 (a maximum, shared).
      if (read() !== 1 || b[p] !== 1) break;
      b[p] = 3;
      shared = true;
    } else if (id === 10) {
      const bodies: [number, number][] = [];
      for (let n = read(); n > 0; n--) {
        const size = read();
        bodies.push([p, p + size]);
        p += size;
      }
      code = { start: sectionStart, end, bodies };
    }
    p = end;
  }
  if (!shared) throw new Error('the Lua WebAssembly module does not declare one bounded memory (wasmoon changed its build)');
  patched.memchr = patched.find = false;
  if (!code || !funcs || !hasSimd()) return b;
  const known = (k: { size: number; fnv1a: number }) =>
    code!.bodies.findIndex(([s, e]) => e - s === k.size && fnv1a(b.subarray(s, e)) === k.fnv1a);
  const memchr = known(MUSL_MEMCHR);
  if (memchr < 0) return b;
  const bodies: Uint8Array[] = code.bodies.map(([s, e]) => b.subarray(s, e));
  bodies[memchr] = FAST_MEMCHR;

  // lmemfind's call to memchr, to become a call to FIND with two more arguments.
  const strFind = known(STR_FIND_AUX);
  let added: Uint8Array | null = null;
  if (strFind >= 0 && find5 !== null) {
    const body = bodies[strFind];
    const call = [...LMEMFIND_CALL, ...uleb(funcImports + memchr)];
    const at: number[] = [];
    for (let i = 0; i + call.length <= body.length; i++) if (call.every((x, k) => body[i + k] === x)) at.push(i);
    // memcmp is what the loop calls next: local.tee 1, i32.eqz, br_if 4, then
    // local.get 1, +1, local.tee 5, local.get 7, local.get 8, call memcmp.
    const next = at.length === 1 ? at[0] + call.length : -1;
    const tail = [0x22, 0x01, 0x45, 0x0d, 0x04, 0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x05, 0x20, 0x07, 0x20, 0x08, 0x10];
    if (next > 0 && tail.every((x, k) => body[next + k] === x)) {
      const [memcmp] = readUleb(body, next + tail.length);
      const findIndex = funcImports + code.bodies.length;
      bodies[strFind] = Buffer.concat([body.subarray(0, at[0]), Uint8Array.from([...LMEMFIND_ARGS, ...uleb(findIndex)]), body.subarray(next)]);
      added = findBody(funcImports + memchr, memcmp);
      patched.find = true;
    }
  }

  const out: Uint8Array[] = [b.subarray(0, funcs.start)];
  // Function section: one more declaration when FIND is added.
  p = funcs.start + 1;
  read();
  const declared = read();
  const decls = b.subarray(p, funcs.end);
  const funcContent = Buffer.concat([Uint8Array.from(uleb(declared + (added ? 1 : 0))), decls, Uint8Array.from(added ? uleb(find5!) : [])]);
  out.push(Uint8Array.from([3, ...uleb(funcContent.length)]), funcContent, b.subarray(funcs.end, code.start));
  const parts: Uint8Array[] = [Uint8Array.from(uleb(bodies.length + (added ? 1 : 0)))];
  for (const body of added ? [...bodies, added] : bodies) parts.push(Uint8Array.from(uleb(body.length)), body);
  const content = Buffer.concat(parts);
  out.push(Uint8Array.from([10, ...uleb(content.length)]), content, b.subarray(code.end));
  patched.memchr = true;
  return Buffer.concat(out);
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
    if (args[0] instanceof Uint8Array || args[0] instanceof ArrayBuffer) args[0] = patchModule(args[0]);
    const r = await original.apply(this, args);
    instance = (r as { instance?: Instance }).instance ?? (r as Instance);
    return r;
  };
  // require, not import: wasmoon ships CommonJS, and importing it as ESM
  // first has Node scan its source for export names (~25 ms of each
  // worker's start-up).
  const { LuaWasm: Wasmoon } = createRequire(import.meta.url)('wasmoon') as typeof import('wasmoon');
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
