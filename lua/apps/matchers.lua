-- apps.matchers: the Lua checks a signature line names with `lua=NAME`
-- (lua/apps/signatures.txt), for what byte tests cannot say: versions out of
-- a set, lengths inside the payload, a line's ending, state carried to a
-- later flow. Each is called only after the line's ports, length and byte
-- tests passed, as
--   ok = check(d, p, e, conn, dir, ctx)
-- d the packet, p..e the payload (inclusive offsets), conn the flow.tcp /
-- flow.udp flow, dir "c2s"|"s2c", ctx = { kind = "tcp"|"udp", n = this
-- direction's payload packet number (1 = first), expect = function(ip, port,
-- app, kind), port_claimed = function(port) }. ctx.port_claimed says whether
-- a signature of the flow's transport names that port (a port rule or a
-- byte feature dispatched by it): weak heuristics keep off such ports.
-- ctx.expect names a flow not yet seen: the next flow with
-- that ip:port at either end (within app_id.expect_timeout seconds) gets
-- app without further tests (TFTP data, FTP data channels).
-- A check returning the string "watch" keeps the matched flow's later
-- packets coming to the same check (up to app_id.watch_packets), for
-- protocols that announce their data flows later (FTP's PASV/PORT).
-- Checks must not raise on short or odd payloads: they read at most e.

local byte, find, match, sub, unpack, lower = string.byte, string.find, string.match, string.sub, string.unpack, string.lower

local M = {}

-- The server name in a TLS ClientHello record at d[p..e] (RFC 8446 4.1.2,
-- RFC 6066 3), or nil; plugin.app_id and the QUIC check read it.
function M.sni(d, p, e)
  -- record(5) handshake type(1) len(3) version(2) random(32)
  if e - p < 43 or byte(d, p + 5) ~= 1 then return nil end
  local q = p + 43
  local sid = byte(d, q) if not sid then return nil end
  q = q + 1 + sid
  if q + 1 > e then return nil end
  q = q + 2 + unpack(">I2", d, q)
  if q > e then return nil end
  q = q + 1 + byte(d, q)
  if q + 1 > e then return nil end
  local xend = q + 1 + unpack(">I2", d, q)
  if xend > e then xend = e end
  q = q + 2
  while q + 3 <= xend do
    local t, l = unpack(">I2I2", d, q)
    if t == 0 then
      if q + 8 > xend then return nil end
      local nt, nl = byte(d, q + 6), unpack(">I2", d, q + 7)
      if nt ~= 0 or q + 8 + nl > xend + 1 then return nil end
      return sub(d, q + 9, q + 8 + nl)
    end
    q = q + 4 + l
  end
  return nil
end

-- TLS record header midstream: content type 0x14-0x17 (the byte test), then
-- version 3.0-3.4 and a record length TLS allows (2^14 + 2048).
function M.tls_record(d, p, e)
  if e - p < 4 then return false end
  local maj, mnr, len = byte(d, p + 1), byte(d, p + 2), unpack(">I2", d, p + 3)
  return maj == 3 and mnr <= 4 and len > 0 and len <= 18432
end

-- DTLS record: type 0x14-0x19, version fe ff (1.0) / fe fd (1.2) / fe fc (1.3),
-- epoch, sequence, then a length that fits the datagram.
function M.dtls(d, p, e)
  if e - p < 12 then return false end
  local mnr = byte(d, p + 2)
  if byte(d, p + 1) ~= 0xfe or (mnr ~= 0xff and mnr ~= 0xfd and mnr ~= 0xfc) then return false end
  return p + 12 + unpack(">I2", d, p + 11) <= e + 1
end

-- QUIC long header of any version (RFC 9000 17.2, RFC 8999): header form
-- bit set; version 1, 2 (RFC 9369) and its draft's 709a50c4, the IETF
-- drafts ff0000xx, a greased ?a?a?a?a (RFC 9000 15), 0 (version
-- negotiation), Google's Q0xx/T0xx and Facebook's faceb00x; connection ID
-- lengths of at most 20.
local function quic_version_ok(v)
  return v == 1 or v == 0x6b3343cf or v == 0x709a50c4 or v >> 8 == 0xff0000 or v == 0 or v & 0x0f0f0f0f == 0x0a0a0a0a
    or v >> 16 == 0x5130 or v >> 16 == 0x5430 or v >> 4 == 0xfaceb00
end
M.quic_version_ok = quic_version_ok
-- QUIC variable-length integer (RFC 9000 16) at q: value, next position.
local function varint(d, q, e)
  local b = byte(d, q)
  if not b or q > e then return nil end
  local n = 1 << (b >> 6)
  if q + n - 1 > e then return nil end
  local v = b & 0x3f
  for i = 1, n - 1 do v = v * 256 + byte(d, q + i) end
  return v, q + n
end

-- The CRYPTO frames of a client Initial's plaintext (RFC 9000 19.6) into
-- the flow's ClientHello buffer: fragments by offset, at most CH_MAX bytes.
-- Returns the ClientHello's server name once it is whole (false: whole, no
-- name), nil while parts are missing.
local CH_MAX = 16384
local function crypto_feed(u, f)
  local q, e = 1, #f
  local parts = u.quic_parts
  if not parts then parts = {} u.quic_parts = parts end
  while q <= e do
    local t = byte(f, q)
    if t == 0x00 or t == 0x01 then q = q + 1 -- PADDING, PING
    elseif t == 0x02 or t == 0x03 then -- ACK: largest, delay, count, first range, ranges (ECN counts)
      local n, v = 0, nil
      v, q = varint(f, q + 1, e) if not q then return nil end
      v, q = varint(f, q, e) if not q then return nil end
      n, q = varint(f, q, e) if not q or n > 64 then return nil end
      v, q = varint(f, q, e) if not q then return nil end
      for _ = 1, 2 * n + (t == 0x03 and 3 or 0) do v, q = varint(f, q, e) if not q then return nil end end
    elseif t == 0x06 then
      local off, len
      off, q = varint(f, q + 1, e) if not q then return nil end
      len, q = varint(f, q, e) if not q or q + len - 1 > e then return nil end
      if off + len <= CH_MAX then parts[#parts + 1] = { off, sub(f, q, q + len - 1) } end
      q = q + len
    else break end -- CONNECTION_CLOSE or anything else ends the frames riff reads
  end
  -- Contiguous bytes from offset 0.
  table.sort(parts, function(a, b) return a[1] < b[1] end)
  local have, buf = 0, {}
  for i = 1, #parts do
    local off, data = parts[i][1], parts[i][2]
    if off > have then break end
    if off + #data > have then buf[#buf + 1] = sub(data, have - off + 1) have = off + #data end
  end
  if have < 4 then return nil end
  local ch = table.concat(buf)
  if byte(ch, 1) ~= 1 then return false end
  local need = 4 + unpack(">I3", ch, 2)
  if have < need then return nil end
  -- A TLS record header in front lets the TLS SNI parser read it.
  local rec = "\22\3\1" .. string.pack(">I2", need) .. sub(ch, 1, need)
  return M.sni(rec, 1, #rec) or false
end
M.quic_crypto_feed = crypto_feed

-- A client Initial's server name (RFC 9001 5.2: its keys come from the
-- Destination Connection ID, riff.quic_initial opens it in TypeScript):
-- the check waits for a ClientHello split over two Initials (Chrome's with
-- its key shares), until the client's third payload packet or a short-header
-- packet (quic_pending), then names the flow QUIC with or without it.
-- A version outside quic_version_ok's list (an experiment, a version newer
-- than riff) is QUIC only when a client datagram of at least 1200 bytes
-- (RFC 9000 14.1) opens as an Initial under the keys riff.quic_initial
-- falls back on (v1's, draft-29's): the AEAD tag, not the version number,
-- says it is QUIC.
function M.quic(d, p, e, conn, dir, ctx)
  if e - p < 6 then return false end
  local v = unpack(">I4", d, p + 1)
  local known = quic_version_ok(v)
  if not known and (dir ~= "c2s" or e - p + 1 < 1200) then return false end
  local dcl = byte(d, p + 5)
  if known and (v >> 16 == 0x5130 or v >> 16 == 0x5430) then -- gQUIC: own layout, a cleartext CHLO up to Q046
    local name = conn and M.chlo_sni(d, p, e)
    if name then ctx.sni, conn.user.host = name, name end
    return true
  end
  if dcl > 20 or p + 6 + dcl > e then return false end
  local scl = byte(d, p + 6 + dcl)
  if scl > 20 then return false end
  if v == 0 then return true end -- version negotiation: the rest is versions
  local u = conn and conn.user
  local open = riff and riff.quic_initial
  if not (u and open and ctx) then return known end
  if dir == "c2s" and u.quic_sni == nil then
    if not u.quic_dcid then u.quic_dcid = sub(d, p + 6, p + 5 + dcl) end
    -- the first Initial's connection ID keys the later ones, except after a
    -- Retry (RFC 9001 5.2) or a version negotiation, when the packet's own does
    local frames = open(d, p, e, u.quic_dcid) or open(d, p, e)
    if frames then
      local name = crypto_feed(u, frames)
      if name ~= nil then
        u.quic_sni, u.quic_parts = name, nil
        if name then ctx.sni, u.host = name, name end
        return true
      end
      if ctx.n < 3 then u.quic_wait = true return false end
    elseif not known then
      return false
    end
  elseif dir == "s2c" and u.quic_wait and ctx.n < 3 then
    return false
  end
  u.quic_parts = nil
  return true
