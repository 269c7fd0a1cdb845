// The capture thread's side of the Lua workers: start them, feed their
// rings (sharding by flow when there are several), collect their counters,
// and end and replace a worker whose VM does not come back in time or dies.
import { Worker } from 'node:worker_threads';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FLAG_ELSEWHERE, FLAG_FILTERED_OUT, FLAG_OVERHEARD, HDR, align8, countPassed, clockOf, Batch } from '../capture/batch.js';
import { BROADCAST, jsSharding, type Sharding } from '../capture/flow.js';
import { nativeOrNull } from '../capture/native.js';
import { newRingControl, RingProducer, type RunEnd } from './ring.js';
import type { RuntimeOptions } from './runtime.js';
import { ScriptError, SharedCounters, type Summary } from './runtime.js';
import type { PoolMessage, WorkerInit, WorkerMessage } from './worker.js';
import { early, holdYoungGeneration, OWN_STDIO, sendModule, WORKER_URL, workerLimits } from './prestart.js';
import { warmUp } from './vm.js';
import { cachedLua } from './wasm.js';
import { stderr, stdout } from '../outputs/fd-sink.js';
import {
  BLOCK_BASE,
  BLOCK_COUNT,
  BLOCK_META,
  BLOCK_PHASE,
  BLOCK_SEQ,
  CUR_GC,
  CUR_HANDED,
  PHASE_BATCH,
  PHASE_DEINIT,
  readLuaInt,
  Watchdog,
  type Stuck,
  type WatchTarget,
} from './watchdog.js';

export type Ready = Extract<WorkerMessage, { type: 'ready' }>;
type Done = Extract<WorkerMessage, { type: 'done' }>;
const NO_COUNTS: Done = { type: 'done', processed: 0, errors: 0, hookErrors: 0, byScript: [] };

/**
 * Which worker merges the collected states and runs the script's report
 * (-1: none). The first that collected one and is still running: worker 1,
 * unless it was ended or its collect failed. A report that lacks a worker's
 * share (ended by the watchdog, its collect failed) would print part of the
 * run as if it were all of it: it runs over the shares there are, and one
 * line says whose are missing.
 */
function whoReports(lives: Incarnation[], states: (Uint8Array | null)[]): number {
  if (!states.some((st) => st !== null)) return -1; // no report in the script (or no worker left to say)
  const missing = states.flatMap((st, i) => (st === null || st.length === 0 ? [`worker ${i + 1} (${st === null ? 'ended' : 'its collect failed'})`] : []));
  const reporter = states.findIndex((st, i) => st !== null && st.length > 0 && !lives[i].over);
  if (reporter < 0) stderr.text(`riff: report not run: no worker has a state to report (${missing.join(', ')})\n`);
  else if (missing.length)
    stderr.text(`riff: the report covers ${states.length - missing.length} of ${states.length} workers: ${missing.join(', ')} left out, and what they saw is not in it\n`);
  return reporter;
}

/** Records worker w owns in a shard plan (not the copies it only overhears). */
function countShard(shards: Uint8Array, count: number, w: number): number {
  let k = 0;
  for (let i = 0; i < count; i++) if (shards[i] !== 255 && (shards[i] & ~BROADCAST) === w) k++;
  return k;
}

/** Copies worker w only overhears (another worker's flow) in a shard plan. */
function countHeard(shards: Uint8Array, count: number, w: number): number {
  let k = 0;
  for (let i = 0; i < count; i++) if (shards[i] !== 255 && shards[i] & BROADCAST && (shards[i] & ~BROADCAST) !== w) k++;
  return k;
}

/** The ports a script overhears (its Ready message) as shardPlan's bitmap; null for none. */
function portBitmap(ports: number[]): Uint8Array | null {
  if (!ports.length) return null;
  const m = new Uint8Array(8192);
  for (const p of ports) if (Number.isInteger(p) && p >= 0 && p < 65536) m[p >> 3] |= 1 << (p & 7);
  return m;
}

export interface PoolOptions {
  workers: number;
  runtime: Omit<RuntimeOptions, 'write' | 'record'>;
  outFd: 1 | 2;
  /** Called once the workers are spawned and watched, before the script has loaded: a signal from then on can stop it. */
  onStarting?: (pool: LuaPool) => void;
  ringBytes: number;
  /** Wall-clock limits (src/vm/watchdog.ts); 0 = none. */
  limits: { packetMs: number; scriptMs: number };
  /** A worker asks to stop: --strict hit an error, stdout closed, or the script's output failed (`message`: the line to print); or a worker was lost for good. */
  onStop(why: string, message?: string): void;
  /** One line about a worker that was ended or died (printed by the caller). */
  onNote(line: string): void;
  onRecord?(bytes: Uint8Array, at: number): void;
}

interface Incarnation {
  worker: Worker;
  /** Its key in the watchdog: a retired VM (reload) is watched beside its successor. */
  id: number;
  ctrl: SharedArrayBuffer;
  index: number;
  /** [packets handed to Lua, packet errors] at index*2, written by this worker alone. */
  counters: Float64Array;
  /** [bytes its Lua heap holds, bytes its thread's JS heap holds], as of its last batch. */
  heap: Float64Array;
  /** Set when its ring is closed for a reload: its deinit's return is then the hand-over. */
  retiring: Int32Array;
  /** Its ring once ready (kept for a retired VM, whose queue it still drains). */
  ring: RingProducer | null;
  /** What its deinit handed over (reload), once collected. */
  handover: Uint8Array | null;
  ready: Promise<Ready>;
  done: Promise<Done>;
  /** The worker's state for the whole run's report (null: the script has none, or the worker is gone or was ended; empty: its collect failed). */
  collected: Promise<Uint8Array | null>;
  resolveCollected(state: Uint8Array | null): void;
  /** Set once the VM is made: where the watchdog and the pool read it. */
  target: WatchTarget | null;
  /** We ended it, or it died: its messages no longer count. */
  over: boolean;
  readyYet: boolean;
  resolveDone(m: Done): void;
  rejectReady(e: Error): void;
}

