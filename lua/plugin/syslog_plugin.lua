-- The seed's third plugin: ships what the pipeline saw to a central syslog
-- server, as the last element of a riff pipeline:
--
--   local pipeline = require "pipeline"
--   pipeline:new {
--     require "plugin.source_plugin",
--     require "plugin.filter_plugin",
--     require "plugin.syslog_plugin",
--   }
--   return pipeline
--
-- Each packet becomes a record (riff.emit) that riff's outputs deliver; run
-- with `-o syslog:udp://loghost:514` (or tcp://, or put outputs() in
-- config.lua) to send them to syslog. Settings are fields:
--   only_found (default true): send only packets the filter plugin matched
--   record (default "riff_packet"): the record type (the syslog MSGID)
--   max_data (default 2048): bytes of packet data sent per record
local syslog_plugin = require("plugin.base").plugin {
  name = "syslog_plugin", ver = "0.2", only_found = true, record = "riff_packet", max_data = 2048,
}

local sub = string.sub

function syslog_plugin.action(self, stream)
  local found = self.stream and self.stream.metadata.found_flg
  if self.only_found and not found then return end
  local data = stream.data or ""
  local p = riff.packet
  riff.emit(self.record, {
    id = p.id,
    len = p.len,
    caplen = p.caplen,
    found = found == true,
    data = sub(data, 1, self.max_data),
    truncated = #data > self.max_data,
  })
end

return syslog_plugin
