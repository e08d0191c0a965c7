-- The plugin loader and its hook chains (Kong's layout): a plugin is
-- lua/plugins/NAME/handler.lua (a plain table with PRIORITY, VERSION and
-- hook functions) plus lua/plugins/NAME/schema.lua (its config schema, see
-- schema.lua). The config file's top-level `plugins` table enables them:
--
--   plugins = { ["rate-limiting"] = { enabled = true,
--                                     config = { frames_per_second = 20 } } }
--
-- load() validates every enabled plugin's config at load time and raises
-- on the first error, naming the plugin, the key, the value and what was
-- expected, so a bad config fails `streamgate -t` and a hot reload keeps
-- the old state. chains() composes the handlers, highest PRIORITY first,
-- into one function per hook; a hook no enabled plugin implements is nil,
-- so it costs nothing (init.lua then does not export on_chunk at all).
--
-- Handler hooks (all optional; `conf` is the validated config):
--   on_connect(conf, req)               -> true | false, reason (no yield)
--   on_message(conf, conn, msg, text)   -> true | false, reason
--       msg is the decoded frame table or nil (text ping, non-JSON text)
--   on_chunk(conf, chunk)               -> nil | false (drop); no yield
--   on_disconnect(conf, conn)
--   on_http(conf, req)                  -> nil | status, body[, headers]
--   frame_types = { type = function(conf, conn, msg) end }
--   routes = { { method, pattern, function(conf, req, capture) end,
--                authenticated }, ... }

local sg = sg
local schema = require "schema"
local type = type
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local sort = table.sort
local concat = table.concat


local AVAILABLE = { "presence", "rate-limiting", "redact" }
local ENTRY_KEYS = { enabled = true, config = true }


local _M = {
    _VERSION = "0.1.0",
    AVAILABLE = AVAILABLE,
}


local function fail(name, msg)
    error("plugin '" .. name .. "': " .. msg, 0)
end


--- The shipped plugins are listed; any other lua/plugins/NAME/handler.lua
-- on package.path is found too, so a site plugin needs no registration.
local function is_available(name)
    for _, n in ipairs(AVAILABLE) do
        if n == name then
            return true
        end
    end
    if not name:find("^[%w_-]+$") then
        return false
    end
    local mod = "plugins." .. name .. ".handler"
    return package.loaded[mod] ~= nil or package.preload[mod] ~= nil
        or (package.searchpath ~= nil
            and package.searchpath(mod, package.path) ~= nil)
end


-- The plugin's modules, or raises naming what is missing.
local function require_plugin(name)
    local ok, handler = pcall(require, "plugins." .. name .. ".handler")
    if not ok then
        fail(name, "failed to load handler.lua: " .. tostring(handler))
    end
    local ok2, sch = pcall(require, "plugins." .. name .. ".schema")
    if not ok2 then
        fail(name, "failed to load schema.lua: " .. tostring(sch))
    end
    if type(handler) ~= "table" or type(handler.PRIORITY) ~= "number" then
        fail(name, "handler.lua must return a table with a numeric PRIORITY")
    end
    return handler, sch
end


local function check_entry(name, entry)
    if type(name) ~= "string" then
        error("plugins: key " .. schema.show(name) .. ": expected a plugin "
              .. "name (one of " .. concat(AVAILABLE, ", ") .. ")", 0)
    end
    if not is_available(name) then
        error("plugins." .. name .. ": unknown plugin (available: "
              .. concat(AVAILABLE, ", ") .. ")", 0)
    end
    if type(entry) ~= "table" then
        fail(name, "= " .. schema.show(entry) .. ": expected a table "
             .. "{ enabled = true, config = { ... } }")
    end
    for k, v in pairs(entry) do
        if not ENTRY_KEYS[k] then
            fail(name, tostring(k) .. " = " .. schema.show(v)
                 .. ": unknown key (expected enabled, config)")
        end
    end
    if entry.enabled ~= nil and type(entry.enabled) ~= "boolean" then
        fail(name, "enabled = " .. schema.show(entry.enabled)
             .. ": expected a boolean")
    end
end


--- Validates the `plugins` config table and loads every enabled plugin.
-- Returns a list of { name, handler, conf } sorted by PRIORITY (higher
-- first, then by name so the order never depends on table iteration).
-- Raises "plugin 'NAME': ..." on any error. A plugin is enabled unless
-- `enabled = false`; a disabled plugin's config is still validated, so a
-- typo is caught before someone enables it.
function _M.load(config)
    config = config or {}
    if type(config) ~= "table" then
        error("plugins = " .. schema.show(config) .. ": expected a table", 0)
    end

    local names = {}
    for name in pairs(config) do
        names[#names + 1] = name
    end
    sort(names, function(a, b) return tostring(a) < tostring(b) end)

    local list = {}
    for _, name in ipairs(names) do
        local entry = config[name]
        check_entry(name, entry)
        local handler, sch = require_plugin(name)
        local conf, err = schema.validate(sch, entry.config, "config.")
        if not conf then
            fail(name, err)
        end
        if entry.enabled ~= false then
            list[#list + 1] = { name = name, handler = handler, conf = conf }
        end
    end

    sort(list, function(a, b)
        if a.handler.PRIORITY ~= b.handler.PRIORITY then
            return a.handler.PRIORITY > b.handler.PRIORITY
        end
        return a.name < b.name
    end)
    return list
end


-- The entries whose handler defines `hook`, in order.
local function with_hook(list, hook)
    local out = {}
    for _, p in ipairs(list) do
        if type(p.handler[hook]) == "function" then
            out[#out + 1] = p
        end
    end
    return out
end


local function connect_chain(ps)
    return function(req)
        for i = 1, #ps do
            local p = ps[i]
            local ok, reason = p.handler.on_connect(p.conf, req)
            if not ok then
                return false, reason or ("denied by plugin " .. p.name)
            end
        end
        return true
    end
end


local function message_chain(ps)
    return function(conn, msg, text)
        for i = 1, #ps do
            local p = ps[i]
            local ok, reason = p.handler.on_message(p.conf, conn, msg, text)
            if ok == false then
                return false, reason
            end
        end
        return true
    end
end


--- The chunk chain runs on every producer message, so the common case of
-- one transforming plugin is a direct call.
local function chunk_chain(ps)
    if #ps == 1 then
        local h, conf = ps[1].handler, ps[1].conf
        local on_chunk = h.on_chunk
        return function(chunk)
            if on_chunk(conf, chunk) == false then
                return false
            end
        end
    end
    return function(chunk)
        for i = 1, #ps do
            local p = ps[i]
            if p.handler.on_chunk(p.conf, chunk) == false then
                return false
            end
        end
    end
end


--- Every plugin sees every disconnect even when one of them fails (a
-- skipped on_disconnect would leak that plugin's per-connection state).
local function disconnect_chain(ps)
    return function(conn)
        for i = 1, #ps do
            local p = ps[i]
            local ok, err = pcall(p.handler.on_disconnect, p.conf, conn)
            if not ok then
                sg.log("error", "plugin '", p.name, "': on_disconnect "
                       .. "failed: ", err)
            end
        end
    end
end


local function http_chain(ps)
    return function(req)
        for i = 1, #ps do
            local p = ps[i]
            local status, body, headers = p.handler.on_http(p.conf, req)
            if status ~= nil then
                return status, body, headers
            end
        end
        return nil
    end
end


local function frame_types(list)
    local types, owner = {}, {}
    for _, p in ipairs(list) do
        for name, fn in pairs(p.handler.frame_types or {}) do
            if owner[name] then
                fail(p.name, "frame type '" .. name .. "' is already "
                     .. "added by plugin '" .. owner[name] .. "'")
            end
            local conf = p.conf
            owner[name] = p.name
            types[name] = function(conn, msg)
                return fn(conf, conn, msg)
            end
        end
    end
    return types, owner
end


local function routes(list)
    local out = {}
    for _, p in ipairs(list) do
        for _, r in ipairs(p.handler.routes or {}) do
            local conf, fn = p.conf, r[3]
            out[#out + 1] = { r[1], r[2], function(req, m, claims)
                return fn(conf, req, m, claims)
            end, r[4], p.name }
        end
    end
    return out
end


local function chain(list, hook, build)
    local ps = with_hook(list, hook)
    if #ps == 0 then
        return nil
    end
    return build(ps)
end


--- Composes the loaded plugins (load()'s list) into hook functions:
-- { on_connect, on_message, on_chunk, on_disconnect, on_http,
--   frame_types = { type = fn(conn, msg) }, frame_owner = { type = name },
--   routes = { { method, pattern, fn(req, capture, claims),
--                authenticated, plugin name } },
--   names = { plugin names in order } }.
-- A hook is nil when no plugin implements it.
function _M.chains(list)
    local names = {}
    for i, p in ipairs(list) do
        names[i] = p.name
    end
    local types, owner = frame_types(list)
    return {
        names = names,
        on_connect = chain(list, "on_connect", connect_chain),
        on_message = chain(list, "on_message", message_chain),
        on_chunk = chain(list, "on_chunk", chunk_chain),
        on_disconnect = chain(list, "on_disconnect", disconnect_chain),
        on_http = chain(list, "on_http", http_chain),
        frame_types = types,
        frame_owner = owner,
        routes = routes(list),
    }
end


--- load() then chains(): the plugins of `config` (sg.config.plugins).
function _M.init(config)
    return _M.chains(_M.load(config))
end


return _M