end

-- A short-header (1-RTT) packet of a flow whose ClientHello was waited for:
-- the handshake is over, the rest of the ClientHello will not come.
function M.quic_pending(d, p, e, conn)
  local u = conn and conn.user
  return u ~= nil and u.quic_wait == true
end

-- AFS RX header: type 1 (data) .. 13 (version), security index 0-3.
function M.rx(d, p, e)
  if e - p < 27 then return false end
  local t, sec = byte(d, p + 20), byte(d, p + 23)
  return t >= 1 and t <= 13 and sec <= 3
end

-- gQUIC before IETF headers (Q043 and older): public flags with the version
-- bit, an 8-byte connection ID, then "Q0xx".
function M.gquic(d, p, e, conn, dir, ctx)
  if e - p < 12 then return false end
  local f = byte(d, p)
  if not (f & 0x01 == 1 and f & 0x80 == 0 and byte(d, p + 10) >= 0x30 and byte(d, p + 10) <= 0x39) then return false end
  local name = conn and ctx and M.chlo_sni(d, p, e)
  if name then ctx.sni, conn.user.host = name, name end
  return true
end

-- The SNI tag of a gQUIC client hello (Q046 and older send it in clear):
-- "CHLO", a tag count, then (tag, end offset) pairs, little-endian, then
-- the values.
function M.chlo_sni(d, p, e)
  local c = find(d, "CHLO", p, true)
  if not c or c > p + 128 or c + 8 > e then return nil end
  local n = unpack("<I2", d, c + 4)
  local tags = c + 8
  local vals = tags + 8 * n
  if n == 0 or n > 64 or vals > e then return nil end
  local start = 0
  for i = 0, n - 1 do
    local t = tags + 8 * i
    local stop = unpack("<I4", d, t + 4)
    if sub(d, t, t + 3) == "SNI\0" then
      if stop <= start or vals + stop - 1 > e or stop - start > 255 then return nil end
      return sub(d, vals + start, vals + stop - 1)
    end
    start = stop
  end
  return nil
end

-- The request line of an RTSP request ends in RTSP/1.x (RFC 2326, 7826):
-- what tells OPTIONS/GET_PARAMETER... from HTTP's methods.
function M.rtsp(d, p, e)
  local lim = e < p + 512 and e or p + 512
  local eol = find(d, "\r\n", p, true)
  if not eol or eol > lim then eol = lim end
  return find(sub(d, p, eol), " RTSP/1.", 1, true) ~= nil
