// riff's own WebAssembly functions, linked into a Lua instance's memory
// and function table beside wasmoon's code:
//
//   alloc(ud, ptr, osize, nsize)   Lua's allocator: free lists by size class
//                                  for small blocks, the --lua-memory cap
//   fill(L, base, count, meta)     push a batch's packets into the table on
//                                  top of the stack, copying their headers
//   enter(L)                       a Lua C function: note the coroutine in
//                                  argument 1 as the running one (or none),
//                                  where the watchdog can read it
//   out_write(L), out_pending(L),  Lua C functions behind io.write and
//   out_flush(L)                   print: stdout is buffered here, in
//                                  WebAssembly memory, and handed to JS
//                                  (out_js) whole when flushed
//
// Both run once or more per packet. Written in JS they cost a crossing from
// WebAssembly into JS and back on every Lua allocation and two crossings out
// of JS per packet; here they call wasmoon's exports (realloc, free,
// lua_pushlstring, lua_rawseti) directly, WebAssembly to WebAssembly. The
// module is small enough to assemble by hand, which keeps the build free of
// a WebAssembly toolchain.
import { HDR, FLAG_ELSEWHERE, FLAG_FILTERED_OUT } from '../capture/batch.js';
import { WebAssemblyAPI, uleb, type WasmGlobal, type WasmMemory } from './wasm.js';

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
  /** Write bytes [p, p + len) of WebAssembly memory to stdout, now. */
  out_js: (p: number, len: number) => void;
}

export interface Bridge {
  /** The allocator, to be placed in the instance's function table. */
  alloc: (ud: number, ptr: number, osize: number, nsize: number) => number;
  /** Push a batch's packets at `base` into T (stack top) as T[1..n], skipping those filtered out or sharded elsewhere; returns n. */
  fill: (L: number, base: number, count: number, meta: number) => number;
  /** lua_CFunction: stores lua_tothread(L, 1) at the address in `slot`. */
  enter: (L: number) => number;
  /** Where enter() writes (an address in WebAssembly memory; 0 = nowhere yet). */
  slot: WasmGlobal;
  /** lua_CFunction: appends its leading string arguments to the output buffer; returns the index of the first other one, or 0. */
  out_write: (L: number) => number;
  /** lua_CFunction: returns the bytes buffered. */
  out_pending: (L: number) => number;
  /** lua_CFunction: hands the buffer to out_js and empties it. */
  out_flush: (L: number) => number;
  /** The output buffer: address, bytes used, capacity; and 8 bytes of scratch for lua_tolstring's length. */
  out: WasmGlobal;
  outLen: WasmGlobal;
  outCap: WasmGlobal;
  scratch: WasmGlobal;
  /** Bytes Lua holds now. */
  used: WasmGlobal;
  /** Cap in bytes, 0 = none (unsigned 32-bit: WebAssembly memory is below 4 GiB). */
  limit: WasmGlobal;
  /** The allocator's free-list heads: SIZE_CLASSES zeroed words, set before Lua allocates. */
  heads: WasmGlobal;
}

// ---------------------------------------------------------------- encoding

const I32 = 0x7f;
const I64 = 0x7e;

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, 'ascii')];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const functype = (params: number[], results: number[]) => [0x60, ...vec(params.map((p) => [p])), ...vec(results.map((r) => [r]))];

// Instructions used below.
const op = {
  block: 0x02, loop: 0x03, if: 0x04, else: 0x05, end: 0x0b, br: 0x0c, brIf: 0x0d, return: 0x0f, call: 0x10,
  drop: 0x1a, select: 0x1b, void: 0x40,
  get: 0x20, set: 0x21, tee: 0x22, gget: 0x23, gset: 0x24,
  i32load: 0x28, i64load: 0x29, i32store: 0x36, i64store: 0x37, i32const: 0x41,
  i32eqz: 0x45, i32eq: 0x46, i32ne: 0x47, i32gtS: 0x4a, i32gtU: 0x4b, i32leU: 0x4d, i32geU: 0x4f, i64gtU: 0x56,
  i32add: 0x6a, i32sub: 0x6b, i32mul: 0x6c, i32and: 0x71, i32shl: 0x74, i32shrU: 0x76, i64add: 0x7c,
  i64extendS: 0xac, i64extendU: 0xad,
};
const c32 = (n: number) => [op.i32const, ...sleb(n)];
const mem = (opcode: number, align: number, offset: number) => [opcode, align, ...uleb(offset)];

