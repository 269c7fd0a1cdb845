// Where a script was when the Lua heap cap refused it memory. Lua raises
// "not enough memory" (LUA_ERRMEM) without calling the message handler, so
// the error carries no position, and by the time it reaches the driver the
// frames that asked for the memory are unwound. The allocator
// (src/vm/wasm/bridge.wat) therefore tells JS just before it refuses, and
// this module reads the running thread's call chain then, straight from the
// VM's memory, the way lua_getinfo would name "file:line".
//
// Why not lua_getinfo: the allocator runs inside Lua at any moment: in the
// middle of a table's rehash, of the collector, of a stack reallocation
// (the Lua 5.4 wasmoon builds reallocates a thread's stack in place and
// turns each frame's stack pointers into offsets meanwhile, ldo.c relstack:
// lua_getinfo would read them as addresses). This reader calls
// nothing, writes nothing, and takes offsets for offsets while the thread's
// own stack is the block being grown. Every read is bounds-checked; memory
// that does not read as Lua's frames gives no position, and Runtime checks
// once per VM that it names known lines right (else it is not used).
//
// Layouts: wasmoon's 32-bit build of Lua 5.4 (lstate.h, lobject.h); the
// lua_State and CallInfo offsets are the watchdog's.
import { LS } from './watchdog.js';

const STACK = 28; // lua_State.stack
const CI = { func: 0, previous: 8, savedpc: 16, callstatus: 34 } as const;
const CIST_C = 1 << 1;
const TT = 8; // TValue.tt_, after the 8-byte value
const LUA_VLCL = 0x46; // a Lua closure's tag in a TValue: function, variant 0, collectable
const CLOSURE_P = 12; // LClosure.p
const PROTO = { sizecode: 20, sizelineinfo: 24, sizeabslineinfo: 36, linedefined: 40, code: 52, lineinfo: 64, abslineinfo: 68, source: 76 } as const;
const TSTRING = { tt: 4, shrlen: 7, lnglen: 12, contents: 16 } as const;
const LUA_VSHRSTR = 4;
const LUA_VLNGSTR = 4 | (1 << 4);
/** ldebug.c: at most this many instructions between absolute line entries. */
const MAXIWTHABS = 128;
/** lua_getinfo's short_src holds this many bytes (LUA_IDSIZE, its NUL included). */
const IDSIZE = 60;
/** Frames looked at before giving up (a deep recursion is all script frames: the first is the one). */
const MAX_FRAMES = 1000;

class Reader {
  constructor(private readonly dv: DataView) {}
  private at(a: number, n: number): number {
    if (!Number.isInteger(a) || a <= 0 || a + n > this.dv.byteLength) throw new RangeError('outside the VM');
    return a;
  }
  u32(a: number): number {
    return this.dv.getUint32(this.at(a, 4), true);
  }
  i32(a: number): number {
    return this.dv.getInt32(this.at(a, 4), true);
  }
  u16(a: number): number {
    return this.dv.getUint16(this.at(a, 2), true);
  }
  u8(a: number): number {
    return this.dv.getUint8(this.at(a, 1));
  }
  i8(a: number): number {
    return this.dv.getInt8(this.at(a, 1));
  }
  bytes(a: number, n: number): Uint8Array {
    return new Uint8Array(this.dv.buffer, this.at(a, n), n);
  }
}

/** A Lua string's bytes (TString), copied. */
function stringAt(r: Reader, ts: number): Buffer {
  const tt = r.u8(ts + TSTRING.tt);
  let n: number;
  if (tt === LUA_VSHRSTR) n = r.u8(ts + TSTRING.shrlen);
  else if (tt === LUA_VLNGSTR) n = r.u32(ts + TSTRING.lnglen);
  else throw new RangeError('not a string');
  return Buffer.from(r.bytes(ts + TSTRING.contents, n));
}

/** luaG_getfuncline: the source line of instruction `pc` of Proto `p`, or -1. */
function lineOf(r: Reader, p: number, pc: number): number {
  const lineinfo = r.u32(p + PROTO.lineinfo);
  if (!lineinfo || !Number.isInteger(pc) || pc < -1 || pc >= r.i32(p + PROTO.sizecode) || pc >= r.i32(p + PROTO.sizelineinfo)) return -1;
  const nabs = r.i32(p + PROTO.sizeabslineinfo);
  const abs = r.u32(p + PROTO.abslineinfo);
  let basepc: number;
  let line: number;
  if (nabs <= 0 || pc < r.i32(abs)) {
    basepc = -1;
    line = r.i32(p + PROTO.linedefined);
  } else {
    let i = Math.max(Math.trunc(pc / MAXIWTHABS) - 1, 0);
    while (i + 1 < nabs && pc >= r.i32(abs + (i + 1) * 8)) i++;
    basepc = r.i32(abs + i * 8);
    line = r.i32(abs + i * 8 + 4);
  }
  while (basepc++ < pc) line += r.i8(lineinfo + basepc);
  return line;
}

/** luaO_chunkid: a chunk's name as error messages show it (lua_getinfo's short_src). */
export function shortSource(source: Buffer): Buffer {
  const first = source[0];
  if (first === 0x3d || first === 0x40) {
    // '=' literal, '@' file name
    if (source.length <= IDSIZE) return source.subarray(1);
    if (first === 0x3d) return source.subarray(1, IDSIZE);
    return Buffer.concat([Buffer.from('...'), source.subarray(source.length - (IDSIZE - 4))]);
  }
  const room = IDSIZE - '[string "..."]'.length - 1;
  const nl = source.indexOf(0x0a);
  if (source.length < room && nl < 0) return Buffer.concat([Buffer.from('[string "'), source, Buffer.from('"]')]);
  const n = Math.min(nl < 0 ? source.length : nl, room);
  return Buffer.concat([Buffer.from('[string "'), source.subarray(0, n), Buffer.from('..."]')]);
}

/**
 * "file:line" of the innermost Lua frame of thread L whose chunk is not one
 * of `skip` (riff's own: the driver, the sandbox), as msgh names a position;
 * null when there is none or the memory does not read as Lua's frames.
 * `growing`: the block the allocator is asked to grow (0 for a fresh one);
 * when it is L's stack, L's frames hold offsets into it (ldo.c relstack).
 */
export function scriptLine(memory: ArrayBuffer | SharedArrayBuffer, L: number, growing: number, skip: Buffer[]): Buffer | null {
  try {
    const r = new Reader(new DataView(memory));
    const stack = r.u32(L + STACK);
    const relative = growing !== 0 && growing === stack;
    let ci = r.u32(L + LS.ci);
    for (let n = 0; ci && n < MAX_FRAMES; n++, ci = r.u32(ci + CI.previous)) {
      if (r.u16(ci + CI.callstatus) & CIST_C) continue;
      const func = relative ? stack + r.u32(ci + CI.func) : r.u32(ci + CI.func);
      if (r.u8(func + TT) !== LUA_VLCL) continue;
      const p = r.u32(r.u32(func) + CLOSURE_P);
      const source = stringAt(r, r.u32(p + PROTO.source));
      if (skip.some((s) => s.equals(source))) continue;
      const pc = (r.u32(ci + CI.savedpc) - r.u32(p + PROTO.code)) / 4 - 1;
      const line = lineOf(r, p, pc);
      if (line <= 0) continue;
      return Buffer.concat([shortSource(source), Buffer.from(`:${line}`)]);
    }
  } catch {
    // Not Lua's frames as this module knows them: no position.
  }
  return null;
}
