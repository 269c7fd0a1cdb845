// One Lua state in its own WebAssembly instance, with the few operations riff
// needs typed over the raw C API: bytes in and out without text conversion,
// chunks loaded as text only, host functions, and a capped allocator.
import {
  compiledLua,
  LUA_OK,
  LUA_REGISTRYINDEX,
  WebAssemblyAPI,
  type LuaExports,
  type LuaState,
  type Ptr,
  type Wasm,
  type WasmMemory,
  type WasmModule,
  type WasmTable,
} from './wasm.js';
import { hostFunction, linkBridge, SIZE_CLASSES, type Bridge } from './bridge.js';
import { Libc, type LibcExports } from './libc.js';
import { readFileSync } from 'node:fs';

/**
 * A fresh instance of the Lua WebAssembly module, its C runtime started:
 * `module` (compiled on the main thread and posted here), else this
 * thread's compiledLua(). Each VM is its own instance with its own memory:
 * a runaway plugin can exhaust only its instance. The instance is made here,
 * in the workers, not in src/vm/wasm.ts: riff's C library (libc.ts) then
 * stays out of the capture thread's first bundle, which it reads before it
 * spawns the workers.
 */
export async function loadWasm(module?: WasmModule | null): Promise<Wasm> {
  const compiled = module ?? (await compiledLua());
  const libc = new Libc();
  const instance = new WebAssemblyAPI.Instance(compiled, libc.imports());
  const exports = instance.exports;
  libc.attach(exports as unknown as LibcExports);
  libc.start();
  const memory = exports.memory as WasmMemory;
  let view = new Uint8Array(memory.buffer);
  return {
    x: exports as unknown as LuaExports,
    memory,
    table: exports.__indirect_function_table as WasmTable,
    heap: () => (view.buffer === memory.buffer ? view : (view = new Uint8Array(memory.buffer))),
  };
}

/**
 * Instantiate the Lua module and riff's own (bridge.ts) once, and throw the
 * instances away, on the capture thread while the workers boot: a worker's
 * first VM then takes ~5 ms less (README, Start-up). V8 compiles a wrapper
 * for each JavaScript function a module imports, per signature and arity,
 * at the module's first instance, and keeps it with the compiled module,
 * which the workers share (the Lua module is posted to them,
 * src/vm/prestart.ts). riff's own modules the workers compile themselves,
 * from the same bytes: V8 keeps one compiled module per bytes for the
 * process, so theirs is this one. The imports are the ones a worker passes,
 * or functions of the same arity. Nothing runs: no C runtime, no Lua state.
 *
 * Not under a limit on the address space (ulimit -v, systemd's LimitAS=),
 * or where riff cannot tell there is none: the throwaway instance's memory
 * holds ~10 GiB of addresses (its shared memory's maximum and V8's guard
 * regions) until this thread's collector frees it, seconds later, and a
 * worker's own VM would then fail for want of them. Returns whether it
 * warmed; a failure only leaves the work to the workers.
 */
