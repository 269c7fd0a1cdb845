// The capture thread's side of the Lua workers: start them, feed their
// rings (sharding by flow when there are several), collect their counters.
import { Worker } from 'node:worker_threads';
import { HDR, countPassed, type Batch } from '../capture/batch.js';
import { jsSharding, type Sharding } from '../capture/flow.js';
import { nativeOrNull } from '../capture/native.js';
import { newRingControl, RingProducer } from './ring.js';
import type { RuntimeOptions } from './runtime.js';
import { ScriptError, SharedCounters, type Summary } from './runtime.js';
import type { PoolMessage, WorkerInit, WorkerMessage } from './worker.js';
import { Watchdog } from './watchdog.js';

const FOREVER = 2 ** 31;

/** Records of worker w in a shard plan. */
function countShard(shards: Uint8Array, count: number, w: number): number {
  let k = 0;
  for (let i = 0; i < count; i++) if (shards[i] === w) k++;
  return k;
}

export interface PoolOptions {
  workers: number;
  runtime: Omit<RuntimeOptions, 'write' | 'record'>;
  outFd: 1 | 2;
  ringBytes: number;
  /** A worker asks to stop: --strict hit an error, or stdout closed. */
  onStop(why: string): void;
  onRecord?(bytes: Uint8Array, at: number): void;
}

interface Slot {
  worker: Worker;
  /** Made once the worker is ready: the ring's bytes are in its VM's memory. */
  ring: RingProducer;
  /** The worker's state for the whole run's report (null: the script has none, or the worker is gone). */
  collected: Promise<Uint8Array | null>;
  done: Promise<Extract<WorkerMessage, { type: 'done' }>>;
}

// Workers can start booting (Node, wasmoon, the WebAssembly instance: most
// of riff's start-up) before the command line is even parsed; start() then
// hands them their orders by message instead of workerData.
const early: { worker: Worker; error: Error | null }[] = [];

export function prestartWorkers(n: number): void {
  while (early.length < n) {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: null });
    const e = { worker, error: null as Error | null };
    early.push(e);
    worker.on('error', (err) => (e.error = err));
    // Not needed after all (--help, a bad argument): it must not keep riff alive.
    worker.unref();
  }
}

export class LuaPool {
  /** Packets dropped because a ring was full (live capture only). */
  dropped = 0;
  filter: string | null = null;
  /** --output specs from config.lua's outputs(). */
  outputs: string[] = [];
  rule = '';
  private readonly counters: Float64Array;
  private readonly single: boolean;
  private watchdog: Watchdog | null = null;
  /** Shards batches when there are several workers: the addon, or its JS twin. */
  private readonly sharding: Sharding | null;
  /** Per record of the batch being sharded: its worker (255: filtered out). */
  private shards = new Uint8Array(1024);
  /** Per worker: bytes of the batch being sharded that go to it. */
  private readonly bytesPer: Uint32Array;

  private constructor(
    private readonly slots: Slot[],
    counters: SharedArrayBuffer,
  ) {
    this.counters = new Float64Array(counters);
    this.single = slots.length === 1;
    this.sharding = this.single ? null : (nativeOrNull() ?? jsSharding);
    this.bytesPer = new Uint32Array(slots.length);
  }

  /** Workers' instruction budgets are armed from here (src/vm/watchdog.ts), also while the capture waits for ring room. */
  private watch(targets: Watchdog['targets']): void {
    if (!targets.length) return;
    const dog = new Watchdog(targets);
    this.watchdog = dog;
    dog.start();
    for (const s of this.slots) s.ring.onWait = () => dog.check();
  }

