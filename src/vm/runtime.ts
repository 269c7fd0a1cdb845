// riff's Lua runtime: one VM for the whole run, the sandbox and driver loaded
// into it, the user's script resolved by the entry rules, and batches of
// packets handed over with one Lua call each.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLAG_ELSEWHERE, FLAG_FILTERED_OUT, FLAG_OVERHEARD, HDR, align8, type Batch } from '../capture/batch.js';
import { LuaError, LuaVM } from './vm.js';
import { LUA_OK, LUA_REGISTRYINDEX, LUA_TNIL, LUA_TNUMBER, LUA_TSTRING, LUA_TTABLE, LUA_TTHREAD, type LuaState, type Ptr } from './wasm.js';
import { decodeRecord } from '../outputs/records.js';
import { BLOCK_BASE, BLOCK_COUNT, BLOCK_META, BLOCK_PHASE, BLOCK_SEQ, BLOCK_THREAD, BLOCK_WORDS, LS, PHASE_BATCH, PHASE_DEINIT, PHASE_SCRIPT, readLuaInt, type WatchTarget } from './watchdog.js';
import { scriptLine } from './where.js';
import type { RunEnd } from './ring.js';
import { openClientInitial } from './quic.js';

/** riff's own Lua (lua/ at the package root). */
export const LUA_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'lua');
const BUNDLED_LABEL = 'riff/lua';

export interface RuntimeOptions {
  /** The --lua FILE; undefined runs the default pipeline. */
  script?: string;
  quiet: boolean;
  verbose: boolean;
  strict: boolean;
  /** Lua instructions per packet (0 = unlimited). */
  budget: number;
  /** Lua instructions for loading the script, setup and deinit (0 = unlimited). */
  setupBudget: number;
  /** Lua heap cap in bytes (0 = unlimited). */
  memoryLimit: number;
  version: string;
  /** Output; `bytes` may be a view into WebAssembly memory, valid only during the call. */
  write(fd: 1 | 2, bytes: Uint8Array): void;
  /** A record emitted by riff.emit(type, table), encoded by lua/riff/record.lua. */
  record?(bytes: Buffer): void;
  /** Asked between packets (every few): true ends the batch early (Ctrl-C). */
  interrupted?(): boolean;
  /**
   * Leave the budget's hook off in batches for a watchdog on another thread
   * to arm (src/vm/watchdog.ts; workers). Without a watchdog a looping packet
   * would never stop, so in-process runtimes keep the hook on.
   */
  lazyBudget?: boolean;
  /** This VM's place among the workers (riff.worker), 0-based; default the only one. */
  worker?: { index: number; count: number };
  /** Counters every worker adds to (riff.counter); default this VM's alone. */
  counters?: SharedCounters;
  /**
   * Tests only: keep the real debug library and a copy of the standard
   * libraries as Lua first saw them, for inspect() (test/sandbox.test.ts).
   */
  inspectable?: boolean;
}

/**
 * riff.counter's numbers, shared by all workers: a name's slot is found by
 * its FNV-1a hash, claimed with compareExchange, so every worker agrees on
 * it without asking anyone; each worker publishes its own value per slot
 * at the end of every batch, and a total is the sum of the rows.
 */
export class SharedCounters {
  static readonly SLOTS = 1024;
  readonly ids: Int32Array;
  readonly values: Float64Array;
  constructor(
    readonly buffer: SharedArrayBuffer | ArrayBuffer = new ArrayBuffer(SharedCounters.bytes(1)),
    readonly workers = 1,
  ) {
    this.ids = new Int32Array(buffer, 0, SharedCounters.SLOTS);
    this.values = new Float64Array(buffer, SharedCounters.SLOTS * 4, SharedCounters.SLOTS * workers);
  }

  static bytes(workers: number): number {
    return SharedCounters.SLOTS * 4 + SharedCounters.SLOTS * 8 * workers;
  }

  /** The slot of a counter name (-1: all slots taken). */
  slot(name: Uint8Array): number {
    let h = 0x811c9dc5;
    for (const b of name) h = Math.imul(h ^ b, 0x01000193);
    const id = h | 1; // never 0, which means free
    for (let i = 0; i < SharedCounters.SLOTS; i++) {
      const at = ((h >>> 0) + i) % SharedCounters.SLOTS;
      const was = Atomics.compareExchange(this.ids, at, 0, id);
      if (was === 0 || was === id) return at;
    }
    return -1;
  }

  /** Sum of the other workers' published values. */
  others(slot: number, self: number): number {
    let sum = 0;
    for (let w = 0; w < this.workers; w++) if (w !== self) sum += this.values[w * SharedCounters.SLOTS + slot];
    return sum;
  }

  /** The whole run's value of a slot. */
  total(slot: number): number {
    let sum = 0;
    for (let w = 0; w < this.workers; w++) sum += this.values[w * SharedCounters.SLOTS + slot];
    return sum;
  }
}

/** What a script asks of the sharding among workers (Runtime.sharding). */
export interface Sharding {
  byService: boolean;
  overhear: number[];
}

