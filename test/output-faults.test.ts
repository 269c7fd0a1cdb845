// Outputs that fail, records they cannot hold, and how riff accounts for
// them: one line naming the output and what to do, the summary, exit 1,
// and what was written before kept. Real devices and file systems:
// /dev/full, a tiny tmpfs mounted here (root), the sqlite3 CLI, closed
// loopback ports and a name under .invalid (RFC 6761: never resolves).
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { riff, tmpdir, tree, hasCommand, isRoot, FIXTURES, type Run, pcapHeader } from './helpers.js';
import { freePort } from './rsyslog.js';
import { openOutputs, type OutputSet } from '../src/outputs/output.js';
import { columnName, MAX_FIELD_COLUMNS, sqliteAdvice } from '../src/outputs/sqlite-output.js';
import type { RecordData } from '../src/outputs/records.js';

const HTTP = path.join(FIXTURES, 'http.pcap');
// http.pcap: 45 packets, 2 of them hold "pcap"; the last one's time.
const HTTP_LAST_TS = 1504850402.60608;

const noSqlite = hasCommand('sqlite3') ? false : 'the sqlite3 CLI is not installed (apt-get install sqlite3)';

function sql(db: string, query: string): string {
  const r = spawnSync('sqlite3', ['-batch', '-noheader', '-separator', '|', db, query], { timeout: 30_000 });
  assert.equal(r.status, 0, `sqlite3: ${r.stderr}`);
  return String(r.stdout).trimEnd();
}

/** The run ended as a fault must: one line per fault, the summary, exit 1, no stack, no "internal error". */
function faulted(r: Run, line: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /internal error|^\s+at /m);
  const lines = r.stderr.split('\n').filter((l) => line.test(l));
  assert.equal(lines.length, 1, `one fault line: ${r.stderr}`);
  assert.match(r.stderr, /^45 packets read$/m, 'the summary');
}

function script(src: string): string {
  return path.join(tree({ 's.lua': src }), 's.lua');
}

const EMIT2 = script(`buffer = function(p)
  if p:find("pcap", 1, true) then riff.emit("hit", { id = riff.packet.id, len = #p }) end
end`);

const EMIT_ALL = script(`buffer = function(p) riff.emit("pkt", { id = riff.packet.id }) end`);

