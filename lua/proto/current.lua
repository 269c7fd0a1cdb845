-- proto.current: the decoded current packet, shared by every plugin of a
-- pipeline, so that three plugins looking at the same packet decode it once.
--
--   local current = require "proto.current"
--   function plugin:push(stream)  local pkt = current(stream) ... end   -- the stream table
--   function plugin:match(data)   local pkt = current(data) ... end     -- or the packet bytes
--   current()            -- the packet already decoded for this packet, or nil
--   current.ts()         -- riff.packet.ts of the packet last decoded, read once per packet
--   current.serial       -- packets decoded so far (changes exactly when the packet does)
--   local get = current.get  -- the same function without the __call hop
--
-- pkt is proto.packet's decode(data, riff.packet.linktype) in its reusable
-- form: one table, refilled for each packet, so nothing is allocated per
-- packet. It is valid until the next packet: keep the fields you need, not
-- pkt or its layers (text fields such as pkt.ip.src and pkt.payload are
-- recomputed on each read; read them once into a local).
-- Memoized on the stream table the pipeline builds for each packet (after
-- the first plugin has asked, the others get the memo for the price of a
-- comparison) and, for raw bytes, on riff.packet.id, so two different
-- packets with the same bytes (an exact duplicate) are still two packets.
-- Each riff.packet field read costs about as much as decoding the headers,
-- so the stream path reads only riff.packet.linktype, once per packet.

local decode = require("proto.packet").reusable()
local type, format = type, string.format

-- Packets riff could not decode down to TCP, UDP or ICMP, counted once per
-- packet here (every plugin's packets pass through this module): by link
-- type riff does not know, by EtherType that is not IP (ARP, LLDP, an
-- encrypted MACsec payload, PPPoE discovery...; "none" for 802.3 frames
-- without SNAP and non-IP PPP/NFLOG/Frame Relay payloads), by IP protocol
-- other than those (OSPF, ESP, SCTP...), and packets cut short or malformed
-- before their transport header. Later IP fragments are not counted (their
-- first fragment is). current.undecoded() -> that table;
-- current.undecoded_text() -> one line, or nil when everything was decoded.
local U = { linktype = {}, ethertype = {}, ipproto = {}, truncated = 0, malformed = 0, total = 0 }

local function undecoded(pkt)
  if pkt.fragment then return end
  U.total = U.total + 1
  local t, k
  if pkt.malformed then U.malformed = U.malformed + 1 return end
  if pkt.truncated then U.truncated = U.truncated + 1 return end
  local et = pkt.ethertype
  if not et then
    if pkt.l3_offset == nil then t, k = U.linktype, pkt.linktype or "?" else t, k = U.ethertype, "none" end
  elseif et ~= 0x0800 and et ~= 0x86dd then
    t, k = U.ethertype, format("0x%04x", et)
  else
    t, k = U.ipproto, pkt.proto or "?"
  end
  t[k] = (t[k] or 0) + 1
end

local M = { serial = 0 }

function M.undecoded() return U end

-- At most this many kinds are named in the line (the most frequent first):
-- a fuzzed or foreign capture has hundreds, and the line must stay one.
local MAX_KINDS = 12

-- `u`: a table like undecoded()'s (several workers' merged); default this VM's.
function M.undecoded_text(u)
  local U = u or U
  if U.total == 0 then return nil end
  local all = {}
  for _, kind in ipairs { "linktype", "ethertype", "ipproto" } do
    for k, n in pairs(U[kind]) do all[#all + 1] = { kind, k, n } end
  end
  -- Most packets first; ties by kind, then by number (numbers as numbers, "0x0806" as text).
  local order = { linktype = 1, ethertype = 2, ipproto = 3 }
  table.sort(all, function(a, b)
    if a[3] ~= b[3] then return a[3] > b[3] end
    if a[1] ~= b[1] then return order[a[1]] < order[b[1]] end
    local x, y = a[2], b[2]
    if type(x) == type(y) and (type(x) == "number" or type(x) == "string") then return x < y end
    return tostring(x) < tostring(y)
  end)
  local parts = {}
  for i = 1, math.min(#all, MAX_KINDS) do parts[i] = all[i][1] .. " " .. tostring(all[i][2]) .. ": " .. all[i][3] end
  if #all > MAX_KINDS then
    local rest = 0
    for i = MAX_KINDS + 1, #all do rest = rest + all[i][3] end
    parts[#parts + 1] = (#all - MAX_KINDS) .. " other kinds: " .. rest
  end
  if U.truncated > 0 then parts[#parts + 1] = "truncated: " .. U.truncated end
  if U.malformed > 0 then parts[#parts + 1] = "malformed: " .. U.malformed end
  return U.total .. " packets not decoded to TCP/UDP/ICMP (" .. table.concat(parts, ", ") .. ")"
end
local P -- riff.packet, looked up on first use
local last_stream, last_id, last_pkt, last_ts, ts_serial = nil, nil, nil, nil, -1
local last_clock, clock_serial = nil, -1

local function current(x)
  local tx = type(x)
  if tx == "table" then
    if x == last_stream then return last_pkt end
    -- A new stream table: the pipeline builds one per packet, so this is
    -- the next packet; no need to ask riff.packet.id.
    local md = x.metadata
    local data = md and md.data
    if data == nil then return nil end
    if not P then P = riff.packet end
    last_stream, last_id = x, nil
    M.serial = M.serial + 1
    last_pkt = decode(data, P.linktype)
    -- Another worker's packet, only overheard (--workers N): its owner counts it.
    if not last_pkt._l4 and not P.overheard then undecoded(last_pkt) end
    return last_pkt
  end
  if not P then P = riff.packet end
  local id = P.id
  if last_pkt and id == last_id then return last_pkt end
  if tx ~= "string" then return nil end
  if last_stream and last_id == nil and x == last_pkt.data then
    -- Decoded from this packet's stream by an earlier plugin (a pipeline
    -- hands every plugin the same packet): adopt the id.
    last_id = id
    return last_pkt
  end
  last_stream, last_id = nil, id
  M.serial = M.serial + 1
  last_pkt = decode(x, P.linktype)
  if not last_pkt._l4 and not P.overheard then undecoded(last_pkt) end
  return last_pkt
end

M.get = current

function M.ts()
  local s = M.serial
  if s ~= ts_serial then
    if not P then P = riff.packet end
    last_ts, ts_serial = P.ts, s
  end
  return last_ts
end

-- The capture's clock at the current packet: the latest time of any packet
-- so far (riff.packet.clock), its own time when the capture is in order.
-- Flows are judged idle by it, so a capture whose times step back ends
-- them the same whichever worker holds them.
function M.clock()
  local s = M.serial
  if s ~= clock_serial then
    if not P then P = riff.packet end
    last_clock, clock_serial = P.clock or P.ts, s
  end
  return last_clock
end

return setmetatable(M, { __call = function(_, x) return current(x) end })
