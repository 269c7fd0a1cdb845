-- The seed's plugin template, once: the original made a new plugin by
-- copying source_plugin.lua and editing action(). Here a plugin is a table
-- with a name and an action; base.plugin fills in the template's output,
-- init, push and match, which keep the original's data flow:
--   push(stream)  copies stream.metadata into self.source (and keeps the
--                 shared stream as self.stream, for verdicts later plugins see)
--   match()       copies self.source into self.sink, gives the sink
--                 metadata = { data = ... }, calls self:action(sink) and
--                 returns source, sink
-- A plugin may define any of them itself; base only fills what is missing.
--
--   local base = require "plugin.base"
--   local mine = base.plugin { name = "mine", ver = "1" }
--   function mine.action(self, stream) if stream.data:find("sqlmap", 1, true) then print("scan!") end end
--   return mine
local base = {}

local function output(self, list, flg)
  if flg == 0 then return end
  for k, v in pairs(list) do print(k, v) end
end

local function init(self)
  self.source = { args = self.name .. " args" }
  self.sink = { name = self.name, ver = self.ver }
end

local function push(self, stream)
  self.stream = stream
  for k, v in pairs(stream.metadata) do self.source[k] = v end
end

local function action(self, stream) end

local function match(self, param)
  local sink = self.sink
  sink.found_flg = false
  for k, v in pairs(self.source) do sink[k] = v end
  sink.metadata = { data = self.source.data }
  self:action(sink)
  return self.source, sink
end

function base.plugin(p)
  p.output = p.output or output
  p.init = p.init or init
  p.push = p.push or push
  p.action = p.action or action
  p.match = p.match or match
  return p
end

return base
