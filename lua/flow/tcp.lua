-- flow.tcp: TCP connection tracking and stream reassembly for riff plugins.
--
--   local tcp = require "flow.tcp"
--   local t = tcp.new{
--     idle_timeout = 300,          -- seconds of capture time (riff.packet.ts): a file replays the same way
--     max_sessions = 100000,       -- beyond: an idle one (the oldest, roughly) is closed "evicted"
--     reassemble = false,          -- true, or function(conn) -> bool (asked once, at open)
--     max_stream_bytes = 1 << 20,  -- out-of-order bytes buffered per direction
--     max_total_bytes = 64 << 20,  -- out-of-order bytes buffered over all connections
--     linger = 10,                 -- seconds a closed ("fin"/"rst") connection absorbs late packets
--     on_open = function(conn) end,
--     on_data = function(conn, dir, data) end, -- in order, each byte once ("c2s" | "s2c")
--     on_gap = function(conn, dir, missing) end, -- bytes that will never be delivered
--     on_close = function(conn, reason) end,   -- "fin" | "rst" | "timeout" | "evicted" | "end" | "reused"
--   }
--   local conn = t:packet(pkt, ts[, now])  -- pkt from proto.packet decode(); nil when not TCP; ts, now default to riff.packet.ts, .clock
--   t:expire(ts)                    -- close connections idle past idle_timeout
--   t:flush(ts)                     -- end of run: expire(ts), then close the rest with "end"
--   for conn in t:conns() do ... end -- live connections
--
-- Why it is built this way:
-- * Time is the packet's capture time, never the wall clock, so a file gives
--   the same sessions, timeouts and evictions on every run; idleness goes by
--   the capture's clock (proto.current's clock: the latest time so far, the
--   same in every worker) where a capture's times step back. A connection is
--   "timed out" when now - conn.seen > idle_timeout; t:packet applies that
--   rule itself to a connection it is about to update, so the outcome does
--   not depend on how often expire runs (t:packet runs it once per second of
--   capture time).
-- * Direction: the client is the SYN sender (or the SYN-ACK receiver). A
--   connection first seen without SYN/SYN-ACK (conn.midstream, already open
--   at capture start) takes as its server the side on a well-known port
--   (< 1024) if only one is, else the lower port.
-- * Closing: RST closes at once ("rst", conn.rst_from = "client"|"server");
--   FIN both ways closes when both FINs are acknowledged ("fin"; without the
--   final ACK the connection closes at its idle timeout, still reason "fin").
--   Closed connections stay findable for `linger` seconds so the last ACK or
--   a retransmitted FIN does not open a phantom midstream connection; such
--   packets return the closed conn (state "closed") and count in
--   stats.late. A fresh SYN on a closed tuple opens a new connection; a SYN
--   with a new ISN on a live one closes the old one with "reused".
-- * Retransmissions (conn.retrans): a segment whose sequence space (payload,
--   SYN, FIN) was all seen before in its direction, unless it fills a hole
--   left by an earlier out-of-order segment; TCP keep-alives (one byte or
--   none at next-1) are not counted. This works with reassembly off, at the
--   cost of a little per-direction state.
-- * Reassembly (conn gets on_data only when `reassemble` says so): bytes are
--   delivered in sequence order, each once; overlapping retransmissions are
--   trimmed. Out-of-order segments wait in a per-direction list; when the
--   caps are exceeded, when the peer ACKs data never captured, or at close,
--   the missing range is reported with on_gap and delivery resumes after it.
--   Bytes the capture cut off (snap length) are gaps too.
--
-- conn fields: key ("cip:cport-sip:sport"), id (riff.packet.id of its first
--   packet: the same whatever --workers), client_ip, client_port, server_ip,
--   server_port, client_mac, server_mac (Ethernet only), first, last (ts),
--   state ("syn", "established", "fin", "closed"), syn, synack, midstream,
--   flags_seen {c2s=, s2c=} (OR of the 12 TCP flag bits), pkts {c2s=, s2c=},
--   bytes {c2s=, s2c=} (TCP payload bytes on the wire, retransmissions
--   included), retrans {c2s=, s2c=}, rst_from, reason (once closed), dir
--   (direction of the packet just processed), user = {} (for plugins; never
--   touched here). Integer keys are this module's (the connection's private
--   state lives in the array part), and syn, synack, midstream, rst_from and
--   reason are computed when read, so pairs(conn) does not list them.
-- Memory: about 1.2 KB of Lua heap per connection (plus what reassembly
-- buffers), so the default max_sessions stays near 120 MB. With --workers N
-- each worker has its own tracker; riff shares packets out by flow, so a
-- connection is always seen whole by one of them.
-- t.count: live connections; t.stats: packets, opened, closed, midstream,
--   evicted, timeouts, late, retrans, gaps, gap_bytes, delivered (bytes
--   given to on_data), buffered (bytes waiting now).

