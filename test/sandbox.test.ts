// The sandbox's promise that nothing of riff's is within a plugin's reach
// (issue 14): a walk of everything reachable from a plugin's environment,
// made from the privileged side, and the concrete attacks, each of which must
// end in a Lua error counted against its packet while riff goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Batch, stampIds } from '../src/capture/batch.js';
import { Runtime, type RuntimeOptions } from '../src/vm/runtime.js';
import { setWasmFlags } from '../src/vm/wasm.js';
import { riff, tree, FIXTURES } from './helpers.js';

setWasmFlags();

async function start(script: string, opts: Partial<RuntimeOptions> = {}) {
  const chunks: Buffer[] = [];
  let err = '';
  const rt = await Runtime.create({
    script,
    quiet: true,
    verbose: false,
    strict: false,
    budget: 1_000_000,
    setupBudget: 100_000_000,
    memoryLimit: 64 << 20,
    version: 'test',
    inspectable: true,
    write: (fd, b) => (fd === 1 ? chunks.push(Buffer.from(b)) : (err += Buffer.from(b).toString())),
    ...opts,
  });
  return { rt, out: () => ({ stdout: Buffer.concat(chunks).toString(), stderr: err }) };
}

function batchOf(n: number): Batch {
  const b = new Batch(1 << 16);
  for (let i = 0; i < n; i++) b.push(1504850400 + i, 0, Buffer.from('packet'), 0, 6, 6, 1, 0);
  stampIds(b, 1);
  return b;
}

// Runs with the privileged objects (Runtime.inspect): installs a probe the
// plugin calls from inside a packet; it notes every function on the stack
// at that moment, as debug.getinfo(level, "f") would hand them out.
const INSTALL_PROBE = `
  local debug = ...
  local frames = {}
  debug.getregistry()["riff.test.frames"] = frames
  _G.__probe = function()
    for level = 2, 100 do
      local info = debug.getinfo(level, "fS")
      if not info then break end
      frames[#frames + 1] = { f = info.func, src = info.short_src }
    end
  end
  return ""`;

