-- The Lua half of riff's bridge: works out what the user's script is (the
-- entry rules), then runs batches of packets through it, one Lua call per
-- batch. Each packet is its own protected call with its own instruction
-- budget, so a failing or looping plugin costs that packet and nothing else.
local rt, host = ...

-- Everything riff's own bookkeeping calls later is bound here, before any
-- script runs: the globals and the libraries (table, string, math...) are
-- tables a script shares and may change, and a script that sets pcall or
-- table.concat must reach only its own code by them, never the summary,
-- the counters or the handover. So the driver reads no global after this
-- header (_ENV is nil below it: a global name in this file is an error, not
-- a lookup a script could answer), and holds its own copies of the
-- libraries. For the same reason riff walks a script's tables with
-- next/rawget/rawlen, never pairs/ipairs/#, which would run its metamethods
-- in riff's stead.
local function own(lib)
  local copy = {}
  for k, v in next, lib do copy[k] = v end
  return copy
end
-- The coroutine library scripts see: the driver puts its wrappers in it
-- (below), which hold the budget's bookkeeping.
local scripts_coroutine = coroutine
local string, table, math, coroutine, os, debug = own(string), own(table), own(math), own(coroutine), own(os), own(debug)
local _G, setmetatable, pcall, require = _G, setmetatable, pcall, require
local type, pairs, ipairs, xpcall, error, tostring, select =
      type, pairs, ipairs, xpcall, error, tostring, select
local next, rawget, rawlen = next, rawget, rawlen
-- The table scripts know as `riff`; the driver fills it in below.
local riff = { version = host.version }
_G.riff = riff
local _ENV = nil

local sfmt, unpack, find, match, sub, date = string.format, string.unpack, string.find, string.match, string.sub, os.date
local flush, flush_if_big, emit, emit_err = rt.flush, rt.flush_if_big, rt.emit, rt.emit_err
local sethook, getinfo, traceback, rawgetmeta = rt.sethook, rt.getinfo, debug.traceback, rt.getmetatable
local concat, tunpack, gsub, byte = table.concat, table.unpack, string.gsub, string.byte
local tointeger, mathtype, huge = math.tointeger, math.type, math.huge
local interrupted = host.interrupted
-- "file:line" where the heap cap last refused the script memory, or nil.
local refused = host.refused
-- riff's own bookkeeping after a script's code (error lines, flushes,
-- counters, the summary) may need memory when the script has filled the heap
-- to its cap: headroom(true) lends it a fixed reserve past the cap until
-- headroom(false), so a full heap costs the script's packet, never the
-- worker. It is riff's one way past the cap: around its work after script
-- code, and for the whole call of its functions that run none (summary,
-- flush, note_per_worker); the runtime puts the cap back whenever a call
-- into Lua returns, so the reserve never outlives the call that took it,
-- even one that raised.
local headroom = host.headroom

local opts = {
  quiet = false, verbose = false, strict = false,
  budget = 10000000, setup_budget = 1000000000,
  max_error_lines = 3,
}

local api = {}
local shard_key
local publish_counters -- set below, called at the end of every batch

---------------------------------------------------------------------------
-- The packet being processed, readable from Lua as riff.packet.<field>.
-- Headers arrive as one string per batch (40 bytes a packet, the layout of
-- src/capture/batch.ts) and are decoded only when a field is read.
---------------------------------------------------------------------------
local meta, cur, processed = "", 0, 0
local HDR, STRIDE = "<I4i4I4I4I4I4I4I4I4I4", 40
-- A clock lag's units per second, by its top 2 bits (ns, us, ms; the last
-- unit is 4 s): src/capture/batch.ts.
local LAG_PER_SEC = { [0] = 1000000000, 1000000, 1000 }

-- Decoded once per packet, however many fields a script reads.
local h_at, h_sec, h_nsec, h_caplen, h_len, h_lt, h_iface, h_flags, h_id, h_lag = -1
local function header(i)
  if i ~= h_at then
    local lo, hi
    lo, hi, h_nsec, h_caplen, h_len, h_lt, h_iface, h_flags, h_id, h_lag = unpack(HDR, meta, (i - 1) * STRIDE + 1)
    h_sec, h_at = hi * 4294967296 + lo, i
  end
  return h_sec, h_nsec, h_caplen, h_len, h_lt, h_iface, h_flags, h_id
end

local fields = {
  sec = function(s) return s end,
  nsec = function(s, ns) return ns end,
  usec = function(s, ns) return ns // 1000 end,
  ts = function(s, ns) return s + ns / 1e9 end,
  caplen = function(s, ns, c) return c end,
  len = function(s, ns, c, l) return l end,
  linktype = function(s, ns, c, l, lt) return lt end,
  iface = function(s, ns, c, l, lt, ifc) return ifc end,
  arrival = function(s, ns, c, l, lt, ifc, fl) return fl & 1 ~= 0 end,
  id = function(s, ns, c, l, lt, ifc, fl, id) return id end,
  -- Another worker's flow, handed to the overhear phase only (FLAG_OVERHEARD).
  overheard = function(s, ns, c, l, lt, ifc, fl) return fl & 8 ~= 0 end,
}

