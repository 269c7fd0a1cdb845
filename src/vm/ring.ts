// A single-producer, single-consumer ring of packet batches in shared
// memory: the capture thread writes batches in place (the file reader fills
// the ring directly), a Lua worker reads them in place. Nothing is copied
// between the two threads and the capture never waits for Lua unless it is
// reading a file (backpressure instead of loss); live capture drops whole
// batches when the ring is full and counts them.
//
// A worker's ring lies in its Lua VM's WebAssembly memory (shared memory, see
// src/vm/wasm.ts), so the capture thread writes packets where Lua reads
// them: the worker hands a batch to Lua without copying it first.
//
// Layout of a slot: u32 payload bytes, u32 packet count, then the batch
// records (src/capture/batch.ts). A slot never wraps: when the room at the
// end is too small the producer writes a WRAP marker and starts at 0.
import { copyBytes, nativeOrNull } from '../capture/native.js';
import { Batch } from '../capture/batch.js';

const SLOT_HDR = 8;
const WRAP = 0xffffffff;
// Control words (Int32Array over their own SharedArrayBuffer).
const WPOS = 0;
const RPOS = 1;
const USED = 2; // bytes in use, markers and wasted tails included
const SEQ = 3; // bumped on every publish; the consumer waits on it
const CLOSED = 4;
const ABANDON = 5; // Ctrl-C: the consumer skips what is left
const HELD = 6; // bytes of the slot the consumer holds (and the wrap skipped before it), part of USED
// Where the whole run ended, set before CLOSED (several workers): the capture
// times (seconds low, high, nanoseconds) of its last packet and of its last
// TCP/UDP packet, and END_SET.
const END = 8;
const END_SET = 14;
const CTRL_WORDS = 16;

/** The run's last packet and last TCP/UDP packet, as [seconds, nanoseconds] (null: none). */
export interface RunEnd {
  last: [number, number] | null;
  flow: [number, number] | null;
}

type WaitAsync = (a: Int32Array, i: number, v: number, ms: number) => { async: boolean; value: Promise<string> | string };

export interface RingShared {
  data: SharedArrayBuffer;
  /** Where the ring's bytes lie in `data` (default: all of it). */
  offset?: number;
  bytes?: number;
  ctrl: SharedArrayBuffer;
}

/** A ring's control words; its bytes are the consumer's to place (a worker puts them in its WebAssembly memory). */
export function newRingControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(CTRL_WORDS * 4);
}

class RingBase {
  protected readonly u8: Buffer;
  protected readonly dv: DataView;
  protected readonly ctl: Int32Array;
  protected readonly size: number;

  constructor(shared: RingShared) {
    const offset = shared.offset ?? 0;
    const bytes = shared.bytes ?? shared.data.byteLength - offset;
    this.u8 = Buffer.from(shared.data, offset, bytes);
    this.dv = new DataView(shared.data, offset, bytes);
    this.ctl = new Int32Array(shared.ctrl);
    this.size = bytes;
  }

  get used(): number {
    return Atomics.load(this.ctl, USED);
  }
}

export class RingProducer extends RingBase {
  private pending: { at: number; skipped: number; batch: Batch } | null = null;
  /** Called every few ms while waiting for room (the budget's watchdog looks then). */
  onWait: (() => void) | null = null;

  constructor(shared: RingShared) {
    super(shared);
    // The addon copies batches in; load it now rather than under the first
    // live packets.
    nativeOrNull();
  }

  /** Bytes of the ring. */
  get capacity(): number {
    return this.size;
  }

  /** Is `b` the batch reserve() handed out last, still in the ring? */
  owns(b: Batch): boolean {
    return this.pending?.batch === b && b.buf.buffer === this.u8.buffer;
  }

  /** Forget the reserved batch (nothing was published). */
  cancel(): void {
    this.pending = null;
  }

  /** Largest batch the ring takes in one slot. */
  get maxBatch(): number {
    return Math.floor(this.size / 4);
  }

