-- proto.packet: decodes a captured packet's link, network and transport
-- headers, lazily, without ever raising an error.
--
--   local decode = require "proto.packet"
--   buffer = function(p)
--     local pkt = decode(p, riff.packet.linktype)   -- linktype defaults to riff.packet.linktype
--     local tcp = pkt.tcp
--     if tcp and tcp.dport == 80 then print(pkt.ip.src, pkt.payload) end
--   end
--
-- decode(data, linktype) walks the headers once (string.unpack at offsets) and
-- returns a small table; each layer table below is built the first time it is
-- read (and then cached in pkt), text addresses the first time they are read.
-- A layer that is absent reads as nil. Offsets are 1-based positions in data.
--
-- Link types: 1 Ethernet (802.1Q/802.1ad/QinQ tags, 802.3+SNAP), 113 Linux
-- SLL, 276 Linux SLL2, 0 BSD NULL and 108 OpenBSD LOOP (address family in
-- either byte order; 2 = IPv4, 24/28/30 = IPv6), 101/12/14 raw IP (version
-- from the first nibble), 228 raw IPv4, 229 raw IPv6, 9/50 PPP, 104 Cisco HDLC,
-- 242 IP over InfiniBand, 226 Solaris ipnet, 51 PPPoE, 166/204 PPP with a
-- direction byte, 239 NFLOG (what tcpdump -i nflog:N writes: the packet
-- TLV), 107 Frame Relay (RFC 2427 NLPID or SNAP, or Cisco's EtherType).
-- Link types with the FCS-length bits set have the FCS cut off.
-- Encapsulations are stepped through (at most 8 deep) so that pkt.ip,
-- pkt.tcp, pkt.udp and the payload are the innermost packet's, and flows
-- inside tunnels are tracked as flows: PPPoE session (0x8864), MPLS
-- (0x8847/0x8848; the inner protocol guessed by its first nibble, as tshark
-- does: 4 IPv4, 6 IPv6, 0 control word then Ethernet, else Ethernet),
-- MACsec (0x88e5: the SecTAG; an encrypted payload is not decoded), NSH
-- (0x894f), PPP (0x880b), bridged Ethernet (0x6558), ERSPAN I/II/III, GRE
-- (IP protocol 47, versions 0 and 1), IP-in-IP (4), IPv6-in-IP (41, 6in4
-- and 4in6), VXLAN (UDP 4789) and Geneve (UDP 6081). A tunnel is entered
-- only when an IP header is found inside; else the outer packet is what
-- is decoded. pkt.encap names what was stepped through, outermost first
-- ("pppoe", "gre,eth", "mpls", "vxlan,eth", "ipip"...), nil when nothing;
-- pkt.eth, pkt.vlan, pkt.sll stay the link layer's.
--
-- pkt fields (always present when known, cost nothing extra):
--   data, linktype          the arguments (linktype without FCS bits)
--   ethertype               EtherType of the network layer (0x0800, 0x86dd,
--                           0x0806...; synthesized for NULL/raw/PPP links)
--   l3_offset               start of the network header
--   proto                   IP protocol: IPv4 protocol field, or for IPv6 the
--                           next header after the extension headers
--   l4_offset               start of the transport header (or IP payload)
--   payload_offset, payload_end
--                           the bytes after the last decoded header (TCP/UDP/
--                           ICMP payload; IP payload for other protocols and
--                           fragments; link payload when not IP); end is
--                           inclusive and excludes link padding/trailers
--   fragment                true for a non-first IP fragment (no L4 decoded)
--   truncated               true when the capture ended inside a header or
--                           before the length the IP/UDP header claims
--   malformed               a reason string when headers are inconsistent
--   encap                   the encapsulations stepped through (see above), or nil
-- pkt fields built on first read:
--   payload                 string.sub(data, payload_offset, payload_end)
--   eth    { src, dst ("aa:bb:..."), type (the header's type/length field),
--            length (802.3 length, when type <= 1500) }
--   vlan   list of VLAN ids, outermost first (0x8100, 0x88a8, 0x9100, 0x9200),
--          plus vlan.pcp = list of priorities
--   sll    SLL:  { version=1, pkttype, hatype, halen, addr, protocol }
--          SLL2: { version=2, protocol, ifindex, hatype, pkttype, halen, addr }
--   null   { family }                               (link types 0, 108)
--   ip     IPv4: { version=4, ihl (words), hlen (bytes), tos, dscp, ecn, len,
--                  id, flags (3 bits), df, mf, frag_offset (bytes), fragment,
--                  ttl, proto, checksum, src, dst, src_raw, dst_raw (4-byte
--                  strings), options (raw option bytes, or nil) }
--          IPv6: { version=6, tclass, flow, plen, len (40 + plen), hop_limit,
--                  ttl (= hop_limit), next_header (fixed header's), proto
--                  (after extension headers), src, dst (RFC 5952), src_raw,
--                  dst_raw, ext (list of extension header numbers, e.g. {0, 44}),
--                  hlen (40 + extension headers), fragment, frag_offset, mf,
--                  frag_id (when a fragment header is present), jumbo }
--   ip4, ip6                pkt.ip when it is that version
--   tcp    { sport, dport, seq, ack_seq, hlen, flags (12 bits, as tshark's
--            tcp.flags), fin, syn, rst, psh, ack, urg, ece, cwr (booleans),
--            window, checksum, urgent, options }
--          options = { mss, wscale, sack_perm, ts = { val, ecr }, sack = { left1,
--            right1, ... }, kinds = { option kinds in order }, malformed }
--   udp    { sport, dport, len, checksum }
--   icmp, icmp6  { type, code, checksum, rest (bytes 5-8 as a number),
--            id, seq (echo and similar types) }
--
-- Cost: decode() walks the headers with string.byte/unpack at offsets (no
-- string.sub, no closures) and allocates one table; each layer is one more
-- table when first read; text addresses are formatted once per distinct
-- address (proto.addr keeps a cache). The tables are per packet: keep the
-- fields you need, not pkt (it holds the packet string).
--
-- Faster, for scripts that finish with a packet before the next one:
--   local decode = require("proto.packet").reusable()
--   local pkt = decode(p, lt)  -- the same pkt table and layer tables each
--                              -- call, refilled: no per-packet allocation.
--   In that mode fields computed on read (addresses, options, ext, payload)
--   are recomputed on every read (keep them in locals), and everything in
--   pkt changes at the next call.
-- Fastest, no table at all:
--   decode.walk(data, linktype) -> ethertype, l3_offset, ipversion, l4_offset,
--     proto, l4proto (6/17/1/58 when that header is present), payload_offset,
--     payload_end, truncated, malformed, fragment
-- decode.layers is the builder table (layers[name] = function(pkt) ... end
-- adds pkt.name, built on first read).
-- Truncated and malformed headers: a layer is present only when its fixed
-- header was captured whole (IPv4 20 bytes, IPv6 40, TCP 20, UDP 8, ICMP 4);
-- options and extension headers are read as far as they were captured.

local addr = require "proto.addr"

local unpack, byte, sub, type, setmetatable, rawset, rawget, tointeger =
      string.unpack, string.byte, string.sub, type, setmetatable, rawset, rawget, math.tointeger
local mac, ip4, ip6, hex = addr.mac, addr.ip4, addr.ip6, addr.hex

local M = {}

-- IPv6 extension headers with the generic layout (next header, length in
-- 8-octet units not counting the first); 44 (fragment) and 51 (AH) differ.
local EXT = { [0] = true, [43] = true, [60] = true, [139] = true, [140] = true, [253] = true, [254] = true }
local MAX_EXT = 16

-- Steps over IPv6 extension headers. pos: where header nh starts; cend: last
-- byte the IPv6 payload length claims; n: last captured byte; list: table to
-- fill (or nil). Returns upper-layer nh, its position, fragment (non-first),
-- malformed reason, truncated, and the fragment header's offset/mf/id.
local function v6chain(d, pos, nh, cend, n, list)
  local k, frag, fo, mf, fid = 0, false, nil, nil, nil
  while true do
    local hl
    if EXT[nh] or nh == 51 or nh == 44 then
      k = k + 1
      if k > MAX_EXT then return nh, pos, frag, "too many IPv6 extension headers", false, fo, mf, fid end
      if nh == 0 and k > 1 then return nh, pos, frag, "IPv6 hop-by-hop header not first", false, fo, mf, fid end
      if list and pos <= n then list[k] = nh end -- listed if it starts in the capture
      if pos + 1 > cend then return nh, pos, frag, "IPv6 extension header past the payload length", false, fo, mf, fid end
      if pos + 1 > n then return nh, pos, frag, nil, true, fo, mf, fid end
      local nx, len = byte(d, pos, pos + 1)
      if nh == 44 then
        hl = 8
        if pos + 7 <= n and pos + 7 <= cend then
          local fw, id = unpack(">I2I4", d, pos + 2)
          fo, mf, fid = fw & 0xfff8, fw & 1 == 1, id
          if fo ~= 0 then frag = true end
        end
      elseif nh == 51 then
        hl = (len + 2) * 4
      else
        hl = (len + 1) * 8
      end
      if pos + hl - 1 > cend then return nx, pos + hl, frag, "IPv6 extension header past the payload length", false, fo, mf, fid end
      if pos + hl - 1 > n then return nx, pos + hl, frag, nil, true, fo, mf, fid end
      pos, nh = pos + hl, nx
      if frag then return nh, pos, frag, nil, false, fo, mf, fid end
    else
      return nh, pos, frag, nil, false, fo, mf, fid
    end
  end
end

-- The Jumbo Payload option (RFC 2675) in a hop-by-hop header at pos.
local function jumbo_len(d, pos, n)
  if pos + 1 > n then return nil end
  local e = pos + (byte(d, pos + 1) + 1) * 8 - 1
  if e > n then e = n end
  local p = pos + 2
  while p <= e do
    local t = byte(d, p)
    if t == 0 then
      p = p + 1
    else
      if p + 1 > e then return nil end
      local l = byte(d, p + 1)
      if t == 0xc2 and l == 4 and p + 5 <= e then return (unpack(">I4", d, p + 2)) end
      p = p + 2 + l
    end
  end
  return nil
end

-- VLAN tags (802.1Q, 802.1ad, the older QinQ types) from o, et the
-- EtherType before them: the EtherType they carry and where it ends, and
-- false when a tag is cut short or there are more than 8 (then deep).
local function vlans(d, n, et, o)
  local k = 0
  while et == 0x8100 or et == 0x88a8 or et == 0x9100 or et == 0x9200 do
    if o + 3 > n or k >= 8 then return et, o, false, k >= 8 end
    et = unpack(">I2", d, o + 2)
    o, k = o + 4, k + 1
  end
  return et, o, true
end


-- Encapsulations (tunnels and shims) are stepped through, up to MAX_DEPTH;
-- what was stepped through is listed in pkt.encap.
local MAX_DEPTH = 8
local encap_list -- the current walk's encapsulations, outermost first (nil: none)
local function encap(tag)
  encap_list = encap_list and (encap_list .. "," .. tag) or tag
end
local net -- the network layer onwards (defined after walk0)

-- An Ethernet header at o (inside a tunnel): the EtherType it carries after
-- any VLAN tags, and where that starts; nil when cut short.
local function inner_eth(d, n, o)
  if o + 13 > n then return nil end
  local et, o2, whole = vlans(d, n, unpack(">I2", d, o + 12), o + 14)
  if not whole then return nil end
  if et <= 1500 then return nil end
  return et, o2
end

-- PPP protocol field at q (1 or 2 bytes, after an optional ff 03): the
-- EtherType it stands for, and where the payload starts.
local function ppp_proto(d, n, q)
  if q + 1 <= n and byte(d, q) == 0xff and byte(d, q + 1) == 3 then q = q + 2 end
  if q > n then return false, true end
  local pp = byte(d, q)
  if pp & 1 == 1 then q = q + 1
  else
    if q + 1 > n then return false, true end
    pp = unpack(">I2", d, q)
    q = q + 2
  end
  if pp == 0x21 then return 0x0800, q elseif pp == 0x57 then return 0x86dd, q
  elseif pp == 0x281 or pp == 0x283 then return 0x8847, q end
  return false, false -- LCP, IPCP, CHAP...: control, no IP
end

local KNOWN_ET = { [0x0800] = true, [0x86dd] = true, [0x0806] = true, [0x8100] = true, [0x88a8] = true, [0x8847] = true, [0x8864] = true }

-- One shim between link and network layer, by EtherType: returns the
-- EtherType and offset of what it carries and its name; false, truncated,
-- name when what it carries cannot be decoded; nil when et is no shim.
local function shim(d, n, et, o)
  if et == 0x8864 then -- PPPoE session (RFC 2516): 6-byte header, then PPP
    if o + 5 > n then return false, true, "pppoe" end
    local e2, o2 = ppp_proto(d, n, o + 6)
    return e2, o2, "pppoe"
  elseif et == 0x8847 or et == 0x8848 then -- MPLS label stack (RFC 3032)
    local q = o
    for _ = 1, 16 do
      if q + 3 > n then return false, true, "mpls" end
      local bos = byte(d, q + 2) & 1
      q = q + 4
      if bos == 1 then
        -- No protocol field: guess by the first nibble, as tshark does:
        -- 4/6 IP; else an Ethernet pseudowire, with a control word (RFC
        -- 4385: first nibble 0) when the EtherType after it is one we know
        -- and the one without it is not.
        if q > n then return false, true, "mpls" end
        local v = byte(d, q) >> 4
        if v == 4 then return 0x0800, q, "mpls" elseif v == 6 then return 0x86dd, q, "mpls" end
        if v == 0 and q + 17 <= n and not KNOWN_ET[unpack(">I2", d, q + 12)] and KNOWN_ET[unpack(">I2", d, q + 16)] then q = q + 4 end
        local e2, o2 = inner_eth(d, n, q)
        if e2 then return e2, o2, "mpls" end
        return false, q + 13 > n, "mpls"
      end
    end
    return false, false, "mpls"
  elseif et == 0x88e5 then -- MACsec SecTAG (IEEE 802.1AE 9.3): TCI/AN, SL, PN, optional SCI
    if o + 5 > n then return false, true, "macsec" end
    local tci = byte(d, o)
    if tci & 0x0c ~= 0 then return false, false, "macsec" end -- E or C: encrypted, not readable
    local q = o + 6 + (tci & 0x20 ~= 0 and 8 or 0)
    if q + 1 > n then return false, true, "macsec" end
    return unpack(">I2", d, q), q + 2, "macsec" -- integrity only: the EtherType follows
  elseif et == 0x894f then -- NSH (RFC 8300): base + service path header, Length in 4-byte words
    if o + 7 > n then return false, true, "nsh" end
    local hl, np = (byte(d, o + 1) & 0x3f) * 4, byte(d, o + 3)
    if hl < 8 then return false, false, "nsh" end
    local q = o + hl
    if np == 1 then return 0x0800, q, "nsh" elseif np == 2 then return 0x86dd, q, "nsh"
    elseif np == 5 then return 0x8847, q, "nsh" elseif np == 4 then return 0x894f, q, "nsh"
    elseif np == 3 then
      local e2, o2 = inner_eth(d, n, q)
      if e2 then return e2, o2, "nsh" end
      return false, q + 13 > n, "nsh"
    end
    return false, false, "nsh"
  elseif et == 0x6558 then -- transparent Ethernet bridging (GRE, NVGRE, Geneve)
    local e2, o2 = inner_eth(d, n, o)
    if e2 then return e2, o2, "eth" end
    return false, o + 13 > n, "eth"
  elseif et == 0x880b then -- PPP (enhanced GRE, PPTP)
    local e2, o2 = ppp_proto(d, n, o)
    return e2, o2, "ppp"
  elseif et == 0x88be or et == 0x22eb then -- ERSPAN type II (8-byte header) / III (12, +8 with O)
    local hl = 8
    if et == 0x22eb then
      if o + 11 > n then return false, true, "erspan" end
      hl = 12 + (byte(d, o + 11) & 1 == 1 and 8 or 0)
    end
    local e2, o2 = inner_eth(d, n, o + hl)
    if e2 then return e2, o2, "erspan" end
    return false, o + hl + 13 > n, "erspan"
  end
  return nil
end

-- IP in IP (4), IPv6 in IP (41), GRE (47, RFC 2784/2890, and PPTP's
-- enhanced GRE version 1) at o4, the IP payload ending at n: the inner
-- EtherType and offset and the tunnel's name, or nil.
local function ip_tunnel(d, n, proto, o4)
  if proto == 4 then return 0x0800, o4, "ipip" end
  if proto == 41 then return 0x86dd, o4, "ip6in" end
  if o4 + 3 > n then return nil end
  local fl, pt = unpack(">I2I2", d, o4)
  local v, q = fl & 7, o4 + 4
  if v == 0 then
    if fl & 0x4000 ~= 0 then return nil end -- routing present (RFC 1701): not followed
    if fl & 0x8000 ~= 0 then q = q + 4 end
    if fl & 0x2000 ~= 0 then q = q + 4 end
    if fl & 0x1000 ~= 0 then q = q + 4 end
    if pt == 0x88be and fl & 0x1000 == 0 then -- ERSPAN type I: no ERSPAN header
      return 0x6558, q, "gre"
    end
  elseif v == 1 then
    q = q + 4 -- payload length, call id
    if fl & 0x1000 ~= 0 then q = q + 4 end
    if fl & 0x0080 ~= 0 then q = q + 4 end
  else
    return nil
  end
  if q > n + 1 then return nil end
  return pt, q, "gre"
end

-- VXLAN (RFC 7348, UDP 4789) and Geneve (RFC 8926, UDP 6081) at o (the UDP
-- payload), ending at n: inner EtherType and offset, or nil.
local function udp_tunnel(d, n, port, o)
  if o + 7 > n then return nil end
  if port == 4789 then
    if byte(d, o) & 0x08 == 0 then return nil end
    return 0x6558, o + 8, "vxlan"
  end
  local b0 = byte(d, o)
  if b0 >> 6 ~= 0 then return nil end
  return unpack(">I2", d, o + 2), o + 8 + (b0 & 0x3f) * 4, "geneve"
end

-- Into a tunnel: the inner packet's walk (as a list), or nil when no IP
-- header is found inside (then the outer packet is what riff reports: a GRE
-- keepalive, a tunnel of something else).
local function inner(d, n, et, o, depth, tag)
  local saved = encap_list
  encap(tag)
  local r = { net(d, n, et, o, depth + 1) }
  if r[3] then return r end
  encap_list = saved
  return nil
end

-- The walk proper: lt is an integer link type without FCS bits, n the
-- number of bytes to look at.
local function walk0(d, n, lt)
  -- Link layer: et (EtherType or synthesized) and o (network header).
  local et, o, ver
  if lt == 1 then
    if n < 14 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local hi, lo = byte(d, 13, 14)
    et = hi << 8 | lo
    o = 15
    local whole, deep
    et, o, whole, deep = vlans(d, n, et, o)
    if not whole then return et, o, nil, nil, nil, nil, o, n, o + 3 > n, (deep and "too many VLAN tags" or nil), false end
    if et <= 1500 then
      -- 802.3 length: IP only behind LLC/SNAP with an EtherType OUI.
      if o + 7 <= n and byte(d, o) == 0xaa and byte(d, o + 1) == 0xaa and byte(d, o + 2) == 3
        and byte(d, o + 3) == 0 and byte(d, o + 4) == 0 and (byte(d, o + 5) == 0 or byte(d, o + 5) == 0xf8) then
        et = unpack(">I2", d, o + 6)
        o = o + 8
      else
        return nil, o, nil, nil, nil, nil, o, n, false, nil, false
      end
    end
  elseif lt == 113 then
    if n < 16 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local hatype
    hatype, et = unpack(">I2", d, 3), unpack(">I2", d, 15)
    o = 17
    if hatype == 824 then return nil, o, nil, nil, nil, nil, o, n, false, nil, false end -- netlink
    local whole, deep
    et, o, whole, deep = vlans(d, n, et, o)
    if not whole then return et, o, nil, nil, nil, nil, o, n, o + 3 > n, (deep and "too many VLAN tags" or nil), false end
  elseif lt == 276 then
    if n < 20 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    et = unpack(">I2", d, 1)
    o = 21
    if unpack(">I2", d, 9) == 824 then return nil, o, nil, nil, nil, nil, o, n, false, nil, false end
    local whole, deep
    et, o, whole, deep = vlans(d, n, et, o)
    if not whole then return et, o, nil, nil, nil, nil, o, n, o + 3 > n, (deep and "too many VLAN tags" or nil), false end
  elseif lt == 0 or lt == 108 then
    if n < 4 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local fam = unpack("<I4", d, 1)
    if fam > 0xffff then fam = unpack(">I4", d, 1) end
    o = 5
    if fam == 2 then et = 0x0800
    elseif fam == 24 or fam == 28 or fam == 30 or fam == 10 then et = 0x86dd
    elseif fam > 1500 and fam <= 0xffff then et = fam -- some old captures put an EtherType there
    else return nil, o, nil, nil, nil, nil, o, n, false, nil, false end
  elseif lt == 101 or lt == 12 or lt == 14 then
    if n < 1 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local v = byte(d, 1) >> 4
    o = 1
    if v == 4 then et = 0x0800 elseif v == 6 then et = 0x86dd
    else return nil, o, nil, nil, nil, nil, o, n, false, "raw IP packet with IP version " .. v, false end
  elseif lt == 228 then
    et, o = 0x0800, 1
  elseif lt == 229 then
    et, o = 0x86dd, 1
  elseif lt == 9 or lt == 50 or lt == 166 or lt == 204 then
    -- PPP (9), PPP in HDLC framing (50), pppd's (166) and with a direction byte (204)
    local e2, o2 = ppp_proto(d, n, (lt == 166 or lt == 204) and 2 or 1)
    if not e2 then
      if o2 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
      return nil, 1, nil, nil, nil, nil, 1, n, false, nil, false
    end
    et, o = e2, o2
  elseif lt == 51 then -- PPPoE without the Ethernet header
    et, o = 0x8864, 1
  elseif lt == 239 then -- NFLOG: family, version, resource id, then TLVs; type 9 holds the packet
    if n < 4 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local fam, q = byte(d, 1), 5
    et = nil
    while q + 3 <= n do
      -- TLV length and type are in the capturing host's byte order
      local len, ty = unpack("<I2I2", d, q)
      if len < 4 or q + len - 1 > n + 3 then len, ty = unpack(">I2I2", d, q) end
      if len < 4 then break end
      if ty & 0x7fff == 9 then
        o = q + 4
        if fam == 2 then et = 0x0800 elseif fam == 10 then et = 0x86dd
        else local v = o <= n and byte(d, o) >> 4 et = v == 4 and 0x0800 or v == 6 and 0x86dd or nil end
        break
      end
      q = q + ((len + 3) & ~3)
    end
    if not et then return nil, o, nil, nil, nil, nil, o, n, q + 3 > n, nil, false end
  elseif lt == 107 then -- Frame Relay: Q.922 address, then RFC 2427 (03, NLPID) or Cisco's EtherType
    if n < 4 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local q = 3
    if byte(d, 2) & 1 == 0 then q = 4 end -- 3- or 4-byte address
    if byte(d, q) == 3 then
      q = q + 1
      if byte(d, q) == 0 then q = q + 1 end -- padding
      local nl = byte(d, q)
      if nl == 0xcc then et, o = 0x0800, q + 1
      elseif nl == 0x8e then et, o = 0x86dd, q + 1
      elseif nl == 0x80 and q + 5 <= n then et, o = unpack(">I2", d, q + 4), q + 6
      else return nil, q, nil, nil, nil, nil, q, n, nl == nil, nil, false end
    else
      if q + 1 > n then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
      et, o = unpack(">I2", d, q), q + 2
    end
  elseif lt == 104 then
    if n < 4 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    et, o = unpack(">I2", d, 3), 5
  elseif lt == 242 then -- IP over InfiniBand: 40 bytes of addresses, EtherType, 2 reserved
    if n < 44 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    et, o = unpack(">I2", d, 41), 45
  elseif lt == 226 then -- Solaris ipnet: 24-byte header, family in byte 2
    if n < 24 then return nil, nil, nil, nil, nil, nil, nil, nil, true, nil, false end
    local fam = byte(d, 2)
    o = 25
    if fam == 2 then et = 0x0800 elseif fam == 26 then et = 0x86dd
    else return nil, o, nil, nil, nil, nil, o, n, false, nil, false end
  else
    return nil, nil, nil, nil, nil, nil, nil, nil, false, nil, false
  end

  return net(d, n, et, o, 0)
end

-- The network layer and what follows, from EtherType et at o; depth counts
-- the encapsulations already stepped through.
net = function(d, n, et, o, depth)
  local ver
  -- Shims between link and network layer: PPPoE, MPLS, MACsec, NSH, PPP, bridged Ethernet, ERSPAN.
  while et ~= 0x0800 and et ~= 0x86dd do
    local e2, o2, tag = shim(d, n, et, o)
    if e2 == nil then break end
    if tag then encap(tag) end
    if not e2 then return et, o, nil, nil, nil, nil, o, n, o2 == true, nil, false end
    if depth >= MAX_DEPTH then return et, o, nil, nil, nil, nil, o, n, false, "more than " .. MAX_DEPTH .. " encapsulations", false end
    et, o, depth = e2, o2, depth + 1
  end
  local trunc, proto, o4, cend, ff = false, nil, nil, nil, false
  if et == 0x0800 then
    if o + 19 > n then return et, o, nil, nil, nil, nil, o, n, true, nil, false end
    local vihl, _, l1, l2, _, _, f1, f2, _, p = byte(d, o, o + 9)
    local tlen, fw = l1 << 8 | l2, f1 << 8 | f2
    if vihl >> 4 ~= 4 then return et, o, nil, nil, nil, nil, o, n, false, "IPv4 header with version " .. (vihl >> 4), false end
    local hl = (vihl & 15) * 4
    ver, proto = 4, p
    if hl < 20 then return et, o, 4, nil, p, nil, nil, nil, false, "IPv4 header length " .. hl .. " < 20", false end
    if tlen == 0 then
      cend = n -- TSO: the capture is the length
    elseif tlen < hl then
      return et, o, 4, nil, p, nil, nil, nil, false, "IPv4 total length " .. tlen .. " < header length " .. hl, false
    else
      cend = o + tlen - 1
      if cend > n then trunc = true end
    end
    o4 = o + hl
    if o4 - 1 > n then return et, o, 4, nil, p, nil, nil, nil, true, nil, false end
    if o4 - 1 > cend then return et, o, 4, nil, p, nil, nil, nil, trunc, "IPv4 header past the total length", false end
    if fw & 0x1fff ~= 0 then
      return et, o, 4, o4, p, nil, o4, (cend < n and cend or n), trunc, nil, true
    end
    ff = fw & 0x2000 ~= 0 -- a first fragment: the transport header may claim more
  elseif et == 0x86dd then
    if o + 39 > n then return et, o, nil, nil, nil, nil, o, n, true, nil, false end
    local vtf, plen, nh = unpack(">I4I2B", d, o)
    if vtf >> 28 ~= 6 then return et, o, nil, nil, nil, nil, o, n, false, "IPv6 header with version " .. (vtf >> 28), false end
    ver = 6
    if plen == 0 and nh ~= 59 then
      local j = nh == 0 and jumbo_len(d, o + 40, n)
      cend = j and o + 39 + j or n
    else
      cend = o + 39 + plen
    end
    if cend > n then trunc = true end
    local frag, mal, tr, _, mf
    nh, o4, frag, mal, tr, _, mf = v6chain(d, o + 40, nh, cend, n, nil)
    proto, ff = nh, mf or false
    if mal or tr then return et, o, 6, nil, nh, nil, nil, nil, trunc or tr, mal, frag end
    if frag then return et, o, 6, o4, nh, nil, o4, (cend < n and cend or n), trunc, nil, true end
  else
    return et, o, nil, nil, nil, nil, o, n, false, nil, false
  end

  -- Transport layer. stop: last byte both captured and inside the IP length.
  local stop = cend < n and cend or n
  if depth < MAX_DEPTH and (proto == 4 or proto == 41 or proto == 47) then
    local e2, o2, tag = ip_tunnel(d, stop, proto, o4)
    if e2 then
      local r = inner(d, stop, e2, o2, depth, tag)
      if r then return table.unpack(r, 1, 11) end
    end
  end
  if proto == 6 then
    if o4 + 19 > cend then return et, o, ver, o4, 6, nil, nil, nil, trunc, (not ff and "TCP header past the IP payload" or nil), false end
    if o4 + 19 > n then return et, o, ver, o4, 6, nil, nil, nil, true, nil, false end
    local hl = (byte(d, o4 + 12) >> 4) * 4
    if hl < 20 then return et, o, ver, o4, 6, 6, nil, nil, trunc, "TCP header length " .. hl .. " < 20", false end
    if o4 + hl - 1 > cend then return et, o, ver, o4, 6, 6, nil, nil, trunc, (not ff and "TCP header past the IP payload" or nil), false end
    if o4 + hl - 1 > n then return et, o, ver, o4, 6, 6, n + 1, n, true, nil, false end
    return et, o, ver, o4, 6, 6, o4 + hl, stop, trunc, nil, false
  elseif proto == 17 then
    if o4 + 7 > cend then return et, o, ver, o4, 17, nil, nil, nil, trunc, (not ff and "UDP header past the IP payload" or nil), false end
    if o4 + 7 > n then return et, o, ver, o4, 17, nil, nil, nil, true, nil, false end
    local u1, u2 = byte(d, o4 + 4, o4 + 5)
    local ulen = u1 << 8 | u2
    if ulen < 8 then
      if ulen == 0 and ver == 6 then return et, o, ver, o4, 17, 17, o4 + 8, stop, trunc, nil, false end -- jumbogram
      return et, o, ver, o4, 17, 17, o4 + 8, stop, trunc, "UDP length " .. ulen .. " < 8", false
    end
    local ue = o4 + ulen - 1
    if ue > cend then return et, o, ver, o4, 17, 17, o4 + 8, stop, trunc, (not ff and "UDP length past the IP payload" or nil), false end
    if ue > n then return et, o, ver, o4, 17, 17, o4 + 8, n, true, nil, false end
    if depth < MAX_DEPTH then
      local dp = byte(d, o4 + 2) << 8 | byte(d, o4 + 3)
      if dp == 4789 or dp == 6081 then
        local e2, o2, tag = udp_tunnel(d, ue, dp, o4 + 8)
        if e2 then
          local r = inner(d, ue, e2, o2, depth, tag)
          if r then return table.unpack(r, 1, 11) end
        end
      end
    end
    return et, o, ver, o4, 17, 17, o4 + 8, ue, trunc, nil, false
  elseif (proto == 1 and ver == 4) or (proto == 58 and ver == 6) then
    if o4 + 3 > cend then return et, o, ver, o4, proto, nil, nil, nil, trunc, (not ff and "ICMP header past the IP payload" or nil), false end
    if o4 + 3 > n then return et, o, ver, o4, proto, nil, nil, nil, true, nil, false end
    if o4 + 7 > stop then return et, o, ver, o4, proto, proto, stop + 1, stop, trunc or o4 + 7 > n, nil, false end
    return et, o, ver, o4, proto, proto, o4 + 8, stop, trunc, nil, false
  end
  return et, o, ver, o4, proto, nil, o4, stop, trunc, nil, false
end

-- A link type as an integer, or nil: the argument, else riff.packet.linktype.
local function linktype_of(lt)
  local l = tointeger(lt)
  if l then return l end
  if type(lt) ~= "number" then
    local r = riff
    l = r and type(r) == "table" and r.packet and r.packet.linktype
    return tointeger(l)
  end
  return nil
end

local function walk(d, lt)
  if type(d) ~= "string" then return nil, nil, nil, nil, nil, nil, nil, nil, false, "packet is not a string", false end
  lt = linktype_of(lt)
  if not lt then return nil, nil, nil, nil, nil, nil, nil, nil, false, "unknown link type", false end
  local n = #d
  if lt & 0x04000000 ~= 0 then n = n - (lt >> 28) * 2; if n < 0 then n = 0 end end
  encap_list = nil
  return walk0(d, n, lt & 0xffff)
end
M.walk = walk

---------------------------------------------------------------------------
-- Lazily built tables. A layer table holds _d (the packet) and _o (its
-- offset); its metatable computes the rarer fields on first read. Each kind
-- has two metatables: one caching what it computes in the table (fresh
-- tables from decode) and one not caching (the reused tables of
-- decode.reusable(), whose contents change with every packet).
---------------------------------------------------------------------------
local function lazy(getters)
  local caching = {
    __index = function(t, k)
      local g = getters[k]
      if g then
        local v = g(t, t._d, t._o, true)
        if v ~= nil then rawset(t, k, v) end
        return v
      end
    end,
  }
  local plain = {
    __index = function(t, k)
      local g = getters[k]
      if g then return (g(t, t._d, t._o, false)) end
    end,
  }
  return caching, plain
end

local ETH, ETH_R = lazy {
  src = function(_, d) return mac(d, 7) end,
  dst = function(_, d) return mac(d, 1) end,
}

local IP4, IP4_R = lazy {
  src = function(_, d, o) return ip4(d, o + 12) end,
  dst = function(_, d, o) return ip4(d, o + 16) end,
  src_raw = function(_, d, o) return sub(d, o + 12, o + 15) end,
  dst_raw = function(_, d, o) return sub(d, o + 16, o + 19) end,
  ihl = function(_, d, o) return byte(d, o) & 15 end,
  tos = function(_, d, o) return byte(d, o + 1) end,
  dscp = function(_, d, o) return byte(d, o + 1) >> 2 end,
  ecn = function(_, d, o) return byte(d, o + 1) & 3 end,
  flags = function(_, d, o) return byte(d, o + 6) >> 5 end,
  checksum = function(_, d, o) return (unpack(">I2", d, o + 10)) end,
  options = function(t, d, o)
    if t.hlen <= 20 then return nil end
    return sub(d, o + 20, o + t.hlen - 1)
  end,
}

-- The extension header list, header length and fragment fields of an IPv6
-- table (stored in it when caching).
local function v6info(t, d, o, cache)
  local list = {}
  local plen, nh = t.plen, t.next_header
  local n = #d
  local cend = o + 39 + plen
  if plen == 0 and nh ~= 59 then
    local j = nh == 0 and jumbo_len(d, o + 40, n)
    cend = j and o + 39 + j or n
  end
  local _, pos, _, _, _, fo, mf, fid = v6chain(d, o + 40, nh, cend, n, list)
  if cache then
    rawset(t, "ext", list)
    rawset(t, "hlen", pos - o)
    if fo then rawset(t, "frag_offset", fo) rawset(t, "mf", mf) rawset(t, "frag_id", fid) end
  end
  return list, pos - o, fo, mf, fid
end

local IP6, IP6_R = lazy {
  src = function(_, d, o) return ip6(d, o + 8) end,
  dst = function(_, d, o) return ip6(d, o + 24) end,
  src_raw = function(_, d, o) return sub(d, o + 8, o + 23) end,
  dst_raw = function(_, d, o) return sub(d, o + 24, o + 39) end,
  tclass = function(_, d, o) return (unpack(">I4", d, o) >> 20) & 0xff end,
  flow = function(_, d, o) return unpack(">I4", d, o) & 0xfffff end,
  ext = function(t, d, o, c) return (v6info(t, d, o, c)) end,
  hlen = function(t, d, o, c) local _, hl = v6info(t, d, o, c) return hl end,
  frag_offset = function(t, d, o, c) local _, _, fo = v6info(t, d, o, c) return fo end,
  mf = function(t, d, o, c) local _, _, _, mf = v6info(t, d, o, c) return mf end,
  frag_id = function(t, d, o, c) local _, _, _, _, id = v6info(t, d, o, c) return id end,
  jumbo = function(t, d, o)
    if t.plen == 0 and t.next_header == 0 then return jumbo_len(d, o + 40, #d) or false end
    return false
  end,
}

local function tcp_options(t, d, o)
  local opts, kinds = {}, {}
  opts.kinds = kinds
  local p, e = o + 20, o + t.hlen - 1
  if e > #d then e = #d end
  local k = 0
  while p <= e do
    local kind = byte(d, p)
    k = k + 1
    kinds[k] = kind
    if kind == 0 then break end
    if kind == 1 then
      p = p + 1
    else
      if p + 1 > e then opts.malformed = "option " .. kind .. " without a length" break end
      local len = byte(d, p + 1)
      if len < 2 or p + len - 1 > e then opts.malformed = "option " .. kind .. " with bad length " .. len break end
      if kind == 2 and len == 4 then
        opts.mss = unpack(">I2", d, p + 2)
      elseif kind == 3 and len == 3 then
        opts.wscale = byte(d, p + 2)
      elseif kind == 4 and len == 2 then
        opts.sack_perm = true
      elseif kind == 5 and (len - 2) % 8 == 0 then
        local s = {}
        for q = p + 2, p + len - 1, 4 do s[#s + 1] = unpack(">I4", d, q) end
        opts.sack = s
      elseif kind == 8 and len == 10 then
        local v, e2 = unpack(">I4I4", d, p + 2)
        opts.ts = { val = v, ecr = e2 }
      end
      p = p + len
    end
  end
  return opts
end

local TCP, TCP_R = lazy {
  options = tcp_options,
  urg = function(t) return t.flags & 32 ~= 0 end,
  ece = function(t) return t.flags & 64 ~= 0 end,
  cwr = function(t) return t.flags & 128 ~= 0 end,
  checksum = function(_, d, o) return (unpack(">I2", d, o + 16)) end,
  urgent = function(_, d, o) return (unpack(">I2", d, o + 18)) end,
}

-- Layer builders: B[name](pkt) -> layer or nil. With pkt._spare (a table of
-- layer tables, in reusable mode) they refill the spare instead of
-- allocating.
local B = {}

B.payload = function(t)
  local po = t.payload_offset
  if po then return sub(t.data, po, t.payload_end) end
end

B.eth = function(t)
  local d = t.data
  if t.linktype ~= 1 or #d < 14 then return nil end
  local hi, lo = byte(d, 13, 14)
  local ty = hi << 8 | lo
  local len = ty <= 1500 and ty or nil
  local s = t._spare
  if s then
    local r = s.eth
    if r then r._d, r.type, r.length = d, ty, len return r end
    r = setmetatable({ _d = d, type = ty, length = len }, ETH_R)
    s.eth = r
    return r
  end
  return setmetatable({ _d = d, type = ty, length = len }, ETH)
end

local function ip_layer(t)
  local v, d, o = t._ipv, t.data, t.l3_offset
  local s = t._spare
  if v == 4 then
    local vihl, _, tlen, id, fw, ttl, p = unpack(">BBI2I2I2BB", d, o)
    local fo = (fw & 0x1fff) * 8
    local hl, df, mf, frag = (vihl & 15) * 4, fw & 0x4000 ~= 0, fw & 0x2000 ~= 0, fo ~= 0
    local r = s and s.ip4
    if r then
      r._d, r._o, r.hlen, r.len, r.id, r.df, r.mf, r.frag_offset, r.fragment, r.ttl, r.proto =
        d, o, hl, tlen, id, df, mf, fo, frag, ttl, p
      return r
    end
    r = setmetatable({
      _d = d, _o = o, version = 4, hlen = hl, len = tlen, id = id,
      df = df, mf = mf, frag_offset = fo, fragment = frag, ttl = ttl, proto = p,
    }, s and IP4_R or IP4)
    if s then s.ip4 = r end
    return r
  elseif v == 6 then
    local plen, nh, hlim = unpack(">I2BB", d, o + 4)
    local frag = t.fragment or false
    local r = s and s.ip6
    if r then
      r._d, r._o, r.plen, r.len, r.next_header, r.hop_limit, r.ttl, r.proto, r.fragment =
        d, o, plen, 40 + plen, nh, hlim, hlim, t.proto, frag
      return r
    end
    r = setmetatable({
      _d = d, _o = o, version = 6, plen = plen, len = 40 + plen, next_header = nh,
      hop_limit = hlim, ttl = hlim, proto = t.proto, fragment = frag,
    }, s and IP6_R or IP6)
    if s then s.ip6 = r end
    return r
  end
  return nil
end
B.ip = ip_layer
B.ip4 = function(t) if t._ipv == 4 then return t.ip end end
B.ip6 = function(t) if t._ipv == 6 then return t.ip end end

B.tcp = function(t)
  if t._l4 ~= 6 then return nil end
  local d, o = t.data, t.l4_offset
  local sp, dp, seq, ack, offfl, win = unpack(">I2I2I4I4I2I2", d, o)
  local fl = offfl & 0x0fff
  local s = t._spare
  local r = s and s.tcp
  if r then
    r._d, r._o, r.sport, r.dport, r.seq, r.ack_seq, r.hlen, r.flags, r.window = d, o, sp, dp, seq, ack, (offfl >> 12) * 4, fl, win
    r.fin, r.syn, r.rst, r.psh, r.ack = fl & 1 ~= 0, fl & 2 ~= 0, fl & 4 ~= 0, fl & 8 ~= 0, fl & 16 ~= 0
    return r
  end
  r = setmetatable({
    _d = d, _o = o, sport = sp, dport = dp, seq = seq, ack_seq = ack,
    hlen = (offfl >> 12) * 4, flags = fl, window = win,
    fin = fl & 1 ~= 0, syn = fl & 2 ~= 0, rst = fl & 4 ~= 0, psh = fl & 8 ~= 0, ack = fl & 16 ~= 0,
  }, s and TCP_R or TCP)
  if s then s.tcp = r end
  return r
end

B.udp = function(t)
  if t._l4 ~= 17 then return nil end
  local sp, dp, len, sum = unpack(">I2I2I2I2", t.data, t.l4_offset)
  local s = t._spare
  local r = s and s.udp
  if r then r.sport, r.dport, r.len, r.checksum = sp, dp, len, sum return r end
  r = { sport = sp, dport = dp, len = len, checksum = sum }
  if s then s.udp = r end
  return r
end

local function icmp_layer(t, want)
  if t._l4 ~= want then return nil end
  local d, o = t.data, t.l4_offset
  local ty, code, sum = unpack(">BBI2", d, o)
  local rest, id, seq
  if o + 7 <= #d then
    rest = unpack(">I4", d, o + 4)
    if (want == 1 and (ty == 0 or ty == 8 or (ty >= 13 and ty <= 18))) or (want == 58 and (ty == 128 or ty == 129)) then
      id, seq = rest >> 16, rest & 0xffff
    end
  end
  local s = t._spare
  local key = want == 1 and "icmp" or "icmp6"
  local r = s and s[key]
  if r then r.type, r.code, r.checksum, r.rest, r.id, r.seq = ty, code, sum, rest, id, seq return r end
  r = { type = ty, code = code, checksum = sum, rest = rest, id = id, seq = seq }
  if s then s[key] = r end
  return r
end
B.icmp = function(t) return icmp_layer(t, 1) end
B.icmp6 = function(t) return icmp_layer(t, 58) end

-- Link-layer extras (rare: always fresh tables).
B.vlan = function(t)
  local lt, d = t.linktype, t.data
  local tp, ts
  if lt == 1 then tp, ts = 13, 15 elseif lt == 113 then tp, ts = 15, 17 elseif lt == 276 then tp, ts = 1, 21 else return nil end
  if tp + 1 > #d then return nil end
  local et = unpack(">I2", d, tp)
  local ids, pcp, k = nil, nil, 0
  while (et == 0x8100 or et == 0x88a8 or et == 0x9100 or et == 0x9200) and ts + 3 <= #d and k < 8 do
    local tci
    tci, et = unpack(">I2I2", d, ts)
    k = k + 1
    if not ids then ids, pcp = {}, {} end
    ids[k], pcp[k] = tci & 0xfff, tci >> 13
    ts = ts + 4
  end
  if ids then ids.pcp = pcp end
  return ids
end

B.sll = function(t)
  local lt, d = t.linktype, t.data
  if lt == 113 and #d >= 16 then
    local pkttype, hatype, halen = unpack(">I2I2I2", d, 1)
    local proto = unpack(">I2", d, 15)
    return { version = 1, pkttype = pkttype, hatype = hatype, halen = halen, protocol = proto,
             addr = hex(d, 7, halen <= 8 and halen or 8) }
  elseif lt == 276 and #d >= 20 then
    local proto, _, ifindex, hatype, pkttype, halen = unpack(">I2I2I4I2BB", d, 1)
    return { version = 2, protocol = proto, ifindex = ifindex, hatype = hatype, pkttype = pkttype,
             halen = halen, addr = hex(d, 13, halen <= 8 and halen or 8) }
  end
end

B.null = function(t)
  local lt, d = t.linktype, t.data
  if (lt == 0 or lt == 108) and #d >= 4 then
    local fam = unpack("<I4", d, 1)
    if fam > 0xffff then fam = unpack(">I4", d, 1) end
    return { family = fam }
  end
end

local PKT = {
  __index = function(t, k)
    local b = B[k]
    if b then
      local v = b(t)
      if v ~= nil then rawset(t, k, v) end
      return v
    end
  end,
}

local function decode(d, lt)
  local l = linktype_of(lt)
  local et, o3, ver, o4, proto, l4, po, pe, tr, mal, frag = walk(d, l)
  l = l and l & 0xffff
  return setmetatable({
    data = d, linktype = l, ethertype = et,
    l3_offset = o3, _ipv = ver, l4_offset = o4, proto = proto, _l4 = l4,
    payload_offset = po, payload_end = pe,
    truncated = tr or nil, malformed = mal, fragment = frag or nil, _spare = false, encap = encap_list,
  }, PKT)
end

-- A decode function that fills and returns the same table (and the same
-- layer tables) on every call: nothing is allocated per packet unless text
-- fields, options or the payload are read. Those are recomputed on each
-- read (keep them in locals), and everything changes with the next call.
function M.reusable()
  local spare = {}
  local t = setmetatable({ _spare = spare }, PKT)
  return function(d, lt)
    local l = linktype_of(lt)
    local et, o3, ver, o4, proto, l4, po, pe, tr, mal, frag = walk(d, l)
    l = l and l & 0xffff
    t.eth, t.vlan, t.sll, t.null, t.ip, t.ip4, t.ip6 = nil, nil, nil, nil, nil, nil, nil
    t.tcp, t.udp, t.icmp, t.icmp6, t.payload = nil, nil, nil, nil, nil
    t.data, t.linktype, t.ethertype, t.l3_offset, t._ipv, t.l4_offset, t.proto, t._l4 = d, l, et, o3, ver, o4, proto, l4
    t.payload_offset, t.payload_end, t.truncated, t.malformed, t.fragment = po, pe, tr or nil, mal, frag or nil
    t.encap = encap_list
    return t
  end
end

M.decode = decode
M.layers = B -- the builders: add a layer with B.name = function(pkt) ... end

return setmetatable(M, { __call = function(_, d, lt) return decode(d, lt) end })