interface Slot {
  index: number;
  ctrl: SharedArrayBuffer;
  life: Incarnation;
  /** Null while the worker (re)starts, and for good once it is lost. */
  ring: RingProducer | null;
  /** A restart under way: resolves when `ring` is back (or the slot is lost). */
  restarting: Promise<void> | null;
  lost: boolean;
}

/** The output lock's value while the capture thread writes (workers write their thread ids, >= 1). */
const LOCK_CAPTURE_THREAD = -1;
/** How long an ended worker's thread may take to stop before riff goes on without it (end()). */
const THREAD_STOP_MS = 2000;

/**
 * A worker's own stdout and stderr (Node's warnings, the C library's writes:
 * an abort's message) to riff's, its stdout where the script's output goes. Read
 * only once the pool holds the worker: reading keeps a worker referenced,
 * and an early worker not needed after all (--help) must not keep riff
 * alive; what it wrote before waits in the stream.
 */
export function forwardStdio(worker: Worker, outFd: 1 | 2): void {
  const out = outFd === 1 ? stdout : stderr;
  worker.stdout.on('data', (b: Buffer) => out.write(b));
  worker.stderr.on('data', (b: Buffer) => stderr.write(b));
}

/**
 * A retired generation's VM memories (each holding its ring: 64 MiB live)
 * stay resident while this thread still has a wrapper of them, until its
 * next full collection, which a main thread that allocates little may not
 * run for minutes (the soak saw RSS climb by a ring per reload). One full
 * collection per reload frees them at once.
 *
 * The same collection runs every TRIM_EVERY_MS too, before the trim: this
 * thread's old space otherwise committed pages up to V8's collection limit
 * (the soak: 10.5 MiB at 62 s, 11.5 at 132 s, with 6-7 MiB live), and what
 * a collection frees the trim can then give back. gc is fetched at the first
 * tick or reload, never at start-up: a V8 flag set before the workers boot
 * slows their start (see prestart.ts).
 */
let gc: (() => void) | null = null;
function fullCollection(): void {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * The C library's free pages back to the system (the addon's trimMemory,
 * glibc's malloc_trim), after each reload's collection and every
 * TRIM_EVERY_MS. Every thread that allocates has its own arena, and what it
 * frees in the middle of one stays resident: V8's compiler threads' zones
 * (16 MiB at their peak in the first seconds), each reload's worker thread
 * and isolate, the records of a reload's deinit. Resident memory climbed
 * towards the arenas' high-water marks for minutes (the soak: +6 MiB in 4
 * minutes with a reload a minute, while the bytes in use stayed level); now
 * it follows what is in use. A trim costs well under a millisecond when
 * little was freed.
 */
const TRIM_EVERY_MS = 30_000;
function trimMemory(): void {
  nativeOrNull()?.trimMemory?.();
}

function collectAndTrim(): void {
  fullCollection();
  trimMemory();
}

export class LuaPool {
  /** Packets dropped because a ring was full (live capture only). */
  dropped = 0;
  /** Overheard copies (DNS answers for other workers) dropped because a ring was full (live capture only). */
  unheard = 0;
  /** Packets lost with a worker that was ended (over the time limit) or died: the one it was on, and any that could not be handed on. */
  lost = 0;
  /** Workers ended or dead, and how many of those were replaced. */
  ended = 0;
  restarted = 0;
  /** SIGHUP reloads that took effect. */
  reloads = 0;
  filter: string | null = null;
  /** --output specs from config.lua's outputs(). */
  outputs: string[] = [];
  rule = '';
  private nextId = 0;
  /** Incarnations whose rings were closed by a reload: they drain, run deinit and are done. */
  private readonly retired: Incarnation[] = [];
  /** A reload's VMs while they load the new script: watched as the running ones are. */
  private loadingLives: Incarnation[] = [];
  /** A reload's new VMs, all ready: they take over at the next batch boundary (swap()). */
  private next: { lives: Incarnation[]; msgs: Ready[]; onSwap: () => void } | null = null;
  private reloading = false;
  /** Retired generations until they are done (each leaves the list then). */
  private readonly settling: Promise<void>[] = [];
  /** Lua errors outside packets, and errors per script, of retired generations. */
  private hookErrors = 0;
  private readonly byScript = new Map<string, number>();
  private readonly single: boolean;
  private readonly watchdog: Watchdog;
  private trimTimer: NodeJS.Timeout | null = null;
  private readonly slots: Slot[] = [];
  /** Counts of the workers' ended VMs: [handed, packet errors] per worker. */
  private readonly carried: Float64Array;
  /** Shards batches when there are several workers: the addon, or its JS twin. */
  private readonly sharding: Sharding | null;
  /** Per record of the batch being sharded: its worker (255: filtered out). */
  private shards = new Uint8Array(1024);
  /** Per worker: bytes of the batch being sharded that go to it. */
  private readonly bytesPer: Uint32Array;
  /** Ports whose packets every worker gets, for the script's overhear phase (null: none). */
  private overhear: Uint8Array | null = null;
  /** The script's riff.shard("service"): connections go by service, not by flow. */
  private byService = false;
  /**
   * Capture times of the last packet and the last TCP/UDP packet sharded so
   * far: each worker gets them at the end, so its deinit ends its flows at
   * the time one worker would (idle past the timeout then, or not).
   */
  private readonly runEnd: RunEnd = { last: null, flow: null };
  private finishing = false;
  private abandoned = false;
  private readonly lock = new SharedArrayBuffer(4);
  /** riff.counter's numbers, shared by all workers (SharedCounters). */
  private readonly sumsBuf: SharedArrayBuffer;

