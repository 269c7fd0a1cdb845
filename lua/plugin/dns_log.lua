-- plugin.dns_log: DNS queries and answers as records, and the reverse cache
-- (answer address -> name) that names the servers of later sessions —
-- TrafficAnalyzer's dns.py for riff.
--
--   local dns_log = require "plugin.dns_log"
--   return { dns_log }                       -- riff -q --lua this.lua -r f.pcap -o json:-
--
-- Records (riff.emit):
--   dns_query:    client_mac, client_ip, client_port, server_ip, server_port,
--                 transport ("udp" | "tcp"), id, domain, qtype ("A", "AAAA", or
--                 the number), time
--   dns_response: the same (client = the side that asked), rcode ("NOERROR",
--                 "NXDOMAIN", ...), answers = list of { name, type, ttl, data }
--                 (at most max_answers), answer_count, rtt (seconds since the
--                 matching query, when it was seen), time
-- Every A/AAAA answer goes into flow.dnscache as address -> question name.
-- DNS over UDP on `ports` (default {53}); over TCP (reassembled with
-- flow.tcp, length-prefixed messages) unless tcp = false. Messages that do
-- not parse as DNS with a question are skipped and counted (self.skipped).
-- Fields: ports, tcp, cache_size (reverse cache entries, default 10000),
-- max_answers (32), query_record, response_record.
-- With --workers N riff hands every worker the DNS packets (on `ports`) of
-- the flows it does not own too, to overhear(): they fill its reverse cache
-- and nothing else, so a later connection in any worker is named as with
-- one worker.

local current = require "proto.current"
local dns = require "proto.dns"
local dnscache = require "flow.dnscache"
local lru = require "flow.lru"
local tcp = require "flow.tcp"
local addr = require "proto.addr"

local unpack, sub, byte, type = string.unpack, string.sub, string.byte, type
local get = current.get
local types = dns.types

local RCODES = { [0] = "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
  "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE" }

local dns_log = {
  name = "dns_log", ports = { 53 }, tcp = true, cache_size = 10000, max_answers = 32,
  query_record = "dns_query", response_record = "dns_response",
  queries = 0, responses = 0, skipped = 0,
}

-- One parsed message. Addresses: src sent it, dst receives it.
function dns_log:message(msg, transport, src_mac, src_ip, src_port, dst_mac, dst_ip, dst_port, ts, overheard)
  local q = msg.questions[1]
  if overheard then
    if q and msg.qr then
      local an = msg.answers
      for i = 1, #an do
        local rr = an[i]
        if (rr.type == 1 or rr.type == 28) and type(rr.data) == "string" then dnscache.add(rr.data, q.name, rr.name, ts) end
      end
    end
    return
  end
  if not q then
    self.skipped = self.skipped + 1
    return
  end
  local qtype = types[q.type] or q.type
  if not msg.qr then
    self.queries = self.queries + 1
    self._pending:set(src_ip .. "|" .. src_port .. "|" .. msg.id, ts)
    riff.emit(self.query_record, {
      client_mac = src_mac, client_ip = src_ip, client_port = src_port,
      server_ip = dst_ip, server_port = dst_port, transport = transport,
      id = msg.id, domain = q.name, qtype = qtype, time = ts,
    })
    return
  end
  self.responses = self.responses + 1
  local answers, an = {}, msg.answers
  for i = 1, #an do
    local rr = an[i]
    local t = rr.type
    if t == 1 or t == 28 then
      if type(rr.data) == "string" then dnscache.add(rr.data, q.name, rr.name, ts) end
    end
    if i <= self.max_answers then
      answers[i] = { name = rr.name, type = types[t] or t, ttl = rr.ttl, data = rr.data }
    end
  end
  local pkey = dst_ip .. "|" .. dst_port .. "|" .. msg.id
  local qts = self._pending:remove(pkey)
  riff.emit(self.response_record, {
    client_mac = dst_mac, client_ip = dst_ip, client_port = dst_port,
    server_ip = src_ip, server_port = src_port, transport = transport,
    id = msg.id, domain = q.name, qtype = qtype, rcode = RCODES[msg.rcode] or msg.rcode,
    answers = #answers > 0 and answers or nil, answer_count = #an,
    rtt = qts and ts - qts or nil, time = ts,
  })