end

-- An HTTP request line ends in HTTP/1.x (and is not RTSP); http_proxy
-- is one with an absolute URI (RFC 9112 3.2.2: sent to a proxy), http one
-- without.
local function http_line(d, p, e)
  local lim = e < p + 2048 and e or p + 2048
  local eol = find(d, "\n", p, true)
  if not eol or eol > lim then return e - p > 6 and not M.rtsp(d, p, e) end -- long URI cut by the segment
  return find(sub(d, p, eol), " HTTP/", 1, true) ~= nil
end
local function absolute(d, p)
  local sp = find(d, " ", p, true)
  return sp ~= nil and lower(sub(d, sp + 1, sp + 7)) == "http://"
end
function M.http(d, p, e) return http_line(d, p, e) and not absolute(d, p) end
function M.http_proxy(d, p, e) return http_line(d, p, e) and absolute(d, p) end

-- TFTP request (RFC 1350): opcode 1 or 2, a file name, a mode; the transfer
-- then runs from a new server port to the client's port.
function M.tftp(d, p, e, conn, dir, ctx)
  if e - p < 3 or byte(d, p) ~= 0 then return false end
  local op = byte(d, p + 1)
  if op == 1 or op == 2 then
    local z = find(d, "\0", p + 2, true)
    if not z or z > e then return false end
    local mode = sub(d, z + 1, e):lower()
    if not (find(mode, "^netascii") or find(mode, "^octet") or find(mode, "^mail")) then return false end
    if dir == "c2s" then ctx.expect(conn.client_ip, conn.client_port, "TFTP", "udp") end
    return true
  end
  -- data/ack/error on the request's own port
  return op >= 3 and op <= 6
end

-- FTP control: after the banner, watch for the data channels the two sides
-- agree on: 227 (PASV), 229 (EPSV), PORT and EPRT.
function M.ftp(d, p, e, conn, dir, ctx)
  local line = sub(d, p, e < p + 300 and e or p + 300)
  if dir == "s2c" then
    local a, b, c, x, p1, p2 = match(line, "^227 .-(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)")
    if a then ctx.expect(a .. "." .. b .. "." .. c .. "." .. x, tonumber(p1) * 256 + tonumber(p2), "FTP_DATA", "tcp") end
    local ep = match(line, "^229 .-%(|||(%d+)|%)")
    if ep then ctx.expect(conn.server_ip, tonumber(ep), "FTP_DATA", "tcp") end
  else
    local a, b, c, x, p1, p2 = match(line, "^PORT (%d+),(%d+),(%d+),(%d+),(%d+),(%d+)")
    if a then ctx.expect(a .. "." .. b .. "." .. c .. "." .. x, tonumber(p1) * 256 + tonumber(p2), "FTP_DATA", "tcp") end
    local ip, ep = match(line, "^EPRT |%d|([^|]+)|(%d+)|")
    if ip then ctx.expect(ip, tonumber(ep), "FTP_DATA", "tcp") end
  end
  return "watch"
end

