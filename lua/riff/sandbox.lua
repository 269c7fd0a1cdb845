-- Runs first in every riff VM, before any user code. It turns the stock Lua
-- 5.4 globals into riff's sandbox: output goes through riff (byte-exact and in
-- packet order), modules come only from the script's directory and riff's own
-- lua/, and nothing else on the host is reachable. It also adds the Lua 5.1
-- names riff-era scripts use. Returns the privileged handles the driver needs;
-- user code never sees them.
local host = ...

local type, tostring, select, error, rawget, rawset, setmetatable, pcall =
      type, tostring, select, error, rawget, rawset, setmetatable, pcall
local concat, sfmt, byte, sub, mtype = table.concat, string.format, string.byte, string.sub, math.type
local host_write, host_module, host_load = host.write, host.module, host.load
-- The real loader and debug library stay here and in the handles returned to
-- the driver: no function a script can reach holds them, even as an upvalue
-- (test/sandbox.test.ts walks every upvalue of everything reachable).
local real_load, real_debug = load, debug
local real_setmetatable, real_getmetatable = setmetatable, debug.getmetatable

local function denied(what, rule)
  return function()
    error(what .. " is not available in riff's sandbox: " .. rule, 2)
  end
end
local NO_FILES = "Lua cannot reach host files (use require for modules beside your script)"
local NO_HOST = "Lua cannot run processes or touch the host environment"