// The walk. Forbidden: the registry; riff's host table, the sandbox's
// handles and the driver's api, and every function in them except the doors
// (the host functions a script's functions hold, each safe with any
// arguments: test 'every door ...' below); the driver's internals; the debug
// library beyond traceback; every standard function the sandbox withdrew or
// replaced (loaders, host files, processes, the real io streams), except the
// four that wrappers hold to add the budget's bookkeeping: setmetatable
// (finalizers), coroutine.create, coroutine.resume and coroutine.close (the
// hook, the watchdog). Reaching those needs debug.getupvalue, itself forbidden here;
// what they would give is a finalizer or a coroutine outside the
// instruction budget, which the wall-clock limit still ends.
//
// Reachable: from _G, through table keys and values, metatables (even
// protected ones), upvalues of every function (what debug.getupvalue would
// see), and the string metatable and those of the other basic types.
const WALK = `
  local debug, orig, host, rt, api = ...
  local getupvalue, getmeta = debug.getupvalue, debug.getmetatable
  _G.__probe = nil
  local F = {}
  local function forbid(v, label)
    local t = type(v)
    if (t == "table" or t == "function" or t == "userdata" or t == "thread") and F[v] == nil then F[v] = label end
  end
  -- Host functions a plugin's functions may hold: the doors riff hands out
  -- (riff.counter's slot and total lookups among them).
  local DOORS = { write = true, read = true, record = true, module = true, load = true, adopt = true,
    enter = true, out_write = true, counter_slot = true, counter_others = true, quic_initial = true }
  local door = {}
  for k in pairs(DOORS) do assert(host[k], "no host." .. k) door[host[k]] = true end
  forbid(debug.getregistry(), "the registry")
  forbid(host, "riff's host table")
  forbid(rt, "the sandbox's handles")
  forbid(api, "the driver's api")
  for k, v in pairs(host) do if not DOORS[k] then forbid(v, "host." .. k) end end
  -- (rt.loading is require's stack of file names, shared with the driver: data.)
  for k, v in pairs(rt) do if not door[v] and k ~= "loading" then forbid(v, "sandbox handle " .. k) end end
  for k, v in pairs(api) do forbid(v, "api." .. k) end
  forbid(orig.debug, "the debug library")
  for k, v in pairs(orig.debug) do if k ~= "traceback" then forbid(v, "debug." .. k) end end
  local HELD = { ["_G.setmetatable"] = true, ["coroutine.create"] = true, ["coroutine.resume"] = true, ["coroutine.close"] = true }
  for lib, t in pairs(orig) do
    local now = lib == "_G" and _G or _G[lib]
    for k, v in pairs(t) do
      if lib ~= "debug" and (type(now) ~= "table" or rawget(now, k) ~= v) and not HELD[lib .. "." .. k] then
        forbid(v, lib .. "." .. k .. " as Lua had it")
      end
    end
  end
  -- The driver's own functions and tables, by name, wherever they are upvalues.
  local INTERNAL = { arm = 1, hook = 1, run = 1, handed = 1, msgh = 1, report_error = 1, run_file = 1,
    call_hook = 1, finalize = 1, describe = 1, driver_frames = 1, opts = 1, forget_coroutines = 1,
    sethook = 1, gethook = 1, getinfo = 1, rawgetmeta = 1, take_due = 1, use_pipeline = 1 }
  local visited = {}
  local function internals(f)
    if visited[f] then return end
    visited[f] = true
    for i = 1, 255 do
      local name, v = getupvalue(f, i)
      if name == nil then break end
      if INTERNAL[name] then forbid(v, "the driver's " .. name) end
      if type(v) == "function" and INTERNAL[name] then internals(v) end
    end
  end
  for _, v in pairs(api) do internals(v) end

  local seen, found, queue, qn, qi = {}, {}, {}, 0, 0
  local function push(v, where)
    local t = type(v)
    if (t == "table" or t == "function" or t == "userdata" or t == "thread") and not seen[v] then
      seen[v] = where
      qn = qn + 1
      queue[qn] = v
    end
  end
  local function keyname(k) return type(k) == "string" and k or ("[" .. type(k) .. "]") end
  push(_G, "_G")
  push(getmeta(""), "<string metatable>")
  for _, v in ipairs { 0, true, print } do push(getmeta(v), "<" .. type(v) .. " metatable>") end
  while qi < qn do
    qi = qi + 1
    local v = queue[qi]
    local where = seen[v]
    if F[v] then
      found[#found + 1] = F[v] .. " at " .. where
    else
      local mt = getmeta(v)
      if mt ~= nil then push(mt, where .. "<metatable>") end
      if type(v) == "table" then
        for k, x in next, v do
          push(k, where .. "<key>")
          push(x, where .. "." .. keyname(k))
        end
      elseif type(v) == "function" then
        for i = 1, 255 do
          local name, x = getupvalue(v, i)
          if name == nil then break end
          push(x, where .. "<upvalue " .. (name ~= "" and name or tostring(i)) .. ">")
        end
      end
    end
  end
  -- What getinfo(level, "f") would have handed out from inside the plugin:
  -- riff's frames among them must be out of reach.
  local frames = debug.getregistry()["riff.test.frames"] or {}
  local nriff = 0
  for _, fr in ipairs(frames) do
    if fr.src:find("riff/driver.lua", 1, true) or fr.src:find("riff/sandbox.lua", 1, true) then
      nriff = nriff + 1
      if seen[fr.f] then found[#found + 1] = "a frame of " .. fr.src .. " at " .. seen[fr.f] end
    end
  end
  return table.concat(found, "\\n") .. "\\n#frames " .. #frames .. " riff " .. nriff .. " reached " .. qn`;

// A plugin that touches much of what there is: the bundled pipeline, the
// protocol toolkit, riff.emit, coroutines, load with an environment,
// finalizers; it keeps a coroutine and its own tables in globals.
const BUSY_PLUGIN = `
  local packet = require "proto.packet"
  local tcp = require "flow.tcp"
  local record = require "riff.record"
  kept = { co = coroutine.create(function() coroutine.yield(1) end), f = load("return x", "c", "t", { x = 1 }) }
  coroutine.resume(kept.co)
  local plugin = {}
  function plugin:match(p)
    if __probe then __probe() end
    setmetatable({}, { __gc = function() end })
    local w = coroutine.wrap(function() return packet(p, 1) end)
    w()
    riff.emit("t", record.array({ 1 }))
    return nil, p
  end
  return { plugin }`;