local addr = require "proto.addr"
local idle = require "flow.idle"
local clock = idle.clock
local keys = require "flow.keys"
local unlink, push_front, push_back = idle.unlink, idle.push_front, idle.push_back
local byte, sub, setmetatable, type, remove, insert =
      string.byte, string.sub, setmetatable, type, table.remove, table.insert
local mac, ip4, ip6 = addr.mac, addr.ip4, addr.ip6

local M32, HALF = 0xffffffff, 0x80000000

-- A connection's private state, in its array part (cheaper than named
-- fields, and never absent: false stands for "not set").
local CEP <const>, SEP <const>, LT <const>, N <const>, P <const> = 1, 2, 3, 4, 5 -- LT, N, P: flow.idle's
local ISN_C <const>, NX_C <const>, NX_S <const> = 6, 7, 8     -- client ISN; next seq seen per direction
local FIN_C <const>, FIN_S <const>, FA <const> = 9, 10, 11    -- FIN seq per direction; FINs acked (bits 1 c, 2 s)
local RA <const>, RS_C <const>, RS_S <const> = 12, 13, 14     -- reassembling; stream state per direction
local H_C <const>, H_S <const> = 15, 16                       -- holes per direction
local CLOSED_AT <const>, K6 <const> = 17, 18                  -- close time (tombstones); IPv6 map key
local BITS <const>, REASON <const> = 19, 20                   -- 1 syn, 2 synack, 4 midstream, 8 rst from client, 16 from server; close reason

-- Rarely read public fields are computed on read from the private state,
-- so that the named fields number 16 and fit the smallest hash part that
-- holds them (each connection is one table of about 0.7 KB, plus its
-- counters; 100,000 connections take about 120 MB of the Lua heap).
local LAZY = {
  syn = function(c) return c[BITS] & 1 ~= 0 end,
  synack = function(c) return c[BITS] & 2 ~= 0 end,
  midstream = function(c) return c[BITS] & 4 ~= 0 end,
  rst_from = function(c)
    local b = c[BITS]
    if b & 8 ~= 0 then return "client" elseif b & 16 ~= 0 then return "server" end
  end,
  reason = function(c) return c[REASON] or nil end,
}
local CONN = { __index = function(c, k) local f = LAZY[k] if f then return f(c) end end }

local M = {}
local T = {}
T.__index = T

local function nop() end

