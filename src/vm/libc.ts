// The host half of the C library inside riff's Lua module: the 27 functions
// wasmoon's WebAssembly build (Emscripten, musl) imports, written for riff.
//
// wasmoon ships them as Emscripten's JS glue: 150 KB that every Lua worker
// had to read, compile and run (a whole in-memory file system, a TTY layer,
// ~150 cwraps), and that read glue.wasm from disk once more only to throw it
// away. riff calls the module's exports directly (src/vm/wasm.ts), so all it
// needs of that glue is this import object and the few steps of Emscripten's
// runtime start (start()).
//
// Each function keeps the semantics of the Emscripten version wasmoon 1.16
// was built with (its dist/index.js; Emscripten's src/library.js,
// library_wasi.js, library_fs.js and library_tty.js are the readable
// sources), quirks included, wherever Lua can reach it through riff's
// sandbox or riff itself does: time and dates (os.time, os.date, os.clock),
// the environment C sees, setjmp/longjmp (Lua's errors), memory growth, and
// C's writes to stdout and stderr. test/libc.test.ts runs the same Lua
// through wasmoon's own glue and through this, and compares.
//
// What the sandbox (lua/riff/sandbox.lua) denies -- files, processes, the
// environment, os.exit -- is refused here too, where the glue would have
// served it from its in-memory file system or Node: a path operation fails
// with ENOSYS, a descriptor other than stdout and stderr is EBADF, and
// system() never runs anything.

/** What this module needs of the instance, once it exists. */
export interface LibcExports {
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  __indirect_function_table: { get(i: number): ((...a: number[]) => unknown) | null };
  __wasm_call_ctors(): void;
  emscripten_stack_init(): void;
  emscripten_stack_get_end(): number;
  stackSave(): number;
  stackRestore(sp: number): void;
  setThrew(threw: number, value: number): void;
  malloc(size: number): number;
  __errno_location(): number;
}

type Imports = Record<string, Record<string, (...a: never[]) => unknown>>;

// errno values of Emscripten's musl (WASI's numbering).
const EBADF = 8;
const EINVAL = 28;
const ENOSYS = 52;
const EOVERFLOW = 61;
const ESPIPE = 70;

/** Emscripten's heap limit for this build (its getHeapMax(); the module's own maximum is the same 2 GiB). */
const HEAP_MAX = 2147483648;
const WASM_PAGE = 65536;

const RuntimeError = (globalThis as unknown as { WebAssembly: { RuntimeError: new (m: string) => Error } }).WebAssembly.RuntimeError;

/**
 * One instance's C library host side. imports() is what the module is
 * instantiated with; attach() hands it the instance's exports (the imports
 * are only called after that: from start() on).
 */
export class Libc {
  private x!: LibcExports;
  /** Views of memory, replaced when growth replaces its buffer. */
  private buffer: ArrayBuffer | null = null;
  private u8!: Uint8Array;
  private i8!: Int8Array;
  private i32!: Int32Array;
  private u32!: Uint32Array;
  /** Pending bytes of a line written to fd 1 and fd 2 (Emscripten's TTY keeps them until a newline). */
  private readonly lines: Record<number, number[]> = { 1: [], 2: [] };
  /** fd 1 and fd 2 while open; closing one flushes its pending line. */
  private readonly open = new Set([1, 2]);
  /** The decoder's warnings given (Emscripten's warnOnce: once per instance). */
  private readonly warned = new Set<string>();

  attach(x: LibcExports): void {
    this.x = x;
  }

  private heap(): void {
    const b = this.x.memory.buffer;
    if (b === this.buffer) return;
    this.buffer = b;
    this.u8 = new Uint8Array(b);
    this.i8 = new Int8Array(b);
    this.i32 = new Int32Array(b);
    this.u32 = new Uint32Array(b);
  }

