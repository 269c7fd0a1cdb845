// --output sqlite:FILE: records into an SQLite database, one table per
// record type, through better-sqlite3 (synchronous, so a commit at close is
// done when close returns).
//
// - Table: the record type, quoted ("dns", "http.req"; a type starting with
//   sqlite_ gets a '_' in front, as SQLite keeps those names). Created on first use
//   with a ts column (REAL, seconds since the epoch) and one column per field;
//   a field seen later adds a column (ALTER TABLE ADD COLUMN); rows that lack
//   a field hold NULL there. Reopening an existing file appends, reusing its
//   tables and columns.
// - Field columns have no declared type, so SQLite keeps each value's own
//   storage class: Lua integers INTEGER (64-bit), floats REAL,
//   booleans INTEGER 0/1, strings TEXT when valid UTF-8 and BLOB otherwise
//   (bytes exactly), tables TEXT holding JSON (same rules as json: output).
// - Column names: the field name, made a safe identifier by one rule, in
//   this order: control characters (NUL included) become '_'; an empty name
//   is '_'; a name longer than 64 characters keeps its first 55 and gets '_'
//   and 8 hex digits of its SHA-1 (distinct long names stay distinct); a
//   name that is _*ts or _*more_fields (any case) gets one more '_' (as in
//   JSON lines); a name equal but for case to another field's column (SQLite
//   names are case-insensitive) gets _2, _3, ... Every name is written
//   double-quoted, so quotes, spaces and SQL keywords (select, from) are
//   ordinary column names.
// - SQLite allows 2000 columns a table: ts, 1998 field columns, and
//   more_fields. The fields that find no column left go together into
//   more_fields as a JSON object {"field name": value} (the json: output's
//   value rules), so no record loses a field to the limit.
// - A record SQLite refuses (e.g. a value over its size limit) is counted
//   under SQLite's reason and the output goes on. A database that cannot be
//   written (disk full, I/O error, locked, damaged) is an OutputFault: what
//   was committed before stays, what it can still commit is committed, the
//   rest is counted as lost, and the output takes no more records.
// - At most 10000 record types (tables) a run; records of further types are
//   refused and counted.
// - Inserts run inside a transaction committed at most a second apart (on
//   the next record, or by a timer when riff is idle), and at flush and
//   close; the file uses WAL, so other processes can read it while riff runs.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { utf8OrNull, type RecordData, type Value } from './records.js';
import { jsonValue } from './json-output.js';
import type { OutputStats, RecordOutput } from './types.js';
import { specError, errnoText, Losses, OutputFault, RecordRefused } from './types.js';

