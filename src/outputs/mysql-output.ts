// --output mysql://USER:PASS@HOST:PORT/DB[?options] (also mariadb://): records
// into a MariaDB or MySQL database, from many sensors at once, through the
// `mariadb` npm connector.
//
// Layout: one table per record type, created on first use:
//   sensor VARCHAR(64)  --sensor NAME (default: the host name)
//   run    VARCHAR(32)  this riff run: UTC start time and 8 random hex digits
//   seq    BIGINT       the record's number in this run (1, 2, ...: a gap is a lost record)
//   ts     DOUBLE       seconds since the epoch, as in sqlite:
//   then one column per field, added (ALTER TABLE) when a field first appears.
//   PRIMARY KEY (sensor, run, seq).
// Names: a type or field name becomes an identifier by mysqlName() below
// (characters other than A-Z a-z 0-9 _ become '_', at most 64 characters,
// a field named sensor/run/seq/ts with or without leading '_'s gets one more
// '_'; a name taken by another type or field gets _2, _3 ...). The original
// name is kept as the table's or column's COMMENT, and that, not the rule, is
// how riff finds the table and column again (so runs and sensors agree).
// Column types follow the values: Lua integer BIGINT, float DOUBLE (NaN and
// infinities NULL), boolean BOOLEAN, string LONGTEXT utf8mb4 while its bytes
// are UTF-8 and LONGBLOB (bytes exactly) once one is not, table LONGTEXT
// holding JSON (the json: output's rules). A value that does not fit widens
// the column (MODIFY) along BOOLEAN < BIGINT < DOUBLE < LONGTEXT < LONGBLOB
// (numbers in a text column are their text).
//
// Delivery: records wait in a bounded queue (queue=N, default 100000, and at
// most 256 MiB of record data; when it is full the newest record is dropped
// and counted) and go out in batches of up to batch=N rows (default 2000; a
// batch waits up to 200 ms to fill): per table one INSERT ... ON DUPLICATE
// KEY UPDATE seq=seq sent for all its rows at once (the connector's batch(),
// MariaDB's bulk protocol), all tables in one transaction. A batch whose fate
// is unknown (the connection broke during it) is sent again after the
// reconnect and the key drops what was already stored: exactly once, unless
// the queue overflowed or riff itself was killed (what was queued is lost).
// Reconnects back off from 0.2 s to 5 s; so do retries when the server cannot
// take rows for now (read-only, disk full, deadlock). A server that cannot be
// reached at start is reported in one line and retried; wrong credentials or
// an unknown database at start are a bad --output (exit 2). At close riff
// waits up to timeout=MS (default 10000) for the queue to drain, and no
// longer (a connect or query in flight is abandoned), and reports what it
// could not deliver. ready() waits for the first connection attempt only
// (at most 3 s); the delivery loop that started with it goes on apart. A row the server refuses (e.g. larger than its
// max_allowed_packet) is dropped, counted and reported.
//
// Options: queue=N, batch=N, timeout=MS, socket=PATH (a Unix socket instead
// of HOST:PORT). The password can come from MYSQL_PWD instead of the URL.
import crypto from 'node:crypto';
import os from 'node:os';
import { createRequire } from 'node:module';
import { isUtf8 } from 'node:buffer';
import { floatText, type RecordData, type Value } from './records.js';
import { jsonValue } from './json-output.js';
import { stderr } from './fd-sink.js';
import type { OutputStats, RecordOutput } from './types.js';
import { OutputSpecError, specError } from './types.js';

// The part of the mariadb connector's API used here.
interface SqlError extends Error {
  fatal?: boolean;
  errno?: number;
  code?: string;
  sqlMessage?: string;
}
interface Conn {
  query(sql: string, values?: unknown[]): Promise<unknown>;
  batch(sql: string, values: unknown[][]): Promise<unknown>;
  end(): Promise<void>;
  destroy(): void;
  on(ev: 'error', f: (e: SqlError) => void): void;
}
interface Driver {
  createConnection(o: Record<string, unknown>): Promise<Conn>;
}