export interface Summary {
  /** Packets handed to Lua (those that ended in an error included). */
  processed: number;
  /** All Lua errors: packets' and setup/deinit's. */
  errors: number;
  /** Packets whose trip through Lua ended in an error. */
  packetErrors: number;
  byScript: Map<string, number>;
}

/** Memory past --lua-memory that riff's own bookkeeping may use after a script's code filled the heap (host.headroom). */
const HEADROOM = 4 << 20;
/** riff's own chunks, never the position of a script's error. */
const RIFF_SOURCES = ['riff/driver.lua', 'riff/sandbox.lua'].map((f) => Buffer.from(`@${BUNDLED_LABEL}/${f}`));

/** Bad script: a one-line message for the user (syntax error, wrong shape...). */
export class ScriptError extends Error {}

export class Runtime {
  private api = new Map<string, number>();
  private tableRef = 0;
  private region: Ptr = 0;
  private regionSize = 0;
  private meta: Ptr = 0;
  private metaSize = 0;
  private readonly scriptDir: string | null;
  private readonly labels = new Map<string, string>(); // label shown to the user → real path
  stopRequested = false;
  private lastPacketErrors = 0;
  /** What a watchdog on another thread needs to see this VM's progress (and arm a lazy budget); null when its memory is not shared. */
  watch: WatchTarget | null = null;
  private block: Int32Array | null = null;
  /** The driver's budget hook, for host.adopt. */
  private hookRef = 0;
  /** inspectable: [real debug, originals, host, sandbox handles, driver api]. */
  private privileged: number[] | null = null;
  /** Where the heap cap last refused the script memory ("file:line"), until the driver takes it; null: unknown. */
  private refusal: Buffer | null = null;
  /** Whether where.ts names this VM's lines right (checked at boot). */
  private framesRead = false;
  /** The word where the driver notes the running coroutine (0: the main thread). */
  private threadSlot = 0;

  private constructor(
    readonly vm: LuaVM,
    readonly opts: RuntimeOptions,
  ) {
    this.scriptDir = opts.script ? path.dirname(path.resolve(opts.script)) : null;
  }

  /** A runtime in `vm` (fresh from LuaVM.create), or in a VM of its own. */
  static async create(opts: RuntimeOptions, vm?: LuaVM): Promise<Runtime> {
    vm ??= await LuaVM.create({ memoryLimit: 0 });
    vm.memoryLimit = opts.memoryLimit;
    const rt = new Runtime(vm, opts);
    rt.boot();
    return rt;
  }

