-- The build's training run (scripts/bundle.ts makeWasmCache, README
-- Start-up): riff runs this over a generated web capture, and saves the Lua
-- module's machine code at its end. What runs hot here is optimized, with
-- V8's inlining guided by these calls, in every later run; what never runs
-- here is compiled when a run first calls it. So it runs what riff ships:
-- the seed's two plugins (the default pipeline, and the original riff tree's)
-- and the toolkit's (lua/examples/traffic.lua, the service watch).
local pipeline = require "pipeline"
return pipeline:new {
  require "plugin.source_plugin",
  require "plugin.filter_plugin",
  require "plugin.dns_log",
  require "plugin.sessions",
  require "plugin.app_id",
  require "plugin.http_requests",
}
