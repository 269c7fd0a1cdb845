// Records: what Lua hands riff through riff.emit(type, fields). The bytes are
// encoded by lua/riff/record.lua (the wire format is described there) and
// decoded here into plain JavaScript values that keep Lua's distinctions:
//
//   Lua string   -> Buffer  (bytes, never assumed to be text)
//   Lua integer  -> bigint  (all 64 bits, and told apart from floats)
//   Lua float    -> number
//   boolean      -> boolean
//   table 1..n   -> Value[]
//   other table  -> { [key: string]: Value }
//
// Use plain() for a friendlier view (integers as numbers where exact, bytes
// as text when they are valid UTF-8).

export type Value = boolean | bigint | number | Buffer | Value[] | Fields;
export interface Fields {
  [key: string]: Value;
}

export interface RecordData {
  /** The record type, riff.emit's first argument. */
  type: string;
  /** Seconds since the epoch (float). */
  ts: number;
  /** The same time, exactly: seconds and nanoseconds. */
  sec: number;
  nsec: number;
  /** 'packet': the capture time of the packet being processed; 'wall': the time riff received it. */
  clock: 'packet' | 'wall';
  fields: Fields;
}

export const RECORD_VERSION = 1;
const MAX_DEPTH = 64;

export class RecordDecodeError extends Error {}

/** A JS "now" split as sec/nsec. */
export function wallClock(ms = Date.now()): { sec: number; nsec: number } {
  const sec = Math.floor(ms / 1000);
  return { sec, nsec: Math.round((ms - sec * 1000) * 1e6) };
}

/** Set a key on a plain object, even '__proto__'. */
export function setKey(obj: Fields, key: string, v: Value): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true });
  else obj[key] = v;
}

/**
 * Decode one record. `now` (ms since the epoch) stamps records emitted
 * outside a packet: pass the time the record left Lua when decoding happens
 * later or on another thread (e.g. the time a worker posted it).
 * Accepts a Uint8Array as a worker's message delivers it (no copy).
 */
export function decodeRecord(input: Uint8Array, now: number = Date.now()): RecordData {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  let off = 0;
  const need = (n: number) => {
    if (off + n > buf.length) throw new RecordDecodeError(`record truncated at byte ${off} (needs ${n} more of ${buf.length})`);
  };
  const u8 = () => {
    need(1);
    return buf[off++];
  };
  const u32 = () => {
    need(4);
    const v = buf.readUInt32LE(off);
    off += 4;
    return v;
  };
  const bytes = (n: number) => {
    need(n);
    // A copy: the caller's buffer may be reused.
    const b = Buffer.from(buf.subarray(off, off + n));
    off += n;
    return b;
  };
  const text = (n: number) => {
    need(n);
    const s = buf.toString('utf8', off, off + n);
    off += n;
    return s;
  };

  const value = (depth: number): Value => {
    if (depth > MAX_DEPTH) throw new RecordDecodeError('record nested too deep');
    const tag = u8();
    switch (tag) {
      case 0x46: // F
        return false;
      case 0x54: // T
        return true;
      case 0x69: {
        // i
        need(8);
        const v = buf.readBigInt64LE(off);
        off += 8;
        return v;
      }
      case 0x64: {
        // d
        need(8);
        const v = buf.readDoubleLE(off);
        off += 8;
        return v;
      }
      case 0x73: // s
        return bytes(u32());
      case 0x61: {
        // a
        const n = u32();
        if (n > buf.length - off) throw new RecordDecodeError(`array of ${n} cannot fit in the record`);
        const arr: Value[] = new Array(n);
        for (let i = 0; i < n; i++) arr[i] = value(depth + 1);
        return arr;
      }
      case 0x6d: // m
        return map(depth);
      default:
        throw new RecordDecodeError(`unknown value tag 0x${tag.toString(16)} at byte ${off - 1}`);
    }
  };
  const map = (depth: number): Fields => {
    const n = u32();
    if (n > buf.length - off) throw new RecordDecodeError(`map of ${n} cannot fit in the record`);
    const obj: Fields = {};
    for (let i = 0; i < n; i++) {
      const k = text(u32());
      setKey(obj, k, value(depth + 1));
    }
    return obj;
  };

  const version = u8();
  if (version !== RECORD_VERSION) throw new RecordDecodeError(`record format version ${version}, riff reads ${RECORD_VERSION}`);
  let sec: number;
  let nsec: number;
  let clock: 'packet' | 'wall';
  const t = u8();
  if (t === 0x50) {
    // P
    need(12);
    sec = Number(buf.readBigInt64LE(off));
    nsec = buf.readUInt32LE(off + 8);
    off += 12;
    clock = 'packet';
  } else if (t === 0x57) {
    // W
    ({ sec, nsec } = wallClock(now));
    clock = 'wall';
  } else throw new RecordDecodeError(`unknown time tag 0x${t.toString(16)}`);
  need(2);
  const tlen = buf.readUInt16LE(off);
  off += 2;
  const type = text(tlen);
  if (u8() !== 0x6d) throw new RecordDecodeError('record fields are not a map');
  const fields = map(0);
  if (off !== buf.length) throw new RecordDecodeError(`${buf.length - off} bytes left over after the record`);
  return { type, ts: sec + nsec / 1e9, sec, nsec, clock, fields };
}

// ---------------------------------------------------------------------------
// Helpers shared by the outputs.
// ---------------------------------------------------------------------------

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The bytes as a string if they are valid UTF-8, else null. */
export function utf8OrNull(b: Buffer): string | null {
  try {
    return utf8.decode(b);
  } catch {
    return null;
  }
}

/** Bytes as text for humans: valid UTF-8 as is, other bytes as \xHH (and '\' as '\\'). */
export function escapeBytes(b: Buffer): string {
  const s = utf8OrNull(b);
  if (s !== null && !s.includes('\\')) return s;
  if (s !== null) return s.replace(/\\/g, '\\\\');
  // Walk the bytes: keep well-formed UTF-8 sequences, escape the rest.
  let out = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let n = 0;
    if (c < 0x80) n = 1;
    else if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) n = 3;
    else if (c >= 0xf0 && c <= 0xf4) n = 4;
    if (n > 0 && i + n <= b.length) {
      const seq = utf8OrNull(b.subarray(i, i + n));
      if (seq !== null) {
        out += seq === '\\' ? '\\\\' : seq;
        i += n;
        continue;
      }
    }
    out += '\\x' + c.toString(16).padStart(2, '0');
    i++;
  }
  return out;
}

/** Integers as numbers where exact, byte strings as text where valid UTF-8. */
export function plain(v: Value): unknown {
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  if (Buffer.isBuffer(v)) return utf8OrNull(v) ?? v;
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) setKey(o as Fields, k, plain(x) as Value);
    return o;
  }
  return v;
}

/** Lua float text: integral floats keep a '.0' so they read back as floats; NaN/inf as JSON null. */
export function floatText(n: number): string {
  if (!Number.isFinite(n)) return 'null';
  if (Object.is(n, -0)) return '-0.0';
  const s = String(n);
  return Number.isInteger(n) && !/[eE]/.test(s) ? s + '.0' : s;
}
