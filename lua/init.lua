-- Entry point loaded by the C host (script.c): wires the modules and the
-- enabled plugins together and returns the hooks table. Runs once at load
-- time, outside any hook coroutine, so it must not call yielding
-- primitives. A bad plugin config raises here, which fails `streamgate -t`
-- and keeps the old state on a hot reload.

local auth = require "auth"
local router = require "router"
local routes = require "routes"
local plugins = require "plugins"


local upstream_name = sg.config.upstream or "demo"
local ok, upstream = pcall(require, "upstreams." .. upstream_name)
if not ok then
    error("config: upstream = '" .. upstream_name .. "': no module "
          .. "lua/upstreams/" .. upstream_name .. ".lua (" .. upstream
          .. ")", 0)
end
routes.init({ upstream = upstream, authenticate = auth.authenticate_http })


local chains = plugins.init(sg.config.plugins or {})

for name, fn in pairs(chains.frame_types) do
    if router.handlers[name] then
        error("plugin '" .. chains.frame_owner[name] .. "': frame type '"
              .. name .. "' is a built-in frame type", 0)
    end
    router.handlers[name] = fn
end
router.pre_filter = chains.on_message
routes.pre_filter = chains.on_http
routes.add_routes(chains.routes)


--- Plugins decide only after auth allowed, and see the identity's
-- user_id (the one the connection will carry).
local function plugin_connect(plugin_chain)
    return function(req)
        local allowed, identity = auth.on_connect(req)
        if not allowed then
            return allowed, identity
        end
        if type(identity) == "table" and identity.user_id then
            req.user_id = identity.user_id
        end
        local ok2, reason = plugin_chain(req)
        if not ok2 then
            return false, reason
        end
        return true, identity
    end
end


local function plugin_disconnect(plugin_chain)
    return function(conn)
        router.on_disconnect(conn)
        return plugin_chain(conn)
    end
end


-- Without plugins the hooks are the modules' own functions, and on_chunk
-- is absent so the core skips it entirely.
return {
    on_connect = chains.on_connect and plugin_connect(chains.on_connect)
        or auth.on_connect,
    on_message = router.on_message,
    on_disconnect = chains.on_disconnect
        and plugin_disconnect(chains.on_disconnect) or router.on_disconnect,
    on_http = routes.on_http,
    on_chunk = chains.on_chunk,
}
