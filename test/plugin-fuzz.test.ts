// A deterministic fuzzer for the sandbox: hostile Lua plugins, generated from
// a seed, run through the real CLI over real captures with 1 and 2 workers.
//
// Each case is a script returning one or two plugins (modules beside it);
// each plugin carries one to three "atoms" (short hostile snippets from the
// categories of issue 14: riff's internals, finalizers, budget evasion,
// memory, odd error values, output floods) placed at load, in setup, per
// packet or in deinit, sometimes wrapped in pcall, xpcall, a coroutine or a
// load()ed chunk. Per case the test asserts:
// - no hang: riff exits within a deadline (well under the test's timeout);
// - no crash: exit code 0 or 1, no signal;
// - no stack trace, "internal error" or WebAssembly trap on stderr;
// - no escape: probes print ESCAPED when they reach something of riff's (a
//   debug function beyond traceback, the host table, the driver, a binary
//   chunk loader, a writable metatable of riff's objects, a file outside
//   the script's directory) and try to write a marker file outside it;
// - every packet accounted for: passed = processed + errors + ring drops +
//   lost with ended workers + not processed, and "not processed" never
//   with exit 0 (a worker that died silently).
//
// Atoms that only a wall-clock limit can stop (long C calls, finalizers that
// loop) need --lua-timeout; without that option (riff before issue 14's
// host side) those cases are not run and the test says how many it left out.
//
// RIFF_FUZZ_SEED and RIFF_FUZZ_PLUGIN_CASES override the defaults; failing
// cases (scripts, command line, stderr) are kept in a directory named in the
// failure message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CORPUS, FIXTURES, riff, riffAsync, tmpdir } from './helpers.js';
import { Rng } from './rng.js';

const SEED = Number(process.env.RIFF_FUZZ_SEED ?? 0x5eed2026) >>> 0;
const CASES = Number(process.env.RIFF_FUZZ_PLUGIN_CASES ?? 64);
/** Per packet; loading, setup and deinit get 10x (riff's rule). */
const LUA_TIMEOUT_S = 0.5;
/** A case not done by then hangs: a few stuck packets, setup and deinit at 10x the limit, restarts. */
const CASE_LIMIT_MS = 45_000;
const PARALLEL = 2;


// ------------------------------------------------------------------ atoms

type Phase = 'top' | 'setup' | 'packet' | 'deinit';
interface Atom {
  cat: 'internals' | 'finalizer' | 'budget' | 'memory' | 'error' | 'output';
  name: string;
  lua: string;
  /** Only a wall-clock limit stops it (a long C call, a finalizer loop). */
  hard?: boolean;
  /** Raises an error wherever it runs (so setup/deinit errors may add to "Lua errors"). */
  phases?: Phase[];
}

// The probes build the word from two halves, so no source line or error
// message quoting the source can contain it: only a probe that succeeded prints it.
const PRELUDE = `local ESC = "ESC" .. "APED"
local function escaped(what) print(ESC .. " " .. tostring(what)) io.stderr:write(ESC .. " " .. tostring(what) .. "\\n") end
`;

