-- plugin.app_id: names the application of each TCP session and UDP flow
-- from payload signatures in TrafficAnalyzer / Open App Filter style
-- (lua/apps/signatures.txt documents the format and its extensions),
-- TrafficAnalyzer's app.py for riff, with nDPI's protocol names.
--
--   local app_id = require "plugin.app_id"
--   app_id.signatures = "my-apps.txt"      -- optional: a file beside your script
--   return { require "plugin.sessions", app_id }
--   -- riff -q --lua this.lua -r f.pcap -o json:-
--
-- How a flow is named (the signature file's header says the same):
-- * The first `max_packets` (4) payload-carrying packets of each direction
--   are tried, in arrival order (either side may speak first); then the
--   flow is given up (conn.user.app = false). A flow is named once.
-- * The port guess, as nDPI 4.2 guesses by port (ndpi_guess_protocol_id):
--   the entry of the flow's lower port (a port rule, else a when=empty
--   guess), else its higher port's, whichever side each is on.
-- * Per packet, byte features first: the guessed application's own (nDPI
--   runs the guessed protocol's dissector before the others), then those
--   testing payload byte 0 looked up by that byte's value, those that do
--   not by either of the flow's ports (the lower first), then the few with
--   neither; file order within each. The first feature whose every test
--   passes names the flow. A feature's dport is either port of the flow.
-- * When the name is a carrier (TLS, QUIC, HTTP, DTLS...) and the packet
--   carries a server name (TLS SNI, HTTP Host), the name is looked up in
--   the host lists (host-only features; a host matches a listed domain and
--   its subdomains): a hit is the app (YouTube), the carrier its master.
-- * Refinements (master=NAME features, ports only): a flow NAME matched by
--   bytes on one of their ports is theirs (TLS on 993 is IMAPS, master TLS).
-- * Before the bytes: flows announced by an earlier flow (a TFTP request's
--   data, an FTP PASV/PORT) are named by that expectation (a data channel
--   carries a file, which may look like anything).
-- * No byte feature: the port guess names the flow at once when it is a
--   port rule (features with ports and nothing else): junk from port 53 to
--   port 500 is DNS, as nDPI guesses; a when=empty guess does not name a
--   flow with payload.
-- * A flow that closes with no payload packet (handshake only, one side
--   unseen) is named by the port guess then (rule or when=empty guess),
--   direction "none", packet 0 (name_empty = false turns it off).
-- * QUIC: the client Initial is opened (riff.quic_initial) and the
--   ClientHello's server name looked up in the host lists as TLS's is.
-- A match emits one record and sets conn.user.app (plugin.sessions puts it
-- in the session record), conn.user.master:
--   app: client_mac, client_ip, client_port, server_ip, server_port,
--        proto ("tcp"|"udp"), app, master (the carrier, when app came from
--        the host lists), server_name, direction (of the packet that
--        matched), packet (its number in that direction), by ("bytes",
--        "host", "expect", "port"), time
-- server_name is the TLS SNI or HTTP Host of the packets tried when one has
-- it, else the server's reverse DNS name (flow.dnscache); a signature's host
-- field is tested against it.
-- Sessions come from flow.shared, so with plugin.sessions in the same
-- pipeline each packet is tracked once.
-- Fields: signatures (file for riff.read, default "apps/signatures.txt":
-- beside the script, else riff's lua/), record ("app"), app_timeout (500 s:
-- how long a client/app pair counts in app_id.active(now), the "APP sess"
-- of TrafficAnalyzer's status line), max_apps (LRU bound on those pairs),
-- max_packets (4 per direction), expect_timeout (60 s), max_expect (4096),
-- watch_packets (200: packets of a named flow a "watch" check still sees),
-- expect_ports ({21, 69}: with --workers N, the ports of the flows that
-- announce others, FTP control and TFTP, which every worker follows).
-- name_empty (true: port rules name flows without payload when they close).
-- Counters: matched, given_up (flows tried max_packets each way in vain).
-- app_id.parse(text, name) -> list of features (errors name file:line);
-- app_id.aliases: riff's earlier names -> nDPI's (SMB -> SMBv23 ...), so a
-- signature file written for them still loads; app_id.names(): every name.

local current = require "proto.current"
local shared = require "flow.shared"
local dnscache = require "flow.dnscache"
local lru = require "flow.lru"
local checks = require "apps.matchers"
local tcp, udp = require "flow.tcp", require "flow.udp"

local byte, find, match, sub, unpack, lower, tointeger, type = string.byte, string.find, string.match, string.sub,
  string.unpack, string.lower, math.tointeger, type
local get = current.get

local app_id = {
  name = "app_id", signatures = "apps/signatures.txt", record = "app",
  app_timeout = 500, max_apps = 10000, matched = 0, given_up = 0,
  max_packets = 4, expect_timeout = 60, max_expect = 4096, watch_packets = 200,
  expect_ports = { 21, 69 },
}

-- riff's names before nDPI's spelling was adopted.
app_id.aliases = {
  SMB = "SMBv23", FTP = "FTP_CONTROL", mDNS = "MDNS", DHCPv6 = "DHCPV6", IKE = "IPSec",
  RADIUS = "Radius", HTTP2 = "HTTP", NetBIOS = "NetBIOS", Starcraft = "Blizzard",
  LotusNotes = "HCL_Notes", s7comm = "S7Comm",
}

-- Carriers whose server name is read and looked up in the host lists.
local CARRIER = { TLS = true, HTTP = true, QUIC = true, DTLS = true, HTTP_Proxy = true, HTTP_Connect = true }

local close_guess -- below push's helpers; setup's close listener calls close_guess

local function trim(s) return (match(s, "^%s*(.-)%s*$")) end

local function port_range(s, where, what)
  local a, b = match(s, "^(%d+)%s*%-%s*(%d+)$")
  if a then
    a, b = tointeger(tonumber(a)), tointeger(tonumber(b))
    if a > b or b > 65535 or b - a > 4096 then error(where .. "bad " .. what .. " range '" .. s .. "' (at most 4096 ports)", 0) end
    return a, b
  end
  local n = tointeger(tonumber(s))
  if not n or n < 0 or n > 65535 then error(where .. "bad " .. what .. " '" .. s .. "'", 0) end
  return n, n
end

-- Signature text -> list of features { name, proto, sport, sport2, dport,
-- dport2, hosts, offs, los, his, opts... }.
function app_id.parse(text, fname)
  fname = fname or "signatures"
  local list, ln = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    line = trim(line:gsub("\r$", ""))
    if line ~= "" and not find(line, "^#") then
      local where = fname .. ":" .. ln .. ": "
      local name, body = match(line, "^%d*%s*([^:%[]-)%s*:%s*%[(.*)%]$")
      if not name or name == "" then error(where .. "expected 'Name: [proto; sport; dport; host; offset:byte|...]'", 0) end
      name = app_id.aliases[name] or name
      for feature in (body .. ","):gmatch("([^,]*),") do
        if trim(feature) ~= "" then
          local f, k = {}, 0
          for field in (feature .. ";"):gmatch("([^;]*);") do k = k + 1 f[k] = trim(field) end
          if k > 6 then error(where .. "a feature has " .. k .. " fields (proto; sport; dport; host; bytes; options)", 0) end
          local proto, sport, dport, host, dict, opts = f[1] or "", f[2] or "", f[3] or "", f[4] or "", f[5] or "", f[6] or ""
          proto = proto:lower()
          if proto ~= "" and proto ~= "tcp" and proto ~= "udp" then error(where .. "proto must be tcp, udp or empty, not '" .. proto .. "'", 0) end
          local sig = { name = name, proto = proto ~= "" and proto or nil, offs = {}, los = {}, his = {}, line = ln }
          if sport ~= "" then sig.sport, sig.sport2 = port_range(sport, where, "sport") end
          if dport ~= "" then sig.dport, sig.dport2 = port_range(dport, where, "dport") end
          if host ~= "" then
            local hs = {}
            for h in host:gmatch("%S+") do hs[#hs + 1] = lower(h) end
            sig.hosts = hs
          end
          local n = 0
          for item in (dict .. "|"):gmatch("([^|]*)|") do
            item = trim(item)
            if item ~= "" then
              local o, s = match(item, '^(%-?%d+)%s*:%s*"([^"]*)"$')
              if o then
                if s == "" then error(where .. "empty string test '" .. item .. "'", 0) end
                o = tointeger(tonumber(o))
                for i = 1, #s do
                  n = n + 1
                  local b = byte(s, i)
                  sig.offs[n], sig.los[n], sig.his[n] = o >= 0 and o + i - 1 or o - #s + i, b, b
                end
              else
                local v1, v2
                o, v1, v2 = match(item, "^(%-?%d+)%s*:%s*(%x%x?)%-(%x%x?)$")
                if not o then
                  o, v1 = match(item, "^(%-?%d+)%s*:%s*(%x%x?)$")
                  v2 = v1
                end
                if not o then error(where .. "bad byte test '" .. item .. "' (offset:hexbyte, offset:lo-hi or offset:\"text\", e.g. 00:16 or -1:03)", 0) end
                n = n + 1
                sig.offs[n], sig.los[n], sig.his[n] = tointeger(tonumber(o)), tonumber(v1, 16), tonumber(v2, 16)
                if sig.los[n] > sig.his[n] then error(where .. "empty byte range '" .. item .. "'", 0) end
              end
            end
          end
          for opt in opts:gmatch("%S+") do
            local key, val = match(opt, "^(%w+)=(%S+)$")
            if key == "dir" and (val == "c2s" or val == "s2c") then sig.dir = val
            elseif key == "pkt" and tointeger(tonumber(val)) then sig.pkt = tointeger(tonumber(val))
            elseif key == "len" then sig.len, sig.len2 = port_range(val, where, "len")
            elseif key == "master" then sig.master = app_id.aliases[val] or val
            elseif key == "when" and val == "empty" then sig.when_empty = true
            elseif key == "lua" then
              sig.check = checks[val]
              if type(sig.check) ~= "function" then error(where .. "no Lua check '" .. val .. "' in apps.matchers", 0) end
            else error(where .. "bad option '" .. opt .. "' (dir=c2s|s2c, pkt=N, len=N or a-b, lua=NAME, master=NAME, when=empty)", 0) end
          end
          if (sig.master or sig.when_empty) and (n > 0 or sig.hosts or sig.check or not (sig.sport or sig.dport)) then
            error(where .. "a " .. (sig.master and "master=" .. sig.master or "when=empty") .. " feature has ports and nothing else", 0)
          end
          if n == 0 and not sig.sport and not sig.dport and not sig.hosts and not sig.check then
            error(where .. "a feature of " .. name .. " tests nothing (it would match every session)", 0)
          end
          sig.nbytes = n
          list[#list + 1] = sig
        end
      end
    end
  end
  return list
end

-- The server name a payload carries: TLS ClientHello SNI (apps.matchers).
local sni = checks.sni
app_id.sni = sni

local function server_name(d, p, e)
  local b = byte(d, p)
  if b == 0x16 then return sni(d, p, e) end
  if b and b >= 65 and b <= 90 then
    local lim = e < p + 4096 and e or p + 4096
    local h = match(sub(d, p, lim), "\n[Hh][Oo][Ss][Tt]:[ \t]*([^\r\n]*)")
    if h then return (match(h, "^(.-)[ \t]*$")) end
  end
  return nil
end
app_id.server_name = server_name

-- Host lists: a name and each of its parent domains are looked up.
local function host_app(hosts, h)
  if not h or h == "" then return nil end
  h = lower(h)
  h = match(h, "^%[?([^%]]-)%]?:%d+$") or h
  if sub(h, -1) == "." then h = sub(h, 1, -2) end
  local q = 1
  for _ = 1, 16 do
    local a = hosts[q == 1 and h or sub(h, q)]
    if a then return a end
    local dot = find(h, ".", q, true)
    if not dot then return nil end
    q = dot + 1
  end
  return nil
end

local function host_ok(hs, h)
  if not h then return false end
  h = lower(h)
  h = match(h, "^%[?([^%]]-)%]?:%d+$") or h
  for i = 1, #hs do
    local x = hs[i]
    if h == x or (#h > #x and sub(h, -#x - 1) == "." .. x) then return true end
  end
  return false
end

-- One feature against one packet (ports, direction, packet number, length,
-- bytes, then its Lua check). Returns true, or the check's "watch".
-- A feature's dport is either port of the flow, as nDPI's dissectors look
-- for their port on either side: riff's guess of the server can be wrong
-- (a capture that begins with the reply), and peers speak from their
-- service port (NTP from 123 to 123, BGP from 179).
local function test(s, conn, host, d, p, e, dir, ctx)
  local sp, cp = conn.server_port, conn.client_port
  if s.dport and (sp < s.dport or sp > s.dport2) and (cp < s.dport or cp > s.dport2) then return false end
  if s.sport and (cp < s.sport or cp > s.sport2) then return false end
  if s.dir and s.dir ~= dir then return false end
  if s.pkt and s.pkt ~= ctx.n then return false end
  if s.len then local n = e - p + 1 if n < s.len or n > s.len2 then return false end end
  local offs, los, his = s.offs, s.los, s.his
  for j = 1, s.nbytes do
    local o = offs[j]
    local pos = o >= 0 and p + o or e + o + 1
    if pos < p or pos > e then return false end
    local b = byte(d, pos)
    if b < los[j] or b > his[j] then return false end
  end
  if s.hosts and not host_ok(s.hosts, host(ctx)) then return false end
  local c = s.check
  if c then return c(d, p, e, conn, dir, ctx) end
  return true
end

-- `skip`: the guessed application, whose features were tried first.
local function first_match(list, conn, host, d, p, e, dir, ctx, skip)
  if not list then return nil end
  for i = 1, #list do
    local s = list[i]
    if s.name ~= skip then
      local r = test(s, conn, host, d, p, e, dir, ctx)
      if r then return s, r end
    end
  end
  return nil
end

local function add(t, k, s)
  local l = t[k]
  if not l then l = {} t[k] = l end
  l[#l + 1] = s
end

-- Features into dispatch tables, per transport: by0[b] (tests byte 0 with
-- b in range), byport[port] (no byte-0 test, a port or range), any
-- (neither), byname[app] (every byte feature of app, for the port guess),
-- ports[port] (port rules), empty[port] (when=empty guesses), refine,
-- hosts[domain] (host lists).
local function index(all)
  local names, by = {}, {}
  for _, kind in ipairs { "tcp", "udp" } do
    local t = { by0 = {}, byport = {}, any = {}, byname = {}, ports = {}, refine = {}, empty = {} }
    for _, s in ipairs(all) do
      if not s.proto or s.proto == kind then
        local pure_port = s.nbytes == 0 and not s.hosts and not s.check and not s.dir and not s.pkt and not s.len
        local host_only = s.nbytes == 0 and s.hosts and not s.sport and not s.dport and not s.check and not s.len
        if s.when_empty then
          local a, b = s.dport or s.sport, s.dport2 or s.sport2
          for q = a, b do if not t.empty[q] then t.empty[q] = s.name end end
        elseif s.master then
          local r = t.refine[s.master]
          if not r then r = {} t.refine[s.master] = r end
          local a, b = s.dport or s.sport, s.dport2 or s.sport2
          for q = a, b do if not r[q] then r[q] = s.name end end
        elseif host_only then
          -- host lists: kept per VM in app_id._hosts
        elseif pure_port then
          local a, b = s.dport or s.sport, s.dport2 or s.sport2
          for q = a, b do if not t.ports[q] then t.ports[q] = s.name end end
        else
          add(t.byname, s.name, s)
          local k0
          for j = 1, s.nbytes do if s.offs[j] == 0 then k0 = j break end end
          if k0 then
            for v = s.los[k0], s.his[k0] do add(t.by0, v, s) end
          elseif s.dport and s.dport2 - s.dport < 64 then
            for q = s.dport, s.dport2 do add(t.byport, q, s) end
          else
            t.any[#t.any + 1] = s
          end
        end
      end
    end
    by[kind] = t
  end
  local hosts = {}
  for _, s in ipairs(all) do
    names[s.name] = true
    if s.hosts and s.nbytes == 0 and not s.sport and not s.dport and not s.check then
      for _, h in ipairs(s.hosts) do if not hosts[h] then hosts[h] = s.name end end
    end
  end
  return by, hosts, names
end

function app_id:setup()
  local text, err = riff.read(self.signatures)
  if not text then error("app_id: cannot read the signature file " .. tostring(self.signatures) .. ": " .. tostring(err), 0) end
  local all = app_id.parse(text, self.signatures)
  self._sigs, self._hosts, self._names = index(all)
  app_id._all, app_id._names = all, self._names
  self.count = #all
  local n = 0
  for _ in pairs(self._names) do n = n + 1 end
  self.napps = n
  self._apps = lru.new(self.max_apps)
  self._expect = lru.new(self.max_expect)
  if self.name_empty ~= false then shared.on("close", function(conn, kind) close_guess(self, conn, kind) end) end
end

function app_id.names()
  local out = {}
  for k in pairs(app_id._names or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- at: the record's time when it is not the current packet's (a flow named
-- as it closes: its last packet's, the same whichever worker closed it and
-- whenever its idleness was found).
local function emit(self, conn, kind, name, master, host, dir, n, by, at)
  local u = conn.user
  u.app, u.master = name, master
  self.matched = self.matched + 1
  local ts = at or current.ts()
  self._apps:set((conn.client_mac or conn.client_ip) .. "|" .. name, ts)
  riff.emit(self.record, {
    client_mac = conn.client_mac, client_ip = conn.client_ip, client_port = conn.client_port,
    server_ip = conn.server_ip, server_port = conn.server_port, proto = kind,
    app = name, master = master, server_name = host or nil, direction = dir, packet = n, by = by, time = ts,
  })
end

-- The context handed to checks (one per VM, refilled per call).
local ctx = { kind = nil, n = 0, conn = nil, d = nil, p = 0, e = 0, expect = nil }

-- ctx.port_claimed(port): some signature of the flow's transport names
-- that port (a port rule, or a byte feature dispatched by it). Heuristics
-- of last resort (Skype's UDP) keep off such ports: the protocol that owns
-- the port gets its flows.
local function claimed_in(t, port)
  return t ~= nil and (t.ports[port] ~= nil or t.byport[port] ~= nil or t.empty[port] ~= nil)
end
local cur_t
ctx.port_claimed = function(port) return claimed_in(cur_t, port) end

-- Lazily computed host for features with a host field: the packet's own
-- server name, else the flow's, else reverse DNS.
local function ctx_host(c)
  local h = c._host
  if h == nil then
    local u = c.conn.user
    h = server_name(c.d, c.p, c.e) or u.host
    if not h then h = dnscache.lookup(c.conn.server_ip) or false end
    c._host = h
  end
  return h or nil
end

-- The port guess, nDPI 4.2's (ndpi_guess_protocol_id looks the lower of
-- the two ports up in its default ports, then the higher), whichever side
-- riff took for the server: a capture that begins with the reply, or a
-- service speaking from its own port (FTP data from 20, DNS from 53), is
-- guessed as nDPI guesses it. The lower port's entry wins even when it is
-- only a when=empty guess (SSH on 22), so that the higher port does not
-- name what nDPI would call the lower one's. Returns the app and whether
-- it is a port rule (names a flow with payload) rather than a guess.
local function port_guess(t, lo, hi)
  if lo > hi then lo, hi = hi, lo end
  local ports, empty = t.ports, t.empty
  local a = ports[lo]
  if a then return a, true end
  a = empty[lo]
  if a then return a, false end
  a = ports[hi]
  if a then return a, true end
  return empty[hi], false
end

-- A flow that closes without a payload packet (a handshake only, a capture
-- cut short, one side unseen) is named by the port guess, as nDPI names it;
-- direction "none", packet 0 in its record.
function close_guess(self, conn, kind)
  local u = conn.user
  -- a flow with payload had its chance: the bytes, then the port rules
  if u.app ~= nil or u.n_c2s or u.n_s2c or not self._sigs then return end
  local name = port_guess(self._sigs[kind], conn.client_port, conn.server_port)
  if name then emit(self, conn, kind, name, nil, nil, "none", 0, "port", conn.last) end
end

-- `heard`: a packet of another worker's flow (overhear, below): the flow
-- is followed to announce later flows, and nothing is emitted or counted.
local function classify(self, pkt, conn, kind, heard)
  local u = conn.user
  local p, e = pkt.payload_offset, pkt.payload_end
  if u.app ~= nil then
    local w = u.watch
    if w and e >= p then
      local left = u.watch_left - 1
      u.watch_left = left
      if left <= 0 then u.watch = nil end
      ctx.kind, ctx.conn, ctx.d, ctx.p, ctx.e, ctx._host = kind, conn, pkt.data, p, e, nil
      w(pkt.data, p, e, conn, conn.dir, ctx)
    end
    return
  end
  if e < p or conn.state == "closed" then return end
  local dir = conn.dir
  local n
  if dir == "c2s" then n = (u.n_c2s or 0) + 1 u.n_c2s = n else n = (u.n_s2c or 0) + 1 u.n_s2c = n end
  local maxp = self.max_packets
  if n > maxp then
    if (u.n_c2s or 0) > maxp and (u.n_s2c or 0) > maxp then
      u.app = false
      if not heard then self.given_up = self.given_up + 1 end
    end
    return
  end
  -- A flow another flow announced (a TFTP request's data, an FTP PASV or
  -- PORT) is what its announcer said, before any byte feature: a data
  -- channel carries a file, whose first bytes may look like anything.
  local ex = self._expect
  if ex.size > 0 then
    local now = current.ts()
    for _, k in ipairs { conn.server_ip .. "|" .. conn.server_port .. "|" .. kind, conn.client_ip .. "|" .. conn.client_port .. "|" .. kind } do
      local x = ex:peek(k)
      if x then
        if now - x[2] <= self.expect_timeout then
          ex:remove(k)
          if heard then u.app = x[1] return end
          return emit(self, conn, kind, x[1], nil, nil, dir, n, "expect")
        end
        ex:remove(k)
      end
    end
  end
  local d = pkt.data
  local t = self._sigs[kind]
  ctx.kind, ctx.n, ctx.conn, ctx.d, ctx.p, ctx.e, ctx._host, ctx.sni = kind, n, conn, d, p, e, nil, nil
  cur_t = t
  local lo, hi = conn.client_port, conn.server_port
  if lo > hi then lo, hi = hi, lo end
  -- nDPI's order: the guessed protocol's dissector, then all the others
  local g, g_rule = port_guess(t, lo, hi)
  local s, r
  if g then s, r = first_match(t.byname[g], conn, ctx_host, d, p, e, dir, ctx) end
  if not s then s, r = first_match(t.by0[byte(d, p)], conn, ctx_host, d, p, e, dir, ctx, g) end
  if not s then s, r = first_match(t.byport[lo], conn, ctx_host, d, p, e, dir, ctx, g) end
  if not s and hi ~= lo then s, r = first_match(t.byport[hi], conn, ctx_host, d, p, e, dir, ctx, g) end
  if not s then s, r = first_match(t.any, conn, ctx_host, d, p, e, dir, ctx, g) end
  if s then
    local name, master, host, by = s.name, nil, nil, "bytes"
    if CARRIER[name] then
      -- ctx.sni: a name a check read where server_name cannot (QUIC's Initial).
      host = server_name(d, p, e) or ctx.sni
      if host and host ~= "" then
        u.host = host
        local a = host_app(self._hosts, host)
        if a and a ~= name then name, master, by = a, s.name, "host" end
      elseif ctx._host then
        host = ctx._host
      end
    elseif ctx._host then
      host = ctx._host
    end
    if by == "bytes" then
      local rf = t.refine[name]
      local a = rf and (rf[lo] or rf[hi])
      if a then name, master, by = a, s.name, "port" end
    end
    if r == "watch" then u.watch, u.watch_left = s.check, self.watch_packets end
    if heard then u.app, u.master = name, master return end
    return emit(self, conn, kind, name, master, host, dir, n, by)
  end
  -- No byte feature: the port guess names the flow when it is a port rule.
  if g and g_rule then
    if heard then u.app = g return end
    return emit(self, conn, kind, g, nil, nil, dir, n, "port")
  end
end

function app_id:push(stream)
  local pkt = get(stream)
  if not pkt then return end
  local conn, kind = shared.packet(pkt)
  if conn then return classify(self, pkt, conn, kind, false) end
end

-- With --workers N: the packets on expect_ports (FTP control, TFTP
-- requests) of flows other workers own reach every worker here, followed
-- by trackers of their own (not flow.shared's: no session records), so an
-- expectation announced in one worker names the data flow in another, as
-- with one worker.
function app_id:overhear_ports() return self.expect_ports end

function app_id:overhear(stream)
  local pkt = get(stream)
  if not pkt or not pkt.l4_offset then return end
  local ports = self._expect_ports
  if not ports then
    ports = {}
    for _, x in ipairs(self.expect_ports or {}) do ports[x] = true end
    self._expect_ports = ports
  end
  local a1, a2, b1, b2 = byte(pkt.data, pkt.l4_offset, pkt.l4_offset + 3)
  if not (ports[(a1 or 0) << 8 | (a2 or 0)] or ports[(b1 or 0) << 8 | (b2 or 0)]) then return end
  local p, conn, kind = pkt._l4, nil, nil
  if p == 6 then
    self._heard_tcp = self._heard_tcp or tcp.new{ idle_timeout = 300, max_sessions = 10000 }
    conn, kind = self._heard_tcp:packet(pkt, current.ts()), "tcp"
  elseif p == 17 then
    self._heard_udp = self._heard_udp or udp.new{ idle_timeout = 120, max_sessions = 10000 }
    conn, kind = self._heard_udp:packet(pkt, current.ts()), "udp"
  end
  if conn then return classify(self, pkt, conn, kind, true) end
end

-- Checks announce later flows through ctx.expect.
ctx.expect = function(ip, port, app, kind)
  local self = app_id
  if not self._expect or not ip or not port then return end
  self._expect:set(ip .. "|" .. port .. "|" .. (kind or "tcp"), { app, current.ts() })
end

-- At the end, one line on stderr: flows named, flows given up, and what
-- riff could not decode down to a flow (proto.current counts it); with
-- --workers N, every worker's figures added (collect/report).
-- Flows still open close here, so close_guess names them before collect counts.
function app_id:deinit() shared.flush() end

function app_id:collect()
  return { matched = self.matched, given_up = self.given_up, undecoded = current.undecoded() }
end

function app_id:report(t)
  local line = "app_id: " .. t.matched .. " flows named, " .. t.given_up .. " given up after "
    .. self.max_packets .. " payload packets each way"
  local u = current.undecoded_text(t.undecoded)
  if u then line = line .. "; " .. u end
  io.stderr:write(line .. "\n")
end

-- Client/app pairs seen within app_timeout of `now` (TrafficAnalyzer's app sessions).
function app_id:active(now)
  local apps = self._apps
  if not apps then return 0 end
  if now then
    while true do
      local k, ts = apps:oldest()
      if not k or now - ts <= self.app_timeout then break end
      apps:remove(k)
    end
  end
  return apps.size
end

-- Everything a crafted payload list would match (for tests: no two apps
-- may claim the same flow): kind, client/server ports, payloads as
-- { dir, bytes } in order -> sorted list of distinct names that any feature
-- (byte or port) would give some packet.
function app_id.claims(kind, cport, sport, payloads)
  local conn = { client_port = cport, server_port = sport, client_ip = "192.0.2.1", server_ip = "192.0.2.2", user = {} }
  local all = {}
  local list = app_id._all or {}
  local counts = { c2s = 0, s2c = 0 }
  for _, pl in ipairs(payloads) do
    local dir, d = pl[1], pl[2]
    counts[dir] = counts[dir] + 1
    local t = app_id._sigs and app_id._sigs[kind]
    local c = { kind = kind, n = counts[dir], conn = conn, d = d, p = 1, e = #d, expect = function() end,
      port_claimed = function(port) return claimed_in(t, port) end }
    for _, s in ipairs(list) do
      if (not s.proto or s.proto == kind) and not s.master and not s.when_empty and not (s.nbytes == 0 and s.hosts and not s.sport and not s.dport and not s.check) then
        local pure = s.nbytes == 0 and not s.hosts and not s.check and not s.dir and not s.pkt and not s.len
        local ok
        if pure then
          local a, b = s.dport or s.sport, s.dport2 or s.sport2
          ok = sport >= a and sport <= b
        else
          ok = test(s, conn, ctx_host, d, 1, #d, dir, c)
        end
        if ok then all[s.name] = pure and "port" or "bytes" end
      end
    end
  end
  return all
end

return app_id