  private boot(): void {
    const { vm } = this;
    const x = vm.x;
    const L = vm.L;
    this.framesRead = this.checkFrames();
    let originals: number[] = [];
    if (this.opts.inspectable) {
      vm.load(
        Buffer.from(`local o = {}
          for _, lib in ipairs { "_G", "string", "table", "math", "io", "os", "coroutine", "utf8", "debug", "package" } do
            local c = {} for k, v in pairs(_G[lib]) do c[k] = v end o[lib] = c
          end
          return debug, o`),
        '=originals',
      );
      vm.call(0, 2);
      originals = [vm.ref(), vm.ref()].reverse();
    }
    // host: the only doors from Lua to riff. Those a script's functions hold
    // (write, out_write, read, record, module, load, adopt, enter) take any
    // arguments: junk is a Lua error, never a crash.
    x.lua_createtable(L, 0, 4);
    vm.pushFunction((_, thread) => this.hostWrite(thread));
    x.lua_setfield(L, -2, vm.cstr('write'));
    vm.pushFunction((_, thread) => this.hostModule(thread));
    x.lua_setfield(L, -2, vm.cstr('module'));
    vm.pushFunction((_, thread) => this.hostRecord(thread));
    x.lua_setfield(L, -2, vm.cstr('record'));
    vm.pushFunction((_, thread) => this.hostRead(thread));
    x.lua_setfield(L, -2, vm.cstr('read'));
    vm.pushFunction((_, thread) => this.hostLoad(thread));
    x.lua_setfield(L, -2, vm.cstr('load'));
    vm.pushFunction((_, thread) => this.hostAdopt(thread));
    x.lua_setfield(L, -2, vm.cstr('adopt'));
    vm.pushFunction((_, thread) => this.hostQuicInitial(thread));
    x.lua_setfield(L, -2, vm.cstr('quic_initial'));
    vm.pushFunction((_, thread) => {
      x.lua_pushboolean(thread, this.opts.interrupted?.() ? 1 : 0);
      return 1;
    });
    x.lua_setfield(L, -2, vm.cstr('interrupted'));
    vm.pushBytes(Buffer.from(this.opts.version));
    x.lua_setfield(L, -2, vm.cstr('version'));
    const me = this.opts.worker ?? { index: 0, count: 1 };
    x.lua_pushinteger(L, BigInt(me.index + 1));
    x.lua_setfield(L, -2, vm.cstr('worker_index'));
    x.lua_pushinteger(L, BigInt(me.count));
    x.lua_setfield(L, -2, vm.cstr('worker_count'));
    const shared = this.opts.counters ?? new SharedCounters();
    vm.pushFunction((_, thread) => {
      const name = vm.viewBytes(1, thread);
      if (!name) throw new Error("bad argument #1 to 'riff.counter' (a name expected)");
      const slot = shared.slot(name);
      if (slot < 0) throw new Error(`riff.counter: all ${SharedCounters.SLOTS} counters are taken`);
      x.lua_pushnumber(thread, slot);
      return 1;
    });
    x.lua_setfield(L, -2, vm.cstr('counter_slot'));
    vm.pushFunction((_, thread) => {
      x.lua_pushnumber(thread, shared.others(x.lua_tonumberx(thread, 1, 0), me.index));
      return 1;
    });
    x.lua_setfield(L, -2, vm.cstr('counter_others'));
    vm.pushFunction((_, thread) => {
      const n = x.lua_gettop(thread);
      const row = me.index * SharedCounters.SLOTS;
      for (let i = 1; i + 1 <= n; i += 2) {
        const slot = x.lua_tonumberx(thread, i, 0);
        if (slot >= 0 && slot < SharedCounters.SLOTS) shared.values[row + slot] = x.lua_tonumberx(thread, i + 1, 0);
      }
      return 0;
    });
    x.lua_setfield(L, -2, vm.cstr('counter_publish'));
    // host.headroom(on): the driver's bookkeeping gets a fixed reserve past
    // the heap cap (a script that filled the heap costs its packet only);
    // inLua takes it back when the call into Lua returns.
    vm.pushFunction((_, thread) => {
      const cap = this.opts.memoryLimit;
      vm.memoryLimit = cap && x.lua_toboolean(thread, 1) ? cap + HEADROOM : cap;
      return 0;
    });
    x.lua_setfield(L, -2, vm.cstr('headroom'));
    // host.refused() -> "file:line" | nil: where the heap cap last refused
    // the script memory (the allocator notes it; Lua's "not enough memory"
    // carries no position). Taken once.
    vm.pushFunction((_, thread) => {
      const at = this.refusal;
      this.refusal = null;
      if (at) vm.pushBytes(at, thread);
      else x.lua_pushnil(thread);
      return 1;
    });
    x.lua_setfield(L, -2, vm.cstr('refused'));
    // host.enter(co): the driver's coroutine.resume notes the running
    // coroutine in the watch block (WebAssembly, no JS on the way), for the
    // watchdog and for the allocator's refusals.
    const block = new Int32Array(vm.wasm.memory.buffer, x.malloc(BLOCK_WORDS * 4), BLOCK_WORDS).fill(0);
    this.threadSlot = block.byteOffset + BLOCK_THREAD * 4;
    vm.bridge.slot.value = this.threadSlot;
    vm.onRefused = (ptr) => (this.refusal = this.refusedAt(ptr));
    vm.pushWasmFunction(vm.bridge.enter);
    x.lua_setfield(L, -2, vm.cstr('enter'));
    // host.out_write/out_pending/out_flush: stdout, buffered in WebAssembly.
    for (const name of ['out_write', 'out_pending', 'out_flush'] as const) {
      vm.pushWasmFunction(vm.bridge[name]);
      x.lua_setfield(L, -2, vm.cstr(name));
    }
    vm.onStdout = (bytes) => this.opts.write(1, bytes);
    const hostRef = vm.ref();

    vm.load(this.bundled('riff/sandbox.lua'), `@${BUNDLED_LABEL}/riff/sandbox.lua`);
    vm.pushRef(hostRef);
    vm.call(1, 1);
    const rtRef = vm.ref();

    vm.load(this.bundled('riff/driver.lua'), `@${BUNDLED_LABEL}/riff/driver.lua`);
    vm.pushRef(rtRef);
    vm.pushRef(hostRef);
    vm.call(2, 1);
    for (const name of ['open', 'config_filter', 'configure', 'lazy_budget', 'setup', 'deinit', 'handover', 'collect', 'report', 'note_per_worker', 'sharding', 'run_end', 'batch', 'summary', 'flush']) {
      x.lua_getfield(L, -1, vm.cstr(name));
      this.api.set(name, vm.ref());
    }
    x.lua_getfield(L, -1, vm.cstr('hook'));
    this.hookRef = vm.ref();
    const counters = this.driverCounters();
    if (this.opts.inspectable) this.privileged = [...originals, hostRef, rtRef, vm.ref()];
    else x.lua_settop(L, -2);
    x.lua_createtable(L, 1024, 0);
    this.tableRef = vm.ref();

    const o = this.opts;
    this.callApi('configure', () => {
      x.lua_pushboolean(L, o.quiet ? 1 : 0);
      x.lua_pushboolean(L, o.verbose ? 1 : 0);
      x.lua_pushboolean(L, o.strict ? 1 : 0);
      x.lua_pushnumber(L, o.budget);
      x.lua_pushnumber(L, o.setupBudget);
      return 5;
    });
    if (vm.wasm.memory.buffer instanceof SharedArrayBuffer) {
      this.block = block;
      this.watch = { memory: vm.wasm.memory, L, hook: 0, tick: 0, block: block.byteOffset, ...counters, out: vm.bridge.out.value };
      if (o.lazyBudget && o.budget > 0) this.lazyBudget();
    }
  }

