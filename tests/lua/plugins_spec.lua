local fake_sg = require "tests.lua.helpers.fake_sg"


-- A site plugin defined in package.loaded (as if under lua/plugins/).
local function fake_plugin(name, handler, fields)
    package.loaded["plugins." .. name .. ".handler"] = handler
    package.loaded["plugins." .. name .. ".schema"] = { fields = fields or {} }
    package.preload["plugins." .. name .. ".handler"] = function()
        return handler
    end
end


describe("plugins.load", function()
    local fake, plugins

    before_each(function()
        fake = fake_sg.install()
        plugins = require "plugins"
    end)

    it("loads nothing without a plugins table", function()
        assert.same({}, plugins.load(nil))
        assert.same({}, plugins.load({}))
    end)

    it("orders enabled plugins by PRIORITY, highest first", function()
        local list = plugins.load({
            presence = { enabled = true },
            redact = { enabled = true },
            ["rate-limiting"] = { enabled = true },
        })
        local names = {}
        for i, p in ipairs(list) do
            names[i] = p.name
        end
        assert.same({ "rate-limiting", "redact", "presence" }, names)
    end)

    it("fills each plugin's config defaults", function()
        local list = plugins.load({ redact = {} })
        assert.same({ emails = true, patterns = {},
                      replacement = "[redacted]" }, list[1].conf)
    end)

    it("skips disabled plugins but still validates their config", function()
        assert.same({}, plugins.load({ redact = { enabled = false } }))
        assert.has_error(function()
            plugins.load({ ["rate-limiting"] = { enabled = false,
                config = { frames_per_second = -1 } } })
        end, "plugin 'rate-limiting': config.frames_per_second = -1: "
             .. "expected a number >= 1")
    end)

    it("names plugin, field, value and expectation", function()
        assert.has_error(function()
            plugins.load({ ["rate-limiting"] = { enabled = true,
                config = { per = "host" } } })
        end, "plugin 'rate-limiting': config.per = 'host': expected one "
             .. "of 'user', 'ip', 'both'")
    end)

    it("rejects an unknown config field", function()
        assert.has_error(function()
            plugins.load({ redact = { config = { email = true } } })
        end, "plugin 'redact': config.email = true: unknown field "
             .. "(expected one of: emails, patterns, replacement)")
    end)

    it("rejects an unknown plugin and lists the available ones", function()
        assert.has_error(function()
            plugins.load({ ["rate-limit"] = { enabled = true } })
        end, "plugins.rate-limit: unknown plugin (available: presence, "
             .. "rate-limiting, redact)")
    end)

    it("rejects unknown entry keys and a non-boolean enabled", function()
        assert.has_error(function()
            plugins.load({ redact = { enable = true } })
        end, "plugin 'redact': enable = true: unknown key (expected "
             .. "enabled, config)")
        assert.has_error(function()
            plugins.load({ redact = { enabled = "yes" } })
        end, "plugin 'redact': enabled = 'yes': expected a boolean")
        assert.has_error(function()
            plugins.load({ redact = true })
        end, "plugin 'redact': = true: expected a table { enabled = true, "
             .. "config = { ... } }")
    end)

    it("runs the cross-field validator", function()
        assert.has_error(function()
            plugins.load({ ["rate-limiting"] = { config = {
                frames_per_second = 20, frames_burst = 5 } } })
        end, "plugin 'rate-limiting': config.frames_burst = 5: expected a "
             .. "number >= config.frames_per_second (20)")
    end)
end)