test('nothing of riff\'s is reachable from a plugin: globals, package.loaded, metatables, upvalues, stack', async () => {
  const dir = tree({ 'busy.lua': BUSY_PLUGIN });
  const { rt, out } = await start(path.join(dir, 'busy.lua'), { record: () => {} });
  rt.open();
  rt.setup();
  rt.inspect(INSTALL_PROBE);
  assert.equal(rt.process(batchOf(3)), 3);
  assert.equal(out().stderr, '');
  const report = rt.inspect(WALK);
  const [found, tail] = report.split('\n#frames ');
  assert.equal(found, '', `riff internals reachable from the plugin:\n${found}`);
  // The probe saw the driver's frames below the plugin, and the walk covered a lot.
  const [frames, , riffFrames, , reached] = tail.split(' ').map(Number);
  assert.ok(frames > 3 && riffFrames >= 2, tail);
  assert.ok(reached > 300, tail);
});

test('the walk fails when an internal is put in reach (it can catch what it looks for)', async () => {
  const dir = tree({ 'p.lua': 'buffer = function() end' });
  for (const leak of [
    // debug.getupvalue back in the plugin's debug table
    'local debug = ... _G.debug.getupvalue = debug.getupvalue',
    // the host table in package.loaded
    'local _, _, host = ... package.loaded.riffhost = host',
    // a driver function held by a public one
    'local _, _, _, _, api = ... local b = api.batch riff.helper = function() return b end',
    // the real loader
    'local _, orig = ... rawset(_G, "loadx", orig._G.load)',
  ]) {
    const { rt } = await start(path.join(dir, 'p.lua'));
    rt.open();
    rt.inspect(leak + '\nreturn ""');
    const [found] = rt.inspect(WALK).split('\n#frames ');
    assert.notEqual(found, '', `not caught: ${leak}`);
  }
});

test('every door takes junk arguments as a Lua error or an answer, never a crash', async () => {
  const dir = tree({ 'p.lua': 'buffer = function() end' });
  let records = 0;
  const { rt } = await start(path.join(dir, 'p.lua'), { record: () => records++ });
  rt.open();
  const report = rt.inspect(`
    local _, _, host = ...
    local junk = { nil, true, 0, -1, 2^53, math.huge, 0/0, "", ("x"):rep(1 << 16), "\\0\\255", {}, print,
      coroutine.create(print), setmetatable({}, { __tostring = function() error("no") end }) }
    local calls = 0
    for _, name in ipairs { "write", "read", "record", "module", "load", "adopt", "enter", "out_write", "out_pending", "interrupted",
        "counter_slot", "counter_others", "counter_publish", "quic_initial" } do
      local f = host[name]
      for i = 1, #junk + 1 do
        for j = 1, #junk + 1 do
          calls = calls + 1
          pcall(f, junk[i], junk[j])
          if name == "quic_initial" then pcall(f, junk[i], 1, junk[j], junk[i]) end
        end
        pcall(f)
      end
    end
    return tostring(calls)`);
  assert.ok(Number(report) > 1000);
  assert.equal(records, 0, 'junk passed as a record');
  // Still working.
  assert.equal(rt.process(batchOf(2)), 2);
});