  /**
   * What Emscripten's run() does once the module is instantiated (wasmoon
   * sets no preRun or postRun of its own): the stack's bounds, the cookies
   * its assertions check (written so memory holds what it held under
   * wasmoon's glue, address 0 included), then the C constructors -- among
   * them musl's environ, read through environ_sizes_get/environ_get.
   */
  start(): void {
    const x = this.x;
    x.emscripten_stack_init();
    this.heap();
    let end = x.emscripten_stack_get_end();
    if (end === 0) end += 4;
    this.u32[end >> 2] = 0x02135467;
    this.u32[(end + 4) >> 2] = 0x89bacdfe;
    this.u32[0] = 0x63736d65; // "emsc"
    x.__wasm_call_ctors();
  }

  private setErrno(e: number): void {
    this.heap();
    this.i32[this.x.__errno_location() >> 2] = e;
  }

  /** A NUL-terminated string in memory, decoded as Emscripten's UTF8ToString does (the strings read here are ASCII). */
  private cString(p: number): string {
    if (!p) return '';
    this.heap();
    let end = p;
    while (this.u8[end]) end++;
    return decodeUtf8(this.u8.subarray(p, end), this.warned);
  }

  /** A JS string copied into a fresh malloc'd block (Emscripten's stringToNewUTF8). */
  private newCString(s: string): number {
    const bytes = Buffer.from(s + '\0', 'utf8');
    const p = this.x.malloc(bytes.length);
    this.heap();
    if (p) this.u8.set(bytes, p);
    return p;
  }

  /** A struct tm at p (musl's layout: nine ints, then tm_gmtoff and tm_zone). */
  private readTm(p: number): Tm {
    this.heap();
    const i = this.i32;
    const zone = this.u32[(p + 40) >> 2];
    return {
      sec: i[p >> 2], min: i[(p + 4) >> 2], hour: i[(p + 8) >> 2], mday: i[(p + 12) >> 2], mon: i[(p + 16) >> 2],
      year: i[(p + 20) >> 2], wday: i[(p + 24) >> 2], yday: i[(p + 28) >> 2], isdst: i[(p + 32) >> 2], gmtoff: i[(p + 36) >> 2],
      zone: zone ? this.cString(zone) : '',
    };
  }

  // ---------------------------------------------------------------- stdio
  // Emscripten's fd 1 and 2 are its TTY devices: bytes are kept until a
  // newline, then the line (without it, NULs dropped) goes to console.log or
  // console.error, decoded from UTF-8. riff's sandbox sends Lua's output
  // through riff instead; C writes here only if riff's own Lua or a test
  // calls the stock print or io functions.

  private putChar(fd: number, byte: number): void {
    if (byte === 10) this.writeLine(fd);
    else if (byte !== 0) this.lines[fd].push(byte);
  }

  /** A newline writes the line, even an empty one. */
  private writeLine(fd: number): void {
    const text = decodeUtf8(this.lines[fd], this.warned);
    this.lines[fd] = [];
    if (fd === 1) console.log(text);
    else console.error(text);
  }

  private fdWrite(fd: number, iov: number, iovcnt: number, pnum: number): number {
    if (!this.open.has(fd)) return EBADF;
    this.heap();
    let written = 0;
    for (let k = 0; k < iovcnt; k++) {
      const ptr = this.u32[(iov + 8 * k) >> 2];
      const len = this.u32[(iov + 8 * k + 4) >> 2];
      // Signed, as Emscripten's TTY reads them (from HEAP8): it shows in the decoder's warning.
      for (let i = 0; i < len; i++) this.putChar(fd, this.i8[ptr + i]);
      written += len;
    }
    this.u32[pnum >> 2] = written;
    return 0;
  }

