-- Both directions of an address/port pair find the same flow: the map
-- flow.tcp and flow.udp keep their flows in (a tracker's _m4 and _m6).
-- IPv4 endpoints are integers ip << 16 | port, in a two-level map: outer key
-- the endpoint with the lower port (usually the server's, so the inner
-- tables are few and shared), inner key the other. IPv6 endpoints are
-- address..port strings, keyed by the pair in sorted order. Lookups stay
-- inline in the trackers' per-packet code; these are for opening and
-- closing a flow.
local next = next
local keys = {}

-- A flow's run-wide id, taken as it opens: riff.packet.id of its first
-- packet (the capture's count, so the same whatever --workers; false
-- outside riff).
function keys.first_packet_id()
  local p = riff and riff.packet
  return p and p.id or false
end

local function order(a, b)
  local pa, pb = a & 0xffff, b & 0xffff
  if pa < pb or (pa == pb and a < b) then return a, b end
  return b, a
end

-- Flow f between endpoints a and b (key6 for IPv6, nil for IPv4).
function keys.put(t, f, a, b, key6)
  if key6 then
    t._m6[key6] = f
    return
  end
  local lo, hi = order(a, b)
  local m4 = t._m4
  local inner = m4[lo]
  if not inner then inner = {} m4[lo] = inner end
  inner[hi] = f
end

function keys.remove(t, a, b, key6)
  if key6 then
    t._m6[key6] = nil
    return
  end
  local lo, hi = order(a, b)
  local inner = t._m4[lo]
  if inner then
    inner[hi] = nil
    if next(inner) == nil then t._m4[lo] = nil end
  end
end

return keys
