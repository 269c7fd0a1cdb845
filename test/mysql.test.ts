// -o mysql://: records into a real MariaDB server (Debian's mariadbd, started
// here on a data directory of its own at a free loopback port), checked
// against the json: output of the same run, through a server crash and
// restart, with three sensors writing at once, and with the server down at
// start.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import { CORPUS, FIXTURES, ROOT, riff, riffAsync, tmpdir, tree, pcapHeader } from './helpers.js';
import { MariaDbServer, mariadbUnavailable } from '../scripts/lib/mariadb-server.js';

const TRAFFIC = path.join(ROOT, 'lua', 'examples', 'traffic.lua');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Conn {
  query(sql: string, values?: unknown[]): Promise<Record<string, unknown>[]>;
  end(): Promise<void>;
}
const mariadb = createRequire(import.meta.url)('mariadb') as { createConnection(o: object): Promise<Conn> };

async function waitFor(what: string, ms: number, f: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** A pcap of n small Ethernet frames, each numbered in its payload. */
function smallPcap(n: number): Buffer {
  const head = pcapHeader(1, 65535);
  const parts = [head];
  for (let i = 0; i < n; i++) {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(1_700_000_000 + i, 0);
    h.writeUInt32LE(i, 4);
    h.writeUInt32LE(64, 8);
    h.writeUInt32LE(64, 12);
    const d = Buffer.alloc(64);
    d.writeUInt32BE(i, 60);
    parts.push(h, d);
  }
  return Buffer.concat(parts);
}

// Values of every kind, awkward names, a field that changes type, bytes that are not UTF-8.
/** The summary says `n` records were emitted and each of `outputs` outputs wrote them all. */
function assertAllWritten(stderr: string, n: number, outputs: number): void {
  assert.match(stderr, new RegExp(`^${n} records emitted$`, 'm'), stderr);
  const lines = stderr.split('\n').filter((l) => l.startsWith('output '));
  assert.equal(lines.length, outputs, stderr);
  for (const l of lines) assert.match(l, new RegExp(`: ${n} written$`), `every record written, nothing counted as lost:\n${stderr}`);
}

const AWKWARD = `
local n = 0
buffer = function(p)
  n = n + 1
  riff.emit("weird.type", {
    n = n, len = #p, head = p:sub(1, 20), f = n / 4, whole = 3.0, ok = n % 2 == 0,
    ["a.b"] = "dot", a_b = "under", ts = "a field named ts", Sensor = "a field named Sensor",
    nested = { list = { 1, 2.5, "s" }, m = { k = true } },
    w = (n == 1) and 5 or ("text " .. n),
    t = (n < 3) and "utf-8 é€😀" or "\\xff\\xfe raw",
    big = math.maxinteger, neg = math.mininteger,
  })
  if n % 3 == 0 then riff.emit("other", { n = n, ["😀"] = "smile" }) end
end
`;

// A pipeline slow enough (tens of ms a packet) that a server can be killed in the middle of it.
const SLOW = `
local n = 0
buffer = function(p)
  n = n + 1
  local t = os.clock()
  while os.clock() - t < 0.005 do end -- 5 ms of CPU, however fast the code: the run outlasts the outage
  riff.emit("pkt", { n = n, len = #p })
  if n % 4 == 0 then riff.emit("quarter", { n = n }) end
end
`;

const why = mariadbUnavailable();

describe('mysql output', { skip: why ?? false }, () => {
  let server: MariaDbServer;
  let conn: Conn;
  let dbs = 0;

  before(async () => {
    server = await MariaDbServer.create();
    conn = await mariadb.createConnection({ socketPath: server.socket, user: 'root', bigIntAsNumber: false });
  });
  after(async () => {
    await conn?.end().catch(() => {});
    await server?.stop();
  });

  /** A fresh database for one test. */
  async function freshDb(): Promise<string> {
    const db = `t${++dbs}`;
    await conn.query(`CREATE DATABASE ${db}`);
    return db;
  }

  async function columnsByField(db: string, table: string): Promise<Map<string, string>> {
    const rows = await conn.query('SELECT COLUMN_NAME AS n, COLUMN_COMMENT AS c FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [db, table]);
    return new Map(rows.filter((r) => r.c).map((r) => [String(r.c), String(r.n)]));
  }

  async function tableOf(db: string, type: string): Promise<string> {
    const rows = await conn.query('SELECT TABLE_NAME AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_COMMENT = ?', [db, type]);
    assert.equal(rows.length, 1, `one table for type ${type}`);
    return String(rows[0].n);
  }

  /** One field as the database holds it, against the JSON line's raw value. */
  function sameValue(json: unknown, dbv: unknown, what: string): void {
    if (json === null) return assert.equal(dbv, null, what);
    if (typeof json === 'boolean') return assert.equal(Number(dbv), json ? 1 : 0, what);
    if (typeof json === 'number') {
      if (typeof dbv === 'string') return assert.equal(dbv, String(json), what);
      return assert.equal(Number(dbv), json, what);
    }
    if (typeof json === 'string') {
      if (Buffer.isBuffer(dbv)) return assert.deepEqual(dbv, Buffer.from(json, 'utf8'), what);
      return assert.equal(dbv, json, what);
    }
    const o = json as Record<string, unknown>;
    if (!Array.isArray(o) && Object.keys(o).length === 1 && typeof o.$bytes === 'string') {
      assert.ok(Buffer.isBuffer(dbv), `${what}: bytes that are not UTF-8 are a BLOB`);
      return assert.deepEqual(dbv, Buffer.from(o.$bytes, 'base64'), what);
    }
    assert.deepEqual(JSON.parse(String(dbv)), json, what);
  }

  /** Every JSON line (in order: seq = line number) has its row, field for field, and nothing else is stored. */
  async function assertSameAsJson(db: string, jsonFile: string, sensor: string): Promise<number> {
    const lines = fs.readFileSync(jsonFile, 'utf8').split('\n').filter(Boolean);
    assert.ok(lines.length > 0, 'the run emitted records');
    const byType = new Map<string, Map<number, Record<string, unknown>>>();
    const cols = new Map<string, Map<string, string>>();
    for (const [i, line] of lines.entries()) {
      const j = JSON.parse(line) as Record<string, unknown>;
      const type = String(j.type);
      if (!byType.has(type)) {
        const table = await tableOf(db, type);
        cols.set(type, await columnsByField(db, table));
        const rows = await conn.query(`SELECT * FROM \`${db}\`.\`${table}\` WHERE sensor = ?`, [sensor]);
        byType.set(type, new Map(rows.map((r) => [Number(r.seq), r])));
      }
      const row = byType.get(type)!.get(i + 1);
      assert.ok(row, `record ${i + 1} (${type}) is in the database`);
      assert.ok(Math.abs(Number(row.ts) - Number(j.ts)) < 1e-6, `record ${i + 1}: ts`);
      for (const [k, v] of Object.entries(j)) {
        if (k === 'ts' || k === 'type' || k === 'host') continue;
        const field = /^_+(ts|type|host)$/.test(k) ? k.slice(1) : k;
        // Comments hold names with characters past U+FFFF as \u{HEX} (see mysql-output.ts).
        const col = cols.get(type)!.get(field.replace(/[^\u0000-\uffff]/gu, (ch) => `\\u{${ch.codePointAt(0)!.toString(16)}}`));
        assert.ok(col, `a column for field ${field} of ${type}`);
        sameValue(v, row[col], `record ${i + 1} ${type}.${field}`);
      }
      byType.get(type)!.delete(i + 1);
    }
    for (const [type, left] of byType) assert.equal(left.size, 0, `no ${type} rows beyond the JSON lines`);
    return lines.length;
  }

  test('records equal the json: output of the same run (traffic pipeline and awkward values)', async () => {
    const db = await freshDb();
    const dir = tmpdir();
    const script = path.join(tree({ 'awkward.lua': AWKWARD }), 'awkward.lua');
    for (const [name, args] of [
      ['traffic', ['--lua', TRAFFIC, '-r', path.join(CORPUS, 'dns_udp.pcap')]],
      ['traffic-http', ['--lua', TRAFFIC, '-r', path.join(FIXTURES, 'http.pcap')]],
      ['awkward', ['--lua', script, '-r', path.join(FIXTURES, 'http.pcap')]],
    ] as const) {
      const json = path.join(dir, `${name}.jsonl`);
      const r = riff(['-q', ...args, '--sensor', name, '-o', `json:${json}`, '-o', server.spec(db)]);
      assert.equal(r.code, 0, r.stderr);
      const n = await assertSameAsJson(db, json, name);
      assertAllWritten(r.stderr, n, 2);
    }
    // The layout: key and time columns, the name rule, types from values.
    const t = await tableOf(db, 'weird.type');
    assert.equal(t, 'weird_type');
    const c = await columnsByField(db, t);
    assert.equal(c.get('a.b'), 'a_b');
    assert.equal(c.get('a_b'), 'a_b_2');
    assert.equal(c.get('ts'), '_ts');
    assert.equal(c.get('Sensor'), '_Sensor');
    const types = new Map(
      (await conn.query('SELECT COLUMN_NAME AS n, COLUMN_TYPE AS t FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?', [db, t])).map((r) => [
        String(r.n),
        String(r.t),
      ]),
    );
    assert.deepEqual(
      [types.get('n'), types.get('f'), types.get('ok'), types.get('w'), types.get('t'), types.get('head'), types.get('nested')],
      ['bigint(20)', 'double', 'tinyint(1)', 'longtext', 'longblob', 'longblob', 'longtext'],
    );
    const [big] = await conn.query(`SELECT big, neg, w FROM ${db}.weird_type WHERE sensor = 'awkward' AND seq = 1`);
    assert.equal(big.big, 9223372036854775807n);
    assert.equal(big.neg, -9223372036854775808n);
    assert.equal(big.w, '5', 'an integer stored before the column became text reads as its digits');
    const keys = await conn.query(`SELECT INDEX_NAME AS i, GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) AS c FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? GROUP BY INDEX_NAME`, [db, t]);
    assert.deepEqual(keys.map((k) => [k.i, k.c]), [['PRIMARY', 'sensor,run,seq']]);

    // A second run appends under a new run id, reusing tables and columns.
    const r = riff(['-q', '--lua', script, '-r', path.join(FIXTURES, 'http.pcap'), '--sensor', 'awkward', '-o', server.spec(db)]);
    assert.equal(r.code, 0, r.stderr);
    const runs = await conn.query(`SELECT run, COUNT(*) AS n FROM ${db}.weird_type WHERE sensor = 'awkward' GROUP BY run`);
    assert.equal(runs.length, 2);
    assert.deepEqual(runs.map((x) => Number(x.n)), [45, 45]);
    assert.deepEqual(await columnsByField(db, t), c, 'no new columns');
  });

  test('a server killed (SIGKILL) and restarted mid-run: nothing lost, nothing stored twice', async () => {
    const db = await freshDb();
    const dir = tmpdir();
    const N = 300;
    fs.writeFileSync(path.join(dir, 'p.pcap'), smallPcap(N));
    fs.writeFileSync(path.join(dir, 'slow.lua'), SLOW);
    const json = path.join(dir, 'out.jsonl');
    const run = riffAsync(['-q', '--lua', path.join(dir, 'slow.lua'), '-r', path.join(dir, 'p.pcap'), '--sensor', 'crash', '-o', `json:${json}`, '-o', server.spec(db, 'batch=20&timeout=60000')]);
    const stored = async () => {
      try {
        return Number((await conn.query(`SELECT COUNT(*) AS n FROM ${db}.pkt`))[0].n);
      } catch {
        return 0;
      }
    };
    await waitFor('the first rows', 60_000, async () => (await stored()) >= 20);
    await conn.end();
    await server.kill();
    const before = run.stderr();
    await sleep(1500);
    await server.start();
    conn = await mariadb.createConnection({ socketPath: server.socket, user: 'root', bigIntAsNumber: false });
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /mysql:\/\/riff:\*\*\*@.*lost the connection|cannot reach the database/, 'the outage is reported');
    assert.doesNotMatch(before + r.stderr, /:riff@/, 'the password is not printed');
    assert.match(r.stderr, /connected again/);
    const rows = await conn.query(`SELECT seq FROM ${db}.pkt WHERE sensor = 'crash' ORDER BY seq`);
    assert.equal(rows.length, N, 'every pkt record stored once');
    const n = await assertSameAsJson(db, json, 'crash');
    assert.equal(n, N + N / 4);
    const [counts] = await conn.query(`SELECT (SELECT COUNT(*) FROM ${db}.pkt) + (SELECT COUNT(*) FROM ${db}.quarter) AS n, (SELECT COUNT(DISTINCT sensor, run, seq) FROM ${db}.pkt) + (SELECT COUNT(DISTINCT sensor, run, seq) FROM ${db}.quarter) AS k`);
    assert.equal(Number(counts.n), n);
    assert.equal(Number(counts.k), n);
    assertAllWritten(r.stderr, n, 2);
  });

  test('three sensors write into one database at once; per-sensor counts add up', async () => {
    const db = await freshDb();
    const dir = tmpdir();
    const sensors = ['alpha', 'beta', 'gamma'];
    const runs = sensors.map((s) =>
      riffAsync(['-q', '--lua', TRAFFIC, '-r', path.join(CORPUS, 'dns_udp.pcap'), '--sensor', s, '-o', `json:${path.join(dir, s)}.jsonl`, '-o', server.spec(db, 'batch=3')]),
    );
    const done = await Promise.all(runs.map((r) => r.done));
    let total = 0;
    for (const [i, s] of sensors.entries()) {
      assert.equal(done[i].code, 0, done[i].stderr);
      total += await assertSameAsJson(db, path.join(dir, `${s}.jsonl`), s);
    }
    const tables = (await conn.query('SELECT TABLE_NAME AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?', [db])).map((r) => String(r.n));
    let stored = 0;
    for (const t of tables) stored += Number((await conn.query(`SELECT COUNT(*) AS n FROM ${db}.\`${t}\``))[0].n);
    assert.equal(stored, total);
    const per = await conn.query(`SELECT sensor, COUNT(*) AS n FROM ${db}.dns_query GROUP BY sensor ORDER BY sensor`);
    assert.deepEqual(per.map((p) => p.sensor), sensors);
    assert.equal(new Set(per.map((p) => Number(p.n))).size, 1, 'the same capture gives each sensor the same count');
  });

  test('a database down at start is reported in one line and retried', async () => {
    const db = await freshDb();
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'p.pcap'), smallPcap(40));
    fs.writeFileSync(path.join(dir, 'slow.lua'), SLOW);
    await conn.end();
    await server.kill();
    const run = riffAsync(['-q', '--lua', path.join(dir, 'slow.lua'), '-r', path.join(dir, 'p.pcap'), '--sensor', 'late', '-o', `json:${path.join(dir, 'out.jsonl')}`, '-o', server.spec(db, 'timeout=60000')]);
    await waitFor('the outage line', 30_000, () => /cannot reach the database/.test(run.stderr()));
    await sleep(1500);
    await server.start();
    conn = await mariadb.createConnection({ socketPath: server.socket, user: 'root', bigIntAsNumber: false });
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.match(/cannot reach the database/g)?.length, 1, `one line for the outage:\n${r.stderr}`);
    assert.equal(await assertSameAsJson(db, path.join(dir, 'out.jsonl'), 'late'), 50);
  });

  test('what cannot be delivered by the exit timeout, or overflows the queue, is reported and counted', async () => {
    const dir = tmpdir();
    const port = server.port;
    await conn.end();
    await server.kill();
    try {
      const r = riff(['-q', '--lua', path.join(tree({ 'a.lua': AWKWARD }), 'a.lua'), '-r', path.join(FIXTURES, 'http.pcap'), '-o', `mysql://riff:riff@127.0.0.1:${port}/x?timeout=300&queue=10`]);
      // Records lost: riff exits 1 (README: Outputs, "When an output fails").
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /cannot reach the database/);
      assert.match(r.stderr, /0 records stored \(sensor .*, run \d{8}T\d{6}Z-[0-9a-f]{8}\); not stored: 10 still queued at exit \(.*\), 50 dropped because the queue \(10\) was full/);
      assert.match(r.stderr, /^60 records emitted$/m);
      assert.match(r.stderr, /^output mysql:.*: 0 written, .*50 not written: the queue \(10\) was full/m);
      assert.match(r.stderr, /^output mysql:.*: 0 written, .*10 not written: still queued at exit/m);
      void dir;
    } finally {
      await server.start();
      conn = await mariadb.createConnection({ socketPath: server.socket, user: 'root', bigIntAsNumber: false });
    }
  });

  test('a record larger than the server takes is dropped, counted and named; the rest are stored', async () => {
    const db = await freshDb();
    await conn.query('SET GLOBAL max_allowed_packet = 1048576');
    try {
      const script = path.join(tree({ 'big.lua': 'local n = 0\nbuffer = function(p) n = n + 1 riff.emit("big", { n = n, data = n == 2 and string.rep("x", 2000000) or "small" }) end' }), 'big.lua');
      const r = riff(['-q', '--lua', script, '-r', path.join(FIXTURES, 'http.pcap'), '--sensor', 'big', '-o', server.spec(db)]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /a big record cannot be stored \(a record of about \d+ bytes, more than the server's max_allowed_packet \(1048576\)\)/);
      assert.match(r.stderr, /^45 records emitted$/m);
      assert.match(r.stderr, /^output mysql:.*: 44 written, 1 not written: refused by the server$/m);
      const rows = await conn.query(`SELECT seq FROM ${db}.big ORDER BY seq`);
      assert.deepEqual(rows.map((x) => Number(x.seq)), [1, ...Array.from({ length: 43 }, (_, i) => i + 3)], 'seq 2 is the gap');
    } finally {
      await conn.query('SET GLOBAL max_allowed_packet = 16777216');
    }
  });

  test('bad settings are one line and exit 2', async () => {
    const http = path.join(FIXTURES, 'http.pcap');
    for (const [spec, re] of [
      [`mysql://riff:wrong@127.0.0.1:${server.port}/t1`, /^riff: --output mysql:\/\/riff:\*\*\*@127\.0\.0\.1:\d+\/t1: Access denied .*check the user, password and database/],
      [server.spec('nosuchdb'), /Unknown database 'nosuchdb'.*check the user/],
      [`${server.spec('t1')}?colour=red`, /unknown option 'colour'; mysql takes queue, batch, timeout, socket/],
    ] as const) {
      const r = riff(['-q', '-r', http, '-o', spec]);
      assert.equal(r.code, 2, `${spec}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    // An empty name is no name (as every option's empty value); one with a control character is refused as a name.
    const r = riff(['-q', '-r', http, '--sensor', '', '-o', server.spec('t1')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^riff: --sensor needs a value/);
    const c = riff(['-q', '-r', http, '--sensor', 'a\tb', '-o', server.spec('t1')]);
    assert.equal(c.code, 2);
    assert.match(c.stderr, /--sensor: 'a\tb' is not a sensor name/);
  });

  test('config.lua outputs() and a Unix socket', async () => {
    const db = await freshDb();
    const dir = tree({
      'count.lua': 'buffer = function(p) riff.emit("hit", { len = #p }) end',
      'config.lua': `function outputs() return { "mysql://riff:riff@localhost/${db}?socket=${server.socket}" } end`,
    });
    const r = riff(['-q', '--lua', path.join(dir, 'count.lua'), '-r', path.join(FIXTURES, 'http.pcap'), '--sensor', 'cfg']);
    assert.equal(r.code, 0, r.stderr);
    const [row] = await conn.query(`SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM ${db}.hit WHERE sensor = 'cfg'`);
    assert.deepEqual([Number(row.n), Number(row.lo), Number(row.hi)], [45, 1, 45]);
  });
});

// A server that accepts TCP and never answers (a firewall black hole, a SIGSTOPped mariadbd): no MariaDB needed.
describe('mysql output: a server that never answers', () => {
  let server: net.Server;
  let port = 0;
  const held: net.Socket[] = [];
  before(async () => {
    server = net.createServer((s) => held.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const ONE = 'buffer = function(p) riff.emit("one", { len = #p }) end';

  /** The run's end, or a failure naming how long it has been stuck (it is killed then). */
  async function within<T extends { child: import('node:child_process').ChildProcess; done: Promise<import('./helpers.js').Run>; stderr: () => string }>(run: T, ms: number, what: string) {
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([run.done, new Promise<null>((res) => (t = setTimeout(() => res(null), ms)))]);
    clearTimeout(t);
    if (!r) {
      run.child.kill('SIGKILL');
      assert.fail(`${what}: riff still running after ${ms / 1000} s:\n${run.stderr()}`);
    }
    return r;
  }

  test('riff exits within timeout= and counts the records as not stored; SIGTERM is heard; a second one leaves with its line', async () => {
    const script = path.join(tree({ 'one.lua': ONE }), 'one.lua');
    const spec = (timeout: number) => `mysql://u:p@127.0.0.1:${port}/db?timeout=${timeout}`;
    // A file: the 3 s first attempt, then at most timeout= at exit.
    const t0 = Date.now();
    const r = await within(riffAsync(['-q', '--lua', script, '-r', path.join(FIXTURES, 'http.pcap'), '-o', spec(2000)]), 20_000, 'at the end of a file');
    assert.ok(Date.now() - t0 < 10_000, `out within 3 s + timeout + a little, not ${Date.now() - t0} ms`);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /0 records stored \(sensor .*\); not stored: 45 still queued at exit/);
    assert.match(r.stderr, /^output mysql:.*: 0 written, 45 not written: still queued at exit$/m);

    // A capture that goes on (stdin kept open): SIGTERM ends it, the exit waits timeout= at most.
    const live = riffAsync(['-q', '--lua', script, '-r', '-', '-o', spec(2000)], { stdio: ['pipe', 'pipe', 'pipe'] });
    live.child.stdin!.write(fs.readFileSync(path.join(FIXTURES, 'http.pcap')));
    await waitFor('the outage line', 20_000, () => /cannot reach the database/.test(live.stderr()));
    const t1 = Date.now();
    live.child.kill('SIGTERM');
    const l = await within(live, 15_000, 'after SIGTERM');
    live.child.stdin!.destroy();
    assert.ok(Date.now() - t1 < 6000, `out within timeout + a little of SIGTERM, not ${Date.now() - t1} ms`);
    assert.match(l.stderr, /^45 records emitted$/m);
    assert.match(l.stderr, /^output mysql:.*: 0 written, 45 not written: still queued at exit$/m);

    // A long timeout=: the second SIGTERM leaves at once, naming what it abandons.
    const slow = riffAsync(['-q', '--lua', script, '-r', '-', '-o', spec(600_000)], { stdio: ['pipe', 'pipe', 'pipe'] });
    slow.child.stdin!.write(fs.readFileSync(path.join(FIXTURES, 'http.pcap')));
    await waitFor('the outage line', 20_000, () => /cannot reach the database/.test(slow.stderr()));
    slow.child.kill('SIGTERM');
    await sleep(1000);
    slow.child.kill('SIGTERM');
    const s = await within(slow, 5000, 'after a second SIGTERM');
    slow.child.stdin!.destroy();
    assert.equal(s.code, 130, s.stderr);
    assert.match(s.stderr, /^riff: second interrupt: exiting now, abandoning 45 records queued for --output mysql:\/\/u:\*\*\*@127\.0\.0\.1:\d+\/db\?timeout=600000 \(not delivered\) and the run's summary$/m);
  });
});
