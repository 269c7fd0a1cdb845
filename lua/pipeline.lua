-- riff's pipeline framework, API-compatible with the original riff's
-- pipeline.lua: pipeline:new{ plugin, ... } declares the plugins and
-- pipeline:run(pcapdata) passes one packet through them in declared order.
--
-- Per packet each plugin gets, in this order: init(self), push(self, stream),
-- match(self, pcapdata) (which by convention calls self:action(sink) and
-- returns source, sink). The stream is the table the original built:
--   { metadata = { data = <packet bytes>, request = { uri = "http://www.candylab.net" } } }
-- Every plugin receives that same stream table, as in the original (its
-- `src = sink` assigned a loop-local and never reached the next plugin); a
-- plugin that edits stream.metadata in place is seen by the plugins after it.
--
-- Once per run, around all packets: setup(self) before the first and
-- deinit(self) after the last, for plugins that define them.
local Pipeline = {}
Pipeline.__index = Pipeline

function Pipeline.output(self, list, flg)
  if flg == 0 then return end
  for k, v in pairs(list) do print(k, v) end
end

-- Called on the module itself, as elements.lua does, it also declares the
-- plugins on the module (the original returned the module from elements.lua);
-- the returned instance lets several pipelines coexist.
function Pipeline.new(self, elements)
  if type(elements) ~= "table" then
    error("pipeline:new expects a list of plugins, got " .. type(elements), 2)
  end
  for i, v in ipairs(elements) do
    if type(v) ~= "table" then
      error(string.format("pipeline:new: element %d is a %s, not a plugin table", i, type(v)), 2)
    end
  end
  self.element_list = elements
  self:output(elements, 0)
  return setmetatable({ element_list = elements }, Pipeline)
end

local URI = "http://www.candylab.net"

local stock_output = Pipeline.output

function Pipeline.run(self, pcapdata)
  local src = { metadata = { data = pcapdata, request = { uri = URI } } }
  local list = self.element_list
  local output = self.output
  if output == stock_output then output = nil end
  for i = 1, #list do
    local v = list[i]
    local init, push, match = v.init, v.push, v.match
    if init then init(v) end
    if push then push(v, src) end
    if match then
      local _, sink = match(v, pcapdata)
      if output and type(sink) == "table" then output(self, sink, 0) end
    end
  end
end

local function each(self, hook)
  local list = self.element_list
  if not list then return end
  for i = 1, #list do
    local v = list[i]
    local f = v[hook]
    if f then f(v) end
  end
end

function Pipeline.setup(self) each(self, "setup") end
function Pipeline.deinit(self) each(self, "deinit") end

return Pipeline