// Function indices: imports first.
const F_REALLOC = 0, F_FREE = 1, F_PUSH = 2, F_RAWSETI = 3, F_TOTHREAD = 4;
const F_GETTOP = 5, F_TYPE = 6, F_TOLSTRING = 7, F_PUSHINT = 8, F_OUTJS = 9;
const F_ALLOC = 10, F_FILL = 11, F_ENTER = 12, F_OUTWRITE = 13, F_OUTPENDING = 14, F_OUTFLUSH = 15, F_APPEND = 16;
const F_TAKE = 17, F_GIVE = 18;
// Globals.
const G_USED = 0, G_LIMIT = 1, G_SLOT = 2, G_OUT = 3, G_OUTLEN = 4, G_OUTCAP = 5, G_SCRATCH = 6;
const G_HEADS = 7, G_BUMP = 8, G_BUMPEND = 9;
const LUA_TSTRING = 4;

// Lua's allocator. Lua tells the allocator each block's size when it frees
// or resizes it, so blocks up to SMALL bytes need no header: they come from
// free lists, one per 8-byte size class, refilled from CHUNK-sized pieces of
// malloc. A packet's strings and tables are a handful of such blocks, and
// emmalloc's bookkeeping behind two cross-module calls was about a tenth of
// the seed pipeline's time. Larger blocks go to realloc and free. Free-list
// memory stays with the VM for its life (reused, never returned), which is
// what a Lua heap settles into anyway; the --lua-memory cap counts what Lua
// asked for, as before.
// A block recorded at size s <= SMALL is at least class(s) bytes long, from
// a free list or (after shrinking in place) from malloc; one recorded above
// SMALL always came from malloc, so only those reach free and realloc.
const SMALL = 2048;
const CHUNK = 256 << 10;
export const SIZE_CLASSES = (SMALL >> 3) + 1;
// A block of n bytes (1..SMALL) is of class (n + 7) >> 3; its free list's head is word `class` of heads.
const sizeClass = (local: number) => [op.get, local, ...c32(7), op.i32add, ...c32(3), op.i32shrU];
const headOf = (local: number) => [op.gget, G_HEADS, ...sizeClass(local), ...c32(2), op.i32shl, op.i32add];

function takeBody(): number[] {
  // params: 0 n (1..SMALL); locals: 1 head slot, 2 block. A block of class (n + 7) >> 3.
  const { get, set, tee, gget, gset } = op;
  return [
    ...vec([[2, I32]]),
    ...headOf(0), tee, 1,
    ...mem(op.i32load, 2, 0), tee, 2,
    op.if, op.void,
      get, 1, get, 2, ...mem(op.i32load, 2, 0), ...mem(op.i32store, 2, 0),
      get, 2, op.return,
    op.end,
    // n rounded up to the class size; a new chunk when the current one is spent.
    get, 0, ...c32(7), op.i32add, ...c32(-8), op.i32and, set, 0,
    gget, G_BUMP, get, 0, op.i32add, gget, G_BUMPEND, op.i32gtU,
    op.if, op.void,
      ...c32(0), ...c32(CHUNK), op.call, F_REALLOC, tee, 2, op.i32eqz, op.if, op.void, ...c32(0), op.return, op.end,
      get, 2, gset, G_BUMP,
      get, 2, ...c32(CHUNK), op.i32add, gset, G_BUMPEND,
    op.end,
    gget, G_BUMP, tee, 2, get, 0, op.i32add, gset, G_BUMP,
    get, 2,
    op.end,
  ];
}

