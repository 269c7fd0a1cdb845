// The host side of the sandbox: limits that need nothing from Lua. A VM that
// does not come back within --lua-timeout (a long C call, a finalizer that
// loops: neither ever meets the instruction budget) is ended and replaced;
// the heap cap holds for finalizers; packets larger than riff takes are
// skipped and counted. Each with 1 and 2 workers, through the real CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { riffAsync, tree, tmpdir, FIXTURES, type Run, pcapHeader } from './helpers.js';

const HTTP = path.join(FIXTURES, 'http.pcap'); // 45 packets

/** riff in the background, with a deadline: a hang fails the test instead of stalling it. */
async function run(args: string[], ms = 30_000): Promise<Run & { ms: number }> {
  const t0 = Date.now();
  const r = riffAsync(args);
  const timer = setTimeout(() => r.child.kill('SIGKILL'), ms);
  const out = await r.done;
  clearTimeout(timer);
  assert.notEqual(out.signal, 'SIGKILL', `riff hung: ${args.join(' ')}\n${out.stderr}`);
  return { ...out, ms: Date.now() - t0 };
}

function num(stderr: string, re: RegExp): number {
  const m = re.exec(stderr);
  return m ? Number(m[1]) : 0;
}

/** passed = processed + errors + ring drops + lost with ended workers + not processed. */
function accountsForAll(stderr: string): void {
  const passed = num(stderr, /^(\d+) packets passed the filter$/m);
  const sum =
    num(stderr, /^(\d+) packets processed by Lua$/m) +
    num(stderr, /^(\d+) Lua errors/m) -
    num(stderr, /^\d+ Lua errors .*; (\d+) of them outside packets/m) +
    num(stderr, /^(\d+) packets dropped at the ring/m) +
    num(stderr, /^(\d+) packets lost with /m) +
    num(stderr, /^(\d+) packets not processed/m);
  assert.equal(sum, passed, stderr);
}

// Each hangs its VM on the packet with id 5 only: the restarted worker gets the rest.
const HOSTILE: Record<string, string> = {
  // A backtracking pattern: one C call, hours long; the budget's hook never runs inside it.
  'pattern.lua': `function buffer(p) if riff.packet.id == 5 then ("a"):rep(3000):find(".-.-.-.-.-.-x") end end`,
  // string.rep of 64 MiB in a loop: a few instructions, each a long C call.
  'rep.lua': `function buffer(p) if riff.packet.id == 5 then for i = 1, 1e9 do local s = ("x"):rep(64 << 20) end end end`,
};