// The part of better-sqlite3's API used here (its own types are a separate package).
interface Statement {
  run(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}
interface Database {
  prepare(sql: string): Statement;
  exec(sql: string): void;
  pragma(s: string): unknown;
  close(): void;
  readonly inTransaction: boolean;
}
type DatabaseCtor = new (file: string, opts?: Record<string, unknown>) => Database;

let ctor: DatabaseCtor | null = null;
function loadDriver(spec: string): DatabaseCtor {
  if (ctor) return ctor;
  try {
    ctor = createRequire(import.meta.url)('better-sqlite3') as DatabaseCtor;
  } catch (e) {
    throw specError(
      spec,
      `the SQLite driver (better-sqlite3) is not available (${(e as Error).message.split('\n')[0]}); run npm install (it compiles with python3, make and g++)`,
    );
  }
  return ctor;
}

const COMMIT_MS = 1000;
const MAX_STATEMENTS = 512;
/** SQLite's SQLITE_MAX_COLUMN (as better-sqlite3 builds it), less ts and more_fields. */
export const MAX_FIELD_COLUMNS = 2000 - 2;
export const MORE_FIELDS = 'more_fields';
const MAX_NAME = 64;
/** Record types (tables) one run may write: a plugin inventing types cannot grow the schema without end. */
export const MAX_TABLES = 10000;

/** A field's column name before collisions are settled (the rule above). */
export function columnName(field: string): string {
  let name = field.replace(/[\x00-\x1f\x7f]/g, '_') || '_';
  if (name.length > MAX_NAME) name = name.slice(0, MAX_NAME - 9) + '_' + crypto.createHash('sha1').update(field).digest('hex').slice(0, 8);
  if (/^_*(ts|more_fields)$/i.test(name)) name = '_' + name;
  return name;
}

// SQLite result codes that mean the database cannot be written at all (not this record).
const FAULT_CODES = /^SQLITE_(FULL|IOERR|READONLY|CORRUPT|NOTADB|CANTOPEN|BUSY|LOCKED|NOMEM|PERM|PROTOCOL|NOLFS|AUTH)/;
const SQLITE_TEXT: Record<string, string> = {
  SQLITE_FULL: 'disk full',
  SQLITE_READONLY: 'the database is read-only',
  SQLITE_CORRUPT: 'the database file is damaged',
  SQLITE_NOTADB: 'the file is not a database',
  SQLITE_BUSY: 'the database is locked by another process',
  SQLITE_LOCKED: 'the database is locked',
  SQLITE_NOMEM: 'out of memory',
};
/** What to do about a fault, fitting its cause (a locked file wants no free space). */
export function sqliteAdvice(e: unknown): string {
  const code = String((e as { code?: string })?.code ?? '');
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))
    return 'another process holds the file (another riff, a sqlite3 shell in a transaction): stop it, or give each writer its own file';
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH' || code === 'EROFS' || code === 'EACCES' || code === 'EPERM')
    return 'make the file and its directory writable for riff (or the file system read-write), or send records elsewhere';
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')
    return 'move the file aside (sqlite3 FILE .recover saves what it can) and name a new file';
  if (code === 'SQLITE_NOMEM') return 'free memory, or send records elsewhere';
  if (code.startsWith('SQLITE_CANTOPEN')) return 'check the path (not a directory, still there, readable and writable by riff) or name another file';
  if (code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return 'free space or send records elsewhere';
  if (code.startsWith('SQLITE_IOERR') || code === 'EIO') return 'check the device (dmesg) or send records elsewhere';
  return 'fix the cause or send records elsewhere';
}

function sqliteText(e: unknown): string {
  const code = String((e as { code?: string })?.code ?? '');
  const base = SQLITE_TEXT[code] ?? (code.startsWith('SQLITE_IOERR') ? 'I/O error' : null);
  return base ? `${base} (${code})` : errnoText(e);
}

export function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

interface Table {
  name: string;
  /** column name, lowercased -> column name */
  columns: Map<string, string>;
  /** field -> column for this run; null: the field goes into more_fields */
  fieldCol: Map<string, string | null>;
  /** columns claimed by a field this run */
  claimed: Set<string>;
  /** false until its first record: then one CREATE TABLE names every column (2000 ALTERs take seconds) */
  created: boolean;
}

function jsonText(v: Value): string {
  // Nested values: the json output's rules.
  const out: string[] = [];
  jsonValue(v, out);
  return out.join('');
}

/** A field value as an SQLite parameter. */
export function sqlValue(v: Value): unknown {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isNaN(v) ? null : v;
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (Buffer.isBuffer(v)) return utf8OrNull(v) ?? v;
  return jsonText(v);
}

export class SqliteOutput implements RecordOutput {
  private readonly db: Database;
  private readonly tables = new Map<string, Table>();
  private readonly statements = new Map<string, { stmt: Statement; cols: (string | null)[]; more: boolean }>();
  private readonly timer: NodeJS.Timeout;
  // At exit a fault has nobody left to tell.
  private readonly onExit = () => {
    try {
      this.close();
    } catch {}
  };
  private txStart = 0;
  private written = 0;
  private uncommitted = 0;
  private closed = false;
  private failed = false;
  private readonly losses = new Losses();
  onAsyncFault: ((e: unknown) => void) | null = null;