  /** ioctl on fd 1 and 2 answers as Emscripten's TTYs do: musl asks TIOCGWINSZ to make stdout line-buffered. */
  private ioctl(fd: number, op: number, argp: number): number {
    if (!this.open.has(fd)) return -EBADF;
    this.heap();
    const arg = () => this.i32[argp >> 2];
    switch (op) {
      case 0x5401: // TCGETS: stdout's TTY reports a termios, stderr's nothing
        if (fd === 1) {
          const p = arg();
          this.i32[p >> 2] = 25856; // c_iflag
          this.i32[(p + 4) >> 2] = 5; // c_oflag
          this.i32[(p + 8) >> 2] = 191; // c_cflag
          this.i32[(p + 12) >> 2] = 35387; // c_lflag
          TERMIOS_CC.forEach((c, k) => (this.u8[p + 17 + k] = c));
        }
        return 0;
      case 0x540f: // TIOCGPGRP
        this.i32[arg() >> 2] = 0;
        return 0;
      case 0x5410: // TIOCSPGRP
        return -EINVAL;
      case 0x5413: // TIOCGWINSZ: 24 rows, 80 columns (stdout's TTY)
        if (fd === 1) {
          const p = arg();
          this.u8.set([24, 0, 80, 0], p); // ws_row, ws_col: two little-endian shorts
        }
        return 0;
      case 0x541b: // FIONREAD: a TTY stream has no ioctl of its own
        return -59; // ENOTTY
      case 0x5402: // TCSETS, TCSETSW, TCSETSF
      case 0x5403:
      case 0x5404:
      case 0x5405: // TCGETA .. TCSETAF, TIOCSWINSZ, TCFLSH
      case 0x5406:
      case 0x5407:
      case 0x5408:
      case 0x5414:
      case 0x540b:
        return 0;
      default:
        return -EINVAL;
    }
  }

  // ----------------------------------------------------------- time, dates
  // Emscripten's own time functions: JS Dates in the process's time zone
  // (Node reads TZ when it starts). Ported as they are, quirks included
  // (its tzname is the long name from Date's toTimeString, %z misprints
  // half-hour zones): os.date must print what it printed.

  /** struct tm's first eight fields (tm_sec .. tm_yday), in their order. */
  private putTm(tm: number, fields: number[]): Int32Array {
    this.heap();
    const i = this.i32;
    fields.forEach((v, k) => (i[(tm >> 2) + k] = v));
    return i;
  }

  private gmtime(time: bigint, tm: number): void {
    const d = new Date(1000 * toNumber(time));
    const yday = ((d.getTime() - Date.UTC(d.getUTCFullYear(), 0, 1, 0, 0, 0, 0)) / 864e5) | 0;
    this.putTm(tm, [d.getUTCSeconds(), d.getUTCMinutes(), d.getUTCHours(), d.getUTCDate(), d.getUTCMonth(), d.getUTCFullYear() - 1900, d.getUTCDay(), yday]);
  }

  private localtime(time: bigint, tm: number): void {
    const d = new Date(1000 * toNumber(time));
    const i = this.putTm(tm, localFields(d));
    i[(tm + 36) >> 2] = -(d.getTimezoneOffset() * 60);
    // DST when the year has two offsets and this date has the smaller (Emscripten's test).
    const { summer, winter } = yearOffsets(d.getFullYear());
    i[(tm + 32) >> 2] = Number(summer !== winter && d.getTimezoneOffset() === Math.min(winter, summer));
  }

  /** mktime's JS half: the fields normalised in place, the time returned (-1 and EOVERFLOW when Date cannot hold it). */
  private mktime(tm: number): bigint {
    this.heap();
    const i = this.i32;
    const d = new Date(i[(tm + 20) >> 2] + 1900, i[(tm + 16) >> 2], i[(tm + 12) >> 2], i[(tm + 8) >> 2], i[(tm + 4) >> 2], i[tm >> 2], 0);
    // tm_isdst < 0: let the date say; otherwise, if it disagrees with the
    // date's own offset, move the time by the difference.
    const dst = i[(tm + 32) >> 2];
    const guessed = d.getTimezoneOffset();
    const { summer, winter } = yearOffsets(d.getFullYear());
    const dstOffset = Math.min(winter, summer);
    if (dst < 0) i[(tm + 32) >> 2] = Number(summer !== winter && dstOffset === guessed);
    else if (dst > 0 !== (dstOffset === guessed)) {
      const nonDst = Math.max(winter, summer);
      d.setTime(d.getTime() + (60000 * ((dst > 0 ? dstOffset : nonDst) - guessed)));
    }
    this.putTm(tm, localFields(d));
    const ms = d.getTime();
    if (isNaN(ms)) {
      this.setErrno(EOVERFLOW);
      return -1n;
    }
    return BigInt(ms / 1000);
  }

