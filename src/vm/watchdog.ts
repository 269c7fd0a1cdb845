// The instruction budget's watchdog. Lua 5.4 runs its count hook's check on
// every instruction while the hook is set (a fifth of an empty pipeline's
// time, a seventh of the seed's), so in a worker the hook stays off and this
// watchdog, on the capture thread, turns it on in a VM that has been on one
// packet for a while: a plugin that loops still meets its budget, counted
// from then, and a Ctrl-C still reaches a long packet. One packet, not one
// batch: a batch (up to 1 MiB of packets) of a pipeline that does real work
// per packet, or on a busy machine, lasts longer than two looks, and arming
// it then taxed every packet after (half the traffic pipeline's batches).
//
// The VM's memory is shared (src/vm/wasm.ts), so arming is a few stores into
// its lua_State, what lua_sethook does, and what Lua's own lua.c does from a
// signal handler: hook, counts and mask, then the trap flag of every Lua frame
// on the thread's call chain so a running loop sees it at its next jump.
// Both the main thread and the coroutine running now (noted by the driver's
// coroutine.resume) are armed.
//
// It is also riff's hard limit, the one that needs nothing from Lua: a VM
// whose progress mark (batch sequence, packet index) has not moved for the
// wall-clock limit is reported stuck, and the pool ends its worker. A long C
// call (a backtracking pattern, string.rep in a loop) never reaches the hook,
// a finalizer runs with hooks off, and a plugin may have cleared the hook:
// none of that moves the mark. The packet index is the driver's `cur`,
// read where its upvalue lives in the VM's memory, so watching costs Lua
// nothing per packet.
import type { WasmMemory } from './wasm.js';

/** lua_State and CallInfo offsets in wasmoon's 32-bit Lua 5.4 build; Runtime checks them once per VM. */
export const LS = { ci: 20, hook: 88, basehookcount: 104, hookcount: 108, hookmask: 112 } as const;
const CI = { previous: 8, trap: 20, callstatus: 34 } as const;
const LUA_MASKCOUNT = 8;
const CIST_C = 1 << 1;

/** What the watchdog needs to reach one VM. */
export interface WatchTarget {
  /**
   * The VM's WebAssembly memory (shared). The memory itself, not its buffer:
   * a buffer keeps the length memory had when it was taken, and frames and
   * coroutines allocated after the heap grew lie beyond it.
   */
  memory: WasmMemory;
  /** The main lua_State. */
  L: number;
  /** lua_Hook to install (0: the budget is not lazy, nothing to arm): the debug library's hookf, which calls the driver's Lua hook. */
  hook: number;
  /** Instructions between hook calls (the driver's TICK). */
  tick: number;
  /** Int32 words in the VM's memory, BLOCK_* below. */
  block: number;
  /** Addresses of the driver's counters (TValues of its upvalues `cur`, `processed`, `packet_errors`); 0 when not found. */
  cur: number;
  processed: number;
  packetErrors: number;
  /** The VM's stdout buffer (bridge.wat): its bytes from here, their count in the word below; 0 or absent: none. */
  out?: number;
}

// The watch block, written by the runtime (and the bridge's enter) in the VM's memory.
/** Bumped on entering and leaving Lua: odd while Lua runs on riff's behalf. */
export const BLOCK_SEQ = 0;
/** The running coroutine (bridge.enter), or 0. */
export const BLOCK_THREAD = 1;
/** What Lua is doing while SEQ is odd: PHASE_BATCH or PHASE_SCRIPT. */
export const BLOCK_PHASE = 2;
/** The batch's header copies (40 bytes a packet handed to Lua) and its records and record count. */
export const BLOCK_META = 3;
export const BLOCK_BASE = 4;
export const BLOCK_COUNT = 5;
/** Non-zero while the worker writes output (a paused reader is not Lua's time); changes with every write that took bytes. */
export const BLOCK_OUTPUT = 6;
export const BLOCK_WORDS = 8;
/**
 * The driver's `cur` (the packet running, 1-based) below zero: a finalizer
 * pass, one step for the whole pass; the batch's packets all counted
 * processed, riff finishing the batch (its output); lua/riff/driver.lua.
 */
export const CUR_GC = -2;
export const CUR_HANDED = -3;
/** Running a batch of packets. */
export const PHASE_BATCH = 1;
/** Loading the script, setup, or riff's own calls. */
export const PHASE_SCRIPT = 2;
/** The script's deinit. */
export const PHASE_DEINIT = 3;

