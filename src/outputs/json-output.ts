// --output json:- (stdout) and json:FILE (appended): JSON lines, one record
// per line:
//
//   {"ts":1504850400.500000000,"type":"dns","host":"box","qname":"example.com",...}
//
// - ts: seconds since the epoch as a JSON number, written with all nine
//   nanosecond digits (exact as text; a double keeps about a microsecond).
//   It is the packet's capture time for records emitted during a packet,
//   the last packet's after the packets (deinit), else (setup) the wall
//   time riff received the record.
// - type: riff.emit's first argument; host: os.hostname().
// - then the record's fields. A field named ts, type or host, with or
//   without leading '_'s, gets one more leading '_' (ts -> _ts, _ts -> __ts),
//   so names never collide and fromJsonLine() can undo it.
// - Lua integers are JSON integers (all 64 bits, as digits); Lua floats
//   always have a '.' or an exponent (3.0 stays 3.0). riff.emit refuses NaN
//   and infinities (lua/riff/record.lua), so none reach an output.
// - Byte strings: the output is always valid UTF-8 and round-trips exactly.
//   A string whose bytes are valid UTF-8 is a JSON string. Any other is
//   {"$bytes":"<base64 of the bytes>"}. A Lua table that itself has exactly
//   one key, "$bytes" or "$map", is written wrapped as {"$map":{...}} so it
//   cannot be mistaken for one. fromJson() undoes all of this.
//
// Lines are buffered and written at least every second (on the next record,
// or by a timer when riff is idle), when 64 KiB are pending, and at close.
// A write that fails (disk full, device error) is an OutputFault: the file is
// cut back to its last whole line, so it holds every record written before
// and no torn line, and the lines that did not make it are counted as lost.
import fs from 'node:fs';
import os from 'node:os';
import { FdSink, openForWriting, StoppedWaiting, stdout } from './fd-sink.js';
import { floatText, setKey, utf8OrNull, type Fields, type RecordData, type Value } from './records.js';
import type { OutputStats, RecordOutput } from './types.js';
import { specError, errnoText, stillNames, Losses, OutputFault, STDOUT_CLOSED, STDOUT_STALLED, READER_STALLED } from './types.js';

const RESERVED = new Set(['ts', 'type', 'host']);
const FLUSH_BYTES = 1 << 16;
const FLUSH_MS = 1000;

/** Append v as JSON text, by the byte-string rule above. */
export function jsonValue(v: Value, out: string[]): void {
  if (typeof v === 'bigint') out.push(v.toString());
  else if (typeof v === 'number') out.push(floatText(v));
  else if (typeof v === 'boolean') out.push(v ? 'true' : 'false');
  else if (Buffer.isBuffer(v)) {
    const s = utf8OrNull(v);
    out.push(s !== null ? JSON.stringify(s) : `{"$bytes":"${v.toString('base64')}"}`);
  } else if (Array.isArray(v)) {
    out.push('[');
    v.forEach((x, i) => {
      if (i) out.push(',');
      jsonValue(x, out);
    });
    out.push(']');
  } else if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    const wrap = keys.length === 1 && (keys[0] === '$bytes' || keys[0] === '$map');
    out.push(wrap ? '{"$map":{' : '{');
    keys.forEach((k, i) => {
      if (i) out.push(',');
      out.push(JSON.stringify(k), ':');
      jsonValue(v[k], out);
    });
    out.push(wrap ? '}}' : '}');
  } else out.push('null');
}

function tsText(sec: number, nsec: number): string {
  if (sec < 0 && nsec > 0) return (sec + nsec / 1e9).toFixed(9);
  return `${sec}.${String(nsec).padStart(9, '0')}`;
}

/** A field's name at the top level of a line: _*(ts|type|host) gets one more '_'. */
export function fieldName(k: string): string {
  return RESERVED.has(k.replace(/^_+/, '')) ? '_' + k : k;
}

/** One record as a JSON line (without the newline). */
export function toJsonLine(rec: RecordData, host: string = os.hostname()): string {
  const out: string[] = ['{"ts":', tsText(rec.sec, rec.nsec), ',"type":', JSON.stringify(rec.type), ',"host":', JSON.stringify(host)];
  for (const k of Object.keys(rec.fields)) {
    out.push(',', JSON.stringify(fieldName(k)), ':');
    jsonValue(rec.fields[k], out);
  }
  out.push('}');
  return out.join('');
}

/**
 * Undo the byte-string rule on a parsed JSON value: {"$bytes": b64} -> Buffer,
 * {"$map": {...}} -> that map, strings -> Buffers of their UTF-8. Integers
 * stay JSON numbers (parse with a bigint-aware reader if they may pass 2^53).
 */
export function fromJson(v: unknown): unknown {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (Array.isArray(v)) return v.map(fromJson);
  if (v && typeof v === 'object') {
    const keys = Object.keys(v);
    const o = v as Record<string, unknown>;
    if (keys.length === 1 && keys[0] === '$bytes' && typeof o.$bytes === 'string') return Buffer.from(o.$bytes, 'base64');
    const src = keys.length === 1 && keys[0] === '$map' && o.$map && typeof o.$map === 'object' ? (o.$map as Record<string, unknown>) : o;
    const r: Fields = {};
    for (const k of Object.keys(src)) setKey(r, k, fromJson(src[k]) as Value);
    return r;
  }
  return v;
}

