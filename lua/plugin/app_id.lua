-- plugin.app_id: names the application of each TCP session and UDP flow
-- from payload signatures in TrafficAnalyzer / Open App Filter style
-- (lua/apps/signatures.txt documents the format), TrafficAnalyzer's app.py
-- for riff.
--
--   local app_id = require "plugin.app_id"
--   app_id.signatures = "my-apps.txt"      -- optional: a file beside your script
--   return { require "plugin.sessions", app_id }
--   -- riff -q --lua this.lua -r f.pcap -o json:-
--
-- Each session is matched once: on its first payload-carrying packet in
-- each direction (both are tried, the first to arrive first, since some
-- servers speak first), signature lines in file order, first match wins.
-- A match emits one record and sets conn.user.app (plugin.sessions puts it
-- in the session record):
--   app: client_mac, client_ip, client_port, server_ip, server_port,
--        proto ("tcp"|"udp"), app, server_name, direction (of the packet
--        that matched), time
-- server_name is the TLS SNI or HTTP Host of that packet when it has one, else the
-- server's reverse DNS name (flow.dnscache); it is also stored as
-- conn.user.host and is what a signature's host field is tested against.
-- Sessions come from flow.shared, so with plugin.sessions in the same
-- pipeline each packet is tracked once.
-- Fields: signatures (file for riff.read, default "apps/signatures.txt":
-- beside the script, else riff's lua/), record ("app"), app_timeout (500 s:
-- how long a client/app pair counts in app_id.active(now), the "APP sess"
-- of TrafficAnalyzer's status line), max_apps (LRU bound on those pairs).
-- app_id.parse(text, name) -> list of signatures (errors name file:line).

local current = require "proto.current"
local shared = require "flow.shared"
local dnscache = require "flow.dnscache"
local lru = require "flow.lru"

local byte, find, match, sub, unpack, tointeger, type = string.byte, string.find, string.match, string.sub,
  string.unpack, math.tointeger, type
local get = current.get

local app_id = {
  name = "app_id", signatures = "apps/signatures.txt", record = "app",
  app_timeout = 500, max_apps = 10000, matched = 0,
}

local function trim(s) return (match(s, "^%s*(.-)%s*$")) end

-- Signature text -> { { name, proto, sport, dport, host, offs = {}, vals = {} }, ... }
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
      for feature in (body .. ","):gmatch("([^,]*),") do
        if trim(feature) ~= "" then
          local f, k = {}, 0
          for field in (feature .. ";"):gmatch("([^;]*);") do k = k + 1 f[k] = trim(field) end
          if k > 5 then error(where .. "a feature has " .. k .. " fields (proto; sport; dport; host; bytes)", 0) end
          local proto, sport, dport, host, dict = f[1] or "", f[2] or "", f[3] or "", f[4] or "", f[5] or ""
          proto = proto:lower()
          if proto ~= "" and proto ~= "tcp" and proto ~= "udp" then error(where .. "proto must be tcp, udp or empty, not '" .. proto .. "'", 0) end
          local sig = { name = name, proto = proto ~= "" and proto or nil, offs = {}, vals = {} }
          if sport ~= "" then sig.sport = tointeger(tonumber(sport)) or error(where .. "bad sport '" .. sport .. "'", 0) end
          if dport ~= "" then sig.dport = tointeger(tonumber(dport)) or error(where .. "bad dport '" .. dport .. "'", 0) end
          if host ~= "" then sig.host = host end
          local n = 0
          for item in (dict .. "|"):gmatch("([^|]*)|") do
            item = trim(item)
            if item ~= "" then
              local o, v = match(item, "^(%-?%d+)%s*:%s*(%x%x?)$")
              if not o then error(where .. "bad byte test '" .. item .. "' (offset:hexbyte, e.g. 00:16 or -1:03)", 0) end
              n = n + 1
              sig.offs[n], sig.vals[n] = tointeger(tonumber(o)), tonumber(v, 16)
            end
          end
          if n == 0 and not sig.sport and not sig.dport and not sig.host then
            error(where .. "a feature of " .. name .. " tests nothing (it would match every session)", 0)
          end
          list[#list + 1] = sig
        end
      end
    end
  end
  return list
end

-- The server name a first payload carries: TLS ClientHello SNI or HTTP Host.
local function sni(d, p, e)
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

local function try(list, conn, host, d, p, e)
  local cport, sport = conn.client_port, conn.server_port
  for i = 1, #list do
    local s = list[i]
    local ok = (not s.sport or s.sport == cport) and (not s.dport or s.dport == sport)
      and (not s.host or (host and find(host, s.host, 1, true) ~= nil))
    if ok then
      local offs, vals = s.offs, s.vals
      for j = 1, #offs do
        local o = offs[j]
        local pos = o >= 0 and p + o or e + o + 1
        if pos < p or pos > e or byte(d, pos) ~= vals[j] then ok = false break end
      end
      if ok then return s.name end
    end
  end
  return nil
end

function app_id:setup()
  local text, err = riff.read(self.signatures)
  if not text then error("app_id: cannot read the signature file " .. tostring(self.signatures) .. ": " .. tostring(err), 0) end
  local all = app_id.parse(text, self.signatures)
  local by = { tcp = {}, udp = {} }
  for _, s in ipairs(all) do
    if s.proto ~= "udp" then by.tcp[#by.tcp + 1] = s end
    if s.proto ~= "tcp" then by.udp[#by.udp + 1] = s end
  end
  self._sigs, self.count = by, #all
  self._apps = lru.new(self.max_apps)
end

function app_id:push(stream)
  local pkt = get(stream)
  if not pkt then return end
  local conn, kind = shared.packet(pkt)
  if not conn then return end
  local u = conn.user
  if u.app ~= nil then return end
  local p, e = pkt.payload_offset, pkt.payload_end
  if e < p or conn.state == "closed" then return end
  local dir = conn.dir
  local bit = dir == "c2s" and 1 or 2
  local tried = u.app_tried or 0
  if tried & bit ~= 0 then return end
  tried = tried | bit
  u.app_tried = tried
  local d = pkt.data
  local host = server_name(d, p, e)
  if host and host ~= "" then
    u.host = host
  else
    host = u.host
    if host == nil then host = dnscache.lookup(conn.server_ip) or false u.host = host end
  end
  local name = try(self._sigs[kind], conn, host or nil, d, p, e)
  if not name then
    if tried == 3 then u.app = false end
    return
  end
  u.app = name
  self.matched = self.matched + 1
  local ts = current.ts()
  self._apps:set((conn.client_mac or conn.client_ip) .. "|" .. name, ts)
  riff.emit(self.record, {
    client_mac = conn.client_mac, client_ip = conn.client_ip, client_port = conn.client_port,
    server_ip = conn.server_ip, server_port = conn.server_port, proto = kind,
    app = name, server_name = host or nil, direction = dir, time = ts,
  })
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

return app_id