  constructor(
    readonly spec: string,
    readonly file: string,
  ) {
    const Database = loadDriver(spec);
    const dir = path.dirname(path.resolve(file));
    if (!fs.existsSync(dir)) throw specError(spec, `the directory ${dir} does not exist; create it or name another file`);
    try {
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('busy_timeout = 5000');
      // The page cache keeps every page it has held until it is full, and
      // the database's pages are new ones as rows are appended: resident
      // memory rose by ~95 bytes a row until the cache was full (16 MiB,
      // better-sqlite3's build; SQLite's own 2 MiB took 4 minutes of the
      // soak to fill). Appending rows needs each table's right edge, a few
      // pages: 256 KiB (64 pages) is full within seconds and costs inserts
      // nothing measurable (README "Soak").
      this.db.pragma('cache_size = -256');
    } catch (e) {
      throw specError(spec, `cannot open ${file} as an SQLite database: ${(e as Error).message}; ${sqliteAdvice(e)}`);
    }
    this.timer = setInterval(() => {
      try {
        this.commitIfDue();
      } catch (e) {
        this.onAsyncFault?.(e);
      }
    }, COMMIT_MS / 2);
    this.timer.unref();
    // A safety net for process.exit(): the commit is synchronous.
    process.on('exit', this.onExit);
  }

  private table(type: string): Table {
    // SQLite table names ignore case: "DNS" and "dns" are one table, so one Table here.
    const key = type.toLowerCase();
    let t = this.tables.get(key);
    if (t) return t;
    if (this.tables.size >= MAX_TABLES) {
      const why = `more than ${MAX_TABLES} record types (tables) in one run`;
      this.losses.add(why);
      throw new RecordRefused(why);
    }
    const name = /^sqlite_/i.test(type) ? '_' + type : type; // sqlite_* names are SQLite's own
    const cols = this.db.prepare(`SELECT name FROM pragma_table_info(?)`).all(name) as { name: string }[];
    const created = cols.length > 0;
    if (!created) cols.push({ name: 'ts' });
    t = { name, columns: new Map(cols.map((c) => [c.name.toLowerCase(), c.name])), fieldCol: new Map(), claimed: new Set(['ts']), created };
    this.tables.set(key, t);
    return t;
  }

  /** The field's column, added if new; null once the table has no column left (more_fields). */
  private column(t: Table, field: string): string | null {
    let col = t.fieldCol.get(field);
    if (col !== undefined) return col;
    const base = columnName(field);
    col = null;
    for (let n = 1; ; n++) {
      const cand = n === 1 ? base : `${base}_${n}`;
      if (t.claimed.has(cand.toLowerCase())) continue;
      const existing = t.columns.get(cand.toLowerCase());
      if (existing === undefined) {
        if (t.columns.size - (t.columns.has(MORE_FIELDS) ? 1 : 0) - 1 >= MAX_FIELD_COLUMNS) break;
        if (t.created) this.db.exec(`ALTER TABLE ${quoteIdent(t.name)} ADD COLUMN ${quoteIdent(cand)}`);
        t.columns.set(cand.toLowerCase(), cand);
      } else if (existing !== cand) continue;
      col = cand;
      t.claimed.add(col.toLowerCase());
      break;
    }
    if (col === null && !t.columns.has(MORE_FIELDS)) {
      if (t.created) this.db.exec(`ALTER TABLE ${quoteIdent(t.name)} ADD COLUMN ${quoteIdent(MORE_FIELDS)}`);
      t.columns.set(MORE_FIELDS, MORE_FIELDS);
    }
    t.fieldCol.set(field, col);
    return col;
  }