// A finalizer that loops: Lua runs finalizers with hooks off, so riff runs
// script finalizers itself at the end of the batch, under the instruction
// budget (lua/riff/sandbox.lua): the loop is one counted error, no worker is
// ended. Both ways to set __gc: present at setmetatable, and put in after.
for (const [name, src] of Object.entries({
  'gcloop.lua': `function buffer(p)
    if riff.packet.id == 5 then setmetatable({}, { __gc = function() while true do end end }) collectgarbage() end
  end`,
  'gclate.lua': `local mt = { __gc = true }
  function buffer(p)
    if riff.packet.id == 5 then setmetatable({}, mt) mt.__gc = function() while true do end end collectgarbage() end
  end`,
})) {
  test(`${name}: a looping finalizer meets the instruction budget as one error marked (__gc); no worker is ended`, async () => {
    const dir = tree({ [name]: src });
    const r = await run(['-q', '--lua', path.join(dir, name), '--lua-timeout', '30', '-r', HTTP]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^riff: .*${name}:\\d+: budget exceeded .*\\(__gc\\)$`, 'm'));
    assert.doesNotMatch(r.stderr, /still running|lost with/);
    assert.match(r.stderr, /^45 packets processed by Lua$/m);
    assert.match(r.stderr, /^1 Lua errors \(.*; 1 of them outside packets/m);
    accountsForAll(r.stderr);
  });
}

for (const [name, src] of Object.entries(HOSTILE)) {
  for (const workers of [1, 2]) {
    test(`${name}, ${workers} worker(s): the VM is ended at --lua-timeout, one line names script, packet and limit, the rest runs`, async () => {
      const dir = tree({ [name]: src });
      const script = path.join(dir, name);
      const r = await run(['-q', '--lua', script, '--lua-timeout', '0.5', '--workers', String(workers), '-r', HTTP]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stderr.split('\n').filter((l) => l.startsWith('riff: '));
      assert.deepEqual(lines, [
        `riff: ${script}: packet 5 still running after 0.5 s (--lua-timeout); worker ${lines[0]?.match(/worker (\d)/)?.[1]} was restarted (its plugin state is lost)`,
      ]);
      assert.match(r.stderr, /^1 packets lost with 1 Lua worker ended \(over --lua-timeout, or died\); 1 restarted$/m);
      // Only the stuck packet is lost: what was queued behind it went to the new worker.
      assert.match(r.stderr, /^44 packets processed by Lua$/m);
      accountsForAll(r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
    });
  }
}

for (const workers of [1, 2]) {
  test(`what an ended VM had printed for the packets before the stuck one is written out, once (${workers} worker(s))`, async () => {
    // Every packet prints; packet 5 is stuck in a C call (a backtracking pattern) past the limit.
    const dir = tree({
      'said.lua': `function buffer(p)
  io.write("seen ", riff.packet.id, "\\n")
  if riff.packet.id == 5 then string.find(string.rep("a", 40000), ".-.-.-.-.-.-b") end
end`,
    });
    const r = await run(['-q', '--lua', path.join(dir, 'said.lua'), '--lua-timeout', '0.5', '--workers', String(workers), '-r', HTTP]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /packet 5 still running after 0\.5 s/);
    const seen = r.stdout.toString().split('\n').filter(Boolean);
    // All 45 lines (packet 5's own came before it got stuck), none twice; the buffer was not lost with the worker.
    assert.deepEqual([...seen].sort(), Array.from({ length: 45 }, (_, i) => `seen ${i + 1}`).sort());
  });
}

test('--strict: a VM ended at the limit exits 1, with the summary', async () => {
  const dir = tree({ 'pattern.lua': HOSTILE['pattern.lua'] });
  const r = await run(['-q', '--strict', '--lua', path.join(dir, 'pattern.lua'), '--lua-timeout', '0.5', '-r', HTTP]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /packet 5 still running after 0\.5 s/);
  assert.match(r.stderr, /^45 packets passed the filter$/m);
  accountsForAll(r.stderr);
});

test('a setup that never returns ends its worker without a restart, the run stops and exits 1', async () => {
  const dir = tree({
    'setup.lua': `function setup() ("a"):rep(3000):find(".-.-.-.-.-.-x") end
      function buffer(p) end`,
  });
  const script = path.join(dir, 'setup.lua');
  // Setup's limit is ten times the packet limit.
  const r = await run(['-q', '--lua', script, '--lua-timeout', '0.2', '-r', HTTP]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^riff: ${script}: setup still running after 2 s \\(--lua-timeout\\); worker 0 was ended$`, 'm'));
  accountsForAll(r.stderr);
});

test('a script whose top level never returns: one line, exit 1, no hang', async () => {
  const dir = tree({ 'load.lua': `("a"):rep(3000):find(".-.-.-.-.-.-x")\nfunction buffer(p) end` });
  const script = path.join(dir, 'load.lua');
  const r = await run(['-q', '--lua', script, '--lua-timeout', '0.2', '-r', HTTP]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr, `riff: ${script}: loading the script still running after 2 s (--lua-timeout)\n`);
});

