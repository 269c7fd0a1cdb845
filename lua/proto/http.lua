-- proto.http: HTTP/1.x request/response head parser, never raising errors.
--
--   local http = require "proto.http"
--   local h = http.parse(payload)                                 -- whole string
--   local h = http.parse(pkt.data, pkt.payload_offset, pkt.payload_end) -- slice, no copy
--   if h and h.request then print(h.method, h.host, h.uri) end
--
-- Returns nil (cheaply) when the bytes do not start like an HTTP/1.x message
-- (a request line "METHOD SP target SP HTTP/x.y" or a status line "HTTP/x.y
-- SP code"); otherwise a table:
--   request = true, method, uri, version ("1.1")       for a request, or
--   response = true, version, status (number), reason  for a response
--   headers       lowercased name -> value (repeated headers joined by ", ";
--                 values trimmed; obsolete line folding joined with a space)
--   names, values the header lines in order: names[i] as sent, values[i]
--   host, user_agent, content_type, content_length (number; nil if absent
--                 or not a valid number), chunked (Transfer-Encoding: chunked)
--   header_end    position (in the string given) of the first body byte,
--                 just past the blank line; nil when the head is incomplete
--   body_length   bytes of body present in this slice (0 when incomplete)
--   complete      true when the blank line ending the head was seen
--   partial       true when the slice ended first (a head split across
--                 segments: what was there is parsed)
--   malformed     reason, for a bad header line (parsing stops there)
-- Lines may end in CRLF or bare LF. At most 200 header lines are read.

local find, match, lower, sub, byte, type, tonumber, tointeger =
      string.find, string.match, string.lower, string.sub, string.byte, type, tonumber, math.tointeger

local M = {}
local MAX_HEADERS = 200
-- Methods recognised in a request line cut short (a full line needs none).
local METHODS = {}
for m in ("GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK "
  .. "REPORT SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE M-SEARCH PRI"):gmatch("%S+") do METHODS[m] = true end
M.methods = METHODS

-- Lowercased header names, remembered (a few hundred at most).
local LOWER, nlower = {}, 0
local function lowername(name)
  local l = LOWER[name]
  if l then return l end
  l = lower(name)
  if nlower >= 512 then LOWER, nlower = {}, 0 end
  nlower = nlower + 1
  LOWER[name] = l
  return l
end

local TOKEN = "^[!#-'*+%-.0-9A-Z^_`a-z|~]+$"

local function parse(s, start, stop)
  if type(s) ~= "string" then return nil end
  start = tointeger(start) or 1
  stop = tointeger(stop) or #s
  if stop > #s then stop = #s end
  if start < 1 then start = 1 end
  local b = byte(s, start)
  -- Every method token and "HTTP/" start with an uppercase letter.
  if not b or b < 65 or b > 90 or start > stop then return nil end

  local lf = find(s, "\n", start, true)
  if lf and lf > stop then lf = nil end
  local lend = lf or stop + 1 -- end of the start line (exclusive)
  local h, e
  if b == 72 and find(s, "^HTTP/%d", start) then
    if not lf then
      if start + 5 > stop then return nil end
      return { response = true, partial = true, headers = {}, names = {}, values = {}, body_length = 0 }
    end
    local a, x, y, z
    a, e, x, y, z = find(s, "^HTTP/(%d%.%d) +(%d%d%d)([^\r\n]*)", start)
    if not a then return nil end
    h = { response = true, version = x, status = tonumber(y), reason = match(z, "^[ \t]*(.-)[ \t]*$") }
  else
    -- A method is a short token followed by a space.
    local sp = find(s, " ", start, true)
    if not sp or sp >= lend or sp - start > 32 then return nil end
    local method = sub(s, start, sp - 1)
    if not lf then
      if METHODS[method] then
        return { request = true, partial = true, method = method, headers = {}, names = {}, values = {}, body_length = 0 }
      end
      return nil
    end
    if not find(method, TOKEN) then return nil end
    local a, x, y
    a, e, x, y = find(s, "^ +([^ \r\n]+) +HTTP/(%d%.%d)[ \t]*", sp)
    if not a then return nil end
    h = { request = true, method = method, uri = x, version = y }
  end

  local headers, names, values, k = {}, {}, {}, 0
  h.headers, h.names, h.values = headers, names, values
  -- e is the end of the start line's text; the line ends at lf.
  if lf > e + 1 and not (lf == e + 2 and byte(s, e + 1) == 13) then
    h.malformed = "junk after the start line"
  end
  local pos, nl = lf + 1, nil
  while true do
    if pos > stop then h.partial, h.body_length = true, 0 break end
    local c = byte(s, pos)
    if c == 10 then pos = pos + 1 h.complete = true break end
    if c == 13 then
      if pos + 1 > stop then h.partial, h.body_length = true, 0 break end
      if byte(s, pos + 1) == 10 then pos = pos + 2 h.complete = true break end
    end
    nl = find(s, "\n", pos, true)
    if not nl or nl > stop then h.partial, h.body_length = true, 0 break end
    local le = nl - 1
    if byte(s, le) == 13 then le = le - 1 end
    -- value: from after the colon's blanks to the line end, blanks trimmed
    local ve = le
    local t = byte(s, ve)
    while ve >= pos and (t == 32 or t == 9) do ve = ve - 1 t = byte(s, ve) end
    if (c == 32 or c == 9) and k > 0 then
      -- obs-fold: continues the previous header's value
      local vs = pos
      t = byte(s, vs)
      while vs <= ve and (t == 32 or t == 9) do vs = vs + 1 t = byte(s, vs) end
      local more = sub(s, vs, ve)
      values[k] = values[k] .. " " .. more
      local ln = lowername(names[k])
      headers[ln] = headers[ln] .. " " .. more
    else
      local colon = find(s, ":", pos, true)
      if not colon or colon > le or colon == pos then h.malformed = "bad header line" break end
      local ne = colon - 1
      t = byte(s, ne)
      while t == 32 or t == 9 do ne = ne - 1 t = byte(s, ne) end
      local name = sub(s, pos, ne)
      if find(name, "[ \t\r]") then h.malformed = "bad header line" break end
      local vs = colon + 1
      t = byte(s, vs)
      while vs <= ve and (t == 32 or t == 9) do vs = vs + 1 t = byte(s, vs) end
      local value = sub(s, vs, ve)
      k = k + 1
      if k > MAX_HEADERS then h.malformed = "more than " .. MAX_HEADERS .. " header lines" break end
      names[k], values[k] = name, value
      local ln = lowername(name)
      local old = headers[ln]
      headers[ln] = old and (old .. ", " .. value) or value
    end
    pos = nl + 1
  end
  if h.complete then
    h.header_end = pos
    h.body_length = stop - pos + 1
  end
  h.host, h.user_agent, h.content_type = headers.host, headers["user-agent"], headers["content-type"]
  local cl = headers["content-length"]
  if cl then
    local v = match(cl, "^%d+$")
    h.content_length = v and tointeger(tonumber(v)) or nil
  end
  local te = headers["transfer-encoding"]
  if te and find(lower(te), "chunked", 1, true) then h.chunked = true end
  return h
end
M.parse = parse

return M
