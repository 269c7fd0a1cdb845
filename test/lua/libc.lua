-- Run by test/libc.test.ts in wasmoon's own engine and in riff's VM (no
-- sandbox: the stock libraries), under several TZ values: everything Lua
-- reaches of the C library's host side (src/vm/libc.ts). FULL (set in one
-- zone) adds what does not depend on the zone and costs memory: growth past
-- the initial 16 MiB, Lua's stack limit. Returns one line per check; the
-- two engines must return the same lines and write the same bytes to
-- stdout and stderr.
local out = {}

local function ser(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. ser(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return string.format("%q", v)
  elseif t == "number" then
    return math.type(v) .. ":" .. string.format("%.17g", v)
  end
  return tostring(v)
end

local function rec(label, ...) out[#out + 1] = label .. " => " .. ser(table.pack(...)) end
local function try(label, f, ...) rec(label, pcall(f, ...)) end

-- os.date: every conversion Lua 5.4 accepts, local and UTC, and the tables.
local SPECS = {}
for c in ("aAbBcCdDeFgGhHIjmMnprRStTuUVwWxXyYzZ%"):gmatch(".") do SPECS[#SPECS + 1] = "%" .. c end
for _, c in ipairs({ "Ec", "EC", "Ex", "EX", "Ey", "EY", "Od", "Oe", "OH", "OI", "Om", "OM", "OS", "Ou", "OU", "OV", "Ow", "OW", "Oy" }) do
  SPECS[#SPECS + 1] = "%" .. c
end
local ALL = table.concat(SPECS, "|")

local INSTANTS = {
  0, 1, -1, 86399, 86400, 946683000, 946684800, 951782400, -- 1970, 1999-12-31 23:30 UTC, 2000, 29 Feb 2000
  -616852800, -2208988800, -60584198400, -62135596800, -- 1950, 1900, year 50 (Date's two-digit years), year 1
  1711846799, 1711846800, 1729990799, 1729990800, -- the EU's DST edges, 2024
  1710053999, 1710054000, 1730613599, 1730613600, -- the US's
  1712419200, 1728230400, -- Australia's (April and October 2024)
  1609416000, 1609675200, 1735689599, -- ISO weeks across new year (%G %V)
  2147483647, 2147483648, 4102444800, 253402300799, 253402300800, -- 2038, 2100, 9999, 10000
  -9999999999, 1e14 // 1, 2 ^ 53, -(2 ^ 53), 2 ^ 53 + 1, 2 ^ 60, math.maxinteger, math.mininteger,
}
for _, t in ipairs(INSTANTS) do
  try("date " .. t, os.date, ALL, t)
  try("date! " .. t, os.date, "!" .. ALL, t)
  try("*t " .. t, os.date, "*t", t)
  try("!*t " .. t, os.date, "!*t", t)
end
for _, f in ipairs({ "%", "%Q", "%E", "%Ez", "%O", "%OY", "%5", "x%", "plain text", "", "!", "%%%%", "%c%c", "*t ", "!*tx", "\0%Y\0" }) do
  try("format " .. ser(f), os.date, f, 1000000000)
end
try("date float", os.date, "%c", 1.5)
try("date integral float", os.date, "%c", 1e9)
try("date string", os.date, "%c", "1000000000")
try("date huge float", os.date, "%c", 2 ^ 63)
try("date nan", os.date, "%c", 0 / 0)
rec("date now year", os.date("%Y") == tostring(os.date("*t").year))

-- os.time on tables: normalisation, isdst, the fields written back, errors.
local TABLES = {
  { year = 2024, month = 1, day = 32 },
  { year = 2024, month = 14, day = 1, hour = 12 },
  { year = 2024, month = 0, day = 0 },
  { year = 2024, month = 3, day = 1, hour = -1, min = -1, sec = -1 },
  { year = 2024, month = 2, day = 29, hour = 25, min = 61, sec = 61 },
  { year = 2024, month = 3, day = 31, hour = 2, min = 30 }, -- a local time that does not exist in Europe
  { year = 2024, month = 10, day = 27, hour = 2, min = 30 }, -- one that exists twice
  { year = 2024, month = 3, day = 10, hour = 2, min = 30 }, -- the US's gap
  { year = 2024, month = 11, day = 3, hour = 1, min = 30 }, -- and overlap
  { year = 2024, month = 7, day = 1, isdst = true },
  { year = 2024, month = 7, day = 1, isdst = false },
  { year = 2024, month = 1, day = 15, isdst = true },
  { year = 2024, month = 1, day = 15, isdst = false },
  { year = 1969, month = 12, day = 31, hour = 23, min = 59, sec = 59 },
  { year = 1900, month = 1, day = 1 },
  { year = 50, month = 6, day = 1 },
  { year = 0, month = 1, day = 1 },
  { year = -100, month = 1, day = 1 },
  { year = 10000, month = 1, day = 1 },
  { year = 275760, month = 9, day = 13 },
  { year = 275760, month = 9, day = 14 },
  { year = 2 ^ 31, month = 1, day = 1 },
  { year = 2024, month = 2 ^ 31, day = 1 },
  { year = 2024, month = 1 },
  { year = 2024, month = 1, day = 1.5 },
  { year = 2024, month = 1, day = "3" },
  { year = 2024, month = 1, day = "x" },
  { year = 2024, month = 1, day = 1, hour = 1e300 },
}
for i, t in ipairs(TABLES) do
  local ok, r = pcall(os.time, t)
  rec("time " .. i, ok, r, t)
end
rec("time nil", math.type(os.time(nil)), (pcall(os.time, nil)))

try("time number", os.time, 5)
rec("time now", math.type(os.time()), os.time() > 1.7e9)
try("difftime", os.difftime, 1700000000, 1600000000)
try("difftime one", os.difftime, 5)
try("difftime float", os.difftime, 1.5, 1)

-- os.clock: starts at 0 on its first call (give or take the millisecond
-- between its two readings of the clock), then grows.
local c0 = os.clock()
local x = 0
for i = 1, 3e6 do x = x + i end
local c1 = os.clock()
rec("clock", c0 < 0.01, math.type(c1), c1 > c0, c1 < 60)

-- The environment C sees: package.path and cpath come from it.
for _, k in ipairs({ "HOME", "USER", "LOGNAME", "PATH", "PWD", "LANG", "TZ", "LUA_PATH", "LUA_PATH_5_4", "LUA_INIT", "NODE_OPTIONS" }) do
  rec("getenv " .. k, os.getenv(k))
end
rec("getenv _", type(os.getenv("_")))
rec("package.path", package.path, package.cpath, package.config)

-- Errors, pcall, error objects, coroutines (setjmp/longjmp through invoke_vii).
try("error string", error, "boom")
try("error level", function() error("lvl", 1) end)
try("error level 2", function() local function f() error("up", 2) end f() end)
try("error table", function() error({ code = 7 }) end)
try("error nil", error, nil)
try("error number", error, 42)
rec("error tostring", pcall(error, setmetatable({}, { __tostring = function() return "custom" end })))
try("runtime", function() return nil + 1 end)
try("index", function() local t = nil return t.x end)
try("nested", function() return pcall(pcall, error, "deep") end)
rec("xpcall", xpcall(function() error("xp") end, function(m) return "handled: " .. m end))
rec("xpcall handler error", xpcall(function() error("xp") end, function() error("again") end))
try("wrap error", function() return coroutine.wrap(function() error("in wrap") end)() end)
try("wrap error table", function() return coroutine.wrap(function() error({ t = 1 }) end)() end)
try("wrap dead", function() local f = coroutine.wrap(function() end) f() return f() end)
local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) error("co " .. b) end)
rec("resume 1", coroutine.resume(co, 1))
rec("resume 2", coroutine.resume(co, 5))
rec("resume dead", coroutine.resume(co))
rec("status", coroutine.status(co))
rec("close", coroutine.close(coroutine.create(function() end)))
rec("yield across pcall", coroutine.wrap(function() return pcall(function() return coroutine.yield(3) end) end)())
if FULL then
  local function deep(n) return deep(n + 1) + 1 end
  try("stack overflow", deep, 1)
end
local function cdeep(n) local ok, e = pcall(cdeep, n + 1) if not ok then error(e, 0) end return n end
local ok, e = pcall(cdeep, 1)
rec("C stack overflow", ok, (tostring(e):gsub("^.-: ", "")))
try("string.rep too large", string.rep, "x", 1 << 40)
try("tostring(nil .. )", function() return "a" .. {} end)
local t = setmetatable({}, { __index = function(_, k) error("no " .. k) end })
try("metamethod error", function() return t.field end)
try("gsub error", string.gsub, "abc", "(", "")
try("load error", load, "return +")
try("close variable", function()
  local x <close> = setmetatable({}, { __close = function() error("in close") end })
  return 1
end)

-- Number formatting (musl's printf and strtod).
local NUMS = { 0.0, -0.0, 1 / 0, -1 / 0, 0.1, 1 / 3, 1e100, 1e-310, 2 ^ 63, -2 ^ 63, math.pi, 123456789.125, 5e-324, 1.7976931348623157e308, 100, 1e15, 1e16 }
for _, n in ipairs(NUMS) do
  rec("fmt " .. string.format("%a", n), tostring(n), string.format("%.14g|%g|%e|%.3f|%a|%5.2f|%q|%.0f|%.20g", n, n, n, n, n, n, n, n, n))
end
rec("nan", tostring(0 / 0) == tostring(0 / 0), string.format("%.1f", 0 / 0):gsub("-", ""))
rec("tonumber", tonumber("0x1p4"), tonumber("1e500"), tonumber("  12  "), tonumber("1e"), tonumber("0x"), tonumber("10", 36), math.tointeger(3.0), 7 // 2, 7.0 // 2, 2 ^ 0.5, 10 % -3, -7 % 3.5)
rec("string.format int", string.format("%d|%5d|%-5d|%x|%X|%o|%c|%i", 42, 42, 42, 255, 255, 8, 65, -3))

-- Memory beyond the module's initial 16 MiB.
if FULL then
  local big = string.rep("ab", 24 * 1024 * 1024)
  local parts = {}
  for i = 1, 64 do parts[i] = string.rep(string.char(64 + i % 26), 256 * 1024 + i) end
  local joined = table.concat(parts)
  rec("memory", #big, big:sub(-3), #joined, joined:byte(-1), joined:sub(1000000, 1000004))
  big, parts, joined = nil, nil, nil
  collectgarbage()
end

-- C's writes to stdout and stderr: line-buffered, a partial line never flushed.
print("print", 1, 2.5, nil, true)
print("")
io.write("partial ", 42, " ")
io.write("rest\n")
io.write("two\nlines\n")
io.stderr:write("to stderr\n", "second ", "line\n")
io.stderr:write("\xff\xfe invalid utf-8 \xc3\x28\n")
io.write("nul\0byte\n")
io.stdout:write("multi\n\n")
io.write("never flushed")

return table.concat(out, "\n")