const ATTACKS = `
  local n = 0
  buffer = function(p)
    n = n + 1
    if n == 1 then package.loaded.debug.sethook() end
    if n == 2 then debug.getinfo(1, "f") end
    if n == 3 then (package.loaded.debug.getregistry or error("no registry"))() end
    if n == 4 then require "riff.driver" end
    if n == 5 then require "riff.sandbox" end
    if n == 6 then assert(load(string.char(27) .. "Lua\\84\\0")) end
    if n == 7 then load("return 1", "x", "b") end
    if n == 8 then setmetatable(riff.packet, {}) end
    if n == 9 then getmetatable("").__index = nil end
    if n == 10 then setmetatable(io.stdout, {}) end
    if n == 11 then
      -- A coroutine made after coroutine.create is replaced still runs under the budget.
      coroutine.create = function() return 1 end
      coroutine.wrap(function() while true do end end)()
    end
    if n == 12 then local f = coroutine.wrap(function() while true do end end) pcall(f) while true do end end
    if n == 13 then
      -- every library in package.loaded, and _ENV games through load
      for name, lib in pairs(package.loaded) do
        if type(lib) == "table" then
          for _, k in ipairs { "sethook", "gethook", "getupvalue", "setupvalue", "getlocal", "getregistry", "getinfo", "upvalueid", "upvaluejoin", "setmetatable" } do
            if name ~= "_G" and rawget(lib, k) ~= nil then error("found " .. name .. "." .. k) end
          end
        end
      end
      local env = load("return _ENV", "e", "t", setmetatable({}, { __index = _G }))()
      assert(env.debug.sethook == nil and env.debug.getinfo == nil)
      local r = require "riff.record"
      for k, v in pairs(r) do if type(v) == "function" then assert(k == "array" or k == "encode" or k == "emitter", k) end end
      error("walked")
    end
    io.write("ok ", n, "\\n")
  end`;

