-- flow.lru: a bounded map that forgets the least recently used key, for
-- caches that must not grow with the traffic (DNS reverse names, per-client
-- tables). Plugin state persists across packets, so anything keyed by
-- addresses needs a bound or a long capture eats the Lua heap.
--
--   local lru = require "flow.lru"
--   local m = lru.new(10000, function(k, v) end) -- optional: told about evictions
--   m:set(k, v)        -- insert or replace (and make most recent); v == nil removes
--   m:get(k)           -- value or nil; makes k the most recent
--   m:peek(k)          -- value or nil; leaves the order alone
--   m:remove(k)        -- value removed, or nil
--   m:oldest()         -- key, value of the least recently used entry (nil when empty)
--   m:pairs()          -- iterator over key, value, most recent first
--   m.size, m.max, m.evicted (entries dropped for room)
--
-- Each entry is one small table linked into a list (most recent at the head),
-- so get/set/remove are O(1) whatever the size.
local setmetatable = setmetatable

local M = {}
local L = {}
L.__index = L

function M.new(max, on_evict)
  max = math.tointeger(max) or 10000
  if max < 1 then max = 1 end
  local head = {} -- sentinel: head.n is the most recent, head.p the least
  head.n, head.p = head, head
  return setmetatable({ max = max, size = 0, evicted = 0, _map = {}, _head = head, _on_evict = on_evict }, L)
end

local function unlink(e)
  e.p.n, e.n.p = e.n, e.p
end

local function push_front(head, e)
  local first = head.n
  e.n, e.p = first, head
  first.p, head.n = e, e
end

function L:get(k)
  local e = self._map[k]
  if not e then return nil end
  local head = self._head
  if head.n ~= e then unlink(e) push_front(head, e) end
  return e.v
end

function L:peek(k)
  local e = self._map[k]
  return e and e.v
end

function L:remove(k)
  local map = self._map
  local e = map[k]
  if not e then return nil end
  unlink(e)
  map[k] = nil
  self.size = self.size - 1
  return e.v
end

function L:set(k, v)
  if v == nil then self:remove(k) return end
  local map, head = self._map, self._head
  local e = map[k]
  if e then
    e.v = v
    if head.n ~= e then unlink(e) push_front(head, e) end
    return
  end
  if self.size >= self.max then
    local last = head.p
    unlink(last)
    map[last.k] = nil
    self.size = self.size - 1
    self.evicted = self.evicted + 1
    if self._on_evict then self._on_evict(last.k, last.v) end
  end
  e = { k = k, v = v }
  push_front(head, e)
  map[k] = e
  self.size = self.size + 1
end

function L:oldest()
  local last = self._head.p
  if last == self._head then return nil end
  return last.k, last.v
end

function L:pairs()
  local head = self._head
  local e = head
  return function()
    e = e.n
    if e == head then return nil end
    return e.k, e.v
  end
end

function L:clear()
  local head = self._head
  head.n, head.p = head, head
  self._map, self.size = {}, 0
end

return M