const A: Atom[] = [
  // ---- riff's internals
  {
    cat: 'internals',
    name: 'debug-beyond-traceback',
    lua: `for _, d in ipairs{ debug or {}, (package and package.loaded and package.loaded.debug) or {} } do
  for k in next, d do if k ~= "traceback" then escaped("debug." .. tostring(k)) end end
end`,
  },
  {
    cat: 'internals',
    name: 'walk-reachable',
    // Everything reachable by plain table access and getmetatable: a table
    // holding a debug or driver function by its name is riff's.
    lua: `local BAD = { sethook = 1, gethook = 1, getregistry = 1, getupvalue = 1, setupvalue = 1, upvalueid = 1,
  upvaluejoin = 1, getlocal = 1, setlocal = 1, getuservalue = 1, setuservalue = 1, setcstacklimit = 1,
  lazy_budget = 1, adopt = 1, interrupted = 1, getinfo = 1 }
local seen = {}
local function walk(v, where, depth)
  if depth > 8 or v == nil or seen[v] then return end
  local t = type(v)
  if t ~= "table" and t ~= "userdata" and t ~= "string" and t ~= "function" and t ~= "thread" then return end
  seen[v] = true
  if t == "table" then
    for k, x in next, v do
      if type(k) == "string" and BAD[k] then escaped(where .. "." .. k) end
      walk(x, where .. "." .. (type(k) == "string" and k or "?"), depth + 1)
      if type(k) == "table" then walk(k, where .. "[key]", depth + 1) end
    end
  end
  local mt = getmetatable(v)
  if type(mt) == "table" then walk(mt, "getmetatable(" .. where .. ")", depth + 1) end
end
walk(_ENV, "_ENV", 0) walk(_G, "_G", 0) walk(package and package.loaded, "package.loaded", 0) walk("", "string", 0)
walk(riff, "riff", 0) walk(io and io.stdout, "io.stdout", 0) walk(io and io.stderr, "io.stderr", 0)
walk(coroutine.running(), "thread", 0)
if riff and riff.counter then walk(riff.counter("fuzz"), "riff.counter()", 0) end`,
  },
  {
    cat: 'internals',
    name: 'writable-metatables',
    lua: `local objs = { string = "", riff = riff, packet = riff and riff.packet, worker = riff and riff.worker,
  stdout = io and io.stdout, stderr = io and io.stderr,
  counter = riff and riff.counter and riff.counter("fuzz") }
for name, o in pairs(objs) do
  local mt = getmetatable(o)
  if type(mt) == "table" and pcall(rawset, mt, "__fuzz", true) then rawset(mt, "__fuzz", nil) escaped("writable metatable of " .. name) end
  if type(o) == "table" and name ~= "riff" and name ~= "worker" and pcall(setmetatable, o, {}) then escaped("setmetatable on " .. name) end
end`,
  },
  {
    cat: 'internals',
    name: 'binary-chunks',
    lua: `local BIN = "\\27LuaT\\0\\25\\147\\13\\10\\26\\10\\4\\8\\8xV\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0(w@\\1\\0"
if string.dump then local ok, b = pcall(string.dump, escaped) if ok and type(b) == "string" then escaped("string.dump gave " .. #b .. " bytes") end end
for _, mode in ipairs{ "b", "bt", "t" } do
  local ok, f, e = pcall(load, BIN, "=bin", mode)
  if ok and (type(f) == "function" or (type(e) == "string" and (e:find("precompiled") or e:find("binary format") or e:find("truncated")))) then escaped("binary loader reached (" .. mode .. "): " .. tostring(e)) end
end
local parts, i = { "\\27Lua", "T\\0\\25\\147\\13\\10\\26\\10", "\\4\\8\\8" }, 0
local ok, f, e = pcall(load, function() i = i + 1 return parts[i] end, "=reader")
if ok and (type(f) == "function" or (type(e) == "string" and (e:find("precompiled") or e:find("binary format") or e:find("truncated")))) then escaped("binary loader via reader: " .. tostring(e)) end`,
  },
  {
    cat: 'internals',
    name: 'load-env',
    lua: `local ok, g = pcall(function() return load("return _ENV")() end)
if ok and type(g) == "table" and g ~= _ENV and g ~= _G then
  local d = rawget(g, "debug")
  if type(d) == "table" and rawget(d, "sethook") then escaped("load's default environment holds the real debug") end
end
local ok2, g2 = pcall(function() return load("return ...", "x", "t", setmetatable({}, { __index = function() while true do end end }))(1) end)
local ok3, reg = pcall(function() return load("local a <const> = 1 return _ENV", "=env", "t", nil)() end)`,
  },
  {
    cat: 'internals',
    name: 'require-riff-internals',
    lua: `for _, m in ipairs{ "riff.driver", "riff.sandbox", "riff/driver", "riff..driver", "driver", "sandbox", "riff.host" } do
  local ok, v = pcall(require, m)
  if ok and type(v) == "table" then escaped("require " .. m) end
end
if package and package.loaded then
  for k, v in next, package.loaded do
    if type(k) == "string" and (k:find("driver") or k:find("sandbox")) and type(v) == "table" then escaped("package.loaded." .. k) end
  end
end`,
  },
  {
    cat: 'internals',
    name: 'files-outside',
    // OUTSIDE, MARK and SECRET are set per case (a directory beside the script's, not under it).
    lua: `pcall(function() local f = io.open(MARK, "w") if f then f:write("x") f:close() escaped("io.open for writing") end end)
pcall(function() os.execute("touch " .. MARK) end)
pcall(function() local p = io.popen("touch " .. MARK) if p then p:close() end end)
pcall(function() io.output(MARK) io.write("x") io.output():close() end)
pcall(function() os.rename(SECRET, MARK) end)
pcall(function() os.remove(SECRET) end)
pcall(function() local f = io.open(SECRET) if f then escaped("io.open read " .. tostring(f:read("a"))) end end)
pcall(function() for l in io.lines(SECRET) do escaped("io.lines " .. l) end end)
pcall(function() dofile(SECRET) end)
pcall(function() local f = loadfile(SECRET) if f then f() end end)
for _, p in ipairs{ SECRET, "../outside/secret.lua", "../../outside/secret.lua", "link.lua", "linkdir/secret.lua", "/etc/passwd", "./../outside/secret.lua" } do
  local ok, s = pcall(riff.read, p)
  if ok and type(s) == "string" and (s:find("FUZZSECRET") or s:find("root:")) then escaped("riff.read " .. p) end
end
for _, m in ipairs{ "link", "linkdir.secret", "outside.secret", "..outside.secret", "/tmp/x", SECRET } do pcall(require, m) end
if package then pcall(function() package.path = OUTSIDE .. "/?.lua;" .. tostring(package.path) require("secret") end) end
if package then pcall(function() package.cpath = OUTSIDE .. "/?.so" require("secretc") end) end
if package and package.searchers then pcall(function() table.insert(package.searchers, 1, function(n) return function() escaped("searcher") end end) end) end
if package and package.loadlib then local ok, f = pcall(package.loadlib, "/lib/x86_64-linux-gnu/libc.so.6", "system") if ok and type(f) == "function" then escaped("loadlib") end end`,
  },
  {
    cat: 'internals',
    name: 'coroutine-yield-to-driver',
    lua: `local ok, e = pcall(coroutine.yield, "fuzz")
local co = coroutine.running()
pcall(coroutine.close, co)
pcall(coroutine.resume, co)
local w = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
w() w()`,
  },
  {
    cat: 'internals',
    name: 'env-games',
    lua: `setmetatable(_G, { __index = function(t, k) error("no global " .. tostring(k)) end, __newindex = function(t, k, v) rawset(t, k, v) end })
buffer = nil collect = nil report = nil merge = nil`,
  },
  {
    cat: 'internals',
    name: 'env-loop',
    // riff reads a script's globals (collect, report...): an __index that loops must meet a limit.
    lua: `setmetatable(_G, { __index = function(t, k) while true do end end })`,
  },
  {
    cat: 'internals',
    name: 'replace-std',
    lua: `string.find = function() while true do end end
string.sub = nil table.insert = function() error("gone") end
tostring = function() return ("t"):rep(1 << 20) end
pairs = function() error("pairs gone") end
if io then io.write = function() error("io.write gone") end end`,
  },
  {
    cat: 'internals',
    name: 'collectgarbage-options',
    lua: `for _, o in ipairs{ "stop", "generational", "incremental", "step", "count", "isrunning", "restart", "collect" } do pcall(collectgarbage, o) end
pcall(collectgarbage, "incremental", 1000, 1000, 20)
pcall(collectgarbage, "generational", 100, 100)
pcall(collectgarbage, "setpause", 1000)
pcall(collectgarbage, "setstepmul", 0)
pcall(collectgarbage, "bogus")
pcall(collectgarbage, "step", 1 << 30)
collectgarbage("stop")
local t = {} for i = 1, 2000 do t[i] = ("g"):rep(1024) .. i end`,
  },
  // ---- finalizers
  { cat: 'finalizer', name: 'gc-loop', hard: true, lua: `setmetatable({}, { __gc = function() while true do end end }) collectgarbage()` },
  { cat: 'finalizer', name: 'gc-c-loop', hard: true, lua: `setmetatable({}, { __gc = function() ("a"):rep(3000):find(".-.-.-.-.-.-x") end }) collectgarbage()` },
  {
    cat: 'finalizer',
    name: 'gc-alloc',
    lua: `setmetatable({}, { __gc = function() local t = {} for i = 1, 1e7 do t[i] = ("x"):rep(100) .. i end end }) collectgarbage()`,
  },
  { cat: 'finalizer', name: 'gc-error', lua: `for i = 1, 5 do setmetatable({}, { __gc = function() error("gc boom " .. i) end }) end collectgarbage()` },
  {
    cat: 'finalizer',
    name: 'gc-error-odd-value',
    lua: `setmetatable({}, { __gc = function() error(setmetatable({}, { __tostring = function() while true do end end })) end })
setmetatable({}, { __gc = function() error(("g"):rep(1 << 22)) end }) collectgarbage()`,
  },
  {
    cat: 'finalizer',
    name: 'gc-resurrect',
    lua: `local mt = {} mt.__gc = function(o) RESURRECTED = o setmetatable(o, mt) local k = {} for i = 1, 100 do k[i] = {} end end
for i = 1, 20 do setmetatable({}, mt) end collectgarbage() collectgarbage()`,
  },
  {
    cat: 'finalizer',
    name: 'gc-assigned-after',
    hard: true,
    lua: `local mt = { __gc = true } setmetatable({}, mt) mt.__gc = function() while true do end end collectgarbage()`,
  },
  {
    cat: 'finalizer',
    name: 'gc-in-coroutine',
    hard: true,
    lua: `coroutine.wrap(function() setmetatable({}, { __gc = function() while true do end end }) coroutine.yield() end)() collectgarbage()`,
  },
  {
    cat: 'finalizer',
    name: 'gc-many',
    lua: `local n = 0 for i = 1, 20000 do setmetatable({}, { __gc = function() n = n + 1 local s = ("m"):rep(64) end }) end collectgarbage()`,
  },
  {
    cat: 'finalizer',
    name: 'close-loop',
    lua: `do local x <close> = setmetatable({}, { __close = function() while true do end end }) end`,
  },
  {
    cat: 'finalizer',
    name: 'close-error-in-coroutine',
    lua: `local co = coroutine.create(function() local x <close> = setmetatable({}, { __close = function() error(("c"):rep(1 << 20)) end }) coroutine.yield() end)
coroutine.resume(co) pcall(coroutine.close, co)`,
  },
  // ---- budget evasion
  { cat: 'budget', name: 'pattern', hard: true, lua: `("a"):rep(3000):find(".-.-.-.-.-.-x")` },
  { cat: 'budget', name: 'pattern-gsub', hard: true, lua: `(("a"):rep(2000)):gsub("(.-)(.-)(.-)(.-)x", "%4")` },
  { cat: 'budget', name: 'rep-loop', hard: true, lua: `for i = 1, 1e9 do local s = ("x"):rep(8 << 20) end` },
  {
    cat: 'budget',
    name: 'concat-loop',
    hard: true,
    lua: `local t = {} for i = 1, 20000 do t[i] = ("y"):rep(200) end for i = 1, 1e9 do local s = table.concat(t) end`,
  },
  { cat: 'budget', name: 'recursion', lua: `local function f(n) return f(n + 1) + 1 end f(1)` },
  { cat: 'budget', name: 'c-recursion', lua: `local f f = function() return tostring(setmetatable({}, { __tostring = f })) end f()` },
  { cat: 'budget', name: 'gsub-recursion', lua: `local function f(s) return (s:gsub(".", f)) end f("abc")` },
  { cat: 'budget', name: 'pcall-catch-budget', lua: `while true do pcall(function() while true do end end) end` },
  { cat: 'budget', name: 'xpcall-catch-budget', lua: `while true do xpcall(function() while true do end end, function(m) return m end) end` },
  { cat: 'budget', name: 'error-loop', lua: `while true do pcall(error, "again") end` },
  {
    cat: 'budget',
    name: 'coroutine-games',
    lua: `local co co = coroutine.wrap(function() while true do pcall(coroutine.yield) end end)
while true do co() coroutine.resume(coroutine.create(function() while true do end end)) end`,
  },
  {
    cat: 'budget',
    name: 'coroutine-nest',
    lua: `local function nest(n) return coroutine.wrap(function() if n > 0 then return nest(n - 1)() end while true do end end) end nest(150)()`,
  },
  { cat: 'budget', name: 'sort-spin', lua: `local t = {} for i = 1, 1000 do t[i] = i end table.sort(t, function(a, b) while true do end end)` },
  {
    cat: 'budget',
    name: 'c-odd-calls',
    lua: `pcall(string.format, "%99999d", 1) pcall(string.rep, "x", -1) pcall(string.byte, ("x"):rep(1 << 20), 1, -1)
pcall(table.unpack, {}, 1, 1e8) pcall(string.pack, "i17", 1) pcall(utf8.char, 0x7fffffff, -1) pcall(select, -1e9)
pcall(table.concat, setmetatable({}, { __index = function() while true do end end }), ",", 1, 3)
pcall(table.move, {}, 1, math.maxinteger, 2)`,
  },
  // ---- memory (--lua-memory 64M)
  { cat: 'memory', name: 'table-bomb', lua: `local t = {} while true do t[#t + 1] = ("x"):rep(1 << 20) .. #t end` },
  { cat: 'memory', name: 'string-doubling', lua: `local s = "x" while true do s = s .. s end` },
  { cat: 'memory', name: 'leak-across-packets', lua: `LEAK = LEAK or {} for i = 1, 8 do LEAK[#LEAK + 1] = ("m"):rep(1 << 20) .. #LEAK end` },
  { cat: 'memory', name: 'rep-1g', lua: `local s = ("x"):rep(1 << 30)` },
  { cat: 'memory', name: 'array-bomb', lua: `local t = {} for i = 1, 1e8 do t[i] = i end` },
  { cat: 'memory', name: 'memory-then-catch', lua: `for i = 1, 50 do pcall(function() local s = ("x"):rep(1 << 29) end) end local keep = {} for i = 1, 100 do keep[i] = {} end` },
  // ---- odd error values
  { cat: 'error', name: 'error-1mib', lua: `error(("x"):rep(1 << 20))` },
  { cat: 'error', name: 'error-16mib', lua: `error(("x"):rep(16 << 20))` },
  { cat: 'error', name: 'error-tostring-loop', lua: `error(setmetatable({}, { __tostring = function() while true do end end }))` },
  { cat: 'error', name: 'error-tostring-c-loop', hard: true, lua: `error(setmetatable({}, { __tostring = function() ("a"):rep(3000):find(".-.-.-.-.-.-x") return "x" end }))` },
  { cat: 'error', name: 'error-tostring-raises', lua: `error(setmetatable({}, { __tostring = function() error("in __tostring") end }))` },
  { cat: 'error', name: 'error-tostring-recursive', lua: `local t t = setmetatable({}, { __tostring = function(x) return tostring(x) end }) error(t)` },
  { cat: 'error', name: 'error-tostring-huge', lua: `error(setmetatable({}, { __tostring = function() return ("y"):rep(8 << 20) end }))` },
  { cat: 'error', name: 'error-tostring-not-string', lua: `error(setmetatable({}, { __tostring = function() return {} end, __name = ("n"):rep(1 << 20) }))` },
  {
    cat: 'error',
    name: 'error-odd-values',
    lua: `local vals = { nil, false, print, coroutine.create(print), io and io.stdout, 0/0, math.huge, {} }
local v = vals[(#tostring(riff.packet.id) % 8) + 1] error(v)`,
  },
  { cat: 'error', name: 'error-nothing', lua: `error()` },
  { cat: 'error', name: 'error-in-handler', lua: `xpcall(function() error("a") end, function(m) error(m) end) error("after handler")` },
  { cat: 'error', name: 'error-handler-loops', lua: `xpcall(error, function() while true do end end)` },
  { cat: 'error', name: 'error-handler-huge', lua: `local ok, m = xpcall(function() error("x") end, function() return ("h"):rep(1 << 24) end) error(m)` },
  { cat: 'error', name: 'error-distinct', lua: `error("distinct " .. tostring(math.random()) .. " " .. tostring({}))` },
  { cat: 'error', name: 'error-control-bytes', lua: `error("a\\0b\\27[2J\\r\\n\\255\\n45 packets processed by Lua\\n    at forged (x.js:1:1)", 0)` },
  { cat: 'error', name: 'error-levels', lua: `pcall(error, "x", 100) error("level", 50)` },
  // ---- output floods and odd records
  { cat: 'output', name: 'io-write-flood', lua: `io.write(("z"):rep(4 << 20))` },
  { cat: 'output', name: 'print-flood', lua: `print(("p"):rep(1 << 20)) for i = 1, 2000 do print(i) end` },
  { cat: 'output', name: 'stderr-flood', lua: `io.stderr:write(("e"):rep(1 << 20), "\\n")` },
  {
    cat: 'output',
    name: 'stdout-games',
    lua: `pcall(function() io.stdout:close() end) pcall(function() io.stdout:setvbuf("no") end) pcall(function() io.stdout:seek("set", 0) end)
pcall(function() io.stderr:close() end) pcall(function() io.output(io.stderr) end) pcall(io.close)`,
  },
  {
    cat: 'output',
    name: 'emit-odd-names',
    lua: `riff.emit("odd", { ["a\\0b"] = 1, [""] = 2, select = 3, ['x"y'] = 4, ["a b"] = 5, ["\\255"] = 6, [("k"):rep(5000)] = 7, [1] = 8, [2.5] = 9,
  ["id"] = 10, ["ID"] = 11, ["rowid"] = 12, ["'; DROP TABLE odd; --"] = 13 })`,
  },
  { cat: 'output', name: 'emit-nan', lua: `riff.emit("nan", { a = 0/0, b = 1/0, c = -1/0, d = math.mininteger, e = 2^63, f = -0.0 })` },
  { cat: 'output', name: 'emit-3000-fields', lua: `local t = {} for i = 1, 3000 do t["f" .. i] = i end riff.emit("wide", t)` },
  {
    cat: 'output',
    name: 'emit-cycles',
    lua: `local t = {} t.t = t local d = {} for i = 1, 100000 do d = { d } end
pcall(riff.emit, "cyc", { x = t }) pcall(riff.emit, "deep", { x = d }) riff.emit("cyc2", t)`,
  },
  {
    cat: 'output',
    name: 'emit-odd-values',
    lua: `pcall(riff.emit, "vals", { f = print, co = coroutine.create(print), u = io and io.stdout, big = ("b"):rep(4 << 20) })
pcall(riff.emit, ("T"):rep(10000), { a = 1 }) pcall(riff.emit, "", {}) pcall(riff.emit, nil) pcall(riff.emit, "t", nil) pcall(riff.emit, "a\\0b", { a = 1 })
pcall(riff.emit, "SELECT", { a = 1 }) pcall(riff.emit, "Odd", { a = 1 }) pcall(riff.emit, "odd", { a = "text" })`,
  },
  {
    cat: 'output',
    name: 'emit-metatables',
    lua: `pcall(riff.emit, "mt", setmetatable({}, { __pairs = function() while true do end end }))
pcall(riff.emit, "mt2", setmetatable({ a = 1 }, { __index = function() error("idx") end, __len = function() while true do end end }))
pcall(riff.emit, "mt3", setmetatable({}, { __pairs = function() return function() error("next") end end }))`,
  },
  { cat: 'output', name: 'emit-flood', lua: `for i = 1, 20000 do riff.emit("flood", { i = i, s = "x" }) end` },
];