  /**
   * where.ts reads frames by this build's layout: checked once by naming
   * the lines of a chunk's calls into JS, one of them past a jump of
   * over 127 lines (Lua keeps an absolute line there), as msgh would.
   */
  private checkFrames(): boolean {
    const { vm } = this;
    const got: string[] = [];
    vm.load(Buffer.from(`local probe = ...\nprobe()\n${'\n'.repeat(200)}probe()\n\nprobe()\n`), '=riff frames check');
    vm.pushFunction((_, thread) => {
      got.push(scriptLine(vm.wasm.memory.buffer, thread, 0, RIFF_SOURCES)?.toString('latin1') ?? '?');
      return 0;
    });
    vm.call(1, 0);
    return got.join(' ') === 'riff frames check:2 riff frames check:203 riff frames check:205';
  }

  /** The script's line as the allocator refuses growing block `ptr`: in the running coroutine, else the main thread. */
  private refusedAt(ptr: Ptr): Buffer | null {
    if (!this.framesRead) return null;
    const memory = this.vm.wasm.memory.buffer;
    const co = new Int32Array(memory, this.threadSlot, 1)[0];
    return (co && scriptLine(memory, co, ptr, RIFF_SOURCES)) || scriptLine(memory, this.vm.L, ptr, RIFF_SOURCES);
  }

  /**
   * Where the driver keeps `cur` (the packet running), `processed` and
   * `packet_errors`: the TValues of those upvalues of its api functions
   * (table on the stack top), so the watchdog reads a packet's progress
   * without Lua telling it. A closed upvalue keeps its value in the UpVal
   * itself (UpVal.v at offset 8 points there), and Lua never moves objects.
   * Zeros when a name is not found or does not read back as the integer 0.
   */
  private driverCounters(): { cur: number; processed: number; packetErrors: number } {
    const { vm } = this;
    const x = vm.x;
    const L = vm.L;
    const found = { cur: 0, processed: 0, packetErrors: 0 };
    if (!(vm.wasm.memory.buffer instanceof SharedArrayBuffer)) return found;
    const want: Record<string, keyof typeof found> = { cur: 'cur', processed: 'processed', packet_errors: 'packetErrors' };
    for (const fn of ['batch', 'summary']) {
      x.lua_getfield(L, -1, vm.cstr(fn));
      for (let n = 1; n < 256; n++) {
        const namep = x.lua_getupvalue(L, -1, n);
        if (!namep) break;
        x.lua_settop(L, -2);
        const heap = vm.wasm.heap();
        let e = namep;
        while (heap[e] && e - namep < 64) e++;
        const key = want[Buffer.from(heap.subarray(namep, e)).toString('latin1')];
        if (!key || found[key]) continue;
        const up = x.lua_upvalueid(L, -1, n);
        const dv = new DataView(vm.wasm.memory.buffer);
        const tv = up ? dv.getUint32(up + 8, true) : 0;
        if (tv && readLuaInt(dv, tv) === 0) found[key] = tv;
      }
      x.lua_settop(L, -2);
    }
    return found.cur && found.processed && found.packetErrors ? found : { cur: 0, processed: 0, packetErrors: 0 };
  }

  /**
   * Turn the lazy budget on if this VM's lua_State is laid out as the
   * watchdog expects: with a probe hook set, the hook's fields must read back
   * as lua_sethook wrote them. Otherwise the hook stays on in batches.
   */
  private lazyBudget(): void {
    const { vm } = this;
    const memory = vm.wasm.memory.buffer;
    const step = (s: string) => this.callApi('lazy_budget', () => (vm.pushBytes(Buffer.from(s)), 1));
    step('probe');
    const dv = new DataView(memory);
    const L = vm.L;
    const hook = dv.getInt32(L + LS.hook, true);
    const ok =
      hook !== 0 &&
      dv.getInt32(L + LS.basehookcount, true) === 0x3fffffff &&
      dv.getInt32(L + LS.hookmask, true) === 8 &&
      dv.getInt32(L + LS.ci, true) !== 0;
    step(ok ? 'on' : 'off');
    if (!ok) return;
    this.watch = { ...this.watch!, hook, tick: Math.min(this.opts.budget, 10000) };
  }

  private bundled(rel: string): Buffer {
    return fs.readFileSync(path.join(LUA_DIR, rel));
  }

  /** How a file is named in messages: relative to the working directory when inside it. */
  private label(real: string): string {
    const bundledRel = path.relative(LUA_DIR, real);
    let label: string;
    if (!bundledRel.startsWith('..') && !path.isAbsolute(bundledRel)) label = `${BUNDLED_LABEL}/${bundledRel}`;
    else {
      // Relative to the working directory when inside it, but never from /
      // itself: "tmp/orig/buffer.lua" reads as a typo of "/tmp/orig/...".
      const cwd = process.cwd();
      const rel = path.relative(cwd, real);
      label = rel.startsWith('..') || path.isAbsolute(rel) || cwd === path.parse(cwd).root ? real : rel;
    }
    this.labels.set(label, real);
    return label;
  }