function records(file: string): Record<string, unknown>[] {
  const text = fs.readFileSync(file, 'utf8');
  if (text) assert.ok(text.endsWith('\n'), 'no torn last line');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('output faults: one line, the summary, exit 1', () => {
  test('json:/dev/full', () => {
    const r = riff(['-q', '--lua', EMIT2, '-r', HTTP, '-o', 'json:/dev/full']);
    faulted(r, /^riff: --output json:\/dev\/full: disk full \(ENOSPC\) writing \/dev\/full; .*free space or send records elsewhere$/);
    assert.match(r.stderr, /^2 records emitted$/m);
    assert.match(r.stderr, /^output json:\/dev\/full: 0 written, 2 not written: disk full \(ENOSPC\)$/m);
  });

  test('-w /dev/full', () => {
    const r = riff(['-q', '-r', HTTP, '-w', '/dev/full']);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /internal error|^\s+at /m);
    assert.match(r.stderr, /^riff: -w \/dev\/full: disk full \(ENOSPC\) writing \/dev\/full; .*free space or write elsewhere$/m);
    assert.match(r.stderr, /packets read$/m, 'the summary');
    assert.match(r.stderr, /^0 packets written to \/dev\/full$/m);
  });

  test('one failed output does not take the others down: they get every record', () => {
    const dir = tmpdir();
    const ok = path.join(dir, 'ok.jsonl');
    const r = riff(['-q', '--lua', EMIT2, '-r', HTTP, '-o', 'json:/dev/full', '-o', `json:${ok}`]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^output json:${ok.replace(/[.]/g, '\\.')}: 2 written$`, 'm'));
    assert.equal(records(ok).length, 2);
  });

  test('an output that fails is reported once; what it refuses afterwards is counted under the same reason', async () => {
    const set: OutputSet = await openOutputs(['json:/dev/full']);
    const faults: string[] = [];
    set.onFault = (l) => faults.push(l);
    const rec: RecordData = { type: 't', ts: 1, sec: 1, nsec: 0, clock: 'packet', fields: { x: Buffer.from('y'.repeat(70_000)) } };
    for (let i = 0; i < 10; i++) set.write(rec); // the first crosses 64 KiB and flushes
    set.flush();
    await set.close();
    assert.equal(faults.length, 1, faults.join('\n'));
    const [acct] = set.stats();
    assert.equal(acct.failed, true);
    assert.deepEqual([acct.stats.written, acct.stats.dropped, acct.stats.lost], [0, 10, { 'disk full (ENOSPC)': 10 }]);
  });
});

describe('a full file system (tmpfs mounted by the test)', { skip: isRoot ? (noSqlite || false) : 'needs root to mount a tmpfs' }, () => {
  const mnt = tmpdir('riff-full-');
  let mounted = false;
  after(() => {
    if (mounted) spawnSync('umount', [mnt]);
  });

  test('json and sqlite: each says disk full once, keeps what was written before, counts the rest, exit 1', () => {
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    assert.equal(m.status, 0, `mount: ${m.stderr}`);
    mounted = true;
    const jl = path.join(mnt, 'r.jsonl');
    const db = path.join(mnt, 'r.db');
    // A first run that fits: these records must survive the second.
    const first = riff(['-q', '--lua', EMIT2, '-r', HTTP, '-o', `json:${jl}`, '-o', `sqlite:${db}`]);
    assert.equal(first.code, 0, first.stderr);
    // The second fills the file system: 900 records of ~0.5 KB in 256 KiB, shared by both.
    const big = script(`buffer = function(p)
      for i = 1, 20 do riff.emit("big", { id = riff.packet.id, i = i, pad = ("x"):rep(500) }) end
    end`);
    const r = riff(['-q', '--lua', big, '-r', HTTP, '-o', `json:${jl}`, '-o', `sqlite:${db}`]);
    faulted(r, /^riff: --output json:.* disk full \(ENOSPC\) writing /);
    faulted(r, /^riff: --output sqlite:.* disk full \(SQLITE_FULL\) writing /);
    assert.match(r.stderr, /^900 records emitted$/m);
    const j = /^output json:\S+: (\d+) written, (\d+) not written: disk full \(ENOSPC\)$/m.exec(r.stderr);
    const s = /^output sqlite:\S+: (\d+) written, (\d+) not written: disk full \(SQLITE_FULL\)$/m.exec(r.stderr);
    assert.ok(j && s, r.stderr);
    assert.equal(Number(j[1]) + Number(j[2]), 900);
    assert.equal(Number(s[1]) + Number(s[2]), 900);
    // The JSON lines file: the first run's lines, then whole lines only, as many as the summary says.
    const lines = records(jl);
    assert.deepEqual(lines.slice(0, 2).map((l) => l.type), ['hit', 'hit']);
    assert.equal(lines.length, 2 + Number(j[1]));
    // The database: intact, the first run's rows there.
    assert.equal(sql(db, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sql(db, 'SELECT count(*) FROM hit'), '2');
    spawnSync('umount', [mnt]);
    mounted = false;
  });

  /** A capture of 3000 packets of 1000 bytes (3 MB), and a 2 MiB tmpfs mounted at mnt to write it into. */
  function bigCaptureOnSmallDisk(): string {
    const src = path.join(tmpdir(), 'big.pcap');
    const parts = [pcapHeader(1, 65535)];
    for (let i = 0; i < 3000; i++) {
      const rh = Buffer.alloc(16);
      rh.writeUInt32LE(1504850400 + i, 0);
      rh.writeUInt32LE(1000, 8);
      rh.writeUInt32LE(1000, 12);
      parts.push(rh, Buffer.alloc(1000, i & 0xff));
    }
    fs.writeFileSync(src, Buffer.concat(parts));
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    assert.equal(m.status, 0, `mount: ${m.stderr}`);
    mounted = true;
    return src;
  }

  test('-w on a file system that fills mid-capture: one line, exit 1, the file keeps the whole packets before and reads back', () => {
    // 3000 packets of 1000 bytes (3 MB) into 2 MiB: the writer's first 1 MiB chunks fit, then one does not.
    const src = bigCaptureOnSmallDisk();
    const out = path.join(mnt, 'out.pcap');
    const r = riff(['-q', '-r', src, '-w', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /internal error|^\s+at /m);
    assert.equal(r.stderr.split('\n').filter((l) => /^riff: -w .*: disk full \(ENOSPC\) writing /.test(l)).length, 1, r.stderr);
    const w = new RegExp(`^(\\d+) packets written to ${out.replace(/[.]/g, '\\.')}, (\\d+) not written: disk full \\(ENOSPC\\)$`, 'm').exec(r.stderr);
    assert.ok(w, r.stderr);
    assert.ok(Number(w[1]) > 0 && Number(w[2]) > 0, r.stderr);
    assert.equal(Number(w[1]) + Number(w[2]), 3000, 'every packet read is written or counted');
    const back = riff(['-q', '-r', out]);
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stderr, new RegExp(`^${w[1]} packets read$`, 'm'));
    spawnSync('umount', [mnt]);
    mounted = false;
  });

  test('-w -C on a file system that fills: the line and the summary name the file that failed, not the first', () => {
    const src = bigCaptureOnSmallDisk();
    // Two files of 1 MB fit in 2 MiB; the third does not.
    const out = path.join(mnt, 'c.pcap');
    const r = riff(['-q', '-r', src, '-w', out, '-C', '1']);
    assert.equal(r.code, 1, r.stderr);
    const esc = (t: string) => t.replace(/[.]/g, '\\.');
    assert.match(r.stderr, new RegExp(`^riff: -w ${esc(out)}: disk full \\(ENOSPC\\) writing ${esc(out)}2; `, 'm'));
    const w = new RegExp(`^(\\d+) packets written to 3 files \\(${esc(out)} \\.\\.\\. ${esc(out)}2\\), (\\d+) not written: disk full \\(ENOSPC\\)$`, 'm').exec(r.stderr);
    assert.ok(w, r.stderr);
    assert.equal(Number(w[1]) + Number(w[2]), 3000);
    spawnSync('umount', [mnt]);
    mounted = false;
  });
});

describe('sqlite: the advice fits the cause', () => {
  test('a file another process holds locked: stop it or use another file, not "free space"', () => {
    const db = path.join(tmpdir(), 'locked.db');
    const Database = createRequire(import.meta.url)('better-sqlite3') as new (f: string) => { pragma(s: string): unknown; exec(s: string): void; close(): void };
    const holder = new Database(db);
    holder.pragma('journal_mode = WAL');
    holder.exec('CREATE TABLE other (x); BEGIN EXCLUSIVE; INSERT INTO other VALUES (1)');
    try {
      const r = riff(['-q', '--lua', EMIT_ALL, '-r', HTTP, '-o', `sqlite:${db}`]);
      faulted(r, /^riff: --output sqlite:/);
      const line = r.stderr.split('\n').find((l) => l.startsWith('riff: --output sqlite:'))!;
      assert.match(line, /the database is locked by another process \(SQLITE_BUSY\) writing .*; another process holds the file .*: stop it, or give each writer its own file$/);
      assert.doesNotMatch(line, /free space/);
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
  });

  test('each SQLite fault gets advice for its cause', () => {
    const advice = (code: string) => sqliteAdvice(Object.assign(new Error(code), { code }));
    for (const code of ['SQLITE_BUSY', 'SQLITE_BUSY_SNAPSHOT', 'SQLITE_LOCKED', 'SQLITE_LOCKED_SHAREDCACHE']) assert.match(advice(code), /another process holds the file.*stop it, or give each writer its own file/, code);
    for (const code of ['SQLITE_READONLY', 'SQLITE_READONLY_DBMOVED', 'SQLITE_PERM', 'EROFS', 'EACCES']) assert.match(advice(code), /writable/, code);
    for (const code of ['SQLITE_CORRUPT', 'SQLITE_NOTADB']) assert.match(advice(code), /move the file aside .* name a new file/, code);
    for (const code of ['SQLITE_FULL', 'ENOSPC']) assert.match(advice(code), /free space/, code);
    assert.match(advice('SQLITE_IOERR_WRITE'), /check the device/);
    assert.match(advice('SQLITE_NOMEM'), /free memory/);
    assert.match(advice('SQLITE_CANTOPEN'), /check the path/);
    for (const code of ['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_READONLY', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_NOMEM', 'SQLITE_CANTOPEN', 'SQLITE_IOERR', 'SQLITE_PERM'])
      assert.doesNotMatch(advice(code), /free space/, code);
  });
});

describe('sqlite and json: hostile field names and 3000 fields', { skip: noSqlite }, () => {
  const HOSTILE = script(`
    local n = 0
    buffer = function(p)
      n = n + 1
      if n > 3 then return end
      local r = { ["a\\0b"] = "nul", ['q"uote'] = "quote", ["select"] = "kw", ["A"] = "upper", ["a"] = "lower",
                  [""] = "empty", ts = "ts", TS = "TS", more_fields = "mf", [("L"):rep(300)] = "long1",
                  [("L"):rep(299) .. "x"] = "long2", ["a\\nb'); DROP TABLE wide; --"] = "inject" }
      for i = 1, 3000 do r[string.format("z%04d", i)] = i end
      riff.emit("wide", r)
      -- Same names split differently: must not share a statement with the NUL name.
      riff.emit("wide", { a = "x", b = "y" })
    end`);

  test('every field lands in a column by the documented rule or in more_fields; the JSON line holds them all', () => {
    const dir = tmpdir();
    const db = path.join(dir, 'h.db');
    const jl = path.join(dir, 'h.jsonl');
    const r = riff(['-q', '--lua', HOSTILE, '-r', HTTP, '-o', `sqlite:${db}`, '-o', `json:${jl}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^6 records emitted$/m);
    assert.match(r.stderr, /^output sqlite:\S+: 6 written$/m);
    assert.equal(sql(db, 'PRAGMA integrity_check'), 'ok');
    assert.equal(sql(db, 'SELECT count(*) FROM wide'), '6');
    const cols = sql(db, "SELECT name FROM pragma_table_info('wide')").split('\n');
    assert.equal(cols.length, 2000, 'SQLite allows 2000 columns: ts, 1998 fields, more_fields');
    assert.equal(cols[0], 'ts');
    assert.ok(cols.includes('more_fields'));
    // The rule, name by name (fields arrive sorted by name).
    const long1 = 'L'.repeat(300);
    const want: Record<string, string> = {
      a_b: 'nul', 'q"uote': 'quote', select: 'kw', A: 'upper', a_2: 'lower', _: 'empty', _TS: 'TS', _ts_2: 'ts',
      _more_fields: 'mf', [columnName(long1)]: 'long1', [columnName('L'.repeat(299) + 'x')]: 'long2',
      "a_b'); DROP TABLE wide; --": 'inject',
    };
    assert.notEqual(columnName(long1), columnName('L'.repeat(299) + 'x'));
    assert.ok(columnName(long1).length <= 64);
    for (const [col, v] of Object.entries(want)) {
      assert.ok(cols.includes(col), `column ${JSON.stringify(col)} in ${cols.slice(0, 20).join(', ')}`);
      assert.equal(sql(db, `SELECT "${col.replace(/"/g, '""')}" FROM wide WHERE "select" IS NOT NULL LIMIT 1`), v, col);
    }
    // The fields past the last column: in more_fields as JSON, with their values.
    const more = JSON.parse(sql(db, `SELECT more_fields FROM wide WHERE "select" IS NOT NULL LIMIT 1`));
    const nFieldCols = MAX_FIELD_COLUMNS;
    const total = 3000 + Object.keys(want).length;
    assert.equal(Object.keys(more).length, total - nFieldCols);
    assert.equal(more.z3000, 3000);
    // The split-name record: its own columns (b, new, went to more_fields), not the NUL name's statement.
    assert.equal(sql(db, `SELECT a_2 || ' ' || more_fields FROM wide WHERE a_2 = 'x' LIMIT 1`), 'x {"b":"y"}');
    // JSON lines: every field, names as given.
    const lines = records(jl).filter((l) => l.select !== undefined);
    assert.equal(lines.length, 3);
    assert.equal(lines[0]['a\0b'], 'nul');
    assert.equal(lines[0]._ts, 'ts');
    assert.equal(Object.keys(lines[0]).filter((k) => /^z\d{4}$/.test(k)).length, 3000);
  });
});