-- DNS message (RFC 1035 4.1.1) on the DNS port. What nDPI 4.2 takes for
-- DNS there, less what no DNS speaker sends: the 12-byte header and more;
-- an assigned opcode (0 QUERY, 1 IQUERY, 2 STATUS, 4 NOTIFY, 5 UPDATE,
-- 6 DSO); at most 16 questions (nDPI's bound, either way). A query asks
-- at least one and carries answer or authority records only as an UPDATE
-- or a plain QUERY/IQUERY (AA, RA, Z, AD, CD clear), where nDPI refuses
-- the rest. A response is otherwise taken as nDPI takes any: answers can
-- be many, a zone transfer's later messages repeat no question.
function M.dns(d, p, e)
  if e - p < 12 then return false end
  local _, fl, qd, an, ns = unpack(">I2I2I2I2I2", d, p)
  local op = (fl >> 11) & 15
  if op == 3 or op > 6 or qd > 16 then return false end
  if fl & 0x8000 ~= 0 then return true end
  return qd > 0 and ((an == 0 and ns == 0) or op == 5 or (op <= 1 and fl & 0x04f0 == 0))
end

-- The TCP connection was seen from its SYN on, not picked up midstream:
-- FTP data from or to port 20 is FTP_DATA whatever it carries (a file), as
-- nDPI 4.2 names it when it saw the SYN; midstream, the bytes decide.
function M.handshake(d, p, e, conn) return conn.syn == true end

-- NTP (RFC 5905): version 1-4, mode 1-5, exactly 48 bytes (plus MAC/extensions in multiples of 4).
function M.ntp(d, p, e)
  local n = e - p + 1
  if n < 48 or n % 4 ~= 0 then return false end
  local b = byte(d, p)
  local v, mode = (b >> 3) & 7, b & 7
  return v >= 1 and v <= 4 and mode >= 1 and mode <= 5
end

-- MPEG transport stream: 0x47 sync byte every 188 bytes.
function M.mpegts(d, p, e)
  local n = e - p + 1
  if n < 188 or n % 188 ~= 0 then return false end
  for q = p, e, 188 do if byte(d, q) ~= 0x47 then return false end end
  return true
end

-- TPKT (RFC 1006) whose length field is the segment's length.
function M.tpkt(d, p, e)
  return e - p >= 6 and unpack(">I2", d, p + 2) == e - p + 1
end

-- A 4-byte big-endian length prefix equal to the rest of the segment
-- (MySQL uses 3 little-endian bytes: see mysql).
function M.len4(d, p, e)
  return e - p >= 7 and unpack(">I4", d, p) == e - p + 1
end

-- MySQL server greeting: 3-byte little-endian length, sequence 0, protocol 10.
function M.mysql(d, p, e)
  if e - p < 10 then return false end
  local len = unpack("<I3", d, p)
  return len == e - p - 3 and byte(d, p + 3) == 0 and byte(d, p + 4) == 10
end

-- PostgreSQL StartupMessage (length, protocol 3.0) or SSLRequest (80877103).
function M.pgsql(d, p, e)
  if e - p < 7 then return false end
  local len, code = unpack(">I4I4", d, p)
  return len == e - p + 1 and (code == 0x00030000 or code == 80877103 or code == 80877102 or code == 80877104)
end

-- MongoDB wire message: length == segment, opcodes OP_MSG 2013, OP_QUERY 2004, OP_REPLY 1, OP_COMPRESSED 2012.
function M.mongodb(d, p, e)
  if e - p < 15 then return false end
  local len, _, _, op = unpack("<I4I4I4I4", d, p)
  return len == e - p + 1 and (op == 2013 or op == 2004 or op == 1 or op == 2012)
end

-- MsSQL TDS (MS-TDS 2.2.3): type pre-login 0x12 / login 0x10 / response 0x04, status <= 0x1f, length == segment.
function M.tds(d, p, e)
  return e - p >= 7 and byte(d, p + 1) <= 0x1f and unpack(">I2", d, p + 2) == e - p + 1
end

-- Oracle TNS: length == segment, packet type 1 (connect) .. 6 (data).
function M.tns(d, p, e)
  if e - p < 7 then return false end
  local t = byte(d, p + 4)
  return unpack(">I2", d, p) == e - p + 1 and t >= 1 and t <= 14
end

-- Cassandra CQL frame: version 3-5 (|0x80 for responses), opcode <= 0x10, length fits.
function M.cql(d, p, e)
  if e - p < 8 then return false end
  local v = byte(d, p) & 0x7f
  return v >= 3 and v <= 5 and byte(d, p + 4) <= 0x10 and unpack(">I4", d, p + 5) == e - p - 8
end

-- SMB over NetBIOS session service: length in bytes 1-3 == segment.
function M.nbss(d, p, e)
  return e - p >= 7 and unpack(">I3", d, p + 1) == e - p - 3
end

-- ONC RPC (RFC 5531) call over UDP: message type 0 (call), RPC version 2.
function M.oncrpc_udp(d, p, e)
  return e - p >= 23 and unpack(">I4", d, p + 4) == 0 and unpack(">I4", d, p + 8) == 2
end
-- over TCP: record mark with the last-fragment bit, then the same.
function M.oncrpc_tcp(d, p, e)
  return e - p >= 27 and byte(d, p) & 0x80 ~= 0 and unpack(">I4", d, p + 8) == 0 and unpack(">I4", d, p + 12) == 2
end

-- RTP (RFC 3550) version 2 (the byte test), on ports > 1023, payload type
-- outside RTCP's 72-79; named on the second packet of a direction that
-- keeps the first one's SSRC with a sequence number 1-16 further.
function M.rtp(d, p, e, conn, dir)
  if e - p < 11 or conn.server_port < 1024 or conn.client_port < 1024 then return false end
  local pt = byte(d, p + 1) & 0x7f
  if pt >= 72 and pt <= 79 then return false end
  local seq, ssrc = unpack(">I2", d, p + 2), unpack(">I4", d, p + 8)
  local u = conn.user
  local k = dir == "c2s" and "rtp_c" or "rtp_s"
  local prev = u[k]
  if prev and prev[1] == ssrc then
    local gap = (seq - prev[2]) & 0xffff
    if gap >= 1 and gap <= 16 then return true end
  end
  u[k] = { ssrc, seq }
  return false
end
-- RTCP: version 2, packet type 200-207 (SR, RR, SDES, BYE, APP, ...), length fits.
function M.rtcp(d, p, e, conn)
  if e - p < 7 or conn.server_port < 1024 or conn.client_port < 1024 then return false end
  local pt = byte(d, p + 1)
  return pt >= 200 and pt <= 207 and (unpack(">I2", d, p + 2) + 1) * 4 <= e - p + 1
end

-- MQTT CONNECT (MQTT 3.1.1/5 3.1): remaining length, then "MQTT"/"MQIsdp".
function M.mqtt(d, p, e)
  if e - p < 9 then return false end
  local q = p + 1
  for _ = 1, 4 do
    if byte(d, q) < 0x80 then break end
    q = q + 1
  end
  q = q + 1
  return sub(d, q, q + 5) == "\0\4MQTT" or sub(d, q, q + 7) == "\0\6MQIsdp"
end

-- uTP (BEP 29), BitTorrent's transport over UDP: a 20-byte header with
-- version 1 and type 0-4 (DATA, FIN, STATE, RESET, SYN) in byte 0, an
-- extension 0-2, a connection id. One side sends with recv_id, the other
-- with recv_id + 1; the SYN carries recv_id and so does its STATE reply.
-- So a flow is uTP when the two directions' ids differ by one (or are
-- equal after a SYN): the header's bits alone are too few.
function M.utp(d, p, e, conn, dir)
  if e - p < 19 then return false end
  local b, x = byte(d, p, p + 1)
  if b & 15 ~= 1 or b >> 4 > 4 or x > 2 then return false end
  local u = conn and conn.user
  if not u then return false end
  local id = unpack(">I2", d, p + 2)
  local mine, other = "utp_c", "utp_s"
  if dir ~= "c2s" then mine, other = "utp_s", "utp_c" end
  local o = u[other]
  if o then
    local diff = (id - o[1]) & 0xffff
    if diff == 1 or diff == 0xffff or (diff == 0 and (o[2] == 4 or b >> 4 == 4)) then return true end
  end
  if not u[mine] then u[mine] = { id, b >> 4 } end
  return false
end

-- SSDP/WSD/HTTPU: an HTTP-like request over UDP.
function M.httpu(d, p, e)
  return http_line(d, p, e)
end