end

-- DNS over TCP: messages are length-prefixed; collect each direction's bytes.
local function tcp_data(self, conn, dir, data, overheard)
  local u = conn.user
  local buf = (u[dir] or "") .. data
  local pos = 1
  while #buf - pos + 1 >= 2 do
    local len = unpack(">I2", buf, pos)
    if #buf - pos - 1 < len then break end
    local msg = dns.parse(buf, pos + 2, pos + 1 + len)
    local ts = current.ts()
    if dir == "c2s" then
      self:message(msg, "tcp", conn.client_mac, conn.client_ip, conn.client_port,
        conn.server_mac, conn.server_ip, conn.server_port, ts, overheard)
    else
      self:message(msg, "tcp", conn.server_mac, conn.server_ip, conn.server_port,
        conn.client_mac, conn.client_ip, conn.client_port, ts, overheard)
    end
    pos = pos + 2 + len
  end
  buf = sub(buf, pos)
  if #buf > 65537 then buf = "" end
  u[dir] = buf
end

function dns_log:setup()
  local ports = {}
  for _, p in ipairs(self.ports) do ports[p] = true end
  self._ports = ports
  self._pending = lru.new(4096)
  dnscache.configure{ max = self.cache_size }
  if self.tcp then
    local function tracker(overheard)
      return tcp.new{
        reassemble = true, idle_timeout = 120, max_sessions = 10000,
        max_stream_bytes = 1 << 17, max_total_bytes = 16 << 20,
        on_data = function(conn, dir, data) tcp_data(self, conn, dir, data, overheard) end,
        on_gap = function(conn, dir) conn.user[dir] = nil end,
      }
    end
    self._tcp = tracker(false)
    -- Other workers' DNS-over-TCP connections, reassembled apart from ours.
    if riff.worker.count > 1 then self._heard_tcp = tracker(true) end
  end
end

function dns_log:overhear_ports() return self.ports end

function dns_log:push(stream, overheard)
  local pkt = get(stream)
  if not pkt then return end
  local p = pkt._l4 -- 6 / 17 when a whole TCP / UDP header is there
  if p ~= 17 and p ~= 6 then return end
  local po = pkt.payload_offset
  if not po then return end
  local d = pkt.data
  local a1, a2, b1, b2 = byte(d, pkt.l4_offset, pkt.l4_offset + 3)
  local sp, dp = a1 << 8 | a2, b1 << 8 | b2
  local ports = self._ports
  if not (ports[sp] or ports[dp]) then return end
  if p == 6 then
    local t = overheard and self._heard_tcp or not overheard and self._tcp
    if t then t:packet(pkt, current.ts()) end
    return
  end
  local msg = dns.parse(d, po, pkt.payload_end)
  local o3 = pkt.l3_offset
  local sip, dip
  if byte(d, o3) >> 4 == 4 then sip, dip = addr.ip4(d, o3 + 12), addr.ip4(d, o3 + 16)
  else sip, dip = addr.ip6(d, o3 + 8), addr.ip6(d, o3 + 24) end
  local smac, dmac
  if pkt.linktype == 1 then smac, dmac = addr.mac(d, 7), addr.mac(d, 1) end
  self:message(msg, "udp", smac, sip, sp, dmac, dip, dp, current.ts(), overheard)
end

function dns_log:overhear(stream) return self:push(stream, true) end

-- Ends this worker's flows (records of its own): nothing to merge over workers.
dns_log.per_flow_deinit = true
function dns_log:deinit()
  if self._tcp then self._tcp:flush() end
end

return dns_log
