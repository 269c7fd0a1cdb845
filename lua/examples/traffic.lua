-- TrafficAnalyzer for riff: DNS log, TCP sessions and UDP flows, application
-- labels, and a status line every `interval` seconds of capture time.
--
--   riff --lua lua/examples/traffic.lua -i eth0 -o sqlite:traffic.db
--   riff -q --lua lua/examples/traffic.lua -r capture.pcap -o json:-
--
-- Records (see each plugin's header): dns_query, dns_response (plugin.dns_log),
-- app (plugin.app_id), tcp_session, udp_flow (plugin.sessions). Where
-- TrafficAnalyzer queued packets for a thread and wrote MySQL, riff hands
-- packets to Lua from its capture thread and writes records through its
-- outputs (-o sqlite:F for a database, -o json:- for JSON lines).
--
-- The status line goes to stderr:
--   queue size: 1234, TCP sess: 56, UDP sess: 7, APP sess: 8
-- riff has no Python-style packet queue (its ring between the capture
-- thread and Lua is not visible to Lua), so "queue size" is the number of
-- packets processed since the previous status line. The line is printed
-- when a packet's capture time passes the next multiple of the interval
-- (live, that means when the next packet arrives), and once more at the
-- end, so a file gives the same lines on every run. With --workers N each
-- worker prints its own lines (its own share of the sessions), and a DNS
-- answer names later sessions only in the worker that saw it.
-- Copy this file to change the settings below.

local pipeline = require "pipeline"
local current = require "proto.current"
local dns_log = require "plugin.dns_log"
local sessions = require "plugin.sessions"
local app_id = require "plugin.app_id"

sessions.idle_timeout = 600   -- TrafficAnalyzer's tcp_timeout
sessions.udp_timeout = 600    -- and udp_timeout
app_id.app_timeout = 500      -- and app_timeout

local status = { name = "status", interval = 10, packets = 0 }

function status:line()
  local tcp_n, udp_n = sessions.counts()
  io.stderr:write(string.format("queue size: %d, TCP sess: %d, UDP sess: %d, APP sess: %d\n",
    self.packets, tcp_n, udp_n, app_id:active(self.last)))
  self.packets = 0
end

function status:push(stream)
  -- The plugins before this one decoded the packet, so current.ts() is this
  -- packet's time (read once per packet, whoever asks first).
  local ts = current.ts()
  local nxt = self.next
  if not nxt then
    self.next = (ts // self.interval + 1) * self.interval
  elseif ts >= nxt then
    self:line()
    self.next = (ts // self.interval + 1) * self.interval
  end
  self.last = ts
  self.packets = self.packets + 1
end

function status:deinit()
  if self.last then self:line() end
end

return pipeline:new { dns_log, sessions, app_id, status }
