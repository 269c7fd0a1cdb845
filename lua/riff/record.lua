-- riff.emit(type, fields): structured records for riff's outputs (JSON lines,
-- SQLite, syslog, text). Lua cannot reach the host, so a record is encoded
-- here into one binary string and handed to riff through host.record; the
-- TypeScript half (src/outputs/records.ts) decodes it.
--
-- Wire format, version 1, all integers little-endian:
--
--   record := 0x01 time type:s2 map
--   time   := 'P' sec:i8 nsec:u4     the packet's capture time (emitted while
--                                    a packet is being processed; after the
--                                    packets, in deinit, the last packet's)
--           | 'W'                    no packet yet (setup): riff stamps the
--                                    wall time as it takes the record from Lua
--                                    (Lua's os.time has only whole seconds)
--   value  := 'F' | 'T'              false, true
--           | 'i' i8                 Lua integer (64-bit)
--           | 'd' f64                Lua float
--           | 's' len:u4 bytes       Lua string: raw bytes, any values
--           | 'a' n:u4 value*n       table whose keys are exactly 1..n (n >= 1,
--                                    or an empty table marked with array())
--           | 'm' n:u4 (key value)*n any other table; keys are UTF-8 strings, sorted
--                                    (key := len:u4 bytes); integer and float
--                                    keys are written in decimal ("%d", "%.17g")
--
-- NaN and infinities are refused (a Lua error naming the field): JSON and SQL
-- have no such numbers, and a record should not change meaning by output.
--
-- The top level is always a map (an array given as fields becomes "1", "2",
-- ...). An empty table is an empty map unless marked with
-- require("riff.record").array(t), which returns t.
-- Tables may be shared, but not cyclic, and nest at most MAX_DEPTH deep.
-- Tables are read raw (next/rawget): no metamethod runs while encoding.
-- Functions, userdata, threads, boolean keys and non-UTF-8 keys are errors.
local type, next, error, pcall, tostring, setmetatable, rawget, sort =
      type, next, error, pcall, tostring, setmetatable, rawget, table.sort
local pack, sfmt, find, gsub, byte, concat = string.pack, string.format, string.find, string.gsub, string.byte, table.concat
local mtype, ulen, huge = math.type, utf8.len, math.huge

-- The module table is shared with scripts (require "riff.record"), which may
-- change it: riff.emit's encoder reads none of its fields, only these locals.
local MAX_DEPTH = 32
local M = { VERSION = 1, MAX_DEPTH = MAX_DEPTH }

-- Tables the script marked as arrays (so that an empty one stays an array).
local arrays = setmetatable({}, { __mode = "k" })
function M.array(t)
  t = t or {}
  if type(t) ~= "table" then error("record.array: expected a table, got " .. type(t), 2) end
  arrays[t] = true
  return t
end

local Fail = {} -- marks errors raised by the encoder itself

-- The path to the value being encoded, kept as a stack of keys and turned
-- into text ("a.b[3]") only for an error message.
local path, depth = {}, 0

-- A key as a quoted Lua string for messages; bytes that are not printable
-- (or not UTF-8) as \xHH, so the message itself is valid UTF-8.
local function hex(c) return sfmt("\\x%02x", byte(c)) end
local function quote(k)
  k = gsub(k, '[\\"]', "\\%0")
  k = gsub(k, ulen(k) and "[%c\127]" or "[^\32-\126]", hex)
  return '"' .. k .. '"'
end

local function pathtext()
  local out = ""
  for i = 1, depth do
    local k = path[i]
    if type(k) == "string" and find(k, "^[%a_][%w_]*$") then
      out = out == "" and k or (out .. "." .. k)
    else
      out = out .. "[" .. (type(k) == "string" and quote(k) or tostring(k)) .. "]"
    end
  end
  return out
end

local function fail(msg)
  local where = pathtext()
  error({ [Fail] = true, msg = "riff.emit: " .. (where ~= "" and (where .. ": ") or "") .. msg }, 0)
end

local function keystr(k)
  local t = type(k)
  if t == "string" then
    if not ulen(k) then fail("a key is not valid UTF-8 (keys name fields; put bytes in values)") end
    return k
  elseif t == "number" then
    if mtype(k) == "integer" then return sfmt("%d", k) end
    return sfmt("%.17g", k)
  end
  fail("a key is a " .. t .. " (keys must be strings or numbers)")
end

local encode_value

-- Is t a sequence 1..n with no other keys? Returns n, or nil.
local function seqlen(t)
  local n, max = 0, 0
  for k in next, t do
    if mtype(k) ~= "integer" or k < 1 then return nil end
    n = n + 1
    if k > max then max = k end
  end
  if n ~= max then return nil end
  return n
end

-- Keys go out sorted: Lua's table order changes with its per-run hash seed,
-- and a record should read (and diff) the same every time.
local function by_name(a, b) return a[1] < b[1] end

-- Records repeat their field names: each string key is checked and packed
-- once (a bounded cache), and a map of string keys sorts the strings
-- themselves (the same order: a string key's text is itself).
local packed, npacked = {}, 0

local function encode_map(buf, nb, t, stack)
  local keys, n, strs = {}, 0, true
  for k in next, t do
    n = n + 1
    if type(k) ~= "string" then strs = false break end
    if not packed[k] then
      depth = depth + 1
      path[depth] = k
      keystr(k)
      depth = depth - 1
      if npacked >= 4096 then packed, npacked = {}, 0 end
      packed[k], npacked = pack("<s4", k), npacked + 1
    end
    keys[n] = k
  end
  if strs then
    sort(keys)
    nb = nb + 1
    buf[nb] = pack("<c1I4", "m", n)
    for i = 1, n do
      local k = keys[i]
      depth = depth + 1
      path[depth] = k
      nb = nb + 1
      buf[nb] = packed[k] or pack("<s4", k)
      nb = encode_value(buf, nb, rawget(t, k), stack)
      depth = depth - 1
    end
    return nb
  end
  keys, n = {}, 0
  for k in next, t do
    depth = depth + 1
    path[depth] = k
    n = n + 1
    keys[n] = { keystr(k), k }
    depth = depth - 1
  end
  sort(keys, by_name)
  nb = nb + 1
  buf[nb] = pack("<c1I4", "m", n)
  for i = 1, n do
    local ks, k = keys[i][1], keys[i][2]
    depth = depth + 1
    path[depth] = k
    nb = nb + 1
    buf[nb] = pack("<s4", ks)
    nb = encode_value(buf, nb, rawget(t, k), stack)
    depth = depth - 1
  end
  return nb
end

function encode_value(buf, nb, v, stack)
  local t = type(v)
  nb = nb + 1
  if t == "string" then
    buf[nb] = pack("<c1s4", "s", v)
  elseif t == "number" then
    if mtype(v) == "integer" then buf[nb] = pack("<c1i8", "i", v)
    elseif v ~= v or v == huge or v == -huge then
      fail((v ~= v and "NaN" or "an infinity") .. " cannot be recorded (JSON and SQL have no such number); record nil, a string or a finite number")
    else buf[nb] = pack("<c1d", "d", v) end
  elseif t == "boolean" then
    buf[nb] = v and "T" or "F"
  elseif t == "table" then
    nb = nb - 1
    if stack[v] then fail("cycle: this table contains itself") end
    if depth >= MAX_DEPTH then fail("nested deeper than " .. MAX_DEPTH .. " tables") end
    stack[v] = true
    local n = seqlen(v)
    if n and (n > 0 or arrays[v]) then
      nb = nb + 1
      buf[nb] = pack("<c1I4", "a", n)
      for i = 1, n do
        depth = depth + 1
        path[depth] = i
        nb = encode_value(buf, nb, rawget(v, i), stack)
        depth = depth - 1
      end
    else
      nb = encode_map(buf, nb, v, stack)
    end
    stack[v] = nil
  else
    fail("a " .. t .. " cannot be recorded (records hold strings, numbers, booleans and tables of them)")
  end
  return nb
end

local valid_types, nvalid = {}, 0 -- types already checked
local function check_type(rtype)
  if valid_types[rtype] then return end
  if type(rtype) ~= "string" then
    error("riff.emit: bad argument #1 (the record type must be a string, got " .. type(rtype) .. ")", 3)
  end
  if #rtype == 0 or #rtype > 64 or not find(rtype, "^[%a_][%w_%.%-]*$") then
    error("riff.emit: bad record type " .. quote(rtype) .. " (a name of letters, digits, '_', '.', '-', "
      .. "at most 64 bytes, starting with a letter or '_')", 3)
  end
  if nvalid >= 4096 then valid_types, nvalid = {}, 0 end
  valid_types[rtype], nvalid = true, nvalid + 1
end

-- Encode one record; `sec`/`nsec` is the packet time, or nil for wall time.
local function encode(rtype, fields, sec, nsec)
  local buf = { "\1", sec and pack("<c1i8I4", "P", sec, nsec or 0) or "W", pack("<s2", rtype) }
  depth = 0
  if fields == nil then
    buf[4] = pack("<c1I4", "m", 0)
  elseif type(fields) ~= "table" then
    fail("bad argument #2 (the record's fields must be a table, got " .. type(fields) .. ")")
  else
    encode_map(buf, 3, fields, { [fields] = true })
  end
  return concat(buf)
end

M.encode = encode

-- emitter(hostfn) -> emit(type, fields): encodes and hands the record to riff.
-- `clock` is read for the packet time; by default riff.packet (sec is nil
-- outside packets, in setup and deinit).
function M.emitter(hostfn, clock)
  local R = rawget(_G, "riff")
  local function now()
    local p = clock or (R and R.packet)
    if not p then return nil end
    local sec = p.sec
    if sec == nil then return nil end
    return sec, p.nsec
  end
  return function(rtype, fields)
    check_type(rtype)
    local sec, nsec = now()
    local ok, rec = pcall(encode, rtype, fields, sec, nsec)
    if not ok then
      if type(rec) == "table" and rec[Fail] then error(rec.msg, 2) end
      error(rec, 0)
    end
    hostfn(rec)
  end
end

return M
