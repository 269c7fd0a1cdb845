-- The head of the seed's pipeline: takes the stream riff pushes in and hands
-- its metadata on as this plugin's sink, the way the original source_plugin
-- did (the template is plugin.base), without the original's shared
-- module-level tables.
return require("plugin.base").plugin { name = "source_plugin", ver = "0.2" }