  private constructor(private readonly o: PoolOptions) {
    const n = Math.max(1, o.workers);
    this.sumsBuf = new SharedArrayBuffer(SharedCounters.bytes(n));
    this.carried = new Float64Array(2 * n);
    this.single = n === 1;
    this.sharding = this.single ? null : (nativeOrNull() ?? jsSharding);
    // Two more words: where the batch's last packet and last TCP/UDP packet lie (shardPlan).
    this.bytesPer = new Uint32Array(n + 2);
    this.watchdog = new Watchdog([], o.limits, (i, where) => this.stuck(i, where));
  }

  /**
   * The largest packet (captured bytes) a capture file may hand over: a
   * batch holding it (at most twice the reader's 1 MiB batch, or the packet
   * alone) must fit in half the ring, the most an emptying ring is sure to
   * offer in one piece.
   */
  get maxRecord(): number {
    return Math.floor(this.o.ringBytes / 4);
  }

  private get script(): string {
    return this.o.runtime.script ?? 'the bundled pipeline';
  }

  /** Start worker `index` (a prestarted one if there is one left). */
  private spawn(index: number, ctrl: SharedArrayBuffer, reload = false): Incarnation {
    const n = Math.max(1, this.o.workers);
    const counterBuf = new SharedArrayBuffer(8 * 2 * n);
    const retiring = new SharedArrayBuffer(4);
    const heapBuf = new SharedArrayBuffer(16);
    const init: WorkerInit = {
      index,
      opts: this.o.runtime,
      ring: { ctrl, bytes: this.o.ringBytes },
      lock: this.lock,
      counters: counterBuf,
      heap: heapBuf,
      workers: n,
      sums: this.sumsBuf,
      hold: reload,
      retiring,
      readConfig: index === 0 && (reload || !this.slots[index]),
      records: !!this.o.onRecord,
      outFd: this.o.outFd,
    };
    let worker: Worker;
    let failed: Error | null = null;
    const pre = early.shift();
    if (pre) {
      ({ worker, error: failed } = pre);
      worker.ref();
      worker.postMessage(init);
    } else {
      worker = new Worker(WORKER_URL, { workerData: init, resourceLimits: workerLimits, ...OWN_STDIO });
      sendModule(worker);
    }
    forwardStdio(worker, this.o.outFd);
    const id = this.nextId++;
    const life = {
      worker,
      id,
      index,
      ctrl,
      counters: new Float64Array(counterBuf),
      heap: new Float64Array(heapBuf),
      retiring: new Int32Array(retiring),
      ring: null,
      handover: null,
      target: null,
      over: false,
      readyYet: false,
    } as Partial<Incarnation> as Incarnation;
    life.ready = new Promise<Ready>((res, rej) => {
      life.rejectReady = rej;
      worker.on('message', (m: WorkerMessage) => {
        if (life.over) return;
        if (m.type === 'booted') holdYoungGeneration();
        else if (m.type === 'watch') {
          life.target = m.watch;
          this.watchdog.replace(id, m.watch);
        } else if (m.type === 'ready') res(m);
        else if (m.type === 'stop') this.o.onStop(m.why, 'message' in m ? m.message : undefined);
        else if (m.type === 'records') {
          const on = this.o.onRecord;
          if (on) {
            let o = 0;
            for (let i = 0; i < m.lens.length; i++) {
              on(m.bytes.subarray(o, o + m.lens[i]), m.ats[i]);
              o += m.lens[i];
            }
          }
        }
        else if (m.type === 'collected') {
          life.handover = m.handover;
          life.resolveCollected(m.state);
        }
        else if (m.type === 'done') {
          life.over = true; // its exit is expected now
          life.resolveDone(m);
        }
        else if (m.type === 'fail') died(m.message, true);
      });
    });
    life.ready.catch(() => {}); // a restart's failure is handled where it is awaited
    life.done = new Promise<Done>((res) => (life.resolveDone = res));
    life.collected = new Promise<Uint8Array | null>((res) => (life.resolveCollected = res));
    life.ready.then(
      () => (life.readyYet = true),
      () => {},
    );
    // Before it is ready, a failure is the script's or the worker's start's
    // (start() reports it); after, the worker died under a batch: the pool
    // ends it properly.
    const died = (cause: string, script = false) => {
      if (life.over) return;
      if (!life.readyYet) {
        life.over = true;
        this.watchdog.replace(id, null);
        life.rejectReady(script ? new ScriptError(cause) : new Error(cause));
        life.resolveDone(NO_COUNTS);
        life.resolveCollected(null);
        return;
      }
      const slot = this.slots[index];
      if (slot) this.end(slot, `its worker died: ${cause}`, life);
    };
    worker.on('error', (e) => died(`Lua worker ${index}: ${e.message}`));
    if (failed) died(`Lua worker ${index}: ${failed.message}`);
    worker.on('exit', (code) => {
      if (!life.over) died(`Lua worker ${index} exited (code ${code}) before it was done`);
    });
    return life;
  }