function giveBody(): number[] {
  // params: 0 block, 1 its recorded size (1..SMALL); locals: 2 head slot.
  const { get, tee } = op;
  return [
    ...vec([[1, I32]]),
    get, 0,
    ...headOf(1), tee, 2,
    ...mem(op.i32load, 2, 0), ...mem(op.i32store, 2, 0),
    get, 2, get, 0, ...mem(op.i32store, 2, 0),
    op.end,
  ];
}

function allocBody(): number[] {
  // params: 0 ud, 1 ptr, 2 osize, 3 nsize; locals: 4 delta, 5 p
  const { get, set, tee, gget, gset } = op;
  const small = (local: number) => [get, local, ...c32(SMALL), op.i32leU];
  // A fresh block of nsize: from a free list, or malloc.
  const fresh = [...small(3), op.if, I32, get, 3, op.call, F_TAKE, op.else, ...c32(0), get, 3, op.call, F_REALLOC, op.end];
  return [
    ...vec([[2, I32]]),
    // nsize == 0: free (osize is the block's size only when ptr is set).
    get, 3, op.i32eqz, op.if, op.void,
      get, 1, op.if, op.void,
        gget, G_USED, get, 2, op.i32sub, gset, G_USED,
        ...small(2), op.if, op.void, get, 1, get, 2, op.call, F_GIVE, op.else, get, 1, op.call, F_FREE, op.end,
      op.end,
      ...c32(0), op.return,
    op.end,
    // delta = ptr ? nsize - osize : nsize (osize is a type tag when ptr is NULL)
    get, 3, get, 2, op.i32sub, get, 3, get, 1, op.select, set, 4,
    // Growth past the cap is refused: Lua turns NULL into "not enough memory".
    get, 4, ...c32(0), op.i32gtS, op.if, op.void,
      gget, G_LIMIT, op.if, op.void,
        gget, G_USED, op.i64extendU, get, 4, op.i64extendS, op.i64add,
        gget, G_LIMIT, op.i64extendU, op.i64gtU, op.if, op.void,
          ...c32(0), op.return,
        op.end,
      op.end,
    op.end,
    op.block, op.void,
      get, 1, op.i32eqz, op.if, op.void, ...fresh, set, 5, op.br, 1, op.end,
      // Shrinking: in place, unless both sizes are malloc's.
      get, 3, get, 2, op.i32leU, op.if, op.void,
        get, 1, set, 5,
        ...small(3), op.i32eqz, op.if, op.void, get, 1, get, 3, op.call, F_REALLOC, set, 5, op.end,
        op.br, 1,
      op.end,
      // Growing a malloc block.
      ...small(2), op.i32eqz, op.if, op.void, get, 1, get, 3, op.call, F_REALLOC, set, 5, op.br, 1, op.end,
      // Growing within the size class.
      get, 1, set, 5,
      ...small(3), op.if, op.void,
        ...sizeClass(3), ...sizeClass(2), op.i32eq,
        op.brIf, 1,
      op.end,
      // Moving to a larger class, or out to malloc.
      ...fresh, tee, 5, op.if, op.void,
        get, 5, get, 1, get, 2, 0xfc, 0x0a, 0x00, 0x00, // memory.copy
        get, 1, get, 2, op.call, F_GIVE,
      op.end,
    op.end,
    get, 5, op.if, op.void, gget, G_USED, get, 4, op.i32add, gset, G_USED, op.end,
    get, 5,
    op.end,
  ];
}