  /**
   * A batch writing straight into the ring, with room for at least `min`
   * bytes. While the ring is full it waits up to `waitMs` (file reading:
   * the caller retries after letting its event loop run), then returns null;
   * live capture passes 0 and drops what does not fit.
   */
  reserve(min: number, waitMs: number, want = 1 << 20): Batch | null {
    const need = SLOT_HDR + min;
    const until = performance.now() + waitMs;
    for (;;) {
      let wpos = Atomics.load(this.ctl, WPOS);
      const used = Atomics.load(this.ctl, USED);
      if (used === 0 && wpos !== 0) {
        // Empty: both positions back to the start. The ring's bytes lie in
        // the VM's memory, whose pages stay resident once written, so a
        // ring that Lua keeps up with then keeps its backlog's high-water
        // mark resident, not all of it (64 MiB per VM, a new VM's at every
        // reload). The consumer holds nothing and reads RPOS only once
        // USED is above 0 again, which this thread makes so after these
        // stores; nothing is skipped, so no room is lost.
        Atomics.store(this.ctl, RPOS, 0);
        Atomics.store(this.ctl, WPOS, 0);
        wpos = 0;
      }
      const free = this.size - used;
      const tail = this.size - wpos;
      let at = wpos;
      let skipped = 0;
      if (tail < need) {
        at = 0;
        skipped = tail;
      }
      // The region [at, at + room) must be free: before the reader when it
      // is ahead of us, or up to the end otherwise.
      const room = Math.min(want + SLOT_HDR, free - skipped, at === 0 && skipped ? this.size : tail);
      if (room >= need) {
        const b = Batch.over(this.u8.subarray(at + SLOT_HDR, at + room));
        this.pending = { at, skipped, batch: b };
        return b;
      }
      const left = until - performance.now();
      if (left <= 0 || Atomics.load(this.ctl, CLOSED)) return null;
      Atomics.wait(this.ctl, USED, used, Math.min(left, 20));
      this.onWait?.();
    }
  }

  /** Publish the reserved batch (it may have grown out of the ring: then it is copied in). */
  commit(batch: Batch, waitMs: number): boolean {
    const p = this.pending;
    this.pending = null;
    if (!p || p.batch !== batch) throw new Error('ring: commit without reserve');
    if (batch.count === 0) return true;
    if (batch.buf.buffer !== this.u8.buffer) {
      // A packet too big for the reserved room made the batch grow: copy it.
      return this.push(batch, waitMs);
    }
    const { at, skipped } = p;
    if (skipped) {
      if (skipped >= 4) this.dv.setUint32(this.size - skipped, WRAP, true);
    }
    this.dv.setUint32(at, batch.bytes, true);
    this.dv.setUint32(at + 4, batch.count, true);
    const slot = SLOT_HDR + batch.bytes;
    Atomics.store(this.ctl, WPOS, (at + slot) % this.size);
    Atomics.add(this.ctl, USED, skipped + slot);
    Atomics.add(this.ctl, SEQ, 1);
    Atomics.notify(this.ctl, SEQ);
    return true;
  }

  /**
   * Resolves when the consumer has freed some room, or after `ms`: the
   * capture thread's wait for a full ring, without blocking its event loop.
   */
  async room(ms: number): Promise<void> {
    const used = Atomics.load(this.ctl, USED);
    if (used === 0 || Atomics.load(this.ctl, CLOSED)) return;
    const w = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync(this.ctl, USED, used, ms);
    if (w.async) await w.value;
  }

  /**
   * The batches queued behind the one the consumer holds, copied out (the
   * consumer is gone: its worker was ended, and they go to its successor).
   */
  queued(): Batch[] {
    const out: Batch[] = [];
    let left = Atomics.load(this.ctl, USED) - Atomics.load(this.ctl, HELD);
    let pos = Atomics.load(this.ctl, RPOS);
    while (left > 0) {
      if (this.size - pos < SLOT_HDR || this.dv.getUint32(pos, true) === WRAP) {
        left -= this.size - pos;
        pos = 0;
        continue;
      }
      const bytes = this.dv.getUint32(pos, true);
      const count = this.dv.getUint32(pos + 4, true);
      if (SLOT_HDR + bytes > left || pos + SLOT_HDR + bytes > this.size) break; // not a slot: stop rather than misread
      const b = Batch.over(Buffer.from(this.u8.subarray(pos + SLOT_HDR, pos + SLOT_HDR + bytes)));
      b.count = count;
      b.bytes = bytes;
      out.push(b);
      left -= SLOT_HDR + bytes;
      pos = (pos + SLOT_HDR + bytes) % this.size;
    }
    return out;
  }

