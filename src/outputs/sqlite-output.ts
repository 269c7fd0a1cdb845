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
//   storage class: Lua integers INTEGER (64-bit), floats REAL (NaN as NULL),
//   booleans INTEGER 0/1, strings TEXT when valid UTF-8 and BLOB otherwise
//   (bytes exactly), tables TEXT holding JSON (same rules as json: output).
// - Column names: the field name, except that _*ts gets one more '_' (as in
//   JSON lines), and a name equal but for case to another field's column
//   (SQLite names are case-insensitive) gets _2, _3, ...
// - Inserts run inside a transaction committed at most a second apart (on
//   the next record, or by a timer when riff is idle), and at flush and
//   close; the file uses WAL, so other processes can read it while riff runs.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { utf8OrNull, type RecordData, type Value } from './records.js';
import { jsonValue } from './json-output.js';
import type { OutputStats, RecordOutput } from './output.js';
import { specError } from './output.js';

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

export function quoteIdent(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

interface Table {
  name: string;
  /** column name, lowercased -> column name */
  columns: Map<string, string>;
  /** field -> column, for this run */
  fieldCol: Map<string, string>;
  /** columns claimed by a field this run */
  claimed: Set<string>;
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
  private readonly statements = new Map<string, { stmt: Statement; cols: string[] }>();
  private readonly timer: NodeJS.Timeout;
  private readonly onExit = () => this.close();
  private txStart = 0;
  private written = 0;
  private uncommitted = 0;
  private closed = false;

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
    } catch (e) {
      throw specError(spec, `cannot open ${file} as an SQLite database: ${(e as Error).message}`);
    }
    this.timer = setInterval(() => this.commitIfDue(), COMMIT_MS / 2);
    this.timer.unref();
    // A safety net for process.exit(): the commit is synchronous.
    process.on('exit', this.onExit);
  }

  private table(type: string): Table {
    let t = this.tables.get(type);
    if (t) return t;
    const name = /^sqlite_/i.test(type) ? '_' + type : type; // sqlite_* names are SQLite's own
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${quoteIdent(name)} (ts REAL)`);
    const cols = this.db.prepare(`SELECT name FROM pragma_table_info(?)`).all(name) as { name: string }[];
    t = { name, columns: new Map(cols.map((c) => [c.name.toLowerCase(), c.name])), fieldCol: new Map(), claimed: new Set(['ts']) };
    this.tables.set(type, t);
    return t;
  }

  private column(t: Table, field: string): string {
    let col = t.fieldCol.get(field);
    if (col !== undefined) return col;
    const base = (/^_*ts$/i.test(field) ? '_' + field : field) || '_';
    for (let n = 1; ; n++) {
      const cand = n === 1 ? base : `${base}_${n}`;
      if (t.claimed.has(cand)) continue;
      const existing = t.columns.get(cand.toLowerCase());
      if (existing === undefined) {
        this.db.exec(`ALTER TABLE ${quoteIdent(t.name)} ADD COLUMN ${quoteIdent(cand)}`);
        t.columns.set(cand.toLowerCase(), cand);
      } else if (existing !== cand) continue;
      col = cand;
      break;
    }
    t.claimed.add(col);
    t.fieldCol.set(field, col);
    return col;
  }

  write(rec: RecordData): void {
    if (this.closed) throw new Error(`--output ${this.spec}: written after close`);
    try {
      if (!this.db.inTransaction) {
        this.db.exec('BEGIN');
        this.txStart = Date.now();
      }
      const keys = Object.keys(rec.fields);
      const sig = rec.type + '\0' + keys.join('\0');
      let s = this.statements.get(sig);
      if (!s) {
        const t = this.table(rec.type);
        const cols = keys.map((k) => this.column(t, k));
        const sql = `INSERT INTO ${quoteIdent(t.name)} (ts${cols.map((c) => ', ' + quoteIdent(c)).join('')}) VALUES (?${', ?'.repeat(cols.length)})`;
        if (this.statements.size >= MAX_STATEMENTS) this.statements.clear();
        s = { stmt: this.db.prepare(sql), cols };
        this.statements.set(sig, s);
      }
      const params: unknown[] = [rec.ts];
      for (const k of keys) params.push(sqlValue(rec.fields[k]));
      s.stmt.run(...params);
    } catch (e) {
      throw new Error(`--output ${this.spec}: ${(e as Error).message}`);
    }
    this.uncommitted++;
    this.commitIfDue();
  }

  private commitIfDue(): void {
    if (this.db.inTransaction && Date.now() - this.txStart >= COMMIT_MS) this.commit();
  }

  private commit(): void {
    if (!this.db.inTransaction) return;
    this.db.exec('COMMIT');
    this.written += this.uncommitted;
    this.uncommitted = 0;
  }

  flush(): void {
    if (!this.closed) this.commit();
  }

  close(): void {
    if (this.closed) return;
    this.commit();
    this.closed = true;
    clearInterval(this.timer);
    process.off('exit', this.onExit);
    this.statements.clear();
    this.db.close();
  }

  stats(): OutputStats {
    return { written: this.written, dropped: 0, queued: this.uncommitted };
  }
}