describe('sqlite: record types that differ only in case', { skip: noSqlite }, () => {
  test('share one table (SQLite names ignore case) and every row is written', () => {
    const s = script(`buffer = function(p)
      local id = riff.packet.id
      if id == 1 then riff.emit("Dns", { a = 1 }) end
      if id == 2 then riff.emit("dns", { b = 2 }) end
      -- Dns learns of b only through dns: its ALTER must not add b twice.
      if id == 3 then riff.emit("Dns", { b = 3, c = 4 }) end
    end`);
    const db = path.join(tmpdir(), 'c.db');
    const r = riff(['-q', '--lua', s, '-r', HTTP, '-o', `sqlite:${db}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^output sqlite:\S+: 3 written$/m);
    assert.equal(sql(db, 'SELECT quote(a) || quote(b) || quote(c) FROM dns ORDER BY rowid'), '1NULLNULL\nNULL2NULL\nNULL34');
  });
});

describe('counting and time stamps in records', () => {
  test('two outputs: records emitted once, each output its own count', { skip: noSqlite }, () => {
    const dir = tmpdir();
    const db = path.join(dir, 'x.db');
    const r = riff(['-q', '--lua', EMIT2, '-r', HTTP, '-o', 'json:-', '-o', `sqlite:${db}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^2 records emitted$/m);
    assert.match(r.stderr, /^output json:-: 2 written$/m);
    assert.match(r.stderr, new RegExp(`^output sqlite:${db.replace(/[.]/g, '\\.')}: 2 written$`, 'm'));
    assert.doesNotMatch(r.stderr, /4 records/);
  });

  test('records emitted after the packets (deinit, plugin.sessions flush) carry the last packet time: same records every run', () => {
    const runs = [0, 1].map(() => riff(['-q', '--lua', path.join('lua', 'examples', 'traffic.lua'), '-r', HTTP, '-o', 'json:-']));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    assert.ok(runs[0].stdout.length > 0);
    assert.deepEqual(runs[0].stdout, runs[1].stdout);
    const lines = runs[0].stdout.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const ended = lines.filter((l) => l.reason === 'end');
    assert.ok(ended.length > 0, 'sessions flushed at the end');
    for (const l of ended) assert.equal(l.ts, HTTP_LAST_TS);
    for (const l of lines) assert.ok(l.ts <= HTTP_LAST_TS, `capture time, not the wall clock: ${l.ts}`);
  });

  test('setup records carry the wall clock, deinit records the last packet time', () => {
    const s = script(`
      function setup() riff.emit("s", {}) end
      buffer = function() end
      function deinit() riff.emit("d", {}) end`);
    const t0 = Date.now() / 1000;
    const r = riff(['-q', '--lua', s, '-r', HTTP, '-o', 'json:-']);
    assert.equal(r.code, 0, r.stderr);
    const [a, b] = r.stdout.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    assert.equal(a.type, 's');
    assert.ok(a.ts >= t0 - 1, `setup: wall clock ${a.ts}`);
    assert.equal(b.type, 'd');
    assert.equal(b.ts, HTTP_LAST_TS);
  });

  test('NaN and infinities are refused at riff.emit, naming the field (a Lua error, counted), never written as null', () => {
    const s = script(`buffer = function(p)
      local id = riff.packet.id
      if id == 1 then riff.emit("r", { ok = 1.5 }) end
      if id == 2 then riff.emit("r", { x = 0/0 }) end
      if id == 3 then riff.emit("r", { deep = { y = 1/0 } }) end
      if id == 4 then riff.emit("r", { z = -1/0 }) end
    end`);
    const r = riff(['-q', '--lua', s, '-r', HTTP, '-o', 'json:-']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString().trim().split('\n').length, 1);
    assert.doesNotMatch(r.stdout.toString(), /null/);
    assert.match(r.stderr, /riff\.emit: x: NaN cannot be recorded .*\(packet 2\)/);
    assert.match(r.stderr, /riff\.emit: deep\.y: an infinity cannot be recorded .*\(packet 3\)/);
    assert.match(r.stderr, /riff\.emit: z: an infinity cannot be recorded .*\(packet 4\)/);
    assert.match(r.stderr, /^3 Lua errors/m);
  });
});

describe("config.lua's outputs()", () => {
  test('announced on stderr, relative paths beside config.lua (not the current directory)', { skip: noSqlite }, () => {
    const dir = tree({
      'cfg/config.lua': 'function outputs() return { "json:recs.jsonl", "sqlite:sub/recs.db", "json:-" } end',
      'cfg/script.lua': fs.readFileSync(EMIT2, 'utf8'),
      'cfg/sub/.keep': '',
      'elsewhere/.keep': '',
    });
    const cwd = path.join(dir, 'elsewhere');
    const cfg = path.join(dir, 'cfg');
    const r = riff(['-q', '--lua', '../cfg/script.lua', '-r', HTTP], { cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^riff: outputs from config\\.lua: json:${cfg}/recs\\.jsonl sqlite:${cfg}/sub/recs\\.db json:-$`, 'm'));
    assert.equal(records(path.join(cfg, 'recs.jsonl')).length, 2);
    assert.equal(sql(path.join(cfg, 'sub', 'recs.db'), 'SELECT count(*) FROM hit'), '2');
    assert.deepEqual(fs.readdirSync(cwd), ['.keep'], 'nothing written in the current directory');
    // --output wins over config.lua, and then nothing is announced.
    const r2 = riff(['-q', '--lua', '../cfg/script.lua', '-r', HTTP, '-o', 'json:-'], { cwd });
    assert.doesNotMatch(r2.stderr, /outputs from config\.lua/);
  });
});

describe('syslog: why records were not delivered, at once', () => {
  // UDP hears a refusal only after a datagram went out (ICMP comes back
  // later): with a record per packet some always find the port known closed.
  async function check(spec: string, reason: RegExp, lua = EMIT2, emitted = 2): Promise<void> {
    // timeout=600000: if riff waited for the queue to drain, the run would hit spawn's 60 s limit.
    const r = riff(['-q', '--lua', lua, '-r', HTTP, '-o', `${spec}?timeout=600000`], { timeout: 60_000, killSignal: 'SIGKILL' });
    assert.equal(r.signal, null, 'riff did not wait out the drain timeout');
    assert.equal(r.code, 1, r.stderr);
    const notes = r.stderr.split('\n').filter((l) => l.startsWith(`riff: --output ${spec}`));
    assert.equal(notes.length, 1, r.stderr);
    assert.match(notes[0], reason);
    assert.doesNotMatch(r.stderr, /queue was full/);
    assert.match(r.stderr, new RegExp(`^${emitted} records emitted$`, 'm'));
    const acct = new RegExp(`^output ${spec.replace(/[.?]/g, '\\$&')}\\?timeout=600000: (\\d+) written, (\\d+) not written: (.*)$`, 'm').exec(r.stderr);
    assert.ok(acct, r.stderr);
    assert.equal(Number(acct[1]) + Number(acct[2]), emitted);
    assert.match(acct[3], reason);
  }

  test('TCP, a closed loopback port: connection refused, with host and port', async () => {
    const port = await freePort('tcp');
    await check(`syslog:tcp://127.0.0.1:${port}`, new RegExp(`connection refused by 127\\.0\\.0\\.1:${port}`));
  });

  test('UDP, a closed loopback port: connection refused (ICMP), with host and port', async () => {
    const port = await freePort('udp');
    await check(`syslog:udp://127.0.0.1:${port}`, new RegExp(`connection refused by 127\\.0\\.0\\.1:${port}`), EMIT_ALL, 45);
  });

  test('UDP, a closed port: the address stays unusable after the refusal, nearly every record is counted as lost (not every other one)', async () => {
    const port = await freePort('udp');
    const many = script(`buffer = function(p) for i = 1, 25 do riff.emit("pkt", { id = riff.packet.id, i = i }) end end`);
    const r = riff(['-q', '--lua', many, '-r', HTTP, '-o', `syslog:udp://127.0.0.1:${port}`]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^1125 records emitted$/m);
    const acct = /^output syslog:udp:\S+: (\d+) written, (\d+) not written: connection refused by 127\.0\.0\.1:\d+ \(nothing listening\)$/m.exec(r.stderr);
    assert.ok(acct, r.stderr);
    // Those sent before the answer came back (a handful at most), not half.
    assert.ok(Number(acct[1]) <= 10, `few counted as written: ${acct[0]}`);
    assert.equal(Number(acct[1]) + Number(acct[2]), 1125);
  });

  test('UDP: once the retry time has passed one datagram probes the address; a server that came up gets records again', async () => {
    const port = await freePort('udp');
    const set = await openOutputs([`syslog:udp://127.0.0.1:${port}?timeout=0`]);
    const one = (i: number): RecordData => ({ type: 'pkt', ts: 1, sec: 1, nsec: 0, clock: 'wall', fields: { i: BigInt(i) } });
    const pause = (ms: number) => new Promise((res) => setTimeout(res, ms));
    try {
      for (let i = 0; i < 3; i++) {
        set.write(one(i));
        await pause(50);
      }
      // Refused: from now on lost at once, without a send.
      for (let i = 3; i < 100; i++) set.write(one(i));
      await pause(50);
      let s = set.stats()[0].stats;
      assert.ok(s.written <= 2 && s.dropped >= 98, JSON.stringify(s));
      const dgram = await import('node:dgram');
      const server = dgram.createSocket('udp4');
      const got: string[] = [];
      server.on('message', (m) => got.push(String(m)));
      await new Promise<void>((res) => server.bind(port, '127.0.0.1', res));
      try {
        await pause(5200);
        for (let i = 100; i < 110; i++) {
          set.write(one(i));
          await pause(20);
        }
        await pause(200);
        s = set.stats()[0].stats;
        assert.equal(got.length, 10, `every record after the probe arrives: ${got.length}`);
        assert.ok(s.written >= 10, JSON.stringify(s));
      } finally {
        server.close();
      }
    } finally {
      await set.close();
    }
  });

  for (const proto of ['tcp', 'udp']) {
    test(`${proto.toUpperCase()}, a name that cannot resolve: name not found, with host and port`, async () => {
      await check(`syslog:${proto}://nonexistent.invalid:514`, /host name nonexistent\.invalid not found \(port 514\)/);
    });
  }
});
