-- flow.dnscache: the reverse DNS cache (answer address -> the name a client
-- asked for), shared by every plugin in a Lua VM. plugin.dns_log fills it
-- from the responses it sees; plugin.sessions and plugin.app_id read it to
-- name the server of a session, as TrafficAnalyzer's dns_reverse did —
-- without a database: the cache is an LRU map, bounded.
--
--   local dnscache = require "flow.dnscache"
--   dnscache.add("93.184.216.34", "example.com", "www.example.com-cdn.net", ts)
--   dnscache.lookup("93.184.216.34")  --> "example.com", "www.example.com-cdn.net", ts
--   dnscache.configure{ max = 10000 }  -- entries kept (default 10000); empties the cache
--   dnscache.size(), dnscache.clear(), dnscache.stats (adds, hits, misses, evicted)
--
-- The name stored is the question's name (what the user typed), and the
-- answer record's own name (the end of a CNAME chain) comes second, when it
-- differs. A later answer for the same address replaces the earlier one.
-- Modules are loaded once per Lua VM, so every plugin sees the same cache;
-- with --workers N each worker has its own, and plugin.dns_log fills it
-- from every worker's DNS answers (riff hands them to its overhear phase),
-- so every worker's cache holds what one worker's would. For that, a
-- lookup does not refresh an entry: what is evicted depends only on the
-- answers, in capture order, never on which worker looked up what.

local lru = require "flow.lru"

local M = { stats = { adds = 0, hits = 0, misses = 0 } }
local cache = lru.new(10000)
local EMPTY = {}

function M.configure(o)
  o = o or EMPTY
  cache = lru.new(o.max or 10000)
end

function M.add(ip, name, rrname, ts)
  if ip == nil or name == nil then return end
  M.stats.adds = M.stats.adds + 1
  local e = cache:peek(ip)
  if e then
    e[1], e[2], e[3] = name, rrname ~= name and rrname or nil, ts
    cache:get(ip) -- a new answer refreshes it
  else
    cache:set(ip, { name, rrname ~= name and rrname or nil, ts })
  end
end

function M.lookup(ip)
  local e = ip and cache:peek(ip)
  if not e then M.stats.misses = M.stats.misses + 1 return nil end
  M.stats.hits = M.stats.hits + 1
  return e[1], e[2], e[3]
end

function M.size() return cache.size end
function M.evicted() return cache.evicted end
function M.clear() cache:clear() end

return M