describe("plugins.chains", function()
    local fake, plugins, calls

    before_each(function()
        fake = fake_sg.install()
        plugins = require "plugins"
        calls = {}
    end)

    after_each(function()
        for _, n in ipairs({ "p-high", "p-low" }) do
            package.loaded["plugins." .. n .. ".handler"] = nil
            package.loaded["plugins." .. n .. ".schema"] = nil
            package.preload["plugins." .. n .. ".handler"] = nil
        end
    end)

    local function recorder(name, priority, extra)
        local h = { PRIORITY = priority, VERSION = "1" }
        for _, hook in ipairs({ "on_connect", "on_message", "on_chunk",
                                "on_disconnect", "on_http" }) do
            h[hook] = function(conf, ...)
                calls[#calls + 1] = name .. "." .. hook
                local f = extra and extra[hook]
                if f then
                    return f(conf, ...)
                end
                if hook == "on_connect" or hook == "on_message" then
                    return true
                end
            end
        end
        fake_plugin(name, h)
        return h
    end

    it("leaves every hook nil when no plugin implements it", function()
        local c = plugins.init({})
        assert.is_nil(c.on_connect)
        assert.is_nil(c.on_message)
        assert.is_nil(c.on_chunk)
        assert.is_nil(c.on_disconnect)
        assert.is_nil(c.on_http)
        assert.same({}, c.frame_types)
        assert.same({}, c.routes)
    end)

    it("calls hooks in priority order and stops at a denial", function()
        recorder("p-low", 1)
        recorder("p-high", 10, { on_connect = function()
            return false, "nope"
        end })
        local c = plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        assert.same({ "p-high", "p-low" }, c.names)
        local ok, reason = c.on_connect({})
        assert.is_false(ok)
        assert.equal("nope", reason)
        assert.same({ "p-high.on_connect" }, calls)
    end)

    it("runs every on_message until one returns false", function()
        recorder("p-high", 10, { on_message = function(_, _, msg, text)
            return text ~= "stop", "stopped"
        end })
        recorder("p-low", 1)
        local c = plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        assert.is_true(c.on_message({ id = 1 }, nil, "go"))
        local ok, reason = c.on_message({ id = 1 }, nil, "stop")
        assert.is_false(ok)
        assert.equal("stopped", reason)
        assert.same({ "p-high.on_message", "p-low.on_message",
                      "p-high.on_message" }, calls)
    end)

    it("drops a chunk when a plugin returns false", function()
        recorder("p-high", 10, { on_chunk = function(_, chunk)
            chunk.content = chunk.content:upper()
        end })
        recorder("p-low", 1, { on_chunk = function(_, chunk)
            if chunk.content == "DROP" then return false end
        end })
        local c = plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        local chunk = { content = "abc" }
        assert.is_nil(c.on_chunk(chunk))
        assert.equal("ABC", chunk.content)
        assert.is_false(c.on_chunk({ content = "drop" }))
    end)

    it("runs every on_disconnect even when one fails", function()
        recorder("p-high", 10, { on_disconnect = function()
            error("boom", 0)
        end })
        recorder("p-low", 1)
        local c = plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        c.on_disconnect({ id = 1 })
        assert.same({ "p-high.on_disconnect", "p-low.on_disconnect" }, calls)
        assert.same({ "error: plugin 'p-high': on_disconnect failed: boom" },
                    fake.logs)
    end)

    it("answers HTTP from the first plugin that returns a status", function()
        recorder("p-high", 10, { on_http = function(_, req)
            if req.path == "/x" then return 418, { error = "teapot" } end
        end })
        recorder("p-low", 1)
        local c = plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        local status, body = c.on_http({ path = "/x" })
        assert.equal(418, status)
        assert.same({ error = "teapot" }, body)
        assert.is_nil(c.on_http({ path = "/y" }))
    end)

    it("passes each plugin its own conf in frame types and routes", function()
        local h = { PRIORITY = 1, frame_types = {}, routes = {} }
        function h.frame_types.echo(conf, conn, msg)
            return conf.n, conn.id, msg.type
        end
        h.routes[1] = { "GET", "^/p/(%w+)$", function(conf, req, m)
            return 200, { n = conf.n, m = m }
        end }
        fake_plugin("p-high", h, { { n = { type = "integer",
                                           default = 3 } } })
        local c = plugins.init({ ["p-high"] = {} })
        assert.same({ 3, 9, "echo" },
                    { c.frame_types.echo({ id = 9 }, { type = "echo" }) })
        assert.equal("p-high", c.frame_owner.echo)
        local r = c.routes[1]
        assert.equal("GET", r[1])
        assert.same({ 200, { n = 3, m = "q" } },
                    { r[3]({}, "q") })
    end)

    it("rejects two plugins adding the same frame type", function()
        fake_plugin("p-high", { PRIORITY = 2, frame_types = {
            x = function() end } })
        fake_plugin("p-low", { PRIORITY = 1, frame_types = {
            x = function() end } })
        assert.has_error(function()
            plugins.init({ ["p-low"] = {}, ["p-high"] = {} })
        end, "plugin 'p-low': frame type 'x' is already added by plugin "
             .. "'p-high'")
    end)
end)


describe("init.lua with plugins", function()
    it("exports no on_chunk without a transforming plugin", function()
        local fake = fake_sg.install()
        fake.sg.config.plugins = { presence = { enabled = true } }
        local hooks = dofile("lua/init.lua")
        assert.is_nil(hooks.on_chunk)
        assert.is_function(require("router").handlers.presence)
    end)

    it("exports on_chunk when redact is enabled", function()
        local fake = fake_sg.install()
        fake.sg.config.plugins = { redact = { enabled = true } }
        local hooks = dofile("lua/init.lua")
        local chunk = { content = "mail a@b.io", chunk = "a@b.io" }
        hooks.on_chunk(chunk)
        assert.same({ content = "mail [redacted]" }, chunk)
    end)

    it("fails to load with the plugin's config error", function()
        local fake = fake_sg.install()
        fake.sg.config.plugins = { ["rate-limiting"] = { enabled = true,
            config = { frames_per_second = -1 } } }
        local ok, err = pcall(dofile, "lua/init.lua")
        assert.is_false(ok)
        assert.equal("plugin 'rate-limiting': config.frames_per_second = "
                     .. "-1: expected a number >= 1", err)
    end)

    it("runs plugins on_connect only after auth allowed", function()
        local fake = fake_sg.install()
        fake.sg.config.auth.dev_mode = false
        fake.sg.config.plugins = { presence = { enabled = true } }
        local hooks = dofile("lua/init.lua")
        local ok, reason = hooks.on_connect({ session_id = "s", user_id = "u" })
        assert.is_false(ok)
        assert.equal("missing token", reason)
        assert.is_nil(require("plugins.presence.handler").session("s"))
        fake.claims["t"] = { sub = "u" }
        assert.is_true((hooks.on_connect({ session_id = "s", user_id = "u",
                                           token = "t" })))
        assert.same({ u = 1 },
                    require("plugins.presence.handler").session("s").users)
    end)

    it("stops a rate-limited frame before the router answers it", function()
        local fake = fake_sg.install()
        fake.sg.config.plugins = { ["rate-limiting"] = { config = {
            frames_per_second = 1 } } }
        local hooks = dofile("lua/init.lua")
        local conn = { id = 4, session_id = "s", user_id = "u" }
        hooks.on_message(conn, "ping")
        hooks.on_message(conn, "ping")
        assert.equal("pong", fake.sent[1].text)
        assert.equal("Rate limit exceeded", fake.frames()[2].error)
        assert.equal(2, #fake.sent)
        assert.same({ { conn = conn, code = 1008, reason = "rate limited" } },
                    fake.closed)
    end)
end)
