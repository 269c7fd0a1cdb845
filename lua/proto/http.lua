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
  if not lf then
    -- The start line itself is cut short: say what it is, if that is clear.
    if find(s, "^HTTP/%d", start) and start + 5 <= stop then
      return { response = true, partial = true, headers = {}, names = {}, values = {}, body_length = 0 }
    end
    local m, me, meth = find(s, "^(%u+) ", start)
    if m and me <= stop and METHODS[meth] then
      return { request = true, partial = true, method = meth, headers = {}, names = {}, values = {}, body_length = 0 }
    end
    return nil
  end
  local h
  local a, e, x, y, z = find(s, "^HTTP/(%d%.%d) +(%d%d%d)([^\r\n]*)", start)
  if a then
    h = { response = true, version = x, status = tonumber(y), reason = match(z, "^[ \t]*(.-)[ \t]*$") }
  else
    a, e, x, y, z = find(s, "^([!#-'*+%-.0-9A-Z^_`a-z|~]+) +([^ \r\n]+) +HTTP/(%d%.%d)[ \t]*", start)
    if not a then return nil end
    h = { request = true, method = x, uri = y, version = z }
  end

  local headers, names, values, k = {}, {}, {}, 0
  h.headers, h.names, h.values = headers, names, values
  -- e is the end of the start line's text; the line ends at lf.
  if lf > e + 1 and not (lf == e + 2 and byte(s, e + 1) == 13) then
    h.malformed = "junk after the start line"
  end
  local pos, nl = lf + 1, nil
  local last
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
    if (c == 32 or c == 9) and last then
      -- obs-fold: continues the previous header's value
      local more = match(sub(s, pos, le), "^[ \t]*(.-)[ \t]*$")
      values[k] = values[k] .. " " .. more
      local ln = lower(names[k])
      headers[ln] = headers[ln] .. " " .. more
    else
      local n1, n2, name, value = find(s, "^([^:\r\n \t]+)[ \t]*:[ \t]*([^\r\n]*)", pos)
      if not n1 or n2 > le then
        h.malformed = "bad header line"
        break
      end
      value = match(value, "^(.-)[ \t]*$")
      k = k + 1
      if k > MAX_HEADERS then h.malformed = "more than " .. MAX_HEADERS .. " header lines" break end
      names[k], values[k] = name, value
      local ln = lower(name)
      local old = headers[ln]
      headers[ln] = old and (old .. ", " .. value) or value
      last = true
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