// ------------------------------------------------------------------ cases

interface Placed {
  atom: Atom;
  phase: Phase;
  /** How often a packet atom fires: every packet, or packets whose bytes hash to one of 13 buckets. */
  gate: 'every' | 'some';
  wrap: 'none' | 'pcall' | 'xpcall' | 'coroutine' | 'load';
}
interface Case {
  id: number;
  plugins: Placed[][];
  workers: 1 | 2;
  input: string;
  output: 'text' | 'json' | 'json-stdout' | 'sqlite';
  strict: boolean;
  /** --lua-budget: 10^6, riff's default, or 0 (then only the wall clock stops a loop). */
  budget: 'small' | 'default' | 'none';
  hard: boolean;
  /** An atom that can raise outside a packet (setup, deinit, load, finalizers): "Lua errors" may exceed packet errors. */
  nonPacketErrors: boolean;
  files: Record<string, string>;
}

function inputs(): string[] {
  const list = [path.join(FIXTURES, 'http.pcap'), path.join(FIXTURES, 'multi.pcapng'), path.join(FIXTURES, 'ns-be.pcap')];
  for (const f of ['LINKTYPE_IPV4.pcap', 'isis_sr.pcapng', '802.1ad_QinQ.pcap', 'icmpv6-length-zero.pcapng', 'empty.pcap']) {
    const p = path.join(CORPUS, f);
    if (fs.existsSync(p)) list.push(p);
  }
  return list;
}