  static async start(o: PoolOptions): Promise<LuaPool> {
    // First the wrappers for the Lua module's imports (vm.ts warmUp), when the
    // module is here to share (from the build's cache): the early workers,
    // booting since riff's first moment, need them within milliseconds.
    const module = cachedLua();
    if (module) warmUp(module);
    const pool = new LuaPool(o);
    const n = Math.max(1, o.workers);
    for (let i = 0; i < n; i++) {
      const ctrl = newRingControl();
      pool.slots.push({ index: i, ctrl, life: pool.spawn(i, ctrl), ring: null, restarting: null, lost: false });
    }
    // Started on a guess at the command line that was too high.
    for (const e of early.splice(0)) void e.worker.terminate();
    // Loading the script is watched too: a top level that never returns is ended.
    pool.watchdog.start();
    // From here a signal reaches the pool, even while the script loads.
    o.onStarting?.(pool);
    // The addon (the rings' copies, sharding) loads while the workers boot, not
    // after they are ready: dlopen and its relocations are ~4 ms. So do Node's
    // perf_hooks modules, which the first performance.now() loads (~1.7 ms;
    // the rings and the watchdog time their waits with it).
    nativeOrNull();
    performance.now();
    let msgs: Ready[];
    try {
      msgs = await Promise.all(pool.slots.map((s) => s.life.ready));
    } catch (e) {
      pool.watchdog.stop();
      for (const s of pool.slots) s.life.over = true;
      await Promise.all(pool.slots.map((s) => s.life.worker.terminate()));
      throw e;
    }
    pool.slots.forEach((s, i) => (s.ring = s.life.ring = pool.producer(msgs[i])));
    pool.filter = msgs[0].filter;
    pool.shardBy(msgs[0]);
    pool.outputs = msgs[0].outputs;
    pool.rule = msgs[0].rule;
    pool.trimTimer = setInterval(collectAndTrim, TRIM_EVERY_MS).unref();
    return pool;
  }

  /** The sharding the (new) script asks for. */
  private shardBy(m: Ready): void {
    if (this.single) return;
    this.overhear = portBitmap(m.shard.overhear);
    this.byService = m.shard.byService;
  }

  private producer(m: Ready): RingProducer {
    const r = new RingProducer(m.ring);
    if (this.abandoned) r.abandon();
    return r;
  }

  /** The watchdog's report: the VM with key `id` has not moved for its limit. */
  private stuck(id: number, where: Stuck): void {
    const life = [...this.slots.map((s) => s.life), ...this.retired, ...this.loadingLives].find((l) => l.id === id);
    if (!life || life.over) return;
    const why = where.writing
      ? `waiting ${where.limitMs / 1000} s to write its output after riff was told to stop (standard output's reader is not reading; what it held is not written)`
      : `still running after ${where.limitMs / 1000} s (${this.abandoned ? 'riff was told to stop' : '--lua-timeout'})`;
    this.end(this.slots[life.index], why, life, !where.writing);
  }

  /**
   * End a worker's VM (over its time limit, or dead): count what it did and
   * the packet it was on as lost, hand what was queued for it to a fresh
   * worker from the same script (none after a signal: what was queued is
   * not processed), and say so in one line. `salvage`: write out what its
   * VM held for stdout (not when it was ended writing: part is out already).
   */
  private end(slot: Slot, why: string, life = slot.life, salvage = true): void {
    if (life.over) return;
    life.over = true;
    // A VM retired by a reload drains its own queue: what it leaves cannot go
    // to its successor, which has newer packets queued already (lost, counted).
    const retired = life !== slot.life;
    this.watchdog.replace(life.id, null);
    const thread = life.worker.threadId;
    const gone = life.worker.terminate();
    const t = life.target;
    // Once its thread has stopped (it may run on for a moment), so that
    // nothing is written twice; finish() waits for it.
    // A thread blocked in the kernel (writing to a pipe whose reader stopped
    // reading) never stops: after a while riff goes on without it (the exit
    // does not wait for threads), freeing the output lock it holds. Output
    // it was writing is not salvaged: part of it may be out already.
    const after = async (stopped: boolean) => {
      this.freeLock(thread);
      if (t && stopped && salvage) await this.salvageOutput(t);
    };
    const stoppedOrNot = Promise.race([gone.then(() => true, () => true), new Promise<boolean>((r) => setTimeout(r, THREAD_STOP_MS, false).unref())]);
    const salvaged: Promise<void> = stoppedOrNot.then(after).finally(() => this.settling.splice(this.settling.indexOf(salvaged), 1));
    this.settling.push(salvaged);
    if (!life.readyYet) {
      // Stuck loading the script: nothing ran yet; start() (or restart()) says so.
      life.rejectReady(new ScriptError(`${this.script}: loading the script ${why}`));
      life.resolveDone(NO_COUNTS);
      life.resolveCollected(null);
      return;
    }
    this.ended++;
    const i = slot.index;
    const at = i * 2;
    // Where the VM was, read from its memory (still ours after the thread is gone).
    let phase = 0;
    let inLua = false;
    let cur = -1;
    let handed = life.counters[at];
    let errors = life.counters[at + 1];
    let carry: Batch[] = [];
    let what = 'between packets';
    if (t) {
      const buf = t.memory.buffer;
      const i32 = new Int32Array(buf);
      const dv = new DataView(buf);
      const b = t.block >> 2;
      inLua = (Atomics.load(i32, b + BLOCK_SEQ) & 1) === 1;
      phase = Atomics.load(i32, b + BLOCK_PHASE);
      const p = readLuaInt(dv, t.processed);
      const e = readLuaInt(dv, t.packetErrors);
      if (p >= 0 && e >= 0) {
        handed = p;
        errors = e;
      }
      if (inLua) cur = t.cur && p >= 0 ? readLuaInt(dv, t.cur) : -1;
      if (inLua && cur === CUR_GC) {
        // A script finalizer, run after a batch's packets were all counted,
        // or after loading, setup or deinit (lua/riff/driver.lua finalize()).
        what = 'a __gc finalizer';
      } else if (inLua && phase === PHASE_BATCH && cur === CUR_HANDED) {
        // Its packets are all counted processed; it was writing their output.
        what = 'the end of a batch';
      } else if (inLua && phase === PHASE_BATCH) {
        const { rest, lost, id, copies } = this.unfinished(dv, i32[b + BLOCK_BASE], i32[b + BLOCK_COUNT], i32[b + BLOCK_META], cur);
        if (cur > 0) handed += cur - 1 - copies;
        this.lost += lost;
        if (rest) carry.push(rest);
        what = id ? `packet ${id}` : 'a batch of packets';
      } else if (inLua) what = phase === PHASE_DEINIT ? 'deinit' : 'setup';
    }
    this.carried[at] += handed;
    this.carried[at + 1] += errors;
    life.counters[at] = 0;
    life.counters[at + 1] = 0;
    if (life.ring) carry = carry.concat(life.ring.queued());
    // A restart would only hang again in setup, and after deinit there is nothing left to do.
    // Nor once riff has been told to stop: nothing more is coming for it.
    const restart = !(inLua && phase !== PHASE_BATCH) && !retired && !this.abandoned;
    this.o.onNote(
      `${this.script}: ${what} ${why}; ${restart ? `worker ${i} was restarted (its plugin state is lost)` : `worker ${i} was ended`}`,
    );
    life.resolveDone(NO_COUNTS);
    life.resolveCollected(null);
    // --strict stops at the first error; a worker ended is one.
    if (this.o.runtime.strict) this.o.onStop('strict');
    if (retired) {
      for (const b of carry) this.lost += this.live(b);
      return;
    }
    slot.ring = null;
    if (!restart) {
      // No restart to wait for (a stale one ended: finish(), reserve() and room() must not await it).
      slot.restarting = null;
      // After a signal what it had queued is not processed, as every worker's queue.
      if (this.abandoned) slot.lost = true;
      else this.lose(slot, carry);
      return;
    }
    // The new worker boots (tens of ms) while the old thread stops and its output is written out.
    slot.restarting = this.restart(slot, carry);
  }