  /** tzset's JS half: timezone (seconds west, standard time), daylight, and tzname[0..1] (malloc'd, standard first). */
  private tzset(timezone: number, daylight: number, tzname: number): void {
    const year = new Date().getFullYear();
    const { summer: summerOffset, winter: winterOffset } = yearOffsets(year);
    const zone = (d: Date) => d.toTimeString().match(/\(([A-Za-z ]+)\)$/)?.[1] ?? 'GMT';
    const winterName = this.newCString(zone(new Date(year, 0, 1)));
    const summerName = this.newCString(zone(new Date(year, 6, 1)));
    this.heap();
    this.u32[timezone >> 2] = 60 * Math.max(winterOffset, summerOffset);
    this.i32[daylight >> 2] = Number(winterOffset !== summerOffset);
    const [std, dst] = summerOffset < winterOffset ? [winterName, summerName] : [summerName, winterName];
    this.u32[tzname >> 2] = std;
    this.u32[(tzname + 4) >> 2] = dst;
  }

  private strftime(s: number, maxsize: number, format: number, tm: number): number {
    const text = formatTime(this.cString(format), this.readTm(tm));
    const bytes = Buffer.from(text + '\0', 'utf8');
    if (bytes.length > maxsize) return 0;
    this.heap();
    this.u8.set(bytes, s);
    return bytes.length - 1;
  }

  // ------------------------------------------------------------- memory
  /**
   * sbrk asks for requested bytes of memory in all: grow by 20% of the heap
   * (at most 96 MiB more than asked), asking for less if the engine refuses,
   * as Emscripten does. The memory is the shared one riff declares
   * (src/vm/wasm.ts patchModule); riff's views re-read its buffer. Unlike
   * Emscripten's, it says nothing when the memory cannot grow: the refusal
   * comes back to Lua as its "not enough memory" error, which riff reports
   * in one line naming the script's line (Emscripten's own lines, without
   * riff's prefix, came beside it).
   */
  private resizeHeap(requested: number): boolean {
    const old = this.x.memory.buffer.byteLength;
    requested >>>= 0;
    if (!(requested > old)) abort('Assertion failed');
    if (requested > HEAP_MAX) return false;
    let size = 0;
    for (let cutDown = 1; cutDown <= 4; cutDown *= 2) {
      const overGrown = Math.min(old * (1 + 0.2 / cutDown), requested + 100663296);
      size = Math.min(HEAP_MAX, alignUp(Math.max(requested, overGrown), WASM_PAGE));
      const before = this.x.memory.buffer.byteLength;
      try {
        this.x.memory.grow(Math.ceil((size - before) / WASM_PAGE));
        this.heap();
        return true;
      } catch {
        // the engine refused this much: ask for less
      }
    }
    return false;
  }

  // ------------------------------------------------------ setjmp, longjmp
  // Emscripten's setjmp/longjmp without WebAssembly exceptions: C code that
  // may longjmp (Lua's luaD_rawrunprotected: every pcall, resume, error)
  // calls its callee through invoke_vii; longjmp records its target and
  // value in the module and throws; invoke_vii catches the throw, restores
  // the stack pointer and sets the module's __THREW__ (setThrew), on which
  // the caller goes back into its setjmp.

  /** Slots of the function table already read (entries are only ever added: LuaVM.place takes fresh slots). */
  private readonly fns: (((...a: number[]) => unknown) | null)[] = [];

  private invoke(index: number, a1: number, a2: number): void {
    const sp = this.x.stackSave();
    try {
      (this.fns[index] ??= this.x.__indirect_function_table.get(index))!(a1, a2);
    } catch (e) {
      this.x.stackRestore(sp);
      // A longjmp throws a number (Infinity); anything else -- a trap, a JS
      // error out of a host function -- goes on up (e + 0 !== e also for NaN, as Emscripten tests it).
      if (e !== (e as number) + 0) throw e;
      this.x.setThrew(1, 0);
    }
  }

