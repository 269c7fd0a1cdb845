-- riff's default pipeline, used when no --lua script is given: the seed's
-- two plugins, source then filter.
local pipeline = require "pipeline"
pipeline:new {
  require "plugin.source_plugin",
  require "plugin.filter_plugin",
}
return pipeline
