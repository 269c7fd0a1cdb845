// riff instantiates wasmoon's Lua module with its own imports
// (src/vm/libc.ts) where wasmoon runs Emscripten's JS glue. Held here to
// the glue itself: the same Lua (test/lua/libc.lua: dates in every
// conversion, os.time's normalisation, os.clock, the environment, errors
// through pcall and coroutines, number formatting, memory growth, C's
// writes to stdout and stderr) runs in wasmoon's own engine (the package, its
// glue) and in riff's VM, each in a child process with TZ set (Node reads
// TZ when it starts), and must give the same results and the same bytes on
// stdout and stderr.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './helpers.js';

const SCRIPT = path.join(ROOT, 'test', 'lua', 'libc.lua');
const RESULT = '\n@@result@@\n';

// What the child runs: one engine, the script's result after a marker, and for
// riff the memory the instance ended with.
const CHILD = `
const src = require('fs').readFileSync(process.env.LIBC_LUA, 'utf8');
const outer = 'FULL = ' + (process.env.LIBC_FULL === '1') + ' local SRC = ' + JSON.stringify(src).replace(/\\\\u([0-9a-f]{4})/g, (_, h) => '\\\\u{' + h + '}') + ' return assert(load(SRC, "=libc"))()';
(async () => {
  let result, memory = 0;
  if (process.env.LIBC_ENGINE === 'wasmoon') {
    const { LuaFactory } = require('wasmoon');
    const lua = await new LuaFactory().createEngine();
    result = lua.doStringSync(outer);
  } else {
    const { LuaVM } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'src', 'vm', 'vm.js')).href)});
    const vm = await LuaVM.create({ memoryLimit: 0 });
    vm.load(Buffer.from(outer), '=outer');
    vm.call(0, 1);
    result = vm.toText(-1);
    memory = vm.wasm.memory.buffer.byteLength;
  }
  process.stdout.write(${JSON.stringify(RESULT)} + JSON.stringify({ result, memory }));
})();
`;

interface Run {
  stdout: string;
  stderr: string;
  result: string;
  memory: number;
}

/** full: also the checks that do not depend on the time zone (memory growth, the stack's limits), run in one zone. */
function run(engine: 'wasmoon' | 'riff', tz: string | undefined, full = false): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, LIBC_ENGINE: engine, LIBC_LUA: SCRIPT, LIBC_FULL: full ? '1' : '0' };
  if (tz === undefined) delete env.TZ;
  else env.TZ = tz;
  const r = spawnSync(process.execPath, ['-e', CHILD, 'libc-child'], { cwd: ROOT, env, encoding: 'latin1', timeout: 60_000 });
  assert.equal(r.status, 0, `${engine} (TZ=${tz}) failed: ${r.stderr}`);
  const at = r.stdout.lastIndexOf(RESULT);
  assert.ok(at >= 0, `${engine} printed no result: ${r.stderr}`);
  const { result, memory } = JSON.parse(r.stdout.slice(at + RESULT.length)) as { result: string; memory: number };
  return { stdout: r.stdout.slice(0, at), stderr: r.stderr, result, memory };
}

// Zones with and without DST, north and south, whole, half and quarter hours,
// a POSIX rule, and none set.
const ZONES = [undefined, 'UTC', 'Europe/Berlin', 'America/New_York', 'Australia/Sydney', 'Asia/Kolkata', 'America/St_Johns', 'Australia/Lord_Howe', 'EST5EDT'];

for (const tz of ZONES) {
  test(`Lua through riff's imports = Lua through wasmoon's glue, TZ=${tz ?? '(unset)'}`, () => {
    const full = tz === 'Europe/Berlin';
    const theirs = run('wasmoon', tz, full);
    const ours = run('riff', tz, full);
    const lines = (r: Run) => r.result.split('\n');
    assert.ok(lines(theirs).length > 200, 'the script ran to its end');
    assert.deepEqual(lines(ours), lines(theirs));
    assert.equal(ours.stdout, theirs.stdout, 'C wrote the same to stdout');
    assert.equal(ours.stderr, theirs.stderr, 'and to stderr');
    if (full) assert.ok(ours.memory > 16 << 20, `riff's memory grew past its initial 16 MiB (${ours.memory})`);
  });
}

test('the comparison sees what it compares: dates differ between zones, output reached stdout and stderr', () => {
  const berlin = run('riff', 'Europe/Berlin');
  const utc = run('riff', 'UTC');
  const line = (r: Run, label: string) => r.result.split('\n').find((l) => l.startsWith(label + ' =>'));
  assert.notEqual(line(berlin, 'date 1711846800'), line(utc, 'date 1711846800'));
  assert.match(line(berlin, '*t 1711846800') ?? '', /isdst=true/);
  assert.match(line(berlin, '*t 1711846799') ?? '', /isdst=false/);
  assert.match(berlin.stdout, /^print\t1\t2\.5\tnil\ttrue\n\npartial 42 rest\n/);
  assert.doesNotMatch(berlin.stdout, /never flushed/);
  assert.match(berlin.stderr, /to stderr\nsecond line\n/);
});

test("riff's VM: no file system, no shell, no exit; os.time() is now", async () => {
  const { LuaVM } = await import('../src/vm/vm.js');
  const vm = await LuaVM.create({ memoryLimit: 0 });
  const src = `
    local r = {}
    local function add(...) for i = 1, select('#', ...) do r[#r + 1] = tostring((select(i, ...))) end end
    add(io.open('/etc/hostname'))
    add(io.open('/tmp/riff-libc-test', 'w'))
    add(os.remove('/tmp/riff-libc-test'))
    add(os.rename('/tmp/a', '/tmp/b'))
    add(os.execute())
    add(os.execute('touch /tmp/riff-libc-test-exec'))
    add(pcall(os.tmpname))
    add(pcall(io.read, 'l'))
    add(os.time())
    return table.concat(r, '|')`;
  vm.load(Buffer.from(src), '=t');
  vm.call(0, 1);
  const got = vm.toText(-1)!.split('|');
  const now = Math.floor(Date.now() / 1000);
  assert.deepEqual(got.slice(0, -1), [
    'nil', '/etc/hostname: Function not implemented', '52',
    'nil', '/tmp/riff-libc-test: Function not implemented', '52',
    'nil', '/tmp/riff-libc-test: Function not implemented', '52',
    'nil', 'Function not implemented', '52',
    'false',
    'nil', 'Function not implemented', '52',
    'false', "unable to generate a unique filename",
    'true', 'nil', 'Bad file descriptor', '8',
  ]);
  assert.equal(fs.existsSync('/tmp/riff-libc-test-exec'), false, 'system() ran nothing');
  assert.ok(Math.abs(Number(got.at(-1)) - now) <= 2, `os.time() ${got.at(-1)} is now (${now})`);
});