function M.new(o)
  o = o or {}
  return setmetatable({
    idle_timeout = o.idle_timeout or 300,
    max_sessions = math.max(1, math.tointeger(o.max_sessions) or 100000),
    reassemble = o.reassemble or false,
    max_stream_bytes = o.max_stream_bytes or (1 << 20),
    max_total_bytes = o.max_total_bytes or (64 << 20),
    linger = o.linger or 10,
    check_interval = o.check_interval or 1,
    on_open = o.on_open or nop,
    on_data = o.on_data or nop,
    on_gap = o.on_gap or nop,
    on_close = o.on_close or nop,
    count = 0,
    stats = { packets = 0, opened = 0, closed = 0, midstream = 0, evicted = 0, timeouts = 0, late = 0,
              retrans = 0, gaps = 0, gap_bytes = 0, delivered = 0, buffered = 0 },
    -- _live: open connections, lazily ordered (see expire); _tomb: closed
    -- ones still absorbing late packets, oldest first.
    _m4 = {}, _m6 = {}, _live = idle.list(), _tomb = idle.list(), _ntomb = 0, _next = nil,
  }, T)
end

local function unmap(self, c)
  keys.remove(self, c[CEP], c[SEP], c[K6] or nil)
end

-- a before b in sequence space
local function before(a, b) return ((a - b) & M32) >= HALF end

---------------------------------------------------------------------------
-- Holes: sequence ranges skipped by out-of-order segments, so a segment
-- filling one is not taken for a retransmission. A flat list s1, e1, s2, e2...
---------------------------------------------------------------------------
local MAX_HOLES = 8

local function add_hole(conn, hk, s, e)
  local h = conn[hk]
  if not h then h = {} conn[hk] = h end
  local n = #h
  if n >= 2 * MAX_HOLES then remove(h, 1) remove(h, 1) n = n - 2 end
  h[n + 1], h[n + 2] = s, e
end

-- Does [s, e) overlap a hole? Shrinks or splits the hole it fills.
local function fill_hole(conn, hk, s, e)
  local h = conn[hk]
  if not h then return false end
  for i = 1, #h, 2 do
    local hs, he = h[i], h[i + 1]
    if before(s, he) and before(hs, e) then
      local cut_lo, cut_hi = not before(hs, s), not before(e, he) -- covers hole start / end
      if cut_lo and cut_hi then
        remove(h, i) remove(h, i)
        if #h == 0 then conn[hk] = false end
      elseif cut_lo then
        h[i] = e
      elseif cut_hi then
        h[i + 1] = s
      else
        h[i + 1] = s
        if #h < 2 * MAX_HOLES then insert(h, i + 2, e) insert(h, i + 3, he) end
      end
      return true
    end
  end
  return false
end

---------------------------------------------------------------------------
-- Reassembly. rs = { nxt = next seq to deliver, n = buffered segments,
-- buf = buffered bytes, [i] = { seq, data, len } sorted by seq }.
---------------------------------------------------------------------------
local DIRS = { [true] = "c2s", [false] = "s2c" }

local function deliver(self, conn, dir, data)
  local n = #data
  if n > 0 then
    self.stats.delivered = self.stats.delivered + n
    self.on_data(conn, dir, data)
  end
end

local function gap(self, conn, dir, missing)
  if missing <= 0 then return end
  local s = self.stats
  s.gaps, s.gap_bytes = s.gaps + 1, s.gap_bytes + missing
  self.on_gap(conn, dir, missing)
end