export function warmUp(module: WasmModule): boolean {
  try {
    if (!addressSpaceUnlimited()) return false;
    const lua = new WebAssemblyAPI.Instance(module, new Libc().imports()).exports as unknown as LuaExports & { memory: WasmMemory };
    const js = (_p: number, _len: number) => {};
    linkBridge({ ...lua, out_js: js, refused: (_ptr) => {} });
    hostFunction((_L) => 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether this process may map as many addresses as it likes (no ulimit -v); false where Linux's /proc does not say. */
export function addressSpaceUnlimited(): boolean {
  try {
    return /^Max address space\s+unlimited\s/m.test(readFileSync('/proc/self/limits', 'latin1'));
  } catch {
    return false;
  }
}

/** A Lua error as a message (already formatted by the Lua side: file:line: text). */
export class LuaError extends Error {}

/**
 * A host function: reads its arguments from L, pushes results, returns how
 * many. L is the calling thread: a coroutine's, not the main state, when Lua
 * calls it from inside one.
 */
export type HostFunction = (vm: LuaVM, L: LuaState) => number;

const STDOUT_BUFFER = 16 << 20;

export interface VMOptions {
  /** Lua heap limit in bytes; 0 = unlimited. */
  memoryLimit: number;
}

export class LuaVM {
  readonly L: LuaState;
  readonly x: LuaExports;
  /** riff's WebAssembly half: the capped allocator, the batch fill loop, the stdout buffer. */
  readonly bridge: Bridge;
  private stage: Ptr = 0;
  private stageSize = 0;
  private readonly lenPtr: Ptr;
  private readonly names = new Map<string, Ptr>();
  private readonly textMode: Ptr;
  /** Where buffered stdout goes; `bytes` is a view into WebAssembly memory, valid during the call. */
  onStdout: (bytes: Uint8Array) => void = () => {};
  /**
   * Told before the allocator refuses to grow block `ptr` (0: a fresh block).
   * It runs inside a Lua allocation: it may read memory, never call Lua.
   */
  onRefused: (ptr: Ptr) => void = () => {};

  private constructor(
    readonly wasm: Wasm,
    opts: VMOptions,
  ) {
    this.x = wasm.x;
    const x = this.x;
    this.bridge = linkBridge({
      memory: wasm.memory,
      realloc: x.realloc,
      free: x.free,
      lua_pushlstring: x.lua_pushlstring,
      lua_rawseti: x.lua_rawseti,
      lua_tothread: x.lua_tothread,
      lua_gettop: x.lua_gettop,
      lua_type: x.lua_type,
      lua_tolstring: x.lua_tolstring,
      lua_pushinteger: x.lua_pushinteger,
      lua_gethook: x.lua_gethook,
      lua_gethookmask: x.lua_gethookmask,
      lua_gethookcount: x.lua_gethookcount,
      lua_sethook: x.lua_sethook,
      out_js: (p, len) => this.onStdout(this.wasm.heap().subarray(p, p + len)),
      // A JS exception must not unwind through Lua's allocation.
      refused: (ptr) => {
        try {
          this.onRefused(ptr);
        } catch {
          // no position then
        }
      },
    });
    // io.write's buffer: a packet's output stays whole unless it alone
    // passes this size (then it goes out in pieces, as before).
    // A word before it counts the bytes used (bridge.wat $outLen).
    const out = x.malloc(STDOUT_BUFFER + 4);
    this.wasm.heap().fill(0, out, out + 4);
    this.bridge.out.value = out + 4;
    this.bridge.outCap.value = STDOUT_BUFFER;
    // lua_tolstring's length, for JS and the bridge alike: each reads it at once.
    this.lenPtr = x.malloc(8);
    this.bridge.scratch.value = this.lenPtr;
    this.memoryLimit = opts.memoryLimit;
    const heads = x.malloc(SIZE_CLASSES * 4);
    this.wasm.heap().fill(0, heads, heads + SIZE_CLASSES * 4);
    this.bridge.heads.value = heads;
    // Every Lua allocation passes the bridge's allocator so the heap cap holds
    // exactly; a refusal becomes Lua's own "not enough memory" error, which
    // pcall reports per packet.
    this.L = x.lua_newstate(this.place(this.bridge.alloc), 0);
    if (!this.L) throw new Error('could not create a Lua state');
    x.luaL_openlibs(this.L);
    this.textMode = this.cstr('t');
    // The real collectgarbage, taken before any sandbox is built, for unbounded().
    x.lua_getglobal(this.L, this.cstr('collectgarbage'));
    this.gcFn = this.ref();
    this.pushBytes(Buffer.from('stop'));
    this.gcStop = this.ref();
    this.pushBytes(Buffer.from('restart'));
    this.gcRestart = this.ref();
    this.pushBytes(Buffer.from('step'));
    this.gcStep = this.ref();
    // global_State's GCdebt (lua_State.l_G at 16; frealloc, ud, totalbytes,
    // GCdebt), used only if totalbytes + GCdebt reads back as the bytes Lua holds.
    const dv = new DataView(wasm.memory.buffer);
    const G = dv.getUint32(this.L + 16, true);
    if (G && G + 16 <= dv.byteLength && dv.getInt32(G + 8, true) + dv.getInt32(G + 12, true) === this.memoryUsed) this.gcDebt = G + 12;
  }

  /** Address of the collector's debt (global_State.GCdebt), or 0 when the layout did not check out. */
  private gcDebt = 0;

  private readonly gcFn: number;
  private readonly gcStop: number;
  private readonly gcRestart: number;
  private readonly gcStep: number;

  /** collectgarbage(what[, kb]), what a registry reference to a string. */
  private gc(what: number, kb = -1): void {
    this.pushRef(this.gcFn);
    this.pushRef(what);
    if (kb >= 0) this.x.lua_pushinteger(this.L, BigInt(kb));
    if (this.x.lua_pcallk(this.L, kb >= 0 ? 2 : 1, 0, 0, 0, 0) !== LUA_OK) this.x.lua_settop(this.L, -2);
  }

  /** Bytes the Lua heap holds. */
  get memoryUsed(): number {
    return this.bridge.used.value >>> 0;
  }

  /** Lua heap limit in bytes, 0 = none. WebAssembly memory ends below 4 GiB, so larger means none. */
  get memoryLimit(): number {
    return this.bridge.limit.value >>> 0;
  }

  set memoryLimit(bytes: number) {
    this.bridge.limit.value = bytes >= 2 ** 32 ? 0 : bytes;
  }

  /** `module`: the Lua module compiled already (by the main thread); else this thread's. */
  static async create(opts: VMOptions, module?: WasmModule | null): Promise<LuaVM> {
    return new LuaVM(await loadWasm(module), opts);
  }

  /** A NUL-terminated copy of a short ASCII name, kept for the VM's life. */
  cstr(s: string): Ptr {
    let p = this.names.get(s);
    if (p === undefined) {
      const b = Buffer.from(s + '\0', 'utf8');
      p = this.x.malloc(b.length);
      this.wasm.heap().set(b, p);
      this.names.set(s, p);
    }
    return p;
  }

  /** Scratch space in WebAssembly memory, reused; valid until the next call. */
  staging(size: number): Ptr {
    if (size > this.stageSize) {
      if (this.stage) this.x.free(this.stage);
      this.stageSize = Math.max(size, this.stageSize * 2, 1 << 16);
      this.stage = this.x.malloc(this.stageSize);
      if (!this.stage) throw new Error(`out of WebAssembly memory staging ${size} bytes`);
    }
    return this.stage;
  }

  /** Push bytes as a Lua string, byte for byte. */
  pushBytes(b: Uint8Array, L: LuaState = this.L): void {
    const p = this.staging(b.length);
    this.wasm.heap().set(b, p);
    this.x.lua_pushlstring(L, p, b.length);
  }

  /** Bytes of the string (or number) at idx, copied out; null for other types. */
  toBytes(idx: number, L: LuaState = this.L): Buffer | null {
    const p = this.x.lua_tolstring(L, idx, this.lenPtr);
    if (!p) return null;
    const n = new Uint32Array(this.wasm.heap().buffer, this.lenPtr, 1)[0];
    return Buffer.from(this.wasm.heap().subarray(p, p + n));
  }

  /**
   * The bytes of the string at idx as a view into WebAssembly memory — no
   * copy. Valid only until Lua runs again (memory may grow or be reused).
   */
  viewBytes(idx: number, L: LuaState = this.L): Uint8Array | null {
    const p = this.x.lua_tolstring(L, idx, this.lenPtr);
    if (!p) return null;
    const heap = this.wasm.heap();
    const n = new Uint32Array(heap.buffer, this.lenPtr, 1)[0];
    return heap.subarray(p, p + n);
  }

  /** For messages and names only — never for packet data. */
  toText(idx: number, L: LuaState = this.L): string | null {
    const b = this.toBytes(idx, L);
    return b === null ? null : b.toString('utf8');
  }

  /** Load a text chunk (binary chunks are refused) and leave the function on the stack. */
  load(source: Uint8Array, chunkname: string): void {
    const p = this.staging(source.length);
    this.wasm.heap().set(source, p);
    const rc = this.x.luaL_loadbufferx(this.L, p, source.length, this.cstr(chunkname), this.textMode);
    if (rc !== LUA_OK) throw new LuaError(this.popError());
  }

  /** Protected call; throws LuaError with the message on failure. */
  call(nargs: number, nresults: number): void {
    const rc = this.x.lua_pcallk(this.L, nargs, nresults, 0, 0, 0);
    if (rc !== LUA_OK) throw new LuaError(this.popError());
  }

  popError(): string {
    const msg = this.toText(-1) ?? '(error object is not a string)';
    this.x.lua_settop(this.L, -2);
    return msg;
  }

  /** Pop the value on top into the registry; returns the reference. */
  ref(): number {
    return this.x.luaL_ref(this.L, LUA_REGISTRYINDEX);
  }

  pushRef(ref: number): void {
    this.x.lua_rawgeti(this.L, LUA_REGISTRYINDEX, BigInt(ref));
  }

  /** A WebAssembly function's index in the instance's function table, where C code can call it. */
  private place(fn: (L: number, ...a: number[]) => number): number {
    const at = this.wasm.table.grow(1);
    this.wasm.table.set(at, fn);
    return at;
  }

  /** Push one of riff's WebAssembly functions as a Lua C function. */
  pushWasmFunction(fn: (L: number) => number): void {
    this.x.lua_pushcclosure(this.L, this.place(fn), 0);
  }

  /**
   * Push a host function. A JS exception inside it becomes a Lua error (the
   * JS stack must not unwind through Lua frames); Lua's own errors, which
   * Emscripten throws as numbers, pass through untouched.
   */
  pushFunction(fn: HostFunction): void {
    const ptr = this.place(hostFunction((L: number) => {
      let message: string;
      try {
        return fn(this, L);
      } catch (e) {
        if (typeof e === 'number') throw e;
        message = e instanceof Error ? e.message : String(e);
      }
      this.pushBytes(Buffer.from(message, 'utf8'), L);
      return this.x.lua_error(L);
    }));
    this.x.lua_pushcclosure(this.L, ptr, 0);
  }

  /**
   * Run riff's own pushes with the cap lifted: an allocation refused outside a
   * protected call would make Lua panic, and riff's handoff buffers are
   * bounded by the batch size anyway. The collector is stopped meanwhile: a
   * step here would run plugins' __gc finalizers, which must stay under the
   * cap (they allocated past it to any size before).
   */
  unbounded<T>(fn: () => T): T {
    const limit = this.memoryLimit;
    const debt = this.gcDebt ? new DataView(this.wasm.memory.buffer).getInt32(this.gcDebt, true) : 0;
    this.gc(this.gcStop);
    const before = this.memoryUsed;
    this.memoryLimit = 0;
    try {
      return fn();
    } finally {
      this.memoryLimit = limit;
      // Restarting zeroes the collector's debt: both its credit (the pause
      // between cycles; lost, it would collect all the time) and what the
      // pushes allocated (forgotten, the heap would outgrow it batch by
      // batch). Put back the debt it would have had: collectgarbage("step",
      // KiB) adds to the debt and steps only if it is positive (under the cap).
      this.gc(this.gcRestart);
      const kb = Math.trunc((debt + this.memoryUsed - before) / 1024);
      if (kb !== 0) this.gc(this.gcStep, kb);
    }
  }

  close(): void {
    this.x.lua_close(this.L);
  }
}