/** lua_sethook(L, hook, LUA_MASKCOUNT, tick), written from outside the VM. */
export function armHook(i32: Int32Array, dv: DataView, L: number, hook: number, tick: number): void {
  if (!L || L + LS.hookmask + 4 > dv.byteLength) return;
  if (Atomics.load(i32, (L + LS.hookmask) >> 2) === 0) {
    Atomics.store(i32, (L + LS.hook) >> 2, hook);
    Atomics.store(i32, (L + LS.basehookcount) >> 2, tick);
    Atomics.store(i32, (L + LS.hookcount) >> 2, tick);
    Atomics.store(i32, (L + LS.hookmask) >> 2, LUA_MASKCOUNT);
  }
  // A frame's trap is what luaV_execute re-reads at jumps and calls. Frames
  // below the running one stay allocated while they are on the chain; the
  // walk is bounded in case the chain moves under it.
  let ci = Atomics.load(i32, (L + LS.ci) >> 2);
  for (let depth = 0; ci && ci + 36 <= dv.byteLength && depth < 256; depth++) {
    if (!(dv.getUint16(ci + CI.callstatus, true) & CIST_C)) Atomics.store(i32, (ci + CI.trap) >> 2, 1);
    ci = Atomics.load(i32, (ci + CI.previous) >> 2);
  }
}

/** An integer Lua value at `addr` (a TValue: 8 bytes of value, then its type tag); -1 when it is not one. */
export function readLuaInt(dv: DataView, addr: number): number {
  if (!addr || addr + 9 > dv.byteLength) return -1;
  const tag = dv.getUint8(addr + 8);
  if (tag === LUA_VNUMINT) return dv.getInt32(addr, true);
  if (tag === LUA_VNUMFLT) return dv.getFloat64(addr, true);
  return -1;
}
const LUA_VNUMINT = 3;
const LUA_VNUMFLT = 3 | (1 << 4);

/** Where a watched VM was when it stopped moving. */
export interface Stuck {
  phase: number;
  /** Index of the packet in its batch (1-based, among those handed to Lua), 0 when not in a batch or unknown. */
  cur: number;
  /** How long it has not moved, ms. */
  ms: number;
  /** The limit it was held to, ms. */
  limitMs: number;
  /** After SIGTERM: it was waiting to write output that did not move for its grace (a reader that stopped, or reads less than a piece a second). */
  writing?: boolean;
}

interface Watched {
  t: WatchTarget;
  i32: Int32Array;
  dv: DataView;
  /** Batch sequence and packet index at the last look (arming). */
  last: number;
  lastCur: number;
  /** The progress mark and since when it has not moved. */
  mark: number;
  markCur: number;
  since: number;
  /** The batch sequence (odd: in Lua) and since when it has been that: how long this stay in Lua has lasted, progress or not. */
  entrySeq: number;
  entered: number;
  /** BLOCK_OUTPUT at the last look: while output is written it changes with every write that took bytes. */
  lastOut: number;
  /** Reported stuck: not looked at again. */
  gone: boolean;
}

function views(w: Watched): void {
  const buf = w.t.memory.buffer;
  if (buf.byteLength !== w.dv.byteLength) {
    w.i32 = new Int32Array(buf);
    w.dv = new DataView(buf);
  }
}

export interface Limits {
  /** Wall-clock ms one packet may take (0: no limit). */
  packetMs: number;
  /** Wall-clock ms loading the script, setup or deinit may take (0: no limit). */
  scriptMs: number;
}

/**
 * How long a VM may stay in Lua once riff has been told to stop: a packet a
 * second (as before); loading the script and setup a second too (nothing
 * is lost by ending them); the end of the run (deinit, collect, report:
 * the script's report), ten seconds from the signal in all (or
 * --lua-timeout's own limit, if shorter).
 */
export function graceAfterSignal(phase: number, scriptMs: number): number {
  if (phase === PHASE_DEINIT) return Math.min(scriptMs || 10_000, 10_000);
  return 1000;
}

export class Watchdog {
  /** By key; a VM no longer watched leaves (keys grow with every restart and reload). */
  private readonly watched = new Map<number, Watched>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private urgent = false;
  /** After SIGTERM: output that does not move is no longer exempt (hurry()). */
  private stalls = false;
  /** When hurry() was called: after it, a stay in Lua is timed from the later of its start and this. */
  private hurriedAt = 0;

  /** `onStuck(i, where)`: target i has not moved for its limit; it is not watched again until replaced. */
  constructor(
    targets: WatchTarget[],
    private readonly limits: Limits = { packetMs: 0, scriptMs: 0 },
    private readonly onStuck: (i: number, where: Stuck) => void = () => {},
  ) {
    targets.forEach((t, i) => this.replace(i, t));
  }