  // --------------------------------------------------------------- imports
  imports(): Imports {
    const env = {
      abort: () => abort('native code called abort()'),
      invoke_vii: (i: number, a: number, b: number) => this.invoke(i, a, b),
      _emscripten_throw_longjmp: () => {
        throw Infinity;
      },
      strftime: (s: number, max: number, f: number, tm: number) => this.strftime(s, max, f, tm),
      _mktime_js: (tm: number) => this.mktime(tm),
      _localtime_js: (t: bigint, tm: number) => this.localtime(t, tm),
      _gmtime_js: (t: bigint, tm: number) => this.gmtime(t, tm),
      _tzset_js: (tz: number, dl: number, names: number) => this.tzset(tz, dl, names),
      emscripten_date_now: () => Date.now(),
      _emscripten_get_now_is_monotonic: () => 1,
      emscripten_resize_heap: (n: number) => this.resizeHeap(n),
      // No shell: system(NULL) says so, a command fails with ENOSYS (Emscripten's answer outside Node; its Node one ran it).
      system: (cmd: number) => {
        if (!cmd) return 0;
        this.setErrno(ENOSYS);
        return -1;
      },
      // os.exit is denied; should C ever call exit(), the VM stops with an error (never the process).
      exit: (status: number) => {
        throw new RuntimeError(`the Lua module called exit(${status})`);
      },
      // No file system.
      __syscall_openat: () => -ENOSYS,
      __syscall_unlinkat: () => -ENOSYS,
      __syscall_rmdir: () => -ENOSYS,
      __syscall_renameat: () => -ENOSYS,
      __syscall_readlinkat: () => -ENOSYS,
      __syscall_dup3: (fd: number) => (this.open.has(fd) ? -ENOSYS : -EBADF),
      __syscall_fcntl64: (fd: number, cmd: number) => {
        if (!this.open.has(fd)) return -EBADF;
        if (cmd === 3) return 1; // F_GETFL: O_WRONLY, as Emscripten opened them
        // F_GETFD, F_SETFD, F_SETFL and the locks succeed as there; no F_DUPFD: no descriptor is made here.
        return [1, 2, 4, 6, 7].includes(cmd) ? 0 : -EINVAL;
      },
      __syscall_ioctl: (fd: number, op: number, argp: number) => this.ioctl(fd, op, argp),
    };
    const wasi = {
      fd_write: (fd: number, iov: number, n: number, pnum: number) => this.fdWrite(fd, iov, n, pnum),
      fd_read: () => EBADF, // stdin is closed: riff's own input may be on it
      fd_seek: (fd: number, offset: bigint) => (offset < -(2n ** 53n) || offset > 2n ** 53n ? EOVERFLOW : this.open.has(fd) ? ESPIPE : EBADF),
      fd_close: (fd: number) => {
        if (!this.open.has(fd)) return EBADF;
        // Closing flushes what is pending (only if something is).
        if (this.lines[fd].length) this.writeLine(fd);
        this.open.delete(fd);
        return 0;
      },
      environ_sizes_get: (count: number, size: number) => {
        const env = environment();
        this.heap();
        this.u32[count >> 2] = env.length;
        this.u32[size >> 2] = env.reduce((n, s) => n + s.length + 1, 0);
        return 0;
      },
      environ_get: (ptrs: number, buf: number) => {
        this.heap();
        for (const [k, s] of environment().entries()) {
          this.u32[(ptrs + 4 * k) >> 2] = buf;
          for (let c = 0; c < s.length; c++) this.u8[buf++] = s.charCodeAt(c);
          this.u8[buf++] = 0;
        }
        return 0;
      },
    };
    return { env, wasi_snapshot_preview1: wasi } as unknown as Imports;
  }
}

/** Emscripten's abort(): the message on stderr, then a RuntimeError out of the module. */
function abort(what: string): never {
  const message = `Aborted(${what})`;
  console.error(message);
  throw new RuntimeError(message);
}

