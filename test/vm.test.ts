// The handoff into WebAssembly Lua and the entry rules, driven through the
// Runtime directly: bytes in, bytes out, no CLI in between.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Batch, stampIds } from '../src/capture/batch.js';
import { Runtime, ScriptError, type RuntimeOptions } from '../src/vm/runtime.js';
import { compiledLua, patched, setWasmFlags, type WasmMemory } from '../src/vm/wasm.js';
import { addressSpaceUnlimited, LuaVM, warmUp } from '../src/vm/vm.js';
import { Watchdog, LS, BLOCK_SEQ, BLOCK_PHASE, PHASE_BATCH } from '../src/vm/watchdog.js';
import { tree, FIXTURES, ROOT } from './helpers.js';

// The engine as riff runs it (src/riff.ts).
setWasmFlags();

// Report lines print local time, as watch.c's ctime did.
process.env.TZ = 'UTC';

interface Out {
  stdout: Buffer;
  stderr: string;
}

async function start(script: string | undefined, opts: Partial<RuntimeOptions> = {}, vm?: LuaVM) {
  const chunks: Buffer[] = [];
  let err = '';
  const rt = await Runtime.create({
    script,
    quiet: true,
    verbose: false,
    strict: false,
    budget: 10_000_000,
    setupBudget: 1_000_000_000,
    memoryLimit: 64 << 20,
    version: 'test',
    write: (fd, b) => (fd === 1 ? chunks.push(Buffer.from(b)) : (err += Buffer.from(b).toString())),
    ...opts,
  }, vm);
  const out = (): Out => ({ stdout: Buffer.concat(chunks), stderr: err });
  return { rt, out };
}

function batchOf(packets: Buffer[], sec = 1504850400): Batch {
  const b = new Batch(1 << 16);
  packets.forEach((p, i) => b.push(sec + i, 500_000_000, p, 0, p.length, p.length + 4, 1, 0));
  stampIds(b, 1);
  return b;
}

const ALL = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const PACKETS = [ALL, Buffer.from(ALL).reverse(), Buffer.from([0]), Buffer.from([0, 0, 0x70, 0x63, 0x61, 0x70, 0, 0xff])];

test('every byte value reaches Lua and comes back out through io.write unchanged', async () => {
  const dir = tree({ 'echo.lua': 'buffer = function(p) io.write(p) end' });
  const { rt, out } = await start(path.join(dir, 'echo.lua'));
  rt.open();
  assert.equal(rt.process(batchOf(PACKETS)), PACKETS.length);
  assert.deepEqual(out().stdout, Buffer.concat(PACKETS));
});

