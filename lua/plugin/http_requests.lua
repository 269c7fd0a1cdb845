-- plugin.http_requests: prints each complete HTTP request (head and body)
-- that reaches one TCP port — the README's "which request crashed the
-- service?" question, answered from reassembled streams, so a request split
-- over segments, retransmitted or reordered prints once and whole.
--
--   local http_requests = require "plugin.http_requests"
--   http_requests.port = 8080                  -- default 80
--   return { http_requests }
--   -- riff -q --lua this.lua -i eth0 'tcp port 8080'
--
-- Each request is printed as
--   === HTTP request 17.2 10.0.0.12:51000 -> 10.0.0.80:80 at 2017-09-08 06:00:01.252440 UTC
-- where 17.2 is the connection's 2nd request and 17 the connection's id
-- (riff.packet.id of its first packet): numbers that are the same whatever
-- --workers says, since they come from the capture, not from a count kept
-- by the worker that saw the connection.
--   GET /index.html HTTP/1.1
--   Host: ...
--   <blank line, then the body: Content-Length bytes, or the chunks up to the last>
-- (bytes as they are; `show = "text"` prints bytes outside printable ASCII
-- and whitespace as ".", like tcpdump -A). With `record` set to a type name
-- each request is also emitted (client_ip, client_port, server_ip,
-- server_port, flow and request (the two numbers above), method, uri, host,
-- head, body, time). Requests still
-- incomplete at the end (or cut by a capture gap) are printed with
-- "(incomplete)". Fields: port, show ("raw" | "text"), max_request (bytes
-- buffered per connection before a request is printed as incomplete,
-- default 1 MiB), record (nil).
-- Uses flow.tcp (its own tracker: only the chosen port is reassembled) and
-- proto.http for the head.

local current = require "proto.current"
local tcp = require "flow.tcp"
local http = require "proto.http"

local byte, sub, find, gsub, sfmt, date, floor = string.byte, string.sub, string.find, string.gsub, string.format,
  os.date, math.floor

local http_requests = { name = "http_requests", port = 80, show = "raw", max_request = 1 << 20, record = nil, count = 0 }

local function when(ts)
  local s = floor(ts)
  return date("!%Y-%m-%d %H:%M:%S", s) .. sfmt(".%06d UTC", floor((ts - s) * 1e6 + 0.5))
end

function http_requests:print(conn, req, h, incomplete)
  self.count = self.count + 1
  local u = conn.user
  local k = (u.requests or 0) + 1
  u.requests = k
  local ts = u.req_ts or conn.last
  local text = req
  if self.show == "text" then text = gsub(req, "[^\32-\126\r\n]", ".") end
  io.write(sfmt("=== HTTP request %s.%d %s:%d -> %s:%d at %s%s\n", tostring(conn.id), k, conn.client_ip, conn.client_port,
    conn.server_ip, conn.server_port, when(ts), incomplete and " (incomplete)" or ""), text, "\n")
  if self.record then
    local he = h and h.header_end
    riff.emit(self.record, {
      client_ip = conn.client_ip, client_port = conn.client_port, server_ip = conn.server_ip,
      server_port = conn.server_port, flow = conn.id, request = k, method = h and h.method, uri = h and h.uri, host = nil,
      http_host = h and h.host, head = he and sub(req, 1, he - 1) or req, body = he and sub(req, he) or "",
      incomplete = incomplete or nil, time = ts,
    })
  end
end

-- Length of the chunked body starting at pos, or nil if not all there yet.
local function chunked_end(buf, pos)
  while true do
    local a, b, size = find(buf, "^(%x+)[^\r\n]*\r?\n", pos)
    if not a then return nil end
    local n = tonumber(size, 16)
    if n == 0 then
      -- trailers up to the blank line
      local p = b + 1
      while true do
        local _, e2 = find(buf, "^\r?\n", p)
        if e2 then return e2 end
        local _, e3 = find(buf, "^[^\n]*\n", p)
        if not e3 then return nil end
        p = e3 + 1
      end
    end
    local after = b + n + 1
    local _, e = find(buf, "^\r?\n", after)
    if not e then return nil end
    pos = e + 1
  end
end

-- Prints the complete requests at the start of the buffered bytes; returns the rest.
function http_requests:take(conn, buf)
  while #buf > 0 do
    local h = http.parse(buf)
    if not h or not h.request then
      -- Not a request line (a gap, or not HTTP): drop up to the next line
      -- that starts like one.
      local nl = find(buf, "\n%u+ [^\r\n]* HTTP/%d", 1)
      if not nl then return "" end
      buf = sub(buf, nl + 1)
    elseif not h.complete then
      if #buf > self.max_request then self:print(conn, buf, h, true) return "" end
      return buf
    else
      local stop
      if h.chunked then
        stop = chunked_end(buf, h.header_end)
      else
        stop = h.header_end - 1 + (h.content_length or 0)
        if stop > #buf then stop = nil end
      end
      if not stop then
        if #buf > self.max_request then self:print(conn, buf, h, true) return "" end
        return buf
      end
      self:print(conn, sub(buf, 1, stop), h)
      buf = sub(buf, stop + 1)
      conn.user.req_ts = nil
    end
  end
  return buf
end

function http_requests:setup()
  local port = self.port
  self._t = tcp.new{
    reassemble = function(c) return c.server_port == port end,
    idle_timeout = 300,
    on_data = function(conn, dir, data)
      if dir ~= "c2s" then return end
      local u = conn.user
      if not u.req_ts then u.req_ts = current.ts() end
      u.buf = self:take(conn, (u.buf or "") .. data)
      if u.buf == "" then u.req_ts = nil end
    end,
    on_gap = function(conn, dir)
      if dir ~= "c2s" then return end
      local u = conn.user
      if u.buf and u.buf ~= "" then self:print(conn, u.buf, http.parse(u.buf), true) end
      u.buf, u.req_ts = "", nil
    end,
    on_close = function(conn)
      local u = conn.user
      if u.buf and u.buf ~= "" then self:print(conn, u.buf, http.parse(u.buf), true) end
      u.buf = nil
    end,
  }
end

function http_requests:push(stream)
  local pkt = current.get(stream)
  if not pkt or pkt._l4 ~= 6 then return end
  local o4 = pkt.l4_offset
  local a1, a2, b1, b2 = byte(pkt.data, o4, o4 + 3)
  local port = self.port
  if (a1 << 8 | a2) ~= port and (b1 << 8 | b2) ~= port then return end
  self._t:packet(pkt, current.ts())
end

-- Ends this worker's flows (records of its own): nothing to merge over workers.
http_requests.per_flow_deinit = true
function http_requests:deinit()
  self._t:flush()
end

return http_requests
