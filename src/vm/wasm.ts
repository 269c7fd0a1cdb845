// The raw Lua 5.4 C API, straight from the WebAssembly exports of wasmoon's
// build. riff takes from wasmoon only its module (glue.wasm: Lua 5.4 and
// musl, compiled by Emscripten), patches it (patchModule) and instantiates
// it with its own imports (src/vm/libc.ts, by src/vm/vm.ts); wasmoon's JS -- the Emscripten
// glue and its wrappers, which convert strings through UTF-8 and cost a
// closure and an `arguments` copy per call -- is never loaded: riff makes
// several calls per packet, moves binary data, and starts a VM per worker.
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NO_V8_FLAGS } from '../bundle-cache.js';
import { readCache, saveCache, serializerOpen, stamp, TRAINING } from './wasm-cache.js';

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
/** A compiled WebAssembly module: instantiated per VM, and posted to workers as it is (code is shared, memory never). */
export interface WasmModule {
  readonly __wasmModule?: never;
}
export const WebAssemblyAPI = (globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => WasmModule;
    Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => WasmInstance;
    compile: (bytes: Uint8Array) => Promise<WasmModule>;
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
  lua_gethook(L: LuaState): number;
  lua_gethookmask(L: LuaState): number;
  lua_gethookcount(L: LuaState): number;
  lua_tothread(L: LuaState, idx: number): LuaState;
  lua_rawget(L: LuaState, idx: number): number;
  lua_rawset(L: LuaState, idx: number): void;
  lua_setupvalue(L: LuaState, funcindex: number, n: number): Ptr;
  lua_getupvalue(L: LuaState, funcindex: number, n: number): Ptr;
  lua_upvalueid(L: LuaState, funcindex: number, n: number): Ptr;
  luaL_traceback(L: LuaState, L1: LuaState, msg: Ptr, level: number): void;
}

export const LUA_OK = 0;
export const LUA_REGISTRYINDEX = -1001000;
export const LUA_TNIL = 0;
export const LUA_TNUMBER = 3;
export const LUA_TSTRING = 4;
export const LUA_TTABLE = 5;
export const LUA_TFUNCTION = 6;
export const LUA_TTHREAD = 8;
export const LUA_MULTRET = -1;

export interface Wasm {
  x: LuaExports;
  memory: WasmMemory;
  table: WasmTable;
  /** Current view of WebAssembly memory (re-read: memory growth replaces the buffer). */
  heap(): Uint8Array;
}

// Faster string search, spliced into wasmoon's module by patchModule from
// src/vm/wasm/string.wat (assembled at build time into
// dist/src/vm/wasm/string.json by scripts/build-wasm.ts; that file says why
// each is faster):
// - memchr: replaces the musl memchr in wasmoon 1.16's build, found by the
//   size and FNV-1a hash of its body (node:crypto would add its load to every
//   worker's start-up).
// - find: added, and called by string.find's plain search (lmemfind, inlined
//   in str_find_aux) in place of memchr, when str_find_aux is the one known
//   (size and FNV-1a of its body) and holds that call exactly once.
const MUSL_MEMCHR = { size: 225, fnv1a: 0x406369bc };
const STR_FIND_AUX = { size: 1277, fnv1a: 0xa6bd2abd };
const fnv1a = (b: Uint8Array): number => {
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h;
};
// lmemfind's loop, as wasmoon's build compiled it: local 4 is s1, 9 the
// first pattern byte, 3 the length left; locals 7 and 8 hold s2 + 1 and l2,
// the rest of the pattern. Its memchr(s1, *s2, l1) becomes find(s1, *s2, l1,
// s2 + 1, l2): find returns the first full match, or NULL, so lmemfind's own
// memcmp confirms it and its loop ends.
const localGet = (i: number) => [0x20, i];
const localTee = (i: number) => [0x22, i];
const CALL = 0x10;
const LMEMFIND_CALL = [...localGet(4), ...localGet(9), ...localGet(3), CALL];
const LMEMFIND_ARGS = [...localGet(4), ...localGet(9), ...localGet(3), ...localGet(7), ...localGet(8), CALL];
// What follows the memchr call, up to the call to memcmp: local.tee 1,
// i32.eqz, br_if 4, local.get 1, i32.const 1, i32.add, local.tee 5,
// local.get 7, local.get 8, call (memcmp's index follows).
const LMEMFIND_NEXT = [...localTee(1), 0x45, 0x0d, 0x04, ...localGet(1), 0x41, 0x01, 0x6a, ...localTee(5), ...localGet(7), ...localGet(8), CALL];