  private callApi(name: string, pushArgs: () => number = () => 0, nresults = 0, phase = PHASE_SCRIPT): void {
    const ref = this.api.get(name)!;
    this.inLua(phase, () => {
      this.vm.pushRef(ref);
      const n = this.vm.unbounded(pushArgs);
      this.vm.call(n, nresults);
    });
  }

  /**
   * Run `fn`, which enters Lua, with the watch block saying so: the sequence
   * odd and the phase set, for the watchdog's wall-clock limit. The pushes
   * before the call are inside too (a collector step there runs finalizers).
   */
  private inLua<T>(phase: number, fn: () => T): T {
    const b = this.block;
    // A refusal of an earlier call (one a script caught) is not named for this one's errors.
    this.refusal = null;
    if (b) {
      Atomics.store(b, BLOCK_PHASE, phase);
      Atomics.add(b, BLOCK_SEQ, 1);
    }
    try {
      return fn();
    } finally {
      if (b) Atomics.add(b, BLOCK_SEQ, 1);
      // The cap as configured: a headroom the driver took is never left
      // lent past the call (an error between its on and off).
      this.vm.memoryLimit = this.opts.memoryLimit;
    }
  }

  // host.write(fd, bytes)
  private hostWrite(L: LuaState): number {
    const { vm } = this;
    const fd = vm.x.lua_tonumberx(L, 1, 0);
    const bytes = vm.viewBytes(2, L);
    if (bytes && bytes.length) this.opts.write(fd === 2 ? 2 : 1, bytes);
    return 0;
  }

  // host.record(bytes): riff.emit's encoding (lua/riff/record.lua). Checked
  // here, in the VM's thread, so that bytes that are not a record are this
  // call's Lua error instead of a decode error on the main thread.
  private hostRecord(L: LuaState): number {
    if (this.vm.x.lua_type(L, 1) !== LUA_TSTRING) throw new Error('host.record: a record (string) expected');
    const bytes = this.vm.toBytes(1, L)!;
    if (this.opts.record) {
      decodeRecord(bytes, 0);
      this.opts.record(bytes);
    }
    return 0;
  }

  // host.load(chunk, chunkname[, env]) -> function | nil, message: a text
  // chunk only (mode "t"), as lbaselib's load does it; sandbox.lua's load
  // joins a reader function's pieces first.
  private hostLoad(L: LuaState): number {
    const { vm } = this;
    const x = vm.x;
    const nargs = x.lua_gettop(L);
    if (x.lua_type(L, 1) !== LUA_TSTRING) throw new Error('load: the chunk must be a string');
    const chunk = vm.viewBytes(1, L)!;
    // Lua strings end in a NUL: their bytes serve as C strings in place.
    const name = x.lua_type(L, 2) === LUA_TSTRING ? vm.viewBytes(2, L)!.byteOffset : chunk.byteOffset;
    const rc = x.luaL_loadbufferx(L, chunk.byteOffset, chunk.length, name, vm.cstr('t'));
    if (rc !== LUA_OK) {
      x.lua_pushnil(L);
      x.lua_pushvalue(L, -2);
      return 2;
    }
    if (nargs >= 3) {
      x.lua_pushvalue(L, 3);
      if (!x.lua_setupvalue(L, -2, 1)) x.lua_settop(L, -2);
    }
    return 1;
  }