function fillBody(): number[] {
  // params: 0 L, 1 base, 2 count, 3 meta; locals: 4 n, 5 i, 6 rec, 7 caplen, 8 dst
  const { get, set } = op;
  const copyHeader: number[] = [];
  for (let k = 0; k < HDR; k += 8) copyHeader.push(get, 8, get, 6, ...mem(op.i64load, 3, k), ...mem(op.i64store, 3, k));
  return [
    ...vec([[5, I32]]),
    get, 1, set, 6,
    op.block, op.void, op.loop, op.void,
      get, 5, get, 2, op.i32geU, op.brIf, 1,
      get, 6, ...mem(op.i32load, 2, 12), set, 7,
      get, 6, ...mem(op.i32load, 2, 28), ...c32(FLAG_FILTERED_OUT | FLAG_ELSEWHERE), op.i32and, op.i32eqz,
      op.if, op.void,
        get, 0, get, 6, ...c32(HDR), op.i32add, get, 7, op.call, F_PUSH, op.drop,
        get, 4, ...c32(1), op.i32add, set, 4,
        get, 0, ...c32(-2), get, 4, op.i64extendU, op.call, F_RAWSETI,
        get, 3, get, 4, ...c32(1), op.i32sub, ...c32(HDR), op.i32mul, op.i32add, set, 8,
        ...copyHeader,
      op.end,
      // Records are header + data padded to 8 bytes (src/capture/batch.ts).
      get, 6, get, 7, ...c32(HDR + 7), op.i32add, ...c32(-8), op.i32and, op.i32add, set, 6,
      get, 5, ...c32(1), op.i32add, set, 5,
      op.br, 0,
    op.end, op.end,
    get, 4,
    op.end,
  ];
}

function enterBody(): number[] {
  // params: 0 L
  return [
    ...vec([]),
    op.gget, G_SLOT, op.if, op.void,
      op.gget, G_SLOT, op.get, 0, ...c32(1), op.call, F_TOTHREAD, ...mem(op.i32store, 2, 0),
    op.end,
    ...c32(0),
    op.end,
  ];
}

// out_js(out, outLen); outLen = 0 -- when anything is buffered.
const flushOut = [
  op.gget, G_OUTLEN, op.if, op.void,
    op.gget, G_OUT, op.gget, G_OUTLEN, op.call, F_OUTJS,
    ...c32(0), op.gset, G_OUTLEN,
  op.end,
];

function appendBody(): number[] {
  // params: 0 p, 1 len. A piece that does not fit flushes the buffer; one
  // larger than the whole buffer goes straight out.
  const { get, gget, gset } = op;
  return [
    ...vec([]),
    get, 1, gget, G_OUTCAP, gget, G_OUTLEN, op.i32sub, op.i32gtU, op.if, op.void,
      ...flushOut,
      get, 1, gget, G_OUTCAP, op.i32gtU, op.if, op.void,
        get, 0, get, 1, op.call, F_OUTJS, op.return,
      op.end,
    op.end,
    gget, G_OUT, gget, G_OUTLEN, op.i32add, get, 0, get, 1, 0xfc, 0x0a, 0x00, 0x00, // memory.copy
    gget, G_OUTLEN, get, 1, op.i32add, gset, G_OUTLEN,
    op.end,
  ];
}

function outWriteBody(): number[] {
  // params: 0 L; locals: 1 n, 2 i
  const { get, set, gget } = op;
  return [
    ...vec([[2, I32]]),
    get, 0, op.call, F_GETTOP, set, 1,
    ...c32(1), set, 2,
    op.block, op.void, op.loop, op.void,
      get, 2, get, 1, op.i32gtS, op.brIf, 1,
      get, 0, get, 2, op.call, F_TYPE, ...c32(LUA_TSTRING), op.i32ne, op.brIf, 1,
      get, 0, get, 2, gget, G_SCRATCH, op.call, F_TOLSTRING,
      gget, G_SCRATCH, ...mem(op.i32load, 2, 0), op.call, F_APPEND,
      get, 2, ...c32(1), op.i32add, set, 2,
      op.br, 0,
    op.end, op.end,
    // i > n ? 0 : i
    get, 0, ...c32(0), get, 2, get, 2, get, 1, op.i32gtS, op.select, op.i64extendU, op.call, F_PUSHINT,
    ...c32(1),
    op.end,
  ];
}