/** Value types by their encoding, as signatures are spelled here and by scripts/build-wasm.ts. */
export const VALTYPE: Record<number, string> = { 0x7f: 'i32', 0x7e: 'i64', 0x7d: 'f32', 0x7c: 'f64', 0x7b: 'v128' };

/** A function of string.wat as scripts/build-wasm.ts leaves it in string.json. */
export interface Spliced {
  /** As VALTYPE spells it: "i32 i32 i32 -> i32". */
  sig: string;
  /** Locals and code, hex. */
  body: string;
  /** Each call in body: the offset of its function index (five bytes) and the callee's name (an import's field, or the export name of a function of string.wat). */
  calls: [number, string][];
}
type Splices = Record<string, Spliced>;
let splices: Splices | undefined;
export function splicesFromBuild(): Splices {
  const file = new URL('./wasm/string.json', import.meta.url);
  try {
    splices ??= JSON.parse(readFileSync(file, 'utf8')) as Splices;
  } catch {
    throw new Error(`${file.pathname} is missing or unreadable: run npm run build (it assembles src/vm/wasm/*.wat)`);
  }
  return splices;
}

/** f's body with each call's function index filled in by `index` (the callee's index in the module it goes into). */
function placed(f: Spliced, index: (name: string) => number): Uint8Array {
  const body = Buffer.from(f.body, 'hex');
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const [offset, callee] of f.calls) {
    // The build's relocatable encoding: five bytes, whatever the index.
    parts.push(body.subarray(at, offset), Uint8Array.from(uleb(index(callee))));
    at = offset + 5;
  }
  parts.push(body.subarray(at));
  return Buffer.concat(parts);
}