-- SIP: request line ending in SIP/2.0, or a "SIP/2.0 " status line.
function M.sip(d, p, e)
  local lim = e < p + 512 and e or p + 512
  local eol = find(d, "\r\n", p, true)
  if not eol or eol > lim then return false end
  return find(sub(d, p, eol), " SIP/2.0", 1, true) ~= nil
end

-- Kerberos (RFC 4120) over UDP: APPLICATION 10/11/12/13/30 tags (AS-REQ...KRB-ERROR).
function M.kerberos(d, p, e)
  if e - p < 8 then return false end
  local t = byte(d, p)
  return t == 0x6a or t == 0x6b or t == 0x6c or t == 0x6d or t == 0x7e
end

-- RADIUS (RFC 2865): code 1-5, 11-13, 40-45; length == datagram.
function M.radius(d, p, e)
  if e - p < 19 then return false end
  return unpack(">I2", d, p + 2) == e - p + 1
end

-- DHCP (RFC 2131): op 1/2, htype 1, hlen 6, the magic cookie at 236.
function M.dhcp(d, p, e)
  return e - p >= 239 and unpack(">I4", d, p + 236) == 0x63825363
end

-- WireGuard (handshake initiation 148 bytes, response 92, cookie 64, data >= 32 multiple of 16).
function M.wireguard(d, p, e)
  local n, t = e - p + 1, byte(d, p)
  return (t == 1 and n == 148) or (t == 2 and n == 92) or (t == 3 and n == 64) or (t == 4 and n >= 32 and n % 16 == 0)
end

-- OpenVPN over UDP: opcode (top 5 bits) 1-10, key id, and for the hard
-- resets a 0 ack array length at byte 9 (no HMAC) or 37/45 (tls-auth).
function M.openvpn_udp(d, p, e)
  if e - p < 13 then return false end
  local op = byte(d, p) >> 3
  return op == 7 or op == 8 or op == 1 or op == 2 or op == 10
end
-- over TCP: a 2-byte length == segment, then the same opcode.
function M.openvpn_tcp(d, p, e)
  if e - p < 15 then return false end
  local op = byte(d, p + 2) >> 3
  return unpack(">I2", d, p) == e - p - 1 and (op == 7 or op == 8 or op == 1 or op == 2 or op == 10)
end

-- IKE (RFC 7296): version 1.0 or 2.0 at byte 17, length == datagram; on
-- 4500 after the 4-byte non-ESP marker.
function M.ike(d, p, e, conn)
  local q = p
  if conn.server_port == 4500 or conn.client_port == 4500 then
    if e - p >= 3 and unpack(">I4", d, p) == 0 then q = p + 4 else return e - p >= 7 end -- ESP in UDP
  end
  if e - q < 27 then return e - q == 0 and byte(d, q) == 0xff end -- NAT keepalive
  local v = byte(d, q + 17)
  return (v == 0x10 or v == 0x20) and unpack(">I4", d, q + 24) == e - q + 1
end

-- STUN (RFC 5389): type top bits 00, length multiple of 4 == rest, magic cookie.
function M.stun(d, p, e)
  return e - p >= 19 and byte(d, p) < 0x40 and unpack(">I2", d, p + 2) == e - p - 19
end

-- SNMP (RFC 3416): SEQUENCE, then INTEGER version 0/1/3.
function M.snmp(d, p, e)
  if e - p < 6 then return false end
  local q = p + 2
  if byte(d, p + 1) == 0x81 then q = p + 3 elseif byte(d, p + 1) == 0x82 then q = p + 4 end
  return byte(d, q) == 2 and byte(d, q + 1) == 1 and byte(d, q + 2) <= 3
end

-- NetBIOS name service (RFC 1002): DNS-like header, one question or answer.
function M.nbns(d, p, e)
  if e - p < 11 then return false end
  local _, _, qd, an = unpack(">I2I2I2I2", d, p)
  return qd + an >= 1 and qd + an <= 2
end

-- Syslog (RFC 3164/5424): "<PRI>" with PRI 0-191.
function M.syslog(d, p, e)
  local pri = match(sub(d, p, p + 5), "^<(%d%d?%d?)>")
  return pri ~= nil and tonumber(pri) <= 191
end

-- Redis RESP: an array "*N\r\n" or inline commands; server replies +OK, -ERR, :n, $n.
function M.resp(d, p, e)
  return find(sub(d, p, p + 20), "^[%*%$%+%-:][^\r\n]*\r\n") ~= nil
end

-- Memcached text protocol commands and replies.
function M.memcached(d, p, e)
  local w = match(sub(d, p, p + 12), "^(%l+)[ \r]")
  return w == "get" or w == "gets" or w == "set" or w == "add" or w == "replace" or w == "delete"
    or w == "incr" or w == "decr" or w == "stats" or w == "version" or w == "VALUE" or w == "STORED"
    or w == "touch" or w == "cas" or w == "append" or w == "prepend"
end

-- The Bitcoin / Ethereum-stratum style mining: JSON-RPC with a mining method.
function M.mining(d, p, e)
  local s = sub(d, p, e < p + 512 and e or p + 512)
  return find(s, '"mining%.') ~= nil or find(s, '"eth_submitLogin"', 1, true) ~= nil or find(s, '"login"', 1, true) ~= nil and find(s, '"agent"', 1, true) ~= nil
end

-- Modbus/TCP (MBAP header): protocol id 0, length == rest of the segment.
function M.modbus(d, p, e)
  return e - p >= 7 and unpack(">I2", d, p + 2) == 0 and unpack(">I2", d, p + 4) == e - p - 5
end

-- IEC 60870-5-104 APCI: start 0x68, length byte == rest (4-253).
function M.iec104(d, p, e)
  local l = byte(d, p + 1)
  return l and l >= 4 and l == e - p - 1
end

-- DNP3 (IEEE 1815) link header: 05 64, length >= 5.
function M.dnp3(d, p, e)
  return e - p >= 9 and byte(d, p + 2) >= 5
end