function outPendingBody(): number[] {
  return [...vec([]), op.get, 0, op.gget, G_OUTLEN, op.i64extendU, op.call, F_PUSHINT, ...c32(1), op.end];
}

function outFlushBody(): number[] {
  return [...vec([]), ...flushOut, ...c32(0), op.end];
}

let compiled: object | undefined;

function module(): object {
  if (compiled) return compiled;
  const types = [
    functype([I32, I32], [I32]), // 0 realloc
    functype([I32], []), // 1 free
    functype([I32, I32, I32], [I32]), // 2 lua_pushlstring
    functype([I32, I32, I64], []), // 3 lua_rawseti
    functype([I32, I32, I32, I32], [I32]), // 4 alloc, fill
    functype([I32], [I32]), // 5 lua_CFunction; lua_gettop (lua_tothread, lua_type: 0; lua_tolstring: 2)
    functype([I32, I64], []), // 6 lua_pushinteger
    functype([I32, I32], []), // 7 out_js, append
  ];
  const imports = [
    [...name('env'), ...name('memory'), 0x02, 0x03, 0x00, ...uleb(65536)], // shared, any size
    [...name('env'), ...name('realloc'), 0x00, 0],
    [...name('env'), ...name('free'), 0x00, 1],
    [...name('env'), ...name('lua_pushlstring'), 0x00, 2],
    [...name('env'), ...name('lua_rawseti'), 0x00, 3],
    [...name('env'), ...name('lua_tothread'), 0x00, 0],
    [...name('env'), ...name('lua_gettop'), 0x00, 5],
    [...name('env'), ...name('lua_type'), 0x00, 0],
    [...name('env'), ...name('lua_tolstring'), 0x00, 2],
    [...name('env'), ...name('lua_pushinteger'), 0x00, 6],
    [...name('env'), ...name('out_js'), 0x00, 7],
  ];
  const globals = [G_USED, G_LIMIT, G_SLOT, G_OUT, G_OUTLEN, G_OUTCAP, G_SCRATCH, G_HEADS, G_BUMP, G_BUMPEND].map(() => [I32, 0x01, ...c32(0), op.end]);
  const exports = [
    [...name('alloc'), 0x00, F_ALLOC],
    [...name('fill'), 0x00, F_FILL],
    [...name('enter'), 0x00, F_ENTER],
    [...name('used'), 0x03, G_USED],
    [...name('limit'), 0x03, G_LIMIT],
    [...name('slot'), 0x03, G_SLOT],
    [...name('out_write'), 0x00, F_OUTWRITE],
    [...name('out_pending'), 0x00, F_OUTPENDING],
    [...name('out_flush'), 0x00, F_OUTFLUSH],
    [...name('out'), 0x03, G_OUT],
    [...name('outLen'), 0x03, G_OUTLEN],
    [...name('outCap'), 0x03, G_OUTCAP],
    [...name('scratch'), 0x03, G_SCRATCH],
    [...name('heads'), 0x03, G_HEADS],
  ];
  const bodies = [allocBody(), fillBody(), enterBody(), outWriteBody(), outPendingBody(), outFlushBody(), appendBody(), takeBody(), giveBody()].map((b) => [
    ...uleb(b.length),
    ...b,
  ]);
  const bytes = Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec(imports)),
    ...section(3, vec([[4], [4], [5], [5], [5], [5], [7], [5], [7]])),
    ...section(6, vec(globals)),
    ...section(7, vec(exports)),
    ...section(10, vec(bodies)),
  ]);
  compiled = new WebAssemblyAPI.Module(bytes);
  return compiled;
}

export function linkBridge(env: BridgeImports): Bridge {
  const inst = new WebAssemblyAPI.Instance(module(), { env: env as unknown as Record<string, unknown> });
  return inst.exports as unknown as Bridge;
}