/** Unsigned LEB128, as WebAssembly encodes sizes and indices. */
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
export function readUleb(buf: Uint8Array, at: number): [number, number] {
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
 * V8 flags for the Lua module, per process: call on the main thread before
 * any module is compiled or worker started.
 * - Inlining: V8 11 (Node 20) can inline small WebAssembly functions into
 *   their callers but leaves it off unless asked; later V8s do it by default.
 *   For the Lua interpreter (luaV_execute calling the table and string
 *   helpers) it is 5-10% of a script-heavy pipeline's time.
 *   RIFF_WASM_INLINING=0 keeps V8's default.
 * - Eager compilation: V8 11 compiles a function only when it is first
 *   called, on the thread that calls it; booting Lua and its first packets
 *   call some 400 functions, each compiled on the worker's thread in turn.
 *   Compiled eagerly, the whole module is compiled once, on V8's background
 *   threads, while the workers load their modules (src/vm/prestart.ts
 *   starts it once they have booted), and every worker instantiates the
 *   compiled code.
 *   RIFF_WASM_LAZY=1 keeps V8's default.
 * - Tier-up budget: a function is recompiled by TurboFan once it has run
 *   about this many bytes of its code in Liftoff's (V8's default 1.8M).
 *   Booting Lua and a few packets spend V8's default many times over: every
 *   run, even of 45 packets, had TurboFan compile 33 functions, luaV_execute
 *   the largest (~0.1-0.2 s of CPU on V8's threads, competing with riff's
 *   two on two cores). At 100x the default three still were; at 200x none
 *   is in a short run, and a long one tiers up its hot functions a little
 *   later: ~0.1 s once per run (1-2% of 200k packets; README, Start-up).
 *   Read when a VM is instantiated. RIFF_WASM_TIERING_BUDGET=N sets it
 *   (1800000: V8's default).
 */
export const TIERING_BUDGET = 360_000_000;

/**
 * The build's training run (src/vm/wasm-cache.ts): V8 compiles lazily (its
 * default), and a function is optimized, with inlining guided by the run's
 * calls, once it has run ~20 KB of its baseline code: scripts/train.lua over
 * 20,000 packets (reloaded ~10 times) then leaves 0.6-0.9 MB of optimized
 * code. Every function optimized without inlining, the original riff tree
 * ran 5-12% slower than the module compiled at the start; with V8 inlining
 * without a run's guidance, 1.3-8 MB of code to read at every start
 * (README, Start-up).
 */
const TRAINING_FLAGS = ['--experimental-wasm-inlining', '--wasm-tiering-budget=20000'];
/**
 * V8 11's defaults for every flag the training run sets, set back before the
 * code is saved: V8 refuses a cache made under other flags (the build checks
 * that a fresh node takes it). TRAINING_FLAGS, and --expose-gc, which the
 * pool sets at the first reload (pool.ts fullCollection).
 */
const TRAINING_DEFAULTS = ['--no-experimental-wasm-inlining', '--wasm-tiering-budget=1800000', '--no-expose-gc'];
/** The knobs setWasmFlags reads: any one set says how to compile the module, so the build's cache of it is not taken (cachedLua). */
const WASM_KNOBS = ['RIFF_WASM_INLINING', 'RIFF_WASM_LAZY', 'RIFF_WASM_TIERING_BUDGET'] as const;
export function setWasmFlags(): void {
  if (NO_V8_FLAGS) return;
  // Required here, not imported: node:v8 is ~5 ms of a worker's start-up, and only the main thread sets flags.
  const v8 = requireCjs('node:v8') as typeof import('node:v8');
  if (TRAINING) {
    for (const f of TRAINING_FLAGS) v8.setFlagsFromString(f);
    return;
  }
  if (process.versions.v8.startsWith('11.') && process.env.RIFF_WASM_INLINING !== '0') {
    v8.setFlagsFromString('--experimental-wasm-inlining');
  }
  if (process.env.RIFF_WASM_LAZY !== '1') v8.setFlagsFromString('--no-wasm-lazy-compilation');
  const budget = Number(process.env.RIFF_WASM_TIERING_BUDGET || TIERING_BUDGET);
  if (Number.isInteger(budget) && budget > 0) v8.setFlagsFromString(`--wasm-tiering-budget=${budget}`);
}

/** What patchModule did: each is false when the module's function was not the one known, its signature not string.wat's, or the engine lacks SIMD. */
export const patched = { memchr: false, find: false };

/**
 * The module's bytes, patched:
 * - its memory declared shared. Shared memory is what lets another thread
 *   reach into a running VM: the watchdog (src/vm/watchdog.ts) arms the
 *   instruction budget's hook in a VM that has been in one batch too long,
 *   and the capture thread writes a worker's batches into its ring there.
 *   Loads and stores compile the same, and the memory already declares the
 *   maximum that shared memory requires.
 * - memchr's body replaced by string.wat's, and lmemfind's loop calling
 *   string.wat's find (added as a new function), when they are the known
 *   ones, the signatures agree and the engine has SIMD; otherwise left alone.
 */
export function patchModule(input: Uint8Array | ArrayBuffer, spliced: Splices = splicesFromBuild()): Uint8Array {
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
  const types: number[] = []; // where each function type starts
  let funcs: (Range & { count: number; decls: number }) | null = null;
  let code: (Range & { bodies: [number, number][] }) | null = null;
  while (p < b.length) {
    const sectionStart = p;
    const id = b[p++];
    const len = read();
    const end = p + len;
    if (id === 1) {
      for (let n = read(); n > 0 && b[p] === 0x60; n--) {
        types.push(p++);
        for (let k = 0; k < 2; k++) {
          const count = read(); // params, then results
          p += count;
        }
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
      const count = read();
      funcs = { start: sectionStart, end, count, decls: p };
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
  // Signatures spelled as scripts/build-wasm.ts spells them: "i32 i32 -> i32".
  const sig = (type: number) => {
    p = types[type] + 1;
    const list = () => Array.from({ length: read() }, () => VALTYPE[b[p++]] ?? '?').join(' ');
    const params = list();
    return `${params} -> ${list()}`;
  };
  const typeOf = (f: number) => {
    p = funcs!.decls;
    for (let i = 0; i < f; i++) read();
    return read();
  };
  const memchr = known(MUSL_MEMCHR);
  if (memchr < 0 || sig(typeOf(memchr)) !== spliced.memchr.sig) return b;
  // Where each callee of the spliced functions is in this module.
  const index: Record<string, number> = { memchr: funcImports + memchr, find: funcImports + code.bodies.length };
  const indexOf = (name: string) => {
    if (index[name] === undefined) throw new Error(`string.wat calls ${name}, which patchModule does not place`);
    return index[name];
  };
  const bodies: Uint8Array[] = code.bodies.map(([s, e]) => b.subarray(s, e));
  bodies[memchr] = placed(spliced.memchr, indexOf);

  // lmemfind's call to memchr, to become a call to find with two more arguments.
  const strFind = known(STR_FIND_AUX);
  const findType = types.findIndex((_, t) => sig(t) === spliced.find.sig);
  let added: Uint8Array | null = null;
  if (strFind >= 0 && findType >= 0) {
    const body = bodies[strFind];
    const call = [...LMEMFIND_CALL, ...uleb(index.memchr)];
    const at: number[] = [];
    for (let i = 0; i + call.length <= body.length; i++) if (call.every((x, k) => body[i + k] === x)) at.push(i);
    const next = at.length === 1 ? at[0] + call.length : -1;
    if (next > 0 && LMEMFIND_NEXT.every((x, k) => body[next + k] === x)) {
      [index.memcmp] = readUleb(body, next + LMEMFIND_NEXT.length);
      bodies[strFind] = Buffer.concat([body.subarray(0, at[0]), Uint8Array.from([...LMEMFIND_ARGS, ...uleb(index.find)]), body.subarray(next)]);
      added = placed(spliced.find, indexOf);
      patched.find = true;
    }
  }

  const out: Uint8Array[] = [b.subarray(0, funcs.start)];
  // Function section: one more declaration when find is added.
  const funcContent = Buffer.concat([
    Uint8Array.from(uleb(funcs.count + (added ? 1 : 0))),
    b.subarray(funcs.decls, funcs.end),
    Uint8Array.from(added ? uleb(findType) : []),
  ]);
  out.push(Uint8Array.from([3, ...uleb(funcContent.length)]), funcContent, b.subarray(funcs.end, code.start));
  const parts: Uint8Array[] = [Uint8Array.from(uleb(bodies.length + (added ? 1 : 0)))];
  for (const body of added ? [...bodies, added] : bodies) parts.push(Uint8Array.from(uleb(body.length)), body);
  const content = Buffer.concat(parts);
  out.push(Uint8Array.from([10, ...uleb(content.length)]), content, b.subarray(code.end));
  patched.memchr = true;
  return Buffer.concat(out);
}

/** CommonJS require from riff's modules (packages, and node: modules loaded only when needed). */
export const requireCjs = createRequire(import.meta.url);
/** wasmoon's Lua module, as it ships. */
export const GLUE_WASM = () => path.join(path.dirname(requireCjs.resolve('wasmoon')), 'glue.wasm');

/** What scripts/build-wasm.ts says of the lua.wasm it made: from which wasmoon module, and what patchModule did. */
export interface Prebuilt {
  wasmoon: string;
  size: number;
  memchr: boolean;
  find: boolean;
}

/**
 * The Lua module's bytes as riff runs them: patchModule's output. The build
 * makes it (dist/src/vm/wasm/lua.wasm), so a run only reads it; when that
 * file is missing or was made from another wasmoon build than the one
 * installed, or this engine lacks SIMD, the module is patched here instead.
 */
export function luaModuleBytes(): Uint8Array {
  const glue = GLUE_WASM();
  fromBuild = false;
  try {
    const built = JSON.parse(readFileSync(new URL('./wasm/lua.json', import.meta.url), 'utf8')) as Prebuilt;
    const version = (JSON.parse(readFileSync(path.join(path.dirname(glue), '..', 'package.json'), 'utf8')) as { version: string }).version;
    if (built.wasmoon === version && built.size === statSync(glue).size && hasSimd()) {
      const before = TRAINING ? stamp(LUA_WASM()) : null;
      const bytes = readFileSync(new URL('./wasm/lua.wasm', import.meta.url));
      // The file as these bytes were read (unchanged across the read), for the training run's save.
      readStamp = before !== null && stamp(LUA_WASM()) === before ? before : null;
      patched.memchr = built.memchr;
      patched.find = built.find;
      fromBuild = true;
      return bytes;
    }
  } catch {
    // not built, or unreadable: patched below
  }
  return patchModule(readFileSync(glue), splicesFromBuild());
}

/** Whether luaModuleBytes returned the build's lua.wasm (which alone has a code cache). */
let fromBuild = false;
/** The training run: lua.wasm's cache stamp when its bytes were read (null: changed while read). */
let readStamp: string | null = null;
const LUA_WASM = (): string => fileURLToPath(new URL('./wasm/lua.wasm', import.meta.url));

let compiling: Promise<WasmModule> | undefined;
let compiled: WasmModule | undefined;
/**
 * The Lua module, compiled once per process (asynchronously, on V8's
 * background threads), unless cachedLua() found it in the build's cache.
 * Every VM is an instance of it; its code is shared, each instance's memory
 * is its own.
 */
export function compiledLua(): Promise<WasmModule> {
  compiling ??= (async () => (compiled = await WebAssemblyAPI.compile(luaModuleBytes())))();
  return compiling;
}

let cached: WasmModule | null | undefined;
/**
 * The Lua module from the build's code cache (src/vm/wasm-cache.ts), at
 * once, when V8's serializer is open (src/vm/prestart.ts opens it), the
 * module is the build's and V8 takes the cache; it is then compiledLua()'s
 * too. Else undefined, and the module is compiled. Not with the knobs that
 * change how the module is compiled (RIFF_WASM_*), nor in the training run.
 */
export function cachedLua(): WasmModule | undefined {
  if (cached === undefined) {
    cached = null;
    const knobs = WASM_KNOBS.some((k) => process.env[k]);
    if (serializerOpen() && !TRAINING && !NO_V8_FLAGS && !knobs && compiling === undefined) {
      try {
        const bytes = luaModuleBytes();
        const module = fromBuild ? (readCache(LUA_WASM(), bytes) as WasmModule | undefined) : undefined;
        if (module) {
          cached = module;
          compiling = Promise.resolve(module);
        }
      } catch {
        // wasmoon missing, no WebAssembly: the compile says so, where riff reports it
      }
    }
  }
  return cached ?? undefined;
}

/** The training run's end (cli.ts exit): save the module's code as the run left it. Returns its size, 0 when not saved. */
export function saveTrainedLua(): number {
  if (!TRAINING || !compiled || !fromBuild || readStamp === null) return 0;
  // Optimizations V8 started in the last packets' time finish meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
  return saveCache(LUA_WASM(), compiled, TRAINING_DEFAULTS, readStamp);
}