/** Parse one line back: ts, type, host and the fields as the record had them. */
export function fromJsonLine(line: string): { ts: number; type: string; host: string; fields: Fields } {
  const o = JSON.parse(line) as Record<string, unknown>;
  const fields: Fields = {};
  for (const k of Object.keys(o)) {
    if (RESERVED.has(k)) continue;
    const name = RESERVED.has(k.replace(/^_+/, '')) ? k.slice(1) : k;
    setKey(fields, name, fromJson(o[k]) as Value);
  }
  return { ts: o.ts as number, type: o.type as string, host: o.host as string, fields };
}

export class JsonOutput implements RecordOutput {
  private pending: string[] = [];
  private pendingBytes = 0;
  private lastFlush = Date.now();
  private timer: NodeJS.Timeout;
  private written = 0;
  private closed = false;
  private failed = false;
  private failure = '';
  private readonly losses = new Losses();
  onAsyncFault: ((e: unknown) => void) | null = null;
  private readonly host = os.hostname();
  private fd: number | null;
  private sink: FdSink;

  /** target: '-' for stdout, else a file path (created if needed, appended to). */
  constructor(
    readonly spec: string,
    private readonly target: string,
  ) {
    if (target === '-') {
      this.fd = null;
      this.sink = stdout;
    } else {
      try {
        this.fd = openForWriting(target, 'a');
      } catch (e) {
        if (e instanceof StoppedWaiting) throw new StoppedWaiting(`--output ${spec}: ${e.message}`);
        throw specError(spec, `cannot open ${target} for appending (${(e as Error).message}); check the path and permissions`);
      }
      this.sink = new FdSink(this.fd);
    }
    this.timer = setInterval(() => {
      try {
        this.flush();
      } catch (e) {
        this.onAsyncFault?.(e);
      }
    }, FLUSH_MS);
    this.timer.unref();
    // A safety net for process.exit(): the writes are synchronous.
    process.on('exit', this.onExit);
  }

  // At exit a fault has nobody left to tell.
  private readonly onExit = () => {
    try {
      this.close();
    } catch {}
  };

  write(rec: RecordData): void {
    if (this.failed) return this.losses.add(this.failure);
    if (this.closed) return;
    const line = toJsonLine(rec, this.host) + '\n';
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes >= FLUSH_BYTES || Date.now() - this.lastFlush >= FLUSH_MS) this.flush();
  }

  flush(): void {
    this.lastFlush = Date.now();
    if (!this.pending.length || this.failed) return;
    const lines = this.pending.length;
    const data = Buffer.from(this.pending.join(''), 'utf8');
    this.pending = [];
    this.pendingBytes = 0;
    let start = -1;
    if (this.fd !== null) {
      try {
        start = fs.fstatSync(this.fd).size;
      } catch {}
    }
    let n = 0;
    try {
      n = this.sink.write(data);
    } catch (e) {
      this.fail(e, data, lines, start);
    }
    // The lines that went out whole are written; a reader given up on or gone took only part of the rest.
    const whole = n === data.length ? lines : wholeLines(data, n);
    this.written += whole;
    if (whole < lines) this.losses.add(this.sink.gaveUp ? (this.sink === stdout ? STDOUT_STALLED : READER_STALLED) : STDOUT_CLOSED, lines - whole);
  }

  private fail(e: unknown, data: Buffer, lines: number, start: number): never {
    this.failed = true;
    clearInterval(this.timer);
    const done = (e as { bytesWritten?: number }).bytesWritten ?? 0;
    let keep = done > 0 ? data.lastIndexOf(10, done - 1) + 1 : 0;
    if (this.fd !== null && start >= 0) {
      try {
        fs.ftruncateSync(this.fd, start + keep);
      } catch {
        keep = 0; // what is there stays; count nothing of it as written
      }
    }
    const whole = wholeLines(data, keep);
    this.written += whole;
    const what = errnoText(e);
    this.failure = what;
    this.losses.add(what, lines - whole);
    const where = this.fd === null ? 'standard output' : this.target;
    throw new OutputFault(
      `--output ${this.spec}: ${what} writing ${where}; the ${this.written} records written before are kept (whole lines), the rest are counted as lost; free space or send records elsewhere`,
      what,
    );
  }

  /**
   * logrotate (SIGUSR1): pending lines go to the file as it was (moved away
   * by now), later ones to a new file at the same path. Lines leave whole,
   * so none is cut or doubled. A file still at its path (not rotated) is
   * kept. Nothing to do for stdout. True when a new file was opened.
   */
  reopen(): boolean {
    if (this.closed || this.fd === null || this.failed) return false;
    this.flush();
    if (stillNames(this.target, this.fd)) return false;
    let fd: number;
    try {
      fd = openForWriting(this.target, 'a');
    } catch (e) {
      throw specError(this.spec, `cannot reopen ${this.target} (${(e as Error).message}); still writing to the file opened before`);
    }
    this.sink.release();
    fs.closeSync(this.fd);
    this.fd = fd;
    this.sink = new FdSink(fd);
    return true;
  }

  close(): void {
    if (this.closed) return;
    try {
      this.flush();
    } finally {
      this.closed = true;
      clearInterval(this.timer);
      process.off('exit', this.onExit);
      if (this.fd !== null) {
        this.sink.release();
        fs.closeSync(this.fd);
      }
    }
  }

  stats(): OutputStats {
    return { written: this.written, dropped: this.losses.total, queued: this.pending.length, lost: this.losses.record() };
  }
}

/** The lines (each ending in \n) whole within data's first n bytes. */
function wholeLines(data: Buffer, n: number): number {
  let whole = 0;
  for (let i = data.indexOf(10); i >= 0 && i < n; i = data.indexOf(10, i + 1)) whole++;
  return whole;
}
