-- service-watch: which request killed the service?
--
--   riff --lua lua/examples/service-watch.lua -i eth0 'tcp port 8080' [-o json:-]
--
-- The capture filter picks the service (its port). For every client IP the
-- pipeline keeps the last N requests it sent (reassembled client->server
-- bytes), watches whether the service still answers, and when it stops emits
-- ONE record, riff.emit("service_down", ...), naming the service, when it went
-- down, the evidence, the requests that preceded it and the one most likely
-- responsible. When the service answers again it emits "service_up" with the
-- downtime. With --workers N it asks riff to share packets out by service
-- (riff.shard "service"), so each service's connections all reach one worker
-- and give the records one worker would; see README (One answer from N
-- workers) for the one case where they can still differ.
--
-- A request is, for HTTP, the head plus its Content-Length (or chunked) body
-- (proto.http); for anything else, the bytes a client sent before the server
-- answered or the connection ended (or before it was quiet for
-- response_timeout seconds, with raw_timeouts on).
--
-- "Down" (symptoms; times are capture times):
--   syn_refused             a SYN answered by RST from the server
--   syn_unanswered          a SYN with no SYN/ACK for syn_timeout seconds, and
--                           no other connection accepted since that SYN
--   reset_after_request     the server reset a connection while a request on
--                           it was unanswered (requests sent after the server's
--                           own FIN do not count: a reset is TCP's answer then)
--   response_timeout        a complete request unanswered for response_timeout
--                           seconds, with nothing else answered since it was sent
--   closed_without_response the server closed (FIN) a connection while a
--                           request on it was unanswered
-- A symptom counts only once the service has been seen working (a SYN/ACK or
-- a response). down_on says which symptoms declare the service down at once;
-- the others are noted: they date the failure and make suspects, and they
-- declare it down (confirmed = false) if the capture ends with nothing
-- answered after them. Any response, and any SYN/ACK, clears noted symptoms.
-- The service went down at the earliest symptom since it last worked.
--
-- "Responsible": the last request sent to the service at or before the time
-- it went down that never got a response (reset, closed, timed out or still
-- waiting; requests the client itself abandoned only when there is no other),
-- else the last request before that time.
--
-- Records (JSON with -o json:-; times are float seconds since the epoch,
-- *_text the same in UTC):
--   service_down { service "ip:port", server_ip, server_port, down_at,
--     down_at_text, detected_at, evidence (the symptom that declared it),
--     evidence_text, confirmed, last_answer, last_accept,
--     symptoms [ { symptom, at, client, detail } ] (time order),
--     requests [ request ] (this service's last `report` requests sent up to
--       detected_at, across clients, OLDEST FIRST), order = "oldest_first",
--     responsible (a copy of the request marked responsible = true, or absent),
--     responsible_index (its 1-based position in requests), responsible_why }
--   request = { client "ip:port", client_ip, client_port, at (its last byte),
--     at_text, first_at, length (bytes sent), kept (bytes in text),
--     truncated, text (the bytes: printable ASCII as is, \\ \r \n \t, other
--     bytes \xHH), kind "http"|"raw", method, uri (http), complete (the
--     HTTP message was whole), gap (bytes lost to capture gaps),
--     outcome "answered"|"reset"|"closed"|"timeout"|"waiting"|"abandoned"|
--       "forgotten", answered_after (s, when answered), ended_after (s),
--     responsible (true on the one) }
--   service_up { service, server_ip, server_port, down_at, detected_at,
--     up_at, up_at_text, downtime (s, up_at - down_at), evidence
--     ("syn_ack"|"response"), client }

local settings = {
  N = 5,                    -- requests kept per client IP
  response_timeout = 5,     -- s a complete request may wait for its first response byte
  syn_timeout = 3,          -- s a SYN may wait for a SYN/ACK
  max_clients = 1000,       -- client IPs remembered; the least recently seen is forgotten first
  max_request_bytes = 4096, -- bytes kept of each request (the rest is only counted)
  report = 20,              -- requests listed in a service_down record
  server = nil,             -- "ip:port" (IPv6 "[ip]:port"): watch only that server; nil = all
  down_on = {               -- true: declares the service down at once; false: noted
    syn_refused = true, syn_unanswered = true, reset_after_request = true,
    response_timeout = true, closed_without_response = false,
  },
  log = true,               -- one line on stderr per down/up, besides the record
  idle_timeout = 300,       -- s: idle connections are forgotten (flow.tcp)
  max_sessions = 100000,    -- connections tracked at once (flow.tcp)
  raw_timeouts = false,     -- true: a non-HTTP request unanswered for response_timeout is a
                            -- response_timeout too (for request/response protocols whose
                            -- server answered such requests before; off: BGP, syslog...
                            -- send without replies)
  max_head_bytes = 65536,   -- an HTTP head longer than this is kept as raw bytes
  sweep_every = 0.25,       -- s of capture time between timeout checks
}

riff.shard("service")

local tcp = require "flow.tcp"
local decode = require "proto.packet"
local http = require "proto.http"
local array = require("riff.record").array

local S = settings
local sfmt, sub, find, gmatch, gsub, byte, concat, mmin, mfloor =
      string.format, string.sub, string.find, string.gmatch, string.gsub, string.byte, table.concat, math.min, math.floor

---------------------------------------------------------------------------
-- Text helpers
---------------------------------------------------------------------------
local ESC = {}
for i = 0, 255 do ESC[string.char(i)] = sfmt("\\x%02x", i) end
ESC["\\"], ESC["\r"], ESC["\n"], ESC["\t"] = "\\\\", "\\r", "\\n", "\\t"
local function escape(s) return (gsub(s, "[%c\128-\255\\]", ESC)) end

-- The first n characters of an escaped text, never ending inside an escape
-- ("\r" or "\x0d" kept whole or left out), with "..." when it was cut.
local function preview(text, n)
  if #text <= n then return text end
  local i = 1
  while true do
    local len = 1
    if byte(text, i) == 92 then len = byte(text, i + 1) == 120 and 4 or 2 end
    if i + len - 1 > n then break end
    i = i + len
  end
  return sub(text, 1, i - 1) .. "..."
end

local function timetext(t)
  if not t then return nil end
  local sec = mfloor(t)
  local us = mfloor((t - sec) * 1e6 + 0.5)
  if us >= 1000000 then sec, us = sec + 1, us - 1000000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. sfmt(".%06dZ", us)
end

local function hostport(ip, port)
  if ip and find(ip, ":", 1, true) then return sfmt("[%s]:%d", ip, port) end
  return sfmt("%s:%d", tostring(ip), port or 0)
end

local function log(fmt, ...)
  if S.log then io.stderr:write("service-watch: ", sfmt(fmt, ...), "\n") end
end

---------------------------------------------------------------------------
-- Clients: the last N finished requests of each client IP, in a bounded LRU
---------------------------------------------------------------------------
local clients, nclients = {}, 0
local lru = { } -- sentinel of a doubly linked list, most recent after it
lru.next, lru.prev = lru, lru
local seq = 0

local function unlink(c) c.prev.next, c.next.prev = c.next, c.prev end
local function push_front(c) c.next, c.prev = lru.next, lru; lru.next.prev = c; lru.next = c end

local function client(ip)
  local c = clients[ip]
  if c then
    unlink(c)
  else
    c = { ip = ip, reqs = {}, n = 0 }
    clients[ip] = c
    nclients = nclients + 1
    if nclients > S.max_clients then
      local old = lru.prev
      unlink(old)
      clients[old.ip] = nil
      nclients = nclients - 1
    end
  end
  push_front(c)
  return c
end

local function remember(r)
  local c = client(r.client_ip)
  c.n = c.n + 1
  c.reqs[(c.n - 1) % S.N + 1] = r
end

-- This service's remembered requests sent up to `upto`, oldest first.
local function history(svc, upto)
  local all = {}
  for _, c in pairs(clients) do
    for _, r in pairs(c.reqs) do
      if r.svc == svc and r.at <= upto then all[#all + 1] = r end
    end
  end
  table.sort(all, function(a, b) return a.seq < b.seq end)
  return all
end

---------------------------------------------------------------------------
-- Services and their health
---------------------------------------------------------------------------
local services = {}
local now, live = 0, false
local watch = {} -- connections with something that can time out: conn -> true

local function service(conn)
  local key = hostport(conn.server_ip, conn.server_port)
  if S.server and key ~= S.server then return nil end
  local svc = services[key]
  if not svc then
    svc = { key = key, ip = conn.server_ip, port = conn.server_port, state = "unknown", run = {} }
    services[key] = svc
  end
  return svc
end

local function request_record(r, svc)
  local text = concat(r.parts)
  return {
    client = hostport(r.client_ip, r.client_port), client_ip = r.client_ip, client_port = r.client_port,
    at = r.at, at_text = timetext(r.at), first_at = r.first,
    length = r.len, kept = #text, truncated = r.len > #text, text = escape(text),
    kind = r.kind, method = r.method and escape(r.method), uri = r.uri and escape(r.uri), complete = r.complete or false, gap = r.gap,
    outcome = r.outcome or (r.answered and "answered") or "waiting",
    answered_after = r.t_answer and (r.t_answer - r.at) or nil,
    ended_after = r.t_end and (r.t_end - r.at) or nil,
  }
end

local SERVER_FAILURE = { reset = true, closed = true, timeout = true, waiting = true }

local function pick_responsible(list, since)
  local best, best_i, fallback, fallback_i, last, last_i
  for i, r in ipairs(list) do
    if r.at <= since then
      last, last_i = r, i
      if not r.answered then
        if SERVER_FAILURE[r.outcome or "waiting"] then best, best_i = r, i else fallback, fallback_i = r, i end
      end
    end
  end
  local function describe(r)
    local o = r.outcome or "waiting"
    if o == "reset" then return sfmt("no response; the server reset the connection %.3f s after it", r.t_end - r.at)
    elseif o == "closed" then return sfmt("no response; the server closed the connection %.3f s after it", r.t_end - r.at)
    elseif o == "timeout" then return sfmt("no response within %g s", S.response_timeout)
    elseif o == "abandoned" then return "no response before the client gave up (no request failed on the server's side)"
    else return "no response yet when the service went down" end
  end
  if best then return best, best_i, "last request before the failure that never got a response: " .. describe(best) end
  if fallback then return fallback, fallback_i, "last request before the failure without a response: " .. describe(fallback) end
  if last then return last, last_i, "every request before the failure was answered; this is the last one before it" end
  return nil, nil, "no request was seen before the failure"
end

local EVIDENCE = {
  syn_refused = "a SYN was answered by RST from the server (it had accepted connections before)",
  syn_unanswered = "a SYN got no SYN/ACK within %g s",
  reset_after_request = "the server reset a connection while a request on it was unanswered",
  response_timeout = "a complete request got no response within %g s",
  closed_without_response = "the server closed a connection while a request on it was unanswered",
}

local function declare(svc, symptom, confirmed)
  local since = now
  for _, s in ipairs(svc.run) do if s.at < since then since = s.at end end
  svc.state, svc.down_at, svc.detected_at = "down", since, now
  local reqs = history(svc, now)
  while #reqs > S.report do table.remove(reqs, 1) end
  local resp, idx, why = pick_responsible(reqs, since)
  local list = array()
  for i, r in ipairs(reqs) do
    local rec = request_record(r, svc)
    if i == idx then rec.responsible = true end
    list[i] = rec
  end
  local symptoms = array()
  table.sort(svc.run, function(a, b) return a.at < b.at end)
  for i, s in ipairs(svc.run) do
    symptoms[i] = { symptom = s.symptom, at = s.at, at_text = timetext(s.at), client = s.client, detail = s.detail }
  end
  local text = sfmt(EVIDENCE[symptom], symptom == "syn_unanswered" and S.syn_timeout or S.response_timeout)
  if not confirmed then text = text .. "; not confirmed: the capture ended with nothing answered after it" end
  riff.emit("service_down", {
    service = svc.key, server_ip = svc.ip, server_port = svc.port,
    down_at = since, down_at_text = timetext(since), detected_at = now,
    evidence = symptom, evidence_text = text, confirmed = confirmed,
    last_answer = svc.last_answer, last_accept = svc.last_accept,
    symptoms = symptoms, requests = list, order = "oldest_first",
    responsible = idx and list[idx] or nil, responsible_index = idx, responsible_why = why,
  })
  local r = idx and list[idx]
  log("%s DOWN since %s (%s); %d requests before it; responsible: %s", svc.key, timetext(since), symptom, #list,
    r and sfmt("%s at %s: %s", r.client, r.at_text, preview(r.text, 120)) or "none")
end

-- A symptom at time `at` (when what failed was sent or happened).
local function symptom(svc, kind, at, client, detail)
  if svc.state ~= "up" then return end -- never seen working, or already reported
  local run = svc.run
  if #run < 50 then run[#run + 1] = { symptom = kind, at = at, client = client, detail = detail } end
  if S.down_on[kind] then declare(svc, kind, true) end
end

local function good(svc, how, conn)
  if how == "syn_ack" then svc.last_accept = now else svc.last_answer = now end
  if svc.state == "down" then
    local up = {
      service = svc.key, server_ip = svc.ip, server_port = svc.port,
      down_at = svc.down_at, detected_at = svc.detected_at, up_at = now, up_at_text = timetext(now),
      downtime = now - svc.down_at, evidence = how, client = hostport(conn.client_ip, conn.client_port),
    }
    riff.emit("service_up", up)
    log("%s UP at %s (%s) after %.3f s down", svc.key, up.up_at_text, how, up.downtime)
  end
  svc.state = "up"
  if #svc.run > 0 then svc.run = {} end
end

---------------------------------------------------------------------------
-- Requests: client->server bytes cut into requests
---------------------------------------------------------------------------
local function state(conn)
  local u = conn.user
  if u.queue == nil then
    u.svc = service(conn) or false
    u.queue = {} -- finished requests waiting for their response, oldest first
  end
  return u
end

local function keep(r, s)
  local n = #s
  if n == 0 then return end
  r.len = r.len + n
  local room = S.max_request_bytes - r.kept
  if room > 0 then
    if n > room then s = sub(s, 1, room) end
    r.parts[#r.parts + 1] = s
    r.kept = r.kept + #s
  end
end

local function new_request(u)
  local r = { parts = {}, kept = 0, len = 0, first = now, last = now }
  u.cur = r
  return r
end

-- Ends the request being received. how: "http" (whole HTTP message: waits
-- for a response), "answered" (the server answered first), or an outcome
-- given by the caller ("reset", "closed", "timeout", "abandoned", ...).
local function finish(conn, u, how)
  local r = u.cur
  if not r then return nil end
  u.cur, u.need, u.chunk = nil, nil, nil
  if u.head then keep(r, u.head); u.head = nil end
  if r.len == 0 then return nil end
  seq = seq + 1
  r.seq, r.at, r.svc = seq, r.last, u.svc
  r.client_ip, r.client_port = conn.client_ip, conn.client_port
  r.after_fin = u.server_fin
  r.kind = r.kind or "raw"
  remember(r)
  if how == "http" then
    r.complete = true
    u.queue[#u.queue + 1] = r
  elseif how == "answered" then
    r.answered, r.t_answer, r.outcome = true, now, "answered"
  else
    r.outcome, r.t_end = how, now
  end
  return r
end

-- Chunked body: consumes what it can of data, returns the rest (or nil when
-- the body is not over yet) and whether the message ended.
local function chunked(r, ch, data)
  while #data > 0 do
    if ch.st == "data" then
      local n = mmin(ch.left, #data)
      keep(r, sub(data, 1, n))
      data, ch.left = sub(data, n + 1), ch.left - n
      if ch.left == 0 then ch.st = "size" end
    else -- "size" or "trailer": a line
      local nl = find(data, "\n", 1, true)
      if not nl then
        keep(r, data)
        ch.line = sub(ch.line .. data, -1024)
        return "", false
      end
      keep(r, sub(data, 1, nl))
      local line = ch.line .. sub(data, 1, nl - 1)
      data, ch.line = sub(data, nl + 1), ""
      if ch.st == "size" then
        local hex = line:match("^%s*(%x+)")
        if not hex then ch.st = "trailer" -- malformed: treat as the last chunk
        else
          local n = #hex > 12 and math.huge or tonumber(hex, 16)
          if n == 0 then ch.st = "trailer" else ch.st, ch.left = "data", n + 2 end
        end
      elseif line == "" or line == "\r" then
        return data, true
      end
    end
  end
  return data, false
end

local function looks_raw(s)
  local b = byte(s, 1)
  if not b or b < 65 or b > 90 then return true end
  return find(s, "[\r\n ]") ~= nil or #s > 40
end

local function c2s(conn, u, data)
  watch[conn] = true
  while #data > 0 do
    local r = u.cur or new_request(u)
    r.last = now
    if u.need then -- HTTP body with a length
      local n = mmin(u.need, #data)
      keep(r, sub(data, 1, n))
      data, u.need = sub(data, n + 1), u.need - n
      if u.need == 0 then finish(conn, u, "http") end
    elseif u.chunk then
      local over
      data, over = chunked(r, u.chunk, data)
      if over then finish(conn, u, "http") end
    elseif r.raw then
      keep(r, data)
      data = ""
    else
      local head = u.head and (u.head .. data) or data
      data = ""
      local h = http.parse(head)
      if h and h.request and h.complete then
        local he = h.header_end
        r.kind, r.method, r.uri = "http", h.method, h.uri
        u.head = nil
        keep(r, sub(head, 1, he - 1))
        data = sub(head, he)
        if h.chunked then u.chunk = { st = "size", line = "", left = 0 }
        elseif (h.content_length or 0) > 0 then u.need = h.content_length
        else finish(conn, u, "http") end
      elseif h and h.request and #head <= S.max_head_bytes then
        r.kind, r.method = "http", h.method
        u.head = head -- wait for the rest of the head
      elseif h and h.request or looks_raw(head) then
        r.raw = true
        u.head = nil
        keep(r, head)
      else
        u.head = head -- too short to tell yet
      end
    end
  end
end

-- Status lines in a chunk of server bytes: final responses, and whether
-- there was an informational (1xx) one.
local function status_lines(data)
  local final, info = 0, false
  for c in gmatch("\n" .. sub(data, 1, 65536), "\nHTTP/%d%.%d (%d)%d%d") do
    if c == "1" then info = true else final = final + 1 end
  end
  return final, info
end

local function s2c(conn, u, data)
  local svc = u.svc
  if svc then good(svc, "response", conn) end
  local c = u.cur
  local httpish = u.seen_http or (c and c.kind == "http")
  local n, info = status_lines(data)
  if n == 0 and info then return end -- 100 Continue and the like: not the answer
  if n > 0 then u.seen_http = true; httpish = true end
  local q = u.queue
  local also_cur = true
  if not httpish then
    n = math.huge -- not HTTP: the server answered everything sent so far
    if c and c.raw and svc then svc.raw_answers = true end
  elseif n == 0 then
    n, also_cur = 1, false -- more of a response: the oldest request is answered
  end
  while n > 0 and #q > 0 do
    local r = table.remove(q, 1)
    if not r.answered and not r.outcome then r.answered, r.t_answer, r.outcome = true, now, "answered" end
    n = n - 1
  end
  if n > 0 and c and (also_cur or #q == 0 and c.raw) then finish(conn, u, "answered") end
end

-- Marks every request of the connection still without a response (and the
-- bytes being received) with an outcome; returns the last one.
local function fail_pending(conn, u, outcome)
  local last
  local q = u.queue
  for i = 1, #q do
    local r = q[i]
    if not r.answered and not r.outcome then r.outcome, r.t_end = outcome, now end
    q[i] = nil
    last = r
  end
  local r = finish(conn, u, outcome)
  return r or last
end

local function server_fin(conn, u)
  local r = fail_pending(conn, u, "closed")
  u.server_fin = true
  if r and u.svc and not r.after_fin then
    symptom(u.svc, "closed_without_response", now, hostport(conn.client_ip, conn.client_port),
      sfmt("%d bytes sent at %s", r.len, timetext(r.at)))
  end
end

---------------------------------------------------------------------------
-- TCP
---------------------------------------------------------------------------
local cur_src, cur_sport -- the packet being processed, for on_close
local T

-- (flow.tcp calls on_open before it reads the packet's flags: every new
-- connection is watched; the sweep drops those with nothing pending.)
local function on_open(conn)
  local u = state(conn)
  if u.svc then watch[conn] = true end
end

local function on_data(conn, dir, data)
  local u = state(conn)
  if not u.svc then return end
  if dir == "c2s" then c2s(conn, u, data) else s2c(conn, u, data) end
end

local function on_gap(conn, dir, missing)
  local u = state(conn)
  if not u.svc then return end
  if dir == "s2c" then
    s2c(conn, u, "") -- the server sent something
  else
    local r = u.cur or new_request(u)
    r.gap = (r.gap or 0) + missing
    r.len = r.len + missing
    if u.need then
      u.need = u.need - missing
      if u.need <= 0 then finish(conn, u, "http") end
    else -- the message can no longer be followed: raw bytes from here on
      if u.head then keep(r, u.head); u.head = nil end
      u.chunk, r.raw = nil, true
    end
  end
end

local function on_close(conn, reason)
  local u = state(conn)
  watch[conn] = nil
  if not u.svc or u.closed then return end
  u.closed = true
  local svc = u.svc
  local who = hostport(conn.client_ip, conn.client_port)
  if reason == "rst" then
    local from_server = conn.rst_from == "server"
      or (conn.rst_from == nil and cur_src == conn.server_ip and cur_sport == conn.server_port)
    if from_server then
      if conn.syn and not conn.synack then
        fail_pending(conn, u, "reset")
        symptom(svc, "syn_refused", now, who, "SYN answered by RST")
      else
        local r = fail_pending(conn, u, "reset")
        if r and not r.after_fin then
          symptom(svc, "reset_after_request", now, who,
            sfmt("reset %.3f s after %d request bytes sent at %s", now - r.at, r.len, timetext(r.at)))
        end
      end
    else
      fail_pending(conn, u, "abandoned")
    end
  elseif reason == "fin" then
    fail_pending(conn, u, u.server_fin and "closed" or "abandoned")
  elseif reason == "end" then
    fail_pending(conn, u, "waiting")
  else -- timeout, evicted
    fail_pending(conn, u, "forgotten")
  end
end

T = tcp.new {
  idle_timeout = S.idle_timeout, max_sessions = S.max_sessions, reassemble = true,
  max_stream_bytes = 1 << 20, max_total_bytes = 64 << 20,
  on_open = on_open, on_data = on_data, on_gap = on_gap, on_close = on_close,
}

-- Timeouts: unanswered SYNs, unanswered requests, raw requests gone quiet.
local function sweep()
  for conn in pairs(watch) do
    local u = state(conn)
    local svc, busy = u.svc, false
    if svc and conn.syn and not conn.synack and not u.closed then
      if now - conn.first > S.syn_timeout then
        if not u.syn_late then
          u.syn_late = true
          if (svc.last_accept or -1) < conn.first then
            symptom(svc, "syn_unanswered", conn.first, hostport(conn.client_ip, conn.client_port),
              sfmt("no SYN/ACK %.3f s after the SYN", now - conn.first))
          end
        end
      else
        busy = true
      end
    end
    if svc then
      for _, r in ipairs(u.queue) do
        if not r.answered and not r.outcome then
          if now - r.at > S.response_timeout then
            r.outcome, r.t_end = "timeout", now
            if (svc.last_answer or -1) < r.at and not r.after_fin then
              symptom(svc, "response_timeout", r.at, hostport(conn.client_ip, conn.client_port),
                sfmt("%d bytes sent at %s, nothing back for %.3f s", r.len, timetext(r.at), now - r.at))
            end
          else
            busy = true
          end
        end
      end
      local c = u.cur
      if c and c.raw and not u.need and not u.chunk and S.raw_timeouts then
        if now - c.last > S.response_timeout then
          local r = finish(conn, u, "timeout")
          -- only for a service seen answering raw requests before
          if r and svc.raw_answers and (svc.last_answer or -1) < r.at and not r.after_fin then
            symptom(svc, "response_timeout", r.at, hostport(conn.client_ip, conn.client_port),
              sfmt("%d bytes (not HTTP) sent at %s, nothing back for %.3f s", r.len, timetext(r.at), now - r.at))
          end
        else
          busy = true
        end
      elseif c and not c.raw then
        busy = true -- an HTTP message still arriving: the client's business
      end
    end
    if not busy then watch[conn] = nil end
  end
end

---------------------------------------------------------------------------
-- The plugin
---------------------------------------------------------------------------
local next_sweep, last_ts = 0, nil
local watcher = {}

function watcher:match(data)
  local ts = riff.packet.ts
  now, live, last_ts = ts, riff.packet.arrival, ts
  local pkt = decode(data, riff.packet.linktype)
  local th, ip = pkt.tcp, pkt.ip
  if th and ip then
    cur_src, cur_sport = ip.src, th.sport
    local conn = T:packet(pkt, ts)
    if conn then
      local u = state(conn)
      local svc = u.svc
      if svc and th.sport == conn.server_port and ip.src == conn.server_ip then
        if th.syn and th.ack and not th.rst then good(svc, "syn_ack", conn) end
        if th.fin and not u.server_fin and not u.closed then server_fin(conn, u) end
      end
    end
  end
  if ts >= next_sweep then
    sweep()
    T:expire(ts)
    next_sweep = ts + S.sweep_every
  end
  return nil, nil
end

function watcher:deinit()
  if not last_ts then return end
  -- Live capture stamps packets with the wall clock: time went on after the
  -- last packet. A file ends at its last packet.
  -- With --workers N the run may have ended in another worker's packet.
  now = live and math.max(last_ts, os.time()) or riff.run_end() or last_ts
  sweep()
  T:flush(now)
  for _, svc in pairs(services) do
    if svc.state == "up" and #svc.run > 0 then
      local first = svc.run[1]
      for _, s in ipairs(svc.run) do if s.at < first.at then first = s end end
      declare(svc, first.symptom, false)
    elseif svc.state == "down" then
      log("%s still down at the end of the capture (down since %s)", svc.key, timetext(svc.down_at))
    end
  end
end

watcher.settings = settings
return { watcher }
