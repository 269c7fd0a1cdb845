-- plugin.sessions: TCP sessions and UDP flows as records, TrafficAnalyzer's
-- tcp.py/udp.py for riff. Each connection becomes one record when it ends
-- (FIN both ways, RST, idle timeout, eviction, or the end of the run):
--
--   riff --lua lua/examples/traffic.lua -r capture.pcap -o json:-      # in a pipeline, or alone:
--   riff -q --lua my.lua -r capture.pcap -o sqlite:sessions.db
--     -- my.lua:
--     local sessions = require "plugin.sessions"
--     sessions.idle_timeout = 600
--     return { sessions }
--
-- Records (riff.emit), one column each in SQLite:
--   tcp_session: client_mac, client_ip, client_port, server_ip, server_port,
--     server_mac, server_name (reverse DNS from flow.dnscache, or TLS SNI /
--     HTTP Host when plugin.app_id saw one; "host" would clash with the
--     outputs' own host field), app (plugin.app_id's label), time_start,
--     time_end, duration (seconds, capture time), pkts_c2s, pkts_s2c,
--     bytes_c2s, bytes_s2c (TCP payload), flags_c2s, flags_s2c (flags seen,
--     tcpdump letters in bit order: F S R P . U E W N), retrans_c2s,
--     retrans_s2c, reason ("fin", "rst", "timeout", "evicted", "end",
--     "reused"), rst_from, midstream, handshake (SYN and SYN-ACK seen)
--   udp_flow: the same addresses, server_name, app, times and counts, and reason.
-- Fields (set before setup): tcp, udp (booleans, default true: which to
-- record), idle_timeout (300), udp_timeout (120), max_sessions (100000 TCP
-- connections) and udp_max_sessions (50000 UDP flows): beyond them an idle
-- one is closed "evicted" (about 1.2 KB / 0.8 KB of Lua heap each), and
-- tcp_record / udp_record (the record type names).
-- Tracking is flow.shared's (one tracker per VM, also used by plugin.app_id),
-- so memory is bounded by max_sessions whatever the traffic.

local current = require "proto.current"
local shared = require "flow.shared"
local dnscache = require "flow.dnscache"
local get = current.get

local sessions = {
  name = "sessions", tcp = true, udp = true,
  idle_timeout = 300, udp_timeout = 120, max_sessions = 100000, udp_max_sessions = 50000,
  tcp_record = "tcp_session", udp_record = "udp_flow",
}

local FLAG_LETTERS = { "F", "S", "R", "P", ".", "U", "E", "W", "N" }
local flag_text = {}
local function flags(f)
  local t = flag_text[f]
  if t then return t end
  local s = {}
  for i = 1, #FLAG_LETTERS do
    if f & (1 << (i - 1)) ~= 0 then s[#s + 1] = FLAG_LETTERS[i] end
  end
  t = table.concat(s)
  if f >= 512 then t = t .. string.format("+0x%03x", f & 0xe00) end
  flag_text[f] = t
  return t
end
sessions.flags = flags

local function on_open(c)
  local u = c.user
  if u.host == nil then u.host = dnscache.lookup(c.server_ip) or false end
end

function sessions:record(c, kind, reason)
  local u = c.user
  local pk, by = c.pkts, c.bytes
  local r = {
    client_mac = c.client_mac, client_ip = c.client_ip, client_port = c.client_port,
    server_ip = c.server_ip, server_port = c.server_port, server_mac = c.server_mac,
    server_name = u.host or nil, app = u.app or nil,
    time_start = c.first, time_end = c.last, duration = c.last - c.first,
    pkts_c2s = pk.c2s, pkts_s2c = pk.s2c, bytes_c2s = by.c2s, bytes_s2c = by.s2c,
    reason = reason,
  }
  if kind == "tcp" then
    local fs, rt = c.flags_seen, c.retrans
    r.flags_c2s, r.flags_s2c = flags(fs.c2s), flags(fs.s2c)
    r.retrans_c2s, r.retrans_s2c = rt.c2s, rt.s2c
    r.rst_from, r.midstream, r.handshake = c.rst_from, c.midstream, c.syn and c.synack
  end
  return r
end

function sessions:setup()
  shared.configure{ idle_timeout = self.idle_timeout, udp_timeout = self.udp_timeout,
    max_sessions = self.max_sessions, udp_max_sessions = self.udp_max_sessions }
  shared.on("open", on_open)
  local emit, tcp_on, udp_on, trec, urec = riff.emit, self.tcp, self.udp, self.tcp_record, self.udp_record
  shared.on("close", function(c, kind, reason)
    if kind == "tcp" then
      if tcp_on then emit(trec, self:record(c, kind, reason)) end
    elseif udp_on then
      emit(urec, self:record(c, kind, reason))
    end
  end)
end

function sessions:push(stream)
  local pkt = get(stream)
  if pkt then shared.packet(pkt) end
end

-- Ends this worker's flows (records of its own): nothing to merge over workers.
sessions.per_flow_deinit = true
function sessions:deinit()
  shared.flush()
end

-- For status lines: live sessions per protocol.
function sessions.counts()
  return shared.tcp().count, shared.udp().count
end

return sessions