test('io.write keeps order and C formats across its buffer: numbers, huge strings, a bad argument after good ones', async () => {
  const dir = tree({
    'w.lua': `buffer = function(p)
        io.write('a', 1, ' ', 1.0, ' ', 2.5, ' ', -0.0, ' ', 1e100, ' ', math.mininteger, '\\n')
        io.write(string.rep('x', 20 * 1024 * 1024), '|', 'tail\\n')
        print('p', 1, nil, true)
        io.stdout:write('s'):write('t', '\\n')
        io.write('before', {})
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'w.lua'));
  rt.open();
  rt.process(batchOf([Buffer.from('x')]));
  const o = out();
  const text = o.stdout.toString();
  assert.equal(text.slice(0, 60), `a1 1 2.5 -0 1e+100 -9223372036854775808\n${'x'.repeat(20)}`);
  assert.equal(text.length, 40 + 20 * 1024 * 1024 + 6 + 13 + 3 + 6);
  assert.ok(text.endsWith(`x|tail\np\t1\tnil\ttrue\nst\nbefore`), JSON.stringify(text.slice(-40)));
  assert.match(o.stderr, /w\.lua:6: bad argument #2 to 'write' \(string expected, got table\)/);
});

test('the packet string has the captured length, first byte included, and behaves like the original byte table', async () => {
  const dir = tree({
    't.lua': `
      buffer = function(p)
        local s, n = '', 0
        for k, v in pairs(p) do n = n + 1; assert(k == n); s = s .. string.char(v) end
        assert(s == p and #p == n and p[1] == string.byte(p, 1))
        local ip = 0
        for i, v in ipairs(p) do ip = i end
        assert(ip == #p)
        io.write(#p, ' ', p[1], ' ', riff.packet.caplen, ' ', riff.packet.len, ' ', riff.packet.sec, ' ',
          riff.packet.nsec, ' ', riff.packet.linktype, ' ', riff.packet.iface, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 't.lua'));
  rt.open();
  rt.process(batchOf(PACKETS));
  assert.equal(
    out().stdout.toString(),
    '256 0 256 260 1504850400 500000000 1 0\n256 255 256 260 1504850401 500000000 1 0\n' +
      '1 0 1 5 1504850402 500000000 1 0\n8 0 8 12 1504850403 500000000 1 0\n',
  );
});

test("string.find runs on the SIMD memchr and riff's pattern search, and finds what a byte-by-byte search finds", async () => {
  const dir = tree({
    'find.lua': `buffer = function(p)
        local bad, n = 0, 0
        local function check(s, c, init, want)
          n = n + 1
          if string.find(s, c, init, true) ~= want then bad = bad + 1 end
        end
        -- the packet holds every byte value once
        for c = 0, 255 do
          for init = 1, #p + 1, 3 do check(p, string.char(c), init, c + 1 >= init and c + 1 or nil) end
        end
        -- every length, position and start across the 16-byte steps and the tail
        for len = 0, 70 do
          for _, c in ipairs{ "\\0", "p", "\\128", "\\255" } do
            for pos = 0, len do
              local s = string.rep("x", len)
              if pos > 0 then s = s:sub(1, pos - 1) .. c .. s:sub(pos + 1) end
              local twice = pos > 0 and s:sub(1, len - 1) .. c or s
              for init = 1, 5 do
                check(s, c, init, pos >= init and pos or nil)
                check(twice, c, init, pos > 0 and (pos >= init and pos or len >= init and len) or nil)
                check(s .. "pcap" .. s, "pcap", init, len + 1 >= init and len + 1 or nil)
              end
            end
          end
        end
        -- longer patterns (riff's own search in lmemfind): near misses on
        -- the first one and two bytes, matches at every position, across
        -- the 16-byte steps and the tail, plain and pattern forms
        local function ref(s, pat, init)
          for i = init, #s - #pat + 1 do
            if s:sub(i, i + #pat - 1) == pat then return i end
          end
          return nil
        end
        for _, pat in ipairs{ "pc", "pca", "pcap", "ppc", "pcapPCAP\\0\\255pcapxyz!" } do
          for _, fill in ipairs{ "x", "p", "pc", "pcapc", "\\0" } do
            for len = 0, 40 do
              local base = fill:rep(len):sub(1, len)
              for pos = 0, len do
                local s = base
                if pos > 0 then s = (base:sub(1, pos - 1) .. pat .. base:sub(pos + #pat)):sub(1, math.max(len, pos - 1)) end
                for init = 1, 2 do
                  local want = ref(s, pat, init)
                  n = n + 2
                  if string.find(s, pat, init, true) ~= want then bad = bad + 1 end
                  if string.find(s, pat, init) ~= want then bad = bad + 1 end
                end
              end
            end
          end
        end
        io.write(bad, " wrong of ", n, "\\n")
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'find.lua'), { budget: 0 });
  assert.equal(patched.memchr, true, 'wasmoon 1.16.0 (the lockfile) has the musl memchr riff replaces');
  assert.equal(patched.find, true, "wasmoon 1.16.0 has the str_find_aux whose search riff replaces");
  rt.open();
  assert.equal(rt.process(batchOf([ALL])), 1);
  assert.equal(out().stderr, '');
  assert.match(out().stdout.toString(), /^0 wrong of \d{5,}\n$/);
});

test('Lua state persists across packets and batches', async () => {
  const dir = tree({ 'n.lua': 'local n = 0\nbuffer = function(p) n = n + 1 io.write(n, "\\n") end' });
  const { rt, out } = await start(path.join(dir, 'n.lua'));
  rt.open();
  rt.process(batchOf(PACKETS.slice(0, 2)));
  rt.process(batchOf(PACKETS.slice(0, 2)));
  assert.equal(out().stdout.toString(), '1\n2\n3\n4\n');
});

test('entry rule (b): a returned pipeline runs per packet, with setup and deinit once', async () => {
  const dir = tree({
    'p.lua': `
      local p = {}
      function p:setup() print('setup') end
      function p:run(data) print('run', #data) end
      function p:deinit() print('deinit') end
      return p`,
  });
  const { rt, out } = await start(path.join(dir, 'p.lua'));
  assert.equal(rt.open(), 'pipeline');
  rt.setup();
  rt.process(batchOf(PACKETS.slice(2, 4)));
  rt.deinit();
  assert.equal(out().stdout.toString(), 'setup\nrun\t1\nrun\t8\ndeinit\n');
});

test('entry rule (c): a returned list of plugins runs in the bundled pipeline, in declared order', async () => {
  const dir = tree({
    'plugin/a.lua': `local a = {}
      function a:setup() print('setup a') end
      function a:init() self.seen = true end
      function a:push(stream) assert(stream.metadata.request.uri == 'http://www.candylab.net') stream.metadata.tag = 'A' end
      function a:match(data) print('a', #data) return nil, {} end
      return a`,
    'plugin/b.lua': `local b = {}
      function b:push(stream) print('b sees', stream.metadata.tag) end
      function b:match(data) print('b', #data) end
      function b:deinit() print('deinit b') end
      return b`,
    'list.lua': 'return { require "plugin.a", require "plugin.b" }',
  });
  const { rt, out } = await start(path.join(dir, 'list.lua'));
  assert.equal(rt.open(), 'plugins');
  rt.setup();
  rt.process(batchOf(PACKETS.slice(2, 3)));
  rt.deinit();
  assert.equal(out().stdout.toString(), 'setup a\na\t1\nb sees\tA\nb\t1\ndeinit b\n');
});

test('a pipeline whose output was replaced calls it with each plugin sink, as the original did', async () => {
  const dir = tree({
    'plugin/a.lua': 'local a = {} function a:match(d) return nil, { who = "a" } end return a',
    'plugin/b.lua': 'local b = {} function b:match(d) return nil, "not a table" end return b',
    'elements.lua': `local pipeline = require "pipeline"
      pipeline:new { require "plugin.a", require "plugin.b" }
      pipeline.output = function(self, list, flg) print("output", list.who, flg) end
      return pipeline`,
  });
  const { rt, out } = await start(path.join(dir, 'elements.lua'));
  rt.open();
  rt.process(batchOf(PACKETS.slice(2, 4)));
  assert.equal(out().stdout.toString(), 'output\ta\t0\noutput\ta\t0\n');
});

test('entry rule (d): the original framework pipeline.lua runs the riff tree around it', async () => {
  const { rt, out } = await start(path.join(FIXTURES, 'original-riff', 'pipeline.lua'));
  assert.equal(rt.open(), 'tree');
  rt.process(batchOf([Buffer.from('GET / HTTP/1.1\r\nUser-Agent: pcap testcase\r\n\r\n'), Buffer.from([0, 1, 2])]));
  const o = out();
  assert.match(o.stderr, /declares no plugins; running the riff tree/);
  assert.deepEqual(
    o.stdout,
    Buffer.concat([
      Buffer.from('GET / HTTP/1.1\r\nUser-Agent: pcap testcase\r\n\r\n\n###########[ OK ]#############\n'),
      Buffer.from([0, 1, 2, 10]),
    ]),
  );
});

test('a script that fits no entry rule is refused with what it must define', async () => {
  const dir = tree({ 'x.lua': 'local y = 1' });
  const { rt } = await start(path.join(dir, 'x.lua'));
  assert.throws(() => rt.open(), (e: Error) => e instanceof ScriptError && /must set a global function buffer/.test(e.message));
});

test('a syntax error names file and line', async () => {
  const dir = tree({ 'bad.lua': 'buffer = function(p)\n  if then\nend' });
  const { rt } = await start(path.join(dir, 'bad.lua'));
  assert.throws(() => rt.open(), (e: Error) => e instanceof ScriptError && /bad\.lua:2: unexpected symbol near 'then'/.test(e.message));
});

test('a user pipeline.lua that requires "pipeline" gets the bundled framework, not itself', async () => {
  const dir = tree({
    'pipeline.lua': `local pipeline = require "pipeline"
      local p = pipeline:new { { match = function(self, d) print('mine', #d) end } }
      return p`,
  });
  const { rt, out } = await start(path.join(dir, 'pipeline.lua'));
  assert.equal(rt.open(), 'pipeline');
  rt.process(batchOf([Buffer.from('xy')]));
  assert.equal(out().stdout.toString(), 'mine\t2\n');
});

test('require returns one value, as in Lua 5.1, and looks beside the script first', async () => {
  const dir = tree({
    'plugin/one.lua': 'return { match = function() end }',
    'r.lua': `
      local t = { require "plugin.one" }
      assert(#t == 1, 'require returned ' .. #t .. ' values')
      local p = require "pipeline"
      assert(type(p.new) == 'function')
      buffer = function() end`,
  });
  const { rt } = await start(path.join(dir, 'r.lua'));
  assert.equal(rt.open(), 'buffer');
});

test('Lua 5.1 names work on 5.4', async () => {
  const dir = tree({
    's.lua': `
      assert(unpack({1, 2, 3}) == 1)
      assert(loadstring('return 7')() == 7)
      assert(table.getn({1, 2, 3}) == 3)
      assert(math.pow(2, 10) == 1024)
      assert(math.mod(7, 3) == 1)
      assert(math.log10(1000) == 3)
      local words = {}
      for w in string.gfind('a b c', '%a') do words[#words + 1] = w end
      assert(#words == 3)
      assert(table.maxn({[1] = 1, [5] = 2}) == 5)
      local m, e = math.frexp(8) assert(m == 0.5 and e == 4)
      assert(math.ldexp(0.5, 4) == 8)
      buffer = function() end`,
  });
  const { rt } = await start(path.join(dir, 's.lua'));
  assert.equal(rt.open(), 'buffer');
});

test('a runtime error in a plugin costs that packet only, with file:line, counted per script', async () => {
  const dir = tree({
    'plugin/boom.lua': `local b = {}
      function b:match(data)
        if #data == 1 then error('boom on a one-byte packet') end
        print('ok', #data)
      end
      return b`,
    'list.lua': 'return { require "plugin.boom" }',
  });
  const { rt, out } = await start(path.join(dir, 'list.lua'));
  rt.open();
  assert.equal(rt.process(batchOf(PACKETS)), 4);
  const o = out();
  assert.equal(o.stdout.toString(), 'ok\t256\nok\t256\nok\t8\n');
  assert.match(o.stderr, /plugin\/boom\.lua:3: boom on a one-byte packet \(packet 3\)/);
  const s = rt.summary();
  assert.equal(s.errors, 1);
  assert.equal(s.processed, 4);
  assert.equal([...s.byScript.keys()].some((k) => k.endsWith('plugin/boom.lua')), true);
});

test('the default pipeline raises the banner for packets holding "pcap"', async () => {
  const { rt, out } = await start(undefined);
  assert.equal(rt.open(), 'default');
  rt.process(batchOf([Buffer.from('no match here'), Buffer.from('User-Agent: pcap testcase')]));
  assert.equal(
    out().stdout.toString(),
    'no match here\nUser-Agent: pcap testcase\n###########[ OK ]#############\n',
  );
});

test('report lines follow each packet with watch.c words, unless quiet', async () => {
  const dir = tree({ 'w.lua': 'buffer = function(p) io.write("L\\n") end' });
  const { rt, out } = await start(path.join(dir, 'w.lua'), { quiet: false });
  rt.open();
  rt.process(batchOf([Buffer.from('abc')]));
  assert.equal(
    out().stdout.toString(),
    'L\nid: 1\nPacket length: 7\nNumber of bytes: 3\nRecieved time: Fri Sep  8 06:00:00 2017\n\n\n',
  );
});

test('runaway code costs one budget per packet; catching the budget error does not escape it', async () => {
  const dir = tree({
    'loop.lua': `local n = 0
      buffer = function(p)
        n = n + 1
        if n % 2 == 1 then while true do end end
        if n == 2 then while true do pcall(function() while true do end end) end end
        io.write('ok ', n, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'loop.lua'), { budget: 200_000 });
  rt.open();
  assert.equal(rt.process(batchOf([Buffer.from('a'), Buffer.from('b'), Buffer.from('c'), Buffer.from('d')])), 4);
  const o = out();
  assert.equal(o.stdout.toString(), 'ok 4\n');
  assert.match(o.stderr, /loop\.lua:4: budget exceeded \(200000 Lua instructions; raise it with --lua-budget N/);
  assert.equal(rt.summary().errors, 3);
});

test('a runaway loop that indexes the packet like the old byte table is named at its own line', async () => {
  // p[i] runs the sandbox's string __index; budgets a few instructions apart
  // run out in it and in the loop's own line.
  const dir = tree({ 'idx.lua': 'buffer = function(p)\n  local s = 0\n  while true do s = s + p[1] end\nend' });
  for (let budget = 5000; budget < 5012; budget++) {
    const { rt, out } = await start(path.join(dir, 'idx.lua'), { budget });
    rt.open();
    assert.equal(rt.process(batchOf([Buffer.from('abc')])), 1);
    assert.match(out().stderr, new RegExp(`idx\\.lua:3: budget exceeded \\(${budget} Lua instructions`));
  }
});

// Each packet's runaway code lives in a coroutine a different way; the
// budget must reach it and the packet must fail, whoever catches what.
const COROUTINE_LOOPS = `local n = 0
  buffer = function(p)
    n = n + 1
    if n == 1 then print(coroutine.resume(coroutine.create(function() while true do end end))) end
    if n == 3 then local f = coroutine.wrap(function() while true do end end) print(pcall(f)) end
    if n == 5 then while true do pcall(coroutine.resume, coroutine.create(function() while true do end end)) end end
    if n == 7 then local co = coroutine.wrap(function() while true do coroutine.yield(1) end end) while true do co() end end
    if n == 9 then
      local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      print(co(), co(), co())
    end
    io.write('ok ', n, '\\n')
  end`;

test('runaway code inside coroutines meets the budget too, and the packet fails', async () => {
  const dir = tree({ 'co.lua': COROUTINE_LOOPS });
  const { rt, out } = await start(path.join(dir, 'co.lua'), { budget: 200_000 });
  rt.open();
  assert.equal(rt.process(batchOf(Array.from({ length: 10 }, () => Buffer.from('x')))), 10);
  const o = out();
  assert.equal(o.stdout.toString(), 'ok 2\nok 4\nok 6\nok 8\n1\t2\t3\nok 9\nok 10\n');
  for (const [line, id] of [[4, 1], [5, 3], [6, 5], [7, 7]]) {
    assert.match(o.stderr, new RegExp(`co\\.lua:${line}: budget exceeded \\(200000 Lua instructions; [^\\n]*\\(packet ${id}\\)`));
  }
  assert.equal(rt.summary().errors, 4);
});

test('host functions called from a coroutine answer on its own stack', async () => {
  const dir = tree({
    'data.txt': 'DATA',
    'mod.lua': 'return "MOD"',
    'co.lua': `buffer = function(p)
        local co = coroutine.wrap(function()
          io.write(string.rep('w', 70000), '\\n') -- big enough to flush from inside
          coroutine.yield(require('mod'), riff.read('data.txt'))
        end)
        local a, b = co()
        io.write(a, ' ', b, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'co.lua'));
  rt.open();
  assert.equal(rt.process(batchOf([Buffer.from('x')])), 1);
  const o = out();
  assert.equal(o.stderr, '');
  assert.equal(o.stdout.toString(), 'w'.repeat(70000) + '\nMOD DATA\n');
});

test('lazy budget: in batches the hook is off until a watchdog on another thread arms it', async () => {
  const dir = tree({
    'lazy.lua': `local n = 0
      buffer = function(p)
        n = n + 1
        local x = 0
        if n == 1 then for i = 1, 300000 do x = x + i end end -- over budget, but nobody arms the hook
        if n == 3 then while true do end end
        io.write('ok ', n, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'lazy.lua'), { budget: 200_000, lazyBudget: true });
  rt.open();
  assert.ok(rt.watch, 'the lua_State layout check passed');
  assert.equal(rt.process(batchOf([Buffer.from('a'), Buffer.from('b')])), 2);
  assert.equal(out().stdout.toString(), 'ok 1\nok 2\n');
  // The watchdog runs where a worker's would, on another thread, over the VM's shared memory.
  const dog = new Worker(
    `const { workerData } = require('node:worker_threads');
     import(workerData.url).then(({ Watchdog }) => { const dog = new Watchdog([workerData.target]); setInterval(() => dog.check(), 10); });`,
    { eval: true, workerData: { url: pathToFileURL(path.join(ROOT, 'dist', 'src', 'vm', 'watchdog.js')).href, target: rt.watch } },
  );
  try {
    await new Promise((r) => dog.once('online', r));
    assert.equal(rt.process(batchOf([Buffer.from('c'), Buffer.from('d')])), 2);
  } finally {
    await dog.terminate();
  }
  const o = out();
  assert.equal(o.stdout.toString(), 'ok 1\nok 2\nok 4\n');
  assert.match(o.stderr, /lazy\.lua:6: budget exceeded \(200000 Lua instructions/);
});

test('lazy budget: the watchdog arms a VM that stays on one packet, not one whose long batch moves on', () => {
  // A VM's watch block, lua_State and the driver's `cur` in a shared memory,
  // laid out as the runtime reports them; the watchdog only reads and writes words.
  const memory: WasmMemory = { buffer: new SharedArrayBuffer(65536) as unknown as ArrayBuffer };
  const dv = new DataView(memory.buffer);
  const i32 = new Int32Array(memory.buffer);
  const L = 1024, block = 2048, cur = 3072;
  const target = { memory, L, hook: 77, tick: 10000, block, cur, processed: 0, packetErrors: 0 };
  const armed = () => dv.getInt32(L + LS.hookmask, true) !== 0;
  const at = (i: number) => {
    dv.setInt32(cur, i, true);
    dv.setUint8(cur + 8, 3); // an integer TValue
  };
  i32[(block >> 2) + BLOCK_SEQ] = 1; // inside Lua, batch 1
  i32[(block >> 2) + BLOCK_PHASE] = PHASE_BATCH;
  const dog = new Watchdog([target]);
  at(1);
  dog.check();
  for (let i = 2; i < 50; i++) {
    at(i); // the same batch at every look, a new packet each time
    dog.check();
    assert.equal(armed(), false, `armed while packets moved (look ${i})`);
  }
  dog.check(); // packet 49 again: it has run from one look to the next
  assert.equal(armed(), true);
  assert.equal(dv.getInt32(L + LS.hook, true), 77);
  assert.equal(dv.getInt32(L + LS.basehookcount, true), 10000);

  // Where the driver's cur was not found, a long batch is armed, as before.
  dv.setInt32(L + LS.hookmask, 0, true);
  const blind = new Watchdog([{ ...target, cur: 0 }]);
  blind.check();
  assert.equal(armed(), false);
  blind.check();
  assert.equal(armed(), true);
});

test('the heap cap turns huge allocations into a Lua error for that packet, and the VM keeps working', async () => {
  const dir = tree({
    'mem.lua': `local keep = {}
      buffer = function(p)
        if p == 'big' then local s = string.rep('x', 300 * 1024 * 1024) end
        if p == 'grow' then while true do keep[#keep + 1] = string.rep('y', 1024 * 1024) .. #keep end end
        if p == 'deep' then local function f() return 1 + f() end f() end
        keep = {}
        collectgarbage()
        io.write('alive ', p, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'mem.lua'), { memoryLimit: 64 << 20, budget: 0 });
  rt.open();
  rt.process(batchOf(['big', 'ok1', 'grow', 'ok2', 'deep', 'ok3'].map((s) => Buffer.from(s))));
  const o = out();
  assert.equal(o.stdout.toString(), 'alive ok1\nalive ok2\nalive ok3\n');
  assert.match(o.stderr, /mem\.lua:3: not enough memory \(Lua heap limit reached; raise it with --lua-memory\) \(packet 1\)/);
  assert.match(o.stderr, /mem\.lua:4: not enough memory \(Lua heap limit reached; raise it with --lua-memory\) \(packet 3\)/);
  assert.match(o.stderr, /stack overflow/);
  assert.ok(rt.memoryUsed() < 64 << 20);
});

test('VMs of a module warmed by a throwaway instance (vm.ts warmUp, on the capture thread) run as any: output, host functions, the heap cap', async () => {
  const module = await compiledLua();
  // (Under a limit on the address space it declines: nothing to test then.)
  assert.equal(warmUp(module), addressSpaceUnlimited());
  assert.equal(warmUp(module), addressSpaceUnlimited());
  const dir = tree({
    'warm.lua': `buffer = function(p)
        if p == 'big' then local s = string.rep('x', 300 * 1024 * 1024) end
        io.write('alive ', p, '\\n')
      end`,
  });
  for (let i = 0; i < 2; i++) {
    const { rt, out } = await start(path.join(dir, 'warm.lua'), { memoryLimit: 64 << 20, budget: 0 }, await LuaVM.create({ memoryLimit: 0 }, module));
    rt.open();
    assert.equal(rt.process(batchOf(['ok1', 'big', 'ok2'].map((s) => Buffer.from(s)))), 3);
    const o = out();
    assert.equal(o.stdout.toString(), 'alive ok1\nalive ok2\n');
    assert.match(o.stderr, /warm\.lua:2: not enough memory \(Lua heap limit reached; raise it with --lua-memory\) \(packet 2\)/);
  }
});

test("a memory error names its chunk as Lua's own errors do: a long path cut to its end, a loaded string as [string ...]", async () => {
  const dir = tree({
    'a-directory-with-a-rather-long-name/and-one-more-level-below-it/main.lua': `buffer = function(p)
        if p == 'mem' then local s = string.rep('x', 1e9) end
        if p == 'err' then error('plain') end
        local f = load('local x = 1\\nif ... then return string.rep("x", 1e9) end error("plain")')
        f(p == 'loadmem')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'a-directory-with-a-rather-long-name/and-one-more-level-below-it/main.lua'));
  rt.open();
  rt.process(batchOf(['mem', 'err', 'loadmem', 'loaderr'].map((s) => Buffer.from(s))));
  const where = out().stderr.trim().split('\n').map((l) => /^riff: (.*?:\d+): /.exec(l)?.[1]);
  assert.equal(where.length, 4, out().stderr);
  assert.match(where[0]!, /^\.\.\..*\/main\.lua:2$/, 'cut to its end, as Lua cuts it');
  assert.equal(where[0]!.replace(/:\d+$/, ''), where[1]!.replace(/:\d+$/, ''), "the same chunk name as Lua's own error");
  assert.equal(where[2], '[string "local x = 1..."]:2');
  assert.equal(where[3], '[string "local x = 1..."]:2');
});

test("a refusal to grow the Lua stack itself (its frames hold offsets meanwhile) names the script's line, in the main thread and in a coroutine", async () => {
  const locals = Array.from({ length: 190 }, (_, i) => `a${i + 1}`).join(', ');
  const dir = tree({
    'stack.lua': `local function deep(n)
        local ${locals}
        return 1 + deep(n + 1)
      end
      buffer = function(p)
        if p == 'main' then deep(1) end
        if p == 'co' then coroutine.wrap(function() deep(1) end)() end
        io.write('alive ', p, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'stack.lua'), { memoryLimit: 12 << 20, budget: 0 });
  // Count the refusals that were of the main thread's stack block.
  let stackRefusals = 0;
  const told = rt.vm.onRefused;
  rt.vm.onRefused = (ptr) => {
    if (ptr && ptr === new DataView(rt.vm.wasm.memory.buffer).getUint32(rt.vm.L + 28, true)) stackRefusals++;
    told(ptr);
  };
  rt.open();
  rt.process(batchOf(['main', 'ok1', 'co', 'ok2'].map((s) => Buffer.from(s))));
  const o = out();
  assert.ok(stackRefusals > 0, 'the main thread stack growth was refused');
  assert.equal(o.stdout.toString(), 'alive ok1\nalive ok2\n');
  const lines = o.stderr.trim().split('\n');
  assert.equal(lines.length, 2, o.stderr);
  assert.match(lines[0], /stack\.lua:3: not enough memory \(Lua heap limit reached; raise it with --lua-memory\) \(packet 1\)$/);
  assert.match(lines[1], /stack\.lua:3: not enough memory \(Lua heap limit reached; raise it with --lua-memory\) \(packet 3\)$/);
  // The reserve riff's bookkeeping took past the cap was given back.
  assert.equal(rt.vm.memoryLimit, 12 << 20);
  assert.equal(rt.summary().packetErrors, 2);
  assert.equal(rt.vm.memoryLimit, 12 << 20);
});

test("Lua's allocator keeps every block's bytes through growth, shrinking and reuse, and counts what Lua counts", async () => {
  // Sizes cross the free lists' 8-byte classes and their 2048-byte edge
  // (strings and table parts grow from small blocks to malloc's and back).
  const dir = tree({
    'alloc.lua': `buffer = function(p)
        local strs = {}
        for round = 1, 3 do
          for n = 0, 2200, 7 do strs[#strs + 1] = string.rep(string.char(65 + n % 26), n) .. '|' .. n end
          local t = {}
          for i = 1, 700 do t[i] = i * 3 t['k' .. i] = i end
          for i = 1, 700 do assert(t[i] == i * 3 and t['k' .. i] == i, 'table entry ' .. i) end
          for i = 700, 1, -1 do t[i] = nil t['k' .. i] = nil end
          t.last = round
          collectgarbage()
          assert(next(t) == 'last' and t.last == round)
          for j = #strs, 1, -1 do
            local n = tonumber(strs[j]:match('|(%d+)$'))
            assert(strs[j] == string.rep(string.char(65 + n % 26), n) .. '|' .. n, 'string ' .. j)
            if j % 3 == round % 3 then table.remove(strs, j) end
          end
          collectgarbage()
        end
        io.write('ok ', #p, '\\n')
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'alloc.lua'), { budget: 0 });
  rt.open();
  rt.process(batchOf(['a', 'bb', 'ccc'].map((s) => Buffer.from(s))));
  const o = out();
  assert.equal(o.stderr, '');
  assert.equal(o.stdout.toString(), 'ok 1\nok 2\nok 3\n');
  rt.vm.load(Buffer.from('return collectgarbage("count")'), '=count');
  rt.vm.call(0, 1);
  const kb = rt.vm.x.lua_tonumberx(rt.vm.L, -1, 0);
  assert.equal(kb * 1024, rt.memoryUsed());
  rt.vm.x.lua_settop(rt.vm.L, -2);
});

test('the sandbox: no host files, processes, environment, binary chunks or debug hooks', async () => {
  const dir = tree({
    'secret.txt': 'secret',
    'plugin/ok.lua': 'return 1',
    'box.lua': `
      local function refused(f, ...)
        local ok, err = pcall(f, ...)
        assert(not ok, 'allowed')
        return tostring(err)
      end
      local msgs = {
        refused(io.open, 'secret.txt'),
        refused(io.lines, '/etc/passwd'),
        refused(dofile, '/etc/passwd'),
        refused(loadfile, '/etc/passwd'),
        refused(os.execute, 'true'),
        refused(io.popen, 'ls'),
        refused(os.exit, 0),
        refused(os.getenv, 'HOME'),
        refused(os.remove, 'secret.txt'),
        refused(os.rename, 'a', 'b'),
        refused(os.tmpname),
        refused(string.dump, function() end),
        refused(require, '..secret'),
        refused(require, 'nonexistent.module'),
        refused(load, 'return 1', 'x', 'b'),
      }
      assert(load(string.char(27) .. 'Lua') == nil, 'binary chunk loaded')
      assert(debug.sethook == nil and debug.getlocal == nil and debug.setupvalue == nil)
      assert(package.loadlib == nil or not pcall(package.loadlib, 'x', 'y'))
      assert(require('plugin.ok') == 1)
      assert(type(os.time()) == 'number' and type(os.clock()) == 'number' and type(os.date()) == 'string')
      assert(string.upper('a') == 'A' and math.floor(1.5) == 1 and utf8.char(72) == 'H' and coroutine.wrap(function() return 1 end)() == 1)
      for _, m in ipairs(msgs) do print((m:gsub('\\n.*', ''))) end
      buffer = function() end`,
  });
  const { rt, out } = await start(path.join(dir, 'box.lua'));
  assert.equal(rt.open(), 'buffer');
  const lines = out().stdout.toString().trim().split('\n');
  assert.equal(lines.length, 15);
  for (const l of lines.slice(0, 12)) assert.match(l, /not available in riff's sandbox: /);
  assert.match(lines[12], /module '\.\.secret' not found: require takes a dotted name/);
  assert.match(lines[13], /module 'nonexistent\.module' not found \(riff looks only in the script's directory and riff's lua\/\)/);
  assert.match(lines[14], /only text chunks are allowed/);
});