test('the attacks of issue 14 each end in a Lua error on their packet, and riff goes on', async () => {
  const dir = tree({ 'attack.lua': ATTACKS });
  const { rt, out } = await start(path.join(dir, 'attack.lua'), { budget: 200_000 });
  rt.open();
  assert.equal(rt.process(batchOf(15)), 15);
  const o = out();
  assert.equal(o.stdout, 'ok 14\nok 15\n');
  const s = rt.summary();
  assert.equal(s.processed, 15);
  assert.equal(s.packetErrors, 13, o.stderr);
  const lines = o.stderr.trim().split('\n');
  const expect: Array<[number, RegExp]> = [
    [1, /attempt to call a nil value \(field 'sethook'\)/],
    [2, /attempt to call a nil value \(field 'getinfo'\)/],
    [3, /no registry/],
    [4, /module 'riff.driver' is riff's own, not a module a script can load/],
    [5, /module 'riff.sandbox' is riff's own/],
    [6, /attempt to load a binary chunk/],
    [7, /only text chunks are allowed/],
    [8, /cannot change a protected metatable/],
    [9, /attempt to index a boolean value/],
    [10, /cannot change a protected metatable/],
    [11, /budget exceeded/],
    [12, /budget exceeded/],
    [13, /walked/],
  ];
  for (const [id, re] of expect) {
    const line = lines.find((l) => l.endsWith(`(packet ${id})`));
    assert.ok(line, `no error for packet ${id}:\n${o.stderr}`);
    assert.match(line, re);
    assert.match(line, /attack\.lua:\d+: /);
  }
});

test('finalizers run under the budget, whenever their __gc was set, and their errors are counted', async () => {
  const dir = tree({
    'gc.lua': `
      local n, ran = 0, 0
      buffer = function(p)
        n = n + 1
        if n == 1 then setmetatable({}, { __gc = function() while true do end end }) end
        if n == 2 then
          local mt = { __gc = true } -- marked now, the loop put in after
          setmetatable({}, mt)
          mt.__gc = function() local t = {} while true do t[#t + 1] = {} end end
        end
        if n == 3 then setmetatable({}, { __gc = function() error(("e"):rep(1 << 20)) end }) end
        if n == 4 then setmetatable({}, { __gc = function() ran = ran + 1 end }) end
        if n == 5 then io.write("ran ", ran, "\\n") end
        collectgarbage()
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'gc.lua'), { budget: 200_000 });
  rt.open();
  // One packet a batch: finalizers run at the end of each.
  for (let i = 0; i < 5; i++) assert.equal(rt.process(batchOf(1)), 1);
  const o = out();
  assert.equal(o.stdout, 'ran 1\n');
  assert.match(o.stderr, /gc\.lua:5: budget exceeded \(200000 Lua instructions[^\n]*\(__gc\)/);
  assert.match(o.stderr, /gc\.lua:9: budget exceeded[^\n]*\(__gc\)/);
  assert.match(o.stderr, /gc\.lua:11: eeee+\u2026\(104\d+ bytes cut\) \(__gc\)/);
  const s = rt.summary();
  assert.equal(s.errors, 3);
  assert.equal(s.packetErrors, 0);
  assert.ok(rt.memoryUsed() < 32 << 20);
});

test('error values are cut and described safely: huge strings, __tostring that loops, raises or grows', async () => {
  const dir = tree({
    'err.lua': `
      local n = 0
      buffer = function(p)
        n = n + 1
        local k = n % 5
        if k == 0 then error(("x"):rep(1 << 20)) end
        if k == 1 then error(setmetatable({}, { __tostring = function() while true do end end })) end
        if k == 2 then error(setmetatable({}, { __tostring = function() return ("z"):rep(1 << 20) end })) end
        if k == 3 then error(setmetatable({}, { __tostring = function() error("inner") end })) end
        local t = {} t.t = t
        error(t)
      end`,
  });
  const { rt, out } = await start(path.join(dir, 'err.lua'), { budget: 200_000 });
  rt.open();
  assert.equal(rt.process(batchOf(10)), 10);
  const o = out();
  assert.equal(rt.summary().packetErrors, 10);
  assert.ok(o.stderr.length < 12 * 1200, `stderr ${o.stderr.length} bytes`);
  assert.match(o.stderr, /err\.lua:6: x+\u2026\(104\d+ bytes cut\) \(packet 5\)/);
  assert.match(o.stderr, /err\.lua:7: \(error object is a table whose __tostring failed\) \(packet 1\)/);
  assert.match(o.stderr, /err\.lua:8: z+\u2026\(1047552 bytes cut\) \(packet 2\)/);
  assert.match(o.stderr, /err\.lua:9: \(error object is a table whose __tostring failed\) \(packet 3\)/);
  assert.match(o.stderr, /err\.lua:11: \(error object is a table value\) \(packet 4\)/);
});

test('distinct errors are kept up to 1000; more are counted, not kept', async () => {
  const dir = tree({ 'many.lua': 'local n = 0 buffer = function(p) n = n + 1 error("e" .. n) end' });
  const { rt, out } = await start(path.join(dir, 'many.lua'));
  rt.open();
  let done = 0;
  for (let i = 0; i < 3; i++) done += rt.process(batchOf(500));
  assert.equal(done, 1500);
  const o = out();
  assert.equal(rt.summary().errors, 1500);
  const lines = o.stderr.trim().split('\n');
  assert.equal(lines.length, 1001);
  assert.equal(lines.filter((l) => /more than 1000 distinct errors/.test(l)).length, 1);
});

test('through the CLI: a 1 MiB error on every packet is counted per packet, --strict exits non-zero', () => {
  const dir = tree({ 'big.lua': 'buffer = function(p) error(("x"):rep(1 << 20)) end' });
  const http = path.join(FIXTURES, 'http.pcap');
  const r = riff(['-q', '--lua', path.join(dir, 'big.lua'), '-r', http]);
  assert.equal(r.code, 0, r.stderr.slice(-500));
  assert.match(r.stderr, /45 Lua errors/);
  assert.doesNotMatch(r.stderr, /not processed/);
  assert.ok(r.stderr.length < 10_000, `stderr ${r.stderr.length} bytes`);
  const s = riff(['-q', '--strict', '--lua', path.join(dir, 'big.lua'), '-r', http]);
  assert.notEqual(s.code, 0);
});

test('the batch function, should it ever leak, refuses a call from a script (an empty batch once switched the budget off)', async () => {
  const dir = tree({ 're.lua': 'buffer = function(p) pcall(leaked, {}, "", 0) while true do end end' });
  const { rt, out } = await start(path.join(dir, 're.lua'), { budget: 100_000 });
  rt.open();
  rt.inspect('local _, _, _, _, api = ... leaked = api.batch return ""');
  assert.equal(rt.process(batchOf(2)), 2);
  assert.equal(rt.summary().packetErrors, 2);
  assert.match(out().stderr, /re\.lua:1: budget exceeded/);
  assert.equal(rt.process(batchOf(1)), 1);
});