  /**
   * What an ended VM still held for the script's stdout: the output of the
   * packets it had finished, not yet flushed when it was stopped. Written
   * out under the workers' lock, so that it does not cut into another
   * worker's lines (freeLock has freed it if the thread just ended held
   * it). Nothing a script wrote is dropped unsaid.
   */
  private async salvageOutput(t: WatchTarget): Promise<void> {
    if (!t.out) return;
    const buf = t.memory.buffer;
    if (t.out < 4 || t.out > buf.byteLength) return;
    const len = new DataView(buf).getUint32(t.out - 4, true);
    if (!len || t.out + len > buf.byteLength) return;
    let bytes = new Uint8Array(buf, t.out, len).slice();
    // Whole lines: the stuck packet's unfinished one would run into the next output.
    const nl = bytes.lastIndexOf(10);
    if (nl >= 0) bytes = bytes.subarray(0, nl + 1);
    // Held by a live worker (one waiting on a slow reader may hold it long): wait as the workers do, without blocking this thread.
    const lock = new Int32Array(this.lock);
    while (Atomics.compareExchange(lock, 0, 0, LOCK_CAPTURE_THREAD) !== 0) await new Promise((r) => setTimeout(r, 5));
    try {
      (this.o.outFd === 1 ? stdout : stderr).write(bytes);
    } catch {
      // stdout gone or failing: its own handler has said so and stops riff
    } finally {
      Atomics.store(lock, 0, 0);
      Atomics.notify(lock, 0, 1);
    }
  }

  /** The output lock, if the thread just ended held it (it died writing): else no writer would ever have it again. */
  private freeLock(thread: number): void {
    const lock = new Int32Array(this.lock);
    if (thread > 0 && Atomics.compareExchange(lock, 0, thread, 0) === thread) Atomics.notify(lock, 0);
  }

  /**
   * The batch a VM was ended in: the packet it was on (the cur-th handed to
   * Lua) is lost, those after it are copied out for the next VM (records
   * already run or run elsewhere flagged so it skips them). cur < 1 (not
   * known): the whole batch is lost.
   */
  private unfinished(dv: DataView, base: number, count: number, meta: number, cur: number): { rest: Batch | null; lost: number; id: number; copies: number } {
    if (!base || count <= 0) return { rest: null, lost: 0, id: 0, copies: 0 };
    let o = base;
    for (let k = 0; k < count; k++) o += HDR + align8(dv.getUint32(o + 12, true));
    const bytes = o - base;
    if (o > dv.byteLength) return { rest: null, lost: 0, id: 0, copies: 0 };
    const rest = Batch.over(Buffer.from(new Uint8Array(dv.buffer, base, bytes)));
    rest.count = count;
    rest.bytes = bytes;
    let handed = 0;
    let lost = 0;
    // Overheard copies (another worker's flow, handed to overhear()) are
    // neither processed nor lost: the packet itself is its owner's.
    let copies = 0;
    for (let k = 0, r = 0; k < count; k++) {
      const f = rest.view.getUint32(r + 28, true);
      if (!(f & (FLAG_FILTERED_OUT | FLAG_ELSEWHERE))) {
        handed++;
        if (cur < 1 || handed <= cur) {
          const copy = (f & FLAG_OVERHEARD) !== 0;
          if (cur < 1 || handed === cur) lost += copy ? 0 : 1;
          else if (copy) copies++;
          rest.view.setUint32(r + 28, f | FLAG_ELSEWHERE, true);
        }
      }
      r += HDR + align8(rest.view.getUint32(r + 12, true));
    }
    const id = cur >= 1 && meta ? dv.getUint32(meta + (cur - 1) * HDR + 32, true) : 0;
    return { rest: handed > (cur < 1 ? handed : cur) ? rest : null, lost, id, copies };
  }