  write(rec: RecordData): void {
    if (this.closed || this.failed) throw new Error(`--output ${this.spec}: written after close`);
    try {
      if (!this.db.inTransaction) {
        this.db.exec('BEGIN');
        this.txStart = Date.now();
      }
      const keys = Object.keys(rec.fields);
      // JSON: field names may hold any character, NUL included.
      const sig = JSON.stringify([rec.type, keys]);
      let s = this.statements.get(sig);
      if (!s) {
        const t = this.table(rec.type);
        const cols = keys.map((k) => this.column(t, k));
        if (!t.created) {
          const defs = [...t.columns.values()].map((c) => (c === 'ts' ? 'ts REAL' : quoteIdent(c)));
          this.db.exec(`CREATE TABLE IF NOT EXISTS ${quoteIdent(t.name)} (${defs.join(', ')})`);
          t.created = true;
        }
        const named = cols.filter((c): c is string => c !== null);
        const more = named.length < cols.length;
        if (more) named.push(MORE_FIELDS);
        const sql = `INSERT INTO ${quoteIdent(t.name)} (ts${named.map((c) => ', ' + quoteIdent(c)).join('')}) VALUES (?${', ?'.repeat(named.length)})`;
        if (this.statements.size >= MAX_STATEMENTS) this.statements.clear();
        s = { stmt: this.db.prepare(sql), cols, more };
        this.statements.set(sig, s);
      }
      const params: unknown[] = [rec.ts];
      const rest: string[] = [];
      keys.forEach((k, i) => {
        if (s!.cols[i] !== null) params.push(sqlValue(rec.fields[k]));
        else {
          rest.push(rest.length ? ',' : '{', JSON.stringify(k), ':');
          jsonValue(rec.fields[k], rest);
        }
      });
      if (s.more) params.push(rest.join('') + '}');
      s.stmt.run(...params);
    } catch (e) {
      this.refuseOrFail(e);
    }
    this.uncommitted++;
    this.commitIfDue();
  }

  /** One record SQLite would not take: counted and refused, or the database cannot be written: a fault. */
  private refuseOrFail(e: unknown): never {
    if (e instanceof RecordRefused) throw e; // counted where it was refused
    const code = String((e as { code?: string })?.code ?? '');
    if (!FAULT_CODES.test(code) && this.db.inTransaction) {
      const why = `refused by SQLite: ${String((e as Error)?.message ?? e).split('\n')[0]}`;
      this.losses.add(why);
      throw new RecordRefused(why);
    }
    this.fail(e, 1);
  }

  /** Keep what can still be committed, count the rest, take no more records. */
  private fail(e: unknown, records: number): never {
    this.failed = true;
    clearInterval(this.timer);
    const what = sqliteText(e);
    let lost = records;
    // SQLite may have rolled the transaction back already; if not, one more try to commit it.
    let kept = false;
    if (this.db.inTransaction) {
      try {
        this.db.exec('COMMIT');
        kept = true;
      } catch {
        try {
          if (this.db.inTransaction) this.db.exec('ROLLBACK');
        } catch {}
      }
    }
    if (kept) this.written += this.uncommitted;
    else lost += this.uncommitted;
    this.uncommitted = 0;
    this.losses.add(what, lost);
    throw new OutputFault(
      `--output ${this.spec}: ${what} writing ${this.file}; the ${this.written} records committed before are kept, the rest are counted as lost; ${sqliteAdvice(e)}`,
      what,
    );
  }

  private commitIfDue(): void {
    if (this.db.inTransaction && Date.now() - this.txStart >= COMMIT_MS) this.commit();
  }

  private commit(): void {
    if (this.failed || !this.db.inTransaction) return;
    try {
      this.db.exec('COMMIT');
    } catch (e) {
      this.fail(e, 0);
    }
    this.written += this.uncommitted;
    this.uncommitted = 0;
  }

  flush(): void {
    if (!this.closed) this.commit();
  }

  close(): void {
    if (this.closed) return;
    try {
      this.commit();
    } finally {
      this.closed = true;
      clearInterval(this.timer);
      process.off('exit', this.onExit);
      this.statements.clear();
      try {
        this.db.close();
      } catch {}
    }
  }

  stats(): OutputStats {
    return { written: this.written, dropped: this.losses.total, queued: this.uncommitted, lost: this.losses.record() };
  }
}