test('the limit is per packet, not per batch: slow packets that each finish in time are never ended', async () => {
  const dir = tree({
    'slow.lua': `function buffer(p) local t = os.clock() while os.clock() - t < 0.15 do end end`,
  });
  // 12 packets of 0.15 s in one batch: 1.8 s in Lua, over the 0.5 s limit only as a whole.
  const r = await run(['-q', '--lua-budget', '0', '--lua', path.join(dir, 'slow.lua'), '--lua-timeout', '0.5', '-c', '12', '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /still running|lost/);
  assert.match(r.stderr, /^12 packets processed by Lua$/m);
});

test('--lua-timeout takes seconds; a bad value is one line and exit 2', async () => {
  const r = await run(['--lua-timeout', '-1', '-r', HTTP]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^riff: --lua-timeout: '-1' is not a number of seconds/);
});

/** An Ethernet pcap of `n` 60-byte packets. */
function manyPackets(n: number): string {
  const head = pcapHeader(1, 65535);
  const rec = Buffer.alloc(16 + 60, 1);
  rec.writeUInt32LE(60, 8);
  rec.writeUInt32LE(60, 12);
  const file = path.join(tmpdir(), 'many.pcap');
  fs.writeFileSync(file, Buffer.concat([head, ...Array(n).fill(rec)]));
  return file;
}

for (const workers of [1, 2]) {
  test(`finalizers that allocate stay under --lua-memory 64M (${workers} worker(s)): riff stays small, ends, accounts for every packet`, async () => {
    const dir = tree({
      'gcalloc.lua': `function buffer(p)
        setmetatable({}, { __gc = function() local t = {} for i = 1, 1e8 do t[i] = ("x"):rep(1 << 20) .. i end end })
      end`,
    });
    // Each finalizer must meet the cap (and the time limit); riff before
    // this change hung on this input (no summary after 30 s).
    const r = await run(
      ['-q', '--verbose', '--lua', path.join(dir, 'gcalloc.lua'), '--lua-memory', '64M', '--lua-timeout', '1', '--workers', String(workers), '-r', manyPackets(3000)],
      60_000,
    );
    const peak = Number(/^peak memory ([\d.]+) MiB resident$/m.exec(r.stderr)?.[1]);
    assert.ok(peak > 0 && peak < 200 + workers * 100, `peak ${peak} MiB\n${r.stderr}`);
    assert.match(r.stderr, /^3000 packets passed the filter$/m);
    accountsForAll(r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at |internal error/);
  });
}

/** A pcap (link type D-Bus, snaplen 0 = the type's maximum, 128 MiB) with records of these sizes. */
function dbusPcap(sizes: number[]): string {
  const parts: Buffer[] = [];
  const h = pcapHeader(231, 0);
  parts.push(h);
  sizes.forEach((n, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(1000 + i, 0);
    r.writeUInt32LE(n, 8);
    r.writeUInt32LE(n, 12);
    parts.push(r, Buffer.alloc(n, 0x61));
  });
  const file = path.join(tmpdir(), 'dbus.pcap');
  fs.writeFileSync(file, Buffer.concat(parts));
  return file;
}

for (const workers of [1, 2]) {
  test(`a 20 MiB record is skipped and counted, the packets around it pass (${workers} worker(s))`, async () => {
    const file = dbusPcap([100, 20 << 20, 3 << 20, 200]);
    const dir = tree({ 'len.lua': `function buffer(p) io.write(#p, "\\n") end` });
    const r = await run(['-q', '--lua', path.join(dir, 'len.lua'), '--workers', String(workers), '-r', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.toString().trim().split('\n').map(Number).sort((a, b) => a - b), [100, 200, 3 << 20]);
    assert.match(r.stderr, /^4 packets read$/m);
    assert.match(r.stderr, /^1 packet larger than 4 MiB skipped/m);
    accountsForAll(r.stderr);
  });
}

// The heap cap's error names the script's file:line like every other error,
// however the memory was asked for. Lua raises "not enough memory" with no
// position; the allocator notes the line as it refuses (src/vm/where.ts).
// Each kind fails its own packet (by id); the packets after it run.
const FRAME_LOCALS = Array.from({ length: 190 }, (_, i) => `a${i + 1}`).join(', ');
const MEMORY: Record<string, string> = {
  'main.lua': `local grower = require "lib.grower"
local function deep(n)
  local ${FRAME_LOCALS}
  return 1 + deep(n + 1)
end
local kinds = {
  function() local s = string.rep("x", 1e9) end,
  function() local t = {} while true do t[#t + 1] = { #t } end end,
  function(p) local s = p while true do s = s .. s end end,
  function() coroutine.wrap(function()
    local t = {}
    while true do t[#t + 1] = ("z"):rep(1000) .. #t end
  end)() end,
  function(p) grower.fill(p) end,
  function() deep(1) end,
}
function buffer(p)
  collectgarbage()
  local kind = kinds[riff.packet.id]
  if kind then kind(p) end
  io.write("alive ", riff.packet.id, "\\n")
end
`,
  'lib/grower.lua': `local M = {}
function M.fill(x)
  local store = {}
  while true do store[#store + 1] = x .. #store end
end
return M
`,
};

for (const workers of [1, 2]) {
  test(`a memory error names the script's file:line for each way to fill the heap; the packet is lost, the worker lives (${workers} worker(s))`, async () => {
    const dir = tree(MEMORY);
    const main = path.join(dir, 'main.lua');
    const r = await run(['-q', '--lua', main, '--lua-memory', '8M', '--workers', String(workers), '-r', HTTP, '-c', '10']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('riff: '));
    const heap = 'not enough memory (Lua heap limit reached; raise it with --lua-memory)';
    const want = [
      `${main}:7: ${heap} (packet 1)`, // one large string
      `${main}:8: ${heap} (packet 2)`, // a table growing
      `${main}:9: ${heap} (packet 3)`, // concatenation in a loop
      `${main}:12: ${heap} (packet 4)`, // inside a coroutine (not where it was resumed)
      `${path.join(dir, 'lib', 'grower.lua')}:4: ${heap} (packet 5)`, // in a required module
      `${main}:4: ${heap} (packet 6)`, // the Lua stack itself (frames of 190 locals)
    ];
    assert.deepEqual(lines.map((l) => l.slice('riff: '.length)).sort(), want.sort(), r.stderr);
    assert.deepEqual(r.stdout.toString().trim().split('\n').sort(), ['alive 10', 'alive 7', 'alive 8', 'alive 9']);
    assert.match(r.stderr, /^6 Lua errors \((?=.*main\.lua: 5)(?=.*grower\.lua: 1)/m);
    assert.match(r.stderr, /^4 packets processed by Lua$/m);
    accountsForAll(r.stderr);
    assert.doesNotMatch(r.stderr, /lost with|restarted|internal error|\n\s+at /);
  });
}

test('a memory error while loading the script or in setup names its line too', async () => {
  const dir = tree({
    'top.lua': 'local a = 1\nlocal s = string.rep("x", 1e9)\nfunction buffer() end\n',
    'setup.lua': 'function setup()\n  local t = {}\n  while true do t[#t + 1] = {} end\nend\nfunction buffer() end\n',
  });
  const top = await run(['-q', '--lua', path.join(dir, 'top.lua'), '--lua-memory', '8M', '-r', HTTP]);
  assert.equal(top.code, 1);
  assert.equal(top.stderr, `riff: ${path.join(dir, 'top.lua')}:2: not enough memory (Lua heap limit reached; raise it with --lua-memory)\n`);
  const setup = await run(['-q', '--lua', path.join(dir, 'setup.lua'), '--lua-memory', '8M', '-r', HTTP]);
  assert.equal(setup.code, 0, setup.stderr);
  assert.match(setup.stderr, new RegExp(`^riff: ${path.join(dir, 'setup.lua')}:3: not enough memory \\(Lua heap limit reached; raise it with --lua-memory\\) \\(setup\\)$`, 'm'));
});

for (const workers of [1, 2]) {
  test(`a script that keeps the heap at its cap: each packet after is one error line, and the script's deinit and riff's summary still come out (${workers} worker(s))`, async () => {
    const dir = tree({
      'leak.lua': `LEAK = {}
function buffer(p)
  for i = 1, 1e9 do LEAK[#LEAK + 1] = ("m"):rep(1000) .. i end
end
function deinit() io.write("deinit ran\\n") end
`,
    });
    const leak = path.join(dir, 'leak.lua');
    const r = await run(['-q', '--lua', leak, '--lua-memory', '8M', '--workers', String(workers), '-r', HTTP]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'deinit ran\n'.repeat(workers));
    assert.match(r.stderr, new RegExp(`^riff: ${leak}:3: not enough memory \\(Lua heap limit reached; raise it with --lua-memory\\) \\(packet \\d+\\)$`, 'm'));
    assert.match(r.stderr, new RegExp(`^45 Lua errors \\(${leak}: 45\\)$`, 'm'));
    accountsForAll(r.stderr);
    assert.doesNotMatch(r.stderr, /lost with|restarted|internal error|\n\s+at /);
  });
}

// ---- riff's own bookkeeping never runs the script's code, and a signal ends every phase

/** riff in the background, SIGTERM after `afterMs`; how long it took to end after the signal. */
async function terminated(args: string[], afterMs: number): Promise<Run & { msAfter: number }> {
  const r = riffAsync(args);
  const kill = setTimeout(() => r.child.kill('SIGKILL'), 60_000);
  let sentAt = 0;
  const term = setTimeout(() => {
    sentAt = Date.now();
    r.child.kill('SIGTERM');
  }, afterMs);
  const out = await r.done;
  clearTimeout(kill);
  clearTimeout(term);
  assert.notEqual(out.signal, 'SIGKILL', `riff hung: ${args.join(' ')}\n${out.stderr}`);
  return { ...out, msAfter: sentAt ? Date.now() - sentAt : 0 };
}

test("a script that replaces table.concat, table.unpack or string.gsub reaches only its own code: riff's summary, counters and error lines stay riff's", async () => {
  const dir = tree({
    'forge.lua': `local concat = table.concat
table.concat = function(t, sep, ...) if sep == "\\n" then return "45\\t0\\t0" end return concat(t, sep, ...) end
table.unpack = function() error("from table.unpack") end
string.gsub = function() while true do end end
math.tointeger = function() return 0 end
local c = riff.counter("n")
function buffer(p)
  c:add(1)
  io.write(riff.packet.id, "\\n")
  if riff.packet.id % 2 == 0 then error("bad\\nline") end
end`,
  });
  for (const extra of [[], ['--strict']]) {
    const r = await run(['-q', '--lua', path.join(dir, 'forge.lua'), ...extra, '-r', HTTP]);
    if (extra.length) {
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^1 Lua errors/m);
      continue;
    }
    assert.equal(r.code, 0, r.stderr);
    // The true account (22 even ids fail), not the script's "45 processed, 0 errors".
    assert.match(r.stderr, /^23 packets processed by Lua$/m);
    assert.match(r.stderr, /^22 Lua errors \(/m);
    // No worker died of riff calling the script's table.unpack, and every line printed came out.
    assert.doesNotMatch(r.stderr, /worker died|restarted|still running/);
    assert.equal(r.stdout.toString().split('\n').filter(Boolean).length, 45);
    // The error's newline is escaped by riff's own gsub, not run through the script's loop.
    assert.match(r.stderr, /forge\.lua:\d+: bad\\nline \(packet 2\)/);
    accountsForAll(r.stderr);
  }
});

test('a finalizer that makes the next finalizer is held to a budget a batch, and a signal still ends riff at once', async () => {
  const dir = tree({
    'chain.lua': `local mt
mt = { __gc = function() setmetatable({}, mt) collectgarbage() end }
function buffer(p) if riff.packet.id == 5 then setmetatable({}, mt) collectgarbage() end end`,
  });
  const r = await run(['-q', '--lua', path.join(dir, 'chain.lua'), '--lua-timeout', '1', '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /worker died|still running|lost with/);
  assert.match(r.stderr, /^45 packets processed by Lua$/m);
  // With no wall-clock limit the chain would run as long as riff does: SIGTERM ends it with a summary.
  const t = await terminated(['-q', '--lua', path.join(dir, 'chain.lua'), '--lua-timeout', '0', '--lua-budget', '0', '-r', manyPackets(20000)], 1500);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stderr, /packets read$/m);
  assert.ok(t.msAfter < 5000, `ended ${t.msAfter} ms after SIGTERM`);
});

test("coroutine.close runs a coroutine's __close handlers under the budget: one error, no worker ended", async () => {
  const dir = tree({
    'close.lua': `function buffer(p)
  if riff.packet.id == 3 then
    local co = coroutine.create(function()
      local x <close> = setmetatable({}, { __close = function() while true do end end })
      coroutine.yield()
    end)
    coroutine.resume(co)
    coroutine.close(co)
  end
end`,
  });
  const r = await run(['-q', '--lua', path.join(dir, 'close.lua'), '--lua-timeout', '30', '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /close\.lua:4: budget exceeded .*\(packet 3\)$/m);
  assert.doesNotMatch(r.stderr, /still running|lost with/);
  assert.match(r.stderr, /^44 packets processed by Lua$/m);
});

test('what a script returns is read under its load budget: fields its metamethods compute, overhear_ports, a plugin list, unmerged', async () => {
  const loop = 'function() while true do end end';
  const dir = tree({
    'proxy.lua': `return setmetatable({}, { __index = ${loop} })`,
    'list.lua': `return setmetatable({ { push = function() end } }, { __index = ${loop} })`,
    'ports.lua': `return { run = function() end, overhear = function() end, overhear_ports = ${loop} }`,
    'unmerged.lua': `return { run = function() end, deinit = function() end, unmerged = ${loop} }`,
    'fine.lua': `return setmetatable({}, { __index = { run = function() io.write("ran\\n") end } })`,
  });
  // --lua-timeout 0: no wall clock ends them; before, each of these hung riff at start.
  for (const f of ['proxy', 'list', 'ports']) {
    const r = await run(['-q', '--lua-timeout', '0', '--lua', path.join(dir, `${f}.lua`), '-r', HTTP]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^riff: \\S*/${f}\\.lua:1: budget exceeded`, 'm'));
    assert.doesNotMatch(r.stderr, /internal error|\n\s+at /);
  }
  const u = await run(['-q', '--lua-timeout', '0', '--workers', '2', '--lua', path.join(dir, 'unmerged.lua'), '-r', HTTP]);
  assert.equal(u.code, 0, u.stderr);
  assert.match(u.stderr, /^45 packets processed by Lua$/m);
  // A proxy that computes its fields within the budget is still a pipeline.
  const f = await run(['-q', '--lua', path.join(dir, 'fine.lua'), '-r', HTTP]);
  assert.equal(f.code, 0, f.stderr);
  assert.equal(f.stdout.toString(), 'ran\n'.repeat(45));
});

for (const [phase, src, code] of [
  ['loading the script', `("a"):rep(3000):find(".-.-.-.-.-.-x")\nfunction buffer(p) end`, 1],
  ['setup', `function setup() ("a"):rep(3000):find(".-.-.-.-.-.-x") end\nfunction buffer(p) end`, 0],
] as const) {
  test(`SIGTERM while ${phase} is stuck in a C call ends riff within seconds, not at the 10x script limit`, async () => {
    const dir = tree({ 'stuck.lua': src });
    const t = await terminated(['-q', '--lua', path.join(dir, 'stuck.lua'), '-r', HTTP], 1500);
    assert.equal(t.code, code, t.stderr);
    assert.match(t.stderr, /still running after 1 s \(riff was told to stop\)/);
    assert.ok(t.msAfter < 5000, `ended ${t.msAfter} ms after SIGTERM`);
  });
}

test('after SIGTERM the end of the run (deinit, collect, report) shares ten seconds in all, not ten each', async () => {
  const dir = tree({
    'slow-end.lua': `local s = ("a"):rep(4000)
local function burn(sec) local t0 = os.clock() while os.clock() - t0 < sec do s:find(".-b") end end
function setup() io.stderr:write("ready\\n") end
function buffer(p) end
function deinit() burn(9) end
function collect() burn(9) return 1 end
function report(x) burn(9) end`,
  });
  const r = riffAsync(['-q', '--lua', path.join(dir, 'slow-end.lua'), '-r', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  r.child.stdin!.write(fs.readFileSync(HTTP));
  const kill = setTimeout(() => r.child.kill('SIGKILL'), 60_000);
  while (!/ready/.test(r.stderr())) await new Promise((res) => setTimeout(res, 50));
  const t0 = Date.now();
  r.child.kill('SIGTERM');
  const out = await r.done;
  clearTimeout(kill);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /still running after 10 s \(riff was told to stop\)/);
  assert.match(out.stderr, /^45 packets read$/m);
  assert.ok(Date.now() - t0 < 14_000, `ended ${Date.now() - t0} ms after SIGTERM`);
});

test("a finalizer runs at the heap cap, never in riff's reserve, and a pass's budget counts its errors' __tostring", async () => {
  const dir = tree({
    // The finalizer fills the heap as far as it may, then says how far that was.
    'gcmem.lua': `local keep, n = {}, 0
function buffer(p)
  if n > 0 then return end
  n = 1
  setmetatable({}, { __gc = function()
    local ok = true
    while ok do ok = pcall(function() keep[#keep + 1] = ("z"):rep(16384) .. #keep end) end
    error(collectgarbage("count") > 32 * 1024 and "past the cap" or "at the cap")
  end })
  collectgarbage("collect")
end`,
    'gcerr.lua': `local E = setmetatable({}, { __tostring = function() return "fin" end })
local mt = { __gc = function() local x = 0 for i = 1, 1500000 do x = x + i end error(E) end }
local done = false
function buffer(p)
  if done then return end
  done = true
  for i = 1, 3000 do setmetatable({}, mt) end
  collectgarbage("collect")
end`,
  });
  const m = await run(['-q', '--lua', path.join(dir, 'gcmem.lua'), '--lua-memory', '32M', '-r', HTTP]);
  assert.equal(m.code, 0, m.stderr);
  assert.match(m.stderr, /gcmem\.lua:8: at the cap \(__gc\)/);
  assert.doesNotMatch(m.stderr, /worker died|restarted/);
  // 3000 finalizers of ~4.5M instructions each: a pass stops near one packet's budget (10^7), not at 3000 of them.
  const e = await run(['-q', '--lua', path.join(dir, 'gcerr.lua'), '-r', HTTP]);
  assert.equal(e.code, 0, e.stderr);
  const errors = Number(/^(\d+) Lua errors/m.exec(e.stderr)?.[1]);
  assert.ok(errors > 0 && errors < 200, e.stderr.slice(-400));
});

test('--workers 2: an overheard copy that hangs its worker is neither processed nor lost; the summary adds up', async () => {
  const dir = tree({
    'over.lua': `overhear_ports = { 80 }
local heard = 0
function buffer(p) end
function overhear(p)
  heard = heard + 1
  if heard == 10 then local s = ("a"):rep(4000) while true do s:find(".-b") end end
end`,
  });
  const r = await run(['-q', '--workers', '2', '--lua-timeout', '1', '--lua', path.join(dir, 'over.lua'), '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /still running after 1 s/);
  accountsForAll(r.stderr);
});

test("--workers 2: an error in overhear is the script's, not a packet that failed; the summary adds up", async () => {
  const dir = tree({
    'over.lua': `overhear_ports = { 80 }
function buffer(p) if riff.packet.id % 3 == 0 then error("own") end end
function overhear(p) error("heard") end`,
  });
  const r = await run(['-q', '--workers', '2', '--lua', path.join(dir, 'over.lua'), '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  // 15 of the 45 packets fail in buffer; each one on port 80 is also overheard by the other worker.
  assert.match(r.stderr, /^30 packets processed by Lua$/m);
  const m = /^(\d+) Lua errors \(.*; (\d+) of them outside packets: .*overhear\)$/m.exec(r.stderr);
  assert.ok(m && Number(m[2]) > 0 && Number(m[1]) === 15 + Number(m[2]), r.stderr);
  assert.match(r.stderr, /heard \(overhear, packet \d+\)$/m);
  accountsForAll(r.stderr);
});

test("riff.* is riff's own: a script's directory cannot put its riff/record.lua in riff's stead, and changing the module a script gets leaves riff.emit's records alone", async () => {
  const dir = tree({
    'riff/record.lua': 'io.stderr:write("the script\'s record.lua ran\\n") while true do end',
    'main.lua': `local M = require "riff.record"
M.encode = function() return "\\1forged" end
M.MAX_DEPTH = 1e9
function buffer(p) if riff.packet.id == 1 then riff.emit("hit", { t = M.array({}) }) end end`,
  });
  const r = await run(['-q', '--lua-timeout', '1', '--lua', path.join(dir, 'main.lua'), '-o', 'json:-', '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /record\.lua ran|still running/);
  // The array mark made through the script's module still reaches riff's encoder.
  assert.match(r.stdout.toString(), /^\{"ts":[\d.]+,"type":"hit","host":"[^"]*","t":\[\]\}$/m);
});

test('a chain of finalizers, each one slow C call, has one wall-clock limit for its whole pass, not one per link', async () => {
  const dir = tree({
    // Each link ~0.2 s here: under the limit, as a chain the old per-link limit never ended.
    'slowchain.lua': `local s = ("a"):rep(150)
local mt = {}
mt.__gc = function() s:find(".-.-.-x") io.stderr:write("link\\n") setmetatable({}, mt) collectgarbage() end
function buffer(p) if riff.packet.id == 5 then setmetatable({}, mt) collectgarbage() end end`,
  });
  const r = await run(['-q', '--lua-timeout', '1', '--lua', path.join(dir, 'slowchain.lua'), '-r', HTTP], 60_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /slowchain\.lua: a __gc finalizer still running after 1 s \(--lua-timeout\); worker 0 was restarted/);
  assert.ok((r.stderr.match(/^link$/gm) ?? []).length >= 2, 'each link ran in less than the limit');
  assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
  accountsForAll(r.stderr);
});

test("an error is counted against the file that raised it, never one its text names: not another plugin, not one a metamethod's caller, not a C function's", async () => {
  const dir = tree({
    'lib.lua': 'return { check = function(x) if x % 2 == 0 then error("even", 2) end end }',
    // Another plugin riff runs, named exactly as riff names it by the framer's error text.
    'victim.lua': 'return { push = function() end }',
  });
  fs.writeFileSync(
    path.join(dir, 'framer.lua'),
    `local lib = require "lib"
local victim = require "victim"
function buffer(p)
  local id = riff.packet.id
  if id % 5 == 0 then error(${JSON.stringify(path.join(dir, 'victim.lua'))} .. ":1: not me", 0) end
  lib.check(id)
end`,
  );
  const r = await run(['-q', '--lua', path.join(dir, 'framer.lua'), '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  // 9 ids divisible by 5 are the framer's; the 18 other even ids, lib.check's (its message names its caller's line).
  const counts = (stderr: string) => /^\d+ Lua errors \(([^;)]*)/m.exec(stderr)?.[1].split(', ').sort();
  assert.deepEqual(counts(r.stderr), [`${path.join(dir, 'framer.lua')}: 9`, `${path.join(dir, 'lib.lua')}: 18`], r.stderr);
  assert.match(r.stderr, /framer\.lua:6: even \(packet 2\)/);
  // A metamethod the victim triggers raises in the victim's name; a C function as __gc or setup raises any text.
  const dir2 = tree({
    'victim.lua': 'return { push = function(self, p) local x = p.meta.anything end }',
    'attacker.lua': `return { setup = error, push = function(self, p)
  p.meta = setmetatable({}, { __index = function() error(${JSON.stringify(path.join('VICTIM', 'victim.lua'))} .. ":1: boom", 0) end })
  setmetatable({}, { __gc = error })
  collectgarbage()
end }`,
    'main.lua': 'return { require "attacker", require "victim" }',
  });
  const v = await run(['-q', '--lua', path.join(dir2, 'main.lua'), '-r', HTTP]);
  assert.doesNotMatch(v.stderr, /victim\.lua: \d/, v.stderr);
  assert.match(v.stderr, /attacker\.lua: \d+/);
});

test("riff's driver reads no global after loading and holds its own copies of the libraries: a script's pcall or table.concat is never riff's", async () => {
  const dir = tree({
    'globals.lua': `local obj = setmetatable({}, { __tostring = function() return "obj" end })
function buffer(p)
  if riff.packet.id == 5 then
    pcall = function() error("riff called the script's pcall") end
    table.unpack = pcall
    error(obj)
  end
end
function deinit() return { n = 1 } end`,
  });
  const r = await run(['-q', '--lua', path.join(dir, 'globals.lua'), '-r', HTTP]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /globals\.lua:\d+: obj \(packet 5\)/);
  assert.match(r.stderr, /^44 packets processed by Lua$/m);
  assert.doesNotMatch(r.stderr, /script's pcall|died|restarted/);
  accountsForAll(r.stderr);
});

test("what riff keeps for a script is riff's: counters are handles, lists are read raw and bounded, names in riff's lines are escaped", async () => {
  const dir = tree({
    'counter.lua': `local c = riff.counter("x")
setmetatable(c.__index, { __index = function() while true do end end })
function buffer(p) c:add(1) if riff.packet.id == 3 then c.v, c.slot = nil, nil end end
function deinit() io.write(c:value(), "\\n") end`,
    // A list whose border (rawlen) is 2^40 though it holds 45 entries.
    'ports.lua': `local names = {}
for i = 1, 64 do names[i] = "k" .. i .. "=nil" end
local ports = load("return {53,53,53,53," .. table.concat(names, ",") .. "}")()
ports[5] = 53
for k = 3, 40 do ports[1 << k] = 53 end
assert(rawlen(ports) > 1e9)
overhear_ports = ports
function overhear(p) end
function buffer(p) end`,
    'named.lua': `local f = load("error('x')", "=other.lua")
local g = load("error('y')", "=a\\tb\\nc")
function buffer(p) if riff.packet.id % 2 == 0 then f() else g() end end`,
  });
  const c = await run(['-q', '--lua', path.join(dir, 'counter.lua'), '--lua-timeout', '1', '-r', HTTP]);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(c.stdout.toString(), '45\n');
  assert.doesNotMatch(c.stderr, /died|restarted|still running/);
  const p = await run(['-q', '--lua', path.join(dir, 'ports.lua'), '--lua-timeout', '0', '--workers', '2', '-r', HTTP], 20_000);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stderr, /^45 packets processed by Lua$/m);
  // A chunk's name cannot pass for a file, nor break the summary's lines.
  const n = await run(['-q', '--lua', path.join(dir, 'named.lua'), '-r', HTTP]);
  const summary = /^45 Lua errors \((.*)\)$/m.exec(n.stderr)?.[1].split(', ').sort();
  assert.deepEqual(summary, ['[load] a\\x09b\\nc: 23', '[load] other.lua: 22'], n.stderr);
});

test('an error raised while a required module loads is counted against the module; a __tostring that hangs its worker is counted once', async () => {
  const dir = tree({
    'badlib.lua': 'error("broken module")',
    'main.lua': 'function buffer(p) if riff.packet.id == 3 then require "badlib" end end',
    'slow.lua': `local subject = ("a"):rep(3000)
local obj = setmetatable({}, { __tostring = function() return tostring(subject:find(".-.-.-.-b")) end })
function buffer(p) if riff.packet.id % 10 == 0 then error(obj) end end`,
  });
  const m = await run(['-q', '--lua', path.join(dir, 'main.lua'), '-r', HTTP]);
  assert.match(m.stderr, /badlib\.lua:1: broken module \(packet 3\)/);
  assert.match(m.stderr, /^1 Lua errors \(\S*badlib\.lua: 1\)$/m);
  const s = await run(['-q', '--lua', path.join(dir, 'slow.lua'), '--lua-timeout', '1', '-r', HTTP], 60_000);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, /^41 packets processed by Lua$/m);
  assert.match(s.stderr, /^0 Lua errors$/m);
  assert.match(s.stderr, /^4 packets lost with 4 Lua workers ended/m);
  accountsForAll(s.stderr);
});

test('coroutines meet the budget however they are entered: closing the thread that resumed them, or resumed in deinit after a lazy batch made them', async () => {
  const dir = tree({
    'close.lua': `local M = coroutine.running()
function buffer(p)
  if riff.packet.id ~= 2 then return end
  coroutine.wrap(function()
    pcall(coroutine.close, M) -- M is normal here: close raises, and must leave the budget's bookkeeping alone
    while true do end
  end)()
end`,
    'later.lua': `local co
function buffer(p) if not co then co = coroutine.create(function() while true do end end) end end
function deinit() coroutine.resume(co) end`,
  });
  const c = await run(['-q', '--lua', path.join(dir, 'close.lua'), '--lua-timeout', '30', '-r', HTTP], 60_000);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /close\.lua:6: budget exceeded .*\(packet 2\)$/m);
  assert.doesNotMatch(c.stderr, /still running/);
  const l = await run(['-q', '--lua', path.join(dir, 'later.lua'), '--lua-timeout', '30', '-r', HTTP], 60_000);
  assert.equal(l.code, 0, l.stderr);
  assert.match(l.stderr, /later\.lua:2: budget exceeded \(1000000000 Lua instructions/);
  assert.doesNotMatch(l.stderr, /still running/);
});

test("config.lua's outputs(): one spec per entry, at most 256", async () => {
  const dir = tree({
    'config.lua': `function outputs() return { ("json:/dev/null\\n"):rep(600) } end`,
    's.lua': 'function buffer(p) end',
  });
  const r = await run(['-q', '--lua', path.join(dir, 's.lua'), '-r', HTTP]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /config\.lua: outputs\(\) entry 1 holds a control character \(one output spec per entry\)/);
});
