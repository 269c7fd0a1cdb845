// A Lua worker thread: one Runtime (one WebAssembly Lua VM) fed from its
// ring. Started by pool.ts; everything it says to the capture thread goes
// through postMessage, counters through shared memory.
// First: its message tells the main thread this worker has booted.
import './worker-boot.js';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { FdSink } from '../outputs/fd-sink.js';
import { errnoText } from '../outputs/types.js';
import { RingConsumer, type RingShared } from './ring.js';
import { Runtime, ScriptError, SharedCounters, type RuntimeOptions, type Sharding } from './runtime.js';
import { LuaVM } from './vm.js';
import type { WasmModule } from './wasm.js';
import { BLOCK_OUTPUT, BLOCK_WORDS, type WatchTarget } from './watchdog.js';

export interface WorkerInit {
  index: number;
  opts: Omit<RuntimeOptions, 'write' | 'record'>;
  /** The ring's control words and size; its bytes are the worker's to place (in its VM's memory). */
  ring: { ctrl: SharedArrayBuffer; bytes: number };
  /** Int32 lock word serialising writes to stdout/stderr across workers. */
  lock: SharedArrayBuffer;
  /** Float64 per worker: [packets handed to Lua, packet errors]. */
  counters: SharedArrayBuffer;
  /** Float64 [bytes this VM's Lua heap holds, bytes this thread's JS heap holds], as of its last batch (at most a second old for the JS heap): --stats reads them. */
  heap: SharedArrayBuffer;
  /** How many workers there are, and riff.counter's numbers (SharedCounters). */
  workers: number;
  sums: SharedArrayBuffer;
  /** Where the script's stdout goes: 1, or 2 when the pcap owns stdout (-w -). */
  outFd: 1 | 2;
  readConfig: boolean;
  records: boolean;
  /**
   * A reload's worker: setup runs before 'ready' (a setup that raises keeps
   * the old script), and packets wait for the pool's 'start', which brings
   * the old worker's hand-over once that one has run deinit.
   */
  hold: boolean;
  /** Int32, set by the pool when this worker's ring is closed for a reload: deinit's return is then the hand-over. */
  retiring: SharedArrayBuffer;
}

export type WorkerMessage =
  | { type: 'booted' }
  | { type: 'watch'; watch: WatchTarget }
  | { type: 'ready'; rule: string; filter: string | null; outputs: string[]; shard: Sharding; ring: RingShared }
  | { type: 'fail'; message: string }
  | { type: 'stop'; why: 'strict' | 'stdout-closed' }
  | { type: 'stop'; why: 'output-failed'; message: string }
  | { type: 'records'; bytes: Uint8Array; lens: Uint32Array; ats: Float64Array }
  | { type: 'collected'; state: Uint8Array | null; handover: Uint8Array | null }
  | { type: 'done'; processed: number; errors: number; hookErrors: number; byScript: [string, number][] };

/** From the pool once every worker has collected: worker 0 merges and reports, the others just finish. */
export type PoolMessage =
  | { type: 'report'; states: (Uint8Array | null)[] }
  | { type: 'finish' }
  | { type: 'start'; handover: Uint8Array | null };

const port = parentPort!;
// The pool's messages: the compiled Lua module ('wasm', src/vm/prestart.ts),
// whenever it comes, and the others (orders, then the pool's calls) in turn.
let gotModule: (m: WasmModule | null) => void = () => {};
const moduleSent = new Promise<WasmModule | null>((resolve) => (gotModule = resolve));
const inbox: unknown[] = [];
let waiting: ((m: unknown) => void) | null = null;
function onMessage(m: { type?: string; module?: WasmModule | null }): void {
  if (m?.type === 'wasm') return gotModule(m.module ?? null);
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(m);
  } else inbox.push(m);
}
port.on('message', onMessage);
function nextMessage<T>(): Promise<T> {
  if (inbox.length) return Promise.resolve(inbox.shift() as T);
  return new Promise<T>((resolve) => (waiting = resolve as (m: unknown) => void));
}
// The VM is made while the orders are on their way (a prestarted worker gets
// them by message once the command line is parsed).
const vmReady = moduleSent.then((module) => LuaVM.create({ memoryLimit: 0 }, module));
vmReady.catch(() => {}); // handled where it is awaited
// The orders: workerData, or (a prestarted worker) the pool's first message
// once the command line is parsed; main() waits for them (no top-level await:
// the build bundles this file as CommonJS, see scripts/bundle.ts).
let init: WorkerInit;
// Records go to the capture thread in one message per batch (and before any
// other message, so their order with it holds): a message per record cost
// more than the record's Lua, and each one's bytes, a view into Node's 8 KiB
// Buffer pool, was cloned with the whole pool. One fresh buffer, transferred.
let recs: Uint8Array[] = [];
let recAts: number[] = [];
let recBytes = 0;
const RECS_AT = 1 << 20;
// A slow script's records still leave within this long of being emitted (a
// file's batch can take seconds in Lua): outputs and what reads them see the
// run as it goes, not at each batch's end.
const RECS_WITHIN_MS = 100;
function flushRecords(): void {
  const n = recs.length;
  if (n === 0) return;
  const bytes = new Uint8Array(recBytes);
  const lens = new Uint32Array(n);
  let o = 0;
  for (let i = 0; i < n; i++) {
    bytes.set(recs[i], o);
    o += lens[i] = recs[i].length;
  }
  const ats = Float64Array.from(recAts);
  recs = [];
  recAts = [];
  recBytes = 0;
  port.postMessage({ type: 'records', bytes, lens, ats } satisfies WorkerMessage, [bytes.buffer, lens.buffer, ats.buffer]);
}
function record(bytes: Uint8Array): void {
  recs.push(bytes);
  const now = Date.now();
  recAts.push(now);
  recBytes += bytes.length;
  if (recBytes >= RECS_AT || recs.length >= 4096 || now - recAts[0] >= RECS_WITHIN_MS) flushRecords();
}
const post = (m: WorkerMessage) => {
  flushRecords();
  port.postMessage(m);
};
let lock: Int32Array;
let counters: Float64Array;
let heap: Float64Array;
let sinks: Record<1 | 2, FdSink>;
let stopSent = false;