function wrapLua(code: string, wrap: Placed['wrap']): string {
  switch (wrap) {
    case 'none':
      return `do\n${code}\nend`;
    case 'pcall':
      return `pcall(function()\n${code}\nend)`;
    case 'xpcall':
      return `xpcall(function()\n${code}\nend, function(m) return m end)`;
    case 'coroutine':
      return `coroutine.wrap(function()\n${code}\nend)()`;
    case 'load':
      // The chunk sees the plugin's environment plus the helpers it needs.
      return `assert(load([==[local escaped, MARK, SECRET, OUTSIDE = ...\n${code}]==], "=fuzz-chunk"))(escaped, MARK, SECRET, OUTSIDE)`;
  }
}

function pluginSource(placed: Placed[], paths: { mark: string; secret: string; outside: string }): string {
  const by = (p: Phase) => placed.filter((x) => x.phase === p);
  const body = (list: Placed[]) =>
    list
      .map((x) => {
        const code = wrapLua(x.atom.lua, x.wrap);
        return x.gate === 'some' ? `if (#pcapdata + (pcapdata:byte(#pcapdata) or 0)) % 13 == 7 then\n${code}\nend` : code;
      })
      .join('\n');
  return `-- riff plugin fuzz: ${placed.map((x) => `${x.atom.name}@${x.phase}/${x.gate}/${x.wrap}`).join(', ')}
${PRELUDE}local MARK, SECRET, OUTSIDE = ${JSON.stringify(paths.mark)}, ${JSON.stringify(paths.secret)}, ${JSON.stringify(paths.outside)}
${body(by('top'))}
local P = { name = "fuzz" }
function P:setup()
${body(by('setup'))}
end
function P:match(pcapdata)
${body(by('packet'))}
end
function P:deinit()
${body(by('deinit'))}
end
return P
`;
}

