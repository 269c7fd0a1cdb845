// riff.emit records: the Lua encoder and the TypeScript decoder, and the
// outputs they feed (JSON lines, SQLite, syslog over UDP and TCP, text),
// each checked against the real consumer: JSON.parse, the sqlite3 CLI, and
// an rsyslogd started here on loopback.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Batch } from '../src/capture/batch.js';
import { Runtime } from '../src/vm/runtime.js';
import { decodeRecord, RecordDecodeError, type Fields, type RecordData, type Value } from '../src/outputs/records.js';
import { fromJsonLine } from '../src/outputs/json-output.js';
import { openOutput, openOutputs, recordSink, OutputSpecError, type RecordOutput } from '../src/outputs/output.js';
import { textLine } from '../src/outputs/text-output.js';
import { formatSyslog, parseSyslogSpec, type SyslogOutput } from '../src/outputs/syslog-output.js';
import { ROOT, riff, tmpdir, hasCommand, isRoot } from './helpers.js';
import { Rsyslog, rsyslogSkip, freePort } from './rsyslog.js';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

interface Pkt {
  sec: number;
  nsec: number;
  data: Buffer;
}

/** Run a Lua script through the Runtime: setup, the packets, deinit. Returns the records and stdout. */
async function lua(src: string, packets: Pkt[] = [], record?: (b: Buffer) => void) {
  const dir = tmpdir();
  const script = path.join(dir, 'script.lua');
  fs.writeFileSync(script, src);
  const raw: Buffer[] = [];
  let stdout = '';
  let stderr = '';
  const rt = await Runtime.create({
    script,
    quiet: true,
    verbose: false,
    strict: false,
    budget: 1e7,
    setupBudget: 1e9,
    memoryLimit: 64 << 20,
    version: 't',
    write: (fd, b) => (fd === 1 ? (stdout += Buffer.from(b).toString('latin1')) : (stderr += Buffer.from(b).toString())),
    record: record ?? ((b) => raw.push(Buffer.from(b))),
  });
  rt.open();
  rt.setup();
  if (packets.length) {
    const batch = new Batch(1 << 16);
    for (const p of packets) batch.push(p.sec, p.nsec, p.data, 0, p.data.length, p.data.length, 1, 0);
    rt.process(batch);
  }
  rt.deinit();
  return { raw, recs: raw.map((b) => decodeRecord(b)), stdout, stderr };
}

/** Poll until cond() holds; fail after ms. */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** bigint -> number where exact: for comparing with JSON.parse output. */
function numbersOf(v: Value): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Buffer.isBuffer(v)) return v;
  if (Array.isArray(v)) return v.map(numbersOf);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v)) {
      const x = numbersOf(v[k]);
      if (k === '__proto__') Object.defineProperty(o, k, { value: x, enumerable: true, writable: true, configurable: true });
      else o[k] = x;
    }
    return o;
  }
  return v;
}

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const utf8 = new TextDecoder('utf-8', { fatal: true });

function rec(type: string, fields: Fields, sec = 1504850400, nsec = 500_000_000): RecordData {
  return { type, ts: sec + nsec / 1e9, sec, nsec, clock: 'packet', fields };
}

// A Lua script's record table with every kind of value, and what it decodes to.
const RICH_LUA = `
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  return {
    all = table.concat(all),
    each = bytes,
    empty = "",
    text = "h\\u{e9}llo \\u{2603} \\u{1F600}",
    bad = "\\xff\\xfe ok \\xc3",
    int = 3, float = 3.0, half = 0.5, neg = -7, negzero = -0.0,
    maxi = math.maxinteger, mini = math.mininteger, big = 1e300, tiny = 5e-324,
    yes = true, no = false,
    list = { 1, 2.5, "x", { deep = { deeper = { true } } } },
    map = { a = 1, ["key with space"] = "v", ["\\u{e9}t\\u{e9}"] = 2 },
    mixed = { 10, 20, x = 30 },
    sparse = { [1] = "a", [3] = "c" },
    emptymap = {},
    emptylist = require("riff.record").array({}),
    ["__proto__"] = "not a prototype",
    [7] = "integer key",
  }
`;

// ---------------------------------------------------------------------------
// The encoder and decoder
// ---------------------------------------------------------------------------