let driver: Driver | null = null;
function loadDriver(spec: string): Driver {
  if (driver) return driver;
  try {
    driver = createRequire(import.meta.url)('mariadb') as Driver;
  } catch (e) {
    throw specError(spec, `the MariaDB/MySQL client (npm mariadb) is not available (${(e as Error).message.split('\n')[0]}); run npm install`);
  }
  return driver;
}

export interface MysqlOptions {
  host: string;
  port: number;
  socket: string | null;
  user: string;
  password: string;
  database: string;
  queue: number;
  batch: number;
  timeout: number;
}

const OPTION_NAMES = 'queue, batch, timeout, socket';

/** Parse a mysql:// or mariadb:// spec (the whole spec). */
export function parseMysqlSpec(spec: string, env: NodeJS.ProcessEnv = process.env): MysqlOptions {
  const usage = 'expected mysql://USER:PASS@HOST:PORT/DATABASE[?queue=N&batch=N&timeout=MS&socket=PATH]';
  let u: URL;
  try {
    u = new URL(spec);
  } catch {
    throw specError(redact(spec), usage);
  }
  // A percent-escape that is not %XX (or not UTF-8) is a bad spec, named; the password's is
  // named by its place, not its text (messages never show the password).
  const decode = (part: string, what: string, secret = false): string => {
    let text: string;
    try {
      text = decodeURIComponent(part);
    } catch {
      const bad = /%(?![0-9a-fA-F]{2})[^%]{0,2}/.exec(part);
      const which = bad
        ? secret
          ? `at character ${bad.index + 1}`
          : `'${bad[0]}'`
        : 'bytes that are not UTF-8';
      throw specError(redact(spec), `the ${what} has a bad percent-escape (${which}): write % as %25, other characters as %XX of their UTF-8 bytes`);
    }
    if (/[\x00-\x1f\x7f]/.test(text)) throw specError(redact(spec), `the ${what} holds a control character`);
    return text;
  };
  const database = decode(u.pathname.replace(/^\//, ''), 'database name');
  if (!u.hostname && !u.searchParams.get('socket')) throw specError(redact(spec), `name the server: ${usage}`);
  if (!database || database.includes('/')) throw specError(redact(spec), `name one database after the host: ${usage}`);
  if (!u.username) throw specError(redact(spec), `name the user: ${usage}`);
  const o: MysqlOptions = {
    host: u.hostname.replace(/^\[|\]$/g, '') || 'localhost',
    port: u.port ? Number(u.port) : 3306,
    socket: null,
    user: decode(u.username, 'user name'),
    password: u.password ? decode(u.password, 'password', true) : env.MYSQL_PWD ?? '',
    database,
    queue: 100_000,
    batch: 2000,
    timeout: 10_000,
  };
  const int = (k: string, v: string, lo: number, hi: number) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < lo || n > hi) throw specError(redact(spec), `${k}=${v}: expected a whole number from ${lo} to ${hi}`);
    return n;
  };
  for (const [k, v] of u.searchParams) {
    if (k === 'queue') o.queue = int(k, v, 1, 100_000_000);
    else if (k === 'batch') o.batch = int(k, v, 1, 100_000);
    else if (k === 'timeout') o.timeout = int(k, v, 0, 3_600_000);
    else if (k === 'socket') {
      if (/[\x00-\x1f\x7f]/.test(v)) throw specError(redact(spec), 'the socket path holds a control character');
      o.socket = v;
    }
    else throw specError(redact(spec), `unknown option '${k}'; mysql takes ${OPTION_NAMES}`);
  }
  return o;
}