const PHASES: Phase[] = ['packet', 'packet', 'packet', 'packet', 'top', 'setup', 'deinit'];
const WRAPS: Placed['wrap'][] = ['none', 'none', 'none', 'pcall', 'xpcall', 'coroutine', 'load'];

/** The cases of a seed; `paths` only fills in where the probes write and read. */
export function* cases(seed: number, n: number, dir: (id: number) => { mark: string; secret: string; outside: string }): Generator<Case> {
  const r = new Rng(seed);
  const files = inputs();
  for (let id = 0; id < n; id++) {
    const plugins: Placed[][] = [];
    const budget = r.pick(['small', 'small', 'default', 'none'] as const);
    const count = r.chance(0.35) ? 2 : 1;
    for (let p = 0; p < count; p++) {
      const atoms: Placed[] = [];
      const k = 1 + r.int(r.chance(0.3) ? 3 : 1);
      // One category per plugin most of the time, so each category gets its share; sometimes mixed.
      const cat = r.pick(['internals', 'finalizer', 'budget', 'memory', 'error', 'output'] as const);
      for (let i = 0; i < k; i++) {
        const pool = r.chance(0.8) ? A.filter((a) => a.cat === cat) : A;
        const atom = r.pick(pool);
        const phase = r.pick(PHASES);
        atoms.push({ atom, phase, gate: phase === 'packet' && (atom.hard || atom.cat === 'memory' || budget === 'none' || r.chance(0.5)) ? 'some' : 'every', wrap: r.pick(WRAPS) });
      }
      plugins.push(atoms);
    }
    const c: Case = {
      id,
      plugins,
      workers: r.chance(0.5) ? 2 : 1,
      input: r.chance(0.6) ? files[0] : r.pick(files),
      output: r.pick(['text', 'text', 'json', 'json-stdout', 'sqlite'] as const),
      strict: r.chance(0.1),
      budget,
      hard: plugins.flat().some((x) => x.atom.hard),
      nonPacketErrors: plugins.flat().some((x) => x.phase !== 'packet' || x.atom.cat === 'finalizer' || x.atom.cat === 'internals'),
      files: {},
    };
    const paths = dir(id);
    const names = plugins.map((_, i) => `fuzz_p${i + 1}`);
    plugins.forEach((placed, i) => (c.files[`${names[i]}.lua`] = pluginSource(placed, paths)));
    c.files['main.lua'] = `-- riff plugin fuzz case ${id} (seed 0x${seed.toString(16)})\nreturn { ${names.map((m) => `require "${m}"`).join(', ')} }\n`;
    yield c;
  }
}

