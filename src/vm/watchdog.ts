// The instruction budget's watchdog. Lua 5.4 runs its count hook's check on
// every instruction while the hook is set (a fifth of an empty pipeline's
// time, a seventh of the seed's), so in a worker the hook stays off and this
// watchdog, on the capture thread, turns it on in a VM that has been inside
// one batch for a while: a plugin that loops still meets its budget, counted
// from then, and a Ctrl-C still reaches a long packet.
//
// The VM's memory is shared (src/vm/wasm.ts), so arming is a few stores into
// its lua_State, what lua_sethook does, and what Lua's own lua.c does from a
// signal handler: hook, counts and mask, then the trap flag of every Lua frame
// on the thread's call chain so a running loop sees it at its next jump.
// Both the main thread and the coroutine running now (noted by the driver's
// coroutine.resume) are armed.
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
  /** lua_Hook to install: the debug library's hookf, which calls the driver's Lua hook. */
  hook: number;
  /** Instructions between hook calls (the driver's TICK). */
  tick: number;
  /** Int32 words in the VM's memory: [batch sequence (odd while in a batch), running coroutine or 0]. */
  block: number;
}

export const BLOCK_SEQ = 0;
export const BLOCK_THREAD = 1;

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

interface Watched {
  t: WatchTarget;
  i32: Int32Array;
  dv: DataView;
  last: number;
}

function views(w: Watched): void {
  const buf = w.t.memory.buffer;
  if (buf.byteLength !== w.dv.byteLength) {
    w.i32 = new Int32Array(buf);
    w.dv = new DataView(buf);
  }
}

export class Watchdog {
  private readonly watched: Watched[];
  private timer: ReturnType<typeof setInterval> | null = null;
  private urgent = false;

  constructor(readonly targets: WatchTarget[]) {
    this.watched = targets.map((t) => ({ t, i32: new Int32Array(t.memory.buffer), dv: new DataView(t.memory.buffer), last: -1 }));
  }

  /**
   * Look at every VM: one seen in the same batch as at the last look (or in
   * any batch after hurry()) gets its hook armed. Called from a timer and
   * from the capture thread's waits on a full ring.
   */
  check(): void {
    for (const w of this.watched) {
      const seq = Atomics.load(w.i32, (w.t.block >> 2) + BLOCK_SEQ);
      if (seq & 1 && (seq === w.last || this.urgent)) {
        views(w);
        armHook(w.i32, w.dv, w.t.L, w.t.hook, w.t.tick);
        const co = Atomics.load(w.i32, (w.t.block >> 2) + BLOCK_THREAD);
        if (co) armHook(w.i32, w.dv, co, w.t.hook, w.t.tick);
      }
      w.last = seq;
    }
  }

  /** Ctrl-C: arm every VM that is inside a batch now, so a long packet hears it. */
  hurry(): void {
    this.urgent = true;
    this.check();
  }

  start(everyMs = 20): void {
    if (this.timer || !this.watched.length) return;
    this.timer = setInterval(() => this.check(), everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