  static async start(o: PoolOptions): Promise<LuaPool> {
    const n = Math.max(1, o.workers);
    const lock = new SharedArrayBuffer(4);
    const counters = new SharedArrayBuffer(8 * 2 * n);
    const sums = new SharedArrayBuffer(SharedCounters.bytes(n));
    const started: Omit<Slot, 'ring'>[] = [];
    const ready: Promise<Extract<WorkerMessage, { type: 'ready' }>>[] = [];
    for (let i = 0; i < n; i++) {
      const init: WorkerInit = {
        index: i,
        opts: o.runtime,
        ring: { ctrl: newRingControl(), bytes: o.ringBytes },
        lock,
        counters,
        workers: n,
        sums,
        outFd: o.outFd,
        readConfig: i === 0,
        records: !!o.onRecord,
      };
      let worker: Worker;
      let failed: Error | null = null;
      const pre = early.shift();
      if (pre) {
        ({ worker, error: failed } = pre);
        worker.ref();
        worker.postMessage(init);
      } else {
        worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
      }
      let resolveReady!: (m: Extract<WorkerMessage, { type: 'ready' }>) => void;
      let rejectReady!: (e: Error) => void;
      let resolveDone!: (m: Extract<WorkerMessage, { type: 'done' }>) => void;
      let resolveCollected!: (state: Uint8Array | null) => void;
      const collected = new Promise<Uint8Array | null>((res) => (resolveCollected = res));
      ready.push(new Promise((res, rej) => ((resolveReady = res), (rejectReady = rej))));
      const done = new Promise<Extract<WorkerMessage, { type: 'done' }>>((res) => (resolveDone = res));
      worker.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') resolveReady(m);
        else if (m.type === 'fail') rejectReady(new ScriptError(m.message));
        else if (m.type === 'stop') o.onStop(m.why);
        else if (m.type === 'record') o.onRecord?.(m.bytes, m.at);
        else if (m.type === 'collected') resolveCollected(m.state);
        else if (m.type === 'done') resolveDone(m);
      });
      worker.on('error', (e) => rejectReady(new Error(`Lua worker ${i}: ${e.message}`)));
      if (failed) rejectReady(new Error(`Lua worker ${i}: ${failed.message}`));
      worker.on('exit', () => {
        rejectReady(new Error(`Lua worker ${i} exited before it was ready`));
        resolveCollected(null);
        resolveDone({ type: 'done', processed: 0, errors: 0, hookErrors: 0, byScript: [] });
      });
      started.push({ worker, collected, done });
    }
    // Started on a guess at the command line that was too high.
    for (const e of early.splice(0)) void e.worker.terminate();
    let msgs: Extract<WorkerMessage, { type: 'ready' }>[];
    try {
      msgs = await Promise.all(ready);
    } catch (e) {
      await Promise.all(started.map((s) => s.worker.terminate()));
      throw e;
    }
    const pool = new LuaPool(
      started.map((s, i) => ({ ...s, ring: new RingProducer(msgs[i].ring) })),
      counters,
    );
    pool.filter = msgs[0].filter;
    pool.outputs = msgs[0].outputs;
    pool.rule = msgs[0].rule;
    pool.watch(msgs.flatMap((m) => (m.watch ? [m.watch] : [])));
    return pool;
  }

  /**
   * A batch to fill, straight in worker 0's ring: with several workers the
   * records for the others are copied out of it at commit and worker 0
   * skips them. Null when the ring stayed full for `waitMs`: let the event
   * loop run (signals) and ask again.
   */
  reserve(waitMs = 200, min = HDR + 65536): Batch | null {
    return this.slots[0].ring.reserve(min, waitMs);
  }

  /**
   * Hand the reserved batch over. File reading waits for room in the other
   * workers' rings and loses nothing; live capture passes wait 0, and what
   * finds no room there is dropped and counted.
   */
  commit(b: Batch, wait = FOREVER): void {
    const shard = !this.single && b.count > 0;
    // Worker 0 may start on its records while the others' are copied out.
    if (shard) this.plan(b, true);
    this.slots[0].ring.commit(b, FOREVER);
    if (shard) this.copyOut(b, wait, 1);
  }

  /** Hand a live batch over without waiting; what does not fit is dropped and counted. */
  push(b: Batch): void {
    this.dispatch(b, 0);
  }

  /** Ctrl-C: workers skip what is queued and go straight to deinit. */
  abandon(): void {
    for (const s of this.slots) s.ring.abandon();
    this.watchdog?.hurry();
  }

  private dispatch(b: Batch, wait: number): void {
    if (this.single) {
      if (!this.slots[0].ring.push(b, wait)) this.dropped += countPassed(b);
      return;
    }
    this.plan(b, false);
    this.copyOut(b, wait, 0);
  }

  /**
   * Shard a batch by flow. `inRing0`: the batch is worker 0's ring
   * slot, whose own records stay where they are; the others' are flagged
   * there (before worker 0 sees the slot) and copied out by copyOut.
   */
  private plan(b: Batch, inRing0: boolean): void {
    if (this.shards.length < b.count) this.shards = new Uint8Array(Math.max(b.count, this.shards.length * 2));
    this.sharding!.shardPlan(b.buf, b.count, this.slots.length, this.shards, this.bytesPer, inRing0);
  }

  /** Copy the planned records of workers `from` on into their rings; what finds no room in time is dropped and counted. */
  private copyOut(b: Batch, wait: number, from: number): void {
    for (let w = from; w < this.slots.length; w++) {
      const bytes = this.bytesPer[w];
      if (!bytes) continue;
      const ring = this.slots[w].ring;
      const into = ring.reserve(bytes, wait, bytes);
      if (!into) {
        this.dropped += countShard(this.shards, b.count, w);
        continue;
      }
      into.count = this.sharding!.shardCopy(b.buf, b.count, this.shards, w, into.buf, 0);
      into.bytes = bytes;
      if (!ring.commit(into, wait)) this.dropped += into.count;
    }
  }

  /** Packets handed to Lua and packets that ended in an error, summed over workers (live). */
  progress(): { processed: number; errors: number } {
    let processed = 0;
    let errors = 0;
    for (let i = 0; i < this.slots.length; i++) {
      processed += this.counters[i * 2];
      errors += this.counters[i * 2 + 1];
    }
    return { processed, errors };
  }

  /** Close the rings, let the workers drain and run deinit; their summaries merged. */
  async finish(): Promise<Summary> {
    for (const s of this.slots) s.ring.close();
    // Every worker has run deinit and collected its state: worker 0 merges
    // them and reports once; then all of them finish.
    const states = await Promise.all(this.slots.map((s) => s.collected));
    const reporting = states.some((st) => st !== null);
    this.slots.forEach((s, i) => {
      const order: PoolMessage = i === 0 && reporting ? { type: 'report', states } : { type: 'finish' };
      s.worker.postMessage(order);
    });
    const all = await Promise.all(this.slots.map((s) => s.done));
    const byScript = new Map<string, number>();
    let processed = 0;
    let errors = 0;
    let packetErrors = 0;
    for (const m of all) {
      processed += m.processed;
      packetErrors += m.errors;
      errors += m.errors + m.hookErrors;
      for (const [k, v] of m.byScript) byScript.set(k, (byScript.get(k) ?? 0) + v);
    }
    this.watchdog?.stop();
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    return { processed, errors, packetErrors, byScript };
  }
}