/** An i64 argument as a JS number, NaN outside ±2^53 (Emscripten's bigintToI53Checked). */
const toNumber = (n: bigint): number => (n < -9007199254740992n || n > 9007199254740992n ? NaN : Number(n));
const alignUp = (n: number, to: number) => n + ((to - (n % to)) % to);

/**
 * The environment C's getenv sees: Emscripten's default one (never the
 * host's). Lua reads LUA_PATH/LUA_CPATH from it when it opens its libraries;
 * `_` is the script Node runs, as Emscripten sets it.
 */
let env: string[] | undefined;
function environment(): string[] {
  if (env) return env;
  const nav = (globalThis as { navigator?: { languages?: string[] } }).navigator;
  const lang = ((typeof nav === 'object' && nav.languages?.[0]) || 'C').replace('-', '_') + '.UTF-8';
  const program = process.argv.length > 1 ? process.argv[1].replace(/\\/g, '/') : './this.program';
  const vars: Record<string, string> = { USER: 'web_user', LOGNAME: 'web_user', PATH: '/', PWD: '/', HOME: '/home/web_user', LANG: lang, _: program };
  env = Object.entries(vars).map(([k, v]) => `${k}=${v}`);
  return env;
}

// A TTY's control characters, as Emscripten's default TTY reports them.
const TERMIOS_CC = [3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/**
 * Emscripten's UTF8ArrayToString without TextDecoder: lenient, it decodes
 * malformed sequences into whatever code units they make rather than
 * U+FFFD, and warning once per leading byte it does not know (the TTY's
 * line buffer, a plain array, always went this way there; the strings read
 * from memory here are ASCII, which every decoder agrees on).
 */
function decodeUtf8(a: ArrayLike<number>, warned: Set<string>): string {
  let s = '';
  for (let i = 0; i < a.length; ) {
    let c = a[i++];
    if (c & 0x80) {
      const c1 = a[i++] & 63;
      if ((c & 0xe0) === 0xc0) {
        s += String.fromCharCode(((c & 31) << 6) | c1);
        continue;
      }
      const c2 = a[i++] & 63;
      if ((c & 0xf0) === 0xe0) c = ((c & 15) << 12) | (c1 << 6) | c2;
      else {
        if ((c & 0xf8) !== 0xf0) {
          // Emscripten's warnOnce
          const m = `warning: Invalid UTF-8 leading byte 0x${(c >>> 0).toString(16).padStart(8, '0')} encountered when deserializing a UTF-8 string in wasm memory to a JS string!`;
          if (!warned.has(m)) (warned.add(m), console.error(m));
        }
        c = ((c & 7) << 18) | (c1 << 12) | (c2 << 6) | (a[i++] & 63);
      }
      if (c < 0x10000) s += String.fromCharCode(c);
      else {
        c -= 0x10000;
        s += String.fromCharCode(0xd800 | (c >> 10), 0xdc00 | (c & 1023));
      }
    } else s += String.fromCharCode(c);
  }
  return s;
}

// ------------------------------------------------------------------ strftime
// Emscripten's strftime, as wasmoon's build has it: a format is first
// rewritten by EXPANSIONS (composite and E/O-modified conversions to plain
// ones, in this order: "%Ec" becomes "%c" after "%c" was expanded, so it
// prints "%c" -- Emscripten's, kept), then each conversion of CONVERSIONS
// is replaced everywhere by its text. Lua's os.date calls it once per
// conversion ("%Y", "%Ec", ...) with a 250-byte buffer.

interface Tm {
  sec: number; min: number; hour: number; mday: number; mon: number; year: number;
  wday: number; yday: number; isdst: number; gmtoff: number; zone: string;
}

const EXPANSIONS: Record<string, string> = {
  '%c': '%a %b %d %H:%M:%S %Y', '%D': '%m/%d/%y', '%F': '%Y-%m-%d', '%h': '%b', '%r': '%I:%M:%S %p', '%R': '%H:%M',
  '%T': '%H:%M:%S', '%x': '%m/%d/%y', '%X': '%H:%M:%S', '%Ec': '%c', '%EC': '%C', '%Ex': '%m/%d/%y', '%EX': '%H:%M:%S',
  '%Ey': '%y', '%EY': '%Y', '%Od': '%d', '%Oe': '%e', '%OH': '%H', '%OI': '%I', '%Om': '%m', '%OM': '%M', '%OS': '%S',
  '%Ou': '%u', '%OU': '%U', '%OV': '%V', '%Ow': '%w', '%OW': '%W', '%Oy': '%y',
};
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const MONTH_DAYS_LEAP = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const CUMULATIVE_LEAP = [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335];
const CUMULATIVE = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
const isLeap = (y: number) => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
const yearDay = (d: Date) => ((isLeap(d.getFullYear()) ? CUMULATIVE_LEAP : CUMULATIVE)[d.getMonth()] + d.getDate() - 1) | 0;
/** struct tm's first eight fields (tm_sec .. tm_yday) of a date, in local time. */
const localFields = (d: Date) => [d.getSeconds(), d.getMinutes(), d.getHours(), d.getDate(), d.getMonth(), d.getFullYear() - 1900, d.getDay(), yearDay(d)];
/** The local time's offsets from UTC (minutes, as getTimezoneOffset) on 1 July and 1 January of a year: Emscripten's test for DST. */
const yearOffsets = (year: number) => ({ summer: new Date(year, 6, 1).getTimezoneOffset(), winter: new Date(year, 0, 1).getTimezoneOffset() });

/** value as text, left-padded with `pad` to `width` (a negative number pads before its sign, as Emscripten's does). */
const padded = (value: number | string, width: number, pad = '0') => {
  let s = typeof value === 'number' ? value.toString() : value || '';
  while (s.length < width) s = pad[0] + s;
  return s;
};

/** Sign of the difference of two local dates, by day. */
function compareByDay(a: Date, b: Date): number {
  const sgn = (n: number) => (n < 0 ? -1 : n > 0 ? 1 : 0);
  return sgn(a.getFullYear() - b.getFullYear()) || sgn(a.getMonth() - b.getMonth()) || sgn(a.getDate() - b.getDate());
}

/** The Monday that starts ISO week 1 of the year whose 4 January is `jan4`. */
function firstWeekStart(jan4: Date): Date {
  const y = jan4.getFullYear();
  switch (jan4.getDay()) {
    case 0: return new Date(y - 1, 11, 29);
    case 1: return jan4;
    case 2: return new Date(y, 0, 3);
    case 3: return new Date(y, 0, 2);
    case 4: return new Date(y, 0, 1);
    case 5: return new Date(y - 1, 11, 31);
    default: return new Date(y - 1, 11, 30);
  }
}

/** The ISO 8601 week-based year of tm (%G), from its year and yday, in local Dates as Emscripten computes it. */
function weekBasedYear(tm: Tm): number {
  let days = tm.yday;
  const d = new Date(new Date(tm.year + 1900, 0, 1).getTime());
  while (days > 0) {
    const month = d.getMonth();
    const inMonth = (isLeap(d.getFullYear()) ? MONTH_DAYS_LEAP : MONTH_DAYS)[month];
    if (days > inMonth - d.getDate()) {
      days -= inMonth - d.getDate() + 1;
      d.setDate(1);
      if (month < 11) d.setMonth(month + 1);
      else (d.setMonth(0), d.setFullYear(d.getFullYear() + 1));
    } else {
      d.setDate(d.getDate() + days);
      break;
    }
  }
  const thisYear = firstWeekStart(new Date(d.getFullYear(), 0, 4));
  const nextYear = firstWeekStart(new Date(d.getFullYear() + 1, 0, 4));
  if (compareByDay(thisYear, d) <= 0) return compareByDay(nextYear, d) <= 0 ? d.getFullYear() + 1 : d.getFullYear();
  return d.getFullYear() - 1;
}

const CONVERSIONS: Record<string, (tm: Tm) => string | number> = {
  '%a': (tm) => DAYS[tm.wday].substring(0, 3),
  '%A': (tm) => DAYS[tm.wday],
  '%b': (tm) => MONTHS[tm.mon].substring(0, 3),
  '%B': (tm) => MONTHS[tm.mon],
  '%C': (tm) => padded(((tm.year + 1900) / 100) | 0, 2),
  '%d': (tm) => padded(tm.mday, 2),
  '%e': (tm) => padded(tm.mday, 2, ' '),
  '%g': (tm) => weekBasedYear(tm).toString().substring(2),
  '%G': (tm) => weekBasedYear(tm),
  '%H': (tm) => padded(tm.hour, 2),
  '%I': (tm) => padded(tm.hour === 0 ? 12 : tm.hour > 12 ? tm.hour - 12 : tm.hour, 2),
  '%j': (tm) => {
    let before = 0;
    for (let m = 0; m <= tm.mon - 1; m++) before += (isLeap(tm.year + 1900) ? MONTH_DAYS_LEAP : MONTH_DAYS)[m];
    return padded(tm.mday + before, 3);
  },
  '%m': (tm) => padded(tm.mon + 1, 2),
  '%M': (tm) => padded(tm.min, 2),
  '%n': () => '\n',
  '%p': (tm) => (tm.hour >= 0 && tm.hour < 12 ? 'AM' : 'PM'),
  '%S': (tm) => padded(tm.sec, 2),
  '%t': () => '\t',
  '%u': (tm) => tm.wday || 7,
  '%U': (tm) => padded(Math.floor((tm.yday + 7 - tm.wday) / 7), 2),
  '%V': (tm) => {
    // ISO week number; Emscripten's test of the year (tm.year, not +1900) kept.
    let week = Math.floor((tm.yday + 7 - ((tm.wday + 6) % 7)) / 7);
    if ((tm.wday + 371 - tm.yday - 2) % 7 <= 2) week++;
    if (!week) {
      week = 52;
      const dec31 = (tm.wday + 7 - tm.yday - 1) % 7;
      if (dec31 === 4 || (dec31 === 5 && isLeap((tm.year % 400) - 1))) week++;
    } else if (week === 53) {
      const jan1 = (tm.wday + 371 - tm.yday) % 7;
      if (jan1 !== 4 && (jan1 !== 3 || !isLeap(tm.year))) week = 1;
    }
    return padded(week, 2);
  },
  '%w': (tm) => tm.wday,
  '%W': (tm) => padded(Math.floor((tm.yday + 7 - ((tm.wday + 6) % 7)) / 7), 2),
  '%y': (tm) => (tm.year + 1900).toString().substring(2),
  '%Y': (tm) => tm.year + 1900,
  '%z': (tm) => {
    const ahead = tm.gmtoff >= 0;
    const minutes = Math.abs(tm.gmtoff) / 60;
    return (ahead ? '+' : '-') + String('0000' + ((minutes / 60) * 100 + (minutes % 60))).slice(-4);
  },
  '%Z': (tm) => tm.zone,
  '%%': () => '%',
};

// The rules as patterns, made once: Emscripten made each anew at every
// call, and os.date calls strftime once per conversion in its format.
const EXPANSION_RULES = Object.entries(EXPANSIONS).map(([rule, to]) => [new RegExp(rule, 'g'), to] as const);
const CONVERSION_RULES = Object.entries(CONVERSIONS).map(([rule, text]) => [rule, new RegExp(rule, 'g'), text] as const);

export function formatTime(format: string, tm: Tm): string {
  let s = format;
  for (const [rule, to] of EXPANSION_RULES) s = s.replace(rule, to);
  s = s.replace(/%%/g, '\0\0');
  // String replacements, as Emscripten's (a "$" in a value would be a pattern; none has one).
  for (const [rule, pattern, text] of CONVERSION_RULES) if (s.includes(rule)) s = s.replace(pattern, String(text(tm)));
  return s.replace(/\0\0/g, '%');
}