  /** Watch `t` as target i (a restarted worker's VM), or stop watching i (null). */
  replace(i: number, t: WatchTarget | null): void {
    if (!t) {
      this.watched.delete(i);
      return;
    }
    this.watched.set(i, {
      t,
      i32: new Int32Array(t.memory.buffer),
      dv: new DataView(t.memory.buffer),
      last: -1,
      lastCur: -1,
      mark: -1,
      markCur: -1,
      since: performance.now(),
      entrySeq: -1,
      entered: performance.now(),
      lastOut: 0,
      gone: false,
    });
  }

  /**
   * Look at every VM: one seen on the same packet of the same batch as at the
   * last look (or in any batch after hurry()) gets its hook armed; one that
   * has not moved for its limit is reported stuck. Called from a timer.
   */
  check(): void {
    const now = performance.now();
    for (const [i, w] of this.watched) {
      if (w.gone) continue;
      const base = w.t.block >> 2;
      const seq = Atomics.load(w.i32, base + BLOCK_SEQ);
      const phase = Atomics.load(w.i32, base + BLOCK_PHASE);
      const inBatch = seq & 1 && phase === PHASE_BATCH;
      let at = -1;
      if (inBatch) {
        views(w);
        at = readLuaInt(w.dv, w.t.cur); // -1 (unknown) at both looks: armed per batch, as without it
      }
      if (inBatch && w.t.hook && ((seq === w.last && at === w.lastCur) || this.urgent)) {
        armHook(w.i32, w.dv, w.t.L, w.t.hook, w.t.tick);
        const co = Atomics.load(w.i32, base + BLOCK_THREAD);
        if (co) armHook(w.i32, w.dv, co, w.t.hook, w.t.tick);
      }
      w.last = seq;
      w.lastCur = at;
      const out = Atomics.load(w.i32, base + BLOCK_OUTPUT);
      const writing = out !== 0;
      // Output that moves is the reader's pace, never the script's. After
      // SIGTERM, output that has not moved is a reader that stopped reading:
      // it holds riff no longer than Lua would (its grace).
      const outMoved = out !== w.lastOut;
      w.lastOut = out;
      if (seq !== w.entrySeq || (writing && (outMoved || !this.stalls))) {
        w.entrySeq = seq;
        w.entered = now;
      }
      // After a signal the user is waiting: a VM still in Lua after its
      // grace (from the later of the signal and its entry) is ended, however
      // it moves: a chain of finalizers, or a packet whose error handling
      // loops, each step progress, must not hold riff past SIGTERM.
      // After Ctrl-C a VM waiting on its reader waits (riff | less): the
      // user is there to press it again.
      if (this.urgent && seq & 1 && !(writing && !this.stalls)) {
        const grace = graceAfterSignal(phase, this.limits.scriptMs);
        // The end of the run (deinit, collect, report, each its own entry
        // into Lua, and a reload's retiring VMs before the new ones) shares
        // one grace, counted from the signal; a packet, loading or setup
        // gets its own from its entry.
        const ms = now - (phase === PHASE_DEINIT ? this.hurriedAt : Math.max(w.entered, this.hurriedAt));
        if (ms > grace) {
          w.gone = true;
          views(w);
          this.onStuck(i, { phase, cur: phase === PHASE_BATCH ? Math.max(readLuaInt(w.dv, w.t.cur), 0) : 0, ms, limitMs: grace, writing });
          continue;
        }
      }
      const limit = phase === PHASE_BATCH ? this.limits.packetMs : this.limits.scriptMs;
      if (!(seq & 1) || !limit) {
        w.mark = -1;
        continue;
      }
      views(w);
      const cur = readLuaInt(w.dv, w.t.cur);
      if (seq !== w.mark || cur !== w.markCur || writing) {
        w.mark = seq;
        w.markCur = cur;
        w.since = now;
      } else if (now - w.since > limit) {
        w.gone = true;
        this.onStuck(i, { phase, cur: phase === PHASE_BATCH ? Math.max(cur, 0) : 0, ms: now - w.since, limitMs: limit });
      }
    }
  }

  /**
   * Ctrl-C or SIGTERM: arm every VM that is inside a batch now, so a long
   * packet hears it; from here each stay in Lua has its graceAfterSignal.
   * `stalls` (SIGTERM): output that does not move counts as Lua's time too.
   */
  hurry(stalls = false): void {
    if (!this.urgent) this.hurriedAt = performance.now();
    this.stalls ||= stalls;
    // From here check() gives each VM its graceAfterSignal, whatever its progress.
    this.urgent = true;
    this.check();
  }

  start(everyMs = 20): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