describe('riff.emit records: Lua encoder and TypeScript decoder', () => {
  test('every value kind round-trips: all 256 byte values, nested tables, integers vs floats, booleans', async () => {
    const { recs, stderr } = await lua(`
      local r = (function() ${RICH_LUA} end)()
      function setup() riff.emit("rich", r) end
      buffer = function(p) end
    `);
    assert.equal(stderr, '');
    assert.equal(recs.length, 1);
    const r = recs[0];
    assert.equal(r.type, 'rich');
    const f = r.fields;
    assert.deepEqual(f.all, ALL_BYTES);
    assert.ok(Array.isArray(f.each) && f.each.length === 256);
    (f.each as Value[]).forEach((b, i) => assert.deepEqual(b, Buffer.from([i]), `byte ${i}`));
    assert.deepEqual(f.empty, Buffer.alloc(0));
    assert.equal((f.text as Buffer).toString('utf8'), 'héllo ☃ 😀');
    assert.deepEqual(f.bad, Buffer.from([0xff, 0xfe, 0x20, 0x6f, 0x6b, 0x20, 0xc3]));
    // Lua integers are bigints, floats are numbers: 3 and 3.0 stay apart.
    assert.equal(f.int, 3n);
    assert.equal(f.float, 3);
    assert.equal(typeof f.float, 'number');
    assert.equal(f.half, 0.5);
    assert.equal(f.neg, -7n);
    assert.ok(Object.is(f.negzero, -0));
    assert.equal(f.maxi, 9223372036854775807n);
    assert.equal(f.mini, -9223372036854775808n);
    assert.equal(f.big, 1e300);
    assert.equal(f.tiny, 5e-324);
    assert.equal(f.yes, true);
    assert.equal(f.no, false);
    assert.deepEqual(f.list, [1n, 2.5, Buffer.from('x'), { deep: { deeper: [true] } }]);
    assert.deepEqual(f.map, { a: 1n, 'key with space': Buffer.from('v'), 'été': 2n });
    assert.deepEqual(f.mixed, { '1': 10n, '2': 20n, x: 30n });
    assert.deepEqual(f.sparse, { '1': Buffer.from('a'), '3': Buffer.from('c') });
    assert.deepEqual(f.emptymap, {});
    assert.deepEqual(f.emptylist, []);
    assert.deepEqual(Object.getOwnPropertyDescriptor(f, '__proto__')?.value, Buffer.from('not a prototype'));
    assert.equal(Object.getPrototypeOf(f), Object.prototype);
    assert.deepEqual(f['7'], Buffer.from('integer key'));
  });

  test('records carry the packet time inside a packet, wall time in setup, the last packet time in deinit', async () => {
    const before = Date.now();
    const { recs } = await lua(
      `
      function setup() riff.emit("phase", { at = "setup" }) end
      buffer = function(p) riff.emit("pkt", { n = #p }) end
      function deinit() riff.emit("phase", { at = "deinit" }) end
    `,
      [
        { sec: 1504850400, nsec: 500_000_001, data: Buffer.from('abc') },
        { sec: 4102444800, nsec: 999_999_999, data: Buffer.from('de') }, // 2100, past 32 bits
      ],
    );
    const after = Date.now();
    assert.deepEqual(
      recs.map((r) => [r.type, r.clock]),
      [['phase', 'wall'], ['pkt', 'packet'], ['pkt', 'packet'], ['phase', 'packet']],
    );
    assert.deepEqual([recs[1].sec, recs[1].nsec, recs[1].fields.n], [1504850400, 500_000_001, 3n]);
    assert.deepEqual([recs[2].sec, recs[2].nsec], [4102444800, 999_999_999]);
    // deinit: the last packet's time, so a file gives the same records on every run.
    assert.deepEqual([recs[3].sec, recs[3].nsec], [4102444800, 999_999_999]);
    const r = recs[0];
    assert.ok(r.ts * 1000 >= before - 1 && r.ts * 1000 <= after + 1, `wall time ${r.ts} within the run`);
  });

  test('unsupported values, cycles and excessive depth are clear Lua errors at the caller', async () => {
    const { stdout } = await lua(`
      local function try(...)
        local args = table.pack(...)
        local ok, e = pcall(function() riff.emit(table.unpack(args, 1, args.n)) end)
        print(ok and "ok" or e)
      end
      function setup()
        try("t", { f = print })
        try("t", { list = { 1, 2, coroutine.create(function() end) } })
        local c = { name = "c" }; c.self = { inner = c }
        try("t", { c = c })
        local deep = {}; local t = deep
        for i = 1, 40 do t.x = {}; t = t.x end
        try("t", { deep = deep })
        try("t", { [true] = 1 })
        try("t", { ["\\xff"] = 1 })
        try("bad type", {})
        try(42, {})
        try("t", "not a table")
        local shared = { 1 }
        try("t", { a = shared, b = shared })
      end
      buffer = function(p) end
    `);
    const lines = stdout.trim().split('\n');
    assert.match(lines[0], /script\.lua:\d+: riff\.emit: f: a function cannot be recorded/);
    for (const l of lines.slice(0, 9)) assert.match(l, /^\S*script\.lua:\d+: riff\.emit: /, 'the position is the caller\'s');
    assert.match(lines[1], /riff\.emit: list\[3\]: a thread cannot be recorded/);
    assert.match(lines[2], /riff\.emit: c\.self\.inner: cycle: this table contains itself/);
    assert.match(lines[3], /riff\.emit: deep(\.x)+: nested deeper than 32 tables/);
    assert.match(lines[4], /riff\.emit: \[true\]: a key is a boolean/);
    assert.match(lines[5], /riff\.emit: \["\\xff"\]: a key is not valid UTF-8/);
    assert.match(lines[6], /riff\.emit: bad record type "bad type"/);
    assert.match(lines[7], /riff\.emit: bad argument #1 \(the record type must be a string, got number\)/);
    assert.match(lines[8], /riff\.emit: bad argument #2 \(the record's fields must be a table, got string\)/);
    assert.equal(lines[9], 'ok', 'a table shared (not cyclic) is fine');
    assert.equal(lines.length, 10);
  });

  test('the decoder rejects malformed input with a RecordDecodeError', async () => {
    const { raw } = await lua(`function setup() riff.emit("t", { a = "xyz", b = 1 }) end buffer = function() end`);
    const good = raw[0];
    assert.equal(decodeRecord(good).type, 't');
    // As a worker's message delivers it: a plain Uint8Array, at an offset; `now` stamps wall-time records.
    const u8 = new Uint8Array(good.length + 3).subarray(3);
    u8.set(good);
    const viaWorker = decodeRecord(u8, Date.UTC(2020, 0, 1, 0, 0, 0, 250));
    assert.deepEqual(viaWorker.fields, decodeRecord(good).fields);
    assert.deepEqual([viaWorker.sec, viaWorker.nsec, viaWorker.clock], [1577836800, 250_000_000, 'wall']);
    assert.throws(() => decodeRecord(good.subarray(0, good.length - 2)), RecordDecodeError);
    assert.throws(() => decodeRecord(Buffer.concat([good, Buffer.from([0])])), /left over/);
    const v2 = Buffer.from(good);
    v2[0] = 2;
    assert.throws(() => decodeRecord(v2), /version 2/);
    assert.throws(() => decodeRecord(Buffer.alloc(0)), RecordDecodeError);
  });
});

// ---------------------------------------------------------------------------
// JSON lines
// ---------------------------------------------------------------------------

describe('json output', () => {
  test('every line parses, the file is valid UTF-8, and bytes round-trip by the $bytes rule', async () => {
    const dir = tmpdir();
    const file = path.join(dir, 'out.jsonl');
    const out = openOutput(`json:${file}`);
    const { recs } = await lua(
      `
      local r = (function() ${RICH_LUA} end)()
      r.ts, r.type, r.host, r._ts = "f-ts", "f-type", "f-host", "f-_ts"
      r.wrapped = { ["$bytes"] = "not base64" }
      r.wrapped2 = { ["$map"] = { ["$bytes"] = "\\xff" } }
      function setup() riff.emit("rich", r) end
      buffer = function(p) riff.emit("pkt", { p = p }) end
    `,
      [{ sec: 1504850400, nsec: 500_000_001, data: ALL_BYTES }],
      (b) => out.write(decodeRecord(b)),
    ).then(async (r) => {
      await out.close();
      return r;
    });
    assert.equal(recs.length, 0); // all went to the output
    const bytes = fs.readFileSync(file);
    utf8.decode(bytes); // throws if not valid UTF-8
    const lines = bytes.toString('utf8').trimEnd().split('\n');
    assert.equal(lines.length, 2);
    for (const l of lines) JSON.parse(l);
    assert.equal(out.stats().written, 2);

    // Compare against a second, direct decode of the same script.
    const { recs: direct } = await lua(`
      local r = (function() ${RICH_LUA} end)()
      r.ts, r.type, r.host, r._ts = "f-ts", "f-type", "f-host", "f-_ts"
      r.wrapped = { ["$bytes"] = "not base64" }
      r.wrapped2 = { ["$map"] = { ["$bytes"] = "\\xff" } }
      function setup() riff.emit("rich", r) end
      buffer = function(p) end
    `);
    const back = fromJsonLine(lines[0]);
    assert.equal(back.type, 'rich');
    assert.equal(typeof back.host, 'string');
    // Integers past 2^53 are not exact through JSON.parse; compare the rest.
    const expect = numbersOf(direct[0].fields) as Record<string, unknown>;
    for (const k of ['maxi', 'mini']) {
      delete expect[k];
      delete (back.fields as Record<string, unknown>)[k];
    }
    assert.deepEqual(back.fields, expect);
    // The exact text for what JSON.parse blurs.
    assert.match(lines[0], /"maxi":9223372036854775807[,}]/);
    assert.match(lines[0], /"mini":-9223372036854775808[,}]/);
    assert.match(lines[0], /"float":3\.0[,}]/);
    assert.match(lines[0], /"int":3[,}]/);
    assert.match(lines[0], /"negzero":-0\.0/);
    assert.match(lines[0], /"_ts":"f-ts"/);
    assert.match(lines[0], /"__ts":"f-_ts"/);
    assert.match(lines[0], /"_type":"f-type"/);
    assert.match(lines[0], /"_host":"f-host"/);
    assert.match(lines[0], /"all":\{"\$bytes":"AAECAwQF/);
    assert.match(lines[0], /"wrapped":\{"\$map":\{"\$bytes":"not base64"\}\}/);
    assert.match(lines[0], /"text":"héllo ☃ 😀"/);
    // The packet record: packet time with all nine digits.
    assert.match(lines[1], /^\{"ts":1504850400\.500000001,"type":"pkt","host":"[^"]*","p":\{"\$bytes":"/);
    assert.deepEqual(fromJsonLine(lines[1]).fields.p, ALL_BYTES);
  });

  test('lines are flushed within about a second while open, and a reopened file is appended to', async () => {
    const dir = tmpdir();
    const file = path.join(dir, 'out.jsonl');
    const out = openOutput(`json:${file}`);
    out.write(rec('a', { n: 1n }));
    assert.equal(fs.readFileSync(file, 'utf8'), '', 'buffered at first');
    await waitFor(() => fs.readFileSync(file, 'utf8').includes('"n":1'), 2500, 'the timer flush');
    out.write(rec('a', { n: 2n }));
    await out.close();
    const again = openOutput(`json:${file}`);
    again.write(rec('a', { n: 3n }));
    await again.close();
    const ns = fs.readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l).n);
    assert.deepEqual(ns, [1, 2, 3]);
  });

  test('json:- writes lines to stdout', () => {
    const code = `
      import { openOutput } from ${JSON.stringify(path.join(ROOT, 'dist/src/outputs/output.js'))};
      const o = openOutput('json:-');
      for (let i = 0; i < 3; i++) o.write({ type: 'x', ts: 1, sec: 1, nsec: 0, clock: 'wall', fields: { i: BigInt(i), b: Buffer.from([0xff]) } });
      await o.close();
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { timeout: 30_000 });
    assert.equal(r.status, 0, String(r.stderr));
    const lines = String(r.stdout).trimEnd().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((o) => [o.ts, o.type, o.i, o.b.$bytes]),
      [0, 1, 2].map((i) => [1, 'x', i, '/w==']),
    );
  });
});

// ---------------------------------------------------------------------------
// Specs and the text output
// ---------------------------------------------------------------------------

describe('--output specs', () => {
  test('bad specs are one-line errors naming the spec and what to do', () => {
    const bad: [string, RegExp][] = [
      ['bogus:x', /unknown output kind 'bogus'; use json:-/],
      ['json', /name a file .* or - for stdout/],
      ['json:', /name a file/],
      ['json:/nonexistent-dir/x.jsonl', /cannot open \/nonexistent-dir\/x\.jsonl/],
      ['sqlite:', /name a database file/],
      ['sqlite:/nonexistent-dir/x.db', /directory \/nonexistent-dir does not exist/],
      ['syslog:127.0.0.1:514', /expected syslog:udp:\/\/HOST:PORT or syslog:tcp:\/\/HOST:PORT/],
      ['syslog:udp://127.0.0.1:99999', /port 99999 is out of range/],
      ['syslog:udp://127.0.0.1:514?format=5425', /format=5425: use format=5424/],
      ['syslog:udp://127.0.0.1:514?facility=nope', /facility=nope: use a name/],
      ['syslog:udp://127.0.0.1:514?severity=9', /severity=9: expected a whole number from 0 to 7/],
      ['syslog:tcp://127.0.0.1:514?queue=0', /queue=0: expected a whole number from 1/],
      ['syslog:tcp://127.0.0.1:514?colour=red', /unknown option 'colour'; syslog takes format, facility/],
      ['syslog:udp://127.0.0.1:514?format=3164&msg=sd', /msg=sd needs RFC 5424/],
      ['text:/tmp/x', /text output goes to stdout only/],
    ];
    for (const [spec, re] of bad) {
      assert.throws(
        () => openOutput(spec),
        (e: Error) => {
          assert.ok(e instanceof OutputSpecError, `${spec}: ${e}`);
          assert.ok(e.message.startsWith(`--output ${spec}: `), e.message);
          assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
          assert.match(e.message, re);
          return true;
        },
      );
    }
  });

  test('malformed specs of every kind, bad percent-escapes included, are spec errors (one line), never internal errors', () => {
    const malformed: Record<string, string[]> = {
      text: ['text:%zz', 'text:/x', 'text:-x'],
      json: ['json', 'json:', 'json:/nonexistent-dir/%zz'],
      sqlite: ['sqlite', 'sqlite:', 'sqlite:/nonexistent-dir/%zz.db'],
      syslog: ['syslog', 'syslog:', 'syslog:udp://', 'syslog:udp://%', 'syslog:udp://[zz]:5', 'syslog:udp://h:0', 'syslog:udp://h:99999', 'syslog:tcp://h:514?%', 'syslog:tcp://h:514?%zz=1', 'syslog:udp://h:514?queue=%zz', 'syslog:udp://h:514?facility=%'],
      mysql: [
        'mysql:', 'mysql:%', 'mysql://', 'mysql://%zz', 'mariadb://u:p@/db',
        'mysql://riff:sec%zzret@127.0.0.1:3306/riff', 'mysql://riff:sec%@127.0.0.1:3306/riff', 'mysql://riff:%ff@127.0.0.1/riff',
        'mysql://ri%zzff:x@127.0.0.1:3306/riff', 'mysql://riff:x@127.0.0.1:3306/ri%zzff', 'mysql://riff:x@127.0.0.1/riff%',
        'mysql://riff:x@127.0.0.1/d%00b', 'mysql://riff:x@127.0.0.1/db?socket=/tmp/a%00b', 'mysql://riff:x@127.0.0.1:99999/riff',
        'mysql://riff:x@[zz]/riff', 'mysql://riff:x@127.0.0.1/riff?timeout=%zz', 'mysql://riff:x@127.0.0.1/riff?%zz=1',
      ],
    };
    for (const [kind, specs] of Object.entries(malformed))
      for (const spec of specs) {
        let thrown: unknown = null;
        try {
          void openOutput(spec);
        } catch (e) {
          thrown = e;
        }
        assert.ok(thrown instanceof OutputSpecError, `${kind}: ${spec}: a spec error, not ${thrown}`);
        const msg = (thrown as Error).message;
        assert.match(msg, /^--output \S*: \S/, `${spec}: names the output: ${msg}`);
        assert.ok(!msg.includes('\n'), `one line: ${msg}`);
        assert.ok(!/sec%zzret|sec%@|%ff@/.test(msg), `the password is not shown: ${msg}`);
      }
    // The escape is named (the password's by its place).
    assert.throws(() => openOutput('mysql://riff:sec%zzret@127.0.0.1:3306/riff'), /^Error: --output mysql:\/\/riff:\*\*\*@127\.0\.0\.1:3306\/riff: the password has a bad percent-escape \(at character 4\)/);
    assert.throws(() => openOutput('mysql://riff:x@127.0.0.1:3306/ri%zzff'), /the database name has a bad percent-escape \('%zz'\)/);
  });

  test('a bad percent-escape in a mysql URL: exit 2, one line', () => {
    const r = riff(['-q', '-r', path.join(ROOT, 'fixtures', 'http.pcap'), '-o', 'mysql://riff:sec%zzret@127.0.0.1:3306/riff']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^riff: --output mysql:\/\/riff:\*\*\*@127\.0\.0\.1:3306\/riff: the password has a bad percent-escape/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  test('good specs open (and close) without a server', async () => {
    const dir = tmpdir();
    const outs = await openOutputs([
      `json:${path.join(dir, 'a.jsonl')}`,
      `sqlite:${path.join(dir, 'a.db')}`,
      'syslog:udp://127.0.0.1:9?format=3164&facility=local0&severity=info&app=riff',
      'syslog:tcp://[::1]:9?msg=sd&queue=5&timeout=0',
    ]);
    outs.write(rec('x', { a: 1n }));
    await outs.close();
    assert.equal(fs.readFileSync(path.join(dir, 'a.jsonl'), 'utf8').split('\n').length, 2);
  });

  test('syslog formatting: a time out of RFC 3339 range is NILVALUE, not an exception', () => {
    const o = parseSyslogSpec('syslog:udp://127.0.0.1:514', 'udp://127.0.0.1:514?hostname=h&app=a');
    assert.equal(formatSyslog(rec('t', {}, 2 ** 40, 0), o, 7).toString(), '<14>1 - h a 7 t - {"ts":1099511627776.000000000,"type":"t","host":"h"}');
    assert.equal(formatSyslog(rec('t', { a: 1n }, 0, 1000), { ...o, msg: 'sd' }, 7).toString(), '<14>1 1970-01-01T00:00:00.000001Z h a 7 t [riff@32473 a="1"]');
    assert.match(formatSyslog(rec('t', {}, -5, 0), { ...o, format: '3164' }, 7).toString(), /^<14>\w{3} [ \d]\d \d\d:\d\d:\d\d h a\[7\]: \{/);
  });

  test('text lines: type key=value, bytes escaped, floats as Lua prints them', () => {
    const line = textLine(
      rec('dns', {
        name: Buffer.from('example.com'),
        n: 3n,
        f: 3,
        sp: Buffer.from('two words'),
        raw: Buffer.from([0x61, 0xff, 0x5c]),
        list: [1n, Buffer.from('x')],
        m: { ok: true },
      }),
    );
    assert.equal(line, 'dns name=example.com n=3 f=3.0 sp="two words" raw=a\\xff\\\\ list=[1 x] m={ok=true}\n');
  });
});

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/** The count, or null while the table is not there yet. */
function sqliteCount(db: string, table: string): number | null {
  const r = spawnSync('sqlite3', ['-batch', db, `select count(*) from ${table}`], { timeout: 30_000 });
  return r.status === 0 ? Number(String(r.stdout)) : null;
}

function sqlite(db: string, sql: string): string {
  const r = spawnSync('sqlite3', ['-batch', '-noheader', '-separator', '|', db, sql], { timeout: 30_000 });
  assert.equal(r.status, 0, `sqlite3: ${r.stderr}`);
  return String(r.stdout).trimEnd();
}

describe('sqlite output', { skip: hasCommand('sqlite3') ? false : 'the sqlite3 CLI is not installed (apt-get install sqlite3)' }, () => {
  test('one table per type, typed values, schema growth, committed within a second, appends across runs', async () => {
    const dir = tmpdir();
    const db = path.join(dir, 'riff.db');
    let out: RecordOutput = openOutput(`sqlite:${db}`);
    const sink = recordSink(out);
    await lua(
      `
      function setup()
        riff.emit("dns", { qname = "example.com", qtype = 1, ttl = 0.5, raw = "\\xff\\x00\\x01",
                           ok = true, answers = { "1.2.3.4", "\\xff" }, ts = "user ts" })
      end
      buffer = function(p) riff.emit("pkt", { len = #p, data = p }) end
      function deinit()
        riff.emit("dns", { qname = "later.example", extra = 42, QNAME = "upper" })
      end
    `,
      [{ sec: 1504850400, nsec: 500_000_000, data: ALL_BYTES }],
      sink,
    );
    // Not closed yet: the rows are committed within about a second.
    assert.equal(sqliteCount(db, 'dns'), null, 'not committed at once');
    await waitFor(() => sqliteCount(db, 'dns') === 2, 3000, 'the timed commit');
    await out.close();
    assert.deepEqual(out.stats(), { written: 3, dropped: 0, queued: 0, lost: {} });

    assert.equal(sqlite(db, "select name from sqlite_master where type='table' order by name"), 'dns\npkt');
    const cols = sqlite(db, "select name from pragma_table_info('dns')").split('\n');
    assert.equal(cols[0], 'ts');
    assert.deepEqual(cols.slice(1).sort(), ['QNAME_2', '_ts', 'answers', 'extra', 'ok', 'qname', 'qtype', 'raw', 'ttl']);
    assert.equal(
      sqlite(db, 'select typeof(qname), typeof(qtype), typeof(ttl), typeof(raw), hex(raw), ok, typeof(ok), answers, _ts, typeof(extra) from dns where rowid = 1'),
      'text|integer|real|blob|FF0001|1|integer|["1.2.3.4",{"$bytes":"/w=="}]|user ts|null',
    );
    assert.equal(sqlite(db, "select qname, extra, QNAME_2, typeof(qtype) from dns where rowid = 2"), 'later.example|42|upper|null');
    assert.equal(sqlite(db, 'select ts, len, hex(data) = hex(?) from pkt'.replace('?', `x'${ALL_BYTES.toString('hex')}'`)), '1504850400.5|256|1');
    // The wall-time rows carry the time of the run.
    const ts = Number(sqlite(db, 'select ts from dns where rowid = 1'));
    assert.ok(Math.abs(ts - Date.now() / 1000) < 60, `ts ${ts}`);

    // A second run appends, reusing the columns and adding new ones.
    out = openOutput(`sqlite:${db}`);
    out.write(rec('dns', { qname: Buffer.from('third'), QNAME: Buffer.from('u2'), fresh: 1.25 }));
    out.write(rec('newtype', { a: 1n }));
    out.write(rec('sqlite_stat1', { a: 1n }));
    await out.close();
    assert.equal(sqlite(db, 'select a from _sqlite_stat1'), '1', "sqlite_* types get a '_'");
    assert.equal(sqlite(db, 'select count(*) from dns'), '3');
    assert.equal(sqlite(db, 'select qname, QNAME_2, fresh from dns where rowid = 3'), 'third|u2|1.25');
    assert.equal(sqlite(db, 'select count(*) from newtype'), '1');
  });

  test('Ctrl-C loses nothing when the SIGINT handler closes the outputs (sqlite and json)', async () => {
    const dir = tmpdir();
    const db = path.join(dir, 'int.db');
    const jl = path.join(dir, 'int.jsonl');
    const code = `
      import { openOutputs } from ${JSON.stringify(path.join(ROOT, 'dist/src/outputs/output.js'))};
      const out = await openOutputs([${JSON.stringify('sqlite:' + db)}, ${JSON.stringify('json:' + jl)}]);
      process.on('SIGINT', async () => { await out.close(); process.exit(130); });
      for (let i = 0; i < 1000; i++) out.write({ type: 'r', ts: 1, sec: 1, nsec: 0, clock: 'wall', fields: { i: BigInt(i) } });
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    try {
      await waitFor(() => out.includes('ready'), 20_000, 'the child to write its records');
      child.kill('SIGINT');
      let timer: NodeJS.Timeout | undefined;
      const codeOut = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r('timeout'), 20_000)))]);
      clearTimeout(timer);
      assert.equal(codeOut, 130, err);
    } finally {
      child.kill('SIGKILL');
    }
    assert.equal(sqlite(db, 'select count(*), sum(i) from r'), `1000|${(999 * 1000) / 2}`);
    assert.equal(fs.readFileSync(jl, 'utf8').trimEnd().split('\n').length, 1000);
  });

  test('close commits everything at once, and a big batch goes in quickly', async () => {
    const dir = tmpdir();
    const db = path.join(dir, 'big.db');
    const out = openOutput(`sqlite:${db}`);
    const t0 = Date.now();
    for (let i = 0; i < 20000; i++) out.write(rec('flow', { i: BigInt(i), s: Buffer.from(`flow ${i}`), f: i / 2 }));
    await out.close();
    const ms = Date.now() - t0;
    assert.equal(sqlite(db, 'select count(*), sum(i), count(distinct s) from flow'), `20000|${(19999 * 20000) / 2}|20000`);
    assert.ok(ms < 20000, `20000 rows took ${ms} ms`);
  });
});