-- CoAP (RFC 7252): version 1, token length <= 8, code class 0, 2, 4 or 5.
function M.coap(d, p, e)
  if e - p < 3 then return false end
  local b, c = byte(d, p, p + 1)
  local cls = c >> 5
  return b >> 6 == 1 and b & 15 <= 8 and (cls == 0 or cls == 2 or cls == 4 or cls == 5)
end

-- Teredo (RFC 4380): an IPv6 header (after an optional auth or origin indication).
function M.teredo(d, p, e)
  local q = p
  if byte(d, q) == 0 and byte(d, q + 1) == 0 then q = q + 8 end -- origin indication
  return e - q >= 39 and byte(d, q) >> 4 == 6
end

-- GTP-U (3GPP TS 29.281): version 1, PT 1, message type 255 (G-PDU) or echo 1/2.
function M.gtpu(d, p, e)
  if e - p < 7 then return false end
  local t = byte(d, p + 1)
  return (t == 255 or t == 1 or t == 2 or t == 26 or t == 254) and unpack(">I2", d, p + 2) == e - p - 7
end
-- GTP-C (29.274): version 2, length == rest.
function M.gtpc(d, p, e)
  return e - p >= 7 and unpack(">I2", d, p + 2) == e - p - 3
end

-- VXLAN (RFC 7348): I flag, reserved bits zero.
function M.vxlan(d, p, e)
  return e - p >= 15 and byte(d, p + 1) == 0 and byte(d, p + 2) == 0 and byte(d, p + 3) == 0 and byte(d, p + 7) == 0
end

-- RakNet offline message magic (Minecraft Bedrock and others) at byte 1 or 17.
local RAKNET = "\0\255\255\0\254\254\254\254\253\253\253\253\18\52\86\120"
function M.raknet(d, p, e)
  return sub(d, p + 1, p + 16) == RAKNET or sub(d, p + 17, p + 32) == RAKNET or sub(d, p + 9, p + 24) == RAKNET
end

-- eDonkey/eMule: protocol byte e3/c5/d4, 4-byte little-endian length == rest.
function M.edonkey(d, p, e)
  return e - p >= 5 and unpack("<I4", d, p + 1) == e - p - 4
end

-- Diameter (RFC 6733): version 1, 3-byte length == segment.
function M.diameter(d, p, e)
  return e - p >= 19 and unpack(">I3", d, p + 1) == e - p + 1
end

-- SMPP (SMPP 3.4): length == segment, bind commands 1, 2, 9 (and responses).
function M.smpp(d, p, e)
  if e - p < 15 then return false end
  local len, cmd = unpack(">I4I4", d, p)
  cmd = cmd & 0x7fffffff
  return len == e - p + 1 and (cmd == 1 or cmd == 2 or cmd == 9 or cmd == 0x15)
end

-- AJP13 (Apache JServ): request magic 0x1234 or reply "AB", length == rest.
function M.ajp(d, p, e)
  return e - p >= 4 and unpack(">I2", d, p + 2) == e - p - 3
end

-- Zabbix: "ZBXD" then flags 1 (or 3 compressed).
function M.zabbix(d, p, e)
  local f = byte(d, p + 4)
  return f == 1 or f == 3 or f == 5
end

-- Skinny (SCCP): 4-byte little-endian length == rest - 4, then 4 reserved zero bytes.
function M.skinny(d, p, e)
  return e - p >= 11 and unpack("<I4", d, p) == e - p - 7 and unpack("<I4", d, p + 4) == 0
end

-- TeamViewer: 0x17 0x24 (TCP) / 0x00 0x17 0x24 ... first bytes, length fits.
function M.teamviewer(d, p, e)
  return e - p >= 3
end

-- IAX2 (RFC 5456): full frame (F bit), frame type 6 (IAX), NEW subclass 1 or any on 4569.
function M.iax(d, p, e)
  return e - p >= 11 and byte(d, p) & 0x80 ~= 0 and byte(d, p + 10) <= 0x0f
end

-- Cisco HSRP (RFC 2281): version 0, op 0-2, state 0-16 (UDP 1985 to 224.0.0.2).
function M.hsrp(d, p, e)
  return e - p >= 19 and byte(d, p) <= 1 and byte(d, p + 1) <= 3
end

-- NetFlow v5/v9, IPFIX (v10): version and a count that fits.
function M.netflow(d, p, e)
  if e - p < 19 then return false end
  local v = unpack(">I2", d, p)
  if v == 10 then return unpack(">I2", d, p + 2) == e - p + 1 end
  return v == 5 or v == 9 or v == 1 or v == 7
end
-- sFlow v5: version 5, agent address type 1 or 2.
function M.sflow(d, p, e)
  return e - p >= 27 and unpack(">I4", d, p) == 5 and (unpack(">I4", d, p + 4) == 1 or unpack(">I4", d, p + 4) == 2)
end

-- L2TP (RFC 2661/3931) control or data header, version 2 or 3.
function M.l2tp(d, p, e)
  local v = byte(d, p + 1)
  return e - p >= 5 and v and (v & 15 == 2 or v & 15 == 3)
end

-- CAPWAP (RFC 5415): preamble version 0, type 0/1.
function M.capwap(d, p, e)
  return e - p >= 7 and byte(d, p) >> 4 == 0
end

-- LDAP (RFC 4511): SEQUENCE, INTEGER message id, an application tag 0x60-0x79.
function M.ldap(d, p, e)
  if e - p < 6 then return false end
  local q = p + 2
  local l = byte(d, p + 1)
  if l >= 0x81 and l <= 0x84 then q = p + 2 + (l & 0x7f) end
  if byte(d, q) ~= 2 then return false end
  local il = byte(d, q + 1)
  if not il or il > 4 then return false end
  local t = byte(d, q + 2 + il)
  return t ~= nil and t >= 0x60 and t <= 0x79
end

-- Tor link protocol (tor-spec 4): a TLS ClientHello is all a DPI sees;
-- nothing to add here. Git smart protocol pkt-line: 4 hex digits then
-- "git-upload-pack" / "git-receive-pack".
function M.git(d, p, e)
  return find(sub(d, p + 4, p + 24), "^git%-[ur][pe][lc]") ~= nil