// Output of one flush is whole packets' worth of lines; the lock keeps two
// workers' flushes from interleaving inside a pipe.
// Set once the VM's watch block exists: while a write waits (a reader that
// paused its pipe, another worker holding the lock) the watchdog is told
// that this is output, not Lua, and the wall-clock limit does not run;
// after SIGTERM only while the output moves (watchdog.ts check()).
let outputBusy: Int32Array | null = null;
// BLOCK_OUTPUT while writing: a count that moves with every write that took
// bytes, so the watchdog tells a slow reader from one that stopped reading.
let outMoves = 1;
const outMoved = (): void => {
  outMoves = (outMoves % 0x3fffffff) + 1;
  if (outputBusy) Atomics.store(outputBusy, BLOCK_OUTPUT, outMoves);
};

function write(fd: 1 | 2, bytes: Uint8Array): void {
  if (outputBusy) Atomics.store(outputBusy, BLOCK_OUTPUT, outMoves);
  // The lock holds its holder's thread id: the pool frees it if that thread is ended holding it.
  for (let held; (held = Atomics.compareExchange(lock, 0, 0, threadId)) !== 0; ) Atomics.wait(lock, 0, held, 10);
  try {
    sinks[fd].write(bytes);
  } catch (e) {
    // The script's output cannot be written (a full disk, an I/O error): not
    // the script's fault, and no restart mends it. riff says so and stops,
    // as tcpdump does; the sink takes nothing more.
    sinks[fd].closed = true;
    const name = sinks[fd].fd === 1 ? 'standard output' : 'standard error';
    post({ type: 'stop', why: 'output-failed', message: `${name}: ${errnoText(e)} writing the script's output; riff stops here, and what the script writes from now on is lost; free space, fix the device or redirect it elsewhere` });
  } finally {
    Atomics.store(lock, 0, 0);
    Atomics.notify(lock, 0, 1);
    if (outputBusy) Atomics.store(outputBusy, BLOCK_OUTPUT, 0);
  }
}

/**
 * The ring's bytes: in the VM's WebAssembly memory when it is shared (then
 * `offset` is the ring's address there), so batches reach Lua where the
 * capture thread wrote them; else a buffer of their own, copied into the VM
 * batch by batch.
 */
function placeRing(vm: LuaVM): RingShared {
  const { ctrl, bytes } = init.ring;
  const at = vm.wasm.memory.buffer instanceof SharedArrayBuffer ? vm.x.malloc(bytes) : 0;
  if (!at) return { data: new SharedArrayBuffer(bytes), ctrl };
  // Read after malloc: growing the memory gives it a longer buffer.
  return { data: vm.wasm.memory.buffer as unknown as SharedArrayBuffer, offset: at, bytes, ctrl };
}

