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
-- end, so a file gives the same lines on every run. Its figures are the
-- whole run's with any --workers N: each worker keeps riff.counter totals
-- (packets, live sessions), worker 1 prints the lines during the run from
-- the counters' totals (the other workers' as of their last batch), and
-- the last line is the merged report of every worker's final figures.
-- Every worker hears every DNS answer (plugin.dns_log overhears port 53), so
-- sessions are named as with one worker.
-- Copy this file to change the settings below.

local pipeline = require "pipeline"
local current = require "proto.current"
local dns_log = require "plugin.dns_log"
local sessions = require "plugin.sessions"
local app_id = require "plugin.app_id"

sessions.idle_timeout = 600   -- TrafficAnalyzer's tcp_timeout
sessions.udp_timeout = 600    -- and udp_timeout
app_id.app_timeout = 500      -- and app_timeout

local status = { name = "status", interval = 10, printed = 0, count = 0, noted = -math.huge }
local packets = riff.counter("traffic.packets")
local tcp_live, udp_live, app_live = riff.counter("traffic.tcp"), riff.counter("traffic.udp"), riff.counter("traffic.app")
local first_worker = riff.worker.index == 1

local function line(queue, tcp_n, udp_n, app_n)
  io.stderr:write(string.format("queue size: %d, TCP sess: %d, UDP sess: %d, APP sess: %d\n", queue, tcp_n, udp_n, app_n))
end

-- This worker's figures, into its counters (riff publishes them at the end
-- of each batch). Once a second of capture time is enough for the other
-- workers' view, and keeps the per-packet path a field update.
function status:note(ts)
  local tcp_n, udp_n = sessions.counts()
  tcp_live:set(tcp_n)
  udp_live:set(udp_n)
  app_live:set(app_id:active(ts))
  packets:set(self.count)
  self.noted = ts
end

function status:line(ts)
  self:note(ts)
  local total = packets:total()
  line(total - self.printed, tcp_live:total(), udp_live:total(), app_live:total())
  self.printed = total
end

function status:push(stream)
  -- The plugins before this one decoded the packet, so current.ts() is this
  -- packet's time (read once per packet, whoever asks first).
  local ts = current.ts()
  local nxt = self.next
  if not nxt then
    self.next = (ts // self.interval + 1) * self.interval
  elseif ts >= nxt then
    if first_worker then self:line(ts) end
    self.next = (ts // self.interval + 1) * self.interval
  end
  if ts - self.noted >= 1 then self:note(ts) end
  self.last = ts
  -- Counted after the line: the packet that passes a boundary opens the next interval.
  self.count = self.count + 1
end

-- The last line: every worker's final figures, merged. Counts add; the
-- app sessions are client/app pairs, which two workers can share (two
-- flows of one client to one app), so they merge as a set, each pair at
-- its latest time, and are counted against the run's last packet.
function status:collect()
  if not self.last then return { seen = false } end
  local tcp_n, udp_n = sessions.counts()
  local apps = {}
  if app_id._apps then
    for k, ts in app_id._apps:pairs() do apps[k] = ts end
  end
  return { seen = true, last = self.last, packets = self.count, printed = self.printed,
    tcp = tcp_n, udp = udp_n, apps = apps }
end

function status:merge(a, b)
  if not b.seen then return a end
  if not a.seen then return b end
  for k, ts in pairs(b.apps) do
    if not a.apps[k] or a.apps[k] < ts then a.apps[k] = ts end
  end
  a.last = math.max(a.last, b.last)
  a.packets, a.printed = a.packets + b.packets, a.printed + b.printed
  a.tcp, a.udp = a.tcp + b.tcp, a.udp + b.udp
  return a
end

function status:report(t)
  if not t.seen then return end
  local app_n = 0
  for _, ts in pairs(t.apps) do
    if t.last - ts <= app_id.app_timeout then app_n = app_n + 1 end
  end
  line(t.packets - t.printed, t.tcp, t.udp, app_n)
end

return pipeline:new { dns_log, sessions, app_id, status }
