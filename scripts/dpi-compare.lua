-- The riff side of scripts/dpi-compare.ts: plugin.app_id alone, one "app"
-- record per named flow (the script reads them with -o json:-).
return { require "plugin.app_id" }
