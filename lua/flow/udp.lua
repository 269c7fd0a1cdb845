-- flow.udp: UDP flows (both directions of an address/port pair) for riff
-- plugins; the UDP counterpart of flow.tcp, with the same record fields so
-- one plugin can log both.
--
--   local udp = require "flow.udp"
--   local u = udp.new{
--     idle_timeout = 120,          -- seconds of capture time without a packet
--     max_sessions = 100000,       -- beyond: an idle one (the oldest, roughly) is closed "evicted"
--     on_open = function(flow) end,
--     on_close = function(flow, reason) end, -- "timeout" | "evicted" | "end"
--   }
--   local flow = u:packet(pkt, ts)   -- pkt from proto.packet decode(); nil when not UDP
--   u:expire(ts); u:flush(ts); for flow in u:conns() do ... end
--
-- UDP has no handshake, so the client is the sender of the first packet
-- seen, except that a first packet sent from a well-known port (< 1024) to
-- a higher one is taken as a reply (the capture began after the request).
-- Time is capture time (riff.packet.ts), as in flow.tcp, and the timeout
-- rule is applied when a packet arrives, so replays are identical.
-- IP fragments after the first carry no ports and are not counted.
--
-- flow fields: key, id (riff.packet.id of its first packet), client_ip, client_port, server_ip, server_port,
--   client_mac, server_mac (Ethernet only), first, last, state ("open",
--   "closed"), pkts {c2s=, s2c=}, bytes {c2s=, s2c=} (UDP payload bytes as the
--   UDP length gives them, or the IP payload when that length is damaged), dir (of the packet just processed), reason (once
--   closed), user = {} (for plugins). Integer keys 1-6 are this module's
--   (private state in the array part: about 0.8 KB of Lua heap per flow).
-- u.count: open flows; u.stats: packets, opened, closed, evicted, timeouts.

local addr = require "proto.addr"
local idle = require "flow.idle"
local clock = idle.clock
local keys = require "flow.keys"
local unlink, push_front = idle.unlink, idle.push_front
local byte, sub, setmetatable = string.byte, string.sub, setmetatable
local mac, ip4, ip6 = addr.mac, addr.ip4, addr.ip6

