-- The head of the seed's pipeline: takes the stream riff pushes in and hands
-- its metadata on as this plugin's sink, the way the original source_plugin
-- did, without the original's shared module-level tables.
local source_plugin = { name = "source_plugin", ver = "0.2" }

function source_plugin.output(self, list, flg)
  if flg == 0 then return end
  for k, v in pairs(list) do print(k, v) end
end

function source_plugin.init(self)
  self.source = { args = "source args" }
  self.sink = { name = self.name, ver = self.ver }
end

function source_plugin.push(self, stream)
  for k, v in pairs(stream.metadata) do self.source[k] = v end
end

function source_plugin.action(self, stream) end

function source_plugin.match(self, param)
  local sink = self.sink
  sink.found_flg = false
  for k, v in pairs(self.source) do sink[k] = v end
  sink.metadata = { data = self.source.data }
  self:action(sink)
  return self.source, sink
end

return source_plugin