  /** Packets that will never run: counted as lost. */
  private lose(slot: Slot, batches: Batch[]): void {
    for (const b of batches) this.lost += this.live(b);
    if (!this.finishing) {
      slot.lost = true;
      this.o.onStop('worker-lost');
    }
  }

  /** Packets of a batch still to run: passed the filter, not sharded elsewhere, not another worker's overheard. */
  private live(b: Batch): number {
    let n = 0;
    for (let i = 0, o = 0; i < b.count; i++) {
      if (!(b.view.getUint32(o + 28, true) & (FLAG_FILTERED_OUT | FLAG_ELSEWHERE | FLAG_OVERHEARD))) n++;
      o += HDR + align8(b.view.getUint32(o + 12, true));
    }
    return n;
  }

  private async restart(slot: Slot, carry: Batch[]): Promise<void> {
    slot.ctrl = newRingControl();
    const life = this.spawn(slot.index, slot.ctrl);
    slot.life = life;
    let m: Ready;
    try {
      m = await life.ready;
    } catch (e) {
      this.o.onNote(`${this.script}: worker ${slot.index} could not be restarted: ${(e as Error).message}`);
      slot.restarting = null;
      this.lose(slot, carry);
      return;
    }
    this.restarted++;
    const ring = (life.ring = this.producer(m));
    // The dead worker's queue first, in order, before anything new.
    for (const b of carry) {
      while (!ring.push(b, 0)) {
        if (life.over) {
          this.lost += this.live(b);
          break;
        }
        await ring.room(50);
      }
    }
    if (life.over) {
      // Ended again meanwhile: that end() handled the rest (and a restart of its own, if any, is the slot's now).
      if (slot.life === life) slot.restarting = null;
      return;
    }
    slot.ring = ring;
    slot.restarting = null;
    if (this.finishing) ring.close(this.single ? undefined : this.runEnd);
  }

  /**
   * A batch to fill, straight in worker 0's ring: with several workers the
   * records for the others are copied out of it at commit and worker 0
   * skips them. Null when the ring is full or worker 0 is restarting: await
   * room() and ask again.
   */
  reserve(min = HDR + 65536): Batch | null {
    if (this.next) this.swap();
    // While any worker restarts (a new thread boots: tens of ms) live
    // capture waits with it, its packets held by the kernel's buffer as
    // with one worker, instead of dropping that worker's share at the ring.
    if (!this.single && this.slots.some((s) => s.restarting)) return null;
    return this.slots[0].ring?.reserve(min, 0) ?? null;
  }

  /** Give back a reserve()d batch unused. */
  unreserve(): void {
    this.slots[0].ring?.cancel();
  }

  /** Resolves when worker 0's ring may have room again, or a restart is over (or after a short while). */
  async room(): Promise<void> {
    const busy = this.slots.find((s) => s.restarting);
    if (busy) return void (await busy.restarting);
    const s = this.slots[0];
    if (s.ring) await s.ring.room(50);
    else await new Promise((r) => setTimeout(r, 50));
  }

  /** Hand the reserved batch over (file reading: waits for room, loses nothing). */
  async commit(b: Batch): Promise<void> {
    const shard = !this.single && b.count > 0;
    // Worker 0 may start on its records while the others' are copied out.
    if (shard) this.plan(b, true);
    const ring0 = this.slots[0].ring;
    if (ring0?.owns(b)) ring0.commit(b, 0);
    else await this.handTo(0, b); // worker 0 was replaced since reserve() (or the batch grew out of the ring)
    if (shard) await this.copyOut(b, Infinity, 1);
  }

  /**
   * Live capture: hand the reserved batch over now, never waiting (the
   * capture thread must keep reading). Records for other workers whose
   * rings are full, or who are restarting, are dropped and counted.
   */
  commitNow(b: Batch): void {
    const shard = !this.single && b.count > 0;
    if (shard) this.plan(b, true);
    const ring0 = this.slots[0].ring;
    if (ring0?.owns(b)) ring0.commit(b, 0);
    else if (b.count) this.dropped += countPassed(b);
    if (shard) void this.copyOut(b, 0, 1);
  }