/** The spec as shown in messages: the password replaced by ***. */
export function redact(spec: string): string {
  return spec.replace(/^([a-z]+:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
}

/**
 * A type or field name as a MySQL identifier: characters other than
 * [A-Za-z0-9_] become '_', cut to 64 (MySQL's limit), '_' if empty. Kept
 * here (the SQLite output has its own rule) until the two are unified.
 */
export function mysqlName(name: string): string {
  return name.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 64) || '_';
}

/**
 * A name as a table or column comment, which is how riff finds its tables
 * and columns again: characters beyond U+FFFF as \u{HEX} (information_schema
 * holds 3-byte UTF-8 only), cut to the server's limit.
 */
function commentOf(name: string, max: number): string {
  return name.replace(/[^\u0000-\uffff]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`).slice(0, max);
}

function quote(id: string): string {
  return '`' + id.replace(/`/g, '``') + '`';
}

/** Fields with these names (after leading '_'s) get one more '_': the key and time columns. */
const RESERVED = /^_*(sensor|run|seq|ts)$/i;

// Column kinds, in widening order.
type Kind = 0 | 1 | 2 | 3 | 4;
const BOOL = 0, INT = 1, FLOAT = 2, TEXT = 3, BLOB = 4;
const DDL = ['BOOLEAN', 'BIGINT', 'DOUBLE', 'LONGTEXT CHARACTER SET utf8mb4', 'LONGBLOB'];

function kindOfType(dataType: string): Kind {
  const t = dataType.toLowerCase();
  if (t === 'tinyint' || t === 'bit') return BOOL;
  if (/int$/.test(t)) return INT;
  if (t === 'double' || t === 'float' || t === 'decimal') return FLOAT;
  if (/blob$|binary$/.test(t)) return BLOB;
  return TEXT;
}

/** The kind a value needs (null: stored as NULL, fits anything). */
function kindOf(v: Value): Kind | null {
  if (typeof v === 'bigint') return INT;
  if (typeof v === 'number') return Number.isFinite(v) ? FLOAT : null;
  if (typeof v === 'boolean') return BOOL;
  if (Buffer.isBuffer(v)) return isUtf8(v) ? TEXT : BLOB;
  return TEXT;
}

function textOf(v: Value): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return floatText(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  const out: string[] = [];
  jsonValue(v, out);
  return out.join('');
}

/** A value as a parameter for a column of kind k. */
function param(v: Value | undefined, k: Kind): unknown {
  if (v === undefined) return null;
  if (typeof v === 'number' && !Number.isFinite(v)) return null;
  switch (k) {
    case BOOL:
    case INT:
      return typeof v === 'boolean' ? (v ? 1 : 0) : v;
    case FLOAT:
      return typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
    case TEXT:
      return textOf(v);
    default:
      return Buffer.isBuffer(v) ? v : Buffer.from(textOf(v), 'utf8');
  }
}

interface Column {
  name: string;
  kind: Kind;
  comment: string;
}
interface Table {
  name: string;
  /** lowercased column name -> column */
  columns: Map<string, Column>;
  /** field -> column */
  fieldCol: Map<string, Column>;
}

interface Row {
  seq: number;
  rec: RecordData;
  bytes: number;
}

/** Rows in order; batches are taken from the front and removed once stored. */
class RowQueue {
  private items: Row[] = [];
  private head = 0;
  /** Estimated size of the rows queued. */
  bytes = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(r: Row): void {
    this.items.push(r);
    this.bytes += r.bytes;
  }
  peek(n: number, maxBytes: number): Row[] {
    const out: Row[] = [];
    let bytes = 0;
    for (let i = this.head; i < this.items.length && out.length < n; i++) {
      if (out.length && bytes + this.items[i].bytes > maxBytes) break;
      bytes += this.items[i].bytes;
      out.push(this.items[i]);
    }
    return out;
  }
  drop(n: number): void {
    // Stored rows let go of their records at once (small Buffers pin 8 KiB pool slabs).
    for (let i = this.head; i < this.head + n && i < this.items.length; i++) {
      this.bytes -= this.items[i].bytes;
      this.items[i] = undefined as unknown as Row;
    }
    this.head += n;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytes = 0;
  }
}

/** Past this much record data the queue is full too, whatever queue=N says. */
const QUEUE_BYTES = 256 << 20;

// ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_BAD_DB_ERROR: wrong settings, not an outage.
const SETTINGS_ERRORS = new Set([1045, 1044, 1049]);
// ER_DUP_FIELDNAME, ER_TABLE_EXISTS_ERROR: another sensor made it first.
const RACE_ERRORS = new Set([1060, 1050]);
// Try the batch again later: the server's state, not the rows, is in the way (deadlock, lock wait
// timeout, no such table or column (dropped meanwhile: looked up again), read-only, disk or
// table full, statement interrupted or connection killed).
const RETRY_ERRORS = new Set([1213, 1205, 1146, 1054, 1290, 1792, 1114, 1021, 1317, 1927]);
const BACKOFF_MIN = 200;
const BACKOFF_MAX = 5000;
const QUERY_TIMEOUT = 60_000;
// A batch waits this long for more rows before it goes out less than full:
// fewer, larger transactions (each commit is a disk flush on the server).
const LINGER_MS = 200;

const RUN = `${new Date().toISOString().replace(/[-:]|\.\d+/g, '')}-${crypto.randomBytes(4).toString('hex')}`;
let instances = 0;

function describe(e: SqlError): string {
  return (e.sqlMessage ?? e.message).split('\n')[0].replace(/^\(conn[^)]*\)\s*/, '');
}

export class MysqlOutput implements RecordOutput {
  readonly spec: string;
  readonly run: string;
  private readonly sensor: string;
  private readonly queue = new RowQueue();
  private readonly tables = new Map<string, Table>();
  private conn: Conn | null = null;
  private seq = 0;
  private written = 0;
  private overflow = 0;
  private rejected = 0;
  private leftOver = 0;
  private lastError: string | null = null;
  private down = false;
  private pumping = false;
  private closing = false;
  private closed = false;
  private backoff = BACKOFF_MIN;
  private maxPacket = 16 << 20;
  private wake: (() => void) | null = null;
  private lingering = false;
  private waiters: (() => void)[] = [];
  /** Settled once the first connection attempt is over (rejected: the server refused the settings). */
  private readonly firstAttempt: Promise<void>;
  private firstDone: ((e?: Error) => void) | null = null;

  constructor(
    spec: string,
    readonly opts: MysqlOptions,
    sensor: string = os.hostname(),
  ) {
    this.spec = redact(spec);
    loadDriver(this.spec);
    this.sensor = [...sensor].slice(0, 64).join("");
    // Two mysql outputs in one riff number records each on their own: the run tells them apart.
    this.run = ++instances === 1 ? RUN : `${RUN}-${instances}`;
    this.firstAttempt = new Promise<void>((resolve, reject) => {
      this.firstDone = (e) => {
        this.firstDone = null;
        if (e) reject(e);
        else resolve();
      };
    });
    // ready() reports a refusal; without a ready() call it must not be an unhandled rejection.
    this.firstAttempt.catch(() => {});
    // The delivery loop starts with the connection attempt; it settles firstAttempt when that is over.
    this.kick(true);
  }

  /**
   * Resolves once the first connection attempt is over; rejects (one line) if
   * the server refused the settings. A server out of reach is not an error.
   */
  async ready(): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.firstAttempt, new Promise<void>((r) => (t = setTimeout(r, 3000)))]);
    clearTimeout(t);
  }

  write(rec: RecordData): void {
    const seq = ++this.seq;
    if (this.closing) {
      this.leftOver++;
      return;
    }
    if (this.queue.length >= this.opts.queue || this.queue.bytes >= QUEUE_BYTES) {
      this.overflow++;
      return;
    }
    let bytes = 64;
    for (const k in rec.fields) {
      const v = rec.fields[k];
      bytes += k.length + 8 + (Buffer.isBuffer(v) ? 2 * v.length : typeof v === 'object' ? textOf(v).length * 2 : 24);
    }
    this.queue.push({ seq, rec, bytes });
    if (!this.pumping) this.kick();
    else if (this.lingering && this.queue.length >= this.opts.batch) this.wake?.();
  }

  /** Start delivering; a fault in riff's own code here is reported, never an unhandled rejection. */
  private kick(first = false): void {
    this.pump(first).catch((e) => {
      // The settings the server refused at start: already told by ready() (firstAttempt).
      if (e instanceof OutputSpecError) return;
      this.lastError = (e as Error).message;
      this.note(`delivery stopped: ${this.lastError}`);
    });
  }

  private note(line: string): void {
    stderr.text(`riff: --output ${this.spec}: ${line}\n`);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  private async connect(): Promise<Conn> {
    const o = this.opts;
    const conn = await loadDriver(this.spec).createConnection({
      ...(o.socket ? { socketPath: o.socket } : { host: o.host, port: o.port }),
      user: o.user,
      password: o.password,
      database: o.database,
      connectTimeout: 5000,
      charset: 'utf8mb4',
      bigIntAsNumber: false,
    });
    conn.on('error', () => {
      if (this.conn === conn) this.conn = null;
    });
    // Bounded as the handshake is: a server that froze right after it is still out of reach.
    let t: NodeJS.Timeout | undefined;
    try {
      const r = (await Promise.race([
        conn.query('SELECT @@max_allowed_packet AS m'),
        new Promise((_, reject) => (t = setTimeout(() => reject(Object.assign(new Error('no answer in 5 s'), { fatal: true })), 5000))),
      ])) as { m: bigint | number }[];
      this.maxPacket = Number(r[0]?.m ?? this.maxPacket);
    } catch (e) {
      conn.destroy();
      throw e;
    } finally {
      clearTimeout(t);
    }
    return conn;
  }

  /** One query, bounded in time: a server that stops answering counts as a broken connection. */
  private async q(sql: string, values?: unknown[], batch = false): Promise<unknown> {
    const conn = this.conn;
    if (!conn) throw Object.assign(new Error('the connection closed'), { fatal: true });
    let t: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        batch ? conn.batch(sql, values as unknown[][]) : conn.query(sql, values),
        new Promise((_, reject) => {
          t = setTimeout(() => {
            conn.destroy();
            reject(Object.assign(new Error(`no answer in ${QUERY_TIMEOUT / 1000} s`), { fatal: true }));
          }, QUERY_TIMEOUT);
        }),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  /** Deliver the queue until it is empty (or, on close, until time is up). */
  private async pump(first: boolean): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.closed && (first || this.queue.length)) {
        if (!this.conn) {
          try {
            const conn = await this.connect();
            if (this.closed) {
              // Connected after close() gave up waiting: nothing is left to send.
              conn.destroy();
              break;
            }
            this.conn = conn;
            this.firstDone?.();
            if (this.down) this.note(`connected again after: ${this.lastError}`);
            this.down = false;
          } catch (e) {
            const err = e as SqlError;
            this.lastError = describe(err);
            if (first && SETTINGS_ERRORS.has(err.errno ?? 0)) {
              const refused = new OutputSpecError(`--output ${this.spec}: ${this.lastError}; check the user, password and database (CREATE DATABASE, GRANT)`);
              this.firstDone?.(refused);
              throw refused;
            }
            this.firstDone?.();
            if (this.closed) break;
            if (!this.down) this.note(`cannot reach the database (${this.lastError}); retrying, records wait in a queue of up to ${this.opts.queue}`);
            this.down = true;
            first = false;
            await this.sleep(this.backoff);
            this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
            continue;
          }
        }
        first = false;
        if (!this.closing && this.queue.length < this.opts.batch) {
          this.lingering = true;
          await this.sleep(LINGER_MS);
          this.lingering = false;
          if (!this.conn) continue;
        }
        const rows = this.queue.peek(this.opts.batch, Math.max(this.maxPacket / 2, 1 << 16));
        if (!rows.length) break;
        if (rows.length === 1 && rows[0].bytes > this.maxPacket) {
          // Sent, it would break the connection (a packet too large) again and again.
          this.refuse(rows[0], `a record of about ${rows[0].bytes} bytes, more than the server's max_allowed_packet (${this.maxPacket})`);
          this.queue.drop(1);
          continue;
        }
        try {
          await this.deliver(rows);
          // close() gave up on this batch and counted it as not stored.
          if (this.closed) break;
          this.queue.drop(rows.length);
          this.written += rows.length;
          if (this.down) this.note(`storing records again after: ${this.lastError}`);
          this.down = false;
          this.backoff = BACKOFF_MIN;
        } catch (e) {
          if (this.closed) break;
          const err = e as SqlError;
          this.lastError = describe(err);
          if (err.fatal || !this.conn) {
            this.conn?.destroy();
            this.conn = null;
            if (!this.down) this.note(`lost the connection (${this.lastError}); reconnecting, records wait in a queue of up to ${this.opts.queue}`);
            this.down = true;
            await this.sleep(this.backoff);
            this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
          } else if (RETRY_ERRORS.has(err.errno ?? 0)) {
            if (!this.down) this.note(`the server cannot take records now (${this.lastError}); retrying, records wait in a queue of up to ${this.opts.queue}`);
            this.down = true;
            this.tables.clear();
            await this.sleep(this.backoff);
            this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
          } else {
            // The server refused the batch for what is in it: row by row, so only the bad rows are lost.
            this.tables.clear();
            await this.deliverOneByOne(rows);
          }
        }
      }
    } finally {
      this.pumping = false;
      this.firstDone?.();
      if (this.queue.length === 0) for (const w of this.waiters.splice(0)) w();
    }
  }

  private refuse(r: Row, why: string): void {
    if (this.rejected++ === 0) this.note(`a ${r.rec.type} record cannot be stored (${why}); such records are counted as dropped`);
    this.lastError = why;
  }

  private async deliverOneByOne(rows: Row[]): Promise<void> {
    let n = 0;
    for (const r of rows) {
      try {
        await this.deliver([r]);
        this.written++;
      } catch (e) {
        const err = e as SqlError;
        if (err.fatal || RETRY_ERRORS.has(err.errno ?? 0)) break; // the rest waits for the next round
        this.refuse(r, describe(err));
      }
      n++;
    }
    this.queue.drop(n);
  }

  /** Store rows: schema first (DDL commits by itself), then one INSERT per table in one transaction. */
  private async deliver(rows: Row[]): Promise<void> {
    const byType = new Map<string, Row[]>();
    for (const r of rows) {
      let list = byType.get(r.rec.type);
      if (!list) byType.set(r.rec.type, (list = []));
      list.push(r);
    }
    const byTable = new Map<Table, Row[]>();
    for (const [type, list] of byType) {
      // The columns this batch needs that the table lacks or that are too narrow.
      const known = this.tables.get(type);
      const wants = new Map<string, Kind | null>();
      for (const r of list)
        for (const k in r.rec.fields) {
          const col = known?.fieldCol.get(k);
          if (col?.kind === BLOB) continue;
          const need = kindOf(r.rec.fields[k]);
          if (col && (need === null || need <= col.kind)) continue;
          const had = wants.get(k);
          wants.set(k, had === undefined || had === null ? need : need === null ? had : (Math.max(had, need) as Kind));
        }
      const t = known ?? (await this.table(type, wants));
      if (wants.size) await this.ensureColumns(t, wants);
      byTable.set(t, list);
    }
    await this.q('START TRANSACTION');
    try {
      for (const [t, list] of byTable) {
        const cols: Column[] = [];
        const fieldsOf: string[] = [];
        const seen = new Set<string>();
        for (const r of list)
          for (const k in r.rec.fields)
            if (!seen.has(k)) {
              seen.add(k);
              fieldsOf.push(k);
              cols.push(t.fieldCol.get(k)!);
            }
        const values: unknown[][] = [];
        for (const r of list) {
          const v: unknown[] = [this.sensor, this.run, r.seq, Number.isFinite(r.rec.ts) ? r.rec.ts : null];
          for (let i = 0; i < cols.length; i++) v.push(param(r.rec.fields[fieldsOf[i]], cols[i].kind));
          values.push(v);
        }
        const sql =
          `INSERT INTO ${quote(t.name)} (sensor,run,seq,ts${cols.map((c) => ',' + quote(c.name)).join('')}) ` +
          `VALUES (?,?,?,?${',?'.repeat(cols.length)}) ON DUPLICATE KEY UPDATE seq=seq`;
        // One statement, many rows: MariaDB's bulk protocol (the connector rewrites it for MySQL).
        await this.q(sql, values, true);
      }
      await this.q('COMMIT');
    } catch (e) {
      if (this.conn && !(e as SqlError).fatal) await this.q('ROLLBACK').catch(() => {});
      throw e;
    }
  }

  /** The table for a record type: found by its comment, else created. */
  private async table(type: string, wants: Map<string, Kind | null>): Promise<Table> {
    const known = this.tables.get(type);
    if (known) return known;
    const base = mysqlName(type);
    for (let n = 1; ; n++) {
      const name = n === 1 ? base : `${base.slice(0, 60)}_${n}`;
      const info = async () =>
        (await this.q('SELECT TABLE_COMMENT AS c FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [name])) as { c: string }[];
      let found = await info();
      if (!found.length) {
        // Made with the batch's columns at once: one DDL statement rather than two.
        const keyCols = new Map<string, Column>(['sensor', 'run', 'seq', 'ts'].map((c) => [c, { name: c, kind: TEXT, comment: '' }]));
        const { changes, params } = this.columnChanges({ name, columns: keyCols, fieldCol: new Map() }, wants);
        await this.q(
          `CREATE TABLE IF NOT EXISTS ${quote(name)} (sensor VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL, run VARCHAR(32) CHARACTER SET ascii NOT NULL, ` +
            `seq BIGINT NOT NULL, ts DOUBLE, ${changes.map((c) => c.replace(/^ADD COLUMN /, '') + ', ').join('')}` +
            `PRIMARY KEY (sensor, run, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT=?`,
          [...params, commentOf(type, 2048)],
        );
        found = await info();
      }
      if (found.length && (found[0].c === commentOf(type, 2048) || found[0].c === '')) {
        const t: Table = { name, columns: new Map(), fieldCol: new Map() };
        await this.readColumns(t);
        this.tables.set(type, t);
        return t;
      }
    }
  }

  private async readColumns(t: Table): Promise<void> {
    const cols = (await this.q(
      'SELECT COLUMN_NAME AS n, DATA_TYPE AS d, COLUMN_COMMENT AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?',
      [t.name],
    )) as { n: string; d: string; c: string }[];
    t.columns.clear();
    for (const c of cols) t.columns.set(c.n.toLowerCase(), { name: c.n, kind: kindOfType(c.d), comment: c.c });
    for (const [f, col] of t.fieldCol) t.fieldCol.set(f, t.columns.get(col.name.toLowerCase()) ?? col);
  }

  /**
   * Make or widen the columns a batch needs (field -> the widest kind its
   * values need), in one ALTER TABLE: DDL is slow and commits by itself.
   * Another sensor altering the same table at once makes ours fail (a
   * duplicate column): read the table again and look once more.
   */
  private async ensureColumns(t: Table, wants: Map<string, Kind | null>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const { changes, params } = this.columnChanges(t, wants);
      if (!changes.length) return;
      try {
        await this.q(`ALTER TABLE ${quote(t.name)} ${changes.join(', ')}`, params);
      } catch (e) {
        if (!RACE_ERRORS.has((e as SqlError).errno ?? 0) || attempt >= 5) throw e;
      }
      await this.readColumns(t);
    }
  }

  /** ALTER TABLE clauses (ADD COLUMN, MODIFY COLUMN) giving each wanted field a column wide enough. */
  private columnChanges(t: Table, wants: Map<string, Kind | null>): { changes: string[]; params: string[] } {
    const changes: string[] = [];
    const params: string[] = [];
    const planned = new Set<string>();
    for (const [field, need] of wants) {
      const comment = commentOf(field, 1024);
      const base = mysqlName(RESERVED.test(field) ? '_' + field : field);
      let col = t.fieldCol.get(field);
      // A column made for this field by an earlier run or another sensor carries its name as comment.
      if (!col) for (const c of t.columns.values()) if (c.comment === comment && (comment !== '' || c.name === base)) col = c;
      if (col) {
        t.fieldCol.set(field, col);
        if (need !== null && need > col.kind) {
          changes.push(`MODIFY COLUMN ${quote(col.name)} ${DDL[need]} COMMENT ?`);
          params.push(col.comment);
        }
        continue;
      }
      let name = base;
      for (let n = 2; t.columns.has(name.toLowerCase()) || planned.has(name.toLowerCase()); n++) name = `${base.slice(0, 60)}_${n}`;
      planned.add(name.toLowerCase());
      changes.push(`ADD COLUMN ${quote(name)} ${DDL[need ?? FLOAT]} COMMENT ?`);
      params.push(comment);
    }
    return { changes, params };
  }

  flush(): void {
    if (this.lingering) this.wake?.();
    else if (!this.pumping && this.queue.length) this.kick();
  }

  private closePromise: Promise<void> | null = null;

  close(): Promise<void> {
    this.closePromise ??= this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    // Every wait here is bounded by timeout=: a connection attempt or a query
    // in flight (a server that accepts and never answers) is not waited for.
    if (this.queue.length && this.opts.timeout > 0) {
      // Retry at once rather than at the end of a backoff.
      this.backoff = BACKOFF_MIN;
      this.wake?.();
      if (!this.pumping) this.kick();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.opts.timeout);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    this.closed = true;
    this.wake?.();
    const left = this.queue.length;
    this.queue.clear();
    this.leftOver += left;
    const conn = this.conn;
    this.conn = null;
    // A server that took every record gets a clean goodbye (a second at most); one that did not is not waited for.
    if (conn && !left) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([conn.end().catch(() => conn.destroy()), new Promise((r) => (t = setTimeout(r, 1000)))]);
      clearTimeout(t);
    }
    conn?.destroy();
    const lost: string[] = [];
    if (this.leftOver) lost.push(`${this.leftOver} still queued at exit (${this.lastError ?? 'the database was too slow'})`);
    if (this.overflow) lost.push(`${this.overflow} dropped because the queue (${this.opts.queue}) was full`);
    if (this.rejected) lost.push(`${this.rejected} refused by the server (${this.lastError})`);
    if (lost.length) this.note(`${this.written} records stored (sensor ${this.sensor}, run ${this.run}); not stored: ${lost.join(', ')}`);
  }

  stats(): OutputStats {
    const lost: Record<string, number> = {};
    if (this.overflow) lost[`the queue (${this.opts.queue}) was full`] = this.overflow;
    if (this.rejected) lost['refused by the server'] = this.rejected;
    if (this.leftOver) lost['still queued at exit'] = this.leftOver;
    return { written: this.written, dropped: this.overflow + this.rejected + this.leftOver, queued: this.closed ? 0 : this.queue.length, lost };
  }
}