// ------------------------------------------------------------------ checks

export interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  markerWritten: boolean;
}

/** The last value of a summary line (a plugin may print forged ones before riff's). */
function last(stderr: string, re: RegExp): number | null {
  let v: number | null = null;
  for (const m of stderr.matchAll(re)) v = Number(m[1]);
  return v;
}

/** What is wrong with one run; empty when riff held. */
export function problems(r: Outcome, c: Pick<Case, 'strict' | 'nonPacketErrors'>): { kind: string; detail: string }[] {
  const out: { kind: string; detail: string }[] = [];
  if (r.timedOut) {
    // Slow progress (a VM ended at --lua-timeout on packet after packet: the budget did not stop what it should) or stuck.
    const ended = (r.stderr.match(/still running after/g) ?? []).length;
    return [{ kind: 'hang', detail: `no exit within ${CASE_LIMIT_MS} ms${ended ? ` (${ended} VMs ended at --lua-timeout before then)` : ''}` }];
  }
  if (r.signal) out.push({ kind: 'crash', detail: `killed by ${r.signal}` });
  else if (r.code !== 0 && r.code !== 1) out.push({ kind: 'crash', detail: `exit code ${r.code}` });
  const esc = [...`${r.stdout}\n${r.stderr}`.matchAll(/ESCAPED ([^\n]{0,200})/g)].map((m) => m[1]);
  if (esc.length) out.push({ kind: 'escape', detail: [...new Set(esc)].slice(0, 8).join('; ') });
  if (r.markerWritten) out.push({ kind: 'escape', detail: 'a file was written outside the script directory' });
  // Forged lines (the error-control-bytes atom) are indented after a Lua error; riff's own traces are not preceded by one.
  const own = r.stderr.split('\n').filter((l) => !l.includes('forged'));
  const trace = own.find((l) => /^\s+at .+(\.js|\.ts|node:|wasm|<anonymous>)/.test(l));
  if (trace) out.push({ kind: 'trace', detail: `stack trace: ${trace.trim()}` });
  const internal = own.find((l) => /internal error|RuntimeError|memory access out of bounds|unreachable executed|FATAL ERROR|Aborted|Segmentation fault|TypeError|RangeError|ReferenceError|ERR_[A-Z_]+/.test(l));
  if (internal) out.push({ kind: 'trace', detail: `on stderr: ${internal.slice(0, 300)}` });
  const passed = last(r.stderr, /^(\d+) packets passed the filter$/gm);
  if (passed === null) {
    // No summary: only a script that did not load may end so, with one riff: line and exit 1.
    const lines = r.stderr.trimEnd().split('\n');
    if (r.code === 0) out.push({ kind: 'miscount', detail: 'exit 0 without a summary' });
    else if (r.code === 1 && !/^riff: /.test(lines[lines.length - 1] ?? '')) out.push({ kind: 'line', detail: `exit 1 without a summary, and the last line is not riff's one line: ${JSON.stringify(lines[lines.length - 1] ?? '').slice(0, 200)} (a message printed on several lines?)` });
    return out;
  }
  const read = last(r.stderr, /^(\d+) packets read$/gm) ?? 0;
  const processed = last(r.stderr, /^(\d+) packets processed by Lua$/gm) ?? 0;
  const errors = last(r.stderr, /^(\d+) Lua errors/gm) ?? 0;
  const dropped = last(r.stderr, /^(\d+) packets dropped at the ring/gm) ?? 0;
  const lost = last(r.stderr, /^(\d+) packets lost with /gm) ?? 0;
  const notProcessed = last(r.stderr, /^(\d+) packets not processed/gm) ?? 0;
  const skipped = last(r.stderr, /^(\d+) (?:packets?|records?) (?:skipped|too large)/gm) ?? 0;
  const known = processed + dropped + lost + notProcessed;
  const acc = `read ${read}, passed ${passed}, processed ${processed}, errors ${errors}, dropped ${dropped}, lost ${lost}, not processed ${notProcessed}`;
  if (passed + skipped > read) out.push({ kind: 'miscount', detail: `more passed than read: ${acc}` });
  if (c.nonPacketErrors ? !(known <= passed && passed <= known + errors) : known + errors !== passed)
    out.push({ kind: 'miscount', detail: `packets not accounted for: ${acc}` });
  if (notProcessed > 0 && r.code === 0 && !c.strict) out.push({ kind: 'miscount', detail: `"${notProcessed} packets not processed" with exit 0: ${acc}` });
  return out;
}

// ------------------------------------------------------------------ running

const work = tmpdir('riff-plugin-fuzz-');
const keep = path.join(os.tmpdir(), `riff-plugin-fuzz-failures-${SEED.toString(16)}`);
const HAS_TIMEOUT = /--lua-timeout/.test(String(riff(['--help']).stdout));

function caseDirs(id: number) {
  const base = path.join(work, `case${id}`);
  return { base, script: path.join(base, 'script'), outside: path.join(base, 'outside'), mark: path.join(base, 'outside', 'MARK'), secret: path.join(base, 'outside', 'secret.lua') };
}