  /** A whole batch into worker w's ring, waiting for room (and for a restart); lost if the worker is lost. */
  private async handTo(w: number, b: Batch): Promise<void> {
    for (;;) {
      const s = this.slots[w];
      if (s.lost) {
        this.lost += this.live(b);
        return;
      }
      if (s.ring && s.ring.push(b, 0)) return;
      if (s.ring && b.bytes + 8 > s.ring.capacity) {
        // Larger than the ring (the reader skips such records; nothing else makes them).
        this.lost += this.live(b);
        return;
      }
      if (s.restarting) await s.restarting;
      else if (s.ring) await s.ring.room(50);
      else await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Hand a live batch over without waiting; what does not fit is dropped and counted. */
  push(b: Batch): void {
    if (this.next) this.swap();
    if (this.single) {
      const ring = this.slots[0].ring;
      if (!ring || !ring.push(b, 0)) this.dropped += countPassed(b);
      return;
    }
    this.plan(b, false);
    void this.copyOut(b, 0, 0);
  }

  /**
   * Ctrl-C or SIGTERM: workers skip what is queued and go straight to
   * deinit; one that does not answer soon is ended, and with `stalls` one
   * whose output a reader has stopped taking too.
   */
  abandon(stalls = false): void {
    this.abandoned = true;
    for (const s of this.slots) s.ring?.abandon();
    for (const l of this.retired) l.ring?.abandon();
    this.watchdog.hurry(stalls);
  }

  /**
   * Shard a batch by flow. `inRing0`: the batch is worker 0's ring
   * slot, whose own records stay where they are; the others' are flagged
   * there (before worker 0 sees the slot) and copied out by copyOut.
   */
  private plan(b: Batch, inRing0: boolean): void {
    if (this.shards.length < b.count) this.shards = new Uint8Array(Math.max(b.count, this.shards.length * 2));
    this.sharding!.shardPlan(b.buf, b.count, this.slots.length, this.shards, this.bytesPer, inRing0, this.overhear, this.byService);
    const n = this.slots.length;
    const at = (o: number): [number, number] => [b.view.getUint32(o, true) + b.view.getInt32(o + 4, true) * 4294967296, b.view.getUint32(o + 8, true)];
    if (this.bytesPer[n]) this.runEnd.last = at(this.bytesPer[n] - 1);
    // Flows still open end by the capture's clock at the last TCP/UDP packet (its time plus its stamped lag), as one worker's do.
    if (this.bytesPer[n + 1]) {
      const o = this.bytesPer[n + 1] - 1;
      const [sec, nsec] = at(o);
      this.runEnd.flow = clockOf(sec, nsec, b.view.getUint32(o + 36, true));
    }
  }

  /**
   * Copy the planned records of workers `from` on into their rings. `wait`
   * 0 (live): what finds no room is dropped and counted; otherwise wait for
   * room, asynchronously, as long as it takes (the watchdog ends a worker
   * that never frees any).
   */
  private async copyOut(b: Batch, wait: number, from: number): Promise<void> {
    const shards = this.shards;
    for (let w = from; w < this.slots.length; w++) {
      const bytes = this.bytesPer[w];
      if (!bytes) continue;
      for (;;) {
        const s = this.slots[w];
        const ring = s.ring;
        const into = ring?.reserve(bytes, 0, bytes) ?? null;
        if (into) {
          into.count = this.sharding!.shardCopy(b.buf, b.count, shards, w, into.buf, 0);
          into.bytes = bytes;
          ring!.commit(into, 0);
          break;
        }
        const n = countShard(shards, b.count, w);
        if (!wait) {
          this.dropped += n;
          this.unheard += countHeard(shards, b.count, w);
          break;
        }
        if (s.lost || (ring && bytes + 8 > ring.capacity)) {
          this.lost += n;
          break;
        }
        if (s.restarting) await s.restarting;
        else if (ring) await ring.room(50);
        else await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** What a second Ctrl-C would abandon, as words for one line (null: nothing). */
  abandoning(): string | null {
    const running = this.slots.filter((s) => !s.life.over).length + this.retired.filter((l) => !l.over).length;
    if (!running) return null;
    return `${running} Lua worker${running > 1 ? 's' : ''} still in deinit or report (their output and state)`;
  }

  /** Packets handed to Lua and packets that ended in an error, summed over workers (live). */
  progress(): { processed: number; errors: number } {
    let processed = 0;
    let errors = 0;
    for (let i = 0; i < this.slots.length; i++) {
      processed += this.slots[i].life.counters[i * 2] + this.carried[i * 2];
      errors += this.slots[i].life.counters[i * 2 + 1] + this.carried[i * 2 + 1];
    }
    for (const l of this.retired) {
      processed += l.counters[l.index * 2];
      errors += l.counters[l.index * 2 + 1];
    }
    return { processed, errors };
  }

  /**
   * Bytes each worker's Lua heap holds (as of its last batch), those of
   * VMs a reload retired that are still finishing, and each worker
   * thread's JS heap (V8's, at most a second old).
   */
  luaHeap(): { workers: number[]; retiring: number; js: number[] } {
    return {
      workers: this.slots.map((s) => (s.life.over ? 0 : s.life.heap[0])),
      retiring: this.retired.reduce((n, l) => n + (l.over ? 0 : l.heap[0]), 0),
      js: this.slots.map((s) => (s.life.over ? 0 : s.life.heap[1])),
    };
  }

  /**
   * SIGHUP: the script (and config.lua) again, in fresh VMs, one per worker,
   * started by spawn() as a restart's are. Nothing changes until all of
   * them have loaded and run setup; then they take over at the next batch
   * boundary (swap()). `prepare` sees the new config (filter, outputs) and
   * returns what to do at that boundary, or why the reload is refused.
   * Resolves to a line for the user when the reload was refused (the
   * running script keeps running), null when it is set.
   */
  async reload(prepare: (m: Ready) => string | (() => void)): Promise<string | null> {
    if (this.reloading || this.next) return 'a reload is under way already; this one is ignored';
    if (this.finishing || this.abandoned) return 'riff is stopping; reload ignored';
    this.reloading = true;
    try {
      await Promise.all(this.slots.map((s) => s.restarting));
      const lives = this.slots.map((s) => this.spawn(s.index, newRingControl(), true));
      this.loadingLives = lives;
      const drop = () => {
        for (const l of lives) {
          l.over = true;
          this.watchdog.replace(l.id, null);
          void l.worker.terminate();
        }
      };
      let msgs: Ready[];
      try {
        msgs = await Promise.all(lives.map((l) => l.ready));
      } catch (e) {
        drop();
        const why = (e as Error).message.replace(/^riff: /, '');
        return `reload failed, the running script keeps running: ${why.startsWith(this.script) ? why : `${this.script}: ${why}`}`;
      }
      if (this.finishing || this.abandoned) {
        drop();
        return 'riff is stopping; the reloaded script was not started';
      }
      const onSwap = prepare(msgs[0]);
      if (typeof onSwap === 'string') {
        drop();
        return `reload failed, the running script keeps running: ${onSwap}`;
      }
      this.next = { lives, msgs, onSwap };
      // The capture thread never holds a reserved batch across an await
      // (reserve, fill and commit run in one go; push is synchronous), so
      // here is a batch boundary. While a worker restarts, the next
      // reserve() or push() swaps instead.
      this.swap();
      return null;
    } finally {
      this.reloading = false;
      this.loadingLives = [];
    }
  }

  /**
   * At a batch boundary (reload(), or reserve()/push()/finish() when it had to wait): the reload's VMs take
   * the rings over; the old ones drain what their rings hold, run deinit,
   * collect and report as at the end of a run, and hand deinit's return to
   * their successor on the same worker index (the same flows), which starts
   * on its packets only then, so every flow's packets stay in order.
   */
  private swap(): void {
    const next = this.next;
    if (!next || this.slots.some((s) => s.restarting || !s.ring)) return;
    this.next = null;
    this.shardBy(next.msgs[0]);
    const gen = this.slots.map((s) => s.life);
    this.slots.forEach((s, i) => {
      const old = s.life;
      const life = next.lives[i];
      Atomics.store(old.retiring, 0, 1);
      old.ring?.close();
      this.retired.push(old);
      s.life = life;
      s.ctrl = life.ctrl;
      s.ring = life.ring = this.producer(next.msgs[i]);
      void old.collected.then(() => {
        if (!life.over) life.worker.postMessage({ type: 'start', handover: old.handover } satisfies PoolMessage);
      });
    });
    this.reloads++;
    next.onSwap();
    const settled = this.retire(gen).then(() => {
      this.settling.splice(this.settling.indexOf(settled), 1);
      // Out of retire()'s frame, whose `gen` (each incarnation's ready
      // message holds its ring, i.e. its VM's memory) would keep the memory
      // alive through a collection run there: it then stayed resident until
      // the next reload's collection, a whole generation's VM per reload.
      setImmediate(collectAndTrim);
    });
    this.settling.push(settled);
  }

  /** A generation replaced by a reload ends as a run does: report once, then its counts join the run's. */
  private async retire(gen: Incarnation[]): Promise<void> {
    const states = await Promise.all(gen.map((l) => l.collected));
    const reporter = whoReports(gen, states);
    gen.forEach((l, i) => {
      if (!l.over) l.worker.postMessage((i === reporter ? { type: 'report', states } : { type: 'finish' }) satisfies PoolMessage);
    });
    const all = await Promise.all(gen.map((l) => l.done));
    all.forEach((m, i) => {
      const l = gen[i];
      this.carried[l.index * 2] += m.processed;
      this.carried[l.index * 2 + 1] += m.errors;
      this.hookErrors += m.hookErrors;
      for (const [k, v] of m.byScript) this.byScript.set(k, (this.byScript.get(k) ?? 0) + v);
      l.over = true;
      this.watchdog.replace(l.id, null);
      this.retired.splice(this.retired.indexOf(l), 1);
      // Its VM's memory (the ring lies in it) is freed at the next full collection only if nothing here holds it.
      l.ring = null;
      l.target = null;
    });
    await Promise.all(gen.map((l) => l.worker.terminate()));
  }

  /** Close the rings, let the workers drain and run deinit; their summaries merged. */
  async finish(): Promise<Summary> {
    // A reload that is ready takes over first (its VMs have run setup); one still loading is dropped.
    if (this.next) this.swap();
    this.finishing = true;
    // A worker restarted meanwhile closes its ring once its queue is handed over (restart()).
    const end = this.single ? undefined : this.runEnd;
    for (const s of this.slots) s.ring?.close(end);
    // Every current worker has run deinit and collected its state (null for
    // one that was ended): worker 0 merges them and reports once; then all
    // of them finish.
    let lives: Incarnation[];
    let states: (Uint8Array | null)[];
    for (;;) {
      lives = this.slots.map((s) => s.life);
      await Promise.all(this.slots.map((s) => s.restarting));
      states = await Promise.all(lives.map((l) => l.collected));
      if (this.slots.every((s, i) => s.life === lives[i] && !s.restarting)) break;
    }
    const reporter = whoReports(lives, states);
    lives.forEach((l, i) => {
      if (l.over) return;
      const order: PoolMessage = i === reporter ? { type: 'report', states } : { type: 'finish' };
      l.worker.postMessage(order);
    });
    const all = await Promise.all(lives.map((l) => l.done));
    await Promise.all(this.settling);
    const byScript = new Map(this.byScript);
    let processed = 0;
    let errors = this.hookErrors;
    let packetErrors = 0;
    all.forEach((m, i) => {
      processed += m.processed + this.carried[i * 2];
      packetErrors += m.errors + this.carried[i * 2 + 1];
      errors += m.errors + m.hookErrors + this.carried[i * 2 + 1];
      for (const [k, v] of m.byScript) byScript.set(k, (byScript.get(k) ?? 0) + v);
    });
    this.watchdog.stop();
    if (this.trimTimer) clearInterval(this.trimTimer);
    for (const s of this.slots) s.life.over = true;
    // Every worker has said all it will (its 'done'), and its thread ends
    // on its own now; the summary need not wait for the threads to be torn
    // down (tens of ms each), nor does riff's exit, which ends them too.
    for (const s of this.slots) void s.life.worker.terminate();
    return { processed, errors, packetErrors, byScript };
  }
}