// ---------------------------------------------------------------------------
// Syslog against a real rsyslogd
// ---------------------------------------------------------------------------

describe('syslog output against rsyslogd', { skip: rsyslogSkip }, () => {
  const rs = new Rsyslog();
  before(async () => {
    await rs.init();
    await rs.start();
  });
  after(async () => {
    await rs.stop();
  });

  const seqs = (objs: Record<string, unknown>[]) => objs.map((o) => o.seq as number).sort((a, b) => a - b);
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

  test('UDP: RFC 5424 JSON, RFC 3164 and structured data all arrive and parse', async () => {
    const n = 200;
    const o5424 = openOutput(`syslog:udp://127.0.0.1:${rs.udpPort}?facility=local3&severity=notice&app=u5424`);
    const o3164 = openOutput(`syslog:udp://127.0.0.1:${rs.udpPort}?format=3164&facility=local0&severity=info&app=u3164`);
    const osd = openOutput(`syslog:udp://127.0.0.1:${rs.udpPort}?msg=sd&app=usd`);
    for (let i = 0; i < n; i++) {
      const fields: Fields = { seq: BigInt(i), raw: Buffer.from([0xff, i & 0xff]), name: Buffer.from('héllo'), f: i + 0.5 };
      o5424.write(rec('udp.rec', fields));
      o3164.write(rec('udp.rec', fields));
      if (i < 20) osd.write(rec('sdrec', { ...fields, q: Buffer.from('a"b]c\\d') }));
      if (i % 50 === 49) await sleep(20); // let rsyslogd read between bursts
    }
    await Promise.all([o5424.close(), o3164.close(), osd.close()]);
    for (const o of [o5424, o3164]) {
      const st = o.stats();
      assert.deepEqual([st.written, st.dropped, st.queued], [n, 0, 0]);
    }
    await waitFor(() => rs.json('u5424').length >= n && rs.json('u3164').length >= n && rs.lines().filter((l) => l.app === 'usd').length >= 20, 10_000, 'all UDP messages in rsyslog\'s file');
    assert.deepEqual(seqs(rs.json('u5424')), range(0, n));
    assert.deepEqual(seqs(rs.json('u3164')), range(0, n));
    const l5424 = rs.lines().find((l) => l.app === 'u5424')!;
    assert.deepEqual([l5424.fac, l5424.sev, l5424.msgid], [19, 5, 'udp.rec']);
    assert.match(l5424.raw, /^<157>1 2017-09-08T06:00:00\.500000Z \S+ u5424 \d+ udp\.rec - \{"ts":1504850400\.500000000,"type":"udp\.rec"/);
    const j = rs.json('u5424')[0];
    assert.deepEqual(fromJsonLine(JSON.stringify(j)).fields.raw, Buffer.from([0xff, j.seq as number]));
    assert.equal(j.name, 'héllo');
    const l3164 = rs.lines().find((l) => l.app === 'u3164')!;
    assert.deepEqual([l3164.fac, l3164.sev], [16, 6]);
    assert.match(l3164.raw, /^<134>\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ u3164\[\d+\]: \{"ts"/);
    const sd = rs.lines().filter((l) => l.app === 'usd');
    assert.equal(sd.length, 20);
    // Bytes and control characters as \xHH, a backslash doubled, then RFC 5424's escapes for " \ ].
    assert.equal(
      sd.find((l) => l.sd.startsWith('[riff@32473 seq="10" '))?.sd,
      String.raw`[riff@32473 seq="10" raw="\\xff\\x0a" name="héllo" f="10.5" q="a\"b\]c\\\\d"]`,
    );
    assert.match(sd[0].raw, /^<14>1 2017-09-08T06:00:00\.500000Z \S+ usd \d+ sdrec \[riff@32473 /);
  });

  test('TCP: every record arrives once, octet-counted', async () => {
    const n = 300;
    const o = openOutput(`syslog:tcp://127.0.0.1:${rs.tcpPort}?app=tcp1`) as SyslogOutput;
    for (let i = 0; i < n; i++) o.write(rec('tcp.rec', { seq: BigInt(i), pad: Buffer.alloc(i * 7, 'x') }));
    await o.close();
    assert.deepEqual([o.stats().written, o.stats().dropped, o.stats().queued], [n, 0, 0]);
    await waitFor(() => rs.json('tcp1').length >= n, 10_000, 'all TCP messages');
    assert.deepEqual(seqs(rs.json('tcp1')), range(0, n));
  });

  test('TCP: rsyslogd stopped and restarted mid-run loses nothing below the queue bound', async (t) => {
    const o = openOutput(`syslog:tcp://127.0.0.1:${rs.tcpPort}?app=tcp2&timeout=20000`) as SyslogOutput;
    const n = 400;
    let i = 0;
    const t0 = Date.now();
    let stopping: Promise<void> | null = null;
    let restarted = false;
    while (i < n) {
      o.write(rec('tcp.rec', { seq: BigInt(i) }));
      i++;
      // The writer does not wait for the server: records keep coming while
      // rsyslogd shuts down, before riff has noticed the connection is gone.
      if (i % 10 === 0) await sleep(5);
      if (!stopping && i >= 100) stopping = rs.stop();
      else if (stopping && !restarted && i >= 250) {
        await stopping;
        assert.ok(o.stats().queued > 0, 'records wait while rsyslogd is down');
        assert.equal(o.stats().connected, false);
        await rs.start();
        restarted = true;
      }
      assert.ok(Date.now() - t0 < 60_000, 'the run is bounded');
    }
    await o.close();
    const s = o.stats();
    assert.equal(s.dropped, 0, JSON.stringify(s));
    assert.equal(s.written, n);
    await waitFor(() => new Set(seqs(rs.json('tcp2'))).size >= n, 15_000, 'every record after the restart');
    const got = seqs(rs.json('tcp2'));
    t.diagnostic(`stats ${JSON.stringify(s)}; rsyslogd wrote ${got.length} lines for ${n} records`);
    assert.deepEqual([...new Set(got)], range(0, n));
    // Duplicates only from the resend window.
    assert.ok(got.length - n <= s.resent, `duplicates ${got.length - n} <= resent ${s.resent}`);
  });

  test('TCP: past queue=N while the server is down, the oldest are dropped and counted', async () => {
    await rs.stop();
    const o = openOutput(`syslog:tcp://127.0.0.1:${rs.tcpPort}?app=tcp3&queue=50&timeout=20000`) as SyslogOutput;
    for (let i = 0; i < 80; i++) o.write(rec('tcp.rec', { seq: BigInt(i) }));
    await sleep(100);
    assert.deepEqual([o.stats().queued, o.stats().dropped, o.stats().written, o.stats().connected], [50, 30, 0, false]);
    await rs.start();
    await o.close();
    assert.deepEqual([o.stats().queued, o.stats().dropped, o.stats().written], [0, 30, 50]);
    await waitFor(() => rs.json('tcp3').length >= 50, 10_000, 'the 50 queued records');
    assert.deepEqual(seqs(rs.json('tcp3')), range(30, 80));

    // drop=newest keeps the first N instead.
    await rs.stop();
    const o2 = openOutput(`syslog:tcp://127.0.0.1:${rs.tcpPort}?app=tcp4&queue=10&drop=newest&timeout=20000`) as SyslogOutput;
    for (let i = 0; i < 25; i++) o2.write(rec('tcp.rec', { seq: BigInt(i) }));
    await rs.start();
    await o2.close();
    assert.deepEqual([o2.stats().dropped, o2.stats().written], [15, 10]);
    await waitFor(() => rs.json('tcp4').length >= 10, 10_000, 'the 10 kept records');
    assert.deepEqual(seqs(rs.json('tcp4')), range(0, 10));
  });

  test('TCP: with nothing listening, close gives up at once (not after timeout=MS) and says why the records were lost', { timeout: 30_000 }, async () => {
    const port = await freePort('tcp'); // nothing listens here
    const o = openOutput(`syslog:tcp://127.0.0.1:${port}?timeout=600000`) as SyslogOutput;
    const notes: string[] = [];
    o.onNotice = (l) => notes.push(l);
    for (let i = 0; i < 5; i++) o.write(rec('x', { i: BigInt(i) }));
    // Waiting out the 10-minute timeout would fail the test by its own timeout.
    await o.close();
    assert.deepEqual([o.stats().dropped, o.stats().written, o.stats().queued], [5, 0, 0]);
    assert.deepEqual(o.stats().lost, { [`connection refused by 127.0.0.1:${port} (nothing listening)`]: 5 });
    assert.match(o.stats().lastError ?? '', /ECONNREFUSED/);
    assert.equal(notes.length, 1, notes.join('\n'));
    assert.match(notes[0], new RegExp(`^--output syslog:tcp://127\\.0\\.0\\.1:${port}\\?timeout=600000: connection refused by 127\\.0\\.0\\.1:${port} `));
  });
});