end

-- Minecraft Java handshake: varint length, packet id 0, protocol version, host.
function M.minecraft(d, p, e)
  local len = byte(d, p)
  return len and len == e - p and byte(d, p + 1) == 0 and len < 255
end

-- Steam: A2S queries ff ff ff ff 'T'/'U'/'V'/'W' on the game port, Steam's own 'VS01'.
-- (byte tests say all of it; no Lua needed.)

-- ---------------------------------------------------------------------
-- Checks for the protocols added from nDPI's test corpus (signatures.txt's
-- last section), each from the protocol's specification.

-- Kafka (the Kafka protocol guide): a request's size == the rest, api_key
-- 0-100, api_version 0-20; a response's size == the rest.
function M.kafka(d, p, e, conn, dir)
  if e - p < 7 then return false end
  local size = unpack(">I4", d, p)
  if size ~= e - p - 3 then return false end
  if dir == "s2c" then return true end
  if e - p < 11 then return false end
  local key, ver = unpack(">i2i2", d, p + 4)
  return key >= 0 and key <= 100 and ver >= 0 and ver <= 20
end

-- OpenFlow header: type 0-35, a length (>= 8) the segment holds.
function M.openflow(d, p, e)
  if e - p < 7 then return false end
  local t, len = byte(d, p + 1), unpack(">I2", d, p + 2)
  return t <= 35 and len >= 8 and len <= e - p + 1
end

-- BFD control packet (RFC 5880 4.1): detect multiplier > 0, length 24..
-- (with authentication) that fits the datagram.
function M.bfd(d, p, e)
  local n = e - p + 1
  if n < 24 then return false end
  local len = byte(d, p + 3)
  return byte(d, p + 2) > 0 and len >= 24 and len <= n
end

-- LDP PDU (RFC 5036 3.1): version 1, a PDU length that fits (TCP may carry several).
function M.ldp(d, p, e)
  if e - p < 9 then return false end
  local len = unpack(">I2", d, p + 2)
  return len >= 6 and len <= e - p - 3
end

-- PTPv2 (IEEE 1588-2008 13.3): version 2, messageLength (>= 34) within the datagram.
function M.ptp(d, p, e)
  if e - p < 33 then return false end
  local len = unpack(">I2", d, p + 2)
  return byte(d, p + 1) & 0x0f == 2 and len >= 34 and len <= e - p + 1
end

-- PFCP (TS 29.244 7.2.2): GTPv2-C's header, a message length at bytes 2-3
-- counting what follows the first 4 (the version is byte 0's, in the signature).
M.pfcp = M.gtpc

-- SLPv2 (RFC 2608 8): a 3-byte length == the message.
function M.slp(d, p, e)
  return e - p >= 13 and unpack(">I3", d, p + 2) == e - p + 1
end

-- BFCP common header (RFC 8855 5.1): primitive 1-17, payload length in
-- 4-byte words == the rest after the 12-byte header.
function M.bfcp(d, p, e)
  local n = e - p + 1
  if n < 12 or n % 4 ~= 0 then return false end
  local prim = byte(d, p + 1)
  return prim >= 1 and prim <= 17 and unpack(">I2", d, p + 2) * 4 + 12 == n
end

-- OSCAR FLAP: a data length that fits after the 6-byte header.
function M.flap(d, p, e)
  return e - p >= 5 and unpack(">I2", d, p + 4) <= e - p - 5
end

-- KNXnet/IP header: total length == the datagram.
function M.knx(d, p, e)
  return e - p >= 5 and unpack(">I2", d, p + 4) == e - p + 1
end

-- AMS/TCP: a little-endian length == the rest, which holds the 32-byte AMS header.
function M.ams(d, p, e)
  if e - p < 37 then return false end
  return unpack("<I4", d, p + 2) == e - p - 5
end

-- IEEE C37.118.2: frame type 0-5 (bits 4-6) and version 1-2, FRAMESIZE == the segment.
function M.c37118(d, p, e)
  if e - p < 15 then return false end
  local b = byte(d, p + 1)
  local v = b & 0x0f
  return (b >> 4) & 7 <= 5 and v >= 1 and v <= 2 and unpack(">I2", d, p + 2) == e - p + 1
end

-- Skype's own UDP (the peer-to-peer Skype before Teams; Bonfiglio et al.,
-- "Revealing Skype Traffic: When Randomness Plays with You", SIGCOMM
-- 2007): a message starts with a random 2-byte ID, then a FUNC byte that
-- is 0x02 on a start of message (the byte test) and whose low nibble is
-- 0x0d on a 3-byte resend request. Weak by nature, so only a direction's
-- first packet, between unprivileged ports no signature claims (the port's
-- owner gets the flow), never a BER SEQUENCE (0x30: SNMP-like).
function M.skype_udp(d, p, e, conn, dir, ctx)
  local cp, sp = conn.client_port, conn.server_port
  if ctx.n ~= 1 or cp < 1024 or sp < 1024 then return false end
  local claimed = ctx.port_claimed
  if claimed and (claimed(sp) or claimed(cp)) then return false end
  if e == p + 2 then return byte(d, p + 2) & 0x0f == 0x0d end
  return byte(d, p) ~= 0x30
end

