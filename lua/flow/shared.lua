-- flow.shared: one flow.tcp and one flow.udp tracker per Lua VM, shared by
-- the plugins of a pipeline. plugin.sessions logs the sessions and
-- plugin.app_id labels them; with a tracker each they would both look up
-- every packet's connection and disagree about timeouts. Here the first
-- plugin to hand over a packet runs it through the tracker and the others
-- get the same conn back.
--
--   local shared = require "flow.shared"
--   local current = require "proto.current"
--   shared.configure{ idle_timeout = 300, udp_timeout = 120, max_sessions = 100000, udp_max_sessions = 50000,
--                     tcp = { ...more flow.tcp options }, udp = { ...flow.udp options } }
--   shared.on("open", function(conn, kind) end)          -- kind "tcp" | "udp"
--   shared.on("close", function(conn, kind, reason) end)
--   local conn, kind = shared.packet(current(stream))    -- once per packet, memoized on pkt
--   shared.tcp(), shared.udp()   -- the trackers (t.count, t.stats, t:conns())
--   shared.now                   -- capture time of the last TCP/UDP packet
--   shared.flush()               -- deinit: closes everything (idempotent)
--
-- configure() merges; it takes effect when the trackers are created, at the
-- first packet, so call it from setup(). Listeners run in registration order.
-- Memory: a TCP connection takes about 1.2 KB of Lua heap and a UDP flow
-- 0.8 KB, so the defaults stay under 160 MB of the 256 MB --lua-memory.
-- The memo is proto.current's packet (its serial number and pkt table): pass
-- proto.current's pkt, not a table of your own decoding, or a packet counts
-- twice.

local tcp, udp = require "flow.tcp", require "flow.udp"
local current = require "proto.current"

local M = { now = nil }
local opts = { idle_timeout = 300, udp_timeout = 120, max_sessions = 100000, udp_max_sessions = 50000, tcp = {}, udp = {} }
local L = { open = {}, close = {} }
local T, U
local last_pkt, last_serial, last_conn, last_kind

function M.configure(o)
  for k, v in pairs(o or {}) do
    if (k == "tcp" or k == "udp") and type(v) == "table" then
      for k2, v2 in pairs(v) do opts[k][k2] = v2 end
    else
      opts[k] = v
    end
  end
end

function M.on(event, fn)
  local list = L[event]
  if not list then error("flow.shared.on: unknown event " .. tostring(event) .. " (open, close)", 2) end
  list[#list + 1] = fn
end

local function fan(list, kind)
  return function(c, reason)
    for i = 1, #list do list[i](c, kind, reason) end
  end
end

-- A tracker with its own options, the shared defaults under them, and the
-- plugins' open/close listeners.
local function tracker(mod, kind, own, idle_timeout, max_sessions)
  local o = {}
  for k, v in pairs(own) do o[k] = v end
  o.idle_timeout = o.idle_timeout or idle_timeout
  o.max_sessions = o.max_sessions or max_sessions
  o.on_open, o.on_close = fan(L.open, kind), fan(L.close, kind)
  return mod.new(o)
end

function M.tcp()
  T = T or tracker(tcp, "tcp", opts.tcp, opts.idle_timeout, opts.max_sessions)
  return T
end

function M.udp()
  U = U or tracker(udp, "udp", opts.udp, opts.udp_timeout, opts.udp_max_sessions)
  return U
end

function M.packet(pkt)
  local serial = current.serial
  if pkt == last_pkt and serial == last_serial then return last_conn, last_kind end
  last_pkt, last_serial = pkt, serial
  local p = pkt and pkt._l4 -- 6 / 17 when the whole TCP / UDP header is there
  local conn, kind
  if p == 6 then
    local now = current.clock()
    M.now = now
    conn, kind = (T or M.tcp()):packet(pkt, current.ts(), now), "tcp"
  elseif p == 17 then
    local now = current.clock()
    M.now = now
    conn, kind = (U or M.udp()):packet(pkt, current.ts(), now), "udp"
  end
  if not conn then kind = nil end
  last_conn, last_kind = conn, kind
  return conn, kind
end

function M.flush()
  -- With --workers N, the run's last TCP/UDP packet may have been another
  -- worker's: flows idle past their timeout then end "timeout", as with one.
  local ts = M.now
  local _, run_ts = riff.run_end()
  if run_ts and ts then ts = run_ts end
  if T then T:flush(ts) end
  if U then U:flush(ts) end
  last_pkt, last_conn, last_kind = nil, nil, nil
end

return M
