-- Entry point loaded by the C host (script.c): wires the modules together
-- and returns the hooks table. Runs once at load time, outside any hook
-- coroutine, so it must not call yielding primitives.

local auth = require "auth"
local router = require "router"
local routes = require "routes"


local upstream_name = sg.config.upstream or "demo"
local ok, upstream = pcall(require, "upstreams." .. upstream_name)
if not ok then
    error("config: upstream = '" .. upstream_name .. "': no module "
          .. "lua/upstreams/" .. upstream_name .. ".lua (" .. upstream
          .. ")", 0)
end
routes.init({ upstream = upstream, authenticate = auth.authenticate_http })


return {
    on_connect = auth.on_connect,
    on_message = router.on_message,
    on_disconnect = router.on_disconnect,
    on_http = routes.on_http,
}