-- Private state in the array part, as in flow.tcp (LT, N, P: flow.idle's).
local CEP <const>, SEP <const>, LT <const>, N <const>, P <const>, K6 <const> = 1, 2, 3, 4, 5, 6

local M = {}
local U = {}
U.__index = U

local function nop() end

function M.new(o)
  o = o or {}
  return setmetatable({
    idle_timeout = o.idle_timeout or 120,
    max_sessions = math.max(1, math.tointeger(o.max_sessions) or 100000),
    check_interval = o.check_interval or 1,
    on_open = o.on_open or nop,
    on_close = o.on_close or nop,
    count = 0,
    stats = { packets = 0, opened = 0, closed = 0, evicted = 0, timeouts = 0 },
    _m4 = {}, _m6 = {}, _live = idle.list(), _next = nil,
  }, U)
end

local function close(self, f, reason)
  if f.state == "closed" then return end
  unlink(f)
  keys.remove(self, f[CEP], f[SEP], f[K6] or nil)
  self.count = self.count - 1
  f.state, f.reason = "closed", reason
  local s = self.stats
  s.closed = s.closed + 1
  if reason == "timeout" then s.timeouts = s.timeouts + 1 elseif reason == "evicted" then s.evicted = s.evicted + 1 end
  self.on_close(f, reason)
end

function U:expire(ts)
  ts = ts or riff.packet.ts
  self._next = ts + self.check_interval
  idle.expire(self._live, ts, self.idle_timeout, function(f) close(self, f, "timeout") end)
end

function U:flush(ts)
  if ts then self:expire(ts) end
  local live = self._live
  while live[P] ~= live do close(self, live[P], "end") end
end

function U:conns() -- in no particular order
  return idle.each(self._live)
end

function U:packet(pkt, ts, now)
  if pkt._l4 ~= 17 then return nil end -- a whole UDP header (not a later fragment)
  local po = pkt.payload_offset
  local d, o3, o4 = pkt.data, pkt.l3_offset, pkt.l4_offset
  -- Idleness by the capture's clock, `now` (flow.shared hands it over).
  if not now then ts, now = clock(ts) end
  local nx = self._next
  if not nx then self._next = now + self.check_interval elseif now >= nx then self:expire(now) end

  local p1, p2, p3, p4, u1, u2 = byte(d, o4, o4 + 5)
  local sp, dp, ulen = p1 << 8 | p2, p3 << 8 | p4, u1 << 8 | u2
  -- A UDP length below 8, or past the IP payload (malformed), is not the
  -- datagram's: then what the IP payload holds of it, as tshark counts.
  local plen = (ulen >= 8 and not pkt.malformed) and ulen - 8 or (pkt.payload_end - po + 1)
  local vihl, _, _, _, _, _, _, _, _, _, _, _, s1, s2, s3, s4, t1, t2, t3, t4 = byte(d, o3, o3 + 19)
  local v6 = vihl >> 4 == 6
  local f, a, b, key6
  if v6 then
    a = sub(d, o3 + 8, o3 + 23) .. sub(d, o4, o4 + 1)
    b = sub(d, o3 + 24, o3 + 39) .. sub(d, o4 + 2, o4 + 3)
    key6 = a < b and (a .. b) or (b .. a)
    f = self._m6[key6]
  else
    a = s1 << 40 | s2 << 32 | s3 << 24 | s4 << 16 | sp
    b = t1 << 40 | t2 << 32 | t3 << 24 | t4 << 16 | dp
    local lo, hi
    if sp < dp or (sp == dp and a < b) then lo, hi = a, b else lo, hi = b, a end
    local inner = self._m4[lo]
    f = inner and inner[hi]
  end
  if f and now - f.seen > self.idle_timeout then
    close(self, f, "timeout")
    f = nil
  end
  local c2s
  if f then
    c2s = f[CEP] == a
  else
    c2s = not (sp < 1024 and dp >= 1024)
    local sip, dip
    if v6 then sip, dip = ip6(d, o3 + 8), ip6(d, o3 + 24) else sip, dip = ip4(d, o3 + 12), ip4(d, o3 + 16) end
    local smac, dmac
    if pkt.linktype == 1 then smac, dmac = mac(d, 7), mac(d, 1) end
    local cep, sep, cport, sport = a, b, sp, dp
    if not c2s then cep, sep, sip, dip, smac, dmac, cport, sport = b, a, dip, sip, dmac, smac, dp, sp end
    local key
    if v6 then key = "[" .. sip .. "]:" .. cport .. "-[" .. dip .. "]:" .. sport
    else key = sip .. ":" .. cport .. "-" .. dip .. ":" .. sport end
    f = { -- every field in the constructor: sized once, never rehashed
      cep, sep, now, false, false, key6 or false,
      key = key, client_ip = sip, client_port = cport, server_ip = dip, server_port = sport,
      client_mac = smac or false, server_mac = dmac or false,
      id = keys.first_packet_id(), first = ts, last = ts, seen = now, state = "open", dir = "c2s",
      pkts = { c2s = 0, s2c = 0 }, bytes = { c2s = 0, s2c = 0 }, user = {},
    }
    if not smac then f.client_mac, f.server_mac = nil, nil end
    keys.put(self, f, a, b, key6)
    while self.count >= self.max_sessions do close(self, idle.oldest(self._live), "evicted") end
    push_front(self._live, f)
    self.count = self.count + 1
    self.stats.opened = self.stats.opened + 1
    self.on_open(f)
  end
  self.stats.packets = self.stats.packets + 1
  local dk = c2s and "c2s" or "s2c"
  -- A capture's times may step back (merged or multi-interface captures): last never does.
  f.dir = dk
  if ts > f.last then f.last = ts end
  f.seen = now
  local t = f.pkts
  t[dk] = t[dk] + 1
  t = f.bytes
  t[dk] = t[dk] + plen
  return f
end

return M