-- Classic STUN (RFC 3489, before RFC 5389's magic cookie): Binding or
-- Shared Secret request/response/error (0x0001, 0x0101, 0x0111, 0x0002,
-- 0x0102, 0x0112), a length == the rest after the 20-byte header, and
-- attributes (type, length) that add up to exactly that length.
local STUN3489 = { [0x0001] = true, [0x0101] = true, [0x0111] = true, [0x0002] = true, [0x0102] = true, [0x0112] = true }
function M.stun3489(d, p, e)
  if e - p < 19 then return false end
  local t, len = unpack(">I2I2", d, p)
  if not STUN3489[t] or len ~= e - p - 19 or len % 4 ~= 0 then return false end
  local q, stop = p + 20, p + 20 + len
  while q < stop do
    if q + 3 > e then return false end
    local at, al = unpack(">I2I2", d, q)
    if at == 0 or (at > 0x0030 and at < 0x8000) then return false end
    q = q + 4 + al
  end
  return q == stop
end

-- OpenVPN's handshake on any port (OpenVPN's wire format, ssl_pkt.h): the
-- client's P_CONTROL_HARD_RESET_CLIENT_V2/V3 (opcode 7/10 in byte 0's top
-- 5 bits) carries its 8-byte session id; the server's
-- P_CONTROL_HARD_RESET_SERVER_V2 (opcode 8) acknowledges that packet and
-- so repeats the id. Over TCP each packet has a 2-byte length first.
function M.openvpn_pair(d, p, e, conn, dir, ctx)
  local u = conn and conn.user
  if not u then return false end
  local q = p
  if ctx and ctx.kind == "tcp" then
    if e - p < 2 or unpack(">I2", d, p) ~= e - p - 1 then return false end
    q = p + 2
  end
  if e - q < 13 then return false end
  local op = byte(d, q) >> 3
  if op == 7 or op == 10 then
    if not u.ovpn_sid then u.ovpn_sid, u.ovpn_dir = sub(d, q + 1, q + 8), dir end
    return false
  end
  local sid = u.ovpn_sid
  return op == 8 and sid ~= nil and u.ovpn_dir ~= dir and find(d, sid, q + 9, true) ~= nil
end

-- DLMS/COSEM's TCP/UDP wrapper (IEC 62056-47): version 1, source and
-- destination wPorts (one byte's worth: SAPs), a length == the rest after
-- the 8-byte header.
function M.dlms(d, p, e)
  if e - p < 8 then return false end
  local src, dst, len = unpack(">I2I2I2", d, p + 2)
  return src <= 0xff and dst <= 0xff and len == e - p - 7
end

-- Armagetron Advanced: a datagram is messages of 16-bit big-endian words
-- (descriptor, message id, data length in words, the data) and then the
-- sender's id; the lengths must add up to the datagram exactly.
function M.armagetron(d, p, e)
  local n = e - p + 1
  if n < 8 or n % 2 ~= 0 then return false end
  local q, stop, k = p, e - 1, 0
  while q + 5 < stop and k < 64 do
    q = q + 6 + 2 * unpack(">I2", d, q + 4)
    k = k + 1
  end
  return k > 0 and q == stop
end

-- Apache Thrift (thrift's protocol specs). Binary protocol, strict: 0x80
-- 0x01, a zero, the message type 1-4 (call, reply, exception, oneway), a
-- 4-byte method name length, the name; the framed transport puts a
-- 4-byte frame length == the rest before it. Compact protocol: 0x82,
-- type << 5 | version 1, a varint sequence id, a varint name length, the
-- name. The name must be an identifier.
local function ident(d, q, n, e)
  if n < 1 or n > 128 or q + n - 1 > e then return false end
  return find(sub(d, q, q + n - 1), "^[%w_%.:]+$") ~= nil
end
function M.thrift(d, p, e)
  local q = p
  if byte(d, p) == 0 then
    if e - p < 11 or unpack(">I4", d, p) ~= e - p - 3 then return false end
    q = p + 4
  end
  if e - q < 8 then return false end
  return ident(d, q + 8, unpack(">I4", d, q + 4), e)
end
function M.thrift_compact(d, p, e)
  local t = byte(d, p + 1)
  if not t or t & 0x1f ~= 1 or t >> 5 < 1 or t >> 5 > 4 then return false end
  local q = p + 2
  for _ = 1, 5 do -- the sequence id, a varint
    local b = byte(d, q)
    if not b then return false end
    q = q + 1
    if b < 0x80 then break end
  end
  local n = byte(d, q)
  if not n or n >= 0x80 then return false end
  return ident(d, q + 1, n, e)
end

-- DCE/RPC connection-oriented PDU (C706 12.6.3): flags, a data
-- representation whose integer format is little (0x10) or big (0x00)
-- endian, a fragment length of at least the 16-byte header: the segment's
-- length, or shorter with the next PDU after it, or longer when the
-- segment is full-sized.
function M.dcerpc(d, p, e)
  if e - p < 15 then return false end
  local rep = byte(d, p + 4)
  if rep ~= 0x10 and rep ~= 0x00 then return false end
  local len = rep == 0x10 and unpack("<I2", d, p + 8) or unpack(">I2", d, p + 8)
  local n = e - p + 1
  if len < 16 then return false end
  if len == n then return true end
  if len < n then return byte(d, p + len) == 5 end -- another PDU follows
  return n >= 512 -- a PDU longer than a full-sized segment
end
-- Connectionless (UDP) PDU (C706 12.5.3): an 80-byte header whose body
-- length (at 74) == the rest.
function M.dcerpc_cl(d, p, e)
  if e - p < 79 then return false end
  local rep = byte(d, p + 4)
  if rep ~= 0x10 and rep ~= 0x00 then return false end
  local len = rep == 0x10 and unpack("<I2", d, p + 74) or unpack(">I2", d, p + 74)
  return len == e - p - 79
end

-- Avast SecureDNS: its queries to UDP 443 carry the name "securedns" in
-- clear, each letter's case randomised (as DNS 0x20 does): nine letters
-- in any case, never by chance in an encrypted datagram.
function M.avast_securedns(d, p, e)
  return find(lower(sub(d, p, e < p + 127 and e or p + 127)), "securedns", 1, true) ~= nil
end

-- Agora's SD-RTN: the client's datagrams name the edge server they go to
-- ("a-b-c-d.edge.agora.io") in clear.
function M.agora(d, p, e)
  return find(sub(d, p, e < p + 256 and e or p + 256), ".edge.agora.io", 1, true) ~= nil
end

return M