function argsOf(c: Case, d: ReturnType<typeof caseDirs>): string[] {
  const args = ['-q', '--lua', path.join(d.script, 'main.lua'), '-r', c.input, '--lua-memory', '64M', '--workers', String(c.workers)];
  if (HAS_TIMEOUT) args.push('--lua-timeout', String(LUA_TIMEOUT_S));
  if (c.budget !== 'default') args.push('--lua-budget', c.budget === 'small' ? '1000000' : '0');
  if (c.strict) args.push('--strict');
  if (c.output === 'json') args.push('-o', `json:${path.join(d.base, 'out.json')}`);
  if (c.output === 'json-stdout') args.push('-o', 'json:-');
  if (c.output === 'sqlite') args.push('-o', `sqlite:${path.join(d.base, 'out.db')}`);
  return args;
}

function materialize(c: Case): ReturnType<typeof caseDirs> {
  const d = caseDirs(c.id);
  fs.mkdirSync(d.script, { recursive: true });
  fs.mkdirSync(d.outside, { recursive: true });
  for (const [name, src] of Object.entries(c.files)) fs.writeFileSync(path.join(d.script, name), src);
  // Something worth stealing outside the script's directory, and ways that lead there.
  fs.writeFileSync(d.secret, `-- FUZZSECRET\nprint("ESC" .. "APED ran a file outside the script directory")\n`);
  fs.writeFileSync(path.join(d.outside, 'secretc.so'), 'not a library');
  fs.symlinkSync(d.secret, path.join(d.script, 'link.lua'));
  fs.symlinkSync(d.outside, path.join(d.script, 'linkdir'));
  return d;
}

async function runCase(c: Case): Promise<Outcome> {
  const d = materialize(c);
  const r = riffAsync(argsOf(c, d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    r.child.kill('SIGKILL');
  }, CASE_LIMIT_MS);
  const done = await r.done;
  clearTimeout(timer);
  const stdout = done.stdout.length > 1 << 20 ? done.stdout.subarray(0, 64 << 10).toString('latin1') + done.stdout.subarray(-(256 << 10)).toString('latin1') : done.stdout.toString('latin1');
  // ESCAPED lines may sit anywhere in a flood: search the whole of stdout for them.
  const escapes = done.stdout.length > 1 << 20 ? [...done.stdout.toString('latin1').matchAll(/ESCAPED [^\n]{0,200}/g)].map((m) => m[0]).join('\n') : '';
  return { code: done.code, signal: done.signal, stdout: `${stdout}\n${escapes}`, stderr: done.stderr, timedOut, markerWritten: fs.existsSync(d.mark) };
}

function keepFailure(c: Case, r: Outcome, found: { kind: string; detail: string }[]): string {
  const d = caseDirs(c.id);
  const to = path.join(keep, `case-${c.id}`);
  fs.rmSync(to, { recursive: true, force: true });
  fs.mkdirSync(to, { recursive: true });
  for (const [name, src] of Object.entries(c.files)) fs.writeFileSync(path.join(to, name), src);
  const cut = (s: string) => (s.length > 64 << 10 ? `${s.slice(0, 16 << 10)}\n[... ${s.length} bytes ...]\n${s.slice(-(32 << 10))}` : s);
  fs.writeFileSync(path.join(to, 'command'), `riff ${argsOf(c, d).join(' ')}\n(the script directory was ${d.script}; copy these files there to rerun)\n`);
  fs.writeFileSync(path.join(to, 'stderr'), cut(r.stderr));
  fs.writeFileSync(path.join(to, 'stdout'), cut(r.stdout));
  fs.writeFileSync(path.join(to, 'problems'), found.map((f) => `${f.kind}: ${f.detail}`).join('\n') + '\n');
  return to;
}

// ------------------------------------------------------------------ tests

test('the plugin fuzzer catches what it claims to, and the same seed gives the same plugins', () => {
  const dir = (id: number) => ({ mark: `/m${id}`, secret: `/s${id}`, outside: `/o${id}` });
  const src = (s: number) => [...cases(s, 30, dir)].map((c) => JSON.stringify([c.files, c.workers, c.input, c.output, c.strict, c.budget]));
  assert.deepEqual(src(7), src(7));
  assert.notDeepEqual(src(7), src(8));
  // Every atom is reachable from the default seed's generator in a long enough run.
  const used = new Set([...cases(SEED, 2000, dir)].flatMap((c) => c.plugins.flat().map((p) => p.atom.name)));
  assert.deepEqual(A.filter((a) => !used.has(a.name)).map((a) => a.name), []);
  const clean = `45 packets read\n45 packets passed the filter\n40 packets processed by Lua\n5 Lua errors (x.lua: 5)\n`;
  const ok: Outcome = { code: 0, signal: null, stdout: '', stderr: clean, timedOut: false, markerWritten: false };
  const c = { strict: false, nonPacketErrors: false };
  assert.deepEqual(problems(ok, c), []);
  const kinds = (o: Partial<Outcome>, cc = c) => problems({ ...ok, ...o }, cc).map((p) => p.kind);
  assert.deepEqual(kinds({ timedOut: true }), ['hang']);
  assert.deepEqual(kinds({ signal: 'SIGSEGV', code: null }), ['crash']);
  assert.deepEqual(kinds({ code: 134 }), ['crash']);
  assert.deepEqual(kinds({ stdout: 'ESCAPED debug.sethook\n' }), ['escape']);
  assert.deepEqual(kinds({ markerWritten: true }), ['escape']);
  assert.deepEqual(kinds({ stderr: `TypeError: x is not a function\n    at main (file:///riff/dist/src/cli.js:1:2)\n${clean}` }), ['trace', 'trace']);
  assert.deepEqual(kinds({ stderr: clean.replace('40 packets processed', '39 packets processed') }), ['miscount']);
  assert.deepEqual(kinds({ stderr: `${clean}1 packets not processed (stopped early)\n`.replace('40 packets', '39 packets') }), ['miscount']);
  assert.deepEqual(kinds({ stderr: '' }), ['miscount']);
  // A forged summary before riff's own does not hide riff's.
  assert.deepEqual(kinds({ stderr: `45 packets processed by Lua\n${clean.replace('40 packets processed', '10 packets processed')}` }), ['miscount']);
  // setup/deinit errors may add to "Lua errors" beyond the packets.
  assert.deepEqual(kinds({ stderr: clean.replace('5 Lua errors', '7 Lua errors') }, { strict: false, nonPacketErrors: true }), []);
  assert.deepEqual(kinds({ code: 1, stderr: 'riff: main.lua:3: boom\n' }), []);
});

