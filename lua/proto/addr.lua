-- proto.addr: address formatting shared by riff's protocol decoders.
--
--   local addr = require "proto.addr"
--   addr.mac(s, pos)        -- 6 bytes at pos  -> "aa:bb:cc:dd:ee:ff"
--   addr.ip4(s, pos)        -- 4 bytes at pos  -> "192.0.2.1"
--   addr.ip6(s, pos)        -- 16 bytes at pos -> RFC 5952 text ("2001:db8::1",
--                           --   "::ffff:192.0.2.1" for IPv4-mapped addresses)
--   addr.hex(s, pos, n)     -- n bytes at pos  -> "0a:1b:..." (link addresses of any size)
--
-- pos is 1-based, as for string.byte/string.unpack. Every function returns nil
-- (never raises) when the bytes are not all there, so callers can pass
-- offsets straight from a packet. mac, ip4 and ip6 remember the text of the
-- last few thousand addresses they formatted (keyed by the raw bytes), since
-- a capture sees the same addresses over and over.

local byte, sub, sfmt, unpack, concat, type, tointeger =
      string.byte, string.sub, string.format, string.unpack, table.concat, type, math.tointeger

local M = {}

-- A formatter of the `width` bytes at pos that remembers the text of recent
-- ones by their raw bytes (the cache is emptied when full).
local CACHE_MAX = 4096
local function cached(width, text)
  local cache, n = {}, 0
  return function(s, pos)
    pos = tointeger(pos or 1)
    if type(s) ~= "string" or not pos or pos < 1 or pos + width - 1 > #s then return nil end
    local raw = sub(s, pos, pos + width - 1)
    local t = cache[raw]
    if t then return t end
    t = text(s, pos)
    if n >= CACHE_MAX then cache, n = {}, 0 end
    n = n + 1
    cache[raw] = t
    return t
  end
end

local mac = cached(6, function(s, pos) return sfmt("%02x:%02x:%02x:%02x:%02x:%02x", byte(s, pos, pos + 5)) end)
local ip4 = cached(4, function(s, pos) return sfmt("%d.%d.%d.%d", byte(s, pos, pos + 3)) end)

-- Scratch space for ip6: the groups of the address being formatted and the
-- hex text of those printed. Reused, so formatting allocates only the result.
local G, P = { 0, 0, 0, 0, 0, 0, 0, 0 }, {}

local function ip6text(s, pos)
  local a1, a2, a3, a4, a5, a6, a7, a8 = unpack(">I2I2I2I2I2I2I2I2", s, pos)
  if a1 == 0 and a2 == 0 and a3 == 0 and a4 == 0 and a5 == 0 then
    -- ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible) print the IPv4 part
    -- in dotted form, as inet_ntop and Wireshark do; ::, ::1 and ::x stay hex.
    if a6 == 0xffff then return "::ffff:" .. sfmt("%d.%d.%d.%d", byte(s, pos + 12, pos + 15)) end
    if a6 == 0 and a7 ~= 0 then return "::" .. sfmt("%d.%d.%d.%d", byte(s, pos + 12, pos + 15)) end
  end
  G[1], G[2], G[3], G[4], G[5], G[6], G[7], G[8] = a1, a2, a3, a4, a5, a6, a7, a8
  -- The longest run of zero groups (the first of equal runs), if 2 or more
  -- long, becomes "::" (RFC 5952 4.2).
  local bs, bl, cs, cl = 0, 0, 0, 0
  for i = 1, 8 do
    if G[i] == 0 then
      if cl == 0 then cs = i end
      cl = cl + 1
      if cl > bl then bs, bl = cs, cl end
    else
      cl = 0
    end
  end
  if bl < 2 then
    return sfmt("%x:%x:%x:%x:%x:%x:%x:%x", a1, a2, a3, a4, a5, a6, a7, a8)
  end
  local n = 0
  for i = 1, bs - 1 do n = n + 1; P[n] = sfmt("%x", G[i]) end
  local left = concat(P, ":", 1, n)
  n = 0
  for i = bs + bl, 8 do n = n + 1; P[n] = sfmt("%x", G[i]) end
  return left .. "::" .. concat(P, ":", 1, n)
end

local ip6 = cached(16, ip6text)

local function hex(s, pos, n)
  pos, n = tointeger(pos or 1), tointeger(n)
  if type(s) ~= "string" or not pos or not n or n < 0 or pos < 1 or pos + n - 1 > #s then return nil end
  if n == 0 then return "" end
  if n == 6 then return mac(s, pos) end
  local parts = {}
  for i = 1, n do parts[i] = sfmt("%02x", byte(s, pos + i - 1)) end
  return concat(parts, ":")
end

M.mac, M.ip4, M.ip6, M.hex = mac, ip4, ip6, hex
return M