  // host.adopt(co) -> co: enter the budget's hook for a new coroutine in the
  // debug library's hook table (the hook, mask and count it got from its
  // creator with lua_newthread). Only ever adds the budget.
  private hostAdopt(L: LuaState): number {
    const { vm } = this;
    const x = vm.x;
    if (x.lua_type(L, 1) !== LUA_TTHREAD) throw new Error('adopt: a coroutine expected');
    x.lua_settop(L, 1);
    if (this.hookRef && x.lua_getfield(L, LUA_REGISTRYINDEX, vm.cstr('_HOOKKEY')) === LUA_TTABLE) {
      x.lua_pushvalue(L, 1);
      x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(this.hookRef));
      x.lua_rawset(L, -3);
    }
    x.lua_settop(L, 1);
    return 1;
  }

  /**
   * Tests only (inspectable): run `src` with riff's privileged objects as its
   * arguments (the real debug library, the standard libraries as first
   * loaded, host, the sandbox's handles, the driver's api); returns its
   * result as text.
   */
  inspect(src: string): string {
    if (!this.privileged) throw new Error('inspect() needs a runtime created with inspectable: true');
    const { vm } = this;
    vm.load(Buffer.from(src), '=inspect');
    for (const ref of this.privileged) vm.pushRef(ref);
    vm.unbounded(() => vm.call(this.privileged!.length, 1));
    const text = vm.toText(-1) ?? '';
    vm.x.lua_settop(vm.L, -2);
    return text;
  }

  // host.quic_initial(s, p, e[, dcid]) -> frames | nil, reason: the
  // plaintext of the QUIC client Initial at s[p..e] (RFC 9001 5), its keys
  // from dcid or the packet's own connection ID. Arguments are checked
  // (junk is a Lua error); the bytes are read in place, never as text.
  private hostQuicInitial(L: LuaState): number {
    const { vm } = this;
    const x = vm.x;
    if (x.lua_type(L, 1) !== LUA_TSTRING) throw new Error("bad argument #1 to 'quic_initial' (string expected)");
    if (x.lua_type(L, 2) !== LUA_TNUMBER || x.lua_type(L, 3) !== LUA_TNUMBER) throw new Error("bad arguments #2, #3 to 'quic_initial' (offsets expected)");
    const dtype = x.lua_type(L, 4);
    if (dtype !== LUA_TSTRING && dtype !== LUA_TNIL && dtype !== -1) throw new Error("bad argument #4 to 'quic_initial' (connection ID string or nil expected)");
    const p = x.lua_tonumberx(L, 2, 0), e = x.lua_tonumberx(L, 3, 0);
    const s = vm.viewBytes(1, L)!;
    if (!Number.isInteger(p) || !Number.isInteger(e) || p < 1 || e > s.length || e < p) throw new Error("bad offsets to 'quic_initial' (1 <= p <= e <= #s)");
    if (e - p + 1 > 65535) throw new Error("'quic_initial': at most 65535 bytes (one UDP datagram)");
    let dcid: Uint8Array | undefined;
    if (dtype === LUA_TSTRING) {
      dcid = Buffer.from(vm.viewBytes(4, L)!);
      if (dcid.length > 20) throw new Error("bad argument #4 to 'quic_initial' (a connection ID has at most 20 bytes)");
    }
    const r = openClientInitial(Buffer.from(s.subarray(p - 1, e)), dcid);
    if (typeof r === 'string') {
      x.lua_pushnil(L);
      vm.pushBytes(Buffer.from(r), L);
      return 2;
    }
    vm.pushBytes(r, L);
    return 1;
  }

  // host.read(relpath) -> bytes | nil, message: a data file (signatures,
  // lists) beside the script or in riff's lua/, under the same confinement
  // as require: relative paths only, no '..', no links leading out.
  private hostRead(L: LuaState): number {
    const { vm } = this;
    const rel = vm.toText(1, L) ?? '';
    const fail = (msg: string) => {
      vm.x.lua_pushnil(L);
      vm.pushBytes(Buffer.from(msg), L);
      return 2;
    };
    if (!rel || path.isAbsolute(rel) || rel.split(/[\\/]/).some((part) => part === '..' || part === '')) {
      return fail(`riff.read '${rel}': give a relative path inside the script's directory or riff's lua/ (no '..')`);
    }
    const roots = this.scriptDir ? [this.scriptDir, LUA_DIR] : [LUA_DIR];
    for (const root of roots) {
      let real: string;
      try {
        real = fs.realpathSync(path.join(root, rel));
      } catch {
        continue;
      }
      const within = path.relative(fs.realpathSync(root), real);
      if (within.startsWith('..') || path.isAbsolute(within)) return fail(`riff.read '${rel}': the file links outside its directory`);
      try {
        const st = fs.statSync(real);
        if (!st.isFile()) return fail(`riff.read '${rel}': not a file`);
        if (st.size > 64 << 20) return fail(`riff.read '${rel}': larger than 64 MiB`);
        vm.pushBytes(fs.readFileSync(real), L);
        return 1;
      } catch (e) {
        return fail(`riff.read '${rel}': ${(e as Error).message}`);
      }
    }
    return fail(`riff.read '${rel}': no such file beside the script or in riff's lua/`);
  }

  // host.module(name, requirer) -> source, label | nil, message
  private hostModule(L: LuaState): number {
    const { vm } = this;
    const name = vm.toText(1, L) ?? '';
    const requirer = vm.toText(2, L);
    const fail = (msg: string) => {
      vm.x.lua_pushnil(L);
      vm.pushBytes(Buffer.from(msg), L);
      return 2;
    };
    if (!/^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$/.test(name)) {
      return fail(`module '${name}' not found: require takes a dotted name (a.b.c), resolved only inside the script's directory and riff's lua/`);
    }
    const exclude = requirer ? this.labels.get(requirer) ?? path.resolve(requirer) : null;
    const rel = name.split('.').join(path.sep);
    // riff.* is riff's own namespace (riff.record encodes every record
    // riff.emit hands over, and the driver requires it before any script
    // runs): found only in riff's lua/, never in a script's directory.
    const roots = this.scriptDir && !name.startsWith('riff.') ? [this.scriptDir, LUA_DIR] : [LUA_DIR];
    const tried: string[] = [];
    for (const root of roots) {
      for (const cand of [path.join(root, rel + '.lua'), path.join(root, rel, 'init.lua')]) {
        let real: string;
        try {
          real = fs.realpathSync(cand);
        } catch {
          tried.push(this.label(cand));
          continue;
        }
        if (real === exclude) continue;
        // riff's own Lua is loaded once, by riff, with its privileges; run
        // again by a script it would only undo the sandbox.
        const own = path.join(fs.realpathSync(LUA_DIR), 'riff');
        if (real === path.join(own, 'driver.lua') || real === path.join(own, 'sandbox.lua')) {
          return fail(`module '${name}' is riff's own, not a module a script can load`);
        }
        // A symlink must not lead out of the root it was found in.
        const within = path.relative(fs.realpathSync(root), real);
        if (within.startsWith('..') || path.isAbsolute(within)) {
          tried.push(`${this.label(cand)} (links outside its directory)`);
          continue;
        }
        let src: Buffer;
        try {
          src = fs.readFileSync(real);
        } catch (e) {
          return fail(`module '${name}': cannot read ${this.label(real)}: ${(e as Error).message}`);
        }
        vm.pushBytes(src, L);
        vm.pushBytes(Buffer.from(this.label(real)), L);
        return 2;
      }
    }
    return fail(`module '${name}' not found (riff looks only in the script's directory and riff's lua/):\n\tno file ${tried.join('\n\tno file ')}`);
  }

  /** What config.lua beside the script says: its format() filter and outputs() specs. */
  config(): { filter: string | null; outputs: string[] } {
    if (!this.scriptDir) return { filter: null, outputs: [] };
    const file = path.join(this.scriptDir, 'config.lua');
    if (!fs.existsSync(file)) return { filter: null, outputs: [] };
    const label = this.label(file);
    try {
      this.callApi(
        'config_filter',
        () => {
          this.vm.pushBytes(fs.readFileSync(file));
          this.vm.pushBytes(Buffer.from('@' + label));
          return 2;
        },
        2,
      );
    } catch (e) {
      if (e instanceof LuaError) throw new ScriptError(e.message);
      throw e;
    }
    const filter = this.vm.toText(-2);
    const outputs = (this.vm.toText(-1) ?? '').split('\n').filter(Boolean);
    this.vm.x.lua_settop(this.vm.L, -3);
    return { filter, outputs };
  }

  /** Load the script and apply the entry rules; returns the rule's name. */
  open(): string {
    const { vm } = this;
    const script = this.opts.script;
    try {
      this.callApi(
        'open',
        () => {
          if (!script) return 0;
          const real = path.resolve(script);
          const label = this.label(real);
          vm.pushBytes(fs.readFileSync(real));
          vm.pushBytes(Buffer.from('@' + label));
          vm.pushBytes(Buffer.from(label));
          vm.pushBytes(Buffer.from(script));
          return 4;
        },
        1,
      );
    } catch (e) {
      if (e instanceof LuaError) throw new ScriptError(e.message);
      throw e;
    }
    const rule = vm.toText(-1) ?? '?';
    vm.x.lua_settop(vm.L, -2);
    return rule;
  }

  /**
   * How the script wants packets shared out among workers (README: One
   * answer from N workers): by flow or by service (riff.shard), and the
   * TCP/UDP ports whose packets its overhear phase wants from every
   * worker's share. Call after open().
   */
  sharding(): Sharding {
    this.callApi('sharding', () => 0, 1);
    const [by, ports = ''] = (this.vm.toText(-1) ?? '').split('\t');
    this.vm.x.lua_settop(this.vm.L, -2);
    const overhear = ports.split(',').filter(Boolean).map(Number);
    this.overhearing = (this.opts.worker?.count ?? 1) > 1 && overhear.length > 0;
    return { byService: by === 'service', overhear };
  }

  /** Where the whole run ended (several workers), before deinit: riff.run_end() in Lua. */
  runEnd(end: RunEnd): void {
    const x = this.vm.x;
    const L = this.vm.L;
    this.callApi('run_end', () => {
      for (const t of [end.last, end.flow]) {
        if (t) {
          x.lua_pushnumber(L, t[0]);
          x.lua_pushnumber(L, t[1]);
        } else {
          x.lua_pushnumber(L, -1);
          x.lua_pushnumber(L, -1);
        }
      }
      return 4;
    });
  }

  /** Batches may hold FLAG_OVERHEARD packets: process() lists them for the driver. */
  private overhearing = false;

  /** Positions (1-based, among the packets fill() hands to Lua) of the batch's overheard packets, as u32s; null for none. */
  private overheard(batch: Batch, heap: Uint8Array, base: number): Buffer | null {
    const d = new DataView(heap.buffer, heap.byteOffset + base, batch.bytes);
    const at: number[] = [];
    for (let i = 0, o = 0, k = 0; i < batch.count; i++) {
      const f = d.getUint32(o + 28, true);
      if (!(f & (FLAG_FILTERED_OUT | FLAG_ELSEWHERE))) {
        k++;
        if (f & FLAG_OVERHEARD) at.push(k);
      }
      o += HDR + align8(d.getUint32(o + 12, true));
    }
    return at.length ? Buffer.from(new Uint32Array(at).buffer) : null;
  }

  /** False when the script's setup raised (reported already): a reload keeps the old script then. */
  setup(): boolean {
    this.callApi('setup', () => 0, 1);
    const ok = this.vm.x.lua_toboolean(this.vm.L, -1) !== 0;
    this.vm.x.lua_settop(this.vm.L, -2);
    return ok;
  }

  /**
   * Run the script's deinit. `reloading`: what it returns is serialised
   * (Lua source text, as collect() states) for the next script's handover.
   */
  deinit(reloading = false): Buffer | null {
    this.callApi('deinit', () => (this.vm.x.lua_pushboolean(this.vm.L, reloading ? 1 : 0), 1), 1, PHASE_DEINIT);
    const state = this.vm.toBytes(-1);
    this.vm.x.lua_settop(this.vm.L, -2);
    return state;
  }

  /** Give the old script's hand-over (from deinit(true)) to this script's handover(state). */
  handover(state: Uint8Array): void {
    this.callApi('handover', () => (this.vm.pushBytes(state), 1));
  }

  /** This worker's state for the whole run's report (Lua source text), or null when the script has no report. */
  collect(): Buffer | null {
    // The end of the run, as deinit (watchdog.ts graceAfterSignal).
    this.callApi('collect', () => 0, 1, PHASE_DEINIT);
    const state = this.vm.toBytes(-1);
    this.vm.x.lua_settop(this.vm.L, -2);
    return state;
  }

  /** Merge every worker's collected state, in worker order, and run the script's report once. */
  report(states: Uint8Array[]): void {
    const parts: Uint8Array[] = [Buffer.from('{')];
    for (const st of states) parts.push(st, Buffer.from(','));
    parts.push(Buffer.from('}'));
    this.callApi('report', () => {
      this.vm.pushBytes(Buffer.concat(parts));
      this.vm.x.lua_pushnumber(this.vm.L, states.length);
      return 2;
    }, 0, PHASE_DEINIT);
  }

  /** With several workers, say once if the script's totals would be per worker. */
  notePerWorker(): void {
    this.callApi('note_per_worker');
  }

  /**
   * Run one batch through Lua. Packets the filter marked are skipped here.
   * `at`: the batch's address when it already lies in this VM's memory (a
   * worker's ring); otherwise it is copied in first.
   * Returns how many packets Lua processed (fewer than passed when --strict stopped it).
   */
  process(batch: Batch, at?: Ptr): number {
    const { vm } = this;
    const x = vm.x;
    const L = vm.L;
    let base: Ptr;
    if (at === undefined) {
      base = this.region = this.grown(this.region, batch.bytes, 'regionSize');
      vm.wasm.heap().set(batch.buf.subarray(0, batch.bytes), base);
    } else base = at;
    const metaBase = (this.meta = this.grown(this.meta, batch.count * HDR, 'metaSize'));
    const b = this.block;
    if (b) {
      // Where the pool finds the batch (and the packet a stuck VM was on) if it must end this VM.
      b[BLOCK_META] = metaBase;
      b[BLOCK_BASE] = base;
      b[BLOCK_COUNT] = batch.count;
    }
    let n = 0;
    let over = null as Buffer | null;
    const ran = this.inLua(PHASE_BATCH, () => {
      vm.pushRef(this.api.get('batch')!);
      vm.unbounded(() => {
        x.lua_rawgeti(L, LUA_REGISTRYINDEX, BigInt(this.tableRef));
        n = vm.bridge.fill(L, base, batch.count, metaBase);
        x.lua_pushlstring(L, metaBase, n * HDR);
        x.lua_pushnumber(L, n);
        return 0;
      });
      if (n === 0) {
        x.lua_settop(L, -5);
        return false;
      }
      over = this.overhearing ? this.overheard(batch, vm.wasm.heap(), base) : null;
      if (over) vm.pushBytes(over);
      vm.call(over ? 4 : 3, 2);
      return true;
    });
    if (!ran) return 0;
    const done = x.lua_tonumberx(L, -2, 0);
    this.lastPacketErrors = x.lua_tonumberx(L, -1, 0);
    x.lua_settop(L, -3);
    if (done < n) this.stopRequested = true;
    // Packets only overheard (another worker's flow) are not this worker's to count.
    if (over) {
      const pos = new Uint32Array(over.buffer, over.byteOffset, over.length / 4);
      let heard = 0;
      for (const p of pos) if (p <= done) heard++;
      return done - heard;
    }
    return done;
  }

  /** A block of WebAssembly memory of at least `need` bytes: `p`, or a larger one in its place. */
  private grown(p: Ptr, need: number, size: 'regionSize' | 'metaSize'): Ptr {
    if (need <= this[size] && p) return p;
    const x = this.vm.x;
    if (p) x.free(p);
    this[size] = Math.max(need, this[size] * 2, 1 << 16);
    const q = x.malloc(this[size]);
    if (!q) throw new Error('out of WebAssembly memory for a packet batch');
    return q;
  }

  /** Packets that ended in a Lua error so far. */
  packetErrors(): number {
    return this.lastPacketErrors;
  }

  summary(): Summary {
    this.callApi('summary', () => 0, 1, PHASE_DEINIT);
    const text = this.vm.toText(-1) ?? '0\t0';
    this.vm.x.lua_settop(this.vm.L, -2);
    const [head, ...rest] = text.split('\n');
    const [processed, errors, packetErrors] = head.split('\t').map(Number);
    const byScript = new Map<string, number>();
    for (const line of rest) {
      const i = line.lastIndexOf('\t');
      byScript.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
    return { processed, errors, packetErrors, byScript };
  }

  /** Bytes the Lua heap holds now. */
  memoryUsed(): number {
    return this.vm.memoryUsed;
  }
}
