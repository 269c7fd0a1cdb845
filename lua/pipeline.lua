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

-- A plugin riff would never call, or a phase spelled so that riff never
-- calls it, is said once at load: silently ignored code is the worst kind.
local PHASES = { "init", "push", "match", "action", "setup", "deinit" }
local KNOWN = { init = true, push = true, match = true, action = true, setup = true, deinit = true, output = true,
  collect = true, merge = true, report = true, overhear = true, overhear_ports = true }

-- One edit away (a swap of two neighbours counts one): "mathc", "pussh",
-- "deint"; "active" (two away from "action") is a helper, not a typo.
local function near(a, b)
  if a == b or math.abs(#a - #b) > 1 then return false end
  local prev2, prev = nil, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if prev2 and i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d = math.min(d, prev2[j - 2] + 1)
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[#b] <= 1
end

local function check_phases(v, i)
  local label = "plugin " .. i .. (type(v.name) == "string" and (" (" .. v.name .. ")") or "")
  local function warn(msg)
    io.stderr:write("riff: " .. label .. ": " .. msg .. "; riff calls the phases "
      .. table.concat(PHASES, ", ") .. " (action only from your match)\n")
  end
  for k, f in pairs(v) do
    if type(k) == "string" and type(f) == "function" and not KNOWN[k] and #k >= 4 then
      for _, ph in ipairs(PHASES) do
        if near(k, ph) then
          warn("'" .. k .. "' looks like the phase '" .. ph .. "' misspelled and is never called")
          break
        end
      end
    end
  end
  if not (v.init or v.push or v.match or v.setup or v.deinit) then
    warn(v.action and "it has action but no match to call it, so it is never called"
      or "it has no phase riff calls, so it is never called")
  end
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
  local first = not riff or not riff.worker or riff.worker.index == 1
  local reports = false
  for i, v in ipairs(elements) do
    if first then check_phases(v, i) end
    if type(v.report) == "function" then reports = true end
  end
  self.element_list = elements
  self:output(elements, 0)
  return setmetatable({ element_list = elements, reports = reports }, Pipeline)
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

-- With --workers N: a packet of another worker's flow on a port some plugin
-- overhears (its overhear_ports: a list, or a method returning one), given
-- to those plugins' overhear(self, stream) only, so state that spans flows
-- (DNS answers naming later connections) is the same in every worker.
function Pipeline.overhear(self, pcapdata)
  local src = { metadata = { data = pcapdata, request = { uri = URI } } }
  local list = self.element_list
  for i = 1, #list do
    local v = list[i]
    if v.overhear then v.overhear(v, src) end
  end
end

-- Plugins whose deinit runs in each worker on its share with nothing to
-- merge it (no report), for riff's note at start with --workers N. A plugin
-- whose deinit only ends its worker's flows says so with per_flow_deinit.
function Pipeline.unmerged(self)
  local names = {}
  for i, v in ipairs(self.element_list) do
    if v.deinit and not v.report and not v.per_flow_deinit then
      names[#names + 1] = type(v.name) == "string" and v.name or ("plugin " .. i)
    end
  end
  return names
end

function Pipeline.overhear_ports(self)
  local ports = {}
  for _, v in ipairs(self.element_list) do
    if type(v.overhear) == "function" then
      local p = v.overhear_ports
      if type(p) == "function" then p = p(v) end
      for _, x in ipairs(type(p) == "table" and p or {}) do ports[#ports + 1] = x end
    end
  end
  return ports
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

-- The whole run's report across workers (riff's driver calls these once
-- per worker, then merge and report once): each plugin's collect() state,
-- keyed by its place in the pipeline; merged by the plugin's merge(a, b)
-- or riff.merge; report(state) per plugin, in declared order.
function Pipeline.collect(self)
  local states = {}
  for i, v in ipairs(self.element_list) do
    if v.report then states[i] = v.collect and v:collect() or true end
  end
  return states
end

function Pipeline.merge(self, a, b)
  for i, v in ipairs(self.element_list) do
    if v.report then
      if a[i] == nil then a[i] = b[i]
      elseif b[i] ~= nil then a[i] = v.merge and v:merge(a[i], b[i]) or riff.merge(a[i], b[i]) end
    end
  end
  return a
end

function Pipeline.report(self, states)
  for i, v in ipairs(self.element_list) do
    if v.report then v:report(states[i]) end
  end
end

return Pipeline
