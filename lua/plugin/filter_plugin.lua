-- The seed's filter plugin: shows each packet and raises the banner when the
-- packet holds the pattern ("pcap", the seed's curl --user-agent test).
-- Settings are plain fields, so a pipeline can change them before running:
--   local f = require "plugin.filter_plugin"; f.pattern = "sqlmap"; f.show = "match"
-- show: "text" writes each packet with unprintable bytes as '.', like
-- tcpdump -A (the default, readable on a terminal); "raw" writes the bytes
-- as they are, as the original did; "match" writes only packets that hold
-- the pattern (as text); "none" writes only the banner.
local filter_plugin = require("plugin.base").plugin { name = "filter_plugin", ver = "0.2", pattern = "pcap", show = "text" }

local BANNER = "###########[ OK ]#############"
local find, gsub = string.find, string.gsub

-- tcpdump -A's reading of bytes: text, tabs and newlines kept, CR LF shown
-- as one newline, everything else as '.'.
local function printable(s)
  return (gsub(gsub(s, "\r\n", "\n"), "[^\t\n\32-\126]", "."))
end

function filter_plugin.action(self, stream)
  local data = stream.data
  local hit = find(data, self.pattern, 1, true)
  local show = self.show
  if show == "raw" then
    io.write(data, "\n")
  elseif show == "text" or (show == "match" and hit) then
    io.write(printable(data), "\n")
  end
  stream.found_flg = hit ~= nil
  -- Plugins after this one see the verdict on the shared stream.
  if self.stream then self.stream.metadata.found_flg = stream.found_flg end
  if hit then print(BANNER) end
end

return filter_plugin
