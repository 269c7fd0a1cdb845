-- The build's training run (scripts/bundle.ts makeWasmCache, README
-- Start-up): riff runs this over a generated web capture, and saves the Lua
-- module's machine code at its end. What runs hot here is optimized, with
-- V8's inlining guided by these calls, in every later run; what never runs
-- here is compiled when a run first calls it. So it runs what riff ships:
-- the seed's two plugins (the default pipeline, and the original riff tree's)
-- and the toolkit's (lua/examples/traffic.lua, the service watch). The build
-- reloads it (SIGHUP) again and again while it runs, so what a reload runs
-- (each plugin's deinit and handover, a new VM's setup) is optimized too: a
-- long-running riff otherwise had V8 optimize those at its first reloads,
-- beside the capture (one function's compile alone took 2.4 MB of working
-- memory; README, Soak).
-- Every run parses Lua (riff's own files, then the user's): the lexer and
-- parser run here as often as in a few hundred starts, so they are
-- optimized in the cache and no run's first parse waits for their compile.
-- Each module is read and parsed again; the copy first loaded is kept.
for _ = 1, 30 do
  for _, name in ipairs { "pipeline", "plugin.base", "plugin.sessions", "plugin.app_id", "plugin.dns_log", "plugin.http_requests", "proto.packet", "proto.dns", "proto.http", "flow.tcp", "flow.lru", "apps.matchers" } do
    local kept = package.loaded[name]
    package.loaded[name] = nil
    require(name)
    package.loaded[name] = kept
  end
end
local pipeline = require "pipeline"
-- traffic.lua's own (dns_log, sessions, app_id and its status line), as the
-- toolkit's example runs them.
local plugins = { require "plugin.source_plugin", require "plugin.filter_plugin" }
for _, p in ipairs(require("examples.traffic").element_list) do plugins[#plugins + 1] = p end
plugins[#plugins + 1] = require "plugin.http_requests"
return pipeline:new(plugins)