test(`${CASES} hostile plugins through riff, 1 and 2 workers (seed 0x${SEED.toString(16)})`, { timeout: 1_800_000 }, async (t) => {
  const all = [...cases(SEED, CASES, (id) => caseDirs(id))];
  // Without a budget only the wall clock stops a loop: those cases need it too.
  const run = HAS_TIMEOUT ? all : all.filter((c) => !c.hard && c.budget !== 'none');
  const left = all.filter((c) => !run.includes(c));
  if (left.length)
    t.diagnostic(
      `riff has no --lua-timeout: ${left.length} cases that only a wall-clock limit can stop were not run: ` +
        left.map((c) => `${c.id} (${[...c.plugins.flat().filter((p) => p.atom.hard).map((p) => p.atom.name), ...(c.budget === 'none' ? ['--lua-budget 0'] : [])].join(',')})`).join(' '),
    );
  const rows = new Map<string, Record<string, number>>();
  const failures: string[] = [];
  const t0 = Date.now();
  let slowest = { ms: 0, id: -1 };
  let next = 0;
  const one = async (c: Case) => {
    const t1 = Date.now();
    const r = await runCase(c);
    const ms = Date.now() - t1;
    if (ms > slowest.ms) slowest = { ms, id: c.id };
    const found = problems(r, c);
    for (const cat of new Set(c.plugins.flat().map((p) => p.atom.cat))) {
      const row = rows.get(cat) ?? rows.set(cat, {}).get(cat)!;
      row.cases = (row.cases ?? 0) + 1;
      row[`exit ${r.code}`] = (row[`exit ${r.code}`] ?? 0) + 1;
      for (const k of new Set(found.map((f) => f.kind))) row[k] = (row[k] ?? 0) + 1;
    }
    if (found.length) {
      const kept = keepFailure(c, r, found);
      failures.push(
        `case ${c.id} (${c.plugins.map((p) => p.map((x) => `${x.atom.name}@${x.phase}`).join('+')).join(' | ')}; ${c.workers} worker(s), ${path.basename(c.input)}, ${c.output}${c.strict ? ', strict' : ''}): ` +
          `${found.map((f) => `${f.kind}: ${f.detail}`).join('; ')}\n    kept in ${kept}`,
      );
    }
    fs.rmSync(caseDirs(c.id).base, { recursive: true, force: true });
  };
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < run.length) await one(run[next++]);
    }),
  );
  const cols = ['cases', 'exit 0', 'exit 1', 'hang', 'crash', 'trace', 'escape', 'miscount', 'line'];
  t.diagnostic(
    `plugin fuzz: ${run.length} cases in ${Date.now() - t0} ms, ${PARALLEL} at a time (slowest: case ${slowest.id}, ${slowest.ms} ms); ` +
      `--lua-timeout ${HAS_TIMEOUT ? LUA_TIMEOUT_S : 'absent'}`,
  );
  for (const [k, v] of rows) t.diagnostic(`  ${k.padEnd(10)} ${cols.map((col) => `${col} ${String(v[col] ?? 0).padStart(3)}`).join('  ')}`);
  assert.equal(failures.length, 0, `${failures.length} of ${run.length} cases failed (kept in ${keep}):\n${failures.slice(0, 20).join('\n')}`);
});

// Two faults the fuzzer found, kept as fixed cases: a VM ended while it
// finishes a batch (its finalizers, or its output waiting for a slow
// reader) must not count the batch's packets twice, and a reader of stdout
// that pauses is not the plugin's fault.
const PINNED: Record<string, { lua: string; args: string[]; pauseStdoutMs?: number; input: string }> = {
  'a finalizer that loops at the end of a batch, no instruction budget': {
    lua: `function buffer(p) if riff.packet.id == 5 then setmetatable({}, { __gc = function() while true do end end }) collectgarbage() end end`,
    args: ['--lua-budget', '0'],
    input: path.join(FIXTURES, 'http.pcap'),
  },
  'a reader of stdout that pauses for 3 s': {
    lua: `function buffer(p) print(("%q"):format(p):rep(16)) end`,
    args: [],
    pauseStdoutMs: 3000,
    input: path.join(FIXTURES, 'allbytes.pcap'),
  },
};

for (const [name, pin] of Object.entries(PINNED)) {
  for (const workers of [1, 2]) {
    test(`pinned: ${name}, ${workers} worker(s): every packet counted once`, { skip: HAS_TIMEOUT ? false : 'riff has no --lua-timeout' }, async () => {
      const dir = tmpdir('riff-plugin-pin-');
      fs.writeFileSync(path.join(dir, 'pin.lua'), pin.lua);
      const r = riffAsync(['-q', '--lua', path.join(dir, 'pin.lua'), '-r', pin.input, '--workers', String(workers), '--lua-timeout', String(LUA_TIMEOUT_S), ...pin.args]);
      if (pin.pauseStdoutMs) {
        r.child.stdout!.pause();
        setTimeout(() => r.child.stdout!.resume(), pin.pauseStdoutMs);
      }
      const timer = setTimeout(() => r.child.kill('SIGKILL'), CASE_LIMIT_MS);
      const done = await r.done;
      clearTimeout(timer);
      const found = problems({ ...done, stdout: '', timedOut: done.signal === 'SIGKILL', markerWritten: false }, { strict: false, nonPacketErrors: true });
      assert.deepEqual(found, [], done.stderr.slice(-2000));
      if (pin.pauseStdoutMs) assert.doesNotMatch(done.stderr, /still running after/, 'a slow reader of stdout is not a plugin over its time');
    });
  }
}
