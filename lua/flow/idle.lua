-- The lazily ordered list of live flows that flow.tcp and flow.udp share.
-- A flow is a table whose array slots LT, N and P (3, 4, 5) belong to this
-- list: its link time and its neighbours. A packet only sets flow.seen (the
-- capture's clock at its last packet: proto.current's clock, which never
-- steps back, so the list stays in order when the capture's times do); a
-- walk from the old end re-links a flow found active since it was linked
-- (its LT is behind its seen), so each flow moves at most once per idle
-- timeout instead of on every packet.
local LT <const>, N <const>, P <const> = 3, 4, 5
local idle = { LT = LT, N = N, P = P }

function idle.list()
  local h = {}
  h[N], h[P] = h, h
  return h
end

function idle.unlink(c)
  local n, p = c[N], c[P]
  p[N], n[P] = n, p
end

function idle.push_front(head, c)
  local f = head[N]
  c[N], c[P] = f, head
  f[P], head[N] = c, c
end

function idle.push_back(head, c)
  local l = head[P]
  c[P], c[N] = l, head
  l[N], head[P] = c, c
end

-- The least recently active flow (for eviction), or nil when none is live.
function idle.oldest(live)
  while true do
    local c = live[P]
    if c == live then return nil end
    if c.seen == c[LT] then return c end
    idle.unlink(c)
    c[LT] = c.seen
    idle.push_front(live, c)
  end
end

-- A packet's time and the capture's clock, for t:packet(pkt, ts) without a
-- clock: ts defaults to riff.packet.ts; the clock is riff.packet.clock (the
-- latest time so far) when ts is this packet's, else ts. Idleness goes by
-- the clock, so a capture whose times step back ends the same flows
-- whichever worker holds them.
function idle.clock(ts)
  local P = riff.packet
  if not ts then ts = P.ts end
  local c = P.clock
  if c and c > ts and ts == P.ts then return ts, c end
  return ts, ts
end

-- Calls close(c) for every flow idle longer than `timeout` at time `ts`;
-- close must take c off the list.
function idle.expire(live, ts, timeout, close)
  while true do
    local c = live[P]
    if c == live or ts - c[LT] <= timeout then return end
    if ts - c.seen > timeout then
      close(c)
    else
      idle.unlink(c)
      c[LT] = c.seen
      idle.push_front(live, c)
    end
  end
end

-- Live flows, in no particular order.
function idle.each(live)
  local c = live
  return function()
    c = c[N]
    if c ~= live then return c end
  end
end

return idle