-- Delivers buffered segments that are now in order.
local function drain(self, conn, dir, rs)
  local stats = self.stats
  while rs.n > 0 do
    local s = rs[1]
    local nxt = rs.nxt
    local rel = (s[1] - nxt) & M32
    if rel ~= 0 and rel < HALF then return end -- a hole before it
    remove(rs, 1)
    rs.n = rs.n - 1
    local data, len = s[2], s[3]
    rs.buf = rs.buf - #data
    stats.buffered = stats.buffered - #data
    if rel ~= 0 then -- starts before nxt: trim what was delivered
      local skip = (nxt - s[1]) & M32
      if skip < len then
        data, len = sub(data, skip + 1), len - skip
        deliver(self, conn, dir, data)
        gap(self, conn, dir, len - #data)
        rs.nxt = (nxt + len) & M32
      end
    else
      deliver(self, conn, dir, data)
      gap(self, conn, dir, len - #data)
      rs.nxt = (nxt + len) & M32
    end
  end
end

-- Gives up on the hole before the first buffered segment.
local function skip_hole(self, conn, dir, rs)
  local s = rs[1]
  local missing = (s[1] - rs.nxt) & M32
  if missing < HALF then
    gap(self, conn, dir, missing)
    rs.nxt = s[1]
  end
  drain(self, conn, dir, rs)
end

-- Payload bytes of one segment: seq of the first, data[p .. p+cap-1]
-- captured, seglen on the wire.
local function segment(self, conn, c2s, seq, d, p, cap, seglen)
  local rk = c2s and RS_C or RS_S
  local dir = DIRS[c2s]
  local rs = conn[rk]
  if not rs then rs = { nxt = seq, n = 0, buf = 0 } conn[rk] = rs end
  local nxt = rs.nxt
  local rel = (seq - nxt) & M32
  if rel >= HALF then -- starts before nxt
    local skip = (nxt - seq) & M32
    if skip >= seglen then return end
    seq, p, cap, seglen = nxt, p + skip, cap - skip, seglen - skip
    if cap < 0 then cap = 0 end
    rel = 0
  end
  if rel == 0 and rs.n == 0 then -- in order, nothing waiting: the usual case
    if cap > 0 then deliver(self, conn, dir, sub(d, p, p + cap - 1)) end
    if seglen > cap then gap(self, conn, dir, seglen - cap) end
    rs.nxt = (seq + seglen) & M32
    return
  end
  -- Out of order (or filling a hole): keep it, sorted by seq, then drain.
  local data = cap > 0 and sub(d, p, p + cap - 1) or ""
  local i = rs.n
  while i >= 1 do
    local r = (rs[i][1] - nxt) & M32
    if r == rel then
      if rs[i][3] >= seglen then return end -- the same segment again
      break
    end
    if r < rel then break end
    i = i - 1
  end
  insert(rs, i + 1, { seq, data, seglen })
  rs.n = rs.n + 1
  rs.buf = rs.buf + #data
  local stats = self.stats
  stats.buffered = stats.buffered + #data
  drain(self, conn, dir, rs)
  while rs.n > 0 and (rs.buf > self.max_stream_bytes or stats.buffered > self.max_total_bytes) do
    skip_hole(self, conn, dir, rs)
  end
end

-- The peer acknowledged up to `ack` of direction c2s: what was never
-- captured below it is a gap.
local function acked(self, conn, c2s, ack)
  local rs = conn[c2s and RS_C or RS_S]
  if not rs then return end
  local target = ack
  local fin = conn[c2s and FIN_C or FIN_S]
  if fin and before(fin, target) then target = fin end
  if not before(rs.nxt, target) then return end
  if rs.n > 0 then
    local s = rs[1]
    if not before(target, s[1]) then skip_hole(self, conn, DIRS[c2s], rs) end
  else
    gap(self, conn, DIRS[c2s], (target - rs.nxt) & M32)
    rs.nxt = target
  end
end

local function flush_streams(self, conn)
  local rs = conn[RS_C]
  if rs then while rs.n > 0 do skip_hole(self, conn, "c2s", rs) end end
  rs = conn[RS_S]
  if rs then while rs.n > 0 do skip_hole(self, conn, "s2c", rs) end end
end

---------------------------------------------------------------------------
-- Closing
---------------------------------------------------------------------------
local function bury(self, c) -- forget a closed connection now
  unlink(c)
  unmap(self, c)
  self._ntomb = self._ntomb - 1
end

local function close(self, conn, reason)
  if conn.state == "closed" then return end
  if conn[RA] then flush_streams(self, conn) end
  unlink(conn)
  self.count = self.count - 1
  conn.state, conn[REASON] = "closed", reason
  local s = self.stats
  s.closed = s.closed + 1
  if reason == "timeout" then s.timeouts = s.timeouts + 1
  elseif reason == "evicted" then s.evicted = s.evicted + 1 end
  conn[H_C], conn[H_S] = false, false
  if (reason == "fin" or reason == "rst") and self.linger > 0 then
    conn[CLOSED_AT] = conn.seen
    push_back(self._tomb, conn)
    self._ntomb = self._ntomb + 1
    while self._ntomb > self.max_sessions do bury(self, self._tomb[N]) end
  else
    unmap(self, conn)
  end
  self.on_close(conn, reason)
end

local function idle_reason(c)
  return (c[FIN_C] and c[FIN_S]) and "fin" or "timeout"
end

function T:expire(ts)
  ts = ts or riff.packet.ts
  self._next = ts + self.check_interval
  idle.expire(self._live, ts, self.idle_timeout, function(c) close(self, c, idle_reason(c)) end)
  local tomb, linger = self._tomb, self.linger
  while true do
    local c = tomb[N]
    if c == tomb or ts - c[CLOSED_AT] <= linger then break end
    bury(self, c)
  end
end

function T:flush(ts)
  if ts then self:expire(ts) end
  local live = self._live
  while live[P] ~= live do
    local c = live[P]
    close(self, c, (c[FIN_C] and c[FIN_S]) and "fin" or "end")
  end
  local tomb = self._tomb
  while tomb[N] ~= tomb do bury(self, tomb[N]) end
end

function T:conns() -- in no particular order
  return idle.each(self._live)
end

---------------------------------------------------------------------------
-- Per packet
---------------------------------------------------------------------------
local function new_conn(self, d, lt, o3, v6, a, b, key6, sp, dp, client_is_src, ts, syn, now)
  -- (every field in the constructor: the table is sized once, never rehashed)
  local sip, dip
  if v6 then sip, dip = ip6(d, o3 + 8), ip6(d, o3 + 24) else sip, dip = ip4(d, o3 + 12), ip4(d, o3 + 16) end
  local smac, dmac
  if lt == 1 then smac, dmac = mac(d, 7), mac(d, 1) end
  local cep, sep, cport, sport = a, b, sp, dp
  if not client_is_src then cep, sep, sip, dip, smac, dmac, cport, sport = b, a, dip, sip, dmac, smac, dp, sp end
  local key
  if v6 then key = "[" .. sip .. "]:" .. cport .. "-[" .. dip .. "]:" .. sport
  else key = sip .. ":" .. cport .. "-" .. dip .. ":" .. sport end
  local c = setmetatable({
    cep, sep, now, false, false, false, false, false, false,
    false, 0, false, false, false, false, false, false, key6 or false,
    syn and 0 or 4, false,
    key = key, client_ip = sip, client_port = cport, server_ip = dip, server_port = sport,
    client_mac = smac or false, server_mac = dmac or false,
    id = keys.first_packet_id(), first = ts, last = ts, seen = now, state = syn and "syn" or "established", dir = "c2s",
    flags_seen = { c2s = 0, s2c = 0 }, pkts = { c2s = 0, s2c = 0 },
    bytes = { c2s = 0, s2c = 0 }, retrans = { c2s = 0, s2c = 0 }, user = {},
  }, CONN)
  if not smac then c.client_mac, c.server_mac = nil, nil end
  keys.put(self, c, a, b, key6)
  while self.count >= self.max_sessions do close(self, idle.oldest(self._live), "evicted") end
  push_front(self._live, c)
  self.count = self.count + 1
  local s = self.stats
  s.opened = s.opened + 1
  if not syn then s.midstream = s.midstream + 1 end
  self.on_open(c)
  local r = self.reassemble
  if r == true or (type(r) == "function" and r(c)) then c[RA] = true end
  return c
end

-- An ACK from the c2s side (or not): once it covers the peer's FIN, that
-- FIN is acknowledged; both acknowledged closes the connection.
local function ack_fin(self, conn, c2s, ack)
  local pf = conn[c2s and FIN_S or FIN_C]
  if pf and not before(ack, (pf + 1) & M32) then
    local fa = conn[FA] | (c2s and 2 or 1) << 2
    conn[FA] = fa
    if fa & 12 == 12 then close(self, conn, "fin") end
  end
end

function T:packet(pkt, ts, now)
  -- _l4 is proto.packet's "a whole TCP header is there" (nil for fragments);
  -- reading only fields that are set keeps pkt's __index out of the way.
  if pkt._l4 ~= 6 or not pkt.payload_offset then return nil end
  local d, o3, o4 = pkt.data, pkt.l3_offset, pkt.l4_offset
  -- Idleness by the capture's clock, `now` (flow.shared hands it over).
  if not now then ts, now = clock(ts) end
  local nx = self._next
  if not nx then self._next = now + self.check_interval elseif now >= nx then self:expire(now) end

  -- string.byte of a run is several times cheaper than string.unpack here.
  local p1, p2, p3, p4, q1, q2, q3, q4, r1, r2, r3, r4, hl, f2 = byte(d, o4, o4 + 13)
  local sp, dp = p1 << 8 | p2, p3 << 8 | p4
  local seq = q1 << 24 | q2 << 16 | q3 << 8 | q4
  local ack = r1 << 24 | r2 << 16 | r3 << 8 | r4
  local fl = (hl & 15) << 8 | f2
  local dstart = o4 + (hl >> 4) * 4 -- first payload byte (even if not captured)
  -- Find the connection: IPv4 by integer endpoints (no allocation), IPv6
  -- by a string key.
  local conn, a, b, key6, seglen
  local vihl, _, l1, l2, i5, i6, _, _, _, _, _, _, s1, s2, s3, s4, t1, t2, t3, t4 = byte(d, o3, o3 + 19)
  local v6 = vihl >> 4 == 6
  if v6 then
    local plen = i5 << 8 | i6
    seglen = plen == 0 and (pkt.payload_end - dstart + 1) or (o3 + 40 + plen - dstart)
    a = sub(d, o3 + 8, o3 + 23) .. sub(d, o4, o4 + 1)
    b = sub(d, o3 + 24, o3 + 39) .. sub(d, o4 + 2, o4 + 3)
    key6 = a < b and (a .. b) or (b .. a)
    conn = self._m6[key6]
  else
    local tlen = l1 << 8 | l2
    seglen = tlen == 0 and (pkt.payload_end - dstart + 1) or (o3 + tlen - dstart)
    a = s1 << 40 | s2 << 32 | s3 << 24 | s4 << 16 | sp
    b = t1 << 40 | t2 << 32 | t3 << 24 | t4 << 16 | dp
    local lo, hi
    if sp < dp or (sp == dp and a < b) then lo, hi = a, b else lo, hi = b, a end
    local inner = self._m4[lo]
    conn = inner and inner[hi]
  end
  if seglen < 0 then seglen = 0 end

  local syn, ackf = fl & 2 ~= 0, fl & 16 ~= 0
  local c2s
  if conn then
    c2s = conn[CEP] == a
    local st = conn.state
    if st == "closed" then
      if syn and not ackf then
        bury(self, conn) -- a new connection on the same tuple
        conn = nil
      else
        self.stats.late = self.stats.late + 1
        conn.dir = c2s and "c2s" or "s2c"
        return conn
      end
    elseif now - conn.seen > self.idle_timeout then
      close(self, conn, idle_reason(conn))
      if conn[CLOSED_AT] then bury(self, conn) end
      conn = nil
    elseif syn and not ackf and st ~= "syn" and c2s and conn[ISN_C] ~= seq then
      close(self, conn, "reused")
      conn = nil
    end
  end
  if not conn then
    local client_is_src
    if syn then
      client_is_src = not ackf
    elseif dp < 1024 and sp >= 1024 then client_is_src = true
    elseif sp < 1024 and dp >= 1024 then client_is_src = false
    else client_is_src = sp >= dp end
    conn = new_conn(self, d, pkt.linktype, o3, v6, a, b, key6, sp, dp, client_is_src, ts, syn, now)
    c2s = client_is_src
  end

  local stats = self.stats
  stats.packets = stats.packets + 1
  local dk = c2s and "c2s" or "s2c"
  conn.dir = dk
  -- A capture's times may step back (merged or multi-interface captures): last never does.
  if ts > conn.last then conn.last = ts end
  conn.seen = now
  local t = conn.pkts
  t[dk] = t[dk] + 1
  t = conn.flags_seen
  t[dk] = t[dk] | fl
  if seglen > 0 then t = conn.bytes t[dk] = t[dk] + seglen end

  local fin = fl & 1 ~= 0
  if syn then
    if ackf then
      if not c2s then conn[BITS] = conn[BITS] | 2 end
    elseif c2s then
      conn[BITS] = conn[BITS] | 1 conn[ISN_C] = seq
    end
  end

  -- Retransmissions: compare with the end of the sequence space seen so far.
  local occ = seglen
  if syn then occ = occ + 1 end
  if fin then occ = occ + 1 end
  if occ > 0 then
    local nk = c2s and NX_C or NX_S
    local e = (seq + occ) & M32
    local hnx = conn[nk]
    if not hnx then
      conn[nk] = e
    else
      local rel = (seq - hnx) & M32
      if rel < HALF then
        if rel > 0 then add_hole(conn, c2s and H_C or H_S, hnx, seq) end
        conn[nk] = e
      else
        local hk = c2s and H_C or H_S
        local erel = (e - hnx) & M32
        if erel == 0 or erel >= HALF then
          if not fill_hole(conn, hk, seq, e)
            and not (occ == 1 and seglen == 1 and e == hnx) then -- keep-alive
            t = conn.retrans
            t[dk] = t[dk] + 1
            stats.retrans = stats.retrans + 1
          end
        else
          if not fill_hole(conn, hk, seq, hnx) then
            t = conn.retrans
            t[dk] = t[dk] + 1
            stats.retrans = stats.retrans + 1
          end
          conn[nk] = e
        end
      end
    end
  end

  if conn[RA] then
    if syn then
      local rk = c2s and RS_C or RS_S
      if not conn[rk] then conn[rk] = { nxt = (seq + 1) & M32, n = 0, buf = 0 } end
    end
    if seglen > 0 then
      local cap = pkt.payload_end - dstart + 1
      if cap < 0 then cap = 0 end
      if cap > seglen then cap = seglen end
      segment(self, conn, c2s, syn and (seq + 1) & M32 or seq, d, dstart, cap, seglen)
    end
    if ackf then acked(self, conn, not c2s, ack) end
  end

  if fl & 7 == 0 then -- no SYN, FIN or RST: the usual case
    if ackf and conn[FA] ~= 0 then
      ack_fin(self, conn, c2s, ack) -- FIN(s) seen: does this acknowledge the peer's?
    elseif seglen > 0 or ackf then
      if conn.state == "syn" then conn.state = "established" end
    end
    return conn
  end
  if conn.state == "syn" and (seglen > 0 or (ackf and not syn)) then conn.state = "established" end
  if fin then
    conn[c2s and FIN_C or FIN_S] = (seq + seglen + (syn and 1 or 0)) & M32
    conn[FA] = conn[FA] | (c2s and 1 or 2)
    conn.state = "fin"
  end
  if fl & 4 ~= 0 then
    conn[BITS] = conn[BITS] | (c2s and 8 or 16)
    close(self, conn, "rst")
    return conn
  end
  if ackf then ack_fin(self, conn, c2s, ack) end
  return conn
end

return M