-- riff.read("file"): a data file beside the script (or in riff's lua/), read-only.
riff.read = host.read
-- riff.quic_initial(s, p, e[, dcid]) -> frames | nil, reason: the plaintext
-- of a QUIC client Initial (keys from its connection ID, RFC 9001 5.2).
riff.quic_initial = host.quic_initial
-- riff.emit(type, record): structured output (JSON lines, SQLite, syslog...),
-- encoded in Lua by riff.record and decoded by src/outputs.
-- Records are stamped with the packet's time while one is processed; after
-- the packets (deinit) with the last packet's, so a file gives the same
-- records on every run; before any (setup) riff stamps the wall clock.
local last_sec, last_nsec
do
  local clock = setmetatable({}, {
    __index = function(_, k)
      if cur > 0 then
        local s, ns = header(cur)
        if k == "sec" then return s elseif k == "nsec" then return ns end
      elseif k == "sec" then return last_sec
      elseif k == "nsec" then return last_nsec end
    end,
  })
  local ok, record = pcall(require, "riff.record")
  if ok and type(record) == "table" and record.emitter then riff.emit = record.emitter(host.record, clock) end
end
riff.packet = setmetatable({}, {
  -- ts and linktype are read for every packet (proto.current): straight
  -- from the decoded header, without the field table's call.
  __index = function(_, k)
    if cur > 0 then
      if cur ~= h_at then header(cur) end
      if k == "ts" then return h_sec + h_nsec / 1e9 elseif k == "linktype" then return h_lt end
      -- The capture's clock: the latest time of any packet so far (batch.ts stampIds).
      if k == "clock" then
        if h_lag == 0 then return h_sec + h_nsec / 1e9 end
        -- As src/capture/batch.ts clockOf, in integers, then one float: the same as api.run_end's.
        local n = h_lag & 0x3fffffff
        if h_lag >> 30 == 3 then return (h_sec + n * 4) + h_nsec / 1e9 end
        local per = LAG_PER_SEC[h_lag >> 30]
        local t = h_nsec + (n % per) * (1000000000 // per)
        return (h_sec + n // per + t // 1000000000) + (t % 1000000000) / 1e9
      end
      local f = fields[k]
      if f then return f(h_sec, h_nsec, h_caplen, h_len, h_lt, h_iface, h_flags, h_id) end
    end
  end,
  __newindex = function() error("riff.packet is read-only", 2) end,
  __metatable = false,
})

---------------------------------------------------------------------------
-- One answer from N workers (README: "One answer from N workers"). Each
-- worker sees its share of the flows; riff gives a script two ways to speak
-- for the whole run, after Zeek's cluster (workers observe, one merges):
--   riff.counter(name)  a number every worker adds to (or sets); :total()
--                       is the whole run's as of the other workers' last
--                       batch, read any time (status lines)
--   collect/merge/report  at the end each worker's collect() state is
--                       merged (by merge(a, b), else riff.merge) and
--                       report(state) runs once, in worker 1
---------------------------------------------------------------------------
local function read_only() error("this riff table is read-only", 2) end

-- riff.shard("service"), at load: with --workers N every connection to one
-- service (a TCP/UDP endpoint: the lower port of the two and its address)
-- goes to one worker, for scripts whose state spans the connections of a
-- service (lua/examples/service-watch.lua). Default "flow".
shard_key = "flow"
riff.shard = function(key)
  if key ~= "flow" and key ~= "service" then
    error("bad argument #1 to 'riff.shard' (\"flow\" or \"service\" expected, got " .. tostring(key) .. ")", 2)
  end
  shard_key = key
end
local worker = { index = host.worker_index or 1, count = host.worker_count or 1 }
riff.worker = setmetatable({}, {
  __index = worker,
  __newindex = read_only, __metatable = false,
})

do
  local slot_of, others, publish = host.counter_slot, host.counter_others, host.counter_publish
  local by_name, list = {}, {}
  -- A counter's value and slot live here, riff's: the object a script holds
  -- is a handle, so the publish at every batch's end reads no field and
  -- runs no metamethod a script could have put in its way.
  local value, slot = {}, {}
  local Counter = {}
  Counter.__index = Counter
  Counter.__metatable = false
  local function put(c, v)
    if value[c] == nil then error("bad self to a counter method (use c:add(n), not c.add(n))", 3) end
    if type(v) ~= "number" then error("a counter holds a number, got " .. type(v), 3) end
    value[c] = v
  end
  function Counter:add(n) put(self, (value[self] or 0) + (n or 1)) end
  function Counter:set(v) put(self, v) end
  function Counter:value() return value[self] end
  function Counter:total() return value[self] + others(slot[self]) end
  riff.counter = function(name)
    if type(name) ~= "string" or name == "" then
      error("bad argument #1 to 'riff.counter' (a name expected, got " .. type(name) .. ")", 2)
    end
    local c = by_name[name]
    if c then return c end
    c = setmetatable({ name = name }, Counter)
    value[c], slot[c] = 0, slot_of(name)
    by_name[name] = c
    list[#list + 1] = c
    return c
  end
  -- At the end of every batch: one host call with every counter's value.
  local args = {}
  function publish_counters()
    local n = #list
    if n == 0 then return end
    for i = 1, n do
      local c = list[i]
      args[2 * i - 1], args[2 * i] = slot[c], value[c]
    end
    publish(tunpack(args, 1, 2 * n))
  end
end

-- The default merge: numbers add, booleans or, tables merge key by key (so
-- a table of counts per port merges into the whole run's), anything else
-- keeps the first worker's. Lists are not concatenated: give merge(a, b).
local function merge(a, b)
  local ta, tb = type(a), type(b)
  if a == nil then return b end
  if b == nil then return a end
  if ta == "number" and tb == "number" then return a + b end
  if ta == "boolean" and tb == "boolean" then return a or b end
  if ta == "table" and tb == "table" then
    for k, v in next, b do a[k] = merge(a[k], v) end
    return a
  end
  return a
end
riff.merge = merge

---------------------------------------------------------------------------
-- Instruction budget. A count hook ticks every TICK instructions; the driver
-- zeroes the tick count per packet. Once a call is over budget the hook
-- fires on every instruction until control is back in the driver, so a
-- plugin that catches the error with pcall cannot keep running.
--
-- In a worker the budget is lazy: a set count hook slows every instruction,
-- so in batches the hook is only registered, and riff's watchdog
-- (src/vm/watchdog.ts) switches it on in a VM that stays in one batch for
-- tens of milliseconds. A runaway packet then gets its budget from there.
---------------------------------------------------------------------------
local TICK, limit, ticks, exhausted, budget_msg = 10000, 0, 0, false, nil
local stop_now = false
local driver_frames = {}
-- lazy: batches leave the hook off for the watchdog; live: it is on now.
local lazy, live = false, false
local DRIVER_SOURCE = getinfo(1, "S").source
-- The sandbox's string metamethods (p[i] on a packet) run in the script's
-- stead; the line to name is the script's that called them.
local SANDBOX_SOURCE = DRIVER_SOURCE:gsub("driver%.lua$", "sandbox.lua")
local SANDBOX_PREFIX = SANDBOX_SOURCE:sub(2) .. ":"
local gethook = rt.gethook
-- The threads that resumed the running coroutine, outermost first (the main
-- thread is MAIN): an exhausted budget is armed in each, so that a pcall
-- around coroutine.resume cannot go on either.
local MAIN, chain, depth = coroutine.running(), {}, 0

local function hook()
  live = true
  if exhausted then
    local f = getinfo(2, "f")
    if f and driver_frames[f.func] then
      sethook()
      return
    end
    -- Another thread (a coroutine's caller) may still run on a tick count.
    if select(3, gethook()) ~= 1 then sethook(hook, "", 1) end
    error(budget_msg, 0)
  end
  ticks = ticks + 1
  -- A long-running packet also hears Ctrl-C, every 16 ticks.
  if ticks & 15 == 0 and not stop_now and interrupted() then stop_now = true end
  if ticks >= limit then
    exhausted = true
    -- Name the script's line, not the driver's coroutine wrappers.
    local level, where = 2, getinfo(2, "Sl")
    while where and (where.source == DRIVER_SOURCE or where.source == SANDBOX_SOURCE) do
      level = level + 1
      where = getinfo(level, "Sl")
    end
    local pos = where and where.currentline and where.currentline > 0
      and (where.short_src .. ":" .. where.currentline .. ": ") or ""
    budget_msg = pos .. "budget exceeded (" .. (limit * TICK) .. " Lua instructions; raise it with --lua-budget N, 0 = unlimited)"
    for i = 1, depth do sethook(chain[i] or MAIN, hook, "", 1) end
    sethook(hook, "", 1)
    error(budget_msg, 0)
  end
end

local function arm(budget, later)
  exhausted, ticks = false, 0
  if budget and budget > 0 then
    TICK = budget < 10000 and budget or 10000
    limit = budget // TICK
    -- Count 0 registers the hook switched off, ready for the watchdog.
    sethook(hook, "", (later and not live) and 0 or TICK)
  else
    sethook()
  end
end

-- JS reads the lua_State while the probe's hook is set, to learn where the
-- hook lives and to check the layout the watchdog writes to.
function api.lazy_budget(step)
  if step == "probe" then sethook(hook, "", 0x3fffffff)
  else
    sethook()
    lazy = step == "on"
  end
end

---------------------------------------------------------------------------
-- Coroutines. A new coroutine gets the hook of the thread creating it (a
-- thread's hook is its own in Lua), and while one runs riff is told which
-- (host.enter): the watchdog arms its hook too, so a loop inside a coroutine
-- meets the budget, and a refused allocation is placed on its line.
---------------------------------------------------------------------------
local forget_coroutines
do
  local co_create, co_resume, co_close, co_status = coroutine.create, coroutine.resume, coroutine.close, coroutine.status
  -- host.adopt(co) enters the budget's hook for co in the debug library's
  -- hook table; the hook itself, count and mask, co got from its creator
  -- (lua_newthread copies them). Done in C so that no function a script can
  -- reach holds debug.sethook or the hook.
  local enter, adopt, running, last = host.enter, host.adopt, nil, nil

  local function resumed(prev, ...)
    -- The coroutine just left is kept alive until the next one leaves: the
    -- watchdog may have read its address a moment ago.
    last, running = running, prev
    chain[depth], depth = nil, depth - 1
    enter(prev)
    -- A coroutine that ran out of budget died of it; resume must not
    -- swallow that any more than pcall may (a pcall that catches this gets
    -- at most one more tick: the hook raises it again in this thread).
    if exhausted then error(budget_msg, 0) end
    return ...
  end

  -- Into co: riff notes it (the watchdog arms the running thread), and
  -- when the budget counts now (outside a lazy batch: setup, deinit, a
  -- packet the watchdog armed) host.enter gives co the same count, whatever
  -- hook it was made with (one made in a batch carries the lazy count, 0).
  local function into(co)
    local prev = running
    running = co
    depth = depth + 1
    chain[depth] = prev or MAIN
    enter(co)
    return prev
  end

  local function resume(co, ...)
    -- Anything but a suspended coroutine: resume's own answer, and nothing
    -- noted (a coroutine "resumed" into its caller would move the budget's
    -- bookkeeping off the thread that runs).
    if type(co) ~= "thread" or co_status(co) ~= "suspended" then return co_resume(co, ...) end
    return resumed(into(co), co_resume(co, ...))
  end

  -- close runs the coroutine's pending __close handlers, in the coroutine:
  -- entered as a resume is, so the budget reaches them there too. Closing
  -- a running or normal coroutine raises: before any bookkeeping.
  local function close(co)
    if type(co) ~= "thread" or co_status(co) ~= "suspended" then return co_close(co) end
    return resumed(into(co), co_close(co))
  end

  local function wrapped(co, ok, ...)
    if ok then return ... end
    local e = ...
    if co_status(co) == "dead" then close(co) end
    -- As coroutine.wrap does: a string error gets the caller's position.
    if type(e) == "string" then error(e, 2) end
    error(e, 0)
  end

  local function create(f) return adopt(co_create(f)) end
  scripts_coroutine.create = create
  scripts_coroutine.resume = resume
  scripts_coroutine.close = close
  scripts_coroutine.wrap = function(f)
    local co = create(f)
    return function(...) return wrapped(co, resume(co, ...)) end
  end

  -- After an error unwound past a resume, nothing runs in a coroutine.
  function forget_coroutines()
    running, last = nil, nil
    for i = 1, depth do chain[i] = nil end
    depth = 0
    enter(nil)
  end
end

---------------------------------------------------------------------------
-- Errors: counted per script, the first few of each kind shown.
---------------------------------------------------------------------------
local errors_total, packet_errors, errors_by_script, seen = 0, 0, {}, {}
-- Bounds, so that no plugin can make riff keep or print much: an error
-- message is cut to MAX_ERROR bytes before it is kept or shown; at most
-- MAX_DISTINCT distinct error lines and MAX_SCRIPTS script names are kept,
-- errors beyond them are still counted (as "other").
local MAX_ERROR, MAX_DISTINCT, MAX_SCRIPTS = 1024, 1000, 100
local ndistinct, nscripts, other_errors = 0, 0, 0
-- Errors with no position (out of memory skips the message handler) are
-- charged to the script riff was started with.
local entry_label = "riff/lua/default.lua"
local stop_requested = false

-- A script's error text is shown on one line and cannot steer a terminal:
-- control bytes (newlines, CR, ESC, NUL...; not tab) are written as escapes,
-- so a plugin cannot forge riff's summary lines or a stack trace.
local CONTROL = "[\0-\8\10-\31\127]"
local ESCAPED = { ["\n"] = "\\n", ["\r"] = "\\r" }
local function escape_control(c) return ESCAPED[c] or sfmt("\\x%02x", byte(c)) end

local function cut(e)
  local n = #e
  if n > MAX_ERROR then e = sub(e, 1, MAX_ERROR) .. "\u{2026}(" .. (n - MAX_ERROR) .. " bytes cut)" end
  if find(e, CONTROL) then e = gsub(e, CONTROL, escape_control) end
  return e
end

-- A name a script chose (a file, a plugin) in one of riff's own lines, or a
-- field of the summary's "name<tab>count" lines: bounded, and no control
-- byte, tab included.
local function label(s)
  if #s > 200 then s = sub(s, 1, 200) .. "\u{2026}" end
  if find(s, "[%c\127]") then s = gsub(s, "[%c\127]", escape_control) end
  return s
end

-- The first `max` entries of a script's list, read raw: rawlen can be made
-- to say 2^40 (a border in the hash part), so riff never loops to it.
local function list_of(t, max)
  local out = {}
  if type(t) ~= "table" then return out end
  for i = 1, max do
    local v = rawget(t, i)
    if v == nil then break end
    out[i] = v
  end
  return out
end

-- An error value that is not a string, kept with where it was raised.
local Boxed = {}

-- Which script an error is counted against (the summary's per-script
-- counts): the innermost running file that is not riff's own Lua (riff's
-- toolkit modules count against the script that called them), or the
-- script riff was started with when none is running (a C function as
-- __gc or setup). Never what the error's text names: any code can raise
-- "other.lua:2: x", from a metamethod other.lua happens to trigger too.
local OWN_LUA = match(DRIVER_SOURCE, "^(.*/)riff/driver%.lua$") or "\0"
-- The file msgh found, and the error it returned (report_error takes the
-- file only for that error: one raised without the handler has none).
local blamed, blamed_for
local function handled(e)
  blamed_for = e
  headroom(false)
  return e
end

-- The message handler runs in the failing code's stead, possibly with the
-- budget spent or off: it calls no script code (no __tostring) and does a
-- bounded amount of work; report_error turns boxed values into text.
local function msgh(e)
  local pos = ""
  blamed, blamed_for = nil, nil
  -- riff's own work, in its reserve: at the heap cap getinfo's tables and
  -- the message's strings would be refused, and the refusal would replace
  -- the allocator's note of where the script's own was (explain()).
  headroom(true)
  for level = 2, 41 do
    local info = getinfo(level, "S")
    if not info then break end
    if info.what ~= "C" and sub(info.source, 1, #OWN_LUA) ~= OWN_LUA then
      blamed = info.short_src
      break
    end
  end
  if type(e) == "string" then
    e = cut(e)
    -- A C function's error names its caller's line; when that is one of the
    -- sandbox's wrappers (setmetatable, load...), the script's line is due.
    if find(e, SANDBOX_PREFIX, 1, true) == 1 then e = match(e, "^[^\n]-:%d+: (.*)$") or e end
    if match(e, "^[^\n]-:%d+: ") then
      if opts.verbose then e = traceback(e, 2) end
      return handled(e)
    end
  end
  -- Errors raised without a position (out of memory, error(x, 0)) and error
  -- objects: name the innermost Lua frame.
  for level = 2, 20 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.currentline and info.currentline > 0
      and info.source ~= SANDBOX_SOURCE and info.source ~= DRIVER_SOURCE then
      pos = info.short_src .. ":" .. info.currentline .. ": "
      break
    end
  end
  if type(e) == "string" then
    e = pos .. e
    if opts.verbose then e = traceback(e, 2) end
    return handled(e)
  end
  return handled({ [Boxed] = e, pos = pos })
end

-- The text of a non-string error value. A table's __tostring is script code:
-- it runs here under the packet budget as a protected call, and what it
-- returns is cut like any message.
-- What the last __tostring cost (instructions), for a finalizer pass's account.
local described = 0
local function describe(v)
  local mt = type(v) == "table" and rawgetmeta(v)
  if type(mt) == "table" and rawget(mt, "__tostring") ~= nil then
    arm(opts.budget)
    local ok, s = pcall(tostring, v)
    described = ticks * TICK
    arm(0)
    if ok and type(s) == "string" then return cut(s) end
    return "(error object is a table whose __tostring failed)"
  end
  return "(error object is a " .. type(v) .. " value)"
end
driver_frames[describe] = true

-- Any error value as one bounded line of text.
local function message(e)
  if type(e) == "table" and e[Boxed] ~= nil then return e.pos .. describe(e[Boxed]) end
  if type(e) ~= "string" then return describe(e) end
  return e
end

-- An error's text as riff shows it. Lua raises "not enough memory" without
-- calling the message handler, so without a position (coroutine.wrap adds
-- its caller's); the allocator noted the script's line as it refused
-- (src/vm/where.ts), and that line is named, as for any other error.
local function explain(e)
  e = message(e)
  if e == "not enough memory" or find(e, "not enough memory", 1, true) then
    if e == "not enough memory" or match(e, "^[^\n]-:%d+: not enough memory$") then
      local at = refused()
      if at then e = at .. ": not enough memory"
      elseif e == "not enough memory" then e = entry_label .. ": " .. e end
    end
    e = e .. " (Lua heap limit reached; raise it with --lua-memory)"
  end
  return e
end

local function report_error(e, where)
  local by_msgh = e == blamed_for
  blamed_for = nil
  if exhausted then e = budget_msg else e = explain(e) end
  errors_total = errors_total + 1
  -- Without the handler (not enough memory is raised without it), the
  -- text's position is the allocator's own note of the script's line.
  local script = match(e, "^([^\n]-):%d+: ")
  if by_msgh then script = blamed end
  script = label(script or entry_label)
  if not errors_by_script[script] then
    if nscripts >= MAX_SCRIPTS then script = "(other)" else nscripts = nscripts + 1 end
  end
  errors_by_script[script] = (errors_by_script[script] or 0) + 1
  local key = match(e, "^[^\n]*") or e
  local n = seen[key]
  if n == nil then
    if ndistinct >= MAX_DISTINCT then
      other_errors = other_errors + 1
      if other_errors == 1 then
        emit_err("riff: more than " .. MAX_DISTINCT .. " distinct errors; further new ones are counted in the summary\n")
      end
      if opts.strict then stop_requested = true end
      return
    end
    ndistinct = ndistinct + 1
    n = 0
  end
  n = n + 1
  seen[key] = n
  if n <= opts.max_error_lines then
    emit_err("riff: " .. e .. " (" .. where .. ")\n")
  elseif n == opts.max_error_lines + 1 then
    emit_err("riff: " .. key .. ": repeated; further repeats are counted in the summary\n")
  end
  if opts.strict then stop_requested = true end
end

---------------------------------------------------------------------------
-- Entry rules: what the --lua FILE is.
---------------------------------------------------------------------------
local entry_fn, entry_self -- per packet: entry_fn(entry_self, p) or entry_fn(p)
local setup_fn, deinit_fn, setup_self

-- A table with a function in it: pipeline:new says which of its phases
-- riff will never call (a misspelled one, action without match).
local function is_plugin(v)
  if type(v) ~= "table" then return false end
  for _, f in next, v do
    if type(f) == "function" then return true end
  end
  return false
end

local collect_fn, merge_fn, report_fn, gather_self
-- With --workers N, packets on the script's overhear ports (DNS answers that
-- name later flows) reach every worker; the workers that do not own the
-- flow hand them to overhear(packet) only (README: One answer from N workers).
local overhear_fn, overhear_self, overhear_list
-- A pipeline's plugins whose deinit has nothing to merge it (Pipeline.unmerged).
local unmerged_fn, unmerged_self
-- Reload (SIGHUP): what the old script's deinit returns reaches the new
-- script's handover(state), before its first packet (README: Reloading).
local handover_fn

local function use_pipeline(p)
  entry_fn, entry_self = p.run, p
  if type(p.setup) == "function" then setup_fn, setup_self = p.setup, p end
  if type(p.deinit) == "function" then deinit_fn, setup_self = p.deinit, p end
  if type(p.handover) == "function" then handover_fn, setup_self = p.handover, p end
  if type(p.report) == "function" and p.reports ~= false then
    collect_fn, merge_fn, report_fn, gather_self = p.collect, p.merge, p.report, p
  end
  if type(p.unmerged) == "function" then unmerged_fn, unmerged_self = p.unmerged, p end
  if type(p.overhear) == "function" then
    overhear_fn, overhear_self = p.overhear, p
    local ports = p.overhear_ports
    if type(ports) == "function" then ports = ports(p) end
    overhear_list = ports
  end
end

local function use_globals()
  local b = rawget(_G, "buffer")
  entry_fn, entry_self = b, nil
  local s, d = rawget(_G, "setup"), rawget(_G, "deinit")
  if type(s) == "function" then setup_fn = s end
  if type(d) == "function" then deinit_fn = d end
  if type(rawget(_G, "handover")) == "function" then handover_fn = rawget(_G, "handover") end
  if type(rawget(_G, "overhear")) == "function" then overhear_fn, overhear_list = rawget(_G, "overhear"), rawget(_G, "overhear_ports") end
  local c, m, r = rawget(_G, "collect"), rawget(_G, "merge"), rawget(_G, "report")
  if type(r) == "function" then
    collect_fn, report_fn = type(c) == "function" and c or nil, r
    merge_fn = type(m) == "function" and m or nil
  end
end

local function run_file(src, chunkname, path)
  local fn, msg = rt.load(src, chunkname, "t")
  if not fn then error(msg, 0) end
  rt.loading[#rt.loading + 1] = path
  arm(opts.setup_budget)
  local ok, res = xpcall(fn, msgh)
  local spent = exhausted
  arm(0)
  rt.loading[#rt.loading] = nil
  if not ok then error(spent and budget_msg or explain(res), 0) end
  return res
end

-- entry_of's own verdicts, told apart from the script's errors (which the
-- message handler boxes or positions) by a key no script holds.
local REFUSAL = {}
local function refuse(msg) error({ [REFUSAL] = msg }) end

-- What the script returned is read under the load budget, as its top level
-- ran: its fields may be computed by its own metamethods (a proxy whose
-- __index makes run, a list whose __index never ends), and pipeline:new walks
-- its list; that is the script's code, never riff's to run unbounded.
-- Returns the rule's word and, for an original tree, the buffer.lua to run.
local function entry_of(ret, path, display)
  if type(ret) == "table" and type(ret.run) == "function" then
    if ret.element_list == nil and type(ret.new) == "function" then
      -- A framework with no plugins: the user pointed at the original riff's
      -- pipeline.lua. Run the tree around it the way the original did.
      local bsrc, bpath = host.module("buffer", path)
      if not bsrc or bpath == path then
        refuse(display .. " is a pipeline framework that declares no plugins; "
          .. "point --lua at a file that calls pipeline:new{...}, or keep buffer.lua beside it")
      end
      return "tree", bsrc, bpath
    end
    use_pipeline(ret)
    return "pipeline"
  end
  -- One plugin returned on its own (plugin.base's template ends that way)
  -- is a pipeline of one.
  if type(ret) == "table" and ret[1] == nil and is_plugin(ret) then ret = { ret } end
  if type(ret) == "table" and ret[1] ~= nil then
    for i, v in ipairs(ret) do
      if not is_plugin(v) then
        refuse(sfmt("%s returned a list whose element %d is not a plugin (a table of phase functions: init, push, match, action, setup, deinit)", display, i))
      end
    end
    local p = require("pipeline"):new(ret)
    use_pipeline(p)
    return "plugins"
  end
  refuse(display .. " must set a global function buffer(packet), return a pipeline (a table with run), "
    .. "or return a list of plugins")
end

-- Returns a word naming the rule that applied, or raises the reason.
function api.open(src, chunkname, path, display)
  if src == nil then
    local p = require "default"
    use_pipeline(p)
    return "default"
  end
  entry_label = path
  local before = rawget(_G, "buffer")
  local ret = run_file(src, chunkname, path)
  flush()
  local b = rawget(_G, "buffer")
  if type(b) == "function" and b ~= before then
    use_globals()
    return "buffer"
  end
  arm(opts.setup_budget)
  local ok, rule, bsrc, bpath = xpcall(entry_of, msgh, ret, path, display)
  local spent = exhausted
  arm(0)
  if not ok then
    local verdict = type(rule) == "table" and rule[Boxed]
    if type(verdict) == "table" and verdict[REFUSAL] then error(verdict[REFUSAL], 0) end
    error(spent and budget_msg or explain(rule), 0)
  end
  if rule == "tree" then
    emit_err("riff: " .. display .. " declares no plugins; running the riff tree around it as the original did ("
      .. bpath .. " -> elements.lua)\n")
    run_file(bsrc, "@" .. bpath, bpath)
    if type(rawget(_G, "buffer")) ~= "function" then
      error(bpath .. " does not define a global buffer(packet) function", 0)
    end
    use_globals()
  end
  return rule
end

-- config.lua beside the script: its global format() gives the capture
-- filter (the original's convention) and an optional outputs() the list of
-- --output specs. Returns the filter and the specs joined by newlines.
function api.config_filter(src, chunkname)
  local env = setmetatable({}, { __index = _G })
  local fn, msg = rt.load(src, chunkname, "t", env)
  if not fn then error(msg, 0) end
  local name = chunkname:sub(2)
  arm(opts.setup_budget)
  local ok, res = xpcall(fn, msgh)
  local filter, outs = nil, nil
  if ok and type(rawget(env, "format")) == "function" then ok, filter = xpcall(env.format, msgh) res = filter end
  if ok and type(rawget(env, "outputs")) == "function" then ok, outs = xpcall(env.outputs, msgh) res = outs end
  local spent = exhausted
  arm(0)
  if not ok then error(spent and budget_msg or explain(res), 0) end
  if filter ~= nil and type(filter) ~= "string" then
    error(name .. ": format() must return a string (the capture filter), got " .. type(filter), 0)
  end
  if type(outs) == "string" then outs = { outs } end
  if outs ~= nil and type(outs) ~= "table" then
    error(name .. ": outputs() must return a list of output specs such as \"json:-\", got " .. type(outs), 0)
  end
  local specs = list_of(outs, 256)
  for i = 1, #specs do
    if type(specs[i]) ~= "string" then error(name .. ": outputs() entry " .. i .. " is not a string", 0) end
    -- One spec per entry: riff joins them by newlines (and the 256 would be no bound).
    if find(specs[i], "%c") then error(name .. ": outputs() entry " .. i .. " holds a control character (one output spec per entry)", 0) end
  end
  return filter, concat(specs, "\n")
end

function api.configure(quiet, verbose, strict, budget, setup_budget)
  opts.quiet, opts.verbose, opts.strict = quiet, verbose, strict
  opts.budget, opts.setup_budget = tointeger(budget) or 0, tointeger(setup_budget) or 0
end

local take_due = rt.take_due
-- A pass cut short by its budget: the queue and where it stopped.
local left_q, left_i, left_n
local GC_MIN = 1000

-- Script finalizers that came due (sandbox.lua queues them): each a protected
-- call, its error counted like a packet's.
--
-- One packet's budget for the whole pass, not one per finalizer: a
-- finalizer that makes the next one is a chain that never ends, each link
-- cheap. A pass cut short by the budget leaves the rest for the next pass
-- (the next batch's end), so the chain costs a budget a batch, not the run.
--
-- Finalizers are the script's code: they run at the heap cap, never in the
-- reserve riff lends its own bookkeeping (headroom); `reserve` is whether
-- the caller had it lent, and gets it back.
local function finalize(reserve)
  local was = cur
  local q, i, n = left_q, left_i, left_n
  left_q = nil
  if not q then
    q, n = take_due()
    i = 1
  end
  if not q then return end
  headroom(false)
  local left = opts.budget
  while q do
    while i <= n do
      local o = q[i]
      q[i] = nil
      i = i + 1
      local mt = rawgetmeta(o)
      local gc = type(mt) == "table" and rawget(mt, "__gc")
      if type(gc) == "function" then
        -- What the watchdog reads (`cur`): -2, one step for the whole pass,
        -- which has one packet's budget and so one packet's wall-clock
        -- limit; a step per finalizer let a chain of slow C calls run for
        -- hours. The batch's packets were all handed over before this.
        cur = -2
        -- The hook counts the finalizer only, not riff's queue work between.
        arm(left)
        local ok, e = xpcall(gc, msgh, o)
        local over, spent = exhausted, ticks * TICK
        described = 0
        if not ok then
          headroom(true)
          report_error(e, "__gc")
          headroom(false)
        end
        arm(0)
        -- Each is charged at least GC_MIN (a chain of cheap ones still
        -- ends), and what its error's __tostring cost.
        left = left - (spent > GC_MIN and spent or GC_MIN) - described
        if opts.budget > 0 and (over or left <= 0) then
          left_q, left_i, left_n = q, i, n
          cur = was
          headroom(reserve)
          return
        end
      end
    end
    -- Finalizers may make more garbage with finalizers.
    q, n = take_due()
    i = 1
  end
  cur = was
  headroom(reserve)
end

local function call_hook(fn, name, arg)
  finalize(false)
  if not fn then return true end
  arm(opts.setup_budget)
  local ok, e
  if setup_self then ok, e = xpcall(fn, msgh, setup_self, arg) else ok, e = xpcall(fn, msgh, arg) end
  arm(0)
  headroom(true)
  if not ok then report_error(e, name) end
  finalize(true)
  flush()
  headroom(false)
  return ok, e
end

local serialize

-- Returns false when setup raised (a reload then keeps the old script).
function api.setup() return (call_hook(setup_fn, "setup")) end

-- `reloading`: what deinit returns is the hand-over, as text (nil: none).
function api.deinit(reloading)
  local ok, v = call_hook(deinit_fn, "deinit")
  if not (reloading and ok and v ~= nil) then return nil end
  local out = {}
  local sok, e = pcall(serialize, v, out, 0, {})
  if not sok then report_error("deinit's hand-over: " .. tostring(e), "deinit") return nil end
  return concat(out)
end

function api.handover(text)
  if not handover_fn then return end
  local fn, msg = rt.load("return " .. text, "=handed-over state", "t", {})
  if not fn then report_error("handover: the old script's state did not read back: " .. msg, "handover") return end
  call_hook(handover_fn, "handover", fn())
end

-- A state as Lua source text, read back by load() with an empty
-- environment: numbers (integers stay integers), strings (any bytes),
-- booleans, tables of those. Cycles and other types are refused.
function serialize(v, out, depth, open)
  local t = type(v)
  if t == "number" then
    if mathtype(v) == "integer" then out[#out + 1] = sfmt("%d", v)
    elseif v ~= v then out[#out + 1] = "(0/0)"
    elseif v == huge then out[#out + 1] = "(1/0)"
    elseif v == -huge then out[#out + 1] = "(-1/0)"
    else out[#out + 1] = sfmt("%.17g", v) end
  elseif t == "string" then out[#out + 1] = sfmt("%q", v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "nil" then out[#out + 1] = "nil" -- no state (no collect, or it returned none): report gets nil, as from one worker
  elseif t == "table" then
    if open[v] or depth > 64 then error("collect: the state holds a table inside itself (or nests over 64 deep)", 0) end
    open[v] = true
    out[#out + 1] = "{"
    for k, x in next, v do
      out[#out + 1] = "["
      serialize(k, out, depth + 1, open)
      out[#out + 1] = "]="
      serialize(x, out, depth + 1, open)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
    open[v] = nil
  else
    error("collect: a " .. t .. " cannot be merged across workers (numbers, strings, booleans and tables can)", 0)
  end
end

-- This worker's state for the whole run's report, as text; nil when the
-- script has no report, "" when collect failed (the pool then says the
-- report lacks this worker's share: one answer, or a said half).
function api.collect()
  if not report_fn then return nil end
  arm(opts.setup_budget)
  local ok, res = xpcall(function()
    local state
    if collect_fn then
      if gather_self then state = collect_fn(gather_self) else state = collect_fn() end
    end
    local out = {}
    serialize(state, out, 0, {})
    return concat(out)
  end, msgh)
  arm(0)
  if not ok then report_error(res, "collect") flush() return "" end
  flush()
  return res
end

-- Worker 1, after every worker collected: merge the states in worker order
-- and report once.
function api.report(all, n)
  if not report_fn then return end
  arm(opts.setup_budget)
  local ok, e = xpcall(function()
    local fn, msg = rt.load("return " .. all, "=collected state", "t", {})
    if not fn then error("report: the workers' states did not read back: " .. msg, 0) end
    local states, acc = fn(), nil
    for i = 1, n do
      local st = states[i]
      if i == 1 then acc = st
      elseif merge_fn then
        if gather_self then acc = merge_fn(gather_self, acc, st) else acc = merge_fn(acc, st) end
      else acc = merge(acc, st) end
    end
    if gather_self then report_fn(gather_self, acc) else report_fn(acc) end
  end, msgh)
  arm(0)
  if not ok then report_error(e, "report") end
  flush()
end

-- With --workers N, before deinit: the capture times of the run's last
-- packet and of its last TCP/UDP packet (-1: none), whichever worker had
-- them. Records stamped after the packets carry the first, as with one
-- worker; riff.run_end() gives both to flow.shared, which ends the flows
-- still open at the second, as one worker would.
local run_end_ts, run_end_flow_ts
function api.run_end(ls, lns, fs, fns)
  ls, lns, fs, fns = tointeger(ls), tointeger(lns), tointeger(fs), tointeger(fns)
  if ls and ls >= 0 then
    last_sec, last_nsec = ls, lns
    run_end_ts = ls + lns / 1e9
  end
  if fs and fs >= 0 then run_end_flow_ts = fs + fns / 1e9 end
end
riff.run_end = function() return run_end_ts, run_end_flow_ts end

-- How packets are shared out among workers, read once after open:
-- "flow" or "service" (riff.shard), a tab, and the ports to overhear
-- ("53,5353"; empty: none).
function api.sharding()
  headroom(true) -- after the script's top level, which may have filled the heap
  local out = {}
  if overhear_fn then
    local ports = list_of(overhear_list, 65536)
    for i = 1, #ports do
      local p = ports[i]
      if mathtype(p) == "integer" and p >= 0 and p < 65536 then out[#out + 1] = p end
    end
  end
  local plan = shard_key .. "\t" .. concat(out, ",")
  headroom(false)
  return plan
end

-- With N workers, a deinit that is not backed by a report sees one
-- worker's share: said once, at start, so nobody reads half a total.
function api.note_per_worker()
  -- A script that chose its sharding (riff.shard) knows what each worker holds.
  if worker.count < 2 or worker.index ~= 1 or not deinit_fn or shard_key ~= "flow" then return end
  local which = ""
  if unmerged_fn then
    -- The script's code: under its budget, as every other call into it.
    arm(opts.setup_budget)
    local ok, names = pcall(unmerged_fn, unmerged_self)
    arm(0)
    if not ok then return end
    headroom(true)
    local list = list_of(names, 32)
    if #list == 0 then headroom(false) return end
    for i = 1, #list do local v = list[i] list[i] = type(v) == "string" and label(v) or type(v) end
    which = " (" .. concat(list, ", ") .. ")"
  elseif report_fn then
    return
  end
  headroom(true)
  emit_err("riff: with --workers " .. worker.count .. " the script's deinit" .. which .. " runs in each worker on its share of the flows;"
    .. " for whole-run figures give it collect/report (README: One answer from N workers)\n")
  flush()
  headroom(false)
end

---------------------------------------------------------------------------
-- The batch loop. T holds the packets as strings, M their headers.
---------------------------------------------------------------------------
local ctime_sec, ctime_str = nil, nil
local function ctime(sec)
  if sec ~= ctime_sec then
    ctime_sec, ctime_str = sec, date("%a %b %e %H:%M:%S %Y", sec)
  end
  return ctime_str
end

-- watch.c's lines after each packet, byte for byte.
local function report_line(i)
  local sec, _, caplen, len, _, _, _, id = header(i)
  emit(sfmt("id: %d\nPacket length: %d\nNumber of bytes: %d\nRecieved time: %s\n\n\n",
    id, len, caplen, ctime(sec)))
end

-- The packets of one batch from `from` on, until one raises. Not a driver
-- frame: the budget's error must unwind through it to api.batch. Returns the
-- last packet handed over.
-- The batch's overheard packets: position -> true (false: none).
local over_at, over_pos = false, nil

local function run(T, from, n, fn, self, quiet)
  for i = from, n do
    cur, ticks = i, 0
    if over_at and over_at[i] then
      if overhear_self then overhear_fn(overhear_self, T[i]) else overhear_fn(T[i]) end
    else
      if self then fn(self, T[i]) else fn(T[i]) end
      if not quiet then report_line(i) end
    end
    if stop_now then return i end
    -- Output is flushed, and Ctrl-C heard, every 32 packets (a long-running
    -- packet hears Ctrl-C through the budget hook).
    if i & 31 == 0 then
      flush_if_big()
      if interrupted() then stop_now = true return i end
    end
  end
  return n
end

local function handed(k)
  headroom(true)
  local own = k
  if over_at then
    for j = 1, #over_pos do if over_pos[j] <= k then own = own - 1 end end
    over_at, over_pos = false, nil
  end
  processed = processed + own
  publish_counters()
  if cur > 0 then last_sec, last_nsec = header(cur) end
  -- The batch's packets are all counted: a worker ended from here on (its
  -- finalizers, its output to a reader that stopped) loses none of them
  -- (src/vm/watchdog.ts CUR_HANDED).
  cur = -3
  live = false
  forget_coroutines()
  arm(0)
  finalize(true)
  flush()
  headroom(false)
  return k, packet_errors
end

-- One protected call covers every packet up to the first error (a pcall per
-- packet costs as much as an empty pipeline's whole packet); after an error
-- the loop resumes at the next packet, so each packet still fails alone.
-- Returns how many packets were handed to the script and the error count.
function api.batch(T, M, n, O)
  -- Only ever called from riff (no Lua frame below): riff's functions are
  -- out of a script's reach, and this keeps it so should one ever leak.
  if getinfo(2, "f") then error("riff's batch function cannot be called from a script", 0) end
  meta, h_at, cur = M, -1, 0
  if O and overhear_fn then
    over_at, over_pos = {}, {}
    for j = 1, #O // 4 do
      local i = unpack("<I4", O, j * 4 - 3)
      over_at[i], over_pos[j] = true, i
    end
  end
  local fn, self, budget, quiet = entry_fn, entry_self, opts.budget, opts.quiet
  arm(budget, lazy)
  local from = 1
  while from <= n do
    local ok, last = xpcall(run, msgh, T, from, n, fn, self, quiet)
    if ok then return handed(last) end
    headroom(true)
    local i = cur
    -- An overheard copy is another worker's packet: its owner counts it, and
    -- an error in overhear is the script's, counted beside setup's and
    -- deinit's, never as a packet of this worker's that failed.
    local copy = over_at and over_at[i]
    -- Counted once described: a __tostring stuck in a C call ends the worker
    -- there, and the watchdog then counts the packet as lost, not twice.
    report_error(last, (copy and "overhear, packet " or "packet ") .. select(8, header(i)))
    if not copy then packet_errors = packet_errors + 1 end
    forget_coroutines()
    arm(budget, lazy)
    if stop_requested then return handed(i) end
    if not quiet and not copy then report_line(i) end
    if stop_now or (i & 31 == 0 and interrupted()) then
      stop_now = true
      return handed(i)
    end
    from = i + 1
    headroom(false)
  end
  return handed(n)
end
driver_frames[api.batch] = true
driver_frames[finalize] = true
driver_frames[call_hook] = true
driver_frames[run_file] = true
driver_frames[api.config_filter] = true
driver_frames[api.collect] = true
driver_frames[api.report] = true
driver_frames[api.open] = true
driver_frames[api.note_per_worker] = true

-- "handed errors packet_errors\nscript count\n..." for the exit summary.
-- (Its upvalues `processed` and `packet_errors` are where the watchdog reads
-- them: src/vm/runtime.ts driverCounters.)
function api.summary()
  headroom(true)
  local lines = { processed .. "\t" .. errors_total .. "\t" .. packet_errors }
  if other_errors > 0 then lines[1] = lines[1] .. "\t" .. other_errors end
  for script, n in pairs(errors_by_script) do lines[#lines + 1] = script .. "\t" .. n end
  local text = concat(lines, "\n")
  headroom(false)
  return text
end

function api.flush()
  headroom(true)
  flush()
  headroom(false)
end
-- For host.adopt (src/vm/runtime.ts), which enters it for new coroutines.
api.hook = hook
return api