  /** Copy a whole batch in (live capture, sharding). False when there was no room in time. */
  push(batch: Batch, waitMs: number): boolean {
    if (batch.count === 0) return true;
    const into = this.reserve(batch.bytes, waitMs, batch.bytes);
    if (!into) return false;
    copyBytes(into.buf, 0, batch.buf, 0, batch.bytes);
    into.count = batch.count;
    into.bytes = batch.bytes;
    return this.commit(into, waitMs);
  }

  /** Ctrl-C: the consumer drops what is still queued instead of running it. */
  abandon(): void {
    Atomics.store(this.ctl, ABANDON, 1);
  }

  /** No more batches; `end`: where the whole run ended, for the worker's deinit. */
  close(end?: RunEnd): void {
    if (end) {
      const put = (at: number, t: [number, number] | null) => {
        if (!t) return Atomics.store(this.ctl, at + 2, -1);
        Atomics.store(this.ctl, at, t[0] % 4294967296 | 0);
        Atomics.store(this.ctl, at + 1, Math.floor(t[0] / 4294967296));
        Atomics.store(this.ctl, at + 2, t[1]);
      };
      put(END, end.last);
      put(END + 3, end.flow);
      Atomics.store(this.ctl, END_SET, 1);
    }
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.add(this.ctl, SEQ, 1);
    Atomics.notify(this.ctl, SEQ);
  }
}

export class RingConsumer extends RingBase {
  private held = 0;

  /**
   * The next batch, read in place; valid until release(). Null when the ring
   * is closed and empty, or when `timeoutMs` passed with nothing to read
   * (check closed()).
   */
  next(timeoutMs: number): Batch | null {
    for (;;) {
      const seq = Atomics.load(this.ctl, SEQ);
      if (Atomics.load(this.ctl, USED) > 0) break;
      if (Atomics.load(this.ctl, CLOSED)) return null;
      if (Atomics.wait(this.ctl, SEQ, seq, timeoutMs) === 'timed-out') return null;
    }
    let rpos = Atomics.load(this.ctl, RPOS);
    let skipped = 0;
    if (this.size - rpos < SLOT_HDR || this.dv.getUint32(rpos, true) === WRAP) {
      skipped = this.size - rpos;
      rpos = 0;
    }
    const bytes = this.dv.getUint32(rpos, true);
    const count = this.dv.getUint32(rpos + 4, true);
    this.held = skipped + SLOT_HDR + bytes;
    Atomics.store(this.ctl, HELD, this.held);
    Atomics.store(this.ctl, RPOS, (rpos + SLOT_HDR + bytes) % this.size);
    const b = Batch.over(this.u8.subarray(rpos + SLOT_HDR, rpos + SLOT_HDR + bytes));
    b.count = count;
    b.bytes = bytes;
    return b;
  }

  release(): void {
    if (!this.held) return;
    Atomics.store(this.ctl, HELD, 0);
    Atomics.sub(this.ctl, USED, this.held);
    this.held = 0;
    Atomics.notify(this.ctl, USED);
  }

  abandoned(): boolean {
    return Atomics.load(this.ctl, ABANDON) === 1;
  }

  closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) === 1 && Atomics.load(this.ctl, USED) === 0;
  }

  /** Where the whole run ended, when the producer said so at close. */
  end(): RunEnd | null {
    if (Atomics.load(this.ctl, END_SET) !== 1) return null;
    const get = (at: number): [number, number] | null =>
      Atomics.load(this.ctl, at + 2) < 0 ? null : [(Atomics.load(this.ctl, at) >>> 0) + Atomics.load(this.ctl, at + 1) * 4294967296, Atomics.load(this.ctl, at + 2)];
    return { last: get(END), flow: get(END + 3) };
  }
}