---------------------------------------------------------------------------
-- Output. Everything a script writes is buffered in Lua and handed to riff
-- in large pieces, so packet bytes stay bytes and riff's own report lines
-- interleave in packet order.
---------------------------------------------------------------------------
-- stdout is buffered in WebAssembly memory by three small C functions of
-- riff's (src/vm/bridge.ts): out_write appends its string arguments with one
-- memcpy each. The driver flushes between packets once FLUSH_AT is reached
-- and at the end of every batch, so a flush holds whole packets' output
-- (workers' flushes interleave only there); a single packet writing more
-- than the buffer (16 MiB) is flushed mid-packet. FLUSH_AT is about a
-- batch's worth for a script that writes every packet (the seed does):
-- one write a batch rather than one every 64 KiB.
local out_write, out_pending, out_flush = host.out_write, host.out_pending, host.out_flush
local err, nerr = {}, 0
local FLUSH_AT = 1 << 20

local function flush()
  out_flush()
  if nerr > 0 then
    local s = concat(err, "", 1, nerr)
    err, nerr = {}, 0
    host_write(2, s)
  end
end

local emit = out_write

local function flush_if_big()
  if out_pending() >= FLUSH_AT or nerr >= 256 then flush() end
end

local function emit_err(s)
  nerr = nerr + 1
  err[nerr] = s
end

-- io.write formats numbers as C Lua does: integers with %d, floats with %.14g.
-- `level` is the error level that names the caller of io.write or file:write.
local function tostr(i, v, fname, level)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return mtype(v) == "integer" and sfmt("%d", v) or sfmt("%.14g", v) end
  error(sfmt("bad argument #%d to '%s' (string expected, got %s)", i, fname, t), level)
end

-- out_write takes the leading string arguments in one call and returns the
-- index of the first other one (0 if none); from there, one at a time.
local function write_rest(level, other, ...)
  for i = other, select("#", ...) do
    local v = select(i, ...)
    if type(v) ~= "string" then v = tostr(i, v, "write", level + 1) end
    out_write(v)
  end
end

-- For io.stdout:write (level: write_out, then file:write, then its caller).
local function write_out(...)
  local other = out_write(...)
  if other ~= 0 then write_rest(4, other, ...) end
end

-- stderr is unbuffered, as in C: a script's progress notes show at once.
local function write_err(...)
  for i = 1, select("#", ...) do host_write(2, tostr(i, (select(i, ...)), "write", 4)) end
end

local function file_object(write)
  local f = {}
  function f.write(self, ...) write(...) return self end
  function f.flush(self) return self end
  function f.close() return nil, "riff's standard streams stay open" end
  function f.setvbuf() return true end
  function f.seek() return nil, "not seekable" end
  function f.lines() error("riff's standard streams cannot be read", 2) end
  f.read = f.lines
  return setmetatable(f, { __name = "FILE*", __tostring = function() return "file (riff)" end, __metatable = false })
end
local stdout, stderr = file_object(write_out), file_object(write_err)

function print(...)
  local n = select("#", ...)
  for i = 1, n do
    if i > 1 then emit("\t") end
    emit(tostring((select(i, ...))))
  end
  emit("\n")
end

-- io.write runs once or more per packet in most scripts: one call less.
io.write = function(...)
  local other = out_write(...)
  if other ~= 0 then write_rest(3, other, ...) end
  return stdout
end
io.stdout, io.stderr = stdout, stderr
io.stdin = nil
io.output = function(f)
  if f == nil or f == stdout then return stdout end
  error("io.output is not available in riff's sandbox: " .. NO_FILES, 2)
end
io.type = function(f)
  if f == stdout or f == stderr then return "file" end
  return nil
end
io.open = denied("io.open", NO_FILES)
io.lines = denied("io.lines", NO_FILES)
io.input = denied("io.input", NO_FILES)
io.read = denied("io.read", NO_FILES)
io.close = denied("io.close", NO_FILES)
io.tmpfile = denied("io.tmpfile", NO_FILES)
io.popen = denied("io.popen", NO_HOST)

os.execute = denied("os.execute", NO_HOST)
os.exit = denied("os.exit", NO_HOST .. " (riff stops at the end of the capture, -c N, or Ctrl-C)")
os.getenv = denied("os.getenv", NO_HOST)
os.remove = denied("os.remove", NO_FILES)
os.rename = denied("os.rename", NO_FILES)
os.tmpname = denied("os.tmpname", NO_FILES)
os.setlocale = denied("os.setlocale", NO_HOST)

dofile = denied("dofile", NO_FILES)
loadfile = denied("loadfile", NO_FILES)
string.dump = denied("string.dump", "binary chunks are not allowed")

-- Text chunks only: a binary chunk can break the VM's invariants. host.load
-- is luaL_loadbufferx with mode "t" and nothing else, so it is safe to hold;
-- a reader function's pieces are joined here first.
function load(chunk, name, mode, ...)
  if mode ~= nil and mode ~= "t" and mode ~= "bt" and mode ~= "tb" then
    error("load: only text chunks are allowed in riff's sandbox (mode 't')", 2)
  end
  local t = type(chunk)
  if t == "function" then
    local parts, n = {}, 0
    while true do
      local piece = chunk()
      if piece == nil or piece == "" then break end
      if type(piece) ~= "string" then return nil, "reader function must return a string" end
      n = n + 1
      parts[n] = piece
    end
    chunk, name = concat(parts, "", 1, n), name or "=(load)"
  elseif t ~= "string" then
    error(sfmt("bad argument #1 to 'load' (string expected, got %s)", t), 2)
  end
  if name ~= nil and type(name) ~= "string" then
    error(sfmt("bad argument #2 to 'load' (string expected, got %s)", type(name)), 2)
  end
  -- "@file" and "=name" would let a chunk pass for a file riff loaded (the
  -- summary counts errors per file): a loaded chunk is always named so.
  if name ~= nil and (sub(name, 1, 1) == "@" or sub(name, 1, 1) == "=") then name = "=[load] " .. sub(name, 2) end
  if select("#", ...) > 0 then return host_load(chunk, name, (...)) end
  return host_load(chunk, name)
end

-- debug can read and rewrite any local or upvalue, reach the registry and
-- replace the budget hook; a script keeps only traceback, which returns text.
-- getinfo is gone too: its "f" hands out the functions on the stack, riff's
-- driver among them (positions are in error messages and tracebacks).
debug = { traceback = real_debug.traceback }
package.loaded.debug = debug

---------------------------------------------------------------------------
-- Finalizers run under the budget. Lua calls __gc with hooks off (lgc.c's
-- GCTM), so a finalizer that loops would never meet the instruction budget.
-- Script objects are therefore never marked for Lua's own finalization:
-- setmetatable hides a metatable's __gc while it sets it, and a guard object
-- of riff's, tied to the script's object in an ephemeron table, is finalized
-- in its stead. The guard's __gc only queues the object; the driver calls
-- the __gc found in its metatable then (as Lua would, whatever is there at
-- collection time) at the end of the batch, under the budget, as a protected
-- call whose error is counted. The queue holds the object alive until then.
---------------------------------------------------------------------------
local due, ndue = {}, 0
local GUARD = { __gc = function(g) ndue = ndue + 1 due[ndue] = g[1] end, __metatable = false }
local guards = real_setmetatable({}, { __mode = "k" })

-- (A global: the local of that name above is the real one.)
-- The common case costs one field read: mt.__gc is nil only if the raw
-- field is (a metatable's own __index may only send more calls the long way).
_G.setmetatable = function(t, mt)
  if mt ~= nil and mt.__gc ~= nil and type(mt) == "table" then
    local gc = rawget(mt, "__gc")
    if gc ~= nil then
      rawset(mt, "__gc", nil)
      local ok, e = pcall(real_setmetatable, t, mt)
      rawset(mt, "__gc", gc)
      if not ok then error(e, 2) end
      if guards[t] == nil then guards[t] = real_setmetatable({ t }, GUARD) end
      return t
    end
  end
  return real_setmetatable(t, mt)
end

-- The driver's side: the objects whose finalizers are due, oldest first.
local function take_due()
  if ndue == 0 then return nil, 0 end
  local q, n = due, ndue
  due, ndue = {}, 0
  return q, n
end

---------------------------------------------------------------------------
-- require: the script's directory first, then riff's lua/. Returns one
-- value, as Lua 5.1 did, so pipeline:new{ require"a", require"b" } holds
-- exactly two plugins.
---------------------------------------------------------------------------
package.loadlib = denied("package.loadlib", "C modules cannot be loaded")
package.searchpath = denied("package.searchpath", NO_FILES)
package.path, package.cpath, package.searchers = "", "", {}
local loaded, preload = package.loaded, package.preload
local loading = {} -- stack of the files being run, innermost last
local POP_LOADING = setmetatable({}, { __close = function() loading[#loading] = nil end })

local function require(name)
  if type(name) ~= "string" then
    error(sfmt("bad argument #1 to 'require' (string expected, got %s)", type(name)), 2)
  end
  local v = loaded[name]
  if v ~= nil then return v end
  local pre = preload[name]
  if pre then
    v = pre(name, ":preload:")
  else
    -- A file may not require itself: a user pipeline.lua that requires
    -- "pipeline" means riff's framework.
    local src, path = host_module(name, loading[#loading])
    if not src then error(path, 2) end
    local fn, msg = host_load(src, "@" .. path)
    if not fn then error(msg, 0) end
    -- Not a protected call: a module's error reaches the driver's handler
    -- with the module's frames on the stack (the summary counts it against
    -- the module); the to-be-closed pop runs as the error unwinds.
    loading[#loading + 1] = path
    local _ <close> = POP_LOADING
    v = fn(name, path)
  end
  if v == nil then v = rawget(loaded, name) end
  if v == nil then v = true end
  loaded[name] = v
  return v
end
_G.require = require

---------------------------------------------------------------------------
-- Lua 5.1 names still found in riff-era scripts.
---------------------------------------------------------------------------
unpack = table.unpack
loadstring = function(s, name) return load(s, name, "t") end
table.getn = function(t) return #t end
table.setn = function() end
table.maxn = function(t)
  local m = 0
  for k in pairs(t) do
    if type(k) == "number" and k > m then m = k end
  end
  return m
end
table.foreach = function(t, f)
  for k, v in pairs(t) do
    local r = f(k, v)
    if r ~= nil then return r end
  end
end
table.foreachi = function(t, f)
  for i = 1, #t do
    local r = f(i, t[i])
    if r ~= nil then return r end
  end
end
math.pow = function(x, y) return x ^ y end
math.mod = math.fmod
math.log10 = function(x) return math.log(x, 10) end
math.ldexp = function(m, e) return m * 2.0 ^ e end
math.frexp = function(x)
  if x == 0 or x ~= x or x == math.huge or x == -math.huge then return x, 0 end
  local e = math.floor(math.log(math.abs(x), 2)) + 1
  local m = x / 2.0 ^ e
  if math.abs(m) >= 1 then m, e = m / 2, e + 1 elseif math.abs(m) < 0.5 then m, e = m * 2, e - 1 end
  return m, e
end
math.atan2 = math.atan
math.cosh = function(x) return (math.exp(x) + math.exp(-x)) / 2 end
math.sinh = function(x) return (math.exp(x) - math.exp(-x)) / 2 end
math.tanh = function(x) local a, b = math.exp(x), math.exp(-x) return (a - b) / (a + b) end
string.gfind = string.gmatch
getfenv = function(f)
  if f == nil or f == 0 or f == 1 then return _G end
  error("getfenv is not supported beyond the global table in riff (Lua 5.4 has _ENV)", 2)
end
setfenv = function()
  error("setfenv is not supported in riff (Lua 5.4 has _ENV)", 2)
end

-- The original riff handed each packet over as a table of bytes. Packets are
-- strings now; these let old code index them the same way: p[i] is a byte,
-- pairs(p) yields index, byte in order, #p is the length.
local smeta = getmetatable("")
local string_lib = string
smeta.__index = function(s, k)
  if type(k) == "number" then return byte(s, k) end
  return string_lib[k]
end
-- Protected: a script that could rewrite it would change how riff's own code
-- sees every string.
smeta.__metatable = false
smeta.__pairs = function(s)
  local n = #s
  return function(_, i)
    i = i + 1
    if i <= n then return i, byte(s, i) end
  end, s, 0
end

return {
  flush = flush,
  flush_if_big = flush_if_big,
  emit = emit,
  emit_err = emit_err,
  load = real_load,
  sethook = real_debug.sethook,
  gethook = real_debug.gethook,
  getinfo = real_debug.getinfo,
  getmetatable = real_getmetatable,
  take_due = take_due,
  loading = loading,
}