async function main(): Promise<void> {
  init = (workerData as WorkerInit | null) ?? (await nextMessage<WorkerInit>());
  lock = new Int32Array(init.lock);
  counters = new Float64Array(init.counters);
  heap = new Float64Array(init.heap);
  sinks = { 1: new FdSink(init.outFd), 2: new FdSink(2) };
  sinks[1].onMove = sinks[2].onMove = outMoved;
  sinks[1].onClose = () => {
    if (!stopSent) post({ type: 'stop', why: 'stdout-closed' });
    stopSent = true;
  };
  let ring: RingConsumer;
  let shared: RingShared;
  let rt: Runtime;
  let config: { filter: string | null; outputs: string[] } = { filter: null, outputs: [] };
  let rule: string;
  let vm: LuaVM;
  let shard: Sharding;
  try {
    vm = await vmReady;
    shared = placeRing(vm);
    ring = new RingConsumer(shared);
    rt = await Runtime.create(
      {
        ...init.opts,
        write,
        record: init.records ? record : undefined,
        interrupted: () => ring.abandoned(),
        lazyBudget: true,
        worker: { index: init.index, count: init.workers },
        counters: new SharedCounters(init.sums, init.workers),
      },
      vm,
    );
    // From here the pool's watchdog sees this VM: loading the script has its time limit too.
    if (rt.watch) {
      outputBusy = new Int32Array(rt.watch.memory.buffer, rt.watch.block, BLOCK_WORDS);
      post({ type: 'watch', watch: rt.watch });
    }
    if (init.readConfig) config = rt.config();
    rule = rt.open();
    shard = rt.sharding();
    if (!init.hold) rt.notePerWorker(); // said once, not at every reload
  } catch (e) {
    post({ type: 'fail', message: e instanceof ScriptError ? e.message : `Lua runtime: ${(e as Error).message}` });
    return;
  }
  if (init.hold) {
    if (!rt.setup()) {
      post({ type: 'fail', message: 'its setup raised an error (shown above)' });
      return;
    }
    const start = nextMessage<PoolMessage>();
    post({ type: 'ready', rule, ...config, shard, ring: shared });
    const order = await start;
    if (order.type === 'start' && order.handover) rt.handover(order.handover);
    flushRecords();
  } else {
    post({ type: 'ready', rule, ...config, shard, ring: shared });
    rt.setup();
    flushRecords();
  }
  heap[0] = vm.memoryUsed;
  // This isolate's used_heap_size, as v8.getHeapStatistics() has it, without
  // loading node:v8 (~5 ms of a worker's start-up).
  heap[1] = process.memoryUsage().heapUsed;
  let heapAt = performance.now();
  const at = init.index * 2;
  let handed = 0;
  const prof = process.env.RIFF_PROFILE ? { wait: 0, lua: 0, t: performance.now(), ready: performance.now(), first: 0 } : null;
  for (;;) {
    if (prof) prof.t = performance.now();
    const b = ring.next(100);
    if (prof) prof.wait += performance.now() - prof.t;
    if (!b) {
      if (ring.closed()) break;
      continue;
    }
    if (!rt.stopRequested && !ring.abandoned()) {
      if (prof) {
        prof.t = performance.now();
        prof.first ||= prof.t - prof.ready;
      }
      // In the VM's memory, the batch's address is its offset in the buffer.
      handed += rt.process(b, shared.offset !== undefined ? b.buf.byteOffset : undefined);
      if (prof) prof.lua += performance.now() - prof.t;
      flushRecords();
      counters[at] = handed;
      counters[at + 1] = rt.packetErrors();
      heap[0] = vm.memoryUsed;
      if (performance.now() - heapAt > 1000) {
        heap[1] = process.memoryUsage().heapUsed;
        heapAt = performance.now();
      }
    }
    ring.release();
    if (rt.stopRequested && !stopSent) {
      stopSent = true;
      post({ type: 'stop', why: 'strict' });
    }
  }
  if (prof) write(2, Buffer.from(`riff: worker ${init.index}: ${prof.lua.toFixed(0)} ms in Lua batches, ${prof.wait.toFixed(0)} ms waiting for packets (the first ${prof.first.toFixed(0)} ms after ready)\n`));
  // With several workers: where the whole run ended, so this worker ends its flows as one worker would.
  const end = ring.end();
  if (end) rt.runEnd(end);
  const handover = rt.deinit(Atomics.load(new Int32Array(init.retiring), 0) === 1);
  // One answer from N workers: every worker's state goes to the pool, which
  // has worker 0 merge them and report once (src/vm/pool.ts finish()).
  const state = rt.collect();
  const go = nextMessage<PoolMessage>();
  post({ type: 'collected', state, handover });
  const order = await go;
  if (order.type === 'report') rt.report(order.states.filter((st): st is Uint8Array => st !== null && st.length > 0));
  const s = rt.summary();
  counters[at + 1] = s.packetErrors;
  post({ type: 'done', processed: s.processed, errors: s.packetErrors, hookErrors: s.errors - s.packetErrors, byScript: [...s.byScript] });
}

main()
  .catch((e) => post({ type: 'fail', message: `Lua worker: ${(e as Error).message}` }))
  // Done, or failed: nothing more is asked of this worker, and it ends on its own.
  .finally(() => port.off('message', onMessage));
