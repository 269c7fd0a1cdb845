-- proto.dns: DNS message parser (RFC 1035 and friends), never raising errors.
--
--   local dns = require "proto.dns"
--   local msg = dns.parse(payload)                       -- a whole string, or
--   local msg = dns.parse(pkt.data, pkt.payload_offset, pkt.payload_end)
--                                                        -- a slice, no copy
--   local msg, next_pos = dns.parse_tcp(stream, pos)     -- DNS over TCP: one
--       length-prefixed message at pos (default 1); next_pos is where the next
--       one starts. msg.truncated is set when the stream holds less than the
--       prefix announces (what is there is parsed).
--
-- msg = {
--   id, qr (true for a response), opcode, aa, tc, rd, ra, z, ad, cd (booleans),
--   rcode, flags (the 16-bit word),
--   qdcount, ancount, nscount, arcount       (as in the header)
--   questions  = { { name, type, class }, ... }
--   answers, authority, additional = { { name, type, class, ttl, rdlength, data }, ... }
--   length                                   (bytes parsed: header to last record)
--   malformed = "reason", truncated = true   (on bad input: what came before
--                                             the problem is still returned)
-- }
-- Names are dotted text without the trailing dot; the root is ".". Label bytes
-- outside printable ASCII, and "." or "\" inside a label, are escaped as in
-- zone files (\DDD, \., \\).
-- Record data by type:
--   A, AAAA            address text (AAAA in RFC 5952 form)
--   NS, CNAME, PTR, DNAME, MB, MD, MF, MG, MR   a name
--   MX                 { pref, exchange }
--   TXT, SPF           list of strings
--   SOA                { mname, rname, serial, refresh, retry, expire, minimum }
--   SRV                { priority, weight, port, target }
--   HINFO              { cpu, os }
--   OPT (EDNS)         { udp_size, ext_rcode, version, do (boolean), z,
--                        options = { { code, data }, ... } }
--   anything else      the raw rdata string (also when a known type's rdata
--                      does not parse; the record then has malformed = reason)
-- Compression pointers must point strictly before the name (or label run)
-- that contains them, as BIND requires, which rules out loops; a name may
-- follow at most 64 pointers and be at most 255 bytes long.
--
-- dns.types: name -> number and number -> name (dns.types.MX == 15,
-- dns.types[15] == "MX"); dns.classes likewise (IN = 1, CH = 3, HS = 4, ANY = 255).
-- dns.name(s, pos, base, stop) -> name, next_pos | nil, nil, reason: one name
-- at pos, pointers relative to base (the message's first byte).

local unpack, byte, sub, find, gsub, sfmt, concat, type, tointeger =
      string.unpack, string.byte, string.sub, string.find, string.gsub, string.format, table.concat, type, math.tointeger
local addr = require "proto.addr"
local ip4, ip6 = addr.ip4, addr.ip6

local M = {}

local types = {
  A = 1, NS = 2, MD = 3, MF = 4, CNAME = 5, SOA = 6, MB = 7, MG = 8, MR = 9, NULL = 10, WKS = 11,
  PTR = 12, HINFO = 13, MINFO = 14, MX = 15, TXT = 16, RP = 17, AFSDB = 18, SIG = 24, KEY = 25,
  AAAA = 28, LOC = 29, NXT = 30, SRV = 33, NAPTR = 35, KX = 36, CERT = 37, A6 = 38, DNAME = 39,
  OPT = 41, APL = 42, DS = 43, SSHFP = 44, IPSECKEY = 45, RRSIG = 46, NSEC = 47, DNSKEY = 48,
  DHCID = 49, NSEC3 = 50, NSEC3PARAM = 51, TLSA = 52, SMIMEA = 53, HIP = 55, CDS = 59, CDNSKEY = 60,
  OPENPGPKEY = 61, CSYNC = 62, ZONEMD = 63, SVCB = 64, HTTPS = 65, SPF = 99, EUI48 = 108, EUI64 = 109,
  TKEY = 249, TSIG = 250, IXFR = 251, AXFR = 252, MAILB = 253, MAILA = 254, ANY = 255, URI = 256,
  CAA = 257, TA = 32768, DLV = 32769,
}
local classes = { IN = 1, CS = 2, CH = 3, HS = 4, NONE = 254, ANY = 255 }
-- Number -> name as well (collected first: no new keys during pairs()).
for _, t in ipairs { types, classes } do
  local rev = {}
  for k, v in pairs(t) do rev[v] = k end
  for v, k in pairs(rev) do t[v] = k end
end
M.types, M.classes = types, classes

local MAX_JUMPS, MAX_NAME = 64, 255

local function esc_byte(c)
  if c == "." or c == "\\" then return "\\" .. c end
  return sfmt("\\%03d", byte(c))
end

-- Bytes a label prints as is: 0x21-0x7e but "." and "\".
local ODD = "[^\33-\45\47-\91%]\94-\126]"

-- Scratch list of the labels of the name being read.
local L = {}

-- One (possibly compressed) name at pos. base: the message's first byte
-- (pointers count from there); stop: the message's last byte. Returns the
-- name and the position after it, or nil, nil, reason (with the name read so
-- far as a fourth value).
local function name_at(s, pos, base, stop)
  local nl, wire, jumps, limit, after = 0, 1, 0, pos, nil
  while true do
    if pos > stop then
      return nil, nil, "name runs past the end of the message", concat(L, ".", 1, nl)
    end
    local len = byte(s, pos)
    if len == 0 then
      if not after then after = pos + 1 end
      break
    elseif len >= 0xc0 then
      if pos + 1 > stop then return nil, nil, "compression pointer cut short", concat(L, ".", 1, nl) end
      local target = base + ((len & 0x3f) << 8 | byte(s, pos + 1))
      if not after then after = pos + 2 end
      -- Strictly backwards from the start of the current label run: each
      -- jump lands earlier than the last, so no loop is possible.
      if target >= limit then return nil, nil, "compression pointer does not point backwards", concat(L, ".", 1, nl) end
      jumps = jumps + 1
      if jumps > MAX_JUMPS then return nil, nil, "too many compression pointers", concat(L, ".", 1, nl) end
      pos, limit = target, target
    elseif len >= 0x40 then
      return nil, nil, sfmt("unsupported label type 0x%02x", len), concat(L, ".", 1, nl)
    else
      if pos + len > stop then return nil, nil, "label runs past the end of the message", concat(L, ".", 1, nl) end
      wire = wire + len + 1
      if wire > MAX_NAME then return nil, nil, "name longer than 255 bytes", concat(L, ".", 1, nl) end
      local label = sub(s, pos + 1, pos + len)
      if find(label, ODD) then label = gsub(label, ODD, esc_byte) end
      nl = nl + 1
      L[nl] = label
      pos = pos + len + 1
    end
  end
  if nl == 0 then return ".", after end
  return concat(L, ".", 1, nl), after
end

function M.name(s, pos, base, stop)
  if type(s) ~= "string" then return nil, nil, "not a string" end
  pos = tointeger(pos) or 1
  base = tointeger(base) or 1
  stop = tointeger(stop) or #s
  if stop > #s then stop = #s end
  if pos < 1 then return nil, nil, "bad position" end
  return name_at(s, pos, base, stop)
end

-- Record data: returns data or nil, reason. p..e is the rdata (e inclusive).
local NAME_TYPES = { [2] = true, [3] = true, [4] = true, [5] = true, [7] = true, [8] = true, [9] = true, [12] = true, [39] = true }

local function rdata(s, t, p, e, base, stop)
  local rl = e - p + 1
  if t == 1 then
    if rl == 4 then return ip4(s, p) end
    return nil, "A record with " .. rl .. " bytes of data"
  elseif t == 28 then
    if rl == 16 then return ip6(s, p) end
    return nil, "AAAA record with " .. rl .. " bytes of data"
  elseif NAME_TYPES[t] then
    local nm, after, why = name_at(s, p, base, stop)
    if not nm then return nil, why end
    if after - 1 > e then return nil, "name runs past the record data" end
    return nm
  elseif t == 15 then
    if rl < 3 then return nil, "MX record too short" end
    local nm, after, why = name_at(s, p + 2, base, stop)
    if not nm then return nil, why end
    if after - 1 > e then return nil, "name runs past the record data" end
    return { pref = unpack(">I2", s, p), exchange = nm }
  elseif t == 16 or t == 99 then
    local list, k = {}, 0
    while p <= e do
      local l = byte(s, p)
      if p + l > e then return nil, "TXT string runs past the record data" end
      k = k + 1
      list[k] = sub(s, p + 1, p + l)
      p = p + l + 1
    end
    return list
  elseif t == 6 then
    local mname, a1, why = name_at(s, p, base, stop)
    if not mname then return nil, why end
    if a1 > e then return nil, "SOA record too short" end
    local rname, a2, why2 = name_at(s, a1, base, stop)
    if not rname then return nil, why2 end
    if a2 + 19 > e then return nil, "SOA record too short" end
    local serial, refresh, retry, expire, minimum = unpack(">I4I4I4I4I4", s, a2)
    return { mname = mname, rname = rname, serial = serial, refresh = refresh, retry = retry, expire = expire, minimum = minimum }
  elseif t == 33 then
    if rl < 7 then return nil, "SRV record too short" end
    local pri, w, port = unpack(">I2I2I2", s, p)
    local nm, after, why = name_at(s, p + 6, base, stop)
    if not nm then return nil, why end
    if after - 1 > e then return nil, "name runs past the record data" end
    return { priority = pri, weight = w, port = port, target = nm }
  elseif t == 13 then
    if rl < 2 then return nil, "HINFO record too short" end
    local l1 = byte(s, p)
    if p + l1 + 1 > e then return nil, "HINFO record too short" end
    local l2 = byte(s, p + l1 + 1)
    if p + l1 + 1 + l2 > e then return nil, "HINFO record too short" end
    return { cpu = sub(s, p + 1, p + l1), os = sub(s, p + l1 + 2, p + l1 + 1 + l2) }
  end
  return sub(s, p, e)
end

local function opt_data(s, class, ttl, p, e)
  local opts, k = {}, 0
  local r = { udp_size = class, ext_rcode = ttl >> 24, version = (ttl >> 16) & 0xff,
              ["do"] = ttl & 0x8000 ~= 0, z = ttl & 0x7fff, options = opts }
  while p + 3 <= e do
    local code, len = unpack(">I2I2", s, p)
    if p + 3 + len > e then return r, "EDNS option runs past the record data" end
    k = k + 1
    opts[k] = { code = code, data = sub(s, p + 4, p + 3 + len) }
    p = p + 4 + len
  end
  if p <= e then return r, "EDNS option cut short" end
  return r
end

local names = { "answer", "authority", "additional" }

local function parse(s, start, stop)
  local msg = { questions = {}, answers = {}, authority = {}, additional = {} }
  if type(s) ~= "string" then msg.malformed = "not a string" return msg end
  start = tointeger(start) or 1
  stop = tointeger(stop) or #s
  if stop > #s then stop = #s end
  if start < 1 then start = 1 end
  if stop - start + 1 < 12 then
    msg.malformed, msg.truncated, msg.length = "shorter than a DNS header", true, 0
    return msg
  end
  local id, f, qd, an, ns, ar = unpack(">I2I2I2I2I2I2", s, start)
  msg.id, msg.flags = id, f
  msg.qr, msg.opcode = f & 0x8000 ~= 0, (f >> 11) & 15
  msg.aa, msg.tc, msg.rd, msg.ra = f & 0x400 ~= 0, f & 0x200 ~= 0, f & 0x100 ~= 0, f & 0x80 ~= 0
  msg.z, msg.ad, msg.cd, msg.rcode = f & 0x40 ~= 0, f & 0x20 ~= 0, f & 0x10 ~= 0, f & 15
  msg.qdcount, msg.ancount, msg.nscount, msg.arcount = qd, an, ns, ar

  local pos = start + 12
  local qs = msg.questions
  for i = 1, qd do
    local nm, after, why = name_at(s, pos, start, stop)
    if not nm then
      msg.malformed = "question " .. i .. ": " .. why
      if pos > stop or find(why, "past the end", 1, true) then msg.truncated = true end
      msg.length = pos - start
      return msg
    end
    if after + 3 > stop then
      msg.malformed, msg.truncated, msg.length = "question " .. i .. " cut short", true, pos - start
      return msg
    end
    local t, c = unpack(">I2I2", s, after)
    qs[i] = { name = nm, type = t, class = c }
    pos = after + 4
  end

  for sec = 1, 3 do
    local list, count
    if sec == 1 then list, count = msg.answers, an
    elseif sec == 2 then list, count = msg.authority, ns
    else list, count = msg.additional, ar end
    for i = 1, count do
      local nm, after, why = name_at(s, pos, start, stop)
      if not nm then
        msg.malformed = names[sec] .. " " .. i .. ": " .. why
        if pos > stop or find(why, "past the end", 1, true) then msg.truncated = true end
        msg.length = pos - start
        return msg
      end
      if after + 9 > stop then
        msg.malformed, msg.truncated, msg.length = names[sec] .. " " .. i .. " cut short", true, pos - start
        return msg
      end
      local t, c, ttl, rdlen = unpack(">I2I2I4I2", s, after)
      local p = after + 10
      local e = p + rdlen - 1
      local rr = { name = nm, type = t, class = c, ttl = ttl, rdlength = rdlen }
      list[i] = rr
      if e > stop then
        rr.data = sub(s, p, stop)
        rr.malformed = "record data runs past the end of the message"
        msg.malformed, msg.truncated, msg.length = names[sec] .. " " .. i .. ": " .. rr.malformed, true, stop - start + 1
        return msg
      end
      local data, bad
      if t == 41 then data, bad = opt_data(s, c, ttl, p, e) else data, bad = rdata(s, t, p, e, start, stop) end
      if data == nil then data = sub(s, p, e) end
      rr.data = data
      if bad then
        rr.malformed = bad
        if not msg.malformed then msg.malformed = names[sec] .. " " .. i .. ": " .. bad end
      end
      pos = e + 1
    end
  end
  msg.length = pos - start
  return msg
end
M.parse = parse

function M.parse_tcp(s, pos)
  if type(s) ~= "string" then return parse(s) end
  pos = tointeger(pos) or 1
  if pos < 1 then pos = 1 end
  if pos + 1 > #s then
    local msg = parse("")
    msg.malformed = "no DNS-over-TCP length prefix"
    return msg, pos
  end
  local len = unpack(">I2", s, pos)
  local e = pos + 1 + len
  local msg = parse(s, pos + 2, e)
  if e > #s then msg.truncated = true end
  msg.tcp_length = len
  return msg, e + 1
end

return M
